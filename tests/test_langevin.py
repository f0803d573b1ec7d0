"""Analytic checks of the OU and Langevin kernels.

Every stochastic test uses a fixed seed and a tolerance of z standard errors with z = 5
(stated per test); the oracles are exact (closed forms or quadrature).
"""
import math

import numpy as np
import pytest
from scipy import integrate, stats

from kernels import philox, streams
from nonequil.simulate import simulate

Z = 5.0


def _final(**kw):
    return simulate(**kw)


# ------------------------------------------------------------------------- OU
@pytest.mark.parametrize("theta,mu,sigma,x0,dt,steps", [
    (1.0, 0.5, 1.0, 2.0, 0.01, 200),
    (3.0, -1.0, 0.3, 0.0, 0.05, 40),
    (0.5, 2.0, 2.0, -1.0, 0.2, 7),
    (0.0, 0.0, 1.5, 1.0, 0.1, 10),        # Brownian motion limit
])
def test_ou_exact_transition(theta, mu, sigma, x0, dt, steps):
    """Stochastic (seed 11, z = 5): exact OU step -> mean, variance and KS vs the exact law."""
    M = 20000
    r = _final(process="ou", walkers=M, steps=steps, dt=dt, seed=11, x0=[x0],
               params={"theta": theta, "mu": mu, "sigma": sigma})
    t = steps * dt
    if theta > 0:
        m = mu + (x0 - mu) * math.exp(-theta * t)
        v = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * t))
    else:
        m, v = x0, sigma**2 * t
    x = r.x[:, 0]
    assert abs(x.mean() - m) < Z * math.sqrt(v / M)
    assert abs(x.var(ddof=1) - v) < Z * v * math.sqrt(2 / (M - 1))
    assert stats.kstest(x, "norm", args=(m, math.sqrt(v))).pvalue > 1e-6


def test_ou_em_matches_its_moment_recursion_and_weak_order_one():
    """Stochastic (seed 5, z = 5) for the kernel; deterministic for the order.

    EM's exact moments are m_{n+1} = (1 - th dt) m_n + th mu dt and
    v_{n+1} = (1 - th dt)^2 v_n + sigma^2 dt; the kernel must reproduce them, and their
    error against the continuous OU law at fixed t must fall like dt^1 (weak order 1).
    """
    th, mu, sg, x0, T = 2.0, 1.0, 0.8, -1.0, 1.0

    def rec(dt):
        n = round(T / dt)
        m, v = x0, 0.0
        for _ in range(n):
            m, v = (1 - th * dt) * m + th * mu * dt, (1 - th * dt) ** 2 * v + sg**2 * dt
        return m, v
    M = 40000
    r = _final(process="ou", method="em", walkers=M, steps=50, dt=T / 50, seed=5, x0=[x0],
               params={"theta": th, "mu": mu, "sigma": sg})
    m, v = rec(T / 50)
    x = r.x[:, 0]
    assert abs(x.mean() - m) < Z * math.sqrt(v / M)
    assert abs(x.var(ddof=1) - v) < Z * v * math.sqrt(2 / (M - 1))
    exact_v = sg**2 / (2 * th) * (1 - math.exp(-2 * th * T))
    dts = T / np.array([50, 100, 200, 400, 800])
    err = [abs(rec(d)[1] - exact_v) for d in dts]
    slope = np.polyfit(np.log(dts), np.log(err), 1)[0]
    assert 0.9 < slope < 1.1


def _brownian_refinement(z_coarse, h, r, seed):
    """Fine increments [N*r] conditioned on the coarse increments sqrt(h) z (Brownian bridge)."""
    N = z_coarse.shape[1]
    M = z_coarse.shape[0]
    xi = np.empty((M, N * r))
    streams.normals(np.uint64(seed), np.uint64(philox.PURPOSE_TRAIN), 0, 0, xi)
    xi = xi.reshape(M, N, r) * math.sqrt(h / r)
    dW = math.sqrt(h) * z_coarse
    xi += (dW - xi.sum(axis=2))[:, :, None] / r
    return xi.reshape(M, N * r)


def test_em_strong_order_one_on_ou():
    """EM on OU (additive noise) has strong order 1 against a fine solution on the same path.

    The kernel's coarse normals are read back from the same Philox stream, refined into a
    fine Brownian path by the Brownian bridge, and the fine path is integrated exactly
    (exact OU transitions with the fine increments' stochastic integral approximated at
    h/256).  Also checks the kernel equals a NumPy EM driven by the same normals.
    """
    th, mu, sg, x0, T, M = 1.5, 0.0, 1.0, 1.0, 1.0, 400
    errs, dts = [], []
    for N in (8, 16, 32, 64):
        h = T / N
        r = _final(process="ou", method="em", walkers=M, steps=N, dt=h, seed=3, x0=[x0],
                   params={"theta": th, "mu": mu, "sigma": sg})
        z = np.empty((M, N))
        streams.normals(np.uint64(3), np.uint64(philox.PURPOSE_NOISE), 0, 0, z)
        x = np.full(M, x0)
        for n in range(N):                      # NumPy reference with the same normals
            x = (1 - th * h) * x + th * mu * h + sg * math.sqrt(h) * z[:, n]
        assert np.allclose(r.x[:, 0], x, rtol=1e-13, atol=1e-13)
        R = 4096 // N
        dW = _brownian_refinement(z, h, R, seed=77)
        hf = h / R
        xf = np.full(M, x0)
        for k in range(dW.shape[1]):            # fine EM (error ~ hf, negligible)
            xf = xf + th * (mu - xf) * hf + sg * dW[:, k]
        errs.append(np.mean(np.abs(r.x[:, 0] - xf)))
        dts.append(h)
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.85 < slope < 1.15, (dts, errs)


def test_em_strong_order_half_on_gbm():
    """EM has strong order 1/2 on geometric Brownian motion (multiplicative noise).

    dX = a X dt + b X dW with the exact solution X_T = X_0 exp((a - b^2/2) T + b W_T) on the
    same path; the increments are the kernels' Philox normals (streams.normals).
    """
    a, b, T, M = 0.5, 1.0, 1.0, 4000
    N_f = 2**12
    zf = np.empty((M, N_f))
    streams.normals(np.uint64(8), np.uint64(philox.PURPOSE_NOISE), 0, 0, zf)
    dWf = zf * math.sqrt(T / N_f)
    WT = dWf.sum(axis=1)
    exact = np.exp((a - 0.5 * b * b) * T + b * WT)
    errs, dts = [], []
    for N in (16, 32, 64, 128, 256):
        dW = dWf.reshape(M, N, N_f // N).sum(axis=2)
        h = T / N
        x = np.ones(M)
        for n in range(N):
            x = x + a * x * h + b * x * dW[:, n]
        errs.append(np.mean(np.abs(x - exact)))
        dts.append(h)
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.4 < slope < 0.6, errs


# ------------------------------------------------------------- overdamped
def test_double_well_relaxes_to_boltzmann():
    """Stochastic (seed 21, z = 5): from x = -1, the ensemble relaxes to the Boltzmann law.

    U = a (x^2-1)^2 + b x with a = 1, b = 0.3, kT = 1: histogram (chi-square at p = 1e-6)
    and left-basin population (binomial SE) against quadrature.  EM bias at dt = 2e-3 is
    O(dt) and far below the SE.
    """
    a, b, kT, M = 1.0, 0.3, 1.0, 4000
    r = _final(process="langevin", potential="double-well", walkers=M, steps=10000, dt=2e-3,
               seed=21, x0=[-1.0], params={"a": a, "b": b})
    x = r.x[:, 0]
    U = lambda t: a * (t * t - 1) ** 2 + b * t
    Zq = integrate.quad(lambda t: math.exp(-U(t) / kT), -5, 5, epsabs=1e-13)[0]
    from scipy.optimize import brentq     # barrier top: root of U' near 0
    xb = brentq(lambda t: 4 * a * t * (t * t - 1) + b, -0.5, 0.5)
    pL = integrate.quad(lambda t: math.exp(-U(t) / kT), -5, xb)[0] / Zq
    assert abs(np.mean(x < xb) - pL) < Z * math.sqrt(pL * (1 - pL) / M)
    edges = np.linspace(-2.2, 2.2, 23)
    probs = np.array([integrate.quad(lambda t: math.exp(-U(t) / kT), lo, hi)[0] / Zq
                      for lo, hi in zip(edges[:-1], edges[1:])])
    counts = np.histogram(x, edges)[0]
    keep = probs * M > 5
    chi2 = np.sum((counts[keep] - M * probs[keep]) ** 2 / (M * probs[keep]))
    assert chi2 < stats.chi2.isf(1e-6, keep.sum())


@pytest.mark.slow
def test_muller_brown_preserves_boltzmann_and_basins():
    """Stochastic (seed 4, z = 5): exact Boltzmann draws stay Boltzmann under the dynamics.

    kT = 3 (scale 0.1), EM at dt = 1e-4: start from exact grid draws of the Boltzmann law,
    run 2000 steps (t = 0.2, many local relaxation times 1/curvature ~ 0.003), and compare
    the basin populations and a coarse 2-D histogram with quadrature.  A wrong force
    (sign, factor) moves the populations by many SE.
    """
    from nonequil import analytic

    kT, M = 3.0, 6000
    B = analytic.muller_brown_boltzmann(kT=kT, scale=0.1)
    rng = np.random.default_rng(4)
    hx, hy = B.x[1] - B.x[0], B.y[1] - B.y[0]
    mass = (B.density * hx * hy).ravel()
    cell = rng.choice(mass.size, size=M, p=mass / mass.sum())
    i, j = np.unravel_index(cell, B.density.shape)
    x0 = np.stack([B.x[i] + hx * (rng.random(M) - 0.5), B.y[j] + hy * (rng.random(M) - 0.5)], 1)
    assert np.allclose([np.mean(B.basin_of(x0) == k) for k in range(3)], B.populations,
                       atol=Z * 0.5 / math.sqrt(M))
    r = _final(process="langevin", potential="muller-brown", walkers=M, steps=2000,
               dt=1e-4, seed=4, x0=x0, params={"kT": kT})
    lab = B.basin_of(r.x)
    pops = B.populations
    for k, p in enumerate(pops):
        got = np.mean(lab == k)
        assert abs(got - p) < Z * math.sqrt(p * (1 - p) / M), (k, got, p)


# ------------------------------------------------------------- underdamped
def test_underdamped_equipartition():
    """Stochastic (seed 13, z = 5): BAOAB in a 3-D harmonic trap gives <m v^2> = <k x^2> = kT.

    For the harmonic trap BAOAB's configurational law is exact; the kinetic temperature has
    an O(dt^2) bias, (omega dt)^2/4 ~ 3e-4 here, far below the SE (~1%).
    """
    k, m, kT, M, D = 1.0, 2.0, 1.5, 5000, 3
    r = _final(process="underdamped", potential="harmonic", walkers=M, steps=400, dt=0.05,
               seed=13, x0=[0.0, 0.0, 0.0], params={"k": k, "mass": m, "kT": kT,
                                                   "gamma": 1.0})
    n = M * D
    mv2 = m * r.v**2
    kx2 = k * r.x**2
    assert abs(mv2.mean() - kT) < Z * kT * math.sqrt(2 / n)
    assert abs(kx2.mean() - kT) < Z * kT * math.sqrt(2 / n)


def test_jarzynski_exact_for_harmonic_protocols():
    """Stochastic (seed 17, z = 5): <exp(-W/kT)> = exp(-dF/kT) with the exact OU step.

    Stiffening k = 1 -> 4 gives dF = kT/2 log(4); dragging the centre 0 -> 2 gives dF = 0.
    The SE is that of the sample mean of exp(-W/kT).
    """
    kT, M = 1.0, 20000
    for params, dF in (({"k": (1.0, 4.0)}, 0.5 * kT * math.log(4.0)),
                       ({"center": (0.0, 2.0), "k": 2.0}, 0.0)):
        r = _final(process="langevin", potential="harmonic", method="exact", walkers=M,
                   steps=20, dt=0.05, seed=17, x0="boltzmann", params=dict(params, kT=kT))
        e = np.exp(-r.work / kT)
        target = math.exp(-dF / kT)
        assert abs(e.mean() - target) < Z * e.std(ddof=1) / math.sqrt(M), (params, e.mean())
        assert r.work.mean() > dF        # second law: <W> >= dF
        # first law per walker: dU = W + Q
        U0 = r.frames["energy"][0]
        U1 = r.frames["energy"][-1]
        assert np.allclose(U1 - U0, r.work + r.heat, atol=1e-10)


def test_first_passage_with_brownian_bridge():
    """Stochastic (seed 31, z = 5): free diffusion absorbed at x >= 1 from x = 0.

    P(tau <= t) = 2 (1 - Phi(B / sqrt(2 D t))) with D = kT/gamma (reflection principle).
    The bridge correction makes the coarse-step (dt = 0.05) estimate unbiased for Brownian
    motion; without it the discrete monitoring would miss ~ 0.58 sqrt(2 D dt) of overshoot
    and fail the test by many SE.
    """
    M, B, dt, steps = 20000, 1.0, 0.05, 20
    r = _final(process="langevin", potential="harmonic", walkers=M, steps=steps, dt=dt,
               seed=31, x0=[0.0], absorb="x>=1", params={"k": 0.0})
    t = dt * steps
    p = 2 * (1 - stats.norm.cdf(B / math.sqrt(2 * t)))
    got = np.mean(np.isfinite(r.first_passage_time))
    assert abs(got - p) < Z * math.sqrt(p * (1 - p) / M), (got, p)
    # absorbed walkers are frozen and their time is NaN until absorption in every frame
    fpt = r.frames["first_passage_time"]
    pos = r.frames["position"][:, :, 0]
    done = np.isfinite(fpt[-1])
    for i in np.nonzero(done)[0][:50]:
        n_abs = int(round(fpt[-1, i] / dt))
        frames_after = r.frames["step"] >= n_abs
        assert np.all(np.isnan(fpt[~frames_after, i]))
        assert np.all(pos[frames_after, i] == pos[-1, i])


def test_mean_first_passage_time_matches_exact_integral():
    """Stochastic (seed 41, z = 5): double well a = 1, b = 0.2, kT = 1, gamma = 1.

    Walkers start in the left minimum and are absorbed at the right one (x >= 1); the mean
    first-passage time is compared with the exact 1-D formula
    T = (gamma/kT) int_{x0}^{b} e^{U(y)/kT} int_{-inf}^{y} e^{-U(z)/kT} dz dy
    (analytic.mfpt_1d).  SE = sample std / sqrt(M).  EM at dt = 2e-3 (bias ~1%, far below
    5 SE ~ 15%); the run is long enough (t = 40, ~10 MFPT) that every walker is absorbed.
    """
    from nonequil import analytic

    a, b, kT, M = 1.0, 0.2, 1.0, 1000
    r = _final(process="langevin", potential="double-well", walkers=M, steps=20000, dt=2e-3,
               seed=41, x0=[-1.0], absorb="x>=1", params={"a": a, "b": b},
               record_every=20000)
    tau = r.first_passage_time
    assert np.all(np.isfinite(tau))
    U = lambda x: a * (x * x - 1) ** 2 + b * x
    exact = analytic.mfpt_1d(U, kT, 1.0, -1.0, 1.0, -4.0)
    exact = float(getattr(exact, "value", exact))
    se = tau.std(ddof=1) / math.sqrt(M)
    assert abs(tau.mean() - exact) < Z * se, (tau.mean(), exact, se)
