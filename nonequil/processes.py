r"""Forward processes of diffusion models, with exact marginals, priors and posteriors.

Continuous time, t in [0, 1] (``t_max`` of the schedule for the cosine schedule):

* ``VPSDE``   dx = -beta(t)/2 x dt + sqrt(beta(t)) dW     (OU with time-dependent rate)
              x_t | x_0 ~ N(sqrt(ab) x_0, (1 - ab) I), ab = alpha_bar(t); prior N(0, I).
* ``SubVPSDE`` dx = -beta/2 x dt + sqrt(beta (1 - exp(-2 B(t)))) dW
              x_t | x_0 ~ N(sqrt(ab) x_0, (1 - ab)^2 I); prior N(0, I).
* ``VESDE``   dx = sqrt(d sigma^2/dt) dW, sigma(t) = sigma_min (sigma_max/sigma_min)^t
              x_t | x_0 ~ N(x_0, (sigma(t)^2 - sigma_min^2) I); prior N(0, sigma_max^2 I).

All three are linear, so the exact transition from s to t is affine:
``x_t = a(s,t) x_s + c(s,t) z`` with ``a = m(t)/m(s)`` and ``c^2 = v(t) - a^2 v(s)``, where
m and v are the marginal mean coefficient and the variance from a point start.  The
kernels run these transitions (``exact``) or Euler-Maruyama (``em``) on the Philox noise.

Discrete time:

* ``DiscreteChain`` (Sohl-Dickstein et al. 2015, Ho et al. 2020): q(x_t | x_{t-1}) =
  N(sqrt(1 - beta_t) x_{t-1}, beta_t I), t = 1..T; q(x_t | x_0) = N(sqrt(ab_t) x_0,
  (1 - ab_t) I) with ab_t = prod_{s<=t} (1 - beta_s); the posterior q(x_{t-1} | x_t, x_0) =
  N(mu~, beta~ I), mu~ = sqrt(ab_{t-1}) beta_t/(1 - ab_t) x_0 + sqrt(1 - beta_t)
  (1 - ab_{t-1})/(1 - ab_t) x_t, beta~ = (1 - ab_{t-1})/(1 - ab_t) beta_t.
* ``BinomialChain`` (Sohl-Dickstein et al. 2015, binary data in {0, 1}): each bit is kept
  with probability 1 - beta_t and otherwise redrawn from Bernoulli(1/2):
  q(x_t = 1 | x_{t-1}) = x_{t-1} (1 - beta_t) + beta_t / 2.  With r_t = prod_{s<=t}
  (1 - beta_s), q(x_t = x_0 | x_0) = (1 + r_t)/2, and the posterior q(x_{t-1} | x_t, x_0)
  follows from Bayes' rule (``posterior_prob_one``).  Spins s = +-1 map to x = (s + 1)/2.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from . import schedules
from .errors import InputError

LOG_2PI = math.log(2 * math.pi)


def _broadcast(x0, t, m, std):
    x0 = np.asarray(x0, float)
    if np.ndim(t) == 1 and x0.ndim > 1:
        shape = (-1,) + (1,) * (x0.ndim - 1)
        m, std = np.reshape(m, shape), np.reshape(std, shape)
    return m * x0, std


def _gauss_logpdf(x, var):
    x = np.asarray(x, float)
    d = x.shape[-1] if x.ndim > 1 else 1
    x2 = np.sum(x * x, axis=-1) if x.ndim > 1 else x * x
    return -0.5 * (x2 / var + d * (LOG_2PI + math.log(var)))


class SDE:
    """Common interface: ``drift(x, t)``, ``diffusion(t)``, ``marginal(x0, t)``,
    ``mean_coeff(t)``, ``variance(t)``, ``prior_std``, ``prior_logp(x)``, ``transition``."""
    t_min = 1e-5
    name = "sde"

    @property
    def t_max(self):
        return 1.0

    def marginal(self, x0, t):
        """(mean, std) of x_t given x_0; t is a scalar or one time per row of x0."""
        return _broadcast(x0, t, self.mean_coeff(np.asarray(t, float)),
                          np.sqrt(self.variance(np.asarray(t, float))))

    def transition(self, s, t):
        """(a, c): x_t = a x_s + c z exactly, for times s < t."""
        a = self.mean_coeff(t) / self.mean_coeff(s)
        c2 = self.variance(t) - a * a * self.variance(s)
        return a, np.sqrt(np.maximum(c2, 0.0))

    def em_step(self, t, dt):
        """(a, c) of the Euler-Maruyama step from t to t + dt (drift is linear: f = k(t) x)."""
        return 1.0 + self.drift_coeff(t) * dt, self.diffusion(t) * math.sqrt(dt)

    def prior_logp(self, x):
        return _gauss_logpdf(x, self.prior_std**2)

    def score_of_marginal_gaussian(self, x, t, mean0, var0):
        """Exact score of p_t when p_0 = N(mean0, var0 I): -(x - m mean0)/(m^2 var0 + v)."""
        m = self.mean_coeff(t)
        return -(x - m * mean0) / (m * m * var0 + self.variance(t))

    def params(self):
        return {}


@dataclass
class VPSDE(SDE):
    schedule: schedules.Schedule = field(default_factory=schedules.Linear)
    name = "vp"
    prior_std = 1.0

    @property
    def t_max(self):
        return self.schedule.t_max

    def mean_coeff(self, t):
        return np.exp(0.5 * self.schedule.log_alpha_bar(t))

    def variance(self, t):
        return -np.expm1(self.schedule.log_alpha_bar(t))

    def drift_coeff(self, t):
        return -0.5 * self.schedule.beta(t)

    def drift(self, x, t):
        return self.drift_coeff(t) * x

    def diffusion(self, t):
        return np.sqrt(self.schedule.beta(t))

    def params(self):
        return {"schedule": self.schedule.name, **self.schedule.params()}


@dataclass
class SubVPSDE(VPSDE):
    name = "subvp"

    def variance(self, t):
        return np.expm1(self.schedule.log_alpha_bar(t)) ** 2

    def diffusion(self, t):
        B = self.schedule.integral_beta(t)
        return np.sqrt(self.schedule.beta(t) * -np.expm1(-2.0 * B))


@dataclass
class VESDE(SDE):
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    name = "ve"

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise InputError("ve needs 0 < sigma_min < sigma_max")

    @property
    def prior_std(self):
        return self.sigma_max

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** np.asarray(t, float)

    def mean_coeff(self, t):
        return np.ones_like(np.asarray(t, float))

    def variance(self, t):
        return self.sigma(t) ** 2 - self.sigma_min**2

    def drift_coeff(self, t):
        return np.zeros_like(np.asarray(t, float))

    def drift(self, x, t):
        return np.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass
class DiscreteChain:
    """The Gaussian chain of DDPM / Sohl-Dickstein (betas[t-1] is beta_t, t = 1..T)."""
    betas: np.ndarray = None
    name = "ddpm"

    def __post_init__(self):
        if self.betas is None:
            self.betas = np.linspace(1e-4, 0.02, 1000)        # Ho et al. 2020
        self.betas = np.asarray(self.betas, float)
        if np.any(self.betas <= 0) or np.any(self.betas >= 1):
            raise InputError("ddpm betas must lie in (0, 1)")
        self.alpha_bar = np.cumprod(1.0 - self.betas)
        self.T = self.betas.size

    def ab(self, t):
        """alpha_bar_t for integer t in 0..T (alpha_bar_0 = 1)."""
        t = np.asarray(t)
        return np.where(t == 0, 1.0, self.alpha_bar[np.maximum(t, 1) - 1])

    def marginal(self, x0, t):
        ab = self.ab(t)
        return _broadcast(x0, t, np.sqrt(ab), np.sqrt(1.0 - ab))

    def step(self, t):
        """(a, c) of q(x_t | x_{t-1}): x_t = a x_{t-1} + c z."""
        b = self.betas[t - 1]
        return math.sqrt(1.0 - b), math.sqrt(b)

    def posterior(self, xt, x0, t):
        """(mean, std) of q(x_{t-1} | x_t, x_0) for integer t >= 1."""
        b = self.betas[t - 1]
        ab_t, ab_p = float(self.ab(t)), float(self.ab(t - 1))
        c0 = math.sqrt(ab_p) * b / (1.0 - ab_t)
        ct = math.sqrt(1.0 - b) * (1.0 - ab_p) / (1.0 - ab_t)
        var = (1.0 - ab_p) / (1.0 - ab_t) * b
        return c0 * x0 + ct * xt, math.sqrt(var)

    def prior_logp(self, x):
        return _gauss_logpdf(x, 1.0)

    def params(self):
        return {"T": self.T, "beta_1": float(self.betas[0]), "beta_T": float(self.betas[-1])}


@dataclass
class BinomialChain:
    """The bit-flip chain of Sohl-Dickstein et al. 2015 for x in {0, 1}."""
    betas: np.ndarray = None
    name = "binomial"

    def __post_init__(self):
        if self.betas is None:
            # Sohl-Dickstein et al. use beta_t = 1/(T - t + 1): r_T = 0 exactly
            T = 100
            self.betas = 1.0 / (T - np.arange(1, T + 1) + 1.0)
        self.betas = np.asarray(self.betas, float)
        if np.any(self.betas <= 0) or np.any(self.betas > 1):
            raise InputError("binomial betas must lie in (0, 1]")
        self.r = np.cumprod(1.0 - self.betas)
        self.T = self.betas.size

    def keep(self, t):
        """r_t = prod_{s<=t} (1 - beta_s), r_0 = 1."""
        t = np.asarray(t)
        return np.where(t == 0, 1.0, self.r[np.maximum(t, 1) - 1])

    def marginal_prob_one(self, x0, t):
        """q(x_t = 1 | x_0) = x0 r_t + (1 - r_t)/2."""
        r = self.keep(t)
        return x0 * r + 0.5 * (1.0 - r)

    def step_prob_one(self, x_prev, t):
        b = self.betas[t - 1]
        return x_prev * (1.0 - b) + 0.5 * b

    def posterior_prob_one(self, xt, x0, t):
        """q(x_{t-1} = 1 | x_t, x_0) by Bayes: q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0)."""
        p1 = self.marginal_prob_one(x0, t - 1)               # q(x_{t-1} = 1 | x_0)
        b = self.betas[t - 1]
        like1 = np.where(xt == 1, 1.0 - 0.5 * b, 0.5 * b)      # q(x_t | x_{t-1} = 1)
        like0 = np.where(xt == 1, 0.5 * b, 1.0 - 0.5 * b)      # q(x_t | x_{t-1} = 0)
        num = like1 * p1
        return num / (num + like0 * (1.0 - p1))

    def stay_logit(self, t):
        """log((1 - beta_t/2) / (beta_t/2)): the logit of q(x_{t-1} = x_t | x_t) when the bits
        of x_0 are uniform (0 at t = T for the default betas, where beta_T = 1).

        The binomial model's reverse logit is ``stay_logit(t) (2 x_t - 1) + net(x_t, t)``
        (``logit_skip``): a per-bit skip connection, without which an MLP narrower than D
        cannot even pass each bit through (its output logits lie in a width-dimensional
        subspace), and samples come out nearly disordered."""
        b = self.betas[np.asarray(t) - 1]
        return np.log1p(-0.5 * b) - np.log(0.5 * b)

    def prior_logp(self, x):
        x = np.asarray(x)
        return -x.reshape(x.shape[0], -1).shape[1] * math.log(2.0) * np.ones(x.shape[0])

    def params(self):
        return {"T": self.T}


PROCESSES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "ddpm": DiscreteChain,
             "binomial": BinomialChain}


def make(name="vp", schedule="linear", **params):
    """Build a forward process by name; VP/sub-VP take a schedule name and its parameters."""
    if name not in PROCESSES:
        raise InputError(f"unknown process {name!r}; valid: {', '.join(PROCESSES)}")
    if name in ("vp", "subvp"):
        return PROCESSES[name](schedules.make(schedule, **params))
    if name == "ve":
        return VESDE(**params)
    return PROCESSES[name](**params)


# ------------------------------------------------------------------ chains on the kernels
CHAIN_BLOCK = 4096      # coefficient tables are built in blocks aligned on the step index


def _chain_block(sde, dt, b, method):
    k = np.arange(b * CHAIN_BLOCK, (b + 1) * CHAIN_BLOCK, dtype=np.float64)
    t0 = k * dt
    with np.errstate(all="ignore"):     # padding steps past t_max are sliced off
        if method == "em":
            a, c = sde.em_step(t0, dt)
            a = np.broadcast_to(np.asarray(a, float), k.shape)
        else:
            # SDE.transition(t0, t1), except that step 0 leaves the clean data (mean
            # coefficient 1, variance 0), also where alpha_bar(0) < 1 (loglinear)
            m0 = np.where(k == 0, 1.0, sde.mean_coeff(t0))
            v0 = np.where(k == 0, 0.0, sde.variance(t0))
            t1 = (k + 1.0) * dt
            a = sde.mean_coeff(t1) / m0
            c = np.sqrt(np.maximum(sde.variance(t1) - a * a * v0, 0.0))
    return np.array(a, dtype=np.float64), np.array(c, dtype=np.float64)


def chain_coefficients(sde, dt, s0, n, method="exact"):
    r"""Per-step coefficients of the forward chain on the grid t_k = k dt.

    Returns float64 arrays ``(A, B, C)`` of length n with
    ``x_{k+1} = A[k - s0] x_k + B[k - s0] + C[k - s0] z_k`` for k = s0 .. s0 + n - 1, the
    form that ``kernels.langevin_cpu.ou_lanes`` runs.  ``exact``: the Gaussian transition
    from t_k to t_{k+1} (``SDE.transition``: A = m(t_{k+1})/m(t_k), C^2 = v(t_{k+1}) -
    A^2 v(t_k)), where the state at step 0 is the clean data (m = 1, v = 0 there, even for a
    schedule with alpha_bar(0) < 1), so that the state at step k has exactly the marginal
    ``marginal(x0, k dt)`` of the data x0;
    ``em``: Euler-Maruyama (``SDE.em_step``).  B = 0 (the SDEs have no constant drift).
    Entries are computed in blocks of ``CHAIN_BLOCK`` steps aligned on the absolute step
    index, so a step's coefficients do not depend on s0 and n (chunking, resume).
    """
    b0, b1 = s0 // CHAIN_BLOCK, (s0 + n - 1) // CHAIN_BLOCK
    parts = [_chain_block(sde, dt, b, method) for b in range(b0, b1 + 1)]
    lo = s0 - b0 * CHAIN_BLOCK
    A = np.concatenate([p[0] for p in parts])[lo:lo + n]
    C = np.concatenate([p[1] for p in parts])[lo:lo + n]
    return np.ascontiguousarray(A), np.zeros(n), np.ascontiguousarray(C)
