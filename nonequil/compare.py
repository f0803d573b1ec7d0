"""Compare a sample set with a reference sample set or with an exact (analytic) law.

This is the library behind ``nonequil compare``.  :func:`compare_samples` returns a flat
dict ``name -> {"value": float | None, "se": float | None}``; ``compare --json`` prints it
as is.  Keys are flat, snake_case and stable: **keys are only ever added, never renamed**.
``value`` is ``None`` (JSON ``null``) where a figure is undefined (for example a free-energy
difference with an empty basin); ``se`` is ``None`` where no standard error applies (exact
values, counts, p-values, settings).  Exact values are separate keys ending in ``_exact``.

Conventions
-----------
* Samples ``[N]`` or ``[N, ...]`` are flattened to ``[N, D]`` (C order); coordinate ``i`` of
  that flat vector is written ``x{i}`` in key names (``x0``, ``x1``, ...).  Per-coordinate
  keys are emitted for the first ``max_coordinates`` coordinates (default 16); summaries
  (``ks_max_statistic``, ``ks_min_pvalue``) run over all of them.
* Standard errors assume independent samples (thin correlated chains first), except the
  Ising observables, whose SE uses the integrated autocorrelation time (``energy_tau_int``).
* Units: distances (W1, energy distance) in data units; MMD^2 dimensionless; JS/KL and
  log-likelihoods in nats; energies and free energies in the units of ``kT`` (of ``T`` for
  Ising, J = 1); log-likelihood of a density per sample, density units 1/length^D.

Keys, ``--reference`` (two sample sets x [n, D] and y [m, D])
------------------------------------------------------------
``n_samples``, ``n_reference``, ``dim``                 counts (se null)
``w1``  (D = 1)                                         exact 1-D Wasserstein-1 (data units),
                                                        influence-function SE
``w1_excess`` (D = 1)                                   ``w1`` minus its chance level, the
                                                        asymptotic null mean
                                                        ``sqrt(2/pi) sqrt(1/n + 1/m) int sqrt(H (1-H)) dt``
                                                        (H the pooled empirical CDF); ~0 for
                                                        one law; se that of ``w1``
``sliced_w1``, ``sliced_w1_excess`` (D > 1)            the same for sliced W1 over
                                                        ``sliced_w1_projections`` fixed
                                                        directions (``default_rng(seed)``)
``sliced_w1_projections`` (D > 1)                       number of directions (se null)
``energy_distance``                                     unbiased U-statistic (data units)
``mmd2_rbf``                                            unbiased MMD^2, Gaussian kernel
                                                        ``exp(-|x - y|^2 / (2 h^2))``
``mmd2_rbf_bandwidth``                                  h, the median heuristic (median
                                                        pooled pairwise distance, of the
                                                        non-zero ones if that is 0; se null)
``pairwise_n_samples``, ``pairwise_n_reference``       points used by the two O(n^2)
                                                        statistics (at most ``max_pairwise``
                                                        each, drawn with ``default_rng(seed)``)
``w1_x{i}``                                             marginal W1 of coordinate i
                                                        (raw: biased up at chance level)
``ks_statistic_x{i}``, ``ks_pvalue_x{i}``              two-sample KS (se null)
``ks_max_statistic``, ``ks_min_pvalue``                 over all coordinates (se null)
``js_histogram_x{i}``                                   histogram JS (nats) on ``bins`` shared
                                                        bins, bias-corrected: minus its null
                                                        mean ``(B-1)(1/n + 1/m)/8``; se its null
                                                        spread (``metrics.histogram_js``)
``mean_x{i}``, ``mean_x{i}_reference``, ``mean_x{i}_diff``   means and difference, with SEs
``var_x{i}``, ``var_x{i}_reference``, ``var_x{i}_diff``      variances (ddof 1), with SEs
Ising-like data (both ``[N, L, M]`` of +-1):
``energy_per_spin``, ``abs_magnetization_per_spin`` and their ``_reference`` and ``_diff``.

SEs of ``energy_distance`` and ``mmd2_rbf``: ``sqrt(max(se_1^2 - se_0^2, se_0^2))``.  se_1 is
the plug-in first-order (Hoeffding projection) SE of ``nonequil.metrics``, valid when the
laws differ; its square also holds about twice the second-order (degenerate) variance
``se_0^2 = E k~^2 [2/(n(n-1)) + 2/(m(m-1)) + 4/(nm)]``, which dominates when the laws agree
(k~ the doubly centred kernel, ``-|x - y|`` for the energy distance, estimated on the
pooled sample).  Both statistics are zero in mean for one law, so ``value / se`` is a
z-score under either hypothesis (checked by replication: the SE is within ~10 % of the
spread for shifted laws and ~25 % above it, conservative, for one law).
W1 and sliced W1 are positive at chance level; test ``*_excess`` against 0 instead.

Keys, ``--analytic NAME`` (samples x against an exact law)
---------------------------------------------------------
``n_samples``, ``dim``                                  counts
``w1``, ``w1_excess`` (1-D laws)                        W1 to the exact CDF (data units);
                                                        chance level
                                                        ``sqrt(2/(pi n)) int sqrt(F (1-F)) dt``
``w1_x{i}``                                             W1 of the marginal of coordinate i
``ks_statistic_x{i}``, ``ks_pvalue_x{i}``              one-sample KS against the marginal
``ks_max_statistic``, ``ks_min_pvalue``                 over all coordinates
``js_histogram_x{i}``, ``kl_histogram_x{i}``           histogram JS / KL(q || p) (nats) on
                                                        equal-probability bins of the exact
                                                        marginal; bias-corrected by their null
                                                        means ``(B-1)/(8n)`` and ``(B-1)/(2n)``;
                                                        se their null spreads
                                                        ``sqrt(2(B-1))/(8n)``, ``sqrt(2(B-1))/(2n)``
``chi2_pvalue_x{i}``                                    Pearson chi-square p-value on those bins
``mean_x{i}``, ``mean_x{i}_exact``, ``var_x{i}``, ``var_x{i}_exact``   moments vs exact
``log_likelihood``                                      mean log p(x) of the samples under the
                                                        exact law (nats per sample), SE sd/sqrt n
``log_likelihood_exact``                                its exact expectation, ``-S`` (minus
                                                        the differential entropy; Monte Carlo
                                                        with an SE for a Gaussian mixture)
``mean_energy``, ``mean_energy_exact``                  <U> (double-well, harmonic,
                                                        muller-brown, harmonic-chain)
``pop_basin_{j}``, ``pop_basin_{j}_exact``             basin populations (binomial SE) and
                                                        exact ones (double-well: basins left /
                                                        right of the barrier top on x0;
                                                        muller-brown: 0 = A, 1 = B, 2 = C, the
                                                        steepest-descent basins)
``pop_max_abs_diff``                                    max_j |pop - exact| (se null)
``delta_f_basin_0_{j}``, ``delta_f_basin_0_{j}_exact``  ``F_j - F_0 = -kT log(P_j / P_0)`` from
                                                        the sample populations (delta-method SE
                                                        ``kT sqrt(1/(n P_0) + 1/(n P_j))``) and
                                                        exact
Ising (``--analytic ising``, samples ``[N, L, L]`` of +-1):
``energy_per_spin`` (tau_int SE), ``energy_per_spin_exact`` (Kaufman, L x L torus),
``energy_per_spin_onsager`` (infinite lattice), ``energy_tau_int``,
``abs_magnetization_per_spin`` (tau_int SE), ``abs_magnetization_per_spin_onsager``,
``specific_heat_per_spin`` and ``_exact`` (Kaufman), ``binder_cumulant``, and
``log_likelihood`` / ``log_likelihood_exact`` under the exact Boltzmann law.

Keys, ``--reweight`` (samples with per-sample log-densities ``/log_proposal``)
---------------------------------------------------------------------------
``reweight_*``: importance weights ``exp(-U/kT) / q`` towards the exact law, with the
free energy, effective sample size and self-normalised observables against their exact
values; see :func:`nonequil.reweight.reweight_to_analytic`.

Analytic laws and their parameters (defaults in brackets)
---------------------------------------------------------
``double-well``: ``a`` [1], ``b`` [0], ``kT`` [1], ``k_perp`` [1]: ``U = a (x0^2 - 1)^2 + b x0
+ k_perp/2 sum_{d>0} x_d^2``, law ``exp(-U/kT)/Z`` (1-D by quadrature).
``harmonic``: ``k`` [1], ``center`` [0], ``kT`` [1]: ``U = k/2 [(x0 - center)^2 + sum_{d>0}
x_d^2]``.
``muller-brown``: ``scale`` [0.1], ``kT`` [1] (2-D grid quadrature), samples ``[N, 2]``.
``gaussian-mixture``: ``weights`` [0.5,0.5], ``means`` [-1,1] (K values on x0, or K*D
row-major), ``sigmas`` [0.5,0.5] (isotropic).
``harmonic-chain``: ``particles`` [D], ``k`` [1], ``k0`` [0], ``ends`` [fixed | periodic],
``kT`` [1].
``ising``: ``L`` [from the samples], ``T`` (required).

Pure numpy at import; scipy inside the functions (via ``nonequil.metrics`` /
``nonequil.analytic``).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .errors import InputError

__all__ = ["compare_samples", "compare_to_reference", "compare_to_analytic", "ANALYTIC_LAWS",
           "analytic_defaults"]

#: analytic law name -> (parameter keys, defaults); a default of None means "from the data"
#: (or required, for ising's T)
ANALYTIC_LAWS = {
    "double-well": ("a", "b", "kT", "k_perp"),
    "harmonic": ("k", "center", "kT"),
    "muller-brown": ("scale", "kT"),
    "gaussian-mixture": ("weights", "means", "sigmas"),
    "harmonic-chain": ("particles", "k", "k0", "ends", "kT"),
    "ising": ("L", "T"),
}

_DEFAULTS = {
    "double-well": {"a": 1.0, "b": 0.0, "kT": 1.0, "k_perp": 1.0},
    "harmonic": {"k": 1.0, "center": 0.0, "kT": 1.0},
    "muller-brown": {"scale": 0.1, "kT": 1.0},
    "gaussian-mixture": {"weights": [0.5, 0.5], "means": [-1.0, 1.0], "sigmas": [0.5, 0.5]},
    "harmonic-chain": {"particles": None, "k": 1.0, "k0": 0.0, "ends": "fixed", "kT": 1.0},
    "ising": {"L": None, "T": None},
}
_LIST_KEYS = {"weights", "means", "sigmas"}
_POSITIVE = {"double-well": ("a", "kT"), "harmonic": ("k", "kT"), "muller-brown": ("scale", "kT"),
             "harmonic-chain": ("kT",), "ising": ("T",)}
_STRING_KEYS = {"ends"}


def analytic_defaults(name):
    """The default parameters of analytic law ``name`` (a copy)."""
    _check_name(name)
    return dict(_DEFAULTS[name])


def _check_name(name):
    if name not in ANALYTIC_LAWS:
        raise InputError(f"unknown analytic law {name!r}; valid: {', '.join(ANALYTIC_LAWS)}")


# ----------------------------------------------------------------------------------------
# entries
# ----------------------------------------------------------------------------------------
def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _put(out, key, value, se=None):
    out[key] = {"value": _num(value), "se": _num(se)}


def _rows(x):
    x = np.asarray(x)
    if x.ndim == 0:
        raise InputError("samples must have shape [N] or [N, ...], got a scalar")
    return np.asarray(x.reshape(len(x), -1), dtype=np.float64)


def _is_spins(a):
    a = np.asarray(a)
    return a.ndim == 3 and a.size > 0 and bool(np.all(np.abs(a) == 1))


# ----------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------
def compare_samples(x, reference=None, analytic=None, params=None, *, seed=0,
                    n_projections=64, max_pairwise=2000, max_coordinates=16, bins=50):
    """Compare samples ``x`` [N, ...] with ``reference`` samples [M, ...] (the same
    per-sample shape) or with the exact law named ``analytic`` (parameters ``params``, a
    dict of numbers, lists, or strings for ``ends``).  Give exactly one of the two.

    Returns a flat dict ``key -> {"value", "se"}`` (see the module docstring for the keys).
    Bad input raises :class:`nonequil.errors.InputError`.
    """
    if (reference is None) == (analytic is None):
        raise InputError("give exactly one of reference (samples) or analytic (a law name)")
    if reference is not None:
        if params:
            raise InputError("parameters apply to an analytic law only, not to reference samples")
        return compare_to_reference(x, reference, seed=seed, n_projections=n_projections,
                                    max_pairwise=max_pairwise,
                                    max_coordinates=max_coordinates, bins=bins)
    return compare_to_analytic(x, analytic, params, seed=seed,
                               max_coordinates=max_coordinates)


# ----------------------------------------------------------------------------------------
# two sample sets
# ----------------------------------------------------------------------------------------
def _w1_null_mean(z_sorted, scale):
    """``sqrt(2/pi) * scale * int sqrt(H (1-H)) dt`` for the empirical CDF H of sorted z:
    the asymptotic mean of W1 at chance level (sqrt(n)(F_n - F) -> B(F); E|N(0, s^2)| =
    s sqrt(2/pi)); ``scale`` = sqrt(1/n + 1/m), or sqrt(1/n) against an exact law."""
    N = z_sorted.size
    H = np.arange(1, N) / N
    return math.sqrt(2.0 / math.pi) * scale * float(np.dot(np.sqrt(H * (1.0 - H)), np.diff(z_sorted)))


def _directions(D, n_projections, seed):
    """The directions of ``metrics.sliced_wasserstein(..., n_projections, seed)``."""
    th = np.random.default_rng(seed).standard_normal((n_projections, D))
    return th / np.linalg.norm(th, axis=1, keepdims=True)


def _centered_sq_mean(z, kernel, metric, block=1024):
    """Mean over off-diagonal pairs of the squared doubly centred kernel on the pooled z."""
    from scipy.spatial.distance import cdist

    N = len(z)
    r = np.empty(N)
    for s in range(0, N, block):
        r[s:s + block] = kernel(cdist(z[s:s + block], z, metric)).mean(1)
    rbar = r.mean()
    tot = diag = 0.0
    for s in range(0, N, block):
        k = kernel(cdist(z[s:s + block], z, metric))
        k -= r[s:s + block, None]
        k -= r[None, :]
        k += rbar
        tot += float(np.sum(k * k))
        i = np.arange(k.shape[0])
        diag += float(np.sum(k[i, s + i] ** 2))
    return (tot - diag) / (N * (N - 1))


def _null_se(z, n, m, kernel, metric):
    ek2 = _centered_sq_mean(z, kernel, metric)
    return math.sqrt(max(ek2, 0.0) * (2.0 / (n * (n - 1)) + 2.0 / (m * (m - 1)) + 4.0 / (n * m)))


def _total_se(se_plugin, se0):
    """SE of a two-sample U-statistic: ``sqrt(max(se_1^2 - se_0^2, se_0^2))``.  The plug-in
    first-order variance (``metrics``) estimates ``var_1 + 2 var_0`` (each influence value
    carries the degenerate term's noise), the statistic's variance is ``var_1 + var_0``."""
    return math.sqrt(max(se_plugin ** 2 - se0 ** 2, se0 ** 2))


def _median_bandwidth(x, y, seed, max_points=1000):
    """The median heuristic of ``metrics.mmd_rbf`` (median pooled pairwise distance over at
    most ``max_points`` points from ``default_rng(seed)``), falling back to the median of
    the non-zero distances for discrete data, and to 1 when all points coincide."""
    from scipy.spatial.distance import pdist

    z = np.concatenate([x, y])
    if len(z) > max_points:
        z = z[np.random.default_rng(seed).choice(len(z), max_points, replace=False)]
    d = pdist(z)
    h = float(np.median(d))
    if not h > 0:
        d = d[d > 0]
        h = float(np.median(d)) if d.size else 1.0
    return h


def _subsample(a, k, rng):
    if len(a) <= k:
        return a
    return a[np.sort(rng.choice(len(a), k, replace=False))]


def _moments(x):
    """Per-coordinate mean and variance (ddof 1) Estimates with SEs (metrics formulas)."""
    from .metrics import Estimate

    n = len(x)
    mean = x.mean(0)
    c = x - mean
    var = (c * c).sum(0) / (n - 1)
    m4 = (c ** 4).mean(0)
    return (Estimate(mean, x.std(0, ddof=1) / math.sqrt(n)),
            Estimate(var, np.sqrt(np.maximum(m4 - var ** 2, 0.0) / n)))


def _ising_series(spins):
    """Per-sample energy per spin and magnetisation per spin (J = 1, periodic)."""
    s = np.asarray(spins, dtype=np.float64)
    ns = s.shape[1] * s.shape[2]
    e = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2)) / ns
    return e, s.mean((1, 2))


def _tau_mean(v):
    """Mean with SE ``sd sqrt(max(tau_int, 1) / n)``, and tau_int."""
    from .metrics import integrated_autocorrelation_time

    tau = integrated_autocorrelation_time(v) if np.ptp(v) > 0 else 1.0
    return float(v.mean()), float(v.std(ddof=1) * math.sqrt(max(tau, 1.0) / v.size)), tau


def _same_shape(xs, ys):
    a, b = tuple(xs[1:]), tuple(ys[1:])
    return a == b or (a in ((), (1,)) and b in ((), (1,)))


def compare_to_reference(x, y, *, seed=0, n_projections=64, max_pairwise=2000,
                         max_coordinates=16, bins=50):
    """Two-sample comparison (keys: module docstring, ``--reference``)."""
    from . import metrics as M

    xa, ya = np.asarray(x), np.asarray(y)
    if not _same_shape(xa.shape, ya.shape):
        raise InputError(f"samples have shape {xa.shape} and the reference {ya.shape}: the "
                         "per-sample shapes must match")
    X, Y = _rows(xa), _rows(ya)
    n, m, D = len(X), len(Y), X.shape[1]
    if n < 2 or m < 2:
        raise InputError(f"need at least 2 samples and 2 reference samples, got {n} and {m}")
    out = {}
    _put(out, "n_samples", n)
    _put(out, "n_reference", m)
    _put(out, "dim", D)
    scale = math.sqrt(1.0 / n + 1.0 / m)
    if D == 1:
        w = M.wasserstein1(X[:, 0], Y[:, 0])
        null = _w1_null_mean(np.sort(np.concatenate([X[:, 0], Y[:, 0]])), scale)
        _put(out, "w1", w.value, w.se)
        _put(out, "w1_excess", w.value - null, w.se)
    else:
        w = M.sliced_wasserstein(X, Y, n_projections=n_projections, seed=seed)
        null = np.mean([_w1_null_mean(np.sort(np.concatenate([X @ d, Y @ d])), scale)
                        for d in _directions(D, n_projections, seed)])
        _put(out, "sliced_w1", w.value, w.se)
        _put(out, "sliced_w1_excess", w.value - null, w.se)
        _put(out, "sliced_w1_projections", n_projections)

    rng = np.random.default_rng(seed)
    Xs, Ys = _subsample(X, max_pairwise, rng), _subsample(Y, max_pairwise, rng)
    ns, ms = len(Xs), len(Ys)
    Z = np.concatenate([Xs, Ys])
    ed = M.energy_distance(Xs, Ys)
    se0 = _null_se(Z, ns, ms, np.negative, "euclidean")
    _put(out, "energy_distance", ed.value, _total_se(ed.se, se0))
    mmd, h = M.mmd_rbf(Xs, Ys, bandwidth=_median_bandwidth(Xs, Ys, seed), seed=seed)
    g = 0.5 / h ** 2
    se0 = _null_se(Z, ns, ms, lambda d2: np.exp(-g * d2), "sqeuclidean")
    _put(out, "mmd2_rbf", mmd.value, _total_se(mmd.se, se0))
    _put(out, "mmd2_rbf_bandwidth", h)
    _put(out, "pairwise_n_samples", ns)
    _put(out, "pairwise_n_reference", ms)

    ks = [M.ks_2samp(X[:, i], Y[:, i]) for i in range(D)]
    _put(out, "ks_max_statistic", max(r.statistic for r in ks))
    _put(out, "ks_min_pvalue", min(r.pvalue for r in ks))
    mx, vx = _moments(X)
    my, vy = _moments(Y)
    for i in range(min(D, max_coordinates)):
        c = f"x{i}"
        w = M.wasserstein1(X[:, i], Y[:, i])
        _put(out, f"w1_{c}", w.value, w.se)
        _put(out, f"ks_statistic_{c}", ks[i].statistic)
        _put(out, f"ks_pvalue_{c}", ks[i].pvalue)
        js = M.histogram_js(X[:, i], Y[:, i], bins=bins)
        _put(out, f"js_histogram_{c}", js.value, js.se)
        for name, a, b in (("mean", mx, my), ("var", vx, vy)):
            _put(out, f"{name}_{c}", a.value[i], a.se[i])
            _put(out, f"{name}_{c}_reference", b.value[i], b.se[i])
            _put(out, f"{name}_{c}_diff", a.value[i] - b.value[i], math.hypot(a.se[i], b.se[i]))

    if _is_spins(xa) and _is_spins(ya):
        ex, mxs = _ising_series(xa)
        ey, mys = _ising_series(ya)
        for key, a, b in (("energy_per_spin", ex, ey),
                          ("abs_magnetization_per_spin", np.abs(mxs), np.abs(mys))):
            va, sa, _ = _tau_mean(a)
            vb, sb, _ = _tau_mean(b)
            _put(out, key, va, sa)
            _put(out, f"{key}_reference", vb, sb)
            _put(out, f"{key}_diff", va - vb, math.hypot(sa, sb))
    return out


# ----------------------------------------------------------------------------------------
# exact laws
# ----------------------------------------------------------------------------------------
class _Marginal:
    """A 1-D law: vectorised ``cdf``, a ``grid`` covering its support finely, ``ppf`` (by
    interpolation on the grid unless given), ``mean``, ``var``."""

    def __init__(self, cdf, grid, mean, var, ppf=None):
        self.cdf, self.grid, self.mean, self.var = cdf, np.asarray(grid, float), mean, var
        self._ppf = ppf

    def ppf(self, u):
        if self._ppf is not None:
            return self._ppf(u)
        F = self.cdf(self.grid)
        keep = np.concatenate([[True], np.diff(F) > 0])  # np.interp needs increasing F
        return np.interp(u, F[keep], self.grid[keep])


def _gauss_marginal(mu, sd):
    from scipy.special import ndtr, ndtri

    return _Marginal(lambda t: ndtr((np.asarray(t, float) - mu) / sd),
                     np.linspace(mu - 12 * sd, mu + 12 * sd, 20001), mu, sd * sd,
                     ppf=lambda u: mu + sd * ndtri(u))


def _trapz(y, x):
    from scipy.integrate import trapezoid  # np.trapezoid needs numpy >= 2

    return trapezoid(y, x)


def _tabulated_marginal(grid, density):
    from scipy.integrate import cumulative_trapezoid

    F = cumulative_trapezoid(density, grid, initial=0.0)
    Z = F[-1]
    F /= Z
    p = density / Z
    mean = float(_trapz(grid * p, grid))
    var = float(_trapz((grid - mean) ** 2 * p, grid))
    return _Marginal(lambda t: np.interp(t, grid, F, left=0.0, right=1.0), grid, mean, var)


class _Law:
    """What the comparison needs from an exact law."""

    def __init__(self, name, kT=1.0):
        self.name, self.kT = name, kT
        self.marginals = []          # per flattened coordinate
        self.log_prob = None         # x [N, D] -> [N]
        self.neg_entropy = None      # (value, se)
        self.energy = None           # x [N, D] -> [N]
        self.mean_energy = None
        self.labels = None           # x [N, D] -> int basin labels
        self.populations = None      # exact, [B]


def _scalar(name, key, v):
    if isinstance(v, tuple):
        raise InputError(f"--set {key}={v[0]:g}:{v[1]:g}: analytic law {name} takes a single "
                         "value; a protocol start:end does not apply to compare")
    if isinstance(v, (list, np.ndarray)):
        if len(v) != 1:
            raise InputError(f"--set {key}: analytic law {name} takes one number, got {len(v)}")
        v = v[0]
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InputError(f"--set {key}={v}: expected a number") from None
    return float(v)


def _resolve(name, params):
    _check_name(name)
    params = dict(params or {})
    keys = ANALYTIC_LAWS[name]
    bad = [k for k in params if k not in keys]
    if bad:
        raise InputError(f"unknown --set key {bad[0]!r} for analytic law {name}; valid: "
                         f"{', '.join(keys)}")
    p = dict(_DEFAULTS[name])
    for k, v in params.items():
        if k in _STRING_KEYS:
            v = str(v).strip()
        elif k in _LIST_KEYS:
            if isinstance(v, tuple):
                raise InputError(f"--set {k}: a protocol start:end does not apply to compare")
            v = [float(t) for t in np.atleast_1d(np.asarray(v, dtype=float))]
        else:
            v = _scalar(name, k, v)
        p[k] = v
    if "ends" in keys and p["ends"] not in ("fixed", "periodic"):
        raise InputError(f"--set ends={p['ends']}: expected fixed or periodic")
    if p.get("particles") is not None and not (p["particles"] == int(p["particles"]) >= 1):
        raise InputError(f"--set particles={p['particles']:g}: expected a positive integer")
    if name == "gaussian-mixture":
        K, S = len(p["weights"]), len(p["sigmas"])
        if S != K:
            raise InputError(f"--set sigmas: gaussian-mixture has {K} weights but {S} sigmas; "
                             "give one sigma per component")
        if min(p["weights"]) <= 0 or min(p["sigmas"]) <= 0:
            raise InputError("--set weights/sigmas: gaussian-mixture weights and sigmas must "
                             "be > 0")
    for k in _POSITIVE.get(name, ()):
        if p.get(k) is not None and not p[k] > 0:
            raise InputError(f"--set {k}={p[k]:g}: {k} must be > 0 for analytic law {name}")
    return p


@functools.lru_cache(maxsize=4)
def _mb_law(kT, scale):
    from .analytic import muller_brown_boltzmann

    return muller_brown_boltzmann(kT=kT, scale=scale)


def _build_law(name, p, shape):
    """The exact law for samples of per-sample ``shape`` (``()`` for 1-D)."""
    from . import analytic as A

    D = int(np.prod(shape)) if shape else 1
    flat = f"[N, {D}]" if shape else "[N]"
    if name == "double-well":
        a, b, kT, kp = p["a"], p["b"], p["kT"], p["k_perp"]
        if D > 1 and not kp > 0:
            raise InputError(f"--set k_perp={kp:g}: must be > 0 for samples with {D} coordinates")
        B = A.double_well_boltzmann(a=a, b=b, kT=kT)
        law = _Law(name, kT)
        mean1 = B.expect(lambda t: t)
        law.marginals = [_Marginal(B.cdf, B.x, mean1, B.expect(lambda t: (t - mean1) ** 2),
                                   ppf=B.inverse_cdf)]
        sd = math.sqrt(kT / kp) if D > 1 else 1.0
        law.marginals += [_gauss_marginal(0.0, sd) for _ in range(D - 1)]

        def energy(x):
            return A.double_well_energy(x[:, 0], a, b) + 0.5 * kp * np.sum(x[:, 1:] ** 2, 1)

        perp = 0.5 * (D - 1) * math.log(2.0 * math.pi * kT / kp) if D > 1 else 0.0
        log_z = B.log_z + perp
        law.energy = energy
        law.log_prob = lambda x: -energy(x) / kT - log_z
        law.mean_energy = B.mean_energy + 0.5 * (D - 1) * kT
        law.neg_entropy = (-(B.entropy + (0.5 * (D - 1) + perp)), None)
        pts = A.double_well_stationary_points(a, b)
        if pts.size == 3:
            law.labels = lambda x: (x[:, 0] >= pts[1]).astype(np.int64)
            law.populations = B.populations([pts[1]])
        return law
    if name == "harmonic":
        k, c, kT = p["k"], p["center"], p["kT"]
        sd = math.sqrt(kT / k)
        law = _Law(name, kT)
        law.marginals = [_gauss_marginal(c if i == 0 else 0.0, sd) for i in range(D)]
        shift = np.zeros(D)
        shift[0] = c

        def energy(x):
            return 0.5 * k * np.sum((x - shift) ** 2, 1)

        log_z = A.harmonic_log_z(k, kT, D)
        law.energy = energy
        law.log_prob = lambda x: -energy(x) / kT - log_z
        law.mean_energy = 0.5 * D * kT
        law.neg_entropy = (-(0.5 * D + log_z), None)
        return law
    if name == "muller-brown":
        if D != 2 or len(shape) != 1:
            raise InputError(f"analytic law muller-brown needs samples of shape [N, 2], got "
                             f"per-sample shape {tuple(shape)}")
        scale, kT = p["scale"], p["kT"]
        B = _mb_law(kT, scale)
        law = _Law(name, kT)
        wy = np.full(B.y.size, B.y[1] - B.y[0])
        wy[[0, -1]] *= 0.5
        wx = np.full(B.x.size, B.x[1] - B.x[0])
        wx[[0, -1]] *= 0.5
        law.marginals = [_tabulated_marginal(B.x, B.density @ wy),
                         _tabulated_marginal(B.y, wx @ B.density)]
        law.energy = lambda x: A.muller_brown_energy(x, scale)
        law.log_prob = lambda x: -A.muller_brown_energy(x, scale) / kT - B.log_z
        law.mean_energy = B.mean_energy
        law.neg_entropy = (-B.entropy, None)
        law.labels = lambda x: A.muller_brown_basin(x).astype(np.int64)
        law.populations = np.asarray(B.populations, float)
        return law
    if name == "gaussian-mixture":
        w, mu, s = (np.asarray(p[k], float) for k in ("weights", "means", "sigmas"))
        K = w.size
        if s.size != K:
            raise InputError(f"gaussian-mixture: {K} weights but {s.size} sigmas; give one "
                             "sigma per component")
        if np.any(w <= 0) or np.any(s <= 0):
            raise InputError("gaussian-mixture: weights and sigmas must be > 0")
        if mu.size == K:
            means = np.zeros((K, D))
            means[:, 0] = mu
        elif mu.size == K * D:
            means = mu.reshape(K, D)
        else:
            raise InputError(f"gaussian-mixture: means needs {K} values (on x0) or {K * D} "
                             f"(K x D) for samples {flat}, got {mu.size}")
        G = A.GaussianMixture(w, means, s ** 2)
        law = _Law(name)
        for i in range(D):
            Gi = A.GaussianMixture(w, means[:, i], s ** 2)
            lo, hi = float(np.min(means[:, i] - 12 * s)), float(np.max(means[:, i] + 12 * s))
            law.marginals.append(_Marginal(Gi.cdf, np.linspace(lo, hi, 40001),
                                           float(Gi.mean()[0]), float(Gi.cov()[0, 0])))
        law.log_prob = lambda x: G.log_prob(x)
        law.neg_entropy = None  # set by the caller (Monte Carlo, needs the seed)
        law.mixture = G
        return law
    if name == "harmonic-chain":
        P = D if p["particles"] is None else p["particles"]
        if P != int(P) or P < 1:
            raise InputError(f"--set particles={P:g}: expected a positive integer")
        if int(P) != D or len(shape) > 1:
            raise InputError(f"analytic law harmonic-chain with particles={int(P)} needs "
                             f"samples of shape [N, {int(P)}], got per-sample shape "
                             f"{tuple(shape)}")
        if p["ends"] not in ("fixed", "periodic"):
            raise InputError(f"--set ends={p['ends']}: expected fixed or periodic")
        try:
            C = A.HarmonicChain(int(P), k=p["k"], k0=p["k0"], ends=p["ends"], kT=p["kT"])
        except ValueError as e:
            raise InputError(f"analytic law harmonic-chain: {e}") from None
        cov = C.covariance()
        law = _Law(name, p["kT"])
        law.marginals = [_gauss_marginal(0.0, math.sqrt(cov[i, i])) for i in range(D)]
        law.energy = C.energy
        law.log_prob = C.log_prob
        law.mean_energy = C.mean_energy()
        law.neg_entropy = (-C.entropy(), None)
        return law
    raise AssertionError(name)


# ----------------------------------------------------------------------------------------
# against an exact law
# ----------------------------------------------------------------------------------------
def _histogram_bins(marg, n):
    """Equal-probability bin edges of the exact marginal with >= ~20 expected per bin."""
    B = int(np.clip(n // 20, 5, 50))
    inner = marg.ppf(np.arange(1, B) / B)
    return np.unique(np.concatenate([[marg.grid[0]], inner, [marg.grid[-1]]]))


def compare_to_analytic(x, name, params=None, *, seed=0, max_coordinates=16):
    """Samples against the exact law ``name`` (keys: module docstring, ``--analytic``)."""
    from . import metrics as M

    p = _resolve(name, params)
    xa = np.asarray(x)
    if xa.ndim == 0 or len(xa) < 2:
        raise InputError(f"need at least 2 samples, got shape {xa.shape}")
    if name == "ising":
        return _compare_ising(xa, p)
    shape = xa.shape[1:]
    if shape == (1,):
        shape = ()
    X = _rows(xa)
    n, D = X.shape
    law = _build_law(name, p, shape)
    out = {}
    _put(out, "n_samples", n)
    _put(out, "dim", D)

    ks = [M.ks_1samp(X[:, i], law.marginals[i].cdf) for i in range(D)]
    if D == 1:
        marg = law.marginals[0]
        w = M.wasserstein1_to_cdf(X[:, 0], marg.cdf, marg.grid)
        F = marg.cdf(marg.grid)
        null = math.sqrt(2.0 / (math.pi * n)) * float(_trapz(np.sqrt(np.clip(F * (1 - F), 0, None)), marg.grid))
        _put(out, "w1", w.value, w.se)
        _put(out, "w1_excess", w.value - null, w.se)
    _put(out, "ks_max_statistic", max(r.statistic for r in ks))
    _put(out, "ks_min_pvalue", min(r.pvalue for r in ks))
    mx, vx = _moments(X)
    for i in range(min(D, max_coordinates)):
        c, marg = f"x{i}", law.marginals[i]
        w = M.wasserstein1_to_cdf(X[:, i], marg.cdf, marg.grid)
        _put(out, f"w1_{c}", w.value, w.se)
        _put(out, f"ks_statistic_{c}", ks[i].statistic)
        _put(out, f"ks_pvalue_{c}", ks[i].pvalue)
        h = M.histogram_divergence(X[:, i], _histogram_bins(marg, n), cdf=marg.cdf)
        B1 = h.dof
        _put(out, f"js_histogram_{c}", h.js_corrected, math.sqrt(2.0 * B1) / (8.0 * n))
        _put(out, f"kl_histogram_{c}", h.kl_corrected, math.sqrt(2.0 * B1) / (2.0 * n))
        _put(out, f"chi2_pvalue_{c}", h.pvalue)
        _put(out, f"mean_{c}", mx.value[i], mx.se[i])
        _put(out, f"mean_{c}_exact", marg.mean)
        _put(out, f"var_{c}", vx.value[i], vx.se[i])
        _put(out, f"var_{c}_exact", marg.var)

    ll = M.log_likelihood(law.log_prob(X))
    _put(out, "log_likelihood", ll.value, ll.se)
    if name == "gaussian-mixture":
        ent = law.mixture.entropy(rng=np.random.default_rng(seed), n=200_000)
        _put(out, "log_likelihood_exact", -ent.value, ent.se)
    else:
        _put(out, "log_likelihood_exact", law.neg_entropy[0])
    if law.energy is not None:
        e = M.mean_estimate(law.energy(X))
        _put(out, "mean_energy", e.value, e.se)
        _put(out, "mean_energy_exact", law.mean_energy)
    if law.populations is not None:
        nb = len(law.populations)
        pops = M.label_populations(law.labels(X), nb)
        for j in range(nb):
            _put(out, f"pop_basin_{j}", pops.value[j], pops.se[j])
            _put(out, f"pop_basin_{j}_exact", law.populations[j])
        _put(out, "pop_max_abs_diff", np.max(np.abs(pops.value - law.populations)))
        p0 = pops.value[0]
        for j in range(1, nb):
            pj = pops.value[j]
            with np.errstate(divide="ignore", invalid="ignore"):
                df = -law.kT * math.log(pj / p0) if pj > 0 and p0 > 0 else math.nan
                se = law.kT * math.sqrt(1.0 / (n * p0) + 1.0 / (n * pj)) if pj > 0 and p0 > 0 else math.nan
            _put(out, f"delta_f_basin_0_{j}", df, se)
            _put(out, f"delta_f_basin_0_{j}_exact",
                 -law.kT * math.log(law.populations[j] / law.populations[0]))
    return out


def _compare_ising(s, p):
    from . import analytic as A
    from . import metrics as M

    if s.ndim != 3 or s.shape[1] != s.shape[2]:
        raise InputError(f"analytic law ising needs spins of shape [N, L, L], got {s.shape}")
    L = s.shape[1] if p["L"] is None else p["L"]
    if L != int(L) or int(L) != s.shape[1]:
        raise InputError(f"--set L={L:g} but the samples have shape {s.shape} (L = {s.shape[1]})")
    L = int(L)
    if L < 2:
        raise InputError(f"analytic law ising needs L >= 2, got samples of shape {s.shape}")
    if p["T"] is None:
        raise InputError("analytic law ising needs the temperature: --set T=VALUE")
    T = p["T"]
    bad = np.abs(s) != 1
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise InputError(f"analytic law ising needs spins +1/-1; sample row {int(idx[0])} "
                         f"(0-based), site ({int(idx[1])}, {int(idx[2])}) holds "
                         f"{s[tuple(idx)].item()!r}")
    n = len(s)
    ex = A.ising_kaufman(L, T)
    e, m = _ising_series(s)
    out = {}
    _put(out, "n_samples", n)
    _put(out, "dim", L * L)
    ev, es, tau = _tau_mean(e)
    _put(out, "energy_per_spin", ev, es)
    _put(out, "energy_per_spin_exact", ex.energy)
    _put(out, "energy_per_spin_onsager", A.ising_energy(T))
    _put(out, "energy_tau_int", tau)
    mv, ms, _ = _tau_mean(np.abs(m))
    _put(out, "abs_magnetization_per_spin", mv, ms)
    _put(out, "abs_magnetization_per_spin_onsager", A.ising_magnetization(T))
    obs = M.ising_observables(s, T)
    _put(out, "specific_heat_per_spin", obs.specific_heat.value, obs.specific_heat.se)
    _put(out, "specific_heat_per_spin_exact", ex.specific_heat)
    _put(out, "binder_cumulant", obs.binder.value, obs.binder.se)
    N = L * L
    ll = M.log_likelihood(-N * e / T - ex.log_z)
    _put(out, "log_likelihood", ll.value, ll.se)
    _put(out, "log_likelihood_exact", -N * ex.energy / T - ex.log_z)
    return out
