"""Exact score models against finite differences of the exact log-densities."""
import numpy as np
import pytest

from nonequil import processes
from nonequil.score import EmpiricalScore, GaussianScore, MixtureScore

SDE = processes.make("vp")


def _fd_score(logp, x, h=1e-5):
    g = np.empty_like(x)
    for d in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, d] = h
        g[:, d] = (logp(x + e) - logp(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_gaussian_and_mixture_scores_match_finite_differences(t):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2))
    A = np.array([[1.0, 0.4], [0.4, 0.5]])
    g = GaussianScore([0.5, -1.0], A, SDE)
    assert np.allclose(g.score(x, t), _fd_score(lambda y: g.log_prob(y, t), x), atol=1e-6)
    mix = MixtureScore([0.3, 0.7], [[-1.0, 0.0], [2.0, 1.0]], [0.2, 0.5], SDE)
    assert np.allclose(mix.score(x, t), _fd_score(lambda y: mix.log_prob(y, t), x), atol=1e-6)
    # a mixture of one component is the Gaussian
    one = MixtureScore([1.0], [[0.5, -1.0]], [A], SDE)
    assert np.allclose(one.score(x, t), g.score(x, t), atol=1e-10)


def test_empirical_score_is_the_mixture_of_the_training_points():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(5, 2))
    t = 0.2
    v = float(SDE.variance(t))
    emp = EmpiricalScore(data, SDE)
    mix = MixtureScore(np.ones(5), data, np.zeros(5) + 1e-300, SDE)
    x = rng.normal(size=(7, 2))
    assert np.allclose(emp.score(x, t), mix.score(x, t), atol=1e-9)
    # per-row times
    tt = np.full(7, t)
    assert np.allclose(emp.score(x, tt), emp.score(x, t))
    assert v > 0
