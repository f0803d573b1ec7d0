r"""Likelihoods of data under a diffusion model: the exact probability-flow log-density and
the variational bounds (ELBO), in nats.

``likelihood(model, x, method="ode"|"elbo", ...)`` is the library behind
``nonequil likelihood``.  Everything is reported for the data ``x [N, *data_shape]`` in its own
(data) units: the normalisation's Jacobian ``log |det dy/dx|`` is included, so a density is
per unit volume of data.  There are no 8-bit offsets: the data are continuous physics data.

``ode``: the exact log-likelihood (``nonequil.samplers.ode_likelihood``)
------------------------------------------------------------------------
The instantaneous change of variables along the probability-flow ODE (Song et al. 2021, Chen
et al. 2018): ``log p(x) = log N(y_T; 0, prior_std^2) + int div F dt + log |det dy/dx|``.
The divergence is the exact Jacobian trace (D backward passes of the network) up to
``EXACT_TRACE_MAX_DIM`` = 64 dimensions, and the Hutchinson estimator (one Rademacher probe
per point, Philox purpose 51) above it.  Hutchinson is unbiased for ``log p``; its noise is
independent across points, so the reported standard error over the points includes it.  The
density is that of ``p_{t_eps}``, the data blurred by the forward process to t_eps.

``elbo``: the variational bounds (``elbo``)
-------------------------------------------
In normalised units ``y``, with latents ``z_t = m(t) y + sigma(t) eps`` and the
continuous-data decoder ``p(y | z_0) = N(y; z_0 / m_0, sigma_0^2 / m_0^2 I)`` at the first
time t_0 (``t_eps``; t = 1 for a DDPM chain), ``-log p(y) <= L = L_rec + L_prior + L_diff``:

* ``L_rec = E[-log p(y | z_0)] = D/2 (log(2 pi sigma_0^2 / m_0^2) + 1)`` (exact);
* ``L_prior = KL(q(z_T | y) || N(0, prior_std^2 I))`` (closed form);
* the **discrete** bound (Sohl-Dickstein et al. 2015; Ho et al. 2020) on the grid
  ``t_0 < t_1 < ... < t_K`` (uniform in t, like the samplers, by default; uniform in
  ``lambda = log SNR`` with ``grid="logsnr"``; the chain's own integer times for DDPM), with the reverse kernel ``p(z_{s} | z_t) = q(z_s | z_t, y = y_hat(z_t, t))`` of
  the ``ancestral`` sampler: ``L_diff = sum_k KL_k = sum_k (SNR(t_{k-1}) - SNR(t_k)) / 2
  |y - y_hat(z_{t_k}, t_k)|^2``, ``SNR = m^2 / sigma^2``, each term with its own noise draw;
* the **continuous** (VDM) bound (Kingma et al. 2021), the K -> infinity limit:
  ``L_diff = 1/2 int_{t_0}^{t_max} (-SNR'(t)) |y - y_hat(z_t, t)|^2 dt``, written in
  ``lambda = log SNR`` (VDM's invariance): ``1/2 int_{lambda(t_max)}^{lambda(t_0)} e^lambda
  |y - y_hat(z_{t(lambda)}, t(lambda))|^2 d lambda``, estimated per point with ``n_time``
  stratified values ``lambda_j = lambda_max + (lambda_min - lambda_max)(j + u)/n_time`` (u one
  uniform per point) and t(lambda) by bisection.  Uniform in t the integrand grows like 1/t
  at t_0 for a good score; uniform in lambda it is nearly flat (about 3x smaller SE at equal
  cost on a 3-D Gaussian).

Here ``y_hat = (z_t - sigma eps_hat) / m``.  The bounds hold on average over the noise; a
single point's estimate is unbiased, not a bound.  The VDM bound needs a continuous-time
process (vp, subvp, ve); for a DDPM chain only the discrete bound is reported.

``elbo`` of the binomial (bit-flip) chain (``binomial_elbo``)
-------------------------------------------------------------
For binary data (bits x_0 in {0, 1}^D; spins s = 2 x - 1 when the model was trained on
spins) and the chain of Sohl-Dickstein et al. 2015 (``processes.BinomialChain``), the bound
of the reverse chain that ``nonequil sample --sampler binomial`` runs -- prior
``p(x_T) = Bernoulli(1/2)^D`` and the model's factorised reverse kernel ``p(x_{t-1,d} = 1 |
x_t) = model.prob_prev(x_t, t)``, called exactly as the sampler calls it::

    -log p(x_0) <= L = KL(q(x_T | x_0) || p(x_T))
                     + sum_{t=2}^{T} E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
                     + E_q[-log p(x_0 | x_1)],

with the closed-form Bernoulli posteriors ``q(x_{t-1,d} = 1 | x_t, x_0)``
(``BinomialChain.posterior_prob_one``); every KL is a sum over bits of Bernoulli KLs, and
the t = 1 term is the same formula with q = x_0 (the posterior at t = 1 is x_0 itself).
Each term t draws its own ``x_t ~ q(x_t | x_0)`` (an unbiased Monte Carlo estimate of the
sum).  The prior term is exact (0 for the default betas, where r_T = 0).  Bits are
probability masses: there is no Jacobian, and the result is in nats per sample and nats per
bit.  Its expectation is an upper bound of ``-log p_model(x_0)`` for every x_0, so the mean
over data is at least the entropy of the data law (both tested by enumeration).

Randomness: purpose 56 (``PURPOSE_SAMPLE + 8``): bit d of ``x_t`` is 1 when ``u_d <=
q(x_t,d = 1 | x_0)``, u the uniforms of ``kernels.streams.uniforms(seed, 56, walker, t, .)``
(``kernels.reverse_cpu.bit_flips``, the sampler's layout), walker = the point's absolute
index.

Randomness (Philox, ``kernels.philox`` purposes ``PURPOSE_SAMPLE + i``; walker = the point's
absolute index ``first_sample + i``):

* 52: the discrete bound's noise, term k (1..K) uses normal elements ``(k-1) D .. k D - 1``;
* 53: the continuous bound's noise, time j uses elements ``j D .. (j+1) D - 1``;
* 54: the continuous bound's stratification shift u: uniform word of counter (walker, 0, 0);
* 56: the binomial bound's forward draws ``x_t ~ q(x_t | x_0)``, step t (1..T).

Standard errors are over the points (``std(ddof=1)/sqrt(N)``); they include the Monte Carlo
noise of the bounds and of Hutchinson's trace, which are independent across points.
"""
import dataclasses
import math
import time

import numpy as np

from .errors import InputError, RunError
from .samplers import (CONTINUOUS, EXACT_TRACE_MAX_DIM, PURPOSE_PROBE, ExactModel, _mlp_parts,
                       _pf_coef, _process_name, _threads, _Times, _validate_int, as_model)

PURPOSE_ELBO_NOISE = 52         # kernels.philox.PURPOSE_SAMPLE + 4
PURPOSE_VDM_NOISE = 53          # + 5
PURPOSE_VDM_TIME = 54           # + 6
PURPOSE_BINOMIAL_BOUND = 56     # + 8 (55 is reweight's bootstrap)
METHODS = ("ode", "elbo")
EXACT_TRACE_ROWS = 16           # rows per chunk of the exact-trace backward passes (_Div)
BINOMIAL_ODE_ERROR = ("--method ode needs a model of process vp, subvp, ve: a binomial-chain "
                      "model's data are bits, which have no probability-flow ODE density; "
                      "use --method elbo (the bound of the bit-flip chain)")


# ====================================================================== ode
@dataclasses.dataclass
class LikelihoodResult:
    """``logp [N]``: log-density of each point in data units (nats), i.e. the model's density
    of x in the coordinates of the data (the normalisation's Jacobian included);
    ``nll_nats_per_sample``/``nll_nats_per_dim`` the mean negative log-likelihood and ``se``
    its standard error over the points (per sample; divide by D for per dim); ``y_T`` the
    points mapped to t_max (normalised units); ``info``: method, trace, evaluations."""
    logp: np.ndarray
    nll_nats_per_sample: float
    nll_nats_per_dim: float
    se: float
    y_T: np.ndarray = None
    info: dict = dataclasses.field(default_factory=dict)


class _Div:
    """F(y, t) = P y + Q o(y, t) of the probability-flow ODE and its divergence."""

    def __init__(self, model, parts, tm, trace, probes):
        self.model, self.parts, self.tm = model, parts, tm
        self.trace, self.v = trace, probes
        self.nfev = 0

    def _net_jac(self, y, tau):
        """(o, tr d o / d y) (or v^T (d o / d y) v) of the MLP at y [B, D], via backward
        passes of kernels.mlp_cpu: D passes (exact) or one (Hutchinson).

        The exact trace runs in row chunks of ``EXACT_TRACE_ROWS``: its D backward passes
        per chunk stay in cache, and OpenBLAS does not start its threads for them (measured
        on the loaded 2-core machine: 6-7 us per point and dimension in chunks of 16 against
        60-150 us in batches of 32 and more; the rows' results do not depend on the chunk).
        """
        B = y.shape[0]
        if self.trace == "exact" and B > EXACT_TRACE_ROWS:
            parts = [self._net_jac(y[a:a + EXACT_TRACE_ROWS], tau)
                     for a in range(0, B, EXACT_TRACE_ROWS)]
            return (np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]))
        from kernels import mlp_cpu

        theta, offsets, act, freqs = self.parts
        B, D = y.shape
        X = np.empty((B, offsets[0, 2]), theta.dtype)
        X[:, :D] = y
        F = freqs.size
        emb = np.empty(2 * F)
        for q in range(F):
            emb[q], emb[F + q] = mlp_cpu.time_sincos(float(freqs[q]), float(tau))
        X[:, D:] = emb
        o, cache = mlp_cpu.mlp_forward_cache(theta, offsets, act, X)
        if self.trace == "exact":
            tr = np.zeros(B)
            dY = np.zeros((B, D), theta.dtype)
            for k in range(D):
                dY[:, :] = 0
                dY[:, k] = 1
                _, dX = mlp_cpu.mlp_backward(theta, offsets, act, cache, dY)
                tr += dX[:, k]
        else:
            v = self.v.astype(theta.dtype)
            _, dX = mlp_cpu.mlp_backward(theta, offsets, act, cache, np.ascontiguousarray(v))
            tr = np.sum(np.asarray(dX[:, :D], np.float64) * self.v, axis=1)
        return np.asarray(o, np.float64), tr

    def _eps_jac(self, y, t):
        """Exact scores: eps and its Jacobian trace by central differences (step 1e-5 of the
        scale of y; the error is O(h^2), below 1e-9 for smooth scores)."""
        o = self.model.eps_normalised(y, t)
        B, D = y.shape
        h = 1e-5 * max(1.0, float(np.max(np.abs(y))) if y.size else 1.0)
        if self.trace == "exact":
            tr = np.zeros(B)
            for k in range(D):
                yp = y.copy()
                ym = y.copy()
                yp[:, k] += h
                ym[:, k] -= h
                tr += (self.model.eps_normalised(yp, t)[:, k]
                       - self.model.eps_normalised(ym, t)[:, k]) / (2 * h)
        else:
            d = (self.model.eps_normalised(y + h * self.v, t)
                 - self.model.eps_normalised(y - h * self.v, t)) / (2 * h)
            tr = np.sum(d * self.v, axis=1)
        return o, tr

    def __call__(self, y, t):
        P, Q = _pf_coef(self.tm, t)
        P, Q = float(P), float(Q)
        self.nfev += 1
        if self.parts is not None:
            o, tr = self._net_jac(y, float(self.tm.tau(t)))
        else:
            o, tr = self._eps_jac(y, t)
        return P * y + Q * o, P * y.shape[1] + Q * tr


def ode_likelihood(model, x, method="rk45", steps=None, rtol=1e-6, atol=1e-6, trace="auto",
                   prior_logp=None, seed=0, first_sample=0, batch=4096, weights="ema",
                   t_eps=None, callback=None):
    r"""Log-likelihood of data points ``x [N, *data_shape]`` (data units) under the model's
    probability-flow ODE (Song et al. 2021; the instantaneous change of variables of Chen et
    al. 2018).

    With ``y = normalise(x)`` placed at t_eps and ``dy/dt = F(y, t) = f y - g^2 s / 2``
    integrated up to t_max::

        log p(y) = log p_T(y_T) + int_{t_eps}^{t_max} div F(y_t, t) dt,
        log p_x(x) = log p(y) + log |det dy/dx|   (-sum_d log s_d, or log |det W| for PCA)

    so the model density is that of p_{t_eps}, the data blurred by the forward process to
    t_eps (sigma ~ 0.01 in normalised units for VP), as in Song et al. 2021.

    * ``method``: ``"rk45"`` (SciPy ``solve_ivp`` on the flattened batch, ``rtol``/``atol``;
      the step control couples the points of a batch, so results depend on ``batch`` within
      the tolerances) or ``"heun"`` with ``steps`` fixed steps (default 500; batch-invariant).
    * ``trace``: ``"exact"`` (D backward passes of the network per evaluation; for exact
      scores, central differences), ``"hutchinson"`` (one Rademacher probe v per point, from
      Philox purpose 51 at the point's absolute index ``first_sample + i``, fixed along the
      path: unbiased for log p but noisy; exponentiating it gives biased weights), or
      ``"auto"``: exact up to ``EXACT_TRACE_MAX_DIM`` dimensions, Hutchinson above.
    * ``prior_logp(y_T) -> [N]``: the log-density at t_max (normalised units); default the
      prior ``N(0, prior_std^2 I)``.  Pass the exact terminal marginal to test the ODE alone.
    """
    from kernels import streams

    model = as_model(model, t_eps=t_eps)
    name = _process_name(model)
    if name not in CONTINUOUS:
        raise InputError(f"the probability-flow likelihood needs a continuous-time process "
                         f"(vp, subvp, ve); this model's process is {name}")
    if method not in ("rk45", "heun"):
        raise InputError(f"method {method!r}; valid: rk45, heun")
    D = int(model.dim)
    if trace == "auto":
        trace = "exact" if D <= EXACT_TRACE_MAX_DIM else "hutchinson"
    if trace not in ("exact", "hutchinson"):
        raise InputError(f"trace {trace!r}; valid: auto, exact, hutchinson")
    steps = 500 if steps is None else _validate_int("steps", steps, 1, 2**31 - 1)
    batch = _validate_int("batch", batch, 1)
    seed = _validate_int("seed", seed, 0, 2**64 - 1)
    parts = _mlp_parts(model, weights)
    tm = _Times(model, parts is not None)
    x = np.asarray(x, np.float64).reshape(-1, D)
    if x.shape[0] < 1 or not np.all(np.isfinite(x)):
        raise InputError("the points must be a non-empty array of finite numbers")
    y_all, log_scale = normalised_points(model, x)
    t0, t1 = float(model.t_eps), float(model.t_max)
    N = x.shape[0]
    logp = np.empty(N)
    yT_all = np.empty_like(y_all)
    nfev = 0
    tstart = time.perf_counter()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=_threads(model), user_api="blas"):
        for a in range(0, N, batch):
            b = min(N, a + batch)
            y = y_all[a:b].copy()
            B = b - a
            v = None
            if trace == "hutchinson":
                u = np.empty((B, D))
                streams.uniforms(seed, PURPOSE_PROBE, first_sample + a, 0, u)
                v = np.where(u <= 0.5, -1.0, 1.0)
            div = _Div(model, parts, tm, trace, v)
            if method == "rk45":
                from scipy.integrate import solve_ivp

                def fun(t, z):
                    dy, dl = div(z[:B * D].reshape(B, D), t)
                    return np.concatenate([dy.ravel(), dl])

                sol = solve_ivp(fun, (t0, t1), np.concatenate([y.ravel(), np.zeros(B)]),
                                method="RK45", rtol=rtol, atol=atol)
                if not sol.success:
                    raise RunError(f"ode likelihood: RK45 failed ({sol.message})")
                z = sol.y[:, -1]
                y, ell = z[:B * D].reshape(B, D), z[B * D:]
            else:
                grid = np.linspace(t0, t1, steps + 1)
                ell = np.zeros(B)
                for k in range(steps):
                    h = grid[k + 1] - grid[k]
                    d1, l1 = div(y, grid[k])
                    yt = y + h * d1
                    d2, l2 = div(yt, grid[k + 1])
                    y = y + 0.5 * h * (d1 + d2)
                    ell = ell + 0.5 * h * (l1 + l2)
            nfev += div.nfev
            if prior_logp is None:
                ps = float(model.prior_std)
                lp = -0.5 * np.sum(y * y, axis=1) / ps**2 - 0.5 * D * math.log(2 * math.pi *
                                                                               ps**2)
            else:
                lp = np.asarray(prior_logp(y), np.float64).reshape(B)
            logp[a:b] = lp + ell - log_scale
            yT_all[a:b] = y
            if callback is not None:
                el = time.perf_counter() - tstart
                callback({"step": b, "steps": N, "frames": 0, "elapsed": el,
                          "walker_steps_per_s": b / el if el > 0 else float("nan")})
    if not np.all(np.isfinite(logp)):
        raise RunError("ode likelihood: a log-density is not finite; the model's score is "
                       "broken on these points")
    nll = -float(np.mean(logp))
    se = float(np.std(logp, ddof=1) / math.sqrt(N)) if N > 1 else float("nan")
    info = dict(method=method, trace=trace, rtol=rtol, atol=atol,
                steps=steps if method == "heun" else None, t_eps=t0, t_max=t1,
                network_evaluations=nfev, weights=weights,
                note="density of p_{t_eps}; data units (normalisation Jacobian included)"
                + ("; Hutchinson trace: unbiased for log p, biased after exp()"
                   if trace == "hutchinson" else ""))
    return LikelihoodResult(logp, nll, nll / D, se, yT_all, info)



@dataclasses.dataclass
class ElboResult:
    """Variational bounds of data points (nats, data units).

    ``nll [N]`` the discrete bound per point (an upper bound of -log p on average),
    ``nll_vdm [N]`` the continuous (VDM) bound per point (None for a DDPM chain);
    ``nll_nats_per_sample``, ``nll_nats_per_dim``, ``se`` of the discrete bound and the same
    with ``_vdm`` for the continuous one; ``terms``: mean reconstruction, prior and diffusion
    terms (nats); ``info``: steps, n_time, t_0, t_max, the Jacobian term."""
    nll: np.ndarray
    nll_nats_per_sample: float
    nll_nats_per_dim: float
    se: float
    nll_vdm: np.ndarray = None
    nll_vdm_nats_per_sample: float = None
    nll_vdm_nats_per_dim: float = None
    se_vdm: float = None
    terms: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)


def _mean_se(v):
    v = np.asarray(v, np.float64)
    se = float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(np.mean(v)), se


def normalised_points(model, x):
    """(y [N, D] in normalised units, log |det dx/dy|) for data ``x [N, *data_shape]``:
    ``log p_x(x) = log p_y(y) - log_scale``."""
    D = int(model.dim)
    x = np.asarray(x, np.float64).reshape(-1, D)
    if hasattr(model, "normalise"):
        W = getattr(model, "whiten", None)
        log_scale = (-float(np.linalg.slogdet(W)[1]) if W is not None else
                     float(np.sum(np.log(model.std))))
        return model.normalise(x), log_scale
    return x.copy(), 0.0


def _eps(model, y, t, weights):
    """eps_hat [B, D] at normalised y and times t (scalar or [B])."""
    if isinstance(model, ExactModel):
        return np.asarray(model.exact.eps(y, np.broadcast_to(np.asarray(t, float),
                                                              (y.shape[0],))), np.float64)
    if hasattr(model, "ema"):
        return np.asarray(model.eps_normalised(y, t, weights), np.float64)
    return np.asarray(model.eps_normalised(y, t), np.float64)


ELBO_GRIDS = ("t", "logsnr")


def _elbo_grid(model, tm, steps, grid="t"):
    """Times ``t_0 < ... < t_K`` of the discrete bound: uniform in t (``grid="t"``, like the
    samplers) or uniform in log SNR (``"logsnr"``: every step lowers log SNR by the same
    amount, so no single step carries the steep fall of SNR near t_0); a DDPM chain uses
    its own integer times."""
    if grid not in ELBO_GRIDS:
        raise InputError(f"unknown ELBO grid {grid!r}; valid: {', '.join(ELBO_GRIDS)}")
    if tm.name == "ddpm":
        if grid != "t":
            raise InputError("the ddpm chain's bound uses its own integer times; grid "
                             f"{grid!r} applies to continuous-time processes (vp, subvp, ve)")
        T = int(model.process.T)
        steps = T - 1 if steps is None else steps
        if not 1 <= steps <= T - 1:
            raise InputError(f"steps {steps}: the ddpm chain has T = {T}; the bound uses "
                             f"1..{T - 1} steps between t = 1 and t = T")
        return np.unique(np.rint(np.linspace(1, T, steps + 1))).astype(np.float64)
    steps = 1000 if steps is None else steps
    t0, t1 = float(model.t_eps), float(model.t_max)
    if grid == "logsnr":
        m, v = (np.asarray(a, np.float64) for a in tm.m_v(np.array([t0, t1])))
        lam = np.log(m * m / v)
        g = _time_of_log_snr(tm, lam[0] + (lam[1] - lam[0]) * np.arange(steps + 1) / steps,
                             t0, t1)
    else:
        g = t0 + (t1 - t0) * np.arange(steps + 1) / steps
    g[0], g[-1] = t0, t1
    return g


def _time_of_log_snr(tm, lam, t0, t1, iters=64):
    """t in [t0, t1] with log SNR(t) = lam (log SNR decreasing), by vectorised bisection to
    machine precision."""
    lo = np.full(lam.shape, t0)
    hi = np.full(lam.shape, t1)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        m, v = tm.m_v(mid)
        up = np.log(np.asarray(m, np.float64) ** 2 / np.asarray(v, np.float64)) > lam
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return 0.5 * (lo + hi)


def elbo(model, x, steps=None, n_time=64, seed=0, first_sample=0, batch=4096, weights="ema",
         t_eps=None, continuous=True, callback=None, grid="t"):
    """The discrete (Sohl-Dickstein / DDPM) and continuous (VDM) bounds of ``-log p(x)`` for
    data ``x [N, *data_shape]`` (see the module docstring).  ``steps`` K of the discrete bound
    (default 1000; T - 1 for a DDPM chain) on ``grid`` ("t": uniform in t, the default;
    "logsnr": uniform in log SNR), ``n_time`` stratified times per point for the VDM
    bound (``continuous=False`` skips it).  Returns an ``ElboResult`` (nats, data units).
    A binomial-chain model gets ``binomial_elbo`` (``n_time``, ``t_eps``, ``continuous``
    do not apply)."""
    from kernels import streams

    model = as_model(model, t_eps=t_eps)
    if _process_name(model) == "binomial":
        if grid != "t":
            raise InputError(f"grid {grid!r}: the bit-flip chain's bound uses its own integer "
                             "steps; the grid applies to continuous-time processes")
        return binomial_elbo(model, x, steps=steps, seed=seed, first_sample=first_sample,
                             batch=batch, weights=weights, callback=callback)
    tm = _Times(model, False)
    if tm.name not in CONTINUOUS + ("ddpm",):
        raise InputError(f"the ELBO needs a Gaussian process (vp, subvp, ve, ddpm) or the "
                         f"binomial chain; this model's process is {tm.name}")
    if steps is not None:
        steps = _validate_int("steps", steps, 1, 10**7)
    n_time = _validate_int("n_time", n_time, 1, 10**6)
    seed = _validate_int("seed", seed, 0, 2**64 - 1)
    batch = _validate_int("batch", batch, 1)
    grid_kind, grid = grid, _elbo_grid(model, tm, steps, grid)
    K = grid.size - 1
    continuous = bool(continuous) and tm.name in CONTINUOUS
    D = int(model.dim)
    y_all, log_scale = normalised_points(model, x)
    if y_all.shape[0] < 1 or not np.all(np.isfinite(y_all)):
        raise InputError("the points must be a non-empty array of finite numbers")
    N = y_all.shape[0]
    m, v = (np.asarray(a, np.float64) for a in tm.m_v(grid))
    snr = m * m / v
    ps = float(model.prior_std)
    rec = 0.5 * D * (math.log(2 * math.pi * v[0] / m[0] ** 2) + 1.0)
    prior = np.empty(N)
    disc = np.zeros(N)
    vdm = np.zeros(N) if continuous else None
    t0, t1 = float(grid[0]), float(grid[-1])
    lam0, lam1 = math.log(snr[0]), math.log(snr[-1])
    for a in range(0, N, batch):
        b = min(N, a + batch)
        y = y_all[a:b]
        B = b - a
        prior[a:b] = 0.5 * np.sum((v[-1] + m[-1] ** 2 * y * y) / ps**2 - 1.0
                                  - math.log(v[-1] / ps**2), axis=1)
        z = np.empty((B, D))
        for k in range(1, K + 1):
            streams.normals(seed, PURPOSE_ELBO_NOISE, first_sample + a, (k - 1) * D, z)
            s = math.sqrt(v[k])
            zt = m[k] * y + s * z
            yh = (zt - s * _eps(model, zt, float(grid[k]), weights)) / m[k]
            disc[a:b] += 0.5 * (snr[k - 1] - snr[k]) * np.sum((y - yh) ** 2, axis=1)
            if callback is not None and (k % 50 == 0 or k == K):
                callback({"stage": "discrete bound", "step": a * K + B * k, "steps": N * K})
        if continuous:
            u = np.empty((B, 1))
            streams.uniforms(seed, PURPOSE_VDM_TIME, first_sample + a, 0, u)
            for j in range(n_time):
                lam = lam1 + (lam0 - lam1) * (j + u[:, 0]) / n_time
                t = _time_of_log_snr(tm, lam, t0, t1)
                mt, vt = (np.asarray(q, np.float64) for q in tm.m_v(t))
                streams.normals(seed, PURPOSE_VDM_NOISE, first_sample + a, j * D, z)
                st = np.sqrt(vt)[:, None]
                zt = mt[:, None] * y + st * z
                yh = (zt - st * _eps(model, zt, t, weights)) / mt[:, None]
                vdm[a:b] += (0.5 * (lam0 - lam1) / n_time * (mt * mt / vt)
                             * np.sum((y - yh) ** 2, axis=1))
                if callback is not None and (j % 8 == 0 or j == n_time - 1):
                    callback({"stage": "continuous bound", "step": a * n_time + B * (j + 1),
                              "steps": N * n_time})
    nll = rec + prior + disc + log_scale
    mu, se = _mean_se(nll)
    out = ElboResult(nll, mu, mu / D, se)
    out.terms = {"reconstruction": rec, "prior": float(np.mean(prior)),
                 "diffusion_discrete": float(np.mean(disc)), "log_det_normalisation":
                 log_scale}
    if continuous:
        out.nll_vdm = rec + prior + vdm + log_scale
        out.nll_vdm_nats_per_sample, out.se_vdm = _mean_se(out.nll_vdm)
        out.nll_vdm_nats_per_dim = out.nll_vdm_nats_per_sample / D
        out.terms["diffusion_continuous"] = float(np.mean(vdm))
    if not np.all(np.isfinite(nll)):
        raise RunError("elbo: a bound is not finite; the model's score is broken on these "
                       "points")
    out.info = dict(method="elbo", steps=K, grid=grid_kind if tm.name != "ddpm" else "ddpm",
                    n_time=n_time if continuous else None, t_0=t0,
                    t_max=t1, process=tm.name, weights=weights, seed=seed,
                    decoder="N(x; z_0/alpha_0, sigma_0^2/alpha_0^2)")
    return out


# ====================================================================== binomial chain
def _bernoulli_kl(q, p):
    """KL(Bernoulli(q) || Bernoulli(p)) elementwise (nats), with 0 log 0 = 0; +inf where p
    gives probability 0 to an outcome that q allows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.where(q > 0, q * (np.log(q) - np.log(p)), 0.0)
        zero = np.where(q < 1, (1.0 - q) * (np.log1p(-q) - np.log1p(-p)), 0.0)
    return one + zero


def binomial_bits(model, x, source="the points"):
    """Bits ``[N, D]`` (float64 in {0, 1}) of binary data ``x [N, *data_shape]`` given in the
    model's encoding: 0/1 bits, or -1/+1 spins when the model was trained on spins
    (``model.data_encoding``).  Raises InputError naming ``source`` otherwise."""
    from .train import _binary

    D = int(model.dim)
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0 or x.size % D:
        raise InputError(f"{source}: expected a non-empty array of shape [N, "
                         f"{', '.join(map(str, model.data_shape))}], got shape {x.shape}")
    x = x.reshape(-1, D)
    bits, enc = _binary(x, source)
    want = getattr(model, "data_encoding", None) or "bits"
    if want == "spins" and np.any(np.asarray(x) == 0):
        raise InputError(f"{source}: the model was trained on spins -1/+1 but the data hold "
                         "0/1 bits; give the data as spins (s = 2 x - 1)")
    if want != "spins" and enc == "spins":
        raise InputError(f"{source}: the model was trained on 0/1 bits but the data hold "
                         "-1/+1 spins; give the data as bits (x = (s + 1) / 2)")
    return bits


def _chain_prob(model, xt, t, kw):
    """``p(x_{t-1} = 1 | x_t)`` [B, D]: ``model.prob_prev`` called exactly as the binomial
    sampler calls it (``nonequil.samplers._sample_binomial``)."""
    B = xt.shape[0]
    p = model.prob_prev(xt.reshape((B,) + tuple(model.data_shape)), t, **kw)
    return np.asarray(p, np.float64).reshape(B, -1)


def binomial_elbo(model, x, steps=None, seed=0, first_sample=0, batch=4096, weights="ema",
                  source="the points", callback=None):
    """The variational bound of the binomial chain for binary data ``x [N, *data_shape]``
    (bits, or spins for a spin model), in nats (see the module docstring).  ``steps`` must be
    None or the chain's T.  Returns an ``ElboResult``: ``nll [N]`` per point, its mean per
    sample and per bit with the SE over the points; ``terms``: the mean reconstruction
    (t = 1), prior (exact) and diffusion (t = 2..T) terms."""
    from kernels.reverse_cpu import bit_flips

    proc = model.process
    T = int(proc.T)
    if steps is not None and steps != T:
        raise InputError(f"steps {steps}: the binomial chain's bound uses all of its T = {T} "
                         f"steps; drop --steps or give {T}")
    seed = _validate_int("seed", seed, 0, 2**64 - 1)
    batch = _validate_int("batch", batch, 1)
    first_sample = _validate_int("first_sample", first_sample, 0, 2**32 - 1)
    x0_all = binomial_bits(model, x, source)
    N, D = x0_all.shape
    if first_sample + N > 2**32:
        raise InputError("first_sample + N must be at most 2**32 (point indices are 32-bit)")
    kw = {"weights": weights} if hasattr(model, "ema") else {}
    prior = np.sum(_bernoulli_kl(proc.marginal_prob_one(x0_all, T), 0.5), axis=1)
    rec = np.empty(N)
    diff = np.zeros(N)
    for a in range(0, N, batch):
        b = min(N, a + batch)
        x0 = x0_all[a:b]
        xt = np.empty_like(x0)
        for t in range(1, T + 1):
            marg = np.ascontiguousarray(proc.marginal_prob_one(x0, t), np.float64)
            bit_flips(seed, PURPOSE_BINOMIAL_BOUND, first_sample + a, t, marg, xt)
            q = proc.posterior_prob_one(xt, x0, t)
            kl = np.sum(_bernoulli_kl(q, _chain_prob(model, xt, t, kw)), axis=1)
            if t == 1:
                rec[a:b] = kl
            else:
                diff[a:b] += kl
            if callback is not None and (t % 10 == 0 or t == T):
                callback({"stage": "binomial bound", "step": a * T + (b - a) * t,
                          "steps": N * T})
    nll = prior + rec + diff
    if not np.all(np.isfinite(nll)):
        i = int(np.argwhere(~np.isfinite(nll))[0, 0])
        raise RunError(f"elbo: the bound of point {first_sample + i} is infinite: the model's "
                       "reverse kernel gives probability 0 to a bit the forward chain allows "
                       "(a saturated prob_prev)")
    mu, se = _mean_se(nll)
    out = ElboResult(nll, mu, mu / D, se)
    out.terms = {"reconstruction": float(np.mean(rec)), "prior": float(np.mean(prior)),
                 "diffusion_discrete": float(np.mean(diff)), "log_det_normalisation": 0.0}
    out.info = dict(method="elbo", steps=T, n_time=None, t_0=1.0, t_max=float(T),
                    process="binomial", weights=weights, seed=seed,
                    decoder="Bernoulli(x_0; prob_prev(x_1, 1)), the chain's last step")
    return out


def likelihood(model, x, method="ode", seed=0, weights="ema", steps=None, n_time=64,
               rtol=1e-6, atol=1e-6, trace="auto", batch=4096, callback=None,
               source="the points", grid="t"):
    """``method="ode"``: the exact probability-flow log-likelihood (``ode_likelihood``, RK45
    with ``rtol``/``atol``, ``trace``); ``"elbo"``: the bounds (``elbo``; ``binomial_elbo``
    for a binomial-chain model, whose bits have no ODE density).  Returns a flat dict with at
    least ``method, n, dim, nll_nats_per_sample, nll_nats_per_dim, se`` (nats, data units;
    for elbo the discrete bound, with ``elbo_*`` and ``vdm_*`` keys for both bounds).
    ``source`` names the data in error messages; ``grid`` is the discrete bound's time grid
    (``elbo``)."""
    if method not in METHODS:
        raise InputError(f"unknown likelihood method {method!r}; valid: {', '.join(METHODS)}")
    m = as_model(model)
    D = int(m.dim)
    binary = _process_name(m) == "binomial"
    if method == "ode" and binary:
        raise InputError(BINOMIAL_ODE_ERROR)
    if method == "ode":
        r = ode_likelihood(m, x, method="rk45", rtol=rtol, atol=atol, trace=trace, seed=seed,
                           batch=batch, weights=weights, callback=callback)
        n = int(r.logp.size)
        out = {"method": "ode", "n": n, "dim": D, "nll_nats_per_sample":
               r.nll_nats_per_sample, "nll_nats_per_dim": r.nll_nats_per_dim, "se": r.se,
               "se_per_dim": r.se / D, "trace": r.info["trace"], "rtol": rtol, "atol": atol,
               "t_eps": r.info["t_eps"], "t_max": r.info["t_max"],
               "network_evaluations": r.info["network_evaluations"], "note": r.info["note"]}
        if r.info["trace"] == "hutchinson":
            out["hutchinson"] = True
        return out
    if binary:
        if grid != "t":
            raise InputError(f"--grid {grid}: the bit-flip chain's bound uses its own integer "
                             "steps; the grid applies to continuous-time processes")
        r = binomial_elbo(m, x, steps=steps, seed=seed, weights=weights, batch=batch,
                          source=source, callback=callback)
    else:
        r = elbo(m, x, steps=steps, n_time=n_time, seed=seed, weights=weights, batch=batch,
                 callback=callback, grid=grid)
    out = {"method": "elbo", "n": int(r.nll.size), "dim": D,
           "nll_nats_per_sample": r.nll_nats_per_sample,
           "nll_nats_per_dim": r.nll_nats_per_dim, "se": r.se, "se_per_dim": r.se / D,
           "elbo_discrete_nats_per_sample": -r.nll_nats_per_sample,
           "elbo_discrete_se": r.se, "steps": r.info["steps"]}
    if "grid" in r.info:
        out["grid"] = r.info["grid"]
    if r.nll_vdm is not None:
        out.update({"vdm_nll_nats_per_sample": r.nll_vdm_nats_per_sample,
                    "vdm_nll_nats_per_dim": r.nll_vdm_nats_per_dim, "vdm_se": r.se_vdm,
                    "elbo_vdm_nats_per_sample": -r.nll_vdm_nats_per_sample,
                    "n_time": r.info["n_time"]})
    out.update({f"term_{k}": v for k, v in r.terms.items()})
    out.update({"t_0": r.info["t_0"], "t_max": r.info["t_max"], "decoder": r.info["decoder"]})
    return out
