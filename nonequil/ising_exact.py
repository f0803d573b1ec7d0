r"""The exact reverse step of the binomial bit-flip chain for a small Ising torus.

For the chain of ``nonequil.processes.BinomialChain`` each spin of s_0 is kept in s_t with
probability (1 + r_t)/2 (r_t = ``keep(t)``), independently, so ``q(s_t | s_0) \propto
exp(h_t s_t . s_0)`` with ``h_t = atanh(r_t)``, and the posterior of the clean spins is an
Ising model in a site-dependent field::

    p(s_0 | s_t) \propto exp(-E(s_0)/T + h_t sum_i s_t,i s_0,i),   E = -sum_<xy> s_x s_y.

The exact per-bit reverse probability that a binomial model should output is then
``p(x_{t-1,i} = 1 | x_t) = sum_{x_0,i} q(x_{t-1,i} = 1 | x_t, x_0,i) p(x_0,i | x_t)``, which
needs only the posterior magnetisation ``m_i(s_t) = E[s_0,i | s_t]``.  For L x L <= 16
sites it is computed for every one of the 2^D states at once: numerator and denominator are
XOR-convolutions of ``pi(s) s_i`` and ``pi(s)`` with ``f(y) = exp(h_t (D - 2 |y|))`` over
the bit patterns, done by the fast Walsh-Hadamard transform, where the transform of f is
``(2 cosh h)^(D - |k|) (2 sinh h)^|k| = (2 cosh h)^D r_t^|k|`` (O(D^2 2^D) per t instead
of O(4^D)).

``IsingExactDenoiser`` has the surface the binomial sampler needs (``process``, ``dim``,
``data_shape``, ``prob_prev``), so ``nonequil.samplers.sample(IsingExactDenoiser(4, 3.0),
n, "binomial")`` runs the factorised reverse chain with the exact marginals.  Its samples
differ from the Boltzmann law only by the factorisation of each reverse step over the bits,
which is exact as T (the chain's step count) -> infinity: measured at L = 4, T = 3.0 (the
exact mean energy per spin -1.0171), the chain's energy is too high by 3.49 % (T = 25),
0.69 % (T = 100) and 0.29 % (T = 200), +- 0.18 %, roughly 80 %/T (100 000 chains each;
``experiments/ising_exact_chain.py``).  ``posterior_magnetisation`` keeps the tables of the
last few times only: sample in one batch (``sample(..., batch=n)``).
"""
import math

import numpy as np

from .errors import InputError

MAX_SITES = 16          # 2^16 states: tables of 2^D x D float64 (8 MiB) per time


def _fwht(a):
    """Unnormalised Walsh-Hadamard transform over the last axis (length 2^D) of a [R, 2^D]
    (D butterfly passes, in place on a copy)."""
    a = np.array(a, np.float64)
    R, n = a.shape
    h = 1
    while h < n:
        v = a.reshape(R, n // (2 * h), 2, h)
        x0 = v[:, :, 0, :].copy()
        x0 -= v[:, :, 1, :]                 # x0 - x1
        v[:, :, 0, :] += v[:, :, 1, :]      # x0 + x1
        v[:, :, 1, :] = x0
        h *= 2
    return a


class IsingExactDenoiser:
    """Exact reverse-step bit probabilities of the binomial chain for the L x L periodic
    Ising model (J = kB = 1) at temperature T, by enumeration of the 2^(L^2) states
    (L^2 <= 16).

    Parameters
    ----------
    L : int
        Lattice side (2..4); sites are row-major, site i is bit i of a state index.
    T : float
        Temperature in units of J/kB (> 0).
    process : BinomialChain, optional
        The forward chain (default: ``BinomialChain()``, T = 100 steps).
    """
    data_encoding = "spins"

    def __init__(self, L, T, process=None):
        from .processes import BinomialChain

        if not isinstance(L, (int, np.integer)) or not 2 <= L * L <= MAX_SITES:
            raise InputError(f"IsingExactDenoiser enumerates 2^(L^2) states: L must be an "
                             f"integer with L^2 <= {MAX_SITES} (L = 2..4), got {L!r}")
        if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
            raise InputError(f"temperature T must be a finite number > 0, got {T!r}")
        self.L, self.T = int(L), float(T)
        self.process = BinomialChain() if process is None else process
        self.data_shape = (self.L, self.L)
        self.dim = D = self.L * self.L
        idx = np.arange(1 << D)
        self.bits = ((idx[:, None] >> np.arange(D)) & 1).astype(np.int8)     # [2^D, D]
        s = 2.0 * self.bits - 1.0
        g = s.reshape(-1, self.L, self.L)
        self.energy = -(g * (np.roll(g, 1, 1) + np.roll(g, 1, 2))).sum((1, 2))   # [2^D]
        logw = -self.energy / self.T
        pi = np.exp(logw - logw.max())
        self.pi = pi / pi.sum()
        self._spectra = _fwht(np.vstack([self.pi[None, :], self.pi[None, :] * s.T]))
        self._pop = self.bits.sum(1)
        self._cache = {}

    @property
    def energy_per_spin(self):
        """Exact mean energy per spin <E>/L^2 (units of J)."""
        return float(self.pi @ self.energy) / self.dim

    def posterior_magnetisation(self, t):
        """m [2^D, D]: m[x, i] = E[s_0,i | x_t = x] for every state index x at integer
        time t in 1..T (``h_t = atanh(keep(t))``; 0 at r_t = 0)."""
        t = int(t)
        m = self._cache.get(t)
        if m is None:
            r = float(self.process.keep(t))
            D = self.dim
            if r <= 0.0:
                m = np.zeros((1 << D, D))
            else:       # transform of f over (2 cosh h)^D: tanh(h)^|k| = r_t^|k|
                conv = _fwht(self._spectra * (r ** self._pop)[None, :])
                m = (conv[1:] / conv[0]).T
            if len(self._cache) > 2:
                self._cache.clear()
            self._cache[t] = m
        return m

    def index(self, x):
        """State indices [B] of bits x [B, ...] in {0, 1} (site i is bit i)."""
        x = np.asarray(x).reshape(-1, self.dim)
        return (np.rint(x).astype(np.int64) << np.arange(self.dim)).sum(1)

    def prob_prev(self, x, t, weights=None):
        """p(x_{t-1} = 1 | x_t = x) per bit, x in {0, 1} [B, L, L] -> [B, L, L]."""
        t = int(np.asarray(t).reshape(-1)[0])
        x = np.asarray(x, np.float64).reshape(-1, self.dim)
        p1 = 0.5 * (1.0 + self.posterior_magnetisation(t)[self.index(x)])   # p(x_0,i = 1)
        q1 = self.process.posterior_prob_one(x, 1.0, t)
        q0 = self.process.posterior_prob_one(x, 0.0, t)
        return (p1 * q1 + (1.0 - p1) * q0).reshape((-1,) + self.data_shape)
