"""Analytic thermodynamics against independent oracles: closed forms, scipy quadrature,
brute-force enumeration, finite differences and (labelled) fixed-seed Monte Carlo with
z = 5 standard-error bounds."""
import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from nonequil import analytic as A
from nonequil import metrics as M

Z = 5.0  # z-score bound for stochastic assertions


# ----------------------------------------------------------------------------- 1-D Boltzmann
@pytest.mark.parametrize("k,kT,center", [(2.0, 0.7, 0.0), (0.3, 2.5, 1.7)])
def test_harmonic_quadrature_matches_gaussian(k, kT, center):
    s = math.sqrt(kT / k)
    b = A.boltzmann_1d(lambda x: A.harmonic_energy(x, k, center), kT, center - 12 * s, center + 12 * s)
    assert abs(b.log_z - A.harmonic_log_z(k, kT)) < 1e-10
    assert abs(b.free_energy + kT * A.harmonic_log_z(k, kT)) < 1e-10
    assert abs(b.entropy - 0.5 * (1.0 + math.log(2 * math.pi * s * s))) < 1e-10
    assert abs(b.mean_energy - 0.5 * kT) < 1e-12
    assert abs(b.expect(lambda x: (x - center) ** 2) - s * s) < 1e-12 * max(1, s * s)
    assert b.edge_density < 1e-25
    xs = np.linspace(center - 6 * s, center + 6 * s, 1001)
    assert np.allclose(b.pdf(xs), stats.norm.pdf(xs, center, s), rtol=1e-10, atol=0)


def test_cdf_and_inverse_cdf_match_normal():
    b = A.boltzmann_1d(A.harmonic_energy, 1.0, -12.0, 12.0)
    x = np.random.default_rng(1).uniform(-8, 8, 5000)
    assert np.max(np.abs(b.cdf(x) - special.ndtr(x))) < 1e-13
    u = np.linspace(1e-6, 1 - 1e-6, 20001)
    q = b.inverse_cdf(u)
    assert np.max(np.abs(q - special.ndtri(u))) < 1e-9
    assert np.all(np.diff(q) > 0)
    assert np.max(np.abs(b.cdf(q) - u)) < 1e-15
    lo_tail = np.logspace(-14, -2, 50)
    assert np.max(np.abs(special.ndtr(b.inverse_cdf(lo_tail)) / lo_tail - 1)) < 1e-9
    assert b.inverse_cdf(0.0) == -12.0 and b.inverse_cdf(1.0) == 12.0
    with pytest.raises(ValueError):
        b.inverse_cdf(1.5)


def test_double_well_delta_f_and_moments_against_quad():
    a, bb, kT = 1.0, 0.3, 0.5
    dw = A.double_well_boltzmann(a, bb, kT)
    xmin, xbar, xmax = A.double_well_stationary_points(a, bb)
    w = lambda x: math.exp(-A.double_well_energy(x, a, bb) / kT)  # noqa: E731
    pa = integrate.quad(w, -np.inf, xbar, epsabs=0, epsrel=1e-13)[0]
    pb = integrate.quad(w, xbar, np.inf, epsabs=0, epsrel=1e-13)[0]
    z = pa + pb
    assert abs(dw.log_z - math.log(z)) < 1e-11
    assert abs(dw.delta_free_energy(xbar) - (-kT * math.log(pb / pa))) < 1e-10
    assert np.allclose(dw.populations([xbar]), [pa / z, pb / z], rtol=1e-11, atol=0)
    eU = integrate.quad(lambda x: A.double_well_energy(x, a, bb) * w(x), -np.inf, np.inf, epsrel=1e-13)[0] / z
    assert abs(dw.mean_energy - eU) < 1e-10
    assert abs(dw.entropy - (eU / kT + math.log(z))) < 1e-10
    assert dw.edge_density < 1e-20


def test_double_well_stationary_points():
    for a, b in [(1.0, 0.0), (2.0, 0.5), (0.5, -0.2)]:
        pts = A.double_well_stationary_points(a, b)
        assert pts.size == 3
        assert np.allclose(A.double_well_gradient(pts, a, b), 0.0, atol=1e-12)
        curv = 12 * a * pts ** 2 - 4 * a
        assert curv[0] > 0 and curv[1] < 0 and curv[2] > 0
    assert A.double_well_stationary_points(1.0, 4.0).size == 1
    x = np.linspace(-2, 2, 7)
    h = 1e-6
    fd = (A.double_well_energy(x + h, 1.3, 0.2) - A.double_well_energy(x - h, 1.3, 0.2)) / (2 * h)
    assert np.allclose(A.double_well_gradient(x, 1.3, 0.2), fd, atol=1e-7)


def test_inverse_cdf_samples_pass_ks_and_populations():
    """Stochastic (fixed seed 11): inverse-CDF samples of the tilted double well pass a KS
    test against the quadrature CDF (p > 1e-3) and hit the basin populations within 5 SE."""
    a, bb, kT = 1.0, 0.3, 0.5
    dw = A.double_well_boltzmann(a, bb, kT)
    x = dw.sample(np.random.default_rng(11), 200_000)
    assert M.ks_1samp(x, dw.cdf).pvalue > 1e-3
    xbar = A.double_well_stationary_points(a, bb)[1]
    cmp = M.compare_populations(M.basin_populations(x, [xbar]), dw.populations([xbar]), x.size)
    assert np.all(np.abs(cmp.z) < Z)


# ----------------------------------------------------------------------------- Müller–Brown
def test_muller_brown_minima_and_gradient():
    m, e = A.muller_brown_minima(1.0)
    ref = np.array([[-0.558224, 1.441726], [0.623499, 0.028038], [-0.050011, 0.466694]])
    assert np.allclose(m, ref, atol=2e-6)
    assert np.allclose(e, [-146.69951, -108.16672, -80.76782], atol=1e-4)
    assert np.allclose(A.muller_brown_gradient(m, 1.0), 0.0, atol=1e-8)
    _, e01 = A.muller_brown_minima(0.1)
    assert np.allclose(e01, 0.1 * e)
    xy = np.random.default_rng(2).uniform([-1.5, -0.2], [1.0, 2.0], (20, 2))
    h = 1e-6
    fd = np.stack([(A.muller_brown_energy(xy + d) - A.muller_brown_energy(xy - d)) / (2 * h)
                   for d in (np.array([h, 0]), np.array([0, h]))], -1)
    assert np.allclose(A.muller_brown_gradient(xy), fd, atol=1e-6)
    assert A.muller_brown_energy(xy.reshape(4, 5, 2)).shape == (4, 5)


def test_muller_brown_constants_match_kernels():
    kp = pytest.importorskip("kernels.potentials")
    for name in ("MB_A", "MB_a", "MB_b", "MB_c", "MB_X0", "MB_Y0"):
        assert np.array_equal(getattr(A, name), getattr(kp, name)), name


@pytest.fixture(scope="module")
def mb():
    return A.muller_brown_boltzmann()


def test_muller_brown_grid_quadrature_converged(mb):
    assert mb.edge_density < 1e-15
    assert abs(mb.density.sum() * (mb.x[1] - mb.x[0]) * (mb.y[1] - mb.y[0]) - 1) < 1e-3  # crude
    other = A.muller_brown_boltzmann(xlim=(-3.6, 1.7), ylim=(-1.6, 3.6), nx=708, ny=694)  # h 0.0075
    assert abs(other.log_z - mb.log_z) < 1e-10
    assert abs(other.mean_energy - mb.mean_energy) < 1e-9
    assert abs(mb.populations.sum() - 1) < 1e-12
    assert np.max(np.abs(other.populations - mb.populations)) < 1e-6  # separatrix cells, O(h)
    assert np.all(A.muller_brown_basin(mb.minima) == [0, 1, 2])
    assert np.array_equal(mb.basin_of(mb.minima), [0, 1, 2])
    assert A.muller_brown_basin(np.array([[9.0, 9.0]]))[0] in (0, 1, 2)  # outside the traced box


def test_muller_brown_log_z_against_nested_quad():
    kT, scale = 1.0, 0.1
    b = A.muller_brown_boltzmann(kT, scale)
    umin = A.muller_brown_minima(scale)[1][0]

    def inner(x):
        f = lambda y: math.exp(-(A.muller_brown_energy([x, y], scale) - umin) / kT)  # noqa: E731
        return integrate.quad(f, -1.3, 3.3, points=[0.0, 0.47, 1.44], epsabs=1e-14, epsrel=1e-11, limit=200)[0]

    z = integrate.quad(inner, -3.3, 1.5, points=[-0.56, -0.05, 0.62], epsabs=1e-14, epsrel=1e-10, limit=200)[0]
    assert abs(b.log_z - (math.log(z) - umin / kT)) < 1e-8


def _segment_distance(p, poly):
    a, b = poly[:-1], poly[1:]
    ab = b - a
    t = np.clip(((p[:, None, :] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0, 1)
    return np.sqrt((((a + t[..., None] * ab) - p[:, None, :]) ** 2).sum(-1)).min(1)


def test_muller_brown_basins_match_gradient_flow(mb):
    """Stochastic (seed 3): points drawn from the grid density at kT = 1 and kT = 3 and
    uniformly over the domain get the basin that an explicit small-step gradient flow
    reaches, except within 0.003 of a separatrix (where the reference flow is ambiguous)."""
    rng = np.random.default_rng(3)
    hot = A.muller_brown_boltzmann(kT=3.0)
    starts, grid_labels = [], []
    for b in (mb, hot):
        w = b.density.ravel() / b.density.sum()
        i, j = np.unravel_index(rng.choice(w.size, 150, p=w), b.density.shape)
        starts.append(np.stack([b.x[i], b.y[j]], -1))
        grid_labels.append(b.labels[i, j])
    p0 = np.concatenate(starts + [rng.uniform([-2.5, -1.0], [1.3, 3.0], (150, 2))])
    p = p0.copy()
    for _ in range(5000):  # normalised Euler steps of at most 1e-3
        g = A.muller_brown_gradient(p, 1.0)
        p = p - 1e-3 * g / (1.0 + np.linalg.norm(g, axis=-1, keepdims=True))
    d2 = ((p[:, None, :] - mb.minima[None]) ** 2).sum(-1)
    assert np.all(d2.min(1) < 1e-4)
    _, polys = A._mb_separatrices()
    near = np.min([_segment_distance(p0, np.stack([q.a, q.b], 1).reshape(-1, 2)) for q in polys], 0) < 3e-3
    assert near.sum() < 5
    got = A.muller_brown_basin(p0)
    assert np.array_equal(got[~near], d2.argmin(1)[~near])
    assert np.array_equal(np.concatenate(grid_labels), got[:300])


# ----------------------------------------------------------------------------- mixtures
@pytest.fixture
def mix3d():
    rng = np.random.default_rng(4)
    covs = []
    for _ in range(3):
        a = rng.normal(size=(3, 3))
        covs.append(a @ a.T + 0.5 * np.eye(3))
    return A.GaussianMixture([0.2, 0.5, 0.3], rng.normal(size=(3, 3)) * 2, np.array(covs))


def test_mixture_log_prob_against_scipy(mix3d):
    x = np.random.default_rng(5).normal(size=(50, 3)) * 2
    ref = np.log(sum(w * stats.multivariate_normal(m, c).pdf(x)
                     for w, m, c in zip(mix3d.weights, mix3d.means, mix3d.covs)))
    assert np.allclose(mix3d.log_prob(x), ref, rtol=1e-12, atol=1e-12)


def test_mixture_score_matches_finite_differences(mix3d):
    x = np.random.default_rng(6).normal(size=(30, 3)) * 2
    h = 1e-5
    fd = np.stack([(mix3d.log_prob(x + h * e) - mix3d.log_prob(x - h * e)) / (2 * h) for e in np.eye(3)], -1)
    assert np.allclose(mix3d.score(x), fd, rtol=1e-7, atol=1e-7)


def test_mixture_one_d_shapes_cdf_and_entropy():
    g = A.GaussianMixture([0.3, 0.7], [-2.0, 1.0], [0.25, 1.0])
    x = np.linspace(-5, 5, 11)
    assert g.log_prob(x).shape == (11,) and g.score(x).shape == (11,)
    assert np.allclose(g.log_prob(x), g.log_prob(x[:, None]))
    cdf_num = integrate.cumulative_trapezoid(np.exp(g.log_prob(np.linspace(-12, 5, 200001))),
                                             np.linspace(-12, 5, 200001), initial=0)[-1]
    assert abs(g.cdf(5.0) - cdf_num) < 1e-8
    single = A.GaussianMixture([1.0], [[0.0, 0.0]], [[[2.0, 0.3], [0.3, 1.0]]])
    assert single.entropy().value == pytest.approx(
        stats.multivariate_normal([0, 0], [[2.0, 0.3], [0.3, 1.0]]).entropy(), abs=1e-12)
    assert single.entropy().se == 0.0


def test_mixture_sampling_moments_and_entropy(mix3d):
    """Stochastic (seed 7): sample mean and covariance within 5 SE of the exact moments;
    Monte-Carlo entropy of two far-apart equal Gaussians within 5 SE of H_1 + log 2."""
    x = mix3d.sample(np.random.default_rng(7), 200_000)
    zs = M.moment_z_scores(x, mix3d.mean(), mix3d.cov())
    assert np.all(np.abs(zs["mean"]) < Z) and np.all(np.abs(zs["cov"]) < Z)
    two = A.GaussianMixture([0.5, 0.5], [[-20.0], [20.0]], [1.0, 1.0])
    h = two.entropy(np.random.default_rng(8), 100_000)
    assert abs(h.value - (0.5 * math.log(2 * math.pi * math.e) + math.log(2))) < Z * h.se


def test_mixture_rejects_bad_input():
    with pytest.raises(ValueError):
        A.GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError):
        A.GaussianMixture([-1.0, 2.0], [0.0, 1.0], [1.0, 1.0])


# ----------------------------------------------------------------------------- harmonic chain
@pytest.mark.parametrize("ends,k0", [("fixed", 0.0), ("fixed", 0.4), ("periodic", 0.4)])
@pytest.mark.parametrize("P", [1, 2, 3, 5, 16, 256])
def test_harmonic_chain_eigenvalues_and_thermodynamics(ends, k0, P):
    c = A.HarmonicChain(P, k=1.3, k0=k0, ends=ends, kT=0.8)
    K = c.stiffness()
    assert np.allclose(K, K.T)
    assert np.allclose(np.linalg.eigvalsh(K), c.eigenvalues(), rtol=1e-12, atol=1e-12)
    cov = c.covariance()
    logdet_cov = np.linalg.slogdet(cov)[1]
    assert c.entropy() == pytest.approx(0.5 * (P * math.log(2 * math.pi * math.e) + logdet_cov), abs=1e-9)
    assert c.log_z() == pytest.approx(0.5 * P * math.log(2 * math.pi * 0.8) - 0.5 * np.linalg.slogdet(K)[1], abs=1e-9)
    assert c.free_energy() == pytest.approx(-0.8 * c.log_z())
    assert c.mean_energy() == pytest.approx(0.5 * P * 0.8)
    u = np.random.default_rng(P).normal(size=(4, P))
    assert np.allclose(c.score(u), -u @ np.linalg.inv(cov), rtol=1e-8, atol=1e-8)


def test_harmonic_chain_energy_definition_and_score_fd():
    P, k = 5, 1.7
    u = np.random.default_rng(9).normal(size=(3, P))
    fixed = A.HarmonicChain(P, k=k)
    padded = np.pad(u, ((0, 0), (1, 1)))
    assert np.allclose(fixed.energy(u), 0.5 * k * (np.diff(padded, axis=1) ** 2).sum(1))
    per = A.HarmonicChain(P, k=k, k0=0.3, ends="periodic")
    ring = 0.5 * k * ((np.roll(u, -1, 1) - u) ** 2).sum(1) + 0.15 * (u * u).sum(1)
    assert np.allclose(per.energy(u), ring)
    h = 1e-6
    fd = np.stack([(per.log_prob(u + h * e) - per.log_prob(u - h * e)) / (2 * h) for e in np.eye(P)], -1)
    assert np.allclose(per.score(u), fd, atol=1e-6)
    # log_prob is normalised: Gaussian with covariance kT K^-1
    ref = stats.multivariate_normal(np.zeros(P), per.covariance()).logpdf(u)
    assert np.allclose(per.log_prob(u), ref)


def test_harmonic_chain_validation_and_sampling():
    with pytest.raises(ValueError, match="k0 > 0"):
        A.HarmonicChain(4, k=1.0, k0=0.0, ends="periodic")
    with pytest.raises(ValueError):
        A.HarmonicChain(4, ends="open")
    with pytest.raises(ValueError):
        A.HarmonicChain(0)
    c = A.HarmonicChain(8, k=2.0, kT=1.5)
    x = c.sample(np.random.default_rng(10), 100_000)
    zs = M.moment_z_scores(x, np.zeros(8), c.covariance())
    assert np.all(np.abs(zs["cov"]) < Z)  # stochastic, seed 10


# ----------------------------------------------------------------------------- OU
def test_ou_moments_solve_their_odes():
    theta, mu, sigma, x0 = 0.7, 1.3, 0.9, -2.0
    t = np.linspace(0.01, 5, 50)
    h = 1e-6
    dm = (A.ou_mean(x0, t + h, theta, mu) - A.ou_mean(x0, t - h, theta, mu)) / (2 * h)
    dv = (A.ou_var(t + h, theta, sigma) - A.ou_var(t - h, theta, sigma)) / (2 * h)
    assert np.allclose(dm, theta * (mu - A.ou_mean(x0, t, theta, mu)), atol=1e-8)
    assert np.allclose(dv, -2 * theta * A.ou_var(t, theta, sigma) + sigma ** 2, atol=1e-8)
    assert A.ou_var(0.0, theta, sigma) == 0.0
    assert A.ou_var(2.0, 0.0, sigma) == pytest.approx(sigma ** 2 * 2.0, rel=1e-15)
    assert A.ou_var(2.0, 1e-12, sigma) == pytest.approx(sigma ** 2 * 2.0, rel=1e-11)
    m_inf, v_inf = A.ou_stationary(theta, mu, sigma)
    assert A.ou_transition(x0, 200.0, theta, mu, sigma) == pytest.approx((m_inf, v_inf), rel=1e-14)
    with pytest.raises(ValueError):
        A.ou_stationary(0.0, mu, sigma)


def test_ou_transition_density_chapman_kolmogorov():
    theta, mu, sigma, x0 = 0.7, 0.4, 1.1, 1.5
    y = np.linspace(-12, 12, 40001)
    x = 0.3
    lhs = integrate.trapezoid(np.exp(A.ou_transition_logpdf(x, y, 0.8, theta, mu, sigma)
                                     + A.ou_transition_logpdf(y, x0, 0.5, theta, mu, sigma)), y)
    assert lhs == pytest.approx(math.exp(A.ou_transition_logpdf(x, x0, 1.3, theta, mu, sigma)), rel=1e-10)
    assert integrate.trapezoid(np.exp(A.ou_transition_logpdf(y, x0, 0.5, theta, mu, sigma)), y) == pytest.approx(1.0, rel=1e-12)


def test_ou_from_mixture_limits_score_and_fokker_planck():
    w, m, v = [0.3, 0.7], [-2.0, 1.5], [0.2, 0.5]
    theta, mu, sigma = 1.2, 0.5, 0.8
    start = A.GaussianMixture(w, m, v)
    x = np.linspace(-5, 5, 101)
    assert np.allclose(A.ou_mixture_marginal(w, m, v, 0.0, theta, mu, sigma).log_prob(x), start.log_prob(x), atol=1e-14)
    m_inf, v_inf = A.ou_stationary(theta, mu, sigma)
    late = A.ou_mixture_marginal(w, m, v, 60.0, theta, mu, sigma)
    assert np.allclose(late.log_prob(x), stats.norm.logpdf(x, m_inf, math.sqrt(v_inf)), atol=1e-12)
    t = 0.4
    pt = A.ou_mixture_marginal(w, m, v, t, theta, mu, sigma)
    h = 1e-5
    assert np.allclose(pt.score(x), (pt.log_prob(x + h) - pt.log_prob(x - h)) / (2 * h), atol=1e-7)
    # Fokker–Planck: dp/dt = -d/dx[theta (mu - x) p] + sigma^2/2 d2p/dx2
    p = lambda s, y: np.exp(A.ou_mixture_marginal(w, m, v, s, theta, mu, sigma).log_prob(y))  # noqa: E731
    hx, ht = 1e-3, 1e-5
    dpdt = (p(t + ht, x) - p(t - ht, x)) / (2 * ht)
    flux = lambda y: theta * (mu - y) * p(t, y)  # noqa: E731
    rhs = -(flux(x + hx) - flux(x - hx)) / (2 * hx) + 0.5 * sigma ** 2 * (p(t, x + hx) - 2 * p(t, x) + p(t, x - hx)) / hx ** 2
    assert np.allclose(dpdt, rhs, atol=1e-6)
    # multi-dimensional: the evolved covariance is e^{-2 theta t} Sigma + ou_var I
    g2 = A.GaussianMixture([1.0], [[1.0, -1.0]], [[[1.0, 0.5], [0.5, 2.0]]]).ou_evolve(t, theta, mu, sigma)
    d = math.exp(-theta * t)
    assert np.allclose(g2.covs[0], d * d * np.array([[1.0, 0.5], [0.5, 2.0]]) + A.ou_var(t, theta, sigma) * np.eye(2))
    assert np.allclose(g2.means[0], mu + (np.array([1.0, -1.0]) - mu) * d)


# ----------------------------------------------------------------------------- Ising
def _ising_enumeration(L, Mc, T):
    N = L * Mc
    idx = np.arange(2 ** N)[:, None]
    s = (1 - 2 * ((idx >> np.arange(N)) & 1)).reshape(-1, L, Mc).astype(float)
    E = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2))
    out = []
    for t in T:
        lz = special.logsumexp(-E / t)
        p = np.exp(-E / t - lz)
        u = p @ E
        out.append((lz, u / N, (p @ (E - u) ** 2) / (N * t * t)))
    return np.array(out).T


def test_ising_onsager_published_values():
    assert A.ISING_TC == pytest.approx(2.269185314213022, rel=1e-15)
    assert A.ising_energy(A.ISING_TC) == pytest.approx(-math.sqrt(2.0), rel=1e-15)
    assert A.ising_magnetization(A.ISING_TC) == 0.0 and A.ising_magnetization(3.0) == 0.0
    assert A.ising_magnetization(2.0) == pytest.approx(0.911319, abs=1e-6)
    assert A.ising_magnetization(1e-3) == pytest.approx(1.0)
    assert np.isinf(A.ising_specific_heat(A.ISING_TC))
    # high-T series: -f/T = ln 2 + 2 ln cosh K + tanh^4 K + ...
    assert A.ising_free_energy(1e3) == pytest.approx(-1e3 * (math.log(2) + 2 * math.log(math.cosh(1e-3))), rel=1e-11)
    assert A.ising_free_energy(0.05) == pytest.approx(-2.0, rel=1e-12)               # ground state


@pytest.mark.parametrize("L,Mc", [(2, 2), (3, 3), (4, 4), (2, 3), (3, 4), (4, 3)])
def test_kaufman_against_enumeration(L, Mc):
    T = np.array([0.8, 1.5, 2.0, A.ISING_TC, 2.5, 3.5, 10.0])  # both sides of Tc
    k = A.ising_kaufman(L, T, Mc)
    lz, u, c = _ising_enumeration(L, Mc, T)
    assert np.allclose(k.log_z, lz, rtol=0, atol=1e-12)
    assert np.allclose(k.energy, u, rtol=0, atol=1e-12)
    assert np.allclose(k.specific_heat, c, rtol=0, atol=1e-12)
    assert np.allclose(k.free_energy, -T * lz / (L * Mc), atol=1e-12)


def test_kaufman_approaches_onsager():
    T = np.array([1.0, 2.0, 2.5, 3.5])
    k = A.ising_kaufman(256, T)
    assert np.allclose(k.energy, A.ising_energy(T), atol=1e-10)
    assert np.allclose(k.specific_heat, A.ising_specific_heat(T), atol=1e-8)
    # below Tc the two ordered phases add T ln 2 / N to -f
    degeneracy = np.where(T < A.ISING_TC, T * math.log(2) / 256 ** 2, 0.0)
    assert np.allclose(k.free_energy + degeneracy, A.ising_free_energy(T), atol=1e-12)


def test_onsager_thermodynamic_consistency():
    h = 1e-5
    for T in [1.0, 1.8, 2.1, 2.5, 4.0]:
        c_fd = (A.ising_energy(T + h) - A.ising_energy(T - h)) / (2 * h)
        assert A.ising_specific_heat(T) == pytest.approx(c_fd, rel=1e-7)
        K = 1.0 / T
        bf = lambda k: A.ising_free_energy(1.0 / k) * k  # noqa: E731  beta f
        assert (bf(K + h) - bf(K - h)) / (2 * h) == pytest.approx(A.ising_energy(T), rel=1e-8)
    T = 2.0
    K = 1 / T
    I = integrate.dblquad(lambda a, b: math.log(math.cosh(2 * K) ** 2 - math.sinh(2 * K) * (math.cos(a) + math.cos(b))),
                          0, math.pi, 0, math.pi, epsabs=1e-12, epsrel=1e-12)[0]
    assert A.ising_free_energy(T) == pytest.approx(-T * (math.log(2) + I / (2 * math.pi ** 2)), rel=1e-11)


def test_ising_observables_match_exact_ensemble():
    """Stochastic (seed 12): configurations drawn exactly from the 3 x 3 Boltzmann law
    (by enumeration) give metrics whose energy, specific heat, <|m|> and Binder cumulant
    agree with Kaufman / enumeration within 5 SE."""
    L, T = 3, 2.0
    N = L * L
    idx = np.arange(2 ** N)[:, None]
    s = (1 - 2 * ((idx >> np.arange(N)) & 1)).reshape(-1, L, L).astype(np.int8)
    E = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2))
    p = np.exp(-(E - E.min()) / T)
    p /= p.sum()
    m = s.mean((1, 2))
    draws = s[np.random.default_rng(12).choice(len(p), 40_000, p=p)]
    obs = M.ising_observables(draws, T=T)
    exact = A.ising_kaufman(L, T)
    assert abs(obs.energy.z(exact.energy)) < Z
    assert abs(obs.specific_heat.z(exact.specific_heat)) < Z
    assert abs(obs.abs_m.z(p @ np.abs(m))) < Z
    assert abs(obs.binder.z(1 - (p @ m ** 4) / (3 * (p @ m ** 2) ** 2))) < Z


# ----------------------------------------------------------------------------- Kramers / MFPT
def test_mfpt_closed_forms():
    gamma, kT = 2.0, 0.7
    free = A.mfpt_1d(lambda x: 0.0 * x, kT, gamma, 0.3, 1.5, 0.0)
    assert free == pytest.approx(gamma / kT * (1.5 ** 2 - 0.3 ** 2) / 2, rel=1e-12)
    F, x0, b = 1.3, 0.2, 2.0
    beta = 1 / kT
    exact = gamma / F * ((math.exp(beta * F * b) - math.exp(beta * F * x0)) / (beta * F) - (b - x0))
    assert A.mfpt_1d(lambda x: F * x, kT, gamma, x0, b, 0.0) == pytest.approx(exact, rel=1e-10)
    assert A.mfpt_1d(lambda x: F * x, kT, gamma, b, b, 0.0) == 0.0


def test_mfpt_approaches_kramers():
    """T k_Kramers -> 1 with corrections O(kT / dU) (issue 3)."""
    kT = 0.25
    dev = []
    for a in (2.0, 4.0, 8.0):
        xa, _, xc = A.double_well_stationary_points(a)
        T = A.mfpt_1d(lambda x: A.double_well_energy(x, a), kT, 1.0, xa, xc, -2.5)
        dev.append(abs(T * A.double_well_kramers_rate(a, 0.0, kT, 1.0) - 1))
        assert dev[-1] < kT / a
    assert dev[0] > dev[1] > dev[2]


# ----------------------------------------------------------------------------- work theorems
def test_trap_protocol_exact_answers():
    assert A.trap_stiffness_delta_f(1.0, 4.0, 0.5) == pytest.approx(0.25 * math.log(4))
    v, tau, k, gamma, kT = 0.7, 3.0, 2.0, 1.5, 0.8
    mean, var = A.dragged_trap_work(v, tau, k, gamma, kT)
    tr = gamma / k  # <W> = int_0^tau k v^2 tau_r (1 - e^{-t/tau_r}) dt
    assert mean == pytest.approx(integrate.quad(lambda t: k * v * v * tr * (1 - math.exp(-t / tr)), 0, tau)[0], rel=1e-12)
    assert -mean / kT + var / (2 * kT * kT) == pytest.approx(0.0, abs=1e-14)  # Jarzynski, dF = 0


def test_stiffness_ramp_mean_work():
    k0, k1, gamma, kT = 1.0, 3.0, 1.0, 0.5
    assert A.stiffness_ramp_mean_work(k0, k1, 0.0, gamma, kT) == pytest.approx((k1 - k0) * kT / (2 * k0))
    assert A.stiffness_ramp_mean_work(k0, k1, 1e-7, gamma, kT) == pytest.approx((k1 - k0) * kT / (2 * k0), rel=1e-6)
    dF = A.trap_stiffness_delta_f(k0, k1, kT)
    works = [A.stiffness_ramp_mean_work(k0, k1, tau, gamma, kT) for tau in (0.1, 1.0, 10.0, 1000.0)]
    assert all(a > b for a, b in zip(works, works[1:])) and works[-1] > dF
    assert works[-1] - dF < 1e-2
    tau = 2.0  # independent: s(t) = e^{-A(t)} [s0 + (2kT/gamma) int_0^t e^{A(u)} du]
    Af = lambda t: 2 / gamma * (k0 * t + (k1 - k0) * t * t / (2 * tau))  # noqa: E731
    s = lambda t: math.exp(-Af(t)) * (kT / k0 + 2 * kT / gamma * integrate.quad(lambda u: math.exp(Af(u)), 0, t, epsrel=1e-13)[0])  # noqa: E731
    ref = (k1 - k0) / (2 * tau) * integrate.quad(s, 0, tau, epsrel=1e-12)[0]
    assert A.stiffness_ramp_mean_work(k0, k1, tau, gamma, kT) == pytest.approx(ref, rel=1e-8)


def test_jarzynski_and_bar_on_gaussian_work():
    """Stochastic (seeds 13, 14): Gaussian work obeying Crooks, W_F ~ N(dF + s^2/2kT, s^2),
    W_R ~ N(-dF + s^2/2kT, s^2); both estimators recover dF within 5 SE."""
    kT, dF, s = 0.8, 1.7, 1.0
    rng = np.random.default_rng(13)
    wf = rng.normal(dF + s * s / (2 * kT), s, 50_000)
    wr = rng.normal(-dF + s * s / (2 * kT), s, 40_000)
    jz = A.jarzynski_free_energy(wf, kT)
    assert abs(jz.value - dF) < Z * jz.se
    part = wf[:5000]
    boot = A.jarzynski_free_energy(part, kT, se="bootstrap", n_boot=400, seed=14)
    assert boot.value == A.jarzynski_free_energy(part, kT).value
    assert 0.8 < boot.se / A.jarzynski_free_energy(part, kT).se < 1.25
    assert A.jarzynski_free_energy(part, kT, se="bootstrap", n_boot=400, seed=14) == boot  # seeded
    bar = A.bar_free_energy(wf, wr, kT)
    assert abs(bar.value - dF) < Z * bar.se
    assert bar.se < jz.se
    # logsumexp keeps huge works finite
    assert np.isfinite(A.jarzynski_free_energy(np.array([5000.0, 5001.0]), 1.0).value)


def test_jarzynski_on_dragged_trap_work():
    """Stochastic (seed 15): work sampled from the exact dragged-trap law gives dF = 0."""
    mean, var = A.dragged_trap_work(0.5, 2.0, 1.0, 1.0, 1.0)
    w = np.random.default_rng(15).normal(mean, math.sqrt(var), 100_000)
    est = A.jarzynski_free_energy(w, 1.0)
    assert abs(est.value) < Z * est.se


# ----------------------------------------------------------------------------- velocities
def test_maxwell_boltzmann_laws():
    for d in (1, 2, 3):
        assert integrate.quad(lambda r: A.maxwell_speed_pdf(r, 2.0, 1.5, d), 0, np.inf, epsrel=1e-12)[0] == pytest.approx(1.0, rel=1e-10)
        m2 = integrate.quad(lambda r: 2.0 * r * r * A.maxwell_speed_pdf(r, 2.0, 1.5, d), 0, np.inf, epsrel=1e-12)[0]
        assert m2 == pytest.approx(d * 1.5, rel=1e-10)  # <m v^2> = d kT
    v = np.linspace(-3, 3, 7)
    assert np.allclose(A.maxwell_boltzmann_logpdf(v, 2.0, 1.5), stats.norm.logpdf(v, 0, math.sqrt(0.75)))
