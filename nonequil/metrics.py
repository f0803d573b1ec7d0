"""Distances between sample sets and densities, and thermodynamic observables with errors.

Every figure comes back with a standard error where one is meaningful, as an
:class:`Estimate` (``value, se = est``; ``est.to_dict()`` gives ``{"value", "se"}`` for
``compare --json``).  Standard errors assume independent samples unless stated; for
correlated chains use :func:`integrated_autocorrelation_time` and pass an effective size.

Standard-error formulas used here:

* a mean: ``sd / sqrt(n)`` (sample sd, ddof = 1);
* a population / fraction p: binomial ``sqrt(p (1 - p) / n)``;
* a variance s^2: ``sqrt((m4 - s^4) / n)``, m4 the fourth central sample moment;
  covariance ``s_ij``: ``sqrt((m_22 - s_ij^2) / n)``;
* smooth functions of means (Binder cumulant): the delta method;
* Wasserstein-1, sliced W1, energy distance and MMD^2: the linearised (influence-function,
  Hoeffding-projection) SE, ``sqrt(var h(X) / n + var h(Y) / m)``.  It is valid when the two
  laws differ; for identical laws these statistics are degenerate (W1's and sliced W1's
  value then carry a positive bias of order the SE; energy distance and MMD^2 are unbiased
  U-statistics, zero in mean, with a first-order SE that understates their spread).

Pure numpy at import; scipy only inside the functions that need it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Estimate", "KSResult", "HistogramComparison", "PopulationComparison", "Moments",
    "IsingObservables",
    "wasserstein1", "wasserstein1_to_density", "wasserstein1_to_cdf", "sliced_wasserstein",
    "ks_2samp", "ks_1samp", "ks_per_coordinate",
    "histogram_divergence", "histogram_js",
    "basin_populations", "label_populations", "compare_populations",
    "energy_distance", "mmd_rbf",
    "mean_estimate", "log_likelihood", "sample_moments", "moment_z_scores",
    "equipartition", "kinetic_temperature",
    "ising_observables", "binder_cumulant",
    "integrated_autocorrelation_time", "autocorr_mean",
]


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error (scalars or equal-shape arrays)."""

    value: object
    se: object

    def __iter__(self):
        yield self.value
        yield self.se

    def z(self, reference):
        """``(value - reference) / se``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.asarray(self.value) - reference) / np.asarray(self.se)

    def to_dict(self):
        conv = lambda v: v.tolist() if isinstance(v, np.ndarray) else float(v)  # noqa: E731
        return {"value": conv(self.value), "se": conv(self.se)}


def _flat(x, name="x"):
    x = np.asarray(x, dtype=float).ravel()
    if x.size < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.size}")
    return x


def _rows(x, name="x"):
    x = np.asarray(x, dtype=float)
    x = x[:, None] if x.ndim == 1 else x.reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {len(x)}")
    return x


def mean_estimate(x):
    """Mean over axis 0 with SE ``sd / sqrt(n)``."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    return Estimate(x.mean(0), x.std(0, ddof=1) / math.sqrt(n))


# ----------------------------------------------------------------------------------------
# Wasserstein-1
# ----------------------------------------------------------------------------------------
def _w1_two_sample(x, y):
    """Exact 1-D W1 = int |F_n - G_m| dt, and the influence values H(x_i), H(y_j) with
    ``H(z) = int_z^inf sign(F_n - G_m) dt``."""
    xs, ys = np.sort(x), np.sort(y)
    t = np.sort(np.concatenate([xs, ys]))
    dt = np.diff(t)
    d = np.searchsorted(xs, t[:-1], "right") / xs.size - np.searchsorted(ys, t[:-1], "right") / ys.size
    value = float(np.dot(np.abs(d), dt))
    H = np.concatenate([np.cumsum((np.sign(d) * dt)[::-1])[::-1], [0.0]])
    return value, H[np.searchsorted(t, x)], H[np.searchsorted(t, y)]


def _influence_se(hx, hy=None):
    v = hx.var(ddof=1) / hx.size
    if hy is not None:
        v += hy.var(ddof=1) / hy.size
    return float(math.sqrt(max(v, 0.0)))


def wasserstein1(x, y):
    """Exact 1-D Wasserstein-1 distance between two sample sets (data units), computed from
    the sorted empirical CDFs, ``int |F_n(t) - G_m(t)| dt``; O((n+m) log(n+m)).  Same value
    as ``scipy.stats.wasserstein_distance``.  SE: influence function (module docstring)."""
    x, y = _flat(x), _flat(y, "y")
    value, hx, hy = _w1_two_sample(x, y)
    return Estimate(value, _influence_se(hx, hy))


def _w1_against(x, t, F):
    """W1 of samples x against a CDF known at sorted points t (covering x), linear between."""
    n = x.size
    Fn = np.searchsorted(np.sort(x), t[:-1], "right") / n
    a, b = Fn - F[:-1], Fn - F[1:]
    dt = np.diff(t)
    same = a * b >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (a * a + b * b) / (2.0 * (np.abs(a) + np.abs(b)))
    seg = np.where(same, 0.5 * (np.abs(a) + np.abs(b)), np.nan_to_num(cross)) * dt
    H = np.concatenate([np.cumsum((np.sign(a + b) * dt)[::-1])[::-1], [0.0]])
    return Estimate(float(seg.sum()), _influence_se(H[np.searchsorted(t, x)]))


def wasserstein1_to_density(x, grid, density):
    """W1 between samples and a density tabulated on a sorted ``grid`` (data units):
    ``int |F_n - F| dt``, F the trapezoid CDF of ``density`` (normalised here, so the grid
    must cover the support).  Between the merged grid and sample points F_n is constant and
    F linear, and the integral of |F_n - F| is exact there.  SE: influence function."""
    from scipy.integrate import cumulative_trapezoid

    x = _flat(x)
    grid, density = np.asarray(grid, float), np.asarray(density, float)
    F = cumulative_trapezoid(density, grid, initial=0.0)
    F /= F[-1]
    t = np.unique(np.concatenate([grid, x]))
    return _w1_against(x, t, np.interp(t, grid, F, left=0.0, right=1.0))


def wasserstein1_to_cdf(x, cdf, grid):
    """W1 between samples and an exact vectorised ``cdf``, integrated over the sample points
    merged with ``grid`` (which should cover the support finely); see
    :func:`wasserstein1_to_density`."""
    x = _flat(x)
    t = np.unique(np.concatenate([np.asarray(grid, float), x]))
    return _w1_against(x, t, np.asarray(cdf(t), float))


def sliced_wasserstein(x, y, n_projections=128, seed=0):
    """Sliced W1 for D >= 1: the mean over ``n_projections`` fixed unit directions (drawn
    from ``numpy.random.default_rng(seed)``, so the statistic is deterministic) of the exact
    1-D W1 of the projections.  SE: influence function of the averaged statistic over the
    samples (the directions are fixed, so they add no error).  Cost O(L (n+m) log(n+m))."""
    x, y = _rows(x), _rows(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    th = np.random.default_rng(seed).standard_normal((n_projections, x.shape[1]))
    th /= np.linalg.norm(th, axis=1, keepdims=True)
    total, hx, hy = 0.0, np.zeros(len(x)), np.zeros(len(y))
    for d in th:
        v, a, b = _w1_two_sample(x @ d, y @ d)
        total += v
        hx += a
        hy += b
    L = n_projections
    return Estimate(total / L, _influence_se(hx / L, hy / L))


# ----------------------------------------------------------------------------------------
# Kolmogorov–Smirnov
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KSResult:
    statistic: float
    pvalue: float


def ks_2samp(x, y):
    """Two-sample KS statistic sup |F_n - G_m| and p-value (``scipy.stats.ks_2samp``)."""
    from scipy import stats

    r = stats.ks_2samp(_flat(x), _flat(y, "y"))
    return KSResult(float(r.statistic), float(r.pvalue))


def ks_1samp(x, cdf):
    """One-sample KS against a vectorised ``cdf`` (``scipy.stats.kstest``)."""
    from scipy import stats

    r = stats.kstest(_flat(x), cdf)
    return KSResult(float(r.statistic), float(r.pvalue))


def ks_per_coordinate(x, y):
    """Two-sample KS for each coordinate of [N, D] sample sets."""
    x, y = _rows(x), _rows(y, "y")
    return [ks_2samp(x[:, i], y[:, i]) for i in range(x.shape[1])]


# ----------------------------------------------------------------------------------------
# Histograms
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HistogramComparison:
    """Samples binned against expected bin probabilities.  ``chi2`` Pearson statistic with
    ``dof`` and ``pvalue``; ``tv`` total variation ``(1/2) sum |q - p|``; ``kl`` the plug-in
    ``KL(q || p) = sum q log(q/p)`` and ``kl_corrected = kl - (B-1)/(2n)`` (its null bias:
    ``2 n KL`` is the G statistic, ~ chi2_{B-1}); ``js`` the Jensen–Shannon divergence (nats)
    and ``js_corrected = js - (B-1)/(8n)``.  B counts bins with expected mass > 0."""

    chi2: float
    dof: int
    pvalue: float
    tv: float
    kl: float
    kl_corrected: float
    js: float
    js_corrected: float


def _kl(p, q):
    m = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _js(p, q):
    m = 0.5 * (p + q)
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def histogram_divergence(x, bins, probs=None, cdf=None):
    """Compare 1-D samples with a law on shared ``bins`` (edges), the law given either as
    bin probabilities ``probs`` [len(bins)-1] or a vectorised ``cdf``.  Samples outside the
    edges and the law's mass outside them form one extra bin.  Pearson's chi-square is
    reliable when every expected count is >= 5; choose the bins so."""
    from scipy.stats import chi2 as chi2_law

    x = _flat(x)
    bins = np.asarray(bins, float)
    if (probs is None) == (cdf is None):
        raise ValueError("give exactly one of probs or cdf")
    p = np.diff(np.asarray(cdf(bins), float)) if cdf is not None else np.asarray(probs, float)
    counts, _ = np.histogram(x, bins)
    n = x.size
    counts = np.append(counts, n - counts.sum())
    p = np.append(p, max(1.0 - p.sum(), 0.0))
    p = p / p.sum()
    keep = (p > 0) | (counts > 0)
    counts, p = counts[keep], p[keep]
    q = counts / n
    B = int(np.count_nonzero(p > 0))
    expected = n * p
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = float(np.sum(np.where(p > 0, (counts - expected) ** 2 / expected, np.inf * (counts > 0))))
    kl = _kl(q, p) if np.all(p[counts > 0] > 0) else math.inf
    js = _js(q, p)
    return HistogramComparison(chi2, B - 1, float(chi2_law.sf(chi2, B - 1)), float(0.5 * np.abs(q - p).sum()),
                               kl, kl - (B - 1) / (2.0 * n), js, js - (B - 1) / (8.0 * n))


def histogram_js(x, y, bins=50):
    """Jensen–Shannon divergence (nats, in [0, log 2]) between the histograms of two 1-D
    sample sets on shared bins (``bins`` edges, or a count over the pooled range; samples
    outside the edges form one extra bin).  B counts the non-empty bins.  The
    value is bias-corrected: the plug-in value minus ``(B-1)(1/n + 1/m)/8``, its mean under
    identical laws (``4 n JS`` is the G statistic for n = m, ~ chi2_{B-1}), so it is ~0
    (and may be slightly negative) for two samples of one law.  ``se`` is the statistic's
    null spread ``sqrt(2(B-1)) (1/n + 1/m)/8``: a value many se above 0 is significant."""
    x, y = _flat(x), _flat(y, "y")
    edges = np.histogram_bin_edges(np.concatenate([x, y]), bins)
    cx, cy = np.histogram(x, edges)[0], np.histogram(y, edges)[0]
    cx, cy = np.append(cx, x.size - cx.sum()), np.append(cy, y.size - cy.sum())  # outside bin
    B = int(np.count_nonzero((cx + cy) > 0))
    js = _js(cx / x.size, cy / y.size)
    scale = (1.0 / x.size + 1.0 / y.size) / 8.0
    return Estimate(js - (B - 1) * scale, math.sqrt(2.0 * (B - 1)) * scale)


# ----------------------------------------------------------------------------------------
# Basin populations
# ----------------------------------------------------------------------------------------
def label_populations(labels, n_basins, n_eff=None):
    """Fractions of integer ``labels`` in 0..n_basins-1, with binomial SE
    ``sqrt(p (1 - p) / n)`` (n = ``n_eff`` for correlated samples, else the count)."""
    labels = np.asarray(labels).ravel()
    if labels.size == 0:
        raise ValueError("no labels")
    p = np.bincount(labels, minlength=n_basins)[:n_basins] / labels.size
    n = labels.size if n_eff is None else n_eff
    return Estimate(p, np.sqrt(p * (1.0 - p) / n))


def basin_populations(x, dividers, n_eff=None):
    """Populations of the basins ``(-inf, d_1), [d_1, d_2), ..., [d_k, inf)`` of 1-D samples,
    the same convention as ``analytic.Boltzmann1D.populations``; binomial SE."""
    d = np.sort(np.atleast_1d(np.asarray(dividers, float)))
    return label_populations(np.searchsorted(d, _flat(x), side="right"), d.size + 1, n_eff)


@dataclass(frozen=True)
class PopulationComparison:
    """``diff`` = observed - exact; ``se`` the binomial SE under the exact law,
    ``sqrt(p (1 - p) / n)``; ``z = diff / se``; ``max_abs_diff``."""

    diff: np.ndarray
    se: np.ndarray
    z: np.ndarray
    max_abs_diff: float


def compare_populations(observed, exact, n):
    """Compare observed populations (an :class:`Estimate` or array) with exact ones, given
    the (effective) sample size ``n``."""
    obs = np.asarray(observed.value if isinstance(observed, Estimate) else observed, float)
    exact = np.asarray(exact, float)
    diff = obs - exact
    se = np.sqrt(exact * (1.0 - exact) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
    return PopulationComparison(diff, se, z, float(np.abs(diff).max()))


# ----------------------------------------------------------------------------------------
# Kernel two-sample statistics (O((n+m)^2 D) time, O(block (n+m)) memory)
# ----------------------------------------------------------------------------------------
def _row_col_sums(a, b, kernel, metric, block=1024):
    """Row and column sums of ``kernel(scipy cdist(a_i, b_j, metric))`` over all pairs,
    in row blocks (cdist forms differences, so no cancellation for close points)."""
    from scipy.spatial.distance import cdist

    rows, cols = np.zeros(len(a)), np.zeros(len(b))
    for s in range(0, len(a), block):
        k = kernel(cdist(a[s:s + block], b, metric))
        rows[s:s + block] = k.sum(1)
        cols += k.sum(0)
    return rows, cols


def _u_stat(x, y, kernel, metric, k0):
    """Unbiased ``E k(X,X') + E k(Y,Y') - 2 E k(X,Y)`` and its Hoeffding-projection SE;
    k0 = kernel at distance 0 (removed from the diagonal)."""
    n, m = len(x), len(y)
    rxx, _ = _row_col_sums(x, x, kernel, metric)
    ryy, _ = _row_col_sums(y, y, kernel, metric)
    rxy, cxy = _row_col_sums(x, y, kernel, metric)
    bx, by = (rxx - k0) / (n - 1), (ryy - k0) / (m - 1)
    ax, ay = rxy / m, cxy / n
    value = bx.mean() + by.mean() - 2.0 * ax.mean()
    return float(value), _influence_se(2.0 * (bx - ax), 2.0 * (by - ay))


def energy_distance(x, y):
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (data units; Szekely & Rizzo) for
    [N, D] or [N] samples, as an unbiased U-statistic (zero in mean for one law; may be
    slightly negative).  Exact pairwise sums, O((n+m)^2 D): fine up to ~10^4 samples."""
    x, y = _rows(x), _rows(y, "y")
    v, se = _u_stat(x, y, np.negative, "euclidean", 0.0)
    return Estimate(v, se)


def mmd_rbf(x, y, bandwidth=None, seed=0, max_median_points=1000):
    """Unbiased MMD^2 with the Gaussian kernel ``k = exp(-|x - y|^2 / (2 h^2))``.  ``h``
    defaults to the median heuristic: the median pairwise distance in the pooled sample
    (at most ``max_median_points`` points, chosen with ``default_rng(seed)``).  Returns
    ``(Estimate of MMD^2, h)``.  Cost O((n+m)^2 D): fine up to ~10^4 samples."""
    x, y = _rows(x), _rows(y, "y")
    if bandwidth is None:
        z = np.concatenate([x, y])
        if len(z) > max_median_points:
            z = z[np.random.default_rng(seed).choice(len(z), max_median_points, replace=False)]
        from scipy.spatial.distance import pdist

        bandwidth = float(np.median(pdist(z)))
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    g = 0.5 / bandwidth ** 2
    v, se = _u_stat(x, y, lambda d2: np.exp(-g * d2), "sqeuclidean", 1.0)
    return Estimate(v, se), bandwidth


# ----------------------------------------------------------------------------------------
# Moments, likelihood, equipartition
# ----------------------------------------------------------------------------------------
def log_likelihood(log_p):
    """Mean log-likelihood (nats per sample) from per-sample ``log p(x_i)``; SE sd/sqrt(n)."""
    return mean_estimate(_flat(log_p, "log_p"))


@dataclass(frozen=True)
class Moments:
    """``mean`` [D] and ``cov`` [D, D] as Estimates (SEs: module docstring)."""

    mean: Estimate
    cov: Estimate


def sample_moments(x):
    """Sample mean and covariance (ddof 1) of [N, D] (or [N]) samples, with SEs."""
    x = _rows(x)
    n = len(x)
    c = x - x.mean(0)
    cov = c.T @ c / (n - 1)
    m22 = (c * c).T @ (c * c) / n
    return Moments(mean_estimate(x), Estimate(cov, np.sqrt(np.maximum(m22 - cov ** 2, 0.0) / n)))


def moment_z_scores(x, mean=None, cov=None):
    """z-scores of the sample mean and covariance against exact values: a dict with keys
    ``mean`` [D] and ``cov`` [D, D] (those given)."""
    m = sample_moments(x)
    out = {}
    if mean is not None:
        out["mean"] = m.mean.z(np.asarray(mean, float).reshape(-1))
    if cov is not None:
        out["cov"] = m.cov.z(np.atleast_2d(np.asarray(cov, float)))
    return out


def equipartition(v, mass=1.0):
    """Per-degree-of-freedom ``<m v^2>`` (energy units; equals kT in equilibrium) from
    velocities [N, ...], with SE ``sd(m v^2) / sqrt(N)``; ``mass`` broadcasts over dofs."""
    v = _rows(v, "v")
    return mean_estimate(np.asarray(mass, float) * v * v)


def kinetic_temperature(v, mass=1.0):
    """kT estimate ``<m v^2>`` averaged over all dofs, SE from the per-sample averages."""
    v = _rows(v, "v")
    return mean_estimate((np.asarray(mass, float) * v * v).mean(1))


# ----------------------------------------------------------------------------------------
# Ising observables
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IsingObservables:
    """Per-spin ``abs_m`` <|m|>, ``energy`` <e> (J = 1), ``binder`` U4 =
    1 - <m^4>/(3 <m^2>^2), and ``specific_heat`` N var(e)/T^2 (None without T)."""

    abs_m: Estimate
    energy: Estimate
    binder: Estimate
    specific_heat: Estimate | None


def binder_cumulant(m):
    """``U4 = 1 - <m^4> / (3 <m^2>^2)`` from per-sample magnetisations, with delta-method SE
    (gradient (-1/(3b^2), 2a/(3b^3)) at a = <m^4>, b = <m^2>)."""
    m = _flat(m, "m")
    a_i, b_i = m ** 4, m ** 2
    a, b = a_i.mean(), b_i.mean()
    if b == 0:
        return Estimate(math.nan, math.nan)  # undefined when every m is 0
    g = np.array([-1.0 / (3.0 * b * b), 2.0 * a / (3.0 * b ** 3)])
    C = np.cov(np.stack([a_i, b_i]))
    return Estimate(float(1.0 - a / (3.0 * b * b)), float(math.sqrt(max(g @ C @ g, 0.0) / m.size)))


def ising_observables(spins, T=None):
    """Observables of Ising configurations ``spins`` [N, L, M] with values +-1 on a periodic
    lattice: ``e = -(1/LM) sum_x s_x (s_{x+e1} + s_{x+e2})``, ``m = (1/LM) sum s_x``.
    Samples are taken as independent (thin to > 2 tau_int first)."""
    s = np.asarray(spins)
    if s.ndim != 3 or len(s) < 2:
        raise ValueError(f"spins must have shape [N, L, M] with N >= 2, got {s.shape}")
    s = s.astype(np.float64)
    ns = s.shape[1] * s.shape[2]
    m = s.mean((1, 2))
    e = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2)) / ns
    heat = None
    if T is not None:
        c = e - e.mean()
        var, m4 = c.var(ddof=1), (c ** 4).mean()
        f = ns / T ** 2
        heat = Estimate(float(f * var), float(f * math.sqrt(max(m4 - var ** 2, 0.0) / e.size)))
    return IsingObservables(mean_estimate(np.abs(m)), mean_estimate(e), binder_cumulant(m), heat)


# ----------------------------------------------------------------------------------------
# Correlated series
# ----------------------------------------------------------------------------------------
def integrated_autocorrelation_time(x, c=5.0):
    """``tau_int = 1 + 2 sum_{t=1}^{W} rho(t)`` (so var(mean) = var(x) tau_int / n), with
    Sokal's automatic window: the smallest W >= c tau_int(W).  FFT autocorrelation."""
    x = _flat(x)
    n = x.size
    f = np.fft.rfft(x - x.mean(), 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    if acf[0] == 0:
        return 1.0
    rho = acf / acf[0]
    tau = 2.0 * np.cumsum(rho) - 1.0
    w = np.arange(n)
    ok = w >= c * tau
    W = int(np.argmax(ok)) if ok.any() else n - 1
    return float(max(tau[W], 1e-12))


def autocorr_mean(x, c=5.0):
    """Mean of a correlated series with SE ``sd sqrt(tau_int / n)``."""
    x = _flat(x)
    tau = integrated_autocorrelation_time(x, c)
    return Estimate(float(x.mean()), float(x.std(ddof=1) * math.sqrt(tau / x.size)))
