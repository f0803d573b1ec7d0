"""The exact reverse step of the binomial chain on a small Ising torus (nonequil/ising_exact.py).

Oracles: direct enumeration of the posterior p(s_0 | s_t) ~ exp(-E(s_0)/T + h_t s_t . s_0)
(for the Walsh-Hadamard tables), and the exact mean energy of the L x L torus by enumeration
(for the factorised reverse chain run with the exact marginals).  Stochastic tests (labelled)
use fixed seeds and z = 5 standard errors.
"""
import math

import numpy as np
import pytest

from nonequil.errors import InputError
from nonequil.ising_exact import IsingExactDenoiser
from nonequil.processes import BinomialChain
from nonequil.samplers import sample

Z = 5.0


def _chain(steps):
    return BinomialChain(1.0 / (steps - np.arange(1, steps + 1) + 1.0))


@pytest.mark.parametrize("L,T", [(3, 3.0), (4, 1.8)])
def test_posterior_magnetisation_matches_enumeration(L, T):
    """Every table row checked against the direct sum over the 2^D states (deterministic)."""
    den = IsingExactDenoiser(L, T)
    s = 2.0 * den.bits - 1.0
    for t in (1, 37, 99, 100):
        m = den.posterior_magnetisation(t)
        r = float(den.process.keep(t))
        h = math.atanh(r) if r > 0 else 0.0
        for x in (0, 5, (1 << den.dim) - 1, 3 * (1 << den.dim) // 7):
            w = den.pi * np.exp(h * (s @ s[x]))
            direct = (w[:, None] * s).sum(0) / w.sum()
            assert np.abs(m[x] - direct).max() < 1e-10, (t, x)
    assert np.all(den.posterior_magnetisation(100) == 0.0)       # r_T = 0: no information


def test_prob_prev_is_the_posterior_mixture():
    """p(x_{t-1} = 1 | x_t) = sum over x_0,i of q(x_{t-1} | x_t, x_0) p(x_0,i | x_t)
    (deterministic)."""
    den = IsingExactDenoiser(3, 2.5)
    x = den.bits[[7, 300]].astype(np.float64).reshape(2, 3, 3)
    t = 40
    m = den.posterior_magnetisation(t)[den.index(x)]
    xf = x.reshape(2, 9)
    want = 0.5 * (1 + m) * den.process.posterior_prob_one(xf, 1.0, t) + \
        0.5 * (1 - m) * den.process.posterior_prob_one(xf, 0.0, t)
    assert np.allclose(den.prob_prev(x, t).reshape(2, 9), want, rtol=0, atol=1e-14)


def test_exact_chain_energy_and_its_discretisation_bias():
    """Stochastic (seed 3, z = 5): the factorised reverse chain with the exact marginals
    reproduces the exact energy of the 3 x 3 torus at T = 3 with 400 steps, and with 10 steps
    it is measurably too disordered (the factorisation error, ~1/steps)."""
    n = 20000
    res = {}
    for steps in (10, 400):
        den = IsingExactDenoiser(3, 3.0, _chain(steps))
        s = sample(den, n, "binomial", seed=3).samples.astype(np.float64)
        e = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).mean((1, 2))
        res[steps] = (e.mean(), e.std(ddof=1) / math.sqrt(n))
    exact = den.energy_per_spin
    assert abs(res[400][0] - exact) <= Z * res[400][1], (res, exact)
    assert res[10][0] - exact > Z * res[10][1], (res, exact)     # too high: too disordered


def test_bad_input():
    with pytest.raises(InputError, match="L must be an integer"):
        IsingExactDenoiser(5, 3.0)
    with pytest.raises(InputError, match="temperature T"):
        IsingExactDenoiser(3, -1.0)
