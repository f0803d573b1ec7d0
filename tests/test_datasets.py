"""Dataset generators: nonequil/datasets.py, nonequil/cmd_dataset.py, kernels/phi4_cpu.py.

Stochastic tests are labelled so in their docstrings.  They use fixed seeds and bounds of
Z = 5 standard errors; a KS test passes when p > P_MIN = 5.7e-7, the two-sided normal tail
at z = 5.  Samples of the Markov-chain generators (ising, phi4) are spaced >= 4 tau_int
apart (tau_int measured by the generator, Sokal convention), so they are treated as
independent: their standard errors are sd / sqrt(N) from the recorded samples' spread.
"""
import hashlib
import math
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from scipy import integrate, stats

from nonequil import analytic as A
from nonequil import datasets as D
from nonequil.errors import InputError
from nonequil.metrics import binder_cumulant

Z = 5.0
P_MIN = 5.7e-7
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def zscore(value, exact, se):
    return (np.asarray(value) - exact) / np.asarray(se)


def binomial_z(labels, exact):
    n = labels.size
    obs = np.bincount(labels, minlength=len(exact)) / n
    return (obs - exact) / np.sqrt(exact * (1 - exact) / n)


def ks_p(x, cdf):
    return stats.kstest(x, cdf).pvalue


# ------------------------------------------------------------------ registry and noise
def test_purposes_match_kernels():
    from kernels import philox
    from kernels.ising_cpu import ISING_PURPOSE, ISING_WOLFF_PURPOSE
    from kernels.phi4_cpu import PHI4_PURPOSE

    assert D.PURPOSE_DATASET == philox.PURPOSE_DATASET
    assert (int(ISING_PURPOSE), int(ISING_WOLFF_PURPOSE), int(PHI4_PURPOSE)) == (17, 18, 23)
    mine = [D.P_DOUBLE_WELL, D.P_ISING_FLIP, D.P_MULLER_BROWN, D.P_MIXTURE, D.P_CHAIN,
            D.P_PHI4_FLIP, D.P_SWISS]
    assert len(set(mine + [17, 18, 23])) == 10 and all(16 <= p < 32 for p in mine)
    assert set(D.GENERATORS) == {"double-well", "muller-brown", "gaussian-mixture",
                                 "harmonic-chain", "ising", "phi4", "swiss-roll"}


def test_resolve_validates_and_parses():
    gen, method, p = D.resolve("gaussian-mixture", {"dim": "2", "weights": "1,3",
                                                    "means": "-1,0.5"})
    assert method == "exact" and p["dim"] == 2 and p["weights"] == [1.0, 3.0]
    with pytest.raises(InputError, match="valid: a, b, kT"):
        D.resolve("double-well", {"c": "1"})
    with pytest.raises(InputError, match="valid: double-well"):
        D.resolve("nope")
    with pytest.raises(InputError, match="integer"):
        D.resolve("ising", {"L": "16.5"})
    with pytest.raises(InputError, match="only with --method langevin"):
        D.resolve("double-well", {"dt": "0.1"})
    with pytest.raises(InputError, match="sigmas or --set covs"):
        D.resolve("gaussian-mixture", {"sigmas": "1,1", "covs": "1,1"})
    with pytest.raises(InputError, match="zero mode"):
        D.resolve("harmonic-chain", {"ends": "periodic"})
    with pytest.raises(InputError, match="CPU only"):
        D.resolve("ising", method="wolff", device="cuda")


# ------------------------------------------------------------------ double well
def test_double_well_exact_ks_and_populations():
    """Stochastic (seed 3): 50 000 exact samples of a tilted double well (minority basin of
    ~4 %, barrier ~5 kT) pass a KS test against the quadrature CDF and hit both basin
    populations within 5 binomial SE."""
    p = {"a": 3.0, "b": 1.4, "kT": 0.8}
    ds = D.generate("double-well", 50_000, p, seed=3)
    law = A.double_well_boltzmann(**p)
    x = ds.samples
    assert x.shape == (50_000,) and x.dtype == np.float64
    assert ks_p(x, law.cdf) > P_MIN
    div = ds.attrs["basin_divider"]
    exact = law.populations([div])
    assert 0.01 < exact.min() < 0.06
    assert np.all(np.abs(binomial_z((x > div).astype(int), exact)) < Z)
    assert np.allclose(ds.attrs["reference_populations"], exact)


def test_fp_gap_is_exact_for_harmonic_wells():
    """The Fokker-Planck spectral gap used for --method langevin run lengths: for U = k x^2/2
    (OU) it is k/gamma; in 2-D with k_x < k_y it is k_x/gamma (1 % discretisation)."""
    x = np.linspace(-6, 6, 1201)
    assert abs(D._fp_gap(1.5 * x ** 2, [x[1] - x[0]], 0.5, 2.0) - 3.0 / 2.0) < 0.01 * 1.5
    gx, gy = np.linspace(-5, 5, 201), np.linspace(-3, 3, 121)
    X, Y = np.meshgrid(gx, gy, indexing="ij")
    lam = D._fp_gap(0.5 * (0.8 * X ** 2 + 3.0 * Y ** 2), [gx[1] - gx[0], gy[1] - gy[0]], 1.0,
                    1.0)
    assert abs(lam - 0.8) < 0.01 * 0.8


@pytest.mark.slow
def test_double_well_langevin_from_minimum_relaxes():
    """Stochastic (seed 4): --method langevin --set start=minimum runs Euler-Maruyama from
    the global minimum for relax / lambda_1; the final positions of 8000 walkers pass a KS
    test against the exact law (the O(dt) bias at dt = 2e-3 is far below the KS resolution)
    and match the basin populations within 5 SE."""
    p = {"a": 1.0, "b": 0.3, "kT": 1.0, "start": "minimum", "dt": 2e-3}
    ds = D.generate("double-well", 8000, p, method="langevin", seed=4)
    law = A.double_well_boltzmann(1.0, 0.3, 1.0)
    assert ds.attrs["langevin_steps"] == math.ceil(10.0 * ds.attrs["langevin_t_relax"] / 2e-3)
    assert ks_p(ds.samples, law.cdf) > P_MIN
    div = ds.attrs["basin_divider"]
    assert np.all(np.abs(binomial_z((ds.samples > div).astype(int),
                                    law.populations([div]))) < Z)


# ------------------------------------------------------------------ Müller-Brown
@pytest.fixture(scope="module")
def mb():
    return D.generate("muller-brown", 20_000, seed=5)


def _marginal_cdf(law, axis):
    w = integrate.trapezoid(law.density, law.y if axis == 0 else law.x, axis=1 - axis)
    g = law.x if axis == 0 else law.y
    c = integrate.cumulative_trapezoid(w, g, initial=0.0)
    c /= c[-1]
    return lambda v: np.interp(v, g, c)


def test_muller_brown_exact_populations_and_marginals(mb):
    """Stochastic (seed 5): 20 000 exact samples of the Müller-Brown law (kT 1, scale 0.1)
    hit the quadrature basin populations within 5 binomial SE, and both 1-D marginals pass a
    KS test against the grid density's marginal CDF."""
    law = A.muller_brown_boltzmann(1.0, 0.1)
    lab = mb.extra["labels"]
    assert lab.dtype == np.int8 and lab.shape == (20_000,)
    assert np.all(np.abs(binomial_z(lab, law.populations)) < Z)
    for axis in (0, 1):
        assert ks_p(mb.samples[:, axis], _marginal_cdf(law, axis)) > P_MIN
    assert np.array_equal(lab[:500], A.muller_brown_basin(mb.samples[:500]))
    assert 0.8 < mb.attrs["acceptance"] <= 1.0


def test_muller_brown_envelope_is_a_lower_bound():
    """The rejection envelope: U >= U_low on random points of every cell (so the accepted
    law is exact); checked on 10^6 points at two temperatures."""
    for kT, scale in [(1.0, 0.1), (5.0, 0.1)]:
        x, y, hx, hy, low = D._mb_envelope(kT, scale)
        u = D._uniforms(9, 30, 10 ** 6, 0, 3)
        cell = (u[:, 0] * low.size).astype(np.int64) % low.size
        i, j = np.divmod(cell, low.shape[1])
        pt = np.stack([x[i] + u[:, 1] * hx, y[j] + u[:, 2] * hy], 1)
        gap = A.muller_brown_energy(pt, scale) - low.ravel()[cell]
        assert gap.min() >= 0.0


@pytest.mark.slow
def test_muller_brown_langevin_populations():
    """Stochastic (seed 6): --method langevin from exact starts, 5000 walkers, keeps the
    basin populations within 5 binomial SE of the quadrature (dt = 1e-4)."""
    ds = D.generate("muller-brown", 5000, method="langevin", seed=6)
    law = A.muller_brown_boltzmann(1.0, 0.1)
    assert ds.attrs["langevin_steps"] > 100
    assert np.all(np.abs(binomial_z(ds.extra["labels"], law.populations)) < Z)


# ------------------------------------------------------------------ Gaussian mixture
def test_gaussian_mixture_moments_and_weights():
    """Stochastic (seed 7): a 3-component mixture in 3-D with full covariances; sample mean
    (SE sd/sqrt n), covariance entries (SE sqrt((m22 - s^2)/n)) and component frequencies
    (binomial SE) agree with the exact values within 5 SE."""
    covs = np.array([[[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.2]],
                     [[0.2, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.2]],
                     [[0.6, -0.2, 0.1], [-0.2, 0.9, 0.0], [0.1, 0.0, 0.4]]])
    p = {"dim": "3", "weights": "0.2,0.5,0.3", "means": "-2,0,1,1,1,1,0,-1,2",
         "covs": ",".join(map(str, covs.ravel()))}
    n = 40_000
    ds = D.generate("gaussian-mixture", n, p, seed=7)
    gm = A.GaussianMixture([0.2, 0.5, 0.3], np.array([[-2, 0, 1], [1, 1, 1], [0, -1, 2.0]]),
                           covs)
    x = ds.samples
    assert x.shape == (n, 3)
    assert np.all(np.abs(zscore(x.mean(0), gm.mean(), x.std(0, ddof=1) / math.sqrt(n))) < Z)
    c = x - x.mean(0)
    s = c.T @ c / (n - 1)
    m22 = np.einsum("ni,nj->ij", c ** 2, c ** 2) / n
    assert np.all(np.abs(zscore(s, gm.cov(), np.sqrt((m22 - s ** 2) / n))) < Z)
    assert np.all(np.abs(binomial_z(ds.extra["labels"].astype(int), gm.weights)) < Z)
    assert np.allclose(ds.extra["reference/cov"], gm.cov())


def test_gaussian_mixture_default_is_one_d():
    """Stochastic (seed 8): the default mixture (1-D, weights 1/2, means -1 and 1, sigmas
    0.5) passes a KS test against its exact CDF."""
    ds = D.generate("gaussian-mixture", 20_000, seed=8)
    gm = A.GaussianMixture([0.5, 0.5], [-1.0, 1.0], [0.25, 0.25])
    assert ds.samples.shape == (20_000,)
    assert ks_p(ds.samples, gm.cdf) > P_MIN


# ------------------------------------------------------------------ harmonic chain
@pytest.mark.parametrize("p", [{"particles": 8}, {"particles": 6, "ends": "periodic",
                                                  "k0": 0.5, "k": 2.0, "kT": 0.7}])
def test_harmonic_chain_covariance(p):
    """Stochastic (seed 9): samples whitened by the exact covariance, w = C^{-1} u, have
    mean 0 (SE 1/sqrt n) and covariance I (SE sqrt(2/n) diagonal, 1/sqrt n off it) within
    5 SE per entry, and sum |w|^2 is chi-square with nP degrees of freedom within 5 SE."""
    n = 20_000
    ds = D.generate("harmonic-chain", n, p, seed=9)
    hc = A.HarmonicChain(p["particles"], p.get("k", 1.0), p.get("k0", 0.0),
                         p.get("ends", "fixed"), p.get("kT", 1.0))
    assert np.allclose(ds.extra["reference/covariance"], hc.covariance())
    C = np.linalg.cholesky(hc.covariance())
    w = np.linalg.solve(C, ds.samples.T).T
    P = hc.P
    assert np.all(np.abs(w.mean(0)) * math.sqrt(n) < Z)
    s = w.T @ w / n
    se = np.where(np.eye(P) > 0, math.sqrt(2.0 / n), math.sqrt(1.0 / n))
    assert np.all(np.abs(s - np.eye(P)) < Z * se)
    chi = (w ** 2).sum()
    assert abs(chi - n * P) < Z * math.sqrt(2.0 * n * P)


# ------------------------------------------------------------------ Markov-chain tools
def test_tau_int_on_ar1_replicas():
    """Stochastic (seed 10): 16 AR(1) series x_{t+1} = phi x_t + z, phi = 0.8, have
    tau_int = 1/2 + phi/(1 - phi) = 4.5 (Sokal's convention); the windowed estimate is
    within 5 SE, SE ~ tau sqrt(2 (2W + 1) / N) (Madras & Sokal 1988)."""
    R, n, phi = 16, 4000, 0.8
    z = D._normals(10, 30, R, n).T
    x = np.empty((n, R))
    x[0] = z[0] / math.sqrt(1 - phi * phi)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + z[t]
    tau, ok = D.tau_int(x)
    exact = 0.5 + phi / (1 - phi)
    W = 6 * exact
    assert ok and abs(tau - exact) < Z * exact * math.sqrt(2 * (2 * W + 1) / (n * R))
    assert D.tau_int(np.ones((100, 3))) == (0.5, True)


# ------------------------------------------------------------------ Ising
@pytest.fixture(scope="module")
def ising_runs():
    runs = {}
    for T, method in [(2.0, "metropolis"), (3.0, "metropolis"), (2.269, "wolff"),
                      (1.6, "metropolis")]:
        runs[T, method] = D.generate("ising", 2000, {"L": 16, "T": T}, method=method,
                                     seed=11)
    return runs


@pytest.mark.parametrize("T,method", [(2.0, "metropolis"), (3.0, "metropolis"),
                                      (2.269, "wolff"), (1.6, "metropolis")])
def test_ising_energy_matches_kaufman(ising_runs, T, method):
    """Stochastic (seed 11): 2000 samples of the 16 x 16 Ising model; the mean energy per
    spin agrees with Kaufman's exact finite-lattice value within 5 SE (SE = sd/sqrt(N) of
    the recorded samples, which are >= 4 tau_int apart) and <m> with 0 (the global flip)."""
    ds = ising_runs[T, method]
    s = ds.samples
    assert s.dtype == np.int8 and s.shape == (2000, 16, 16)
    e, m = ds.extra["energy"], ds.extra["magnetization"]
    sf = s.astype(np.int64)
    e_chk = -(sf * (np.roll(sf, 1, 1) + np.roll(sf, 1, 2))).sum((1, 2)) / 256.0
    assert np.array_equal(e, e_chk) and np.array_equal(m, sf.sum((1, 2)) / 256.0)
    ref = A.ising_kaufman(16, T).energy
    assert ds.attrs["reference_energy_per_spin"] == ref
    n = e.size
    assert abs(zscore(e.mean(), ref, e.std(ddof=1) / math.sqrt(n))) < Z
    assert abs(zscore(m.mean(), 0.0, m.std(ddof=1) / math.sqrt(n))) < Z
    assert ds.attrs["spacing"] >= 4 * ds.attrs["tau_int"]
    assert ds.attrs["thermalisation"] >= 100 * ds.attrs["tau_int"]


def test_ising_global_flip_below_tc(ising_runs):
    """Stochastic (seed 11): at T = 1.6 (ordered; local updates never tunnel on 16 x 16 in
    this run) the signs of m are balanced within 5 binomial SE."""
    m = ising_runs[1.6, "metropolis"].extra["magnetization"]
    assert np.all(np.abs(m) > 0.5)
    assert abs(binomial_z((m > 0).astype(int), np.array([0.5, 0.5]))[0]) < Z


# ------------------------------------------------------------------ phi^4
def test_phi4_force_is_the_gradient_of_the_action():
    from kernels.phi4_cpu import phi4_action, phi4_force

    for L, kappa, lam in [(2, 0.3, 0.5), (5, 0.21, 1.3), (6, -0.1, 0.0)]:
        phi = D._normals(12, 30, L, L)
        f = np.empty((L, L))
        phi4_force(phi, kappa, lam, f)
        fd = np.empty((L, L))
        h = 1e-6
        for i in range(L):
            for j in range(L):
                a, b = phi.copy(), phi.copy()
                a[i, j] += h
                b[i, j] -= h
                fd[i, j] = (phi4_action(a, kappa, lam) - phi4_action(b, kappa, lam)) / (2 * h)
        assert np.allclose(f, fd, rtol=1e-6, atol=1e-6)
        # the action as written: each bond once, mu over the two positive directions
        S = sum(-2 * kappa * phi[i, j] * (phi[(i + 1) % L, j] + phi[i, (j + 1) % L])
                + phi[i, j] ** 2 + lam * (phi[i, j] ** 2 - 1) ** 2
                for i in range(L) for j in range(L))
        assert abs(phi4_action(phi, kappa, lam) - S) < 1e-12 * max(1.0, abs(S))


def test_phi4_momenta_follow_the_documented_counter_layout():
    """HMC momenta of trajectory t, site x are element t * Vp + x (Vp = V rounded up to
    even) of the walker's purpose-23 normal stream, as kernels.streams.normals draws it."""
    from kernels import streams
    from kernels.phi4_cpu import PHI4_PURPOSE, _momenta

    for L, walker, t in [(3, 5, 7), (4, 0, 2 ** 31 + 3)]:
        V = L * L
        Vp = V + (V & 1)
        pi = np.empty((L, L))
        _momenta(np.uint64(2 ** 40 + 9), np.uint64(walker), np.int64(t), pi)
        ref = np.empty((1, V))
        streams.normals(np.uint64(2 ** 40 + 9), PHI4_PURPOSE, walker, t * Vp, ref)
        assert np.array_equal(pi.ravel(), ref[0])


def test_phi4_kappa0_matches_single_site_integrals():
    """Stochastic (seed 13): at kappa = 0 the sites are independent with density
    ~ exp(-phi^2 - lambda (phi^2 - 1)^2) (lambda = 1: a double well).  HMC samples: the
    per-sample site averages of phi^2 and phi^4 match the quadrature moments within 5 SE,
    and the values of site (0, 0) pass a KS test against the quadrature CDF."""
    lam = 1.0
    ds = D.generate("phi4", 2000, {"L": 8, "kappa": 0.0, "lambda": lam}, seed=13)
    phi = ds.samples
    assert phi.shape == (2000, 8, 8) and phi.dtype == np.float64
    law = A.boltzmann_1d(lambda x: x * x + lam * (x * x - 1) ** 2, 1.0, -6.0, 6.0)
    for k in (2, 4):
        per = (phi ** k).mean((1, 2))
        exact = law.expect(lambda x: x ** k)
        assert abs(zscore(per.mean(), exact, per.std(ddof=1) / math.sqrt(per.size))) < Z
    assert ks_p(phi[:, 0, 0], law.cdf) > P_MIN
    assert 0.6 <= ds.attrs["hmc_acceptance"] <= 0.95


@pytest.mark.parametrize("kappa,phase", [(0.2, "symmetric"), (0.3, "broken")])
def test_phi4_documented_phases(kappa, phase):
    """Stochastic (seed 14): the documented pairs at lambda = 0.022 and L = 16.  Acceptance
    in [0.6, 0.95]; <m> = 0 within 5 SE (global flip); the Binder cumulant identifies the
    phase: U4 + 5 SE < 0.25 (symmetric, Gaussian limit 0) or U4 - 5 SE > 0.6 (broken,
    limit 2/3).  /action and /magnetization are those of the stored fields."""
    from kernels.phi4_cpu import action_magnetisation

    ds = D.generate("phi4", 2000, {"L": 16, "kappa": kappa, "lambda": 0.022}, seed=14)
    m, S = ds.extra["magnetization"], ds.extra["action"]
    s2, m2 = action_magnetisation(ds.samples, kappa, 0.022)
    assert np.array_equal(S, s2) and np.array_equal(m, m2)
    assert 0.6 <= ds.attrs["hmc_acceptance"] <= 0.95
    assert abs(zscore(m.mean(), 0.0, m.std(ddof=1) / math.sqrt(m.size))) < Z
    u4 = binder_cumulant(m)
    if phase == "symmetric":
        assert u4.value + Z * u4.se < 0.25
    else:
        assert u4.value - Z * u4.se > 0.6


# ------------------------------------------------------------------ swiss roll
def test_swiss_roll_moments():
    """Stochastic (seed 15): first and second moments of the swiss roll against quadrature
    over t ~ U(1.5 pi, 4.5 pi) plus the noise variance, within 5 SE."""
    n, noise, scale = 20_000, 0.5, 0.1
    ds = D.generate("swiss-roll", n, {"noise": noise, "scale": scale}, seed=15)
    x = ds.samples
    a, b = 1.5 * np.pi, 4.5 * np.pi

    def E(f):
        return integrate.quad(f, a, b, limit=200)[0] / (b - a)
    mean = scale * np.array([E(lambda t: t * np.cos(t)), E(lambda t: t * np.sin(t))])
    second = scale ** 2 * np.array([E(lambda t: (t * np.cos(t)) ** 2) + noise ** 2,
                                    E(lambda t: (t * np.sin(t)) ** 2) + noise ** 2])
    assert np.all(np.abs(zscore(x.mean(0), mean, x.std(0, ddof=1) / math.sqrt(n))) < Z)
    sq = x ** 2
    assert np.all(np.abs(zscore(sq.mean(0), second, sq.std(0, ddof=1) / math.sqrt(n))) < Z)


# ------------------------------------------------------------------ reproducibility
SMALL = [("double-well", {}, None), ("double-well", {}, "langevin"),
         ("muller-brown", {}, None), ("gaussian-mixture", {"dim": 2}, None),
         ("harmonic-chain", {"particles": 5}, None), ("ising", {"L": 8, "T": 2.5}, None),
         ("ising", {"L": 6, "T": 2.0}, "wolff"), ("phi4", {"L": 6}, None),
         ("swiss-roll", {}, None)]


@pytest.mark.parametrize("name,p,method", SMALL)
def test_same_seed_same_samples(name, p, method):
    """Same arguments -> the same samples and extras, bit for bit; another seed differs."""
    a = D.generate(name, 64, p, method, seed=21)
    b = D.generate(name, 64, p, method, seed=21)
    c = D.generate(name, 64, p, method, seed=22)
    assert a.samples.tobytes() == b.samples.tobytes()
    assert a.extra.keys() == b.extra.keys()
    for k in a.extra:
        assert np.asarray(a.extra[k]).tobytes() == np.asarray(b.extra[k]).tobytes(), k
    assert a.samples.tobytes() != c.samples.tobytes()


def test_same_arguments_same_file(tmp_path, monkeypatch):
    """write_dataset twice with the same arguments: identical /samples, extras and bytes."""
    paths = []
    for k in range(2):
        d = tmp_path / str(k)
        d.mkdir()
        monkeypatch.chdir(d)
        D.write_dataset("g.h5", "ising", 40, {"L": 8, "T": 2.4}, seed=3)
        paths.append(d / "g.h5")
    with h5py.File(paths[0]) as f, h5py.File(paths[1]) as g:
        for key in ("samples", "energy", "magnetization"):
            assert f[key][()].tobytes() == g[key][()].tobytes()
        assert f["samples"].attrs["source"] == "nonequil dataset ising"
        assert "provenance" in f
    assert paths[0].read_bytes() == paths[1].read_bytes()


THREADS_SCRIPT = """
import hashlib, numba
from nonequil import datasets as D
h = hashlib.sha256()
for name, p, m in [("ising", {"L": 8, "T": 2.3}, None), ("ising", {"L": 6}, "wolff"),
                   ("phi4", {"L": 6}, None), ("muller-brown", {}, None),
                   ("harmonic-chain", {"particles": 40}, None),
                   ("gaussian-mixture", {"dim": 30, "means": "0,1"}, None)]:
    h.update(D.generate(name, 100, p, m, seed=5).samples.tobytes())
print(numba.get_num_threads(), h.hexdigest())
"""


@pytest.mark.slow
def test_samples_do_not_depend_on_thread_count():
    """NUMBA_NUM_THREADS = 1 and 2 (subprocesses) give the same samples, bit for bit."""
    outs = []
    for t in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=t, PYTHONPATH=ROOT)
        r = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(r.stdout.split())
    assert outs[0][0] == "1" and outs[0][1] == outs[1][1]


CUDA_SCRIPT = """
import numpy as np
from nonequil import datasets as D
a = D.generate("ising", 6, {"L": 4, "T": 6.0}, seed=7)
b = D.generate("ising", 6, {"L": 4, "T": 6.0}, seed=7, device="cuda")
assert a.samples.tobytes() == b.samples.tobytes()
assert a.attrs["tau_int"] == b.attrs["tau_int"]
print("parity ok")
"""


@pytest.mark.slow
@pytest.mark.cudasim
def test_ising_dataset_cuda_equals_cpu_under_simulator():
    """--device cuda (CUDA simulator, in a subprocess) writes the CPU's samples bit for bit."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", CUDA_SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("parity ok")


# ------------------------------------------------------------------ CLI
def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "nonequil.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_and_refuses_existing(tmp_path):
    """`nonequil dataset double-well --n 1000 --out f.h5` writes /samples with its
    attributes; a second run refuses the existing --out with one error line and leaves it
    unchanged; a negative --set value parses; --quiet is silent."""
    r = cli("dataset", "double-well", "--n", "1000", "--out", "f.h5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote f.h5" in r.stderr
    f = tmp_path / "f.h5"
    with h5py.File(f) as h:
        s = h["samples"]
        assert s.shape == (1000,) and s.dtype == np.float64
        for key in ("source", "parameters", "units", "method", "formula", "seed"):
            assert key in s.attrs, key
        assert s.attrs["method"] == "exact"
        assert "configuration" in h["provenance"].attrs
    before = f.read_bytes()
    r = cli("dataset", "double-well", "--n", "10", "--out", "f.h5", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:")
    assert "already exists" in lines[0] and f.read_bytes() == before
    r = cli("dataset", "double-well", "--set", "b=-0.5", "--n", "50", "--quiet", "--out",
            "g.h5", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""
    with h5py.File(tmp_path / "g.h5") as h:
        assert h["samples"].attrs["b"] == -0.5


BAD = [(["dataset", "nope", "--n", "5"], "valid: double-well, muller-brown"),
       (["dataset", "double-well", "--set", "c=1", "--n", "5"], "valid: a, b, kT"),
       (["dataset", "double-well", "--set", "a=x", "--n", "5"], "expected a number"),
       (["dataset", "harmonic-chain", "--set", "ends=periodic", "--n", "5"], "zero mode"),
       (["dataset", "ising", "--method", "heatbath", "--n", "5"], "valid: metropolis, wolff"),
       (["dataset", "ising", "--set", "L=7", "--n", "5"], "even L"),
       (["dataset", "double-well", "--n", "0"], "--n must be"),
       (["dataset", "muller-brown", "--set", "kT=1e9", "--n", "5"], "too hot")]


@pytest.mark.parametrize("args,msg", BAD)
def test_cli_bad_input_one_error_line_no_file(tmp_path, args, msg):
    """Bad names, keys and values end with one `error:` line naming the fix; no file
    (nor a .partial) is created."""
    r = cli(*args, "--out", "x.h5", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert msg in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_help_and_light_import(tmp_path):
    """`dataset --help` lists the common flags and every generator with its keys; importing
    the verb module imports no numpy, numba or h5py."""
    r = cli("dataset", "--help", cwd=tmp_path)
    assert r.returncode == 0
    for flag in ("--help", "--quiet", "--debug", "--seed", "--device", "--out", "--set",
                 "--n", "--method"):
        assert flag in r.stdout, flag
    for name, gen in D.GENERATORS.items():
        assert f"  {name}:" in r.stdout
        for key in gen.keys:
            assert f"      {key}=" in r.stdout, (name, key)
    code = textwrap.dedent("""
        import sys
        import nonequil.cmd_dataset
        print(sorted(m for m in ("numpy", "numba", "h5py", "scipy") if m in sys.modules))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_write_dataset_validates_before_creating(tmp_path):
    """Library path: bad arguments raise InputError and leave no file behind."""
    out = tmp_path / "z.h5"
    with pytest.raises(InputError):
        D.write_dataset(out, "phi4", 10, {"lambda": -1})
    with pytest.raises(InputError):
        D.write_dataset(out, "ising", 10, {"T": 0})
    assert list(tmp_path.iterdir()) == []


def test_bench_ising_smoke():
    """experiments/bench_ising.py runs (tiny sizes) and prints one JSON document with
    positive rates and a ratio; no assertion is made on any speed."""
    import json

    r = subprocess.run([sys.executable, "-m", "experiments.bench_ising", "--json", "--L", "16",
                        "--replicas", "2", "--sweeps", "2", "--reps", "1", "--no-dataset"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    for name in ("cpu_checkerboard", "numpy_checkerboard", "numpy_masked"):
        res = doc["results"][name]
        assert res["status"] == "ok" and res["rate"] > 0, name
        assert -2.0 <= res["energy_per_spin"] <= 0.0
    assert doc["ratios"]["cpu/numpy"] > 0
    assert doc["targets"][0]["status"] in ("PASS", "FAIL")
