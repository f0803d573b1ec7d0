"""Statistical correctness (issue 9 "Statistical correctness"; slow marker, run in CI).

Every test has a fixed seed, so CI is deterministic, and an analytic oracle.  Each test is one
family of hypothesis tests; the family's false-alarm rate is ALPHA = 1e-4 and each of its m
members is run at the Bonferroni level ALPHA / m (KS: p-value > ALPHA / m; moment checks:
|estimate - exact| < z SE with z = Phi^-1(1 - ALPHA / (2 m)), stated in each docstring).
Tests already in the suite that this file does not repeat: the exact OU transition from a
point (tests/test_langevin.py::test_ou_exact_transition), equipartition in a harmonic trap
(::test_underdamped_equipartition), EM's weak order by its moment recursion and its strong
order 1/2 on GBM.
"""
import math

import numpy as np
import pytest
from scipy import stats

from kernels import philox, streams
from nonequil.analytic import double_well_gradient
from nonequil.simulate import simulate
from tests.test_langevin import _brownian_refinement

pytestmark = pytest.mark.slow

ALPHA = 1e-4            # per family


def _z(m):
    """Two-sided Bonferroni z for a family of m checks at family level ALPHA."""
    return float(stats.norm.isf(ALPHA / (2 * m)))


# ------------------------------------------------------------------ OU
TH, MU, SG = 1.2, 0.3, 0.9


def test_ou_stationarity_ks():
    """OU started in its stationary law stays there (exact and Euler-Maruyama steps).

    Family: 2 methods x 11 frames = 22 KS tests at ALPHA/22 = 4.5e-6 each (seed 21, M = 20000).
    The exact method's stationary law is N(mu, sigma^2 / (2 theta)); EM's own stationary law
    is N(mu, sigma^2 / (theta (2 - theta dt))) (3 % wider here).  The EM walkers start from
    the continuous law, so frame n (after n K steps) is compared with the exact EM law,
    variance v_n = (1 - th dt)^(2 n K) (v0 - v_em) + v_em.
    """
    M, dt, steps, K = 20000, 0.05, 200, 20
    m = 22
    v0 = SG**2 / (2 * TH)
    v_em = SG**2 / (TH * (2 - TH * dt))
    for method in ("exact", "em"):
        r = simulate(process="ou", method=method, walkers=M, steps=steps, dt=dt, seed=21,
                     x0="boltzmann", record_every=K,
                     params={"theta": TH, "mu": MU, "sigma": SG})
        x = r.frames["position"][:, :, 0]
        assert x.shape == (steps // K + 1, M)
        for n, xn in enumerate(x):
            if method == "exact":
                v = v0
            else:
                v = (1 - TH * dt) ** (2 * n * K) * (v0 - v_em) + v_em
            p = stats.kstest(xn, "norm", args=(MU, math.sqrt(v))).pvalue
            assert p > ALPHA / m, (method, n, p)


def test_ou_transition_density_ks():
    """Successive frames follow the OU transition density p(x' | x, s).

    From one stationary run (seed 22, M = 20000, record every K steps), the residuals
    (x_{k+1} - mu - (x_k - mu) e^{-th s}) / sqrt(v0 (1 - e^{-2 th s})) with s = K dt must be
    N(0, 1) for the exact method, and (x_{k+1} - x_k - th (mu - x_k) dt) / (sigma sqrt dt) for
    one EM step (K = 1).  Family: 2 x 10 KS tests at ALPHA/24 = 4.2e-6 each, plus the lag-1
    correlation of the residuals across frames and across neighbouring walkers (4 more
    moment checks, z = Phi^-1(1 - ALPHA/48) = 4.6): 24 members at ALPHA/24 each.
    """
    M, dt, n_pairs = 20000, 0.05, 10
    m_ks, m_c = 20, 4
    z_c = _z(m_ks + m_c)            # the 4 correlations share the family with the 20 KS tests
    v0 = SG**2 / (2 * TH)
    for method, K in (("exact", 7), ("em", 1)):
        r = simulate(process="ou", method=method, walkers=M, steps=K * n_pairs, dt=dt,
                     seed=22, x0="boltzmann", record_every=K,
                     params={"theta": TH, "mu": MU, "sigma": SG})
        x = r.frames["position"][:, :, 0]
        s = K * dt
        if method == "exact":
            res = (x[1:] - MU - (x[:-1] - MU) * math.exp(-TH * s)) / math.sqrt(
                v0 * (1 - math.exp(-2 * TH * s)))
        else:
            res = (x[1:] - x[:-1] - TH * (MU - x[:-1]) * dt) / (SG * math.sqrt(dt))
        for k, rk in enumerate(res):
            p = stats.kstest(rk, "norm").pvalue
            assert p > ALPHA / (m_ks + m_c), (method, k, p)
        c_time = np.mean(res[1:] * res[:-1])
        c_walk = np.mean(res[:, 1:] * res[:, :-1])
        assert abs(c_time) < z_c / math.sqrt(res[1:].size), (method, c_time)
        assert abs(c_walk) < z_c / math.sqrt(res[:, 1:].size), (method, c_walk)


# ------------------------------------------------------------------ equipartition
def test_underdamped_equipartition_double_well():
    """BAOAB in the 2-D double well: <m v_d^2> = kT and <x_d dU/dx_d> = kT (virial theorem).

    Seed 31, M = 4000 walkers started from the Boltzmann law, final states only (independent
    across walkers).  BAOAB's biases are O(dt^2) ~ 1e-4 relative at dt = 0.01, far below the
    SE (~1.6 %).  Family: 4 checks (2 coordinates x kinetic, virial), z = Phi^-1(1 -
    ALPHA/8) = 4.2, SE from the sample standard deviation.
    """
    a, kp, mass, kT, M = 1.0, 2.0, 1.5, 0.7, 4000
    r = simulate(process="underdamped", potential="double-well", walkers=M, steps=300,
                 dt=0.01, seed=31, x0="boltzmann", dim=2,
                 params={"a": a, "b": 0.0, "k_perp": kp, "mass": mass, "kT": kT,
                         "gamma": 2.0})
    z = _z(4)
    x, v = r.x, r.v
    assert x.shape == (M, 2) and v.shape == (M, 2)
    grad = np.stack([double_well_gradient(x[:, 0], a=a, b=0.0), kp * x[:, 1]], axis=1)
    for d in range(2):
        for name, q in (("kinetic", mass * v[:, d] ** 2), ("virial", x[:, d] * grad[:, d])):
            se = q.std(ddof=1) / math.sqrt(M)
            assert abs(q.mean() - kT) < z * se, (name, d, q.mean(), se)


# ------------------------------------------------------------------ convergence orders
def test_em_weak_and_strong_orders_over_five_nested_step_sizes():
    """EM on OU: weak order 1 and strong order 1 (additive noise), over h = T/8 .. T/128.

    For each h the kernel's own Philox normals are read back (and the kernel checked to equal
    a NumPy EM driven by them), refined into a fine Brownian path (Brownian bridge, T/4096),
    and the exact solution on that path is X_T = x0 e^{-th T} + mu (1 - e^{-th T}) +
    sigma sum_k e^{-th (T - t_k)} dW_k (midpoint weights; quadrature error ~1e-4 sd, < 3 % of
    the smallest strong error).  Weak error = |E[X_EM - X_T]|, strong = E|X_EM - X_T|, seed 41,
    M = 2000.  Checks: the fitted log-log slopes lie in [0.85, 1.15] (declared order 1), and
    each weak error agrees with the analytic (x0 - mu) ((1 - th h)^N - e^{-th T}) within
    z SE, z = Phi^-1(1 - ALPHA/10) = 4.3 (family of 5).
    """
    th, mu, sg, x0, T, M = 1.5, 0.0, 1.0, 1.0, 1.0, 2000
    z = _z(5)
    weak, strong, hs = [], [], []
    for N in (8, 16, 32, 64, 128):
        h = T / N
        r = simulate(process="ou", method="em", walkers=M, steps=N, dt=h, seed=41, x0=[x0],
                     params={"theta": th, "mu": mu, "sigma": sg})
        zc = np.empty((M, N))
        streams.normals(np.uint64(41), np.uint64(philox.PURPOSE_NOISE), 0, 0, zc)
        xe = np.full(M, x0)
        for n in range(N):
            xe = (1 - th * h) * xe + th * mu * h + sg * math.sqrt(h) * zc[:, n]
        assert np.allclose(r.x[:, 0], xe, rtol=1e-12, atol=1e-12)
        R = 4096 // N
        dW = _brownian_refinement(zc, h, R, seed=43)
        tmid = (np.arange(dW.shape[1]) + 0.5) * (T / dW.shape[1])
        exact = (x0 * math.exp(-th * T) + mu * (1 - math.exp(-th * T))
                 + sg * dW @ np.exp(-th * (T - tmid)))
        diff = r.x[:, 0] - exact
        want = (x0 - mu) * ((1 - th * h) ** N - math.exp(-th * T))
        se = diff.std(ddof=1) / math.sqrt(M)
        assert abs(diff.mean() - want) < z * se, (N, diff.mean(), want, se)
        weak.append(abs(diff.mean()))
        strong.append(np.mean(np.abs(diff)))
        hs.append(h)
    sw = np.polyfit(np.log(hs), np.log(weak), 1)[0]
    ss = np.polyfit(np.log(hs), np.log(strong), 1)[0]
    assert 0.85 < sw < 1.15, (hs, weak)
    assert 0.85 < ss < 1.15, (hs, strong)


# ------------------------------------------------------------------ Philox
def _moment_checks(a, mean, var, m4, z):
    """|mean(a) - mean| and |var(a) - var| within z SE (m4 = E[(a - mean)^4])."""
    n = a.size
    assert abs(a.mean() - mean) < z * math.sqrt(var / n), a.mean()
    assert abs(np.mean((a - mean) ** 2) - var) < z * math.sqrt((m4 - var**2) / n), a.var()


def _corr_checks(a, z):
    """Lag-1 correlation across neighbouring rows (walkers) and columns (steps/words)."""
    a = (a - a.mean()) / a.std()
    c_rows = np.mean(a[1:] * a[:-1])
    c_cols = np.mean(a[:, 1:] * a[:, :-1])
    assert abs(c_rows) < z / math.sqrt(a[1:].size), c_rows
    assert abs(c_cols) < z / math.sqrt(a[:, 1:].size), c_cols


def test_philox_uniforms_moments_ks_and_correlation():
    """Uniforms (seed 2026, purpose 16): 2000 walkers x 2 steps x 200 words.

    Mean 1/2, variance 1/12 (SE from E[(u - 1/2)^4] = 1/80), KS against U(0, 1] on all
    800k, lag-1 correlation across neighbouring walkers and words within a step, and across
    neighbouring steps (word k of step s against word k of step s + 1).  Family: 6 checks,
    KS at ALPHA/6, the others at z = Phi^-1(1 - ALPHA/12) = 4.3.
    """
    m = 6
    z = _z(m)
    M, K = 2000, 200
    u = np.empty((2, M, K))
    for s in range(2):
        streams.uniforms(np.uint64(2026), np.uint64(philox.PURPOSE_DATASET), 0, s, u[s])
    assert u.min() > 0.0 and u.max() <= 1.0
    _moment_checks(u.ravel(), 0.5, 1 / 12, 1 / 80, z)
    assert stats.kstest(u.ravel(), "uniform").pvalue > ALPHA / m
    _corr_checks(u[0], z)
    c_steps = np.mean((u[0] - 0.5) * (u[1] - 0.5)) * 12
    assert abs(c_steps) < z / math.sqrt(u[0].size), c_steps


def test_philox_normals_moments_ks_and_correlation():
    """Normals (seed 2027, purpose 1 = the simulation noise): 4000 walkers x 200 steps.

    Mean 0, variance 1 (SE from E z^4 = 3), fourth moment 3 (SE from E z^8 = 105), KS against
    N(0, 1) on all 800k, lag-1 correlation across neighbouring walkers and steps (the cos/sin
    halves of one Philox call are neighbouring steps at D = 1), and the correlation of z^2
    across neighbouring steps (Box-Muller pairs share their radius).  Family: 7 checks, KS
    at ALPHA/7, the others at z = Phi^-1(1 - ALPHA/14) = 4.3.
    """
    m = 7
    z = _z(m)
    g = np.empty((4000, 200))
    streams.normals(np.uint64(2027), np.uint64(philox.PURPOSE_NOISE), 0, 0, g)
    a = g.ravel()
    _moment_checks(a, 0.0, 1.0, 3.0, z)
    assert abs(np.mean(a**4) - 3.0) < z * math.sqrt((105.0 - 9.0) / a.size), np.mean(a**4)
    assert stats.kstest(a, "norm").pvalue > ALPHA / m
    _corr_checks(g, z)
    q = g**2 - 1.0                  # var 2
    c_sq = np.mean(q[:, 1:] * q[:, :-1]) / 2.0
    assert abs(c_sq) < z / math.sqrt(q[:, 1:].size), c_sq
