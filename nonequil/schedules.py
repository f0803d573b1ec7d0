r"""Noise schedules on t in [0, 1], all expressed through alpha_bar(t) = alpha_t^2.

For the VP family, ``x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps``;
``beta(t) = -d log alpha_bar / dt``, ``B(t) = int_0^t beta = -log alpha_bar(t)``, and the
log signal-to-noise ratio is ``log SNR = log(alpha_bar / (1 - alpha_bar)) = -gamma(t)``
(Kingma et al. 2021 write gamma = -log SNR).

* ``linear``  beta(t) = beta_min + t (beta_max - beta_min), score_sde defaults 0.1 and 20
  (Song et al. 2021): B(t) = beta_min t + (beta_max - beta_min) t^2 / 2.
* ``cosine``  alpha_bar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t + s)/(1 + s)), s = 0.008
  (Nichol & Dhariwal 2021).  beta(t) = pi/(1+s) tan(pi/2 (t+s)/(1+s)) diverges at t = 1, so
  the schedule is used on [0, t_max] with t_max = 0.9946 where alpha_bar = 1e-5 (stored).
* ``loglinear``  VDM-style: gamma(t) = gamma_min + (gamma_max - gamma_min) t with fixed end
  points (defaults -13.3 and 5.0, as in Kingma et al. 2021); alpha_bar = sigmoid(-gamma),
  beta = sigmoid(gamma) gamma'.

All functions are vectorised over t (NumPy).  Everything is in float64.
"""
import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


class Schedule:
    name = "schedule"
    t_max = 1.0

    def log_alpha_bar(self, t):
        raise NotImplementedError

    def beta(self, t):
        raise NotImplementedError

    def alpha_bar(self, t):
        return np.exp(self.log_alpha_bar(t))

    def integral_beta(self, t):
        """B(t) = int_0^t beta(s) ds = -log alpha_bar(t)."""
        return -self.log_alpha_bar(t)

    def log_snr(self, t):
        la = self.log_alpha_bar(t)
        return la - np.log(-np.expm1(la))

    def params(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@dataclass
class Linear(Schedule):
    beta_min: float = 0.1
    beta_max: float = 20.0
    name = "linear"

    def __post_init__(self):
        if not (0 <= self.beta_min < self.beta_max and math.isfinite(self.beta_max)):
            raise InputError(f"linear schedule needs 0 <= beta_min < beta_max, got "
                             f"{self.beta_min}, {self.beta_max}")

    def beta(self, t):
        return self.beta_min + np.asarray(t, float) * (self.beta_max - self.beta_min)

    def log_alpha_bar(self, t):
        t = np.asarray(t, float)
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)


@dataclass
class Cosine(Schedule):
    s: float = 0.008
    alpha_bar_min: float = 1e-5
    name = "cosine"

    def __post_init__(self):
        if not (self.s > 0 and 0 < self.alpha_bar_min < 1):
            raise InputError("cosine schedule needs s > 0 and 0 < alpha_bar_min < 1")
        f0 = math.cos(0.5 * math.pi * self.s / (1 + self.s)) ** 2
        # t_max where alpha_bar = alpha_bar_min
        c = math.sqrt(self.alpha_bar_min * f0)
        self.t_max = (1 + self.s) * (2 / math.pi) * math.acos(c) - self.s
        self._f0 = f0

    def _phase(self, t):
        return 0.5 * math.pi * (np.asarray(t, float) + self.s) / (1 + self.s)

    def log_alpha_bar(self, t):
        return 2.0 * np.log(np.cos(self._phase(t))) - math.log(self._f0)

    def beta(self, t):
        return math.pi / (1 + self.s) * np.tan(self._phase(t))

    def params(self):
        return {"s": self.s, "alpha_bar_min": self.alpha_bar_min, "t_max": self.t_max}


@dataclass
class LogLinear(Schedule):
    gamma_min: float = -13.3
    gamma_max: float = 5.0
    name = "loglinear"

    def __post_init__(self):
        if not self.gamma_min < self.gamma_max:
            raise InputError("loglinear schedule needs gamma_min < gamma_max")

    def gamma(self, t):
        return self.gamma_min + (self.gamma_max - self.gamma_min) * np.asarray(t, float)

    def log_alpha_bar(self, t):
        return _log_sigmoid(-self.gamma(t))

    def beta(self, t):
        return _sigmoid(self.gamma(t)) * (self.gamma_max - self.gamma_min)

    def log_snr(self, t):
        return -self.gamma(t)


SCHEDULES = {"linear": Linear, "cosine": Cosine, "loglinear": LogLinear}


def make(name="linear", **params):
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise InputError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}") from None
    valid = set(cls.__dataclass_fields__)
    bad = set(params) - valid
    if bad:
        raise InputError(f"unknown {name} schedule parameter(s) {', '.join(sorted(bad))}; "
                         f"valid: {', '.join(sorted(valid))}")
    return cls(**params)
