"""Metrics against exact values: closed-form distances between Gaussians, scipy reference
implementations, brute-force pair sums, and replication checks of the standard errors.
Stochastic tests use fixed seeds and z = 5 bounds, and say so in their docstrings."""
import math

import numpy as np
import pytest
from scipy import special, stats

from nonequil import metrics as M

Z = 5.0


def rng(seed):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- Estimate
def test_estimate_unpacks_and_serialises():
    e = M.Estimate(1.5, 0.25)
    v, se = e
    assert (v, se) == (1.5, 0.25)
    assert e.z(1.0) == pytest.approx(2.0)
    assert e.to_dict() == {"value": 1.5, "se": 0.25}
    assert M.Estimate(np.array([1.0, 2.0]), np.array([0.1, 0.2])).to_dict() == {"value": [1.0, 2.0], "se": [0.1, 0.2]}


# ----------------------------------------------------------------------------- W1
def test_w1_equals_scipy_exactly():
    x, y = rng(1).normal(size=1000), rng(2).standard_t(3, size=777)
    assert M.wasserstein1(x, y).value == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-12)
    assert M.wasserstein1(x, x).value == 0.0


def test_w1_of_shifted_gaussians_recovers_shift():
    """Stochastic (seeds 3, 4): W1(N(0,1), N(0.3,1)) = 0.3 within 5 SE (n = 20000 each)."""
    x = rng(3).normal(size=20_000)
    y = rng(4).normal(0.3, 1.0, size=20_000)
    w = M.wasserstein1(x, y)
    assert abs(w.value - 0.3) < Z * w.se
    assert w.se == pytest.approx(math.sqrt(2 / 20_000), rel=0.1)  # pure shift: sqrt(var/n + var/m)


def test_w1_se_matches_replication_spread():
    """Stochastic (seed 5): over 300 replications the spread of W1 agrees with the mean
    influence-function SE within 20 % (the SE of an SD from 300 draws is ~4 %)."""
    g = rng(5)
    vals, ses = [], []
    for _ in range(300):
        w = M.wasserstein1(g.normal(size=1000), g.exponential(1.0, size=800))
        vals.append(w.value)
        ses.append(w.se)
    assert np.std(vals, ddof=1) / np.mean(ses) == pytest.approx(1.0, abs=0.2)


def test_w1_same_law_is_at_chance_level():
    """Stochastic (seed 6): two samples of one law: W1 is of order its SE scale
    sqrt(2/n) (positive bias, no signal)."""
    x, y = rng(6).normal(size=(2, 5000))
    assert M.wasserstein1(x, y).value < Z * math.sqrt(2 / 5000)


def test_w1_to_density_exact_and_shift():
    # uniform density on [0, 1] against the two points 0.25, 0.75: int |F_n - t| = 1/8
    w = M.wasserstein1_to_density([0.25, 0.75], np.linspace(0, 1, 11), np.ones(11))
    assert w.value == pytest.approx(0.125, abs=1e-15)
    w = M.wasserstein1_to_cdf([0.25, 0.75], lambda t: np.clip(t, 0, 1), np.linspace(0, 1, 11))
    assert w.value == pytest.approx(0.125, abs=1e-15)
    # samples beyond the grid count too: point masses at -1 and 2 vs uniform [0, 1]
    w = M.wasserstein1_to_density([-1.0, 2.0], np.linspace(0, 1, 5), np.ones(5))
    assert w.value == pytest.approx(0.5 * 1 + 0.5 * 1 + 0.25 * 2 * 0.5, abs=1e-12)


def test_w1_to_density_recovers_shift():
    """Stochastic (seed 7): N(0,1) samples vs the N(0.2,1) density on a grid: W1 = 0.2
    within 5 SE; same for the exact-CDF variant; the same law gives < 5 sqrt(1/n)."""
    x = rng(7).normal(size=20_000)
    grid = np.linspace(-9, 9, 20001)
    w = M.wasserstein1_to_density(x, grid, stats.norm.pdf(grid, 0.2))
    assert abs(w.value - 0.2) < Z * w.se
    wc = M.wasserstein1_to_cdf(x, lambda t: stats.norm.cdf(t, 0.2), grid)
    assert wc.value == pytest.approx(w.value, abs=1e-6)
    assert M.wasserstein1_to_cdf(x, stats.norm.cdf, grid).value < Z / math.sqrt(x.size)


def test_sliced_wasserstein():
    """Stochastic (seeds 8, 9): in 3-D a shift d gives mean_theta |theta . d| over the
    fixed directions, within 5 SE; in 1-D sliced W1 equals W1."""
    x = rng(8).normal(size=(5000, 3))
    d = np.array([0.4, -0.2, 0.1])
    y = rng(9).normal(size=(5000, 3)) + d
    sw = M.sliced_wasserstein(x, y, n_projections=64, seed=0)
    th = np.random.default_rng(0).standard_normal((64, 3))
    th /= np.linalg.norm(th, axis=1, keepdims=True)
    assert abs(sw.value - np.abs(th @ d).mean()) < Z * sw.se
    assert M.sliced_wasserstein(x, y, n_projections=64, seed=0) == sw  # deterministic
    a, b = x[:, 0], y[:, 0]
    assert M.sliced_wasserstein(a, b, 8).value == pytest.approx(M.wasserstein1(a, b).value, rel=1e-12)
    with pytest.raises(ValueError):
        M.sliced_wasserstein(x, y[:, :2])


# ----------------------------------------------------------------------------- KS
def test_ks_detects_shift_and_accepts_same_law():
    """Stochastic (seeds 10-12): a 0.1 sd shift at n = 20000 is detected (p < 1e-8); two
    samples of one law and a sample against its own CDF are not rejected (p > 1e-3)."""
    x = rng(10).normal(size=20_000)
    assert M.ks_2samp(x, rng(11).normal(0.1, 1, 20_000)).pvalue < 1e-8
    assert M.ks_2samp(x, rng(12).normal(size=20_000)).pvalue > 1e-3
    assert M.ks_1samp(x, stats.norm.cdf).pvalue > 1e-3
    assert M.ks_1samp(x, lambda t: stats.norm.cdf(t, 0.1)).pvalue < 1e-8
    per = M.ks_per_coordinate(np.stack([x, x], 1), np.stack([x, x + 1], 1))
    assert per[0].statistic == 0.0 and per[1].pvalue < 1e-100


# ----------------------------------------------------------------------------- histograms
def test_histogram_divergence_exact_quantiles():
    """Samples placed at the bin-probability quantiles reproduce the expected counts."""
    bins = np.linspace(-3, 3, 13)
    p = np.diff(special.ndtr(bins))
    n = 10_000
    u = (np.arange(n) + 0.5) / n
    x = special.ndtri(u)
    h = M.histogram_divergence(x, bins, cdf=special.ndtr)
    expected = n * np.append(p, 1 - p.sum())
    assert h.chi2 <= np.sum(1 / expected)  # every count is within 1 of its expectation
    assert h.tv <= 0.5 * expected.size / n and abs(h.kl) < 1e-5
    assert h.dof == 12  # 12 bins + the outside bin - 1
    assert M.histogram_divergence(x, bins, probs=p).chi2 == pytest.approx(h.chi2)
    with pytest.raises(ValueError):
        M.histogram_divergence(x, bins)


def test_histogram_divergence_null_and_shift():
    """Stochastic (seeds 13, 14): under the null, the chi-square p-value > 1e-3 and the
    bias-corrected KL and JS lie within 5 null SDs of 0 (2 n KL ~ chi2_{B-1}, so
    sd = sqrt(2(B-1))/(2n); 8 n JS ~ chi2_{B-1}, sd = sqrt(2(B-1))/(8n)); a 0.5 shift
    gives the binned total variation of the shifted law."""
    bins = np.linspace(-4, 4, 41)
    n = 50_000
    h = M.histogram_divergence(rng(13).normal(size=n), bins, cdf=special.ndtr)
    B = h.dof + 1
    assert h.pvalue > 1e-3
    assert abs(h.kl_corrected) < Z * math.sqrt(2 * (B - 1)) / (2 * n)
    assert abs(h.js_corrected) < Z * math.sqrt(2 * (B - 1)) / (8 * n)
    s = M.histogram_divergence(rng(14).normal(0.5, 1, n), bins, cdf=special.ndtr)
    q = np.diff(special.ndtr(np.concatenate([[-np.inf], bins, [np.inf]]) - 0.5))
    p = np.diff(special.ndtr(np.concatenate([[-np.inf], bins, [np.inf]])))
    tv = 0.5 * np.abs(q - p).sum()
    assert s.pvalue < 1e-100
    assert abs(s.tv - tv) < Z * math.sqrt(B / n)  # crude bound on the TV's sampling error


def test_histogram_js_two_sample():
    """Stochastic (seeds 15-17): bias-corrected JS ~0 for one law (within 5 null SDs,
    4 n JS ~ chi2_{B-1}), clearly positive for a shift."""
    n = 20_000
    x, y = rng(15).normal(size=n), rng(16).normal(size=n)
    edges = np.linspace(-4, 4, 41)
    js = M.histogram_js(x, y, bins=edges)
    occupied = np.count_nonzero(np.histogram(np.concatenate([x, y]), edges)[0]) + 1  # + outside bin
    assert js.se == pytest.approx(math.sqrt(2 * (occupied - 1)) / (4 * n))
    assert abs(js.value) < Z * js.se
    shifted = M.histogram_js(x, rng(17).normal(0.5, 1, n), bins=np.linspace(-4, 4, 41))
    assert shifted.value > 0.02 and shifted.value > 100 * shifted.se


# ----------------------------------------------------------------------------- populations
def test_basin_population_se_formula():
    x = np.array([-2.0, -1.5, -0.2, 0.1, 0.4, 3.0, 3.5, 4.0])
    pops = M.basin_populations(x, [0.0, 2.0])
    assert np.allclose(pops.value, [3 / 8, 2 / 8, 3 / 8])
    assert np.allclose(pops.se, np.sqrt(pops.value * (1 - pops.value) / 8))
    assert np.allclose(M.basin_populations(x, [2.0, 0.0]).value, pops.value)  # order-free
    assert np.allclose(M.basin_populations(x, [0.0, 2.0], n_eff=2).se, np.sqrt(pops.value * (1 - pops.value) / 2))
    lab = M.label_populations([0, 2, 2, 1], 3)
    assert np.allclose(lab.value, [0.25, 0.25, 0.5])


def test_basin_population_se_matches_replication_and_compare():
    """Stochastic (seed 18): over 400 replications of n = 1000 draws with p = 0.03 the
    spread of the estimated population matches the binomial SE within 20 %, and the
    z-scores of compare_populations have unit spread."""
    g = rng(18)
    vals, zs = [], []
    for _ in range(400):
        x = g.random(1000)
        pops = M.basin_populations(x, [0.03])
        vals.append(pops.value[0])
        zs.append(M.compare_populations(pops, [0.03, 0.97], 1000).z[0])
    assert np.std(vals, ddof=1) / math.sqrt(0.03 * 0.97 / 1000) == pytest.approx(1.0, abs=0.2)
    assert np.std(zs, ddof=1) == pytest.approx(1.0, abs=0.2)
    c = M.compare_populations(np.array([0.5, 0.5]), [0.4, 0.6], 100)
    assert np.allclose(c.diff, [0.1, -0.1]) and c.max_abs_diff == pytest.approx(0.1)
    assert np.allclose(c.z, [0.1 / math.sqrt(0.24 / 100), -0.1 / math.sqrt(0.24 / 100)])


# ----------------------------------------------------------------------------- kernel statistics
def _brute_u(x, y, k):
    kxx, kyy, kxy = k(x[:, None] - x[None]), k(y[:, None] - y[None]), k(x[:, None] - y[None])
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_energy_distance_and_mmd_against_brute_force():
    x, y = rng(19).normal(size=(60, 2)), rng(20).normal(size=(45, 2)) + 0.3
    e = M.energy_distance(x, y)
    assert e.value == pytest.approx(_brute_u(x, y, lambda d: -np.linalg.norm(d, axis=-1)), rel=1e-10)
    mmd, h = M.mmd_rbf(x, y, bandwidth=0.7)
    ref = _brute_u(x, y, lambda d: np.exp(-(d ** 2).sum(-1) / (2 * 0.7 ** 2)))
    assert h == 0.7 and mmd.value == pytest.approx(ref, rel=1e-10)
    z = np.concatenate([x, y])
    d = np.linalg.norm(z[:, None] - z[None], axis=-1)
    assert M.mmd_rbf(x, y)[1] == pytest.approx(np.median(d[np.triu_indices(len(z), 1)]))
    # 1-D: scipy's energy_distance is sqrt of the V-statistic version
    a, b = x[:, 0], y[:, 0]
    n, m = len(a), len(b)
    bxx = np.abs(a[:, None] - a[None]).sum() / (n * (n - 1))
    byy = np.abs(b[:, None] - b[None]).sum() / (m * (m - 1))
    v_stat = M.energy_distance(a, b).value + bxx / n + byy / m
    assert math.sqrt(v_stat) == pytest.approx(stats.energy_distance(a, b), rel=1e-10)


def test_energy_distance_and_mmd_of_gaussians():
    """Stochastic (seeds 21, 22): for N(0, I) vs N(d, I) in 2-D the energy distance in 1-D
    and the RBF MMD^2 with fixed h match their closed forms within 5 SE (n = 3000)."""
    n = 3000
    x1, y1 = rng(21).normal(size=n), rng(22).normal(0.5, 1, n)
    d = 0.5  # X - Y ~ N(-d, 2): E|X-Y| = 2 phi(d/sqrt2) sqrt2 + d (1 - 2 Phi(-d/sqrt2)); E|X-X'| = 2/sqrt(pi)
    s = math.sqrt(2)
    exy = s * 2 * stats.norm.pdf(d / s) + d * (1 - 2 * stats.norm.cdf(-d / s))
    e = M.energy_distance(x1, y1)
    assert abs(e.value - (2 * exy - 4 / math.sqrt(math.pi))) < Z * e.se
    x2, y2 = rng(21).normal(size=(n, 2)), rng(22).normal(size=(n, 2)) + [0.5, 0.0]
    h = 1.2
    r = h * h / (h * h + 2)  # E k = (h^2/(h^2+2 s^2))^{D/2} exp(-|d|^2/(2(h^2+2s^2)))
    exact = 2 * r * (1 - math.exp(-0.25 / (2 * (h * h + 2))))
    mmd, _ = M.mmd_rbf(x2, y2, bandwidth=h)
    assert abs(mmd.value - exact) < Z * mmd.se


def test_kernel_statistics_null_unbiased():
    """Stochastic (seed 23): for one law the unbiased MMD^2 and energy distance average to
    ~0 over 40 replications (within 5 standard errors of that average)."""
    g = rng(23)
    mm, ed = [], []
    for _ in range(40):
        x, y = g.normal(size=(2, 300, 2))
        mm.append(M.mmd_rbf(x, y, bandwidth=1.0)[0].value)
        ed.append(M.energy_distance(x, y).value)
    for v in (np.array(mm), np.array(ed)):
        assert abs(v.mean()) < Z * v.std(ddof=1) / math.sqrt(len(v))


# ----------------------------------------------------------------------------- moments
def test_sample_moments_se_and_z_scores():
    """Stochastic (seed 24): correlated Gaussian samples give moment z-scores below 5; the
    variance SE equals sqrt(2/n) s^2 for Gaussian data to 10 %."""
    cov = np.array([[2.0, 0.6], [0.6, 1.0]])
    x = rng(24).multivariate_normal([1.0, -1.0], cov, size=50_000)
    m = M.sample_moments(x)
    assert np.allclose(m.mean.se, np.sqrt(np.diag(cov) / 50_000), rtol=0.05)
    assert m.cov.se[0, 0] == pytest.approx(math.sqrt(2 / 50_000) * 2.0, rel=0.1)
    assert m.cov.se[0, 1] == pytest.approx(math.sqrt((2.0 * 1.0 + 0.36) / 50_000), rel=0.1)
    z = M.moment_z_scores(x, [1.0, -1.0], cov)
    assert np.all(np.abs(z["mean"]) < Z) and np.all(np.abs(z["cov"]) < Z)
    assert np.max(np.abs(M.moment_z_scores(x, [1.1, -1.0])["mean"])) > 10


def test_equipartition_and_log_likelihood():
    """Stochastic (seed 25): Maxwell–Boltzmann velocities with per-dof masses give
    <m v^2> = kT per dof within 5 SE; log-likelihood mean = -entropy of N(0,1)."""
    kT, mass = 1.7, np.array([1.0, 4.0, 0.5])
    v = rng(25).normal(size=(40_000, 3)) * np.sqrt(kT / mass)
    eq = M.equipartition(v, mass)
    assert np.all(np.abs(eq.z(kT)) < Z)
    assert abs(M.kinetic_temperature(v, mass).z(kT)) < Z
    x = rng(26).normal(size=40_000)
    ll = M.log_likelihood(stats.norm.logpdf(x))
    assert abs(ll.z(-0.5 * math.log(2 * math.pi * math.e))) < Z


# ----------------------------------------------------------------------------- Ising
def test_ising_observables_simple_configurations():
    up = np.ones((3, 4, 4), dtype=np.int8)
    obs = M.ising_observables(up, T=2.0)
    assert obs.abs_m.value == 1.0 and obs.energy.value == -2.0
    assert obs.binder.value == pytest.approx(2 / 3)
    assert obs.specific_heat.value == 0.0
    checker = np.indices((4, 4)).sum(0) % 2 * 2 - 1
    obs = M.ising_observables(np.stack([checker, -checker]).astype(np.int8))
    assert obs.energy.value == 2.0 and obs.abs_m.value == 0.0 and obs.specific_heat is None
    assert math.isnan(obs.binder.value)  # undefined when <m^2> = 0
    with pytest.raises(ValueError):
        M.ising_observables(np.ones((4, 4)))


def test_binder_cumulant_limits_and_se():
    """Stochastic (seed 27): Gaussian m gives U4 = 0 within 5 SE; the SE matches the
    spread over 200 replications within 25 %."""
    g = rng(27)
    b = M.binder_cumulant(g.normal(size=100_000))
    assert abs(b.value) < Z * b.se
    reps = [M.binder_cumulant(g.normal(size=2000)) for _ in range(200)]
    assert np.std([r.value for r in reps], ddof=1) / np.mean([r.se for r in reps]) == pytest.approx(1.0, abs=0.25)


# ----------------------------------------------------------------------------- correlated series
def test_autocorrelation_time_of_ar1():
    """Stochastic (seed 28): AR(1) with phi = 0.8 has tau_int = (1+phi)/(1-phi) = 9; the
    estimate lies within 5 x its Madras–Sokal error tau sqrt(2(2W+1)/n), W ~ 5 tau; the
    autocorrelated SE of the mean is sqrt(tau) times the naive one."""
    phi, n = 0.8, 200_000
    g = rng(28)
    e = g.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - phi * phi)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    tau = M.integrated_autocorrelation_time(x)
    assert abs(tau - 9.0) < Z * 9.0 * math.sqrt(2 * (2 * 5 * 9 + 1) / n)
    est = M.autocorr_mean(x)
    assert est.se == pytest.approx(x.std(ddof=1) * math.sqrt(tau / n))
    assert abs(est.value) < Z * est.se
    assert M.integrated_autocorrelation_time(g.normal(size=10_000)) == pytest.approx(1.0, abs=0.15)
