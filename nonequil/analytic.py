"""Analytic thermodynamics: the exact answers that simulations and learned models are checked
against.

Conventions
-----------
* Energies are in the same units as ``kT`` (kB = 1). Where a quantity has no temperature
  argument the energy unit is kT.
* Lengths are in the units of the coordinate ``x``; a density therefore has units 1/length^D,
  and a *differential* entropy ``S/kB = -int p log p`` depends on that unit (it shifts by
  ``D log c`` when x is rescaled by c).  ``log Z`` likewise.
* Overdamped Langevin dynamics is ``dx = -grad U / gamma dt + sqrt(2 kT / gamma) dW``.
* OU is ``dx = theta (mu - x) dt + sigma dW``.
* Ising: J = 1, kB = 1, energy ``E = -sum_<ij> s_i s_j`` on an L x L periodic square lattice.

Contents: 1-D and 2-D Boltzmann densities by quadrature (double well, harmonic, Müller–Brown),
Gaussian mixtures and the OU process started from one, the harmonic chain, Onsager's and
Kaufman's 2-D Ising results, Kramers and the exact mean first-passage time, and Jarzynski /
Crooks (BAR) estimators with the trap protocols' exact answers.

Pure library code: numpy at import, scipy imported inside the functions that need it; no
printing, plotting or I/O.  Random draws only through a ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from nonequil.metrics import Estimate

__all__ = [
    # 1-D / 2-D Boltzmann
    "Boltzmann1D", "boltzmann_1d", "free_energy_difference",
    "double_well_energy", "double_well_gradient", "double_well_stationary_points",
    "double_well_boltzmann", "harmonic_energy", "harmonic_gradient", "harmonic_log_z",
    "MB_A", "MB_a", "MB_b", "MB_c", "MB_X0", "MB_Y0",
    "muller_brown_energy", "muller_brown_gradient", "muller_brown_minima",
    "Boltzmann2D", "muller_brown_boltzmann", "muller_brown_basin",
    # Gaussian laws
    "GaussianMixture", "HarmonicChain",
    # OU
    "ou_mean", "ou_var", "ou_transition", "ou_transition_logpdf", "ou_stationary",
    "ou_mixture_marginal",
    # Ising
    "ISING_TC", "ising_magnetization", "ising_energy", "ising_specific_heat",
    "ising_free_energy", "IsingFinite", "ising_kaufman",
    # Kramers / MFPT
    "kramers_rate", "double_well_kramers_rate", "mfpt_1d",
    # nonequilibrium work
    "trap_stiffness_delta_f", "dragged_trap_work", "stiffness_ramp_mean_work",
    "jarzynski_free_energy", "bar_free_energy",
    # velocities
    "maxwell_boltzmann_logpdf", "maxwell_speed_pdf",
]

_LOG2PI = math.log(2.0 * math.pi)


def _positive(name, value):
    if not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


# ----------------------------------------------------------------------------------------
# 1-D Boltzmann densities by quadrature
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Boltzmann1D:
    """Boltzmann law ``p(x) = exp(-U(x)/kT) / Z`` on ``[lo, hi]`` (truncated there).

    Quadrature: ``U`` is evaluated at the ``n`` grid nodes and the ``n-1`` cell midpoints;
    each cell is integrated by Simpson's rule (exponentially accurate for a smooth integrand
    that is negligible at the ends, O(h^4) otherwise).  Between nodes the CDF is the cubic
    Hermite interpolant through the exact cell integrals with the exact density as slope
    (Fritsch–Carlson limited, hence monotone), which ``cdf`` and ``inverse_cdf`` share.

    Attributes: ``x`` [n] grid (length units), ``density`` [n] (1/length), ``cdf_values``
    [n], ``log_z`` (``Z = int exp(-U/kT) dx``, in length units), ``free_energy``
    ``F = -kT log Z`` (energy units), ``mean_energy`` ``<U>``, ``entropy`` ``S/kB =
    (<U> - F)/kT = -int p log p``, ``edge_density`` = max(p(lo), p(hi)) * (hi - lo), a
    gauge of the truncation (should be tiny unless walls are intended).
    """

    U: object
    kT: float
    x: np.ndarray
    density: np.ndarray
    cdf_values: np.ndarray
    log_z: float
    mean_energy: float
    _xf: np.ndarray = field(repr=False)
    _wf: np.ndarray = field(repr=False)

    @property
    def free_energy(self):
        return -self.kT * self.log_z

    @property
    def entropy(self):
        return self.mean_energy / self.kT + self.log_z

    @property
    def edge_density(self):
        return float(max(self.density[0], self.density[-1]) * (self.x[-1] - self.x[0]))

    def pdf(self, x):
        """Exact normalised density at ``x`` (0 outside [lo, hi])."""
        x = np.asarray(x, dtype=float)
        inside = (x >= self.x[0]) & (x <= self.x[-1])
        xc = np.clip(x, self.x[0], self.x[-1])
        return np.where(inside, np.exp(-np.asarray(self.U(xc)) / self.kT - self.log_z), 0.0)

    def expect(self, f):
        """``<f(x)>`` by the same Simpson rule; ``f`` is vectorised."""
        return float(np.dot(self._wf, np.asarray(f(self._xf), dtype=float)))

    def _cell(self, i):
        """Cell i's CDF increment and limited Hermite slopes (a, b) in units of it."""
        h = self.x[1] - self.x[0]
        delta = self.cdf_values[i + 1] - self.cdf_values[i]
        ok = delta > 0
        safe = np.where(ok, delta, 1.0)
        a = np.where(ok, self.density[i] * h / safe, 1.0)
        b = np.where(ok, self.density[i + 1] * h / safe, 1.0)
        r2 = a * a + b * b
        lim = np.where(r2 > 9.0, 3.0 / np.sqrt(np.maximum(r2, 9.0)), 1.0)  # Fritsch–Carlson
        return h, delta, a * lim, b * lim

    @staticmethod
    def _hermite(t, a, b):
        return t * (a + t * ((3.0 - 2.0 * a - b) + t * (a + b - 2.0)))

    @staticmethod
    def _hermite_slope(t, a, b):
        return a + t * (2.0 * (3.0 - 2.0 * a - b) + 3.0 * t * (a + b - 2.0))

    def cdf(self, x):
        """CDF ``F(x)``, vectorised; 0 below lo, 1 above hi."""
        x = np.asarray(x, dtype=float)
        i = np.clip(np.searchsorted(self.x, x, side="right") - 1, 0, len(self.x) - 2)
        h, delta, a, b = self._cell(i)
        t = np.clip((x - self.x[i]) / h, 0.0, 1.0)
        return self.cdf_values[i] + delta * self._hermite(t, a, b)

    def inverse_cdf(self, u):
        """Quantile function ``F^{-1}(u)`` for u in [0, 1], vectorised and monotone.

        Inverts the cell's Hermite cubic by safeguarded Newton iteration (bisection fallback),
        to round-off: ``cdf(inverse_cdf(u)) == u`` to ~1e-15.  ``inverse_cdf(U)`` with U
        uniform gives exact i.i.d. samples of the (quadrature) Boltzmann law.
        """
        u = np.asarray(u, dtype=float)
        if np.any((u < 0) | (u > 1)) or np.any(np.isnan(u)):
            raise ValueError("inverse_cdf needs u in [0, 1]")
        F = self.cdf_values
        i = np.clip(np.searchsorted(F, u, side="right") - 1, 0, len(F) - 2)
        h, delta, a, b = self._cell(i)
        s = np.clip(np.where(delta > 0, (u - F[i]) / np.where(delta > 0, delta, 1.0), 0.5), 0, 1)
        t, lo, hi = s.copy(), np.zeros_like(s), np.ones_like(s)
        for _ in range(60):
            g = self._hermite(t, a, b) - s
            lo = np.where(g < 0, t, lo)
            hi = np.where(g > 0, t, hi)
            d = self._hermite_slope(t, a, b)
            with np.errstate(divide="ignore", invalid="ignore"):
                tn = t - g / d
            bad = ~((tn > lo) & (tn < hi)) | (d <= 0)
            done = (np.abs(g) <= 4e-16) | (hi - lo <= 4e-16)
            if np.all(done):
                break
            t = np.where(done, t, np.where(bad, 0.5 * (lo + hi), tn))
        return self.x[i] + h * t

    def sample(self, rng, n):
        """``n`` i.i.d. samples by inverse CDF from a ``numpy.random.Generator``."""
        return self.inverse_cdf(rng.random(n))

    def populations(self, dividers):
        """Basin populations between ``[lo, d_1, ..., d_k, hi]`` (k+1 values, sum 1)."""
        d = np.sort(np.atleast_1d(np.asarray(dividers, dtype=float)))
        F = np.concatenate([[0.0], self.cdf(d), [1.0]])
        return np.diff(F)

    def delta_free_energy(self, dividers, basin_a=0, basin_b=1):
        """``F_b - F_a = -kT log(P_b / P_a)`` between two basins of ``populations``."""
        p = self.populations(dividers)
        return free_energy_difference(p[basin_a], p[basin_b], self.kT)


def free_energy_difference(p_a, p_b, kT=1.0):
    """``Delta F = F_B - F_A = -kT log(P_B / P_A)`` from basin populations."""
    return -kT * np.log(np.asarray(p_b, dtype=float) / np.asarray(p_a, dtype=float))


def boltzmann_1d(U, kT, lo, hi, n=20001):
    """Boltzmann law of the vectorised potential ``U(x)`` at ``kT`` on ``[lo, hi]``.

    ``n`` uniform nodes (and n-1 midpoints); see :class:`Boltzmann1D` for the method.
    Choose ``[lo, hi]`` so that ``U - min U`` exceeds ~40 kT at both ends (check
    ``edge_density``); the law is otherwise that of reflecting walls at lo and hi.
    """
    _positive("kT", kT)
    n = int(n)
    if n < 3 or not hi > lo:
        raise ValueError(f"need n >= 3 and hi > lo, got n={n}, lo={lo}, hi={hi}")
    xf = np.linspace(lo, hi, 2 * n - 1)
    uf = np.asarray(U(xf), dtype=float)
    if uf.shape != xf.shape or not np.all(np.isfinite(uf)):
        raise ValueError("U must be vectorised and finite on [lo, hi]")
    umin = uf.min()
    wf = np.exp(-(uf - umin) / kT)
    h = xf[2] - xf[0]
    cells = h / 6.0 * (wf[0:-2:2] + 4.0 * wf[1::2] + wf[2::2])
    zs = cells.sum()
    simpson = np.full(xf.size, 2.0 * h / 6.0)
    simpson[1::2] = 4.0 * h / 6.0
    simpson[[0, -1]] = h / 6.0
    pw = simpson * wf / zs
    cdf = np.concatenate([[0.0], np.cumsum(cells) / zs])
    cdf[-1] = 1.0
    return Boltzmann1D(U=U, kT=float(kT), x=xf[::2].copy(), density=wf[::2] / zs,
                       cdf_values=cdf, log_z=float(math.log(zs) - umin / kT),
                       mean_energy=float(np.dot(pw, uf)), _xf=xf, _wf=pw)


# ----------------------------------------------------------------------------------------
# Named potentials
# ----------------------------------------------------------------------------------------
def double_well_energy(x, a=1.0, b=0.0):
    """``U = a (x^2 - 1)^2 + b x`` (energy units kT by default; x dimensionless).  In D > 1
    the simulator adds ``k_perp/2 sum_{i>0} x_i^2``: those coordinates are independent
    ``N(0, kT/k_perp)`` and add ``((D-1)/2) log(2 pi kT/k_perp)`` to log Z."""
    x = np.asarray(x, dtype=float)
    return a * (x * x - 1.0) ** 2 + b * x


def double_well_gradient(x, a=1.0, b=0.0):
    """``dU/dx = 4 a x (x^2 - 1) + b``."""
    x = np.asarray(x, dtype=float)
    return 4.0 * a * x * (x * x - 1.0) + b


def double_well_stationary_points(a=1.0, b=0.0):
    """Real roots of ``4a x^3 - 4a x + b = 0``, ascending: (min, barrier, min) when
    ``|b| < 8a/(3 sqrt 3)``, else a single minimum."""
    _positive("a", a)
    r = np.roots([4.0 * a, 0.0, -4.0 * a, b])
    return np.sort(r[np.abs(r.imag) < 1e-9 * max(1.0, abs(b))].real)


def double_well_boltzmann(a=1.0, b=0.0, kT=1.0, n=20001, margin=60.0):
    """:func:`boltzmann_1d` of the double well on a range where ``U - min U >= margin kT``."""
    _positive("kT", kT)
    U = functools.partial(double_well_energy, a=a, b=b)
    umin = float(np.min(U(double_well_stationary_points(a, b))))
    r = 2.0
    while min(U(-r), U(r)) - umin < margin * kT:
        r *= 1.5
    return boltzmann_1d(U, kT, -r, r, n)


def harmonic_energy(x, k=1.0, center=0.0):
    """``U = k/2 (x - center)^2`` elementwise (sum over coordinates yourself for D > 1)."""
    x = np.asarray(x, dtype=float)
    return 0.5 * k * (x - center) ** 2


def harmonic_gradient(x, k=1.0, center=0.0):
    """``dU/dx = k (x - center)``."""
    return k * (np.asarray(x, dtype=float) - center)


def harmonic_log_z(k=1.0, kT=1.0, dim=1):
    """``log Z = (D/2) log(2 pi kT / k)`` of the harmonic trap."""
    _positive("k", k)
    _positive("kT", kT)
    return 0.5 * dim * math.log(2.0 * math.pi * kT / k)


# Müller & Brown, Theor. Chim. Acta 53, 75 (1979): standard parameters.
MB_A = np.array([-200.0, -100.0, -170.0, 15.0])
MB_a = np.array([-1.0, -1.0, -6.5, 0.7])
MB_b = np.array([0.0, 0.0, 11.0, 0.6])
MB_c = np.array([-10.0, -10.0, -6.5, 0.7])
MB_X0 = np.array([1.0, 0.0, -0.5, -1.0])
MB_Y0 = np.array([0.0, 0.5, 1.5, 1.0])


def _mb_terms(xy, scale):
    xy = np.asarray(xy, dtype=float)
    if xy.shape[-1:] != (2,):
        raise ValueError(f"Müller–Brown positions need shape (..., 2), got {xy.shape}")
    dx = xy[..., 0:1] - MB_X0
    dy = xy[..., 1:2] - MB_Y0
    e = scale * MB_A * np.exp(MB_a * dx * dx + MB_b * dx * dy + MB_c * dy * dy)
    return dx, dy, e


def muller_brown_energy(xy, scale=0.1):
    """``U(x, y) = scale * sum_i A_i exp(a_i dx^2 + b_i dx dy + c_i dy^2)``, dx = x - x0_i,
    dy = y - y0_i; ``xy`` has shape (..., 2), the result (...).  ``scale`` is the energy scale
    (energy units kT unless a temperature is given)."""
    return _mb_terms(xy, scale)[2].sum(-1)


def muller_brown_gradient(xy, scale=0.1):
    """``grad U`` with shape (..., 2)."""
    dx, dy, e = _mb_terms(xy, scale)
    gx = (e * (2.0 * MB_a * dx + MB_b * dy)).sum(-1)
    gy = (e * (MB_b * dx + 2.0 * MB_c * dy)).sum(-1)
    return np.stack([gx, gy], axis=-1)


@functools.lru_cache(maxsize=None)
def _mb_minima_unscaled():
    from scipy.optimize import root

    starts = [(-0.56, 1.44), (0.62, 0.03), (-0.05, 0.47)]
    m = np.array([root(lambda p: muller_brown_gradient(p, 1.0), s, jac=_mb_hessian, tol=1e-14).x for s in starts])
    m.flags.writeable = False
    return m


def muller_brown_minima(scale=0.1):
    """The three minima, shape (3, 2), sorted by energy: A (-0.558, 1.442), B (0.623,
    0.028), C (-0.050, 0.467).  Returns ``(positions, energies)``; the positions do not
    depend on ``scale``."""
    m = _mb_minima_unscaled().copy()
    return m, muller_brown_energy(m, scale)


@dataclass(frozen=True)
class Boltzmann2D:
    """Boltzmann law on a tensor grid.  ``density[i, j]`` is p at ``(x[i], y[j])``
    (1/length^2), normalised by the 2-D trapezoid rule; ``labels[i, j]`` the basin index of
    the node; ``populations`` the basin masses (trapezoid weights of the labelled nodes);
    ``log_z``, ``mean_energy``, ``entropy`` as in 1-D; ``edge_density`` the largest
    boundary density times the domain area (truncation gauge)."""

    kT: float
    x: np.ndarray
    y: np.ndarray
    density: np.ndarray
    log_z: float
    mean_energy: float
    labels: np.ndarray
    populations: np.ndarray
    minima: np.ndarray
    edge_density: float

    @property
    def free_energy(self):
        return -self.kT * self.log_z

    @property
    def entropy(self):
        return self.mean_energy / self.kT + self.log_z

    @staticmethod
    def basin_of(xy):
        """Basin label of arbitrary points (..., 2): :func:`muller_brown_basin`."""
        return muller_brown_basin(xy)


_MB_BOX = (-6.0, 4.0, -4.0, 6.0)  # separatrices are traced inside this box


def _mb_hessian(p, scale=1.0):
    dx, dy, e = _mb_terms(p, scale)
    fx, fy = 2.0 * MB_a * dx + MB_b * dy, MB_b * dx + 2.0 * MB_c * dy
    hxx = (e * (fx * fx + 2.0 * MB_a)).sum(-1)
    hxy = (e * (fx * fy + MB_b)).sum(-1)
    hyy = (e * (fy * fy + 2.0 * MB_c)).sum(-1)
    return np.array([[hxx, hxy], [hxy, hyy]])


def _close_on_box(curve, box):
    """Close a curve whose two ends lie on the box boundary by walking along the boundary
    (counter-clockwise from the last point to the first)."""
    x0, x1, y0, y1 = box
    w, h = x1 - x0, y1 - y0

    def perimeter(p):
        px, py = np.clip(p[0], x0, x1), np.clip(p[1], y0, y1)
        d = np.abs([py - y0, x1 - px, y1 - py, px - x0])
        side = int(np.argmin(d))
        return [px - x0, w + py - y0, w + h + x1 - px, 2 * w + h + y1 - py][side]

    corners = np.array([[x1, y0], [x1, y1], [x0, y1], [x0, y0]])
    cpar = np.array([w, w + h, 2 * w + h, 2 * w + 2 * h])
    a, b = perimeter(curve[-1]), perimeter(curve[0])
    span = (b - a) % (2 * w + 2 * h)
    rel = (cpar - a) % (2 * w + 2 * h)
    order = np.argsort(rel)
    walk = corners[order][rel[order] < span]
    return np.concatenate([curve, walk, curve[:1]])


class _EvenOdd:
    """Vectorised even-odd point-in-polygon test with edges bucketed by y."""

    def __init__(self, poly, nbins=2048):
        a, b = poly[:-1], poly[1:]
        keep = a[:, 1] != b[:, 1]  # horizontal edges never cross a horizontal ray
        self.a, self.b = a[keep], b[keep]
        self.y0, self.y1 = poly[:, 1].min(), poly[:, 1].max()
        self.dy = (self.y1 - self.y0) / nbins
        lo = np.minimum(self.a[:, 1], self.b[:, 1])
        hi = np.maximum(self.a[:, 1], self.b[:, 1])
        blo = np.clip(((lo - self.y0) / self.dy).astype(int), 0, nbins - 1)
        bhi = np.clip(((hi - self.y0) / self.dy).astype(int), 0, nbins - 1)
        counts = np.zeros(nbins, int)
        np.add.at(counts, blo, 1)
        np.add.at(counts, np.minimum(bhi + 1, nbins - 1), -1)
        counts[-1] += np.sum(bhi + 1 > nbins - 1)
        width = int(np.max(np.cumsum(counts))) if len(lo) else 0
        self.table = np.full((nbins, max(width, 1)), -1)
        fill = np.zeros(nbins, int)
        for e in range(len(lo)):
            for k in range(blo[e], bhi[e] + 1):
                self.table[k, fill[k]] = e
                fill[k] += 1
        self.nbins = nbins

    def inside(self, p, chunk=1 << 15):
        out = np.empty(len(p), dtype=bool)
        ax, ay, bx, by = self.a[:, 0], self.a[:, 1], self.b[:, 0], self.b[:, 1]
        for s in range(0, len(p), chunk):
            px, py = p[s:s + chunk, 0:1], p[s:s + chunk, 1:2]
            k = np.clip(((py[:, 0] - self.y0) / self.dy).astype(int), 0, self.nbins - 1)
            e = self.table[k]
            valid = e >= 0
            e = np.where(valid, e, 0)
            eay, eby = ay[e], by[e]
            crosses = valid & ((eay > py) != (eby > py))
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = ax[e] + (py - eay) * (bx[e] - ax[e]) / (eby - eay)
            out[s:s + chunk] = (np.count_nonzero(crosses & (px < xc), axis=1) % 2) == 1
        return out


@functools.lru_cache(maxsize=None)
def _mb_separatrices():
    """The two saddles and their ridge lines (stable manifolds of the descent flow), traced
    by arc-length gradient *ascent* from each saddle along the Hessian's positive-curvature
    eigenvector until the box edge, each closed along the box into a polygon."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import root

    box = _MB_BOX
    grad = lambda q: muller_brown_gradient(q, 1.0)  # noqa: E731

    def rhs(_, q):
        g = grad(q)
        return g / math.sqrt(g @ g)

    def leave(_, q):
        return min(q[0] - box[0], box[1] - q[0], q[1] - box[2], box[3] - q[1])

    leave.terminal = True
    saddles, polygons = [], []
    for guess in [(-0.822, 0.624), (0.212, 0.293)]:
        sad = root(grad, guess, jac=_mb_hessian, tol=1e-14).x
        w, v = np.linalg.eigh(_mb_hessian(sad))
        branches = [solve_ivp(rhs, (0.0, 100.0), sad + sign * 1e-7 * v[:, 1], events=leave, rtol=1e-10,
                              atol=1e-12, max_step=0.01).y.T for sign in (1.0, -1.0)]
        curve = np.concatenate([branches[0][::-1], branches[1]])
        saddles.append(sad)
        polygons.append(_EvenOdd(_close_on_box(curve, box)))
    return np.array(saddles), polygons


def muller_brown_basin(xy):
    """Steepest-descent basin of points (..., 2): 0 = A (-0.558, 1.442), 1 = B (0.623,
    0.028), 2 = C (-0.050, 0.467), i.e. the minimum reached by the gradient flow
    ``dx/ds = -grad U``.  Independent of ``scale``.

    Method: the basin boundaries are the ridge lines through the two saddles (their stable
    manifolds; Müller–Brown has 3 minima, 2 saddles and no maximum, so each ridge line is a
    curve splitting the plane).  They are traced once by gradient ascent from the saddles
    (``_mb_separatrices``, rtol 1e-10) inside the box [-6, 4] x [-4, 6]; a point's basin
    follows from which side of each line it lies on (even-odd test).  Points outside the box
    (energies > 1e9 there) are followed by the gradient flow instead.
    """
    xy = np.asarray(xy, dtype=float)
    pts = xy.reshape(-1, 2)
    _, (ac, bc) = _mb_separatrices()
    minima = _mb_minima_unscaled()
    a_side = ac.inside(minima[:1])[0]
    b_side = bc.inside(minima[1:2])[0]
    lab = np.full(len(pts), 2, dtype=np.int8)
    lab[ac.inside(pts) == a_side] = 0
    lab[bc.inside(pts) == b_side] = 1
    x0, x1, y0, y1 = _MB_BOX
    out = np.nonzero((pts[:, 0] <= x0) | (pts[:, 0] >= x1) | (pts[:, 1] <= y0) | (pts[:, 1] >= y1))[0]
    for n in out:
        end = _gradient_flow_end(lambda q: muller_brown_gradient(q, 1.0), pts[n])
        lab[n] = np.argmin(((minima - end) ** 2).sum(-1))
    return lab.reshape(xy.shape[:-1])


def _gradient_flow_end(grad, p0, t1=200.0):
    """End point of the gradient flow ``dx/ds = -grad U`` from p0, integrated in the
    reparametrised time ``dt = (1 + |grad U|) ds`` (bounded speed) by LSODA."""
    from scipy.integrate import solve_ivp

    def rhs(_, q):
        g = grad(q)
        return -g / (1.0 + math.sqrt(g @ g))

    return solve_ivp(rhs, (0.0, t1), np.asarray(p0, float), method="LSODA", rtol=1e-8, atol=1e-10).y[:, -1]


def muller_brown_boltzmann(kT=1.0, scale=0.1, xlim=(-3.3, 1.5), ylim=(-1.3, 3.3), nx=961, ny=921):
    """Müller–Brown Boltzmann law on a grid, with basin populations.

    Quadrature: 2-D trapezoid on the ``nx x ny`` grid over ``xlim x ylim`` (exponentially
    accurate while the density is negligible on the boundary: check ``edge_density``).
    With the defaults (scale 0.1, kT 1; grid step 0.005) the boundary lies > 40 kT above the
    global minimum.

    Basins: each node carries its steepest-descent basin (:func:`muller_brown_basin`, exact
    up to the separatrix tracing tolerance); populations sum the trapezoid masses of the
    nodes in each basin, so the cells cut by a separatrix give an O(h) error (about 1e-7 at
    the default grid).
    """
    _positive("kT", kT)
    x = np.linspace(*xlim, nx)
    y = np.linspace(*ylim, ny)
    X, Y = np.meshgrid(x, y, indexing="ij")
    P = np.stack([X, Y], -1)
    E = muller_brown_energy(P, scale)
    emin = E.min()
    w = np.exp(-(E - emin) / kT)
    wx = np.full(nx, x[1] - x[0])
    wx[[0, -1]] *= 0.5
    wy = np.full(ny, y[1] - y[0])
    wy[[0, -1]] *= 0.5
    mass = wx[:, None] * wy[None, :] * w
    zs = float(mass.sum())
    mass /= zs
    labels = muller_brown_basin(P)
    pops = np.bincount(labels.ravel(), weights=mass.ravel(), minlength=3)
    p = w / zs
    edge = max(p[0].max(), p[-1].max(), p[:, 0].max(), p[:, -1].max())
    area = (x[-1] - x[0]) * (y[-1] - y[0])
    return Boltzmann2D(kT=float(kT), x=x, y=y, density=p, log_z=math.log(zs) - emin / kT,
                       mean_energy=float((mass * E).sum()), labels=labels, populations=pops,
                       minima=muller_brown_minima(scale)[0], edge_density=float(edge * area))


# ----------------------------------------------------------------------------------------
# Gaussian laws: mixture and harmonic chain
# ----------------------------------------------------------------------------------------
class GaussianMixture:
    """``p(x) = sum_k w_k N(x; m_k, Sigma_k)`` in D dimensions.

    ``weights`` [K] (normalised here), ``means`` [K, D] (or [K] for D = 1), ``covs`` [K, D, D]
    full, [K, D] diagonal, or [K] isotropic variances.  Points have shape (..., D); for D = 1
    a 0-d array or a trailing axis of length != 1 is read as scalars (shape (...)).
    """

    def __init__(self, weights, means, covs):
        w = np.atleast_1d(np.asarray(weights, dtype=float))
        m = np.asarray(means, dtype=float)
        if m.ndim == 1:
            m = m[:, None]
        K, D = m.shape
        if w.shape != (K,) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        c = np.asarray(covs, dtype=float)
        if c.shape == (K,):
            c = c[:, None, None] * np.eye(D)
        elif c.shape == (K, D):
            c = c[:, :, None] * np.eye(D)
        elif c.shape != (K, D, D):
            raise ValueError(f"covs must have shape ({K},), ({K}, {D}) or ({K}, {D}, {D}), got {c.shape}")
        if not np.allclose(c, np.swapaxes(c, 1, 2)):
            raise ValueError("covariances must be symmetric")
        try:
            L = np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ValueError("covariances must be positive definite") from None
        self.weights, self.means, self.covs, self.dim = w / w.sum(), m, c, D
        self._chol = L
        self._chol_inv = np.linalg.inv(L)
        self._logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(-1)

    def _in(self, x):
        x = np.asarray(x, dtype=float)
        scalar = self.dim == 1 and (x.ndim == 0 or x.shape[-1] != 1)
        return (x[..., None] if scalar else x), scalar

    def _components(self, x):
        z = np.einsum("kij,...kj->...ki", self._chol_inv, x[..., None, :] - self.means)
        with np.errstate(divide="ignore"):  # a zero weight is a component at -inf
            logw = np.log(self.weights)
        logc = logw - 0.5 * (self.dim * _LOG2PI + self._logdet) - 0.5 * (z * z).sum(-1)
        return z, logc

    def log_prob(self, x):
        """``log p(x)``, shape (...)."""
        from scipy.special import logsumexp

        x, _ = self._in(x)
        return logsumexp(self._components(x)[1], axis=-1)

    def score(self, x):
        """``grad_x log p(x) = -sum_k r_k(x) Sigma_k^{-1} (x - m_k)``, r_k the
        responsibilities; same shape as ``x``."""
        from scipy.special import softmax

        x, scalar = self._in(x)
        z, logc = self._components(x)
        r = softmax(logc, axis=-1)
        g = -np.einsum("...k,kji,...kj->...i", r, self._chol_inv, z)
        return g[..., 0] if scalar else g

    def transform(self, u, z):
        """Samples from uniforms ``u`` [N] in [0, 1) (component choice by inverse CDF of the
        weights) and standard normals ``z`` [N, D]: ``x = m_k + L_k z``."""
        u = np.asarray(u, dtype=float)
        z = np.asarray(z, dtype=float).reshape(u.shape + (self.dim,))
        k = np.minimum(np.searchsorted(np.cumsum(self.weights), u, side="right"), self.weights.size - 1)
        return self.means[k] + np.einsum("...ij,...j->...i", self._chol[k], z)

    def sample(self, rng, n):
        """``n`` samples [n, D] drawn with the ``numpy.random.Generator`` ``rng``."""
        return self.transform(rng.random(n), rng.standard_normal((n, self.dim)))

    def mean(self):
        return self.weights @ self.means

    def cov(self):
        """``sum_k w_k (Sigma_k + m_k m_k^T) - mu mu^T``."""
        mu = self.mean()
        second = np.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - np.outer(mu, mu)

    def cdf(self, x):
        """1-D only: ``sum_k w_k Phi((x - m_k)/s_k)``."""
        from scipy.special import ndtr

        if self.dim != 1:
            raise ValueError("cdf is defined for D = 1 only")
        x = np.asarray(x, dtype=float)[..., None]
        return (self.weights * ndtr((x - self.means[:, 0]) / self._chol[:, 0, 0])).sum(-1)

    def entropy(self, rng=None, n=200_000):
        """Differential entropy ``-E log p`` (nats) as an :class:`Estimate`.  Exact for one
        component, ``(1/2) log det(2 pi e Sigma)`` with se 0; otherwise Monte Carlo with ``n``
        draws from ``rng``, se = sd(log p)/sqrt(n)."""
        if self.weights.size == 1:
            return Estimate(0.5 * (self.dim * (_LOG2PI + 1.0) + self._logdet[0]), 0.0)
        if rng is None:
            raise ValueError("entropy of a mixture with K > 1 needs rng (Monte Carlo)")
        lp = self.log_prob(self.sample(rng, n))
        return Estimate(float(-lp.mean()), float(lp.std(ddof=1) / math.sqrt(n)))

    def ou_evolve(self, t, theta, mu, sigma):
        """Law at time t of OU ``dx = theta (mu - x) dt + sigma dW`` (per coordinate) started
        from this mixture: ``m_k -> mu + (m_k - mu) e^{-theta t}``, ``Sigma_k -> e^{-2 theta t}
        Sigma_k + ou_var(t) I``.  Weights are unchanged."""
        decay = math.exp(-theta * t)
        means = mu + (self.means - mu) * decay
        covs = decay ** 2 * self.covs + float(ou_var(t, theta, sigma)) * np.eye(self.dim)
        return GaussianMixture(self.weights, means, covs)


def ou_mixture_marginal(weights, means, covs, t, theta, mu, sigma):
    """Exact marginal p_t of OU started from a Gaussian mixture; ``.score(x)`` is the exact
    time-dependent score ``grad log p_t``.  See :meth:`GaussianMixture.ou_evolve`."""
    return GaussianMixture(weights, means, covs).ou_evolve(t, theta, mu, sigma)


class HarmonicChain:
    """P particles on a line, displacements u_1..u_P, at temperature kT.

    * ``ends='fixed'``: ``U = k/2 sum_{i=0}^{P} (u_{i+1} - u_i)^2 + k0/2 sum u_i^2`` with
      ``u_0 = u_{P+1} = 0``; eigenvalues ``k0 + 4k sin^2(pi j / (2(P+1)))``, j = 1..P.
    * ``ends='periodic'``: ``U = k/2 sum_{i=1}^{P} (u_{i+1} - u_i)^2 + k0/2 sum u_i^2`` with
      ``u_{P+1} = u_1``, k0 > 0 required (otherwise the translation mode is free);
      eigenvalues ``k0 + 4k sin^2(pi j / P)``, j = 0..P-1.  The bond list (i, i+1 mod P)
      makes this hold for every P: P = 2 has the bond 1-2 twice (eigenvalues k0, k0 + 4k),
      and P = 1 a self-bond that vanishes (eigenvalue k0).

    The law is ``N(0, kT K^{-1})`` with stiffness matrix K: precision K/kT, score
    ``-K u / kT``, ``Z = (2 pi kT)^{P/2} det(K)^{-1/2}``, ``F = -kT log Z``, ``<U> = P kT/2``,
    ``S/kB = P/2 + log Z``.  Units: u in length, k and k0 in energy/length^2.
    """

    def __init__(self, particles, k=1.0, k0=0.0, ends="fixed", kT=1.0):
        P = int(particles)
        if P < 1 or P != particles:
            raise ValueError(f"particles must be a positive integer, got {particles!r}")
        if ends not in ("fixed", "periodic"):
            raise ValueError(f"ends must be 'fixed' or 'periodic', got {ends!r}")
        if k < 0 or k0 < 0:
            raise ValueError(f"k and k0 must be >= 0, got k={k}, k0={k0}")
        if ends == "periodic" and not k0 > 0:
            raise ValueError("periodic ends need an on-site stiffness k0 > 0 (the translation "
                             "mode has zero stiffness otherwise)")
        if ends == "fixed" and not (k > 0 or k0 > 0):
            raise ValueError("fixed ends need k > 0 or k0 > 0")
        _positive("kT", kT)
        self.P, self.k, self.k0, self.ends, self.kT = P, float(k), float(k0), ends, float(kT)

    def stiffness(self):
        """K [P, P] with ``U = u^T K u / 2``, built bond by bond."""
        P, k = self.P, self.k
        K = self.k0 * np.eye(P)
        if self.ends == "fixed":
            K += 2.0 * k * np.eye(P)
            i = np.arange(P - 1)
            K[i, i + 1] -= k
            K[i + 1, i] -= k
        else:
            for i in range(P):
                j = (i + 1) % P
                K[i, i] += k
                K[j, j] += k
                K[i, j] -= k
                K[j, i] -= k
        return K

    def eigenvalues(self):
        """Closed-form eigenvalues of K, ascending."""
        if self.ends == "fixed":
            j = np.arange(1, self.P + 1)
            lam = self.k0 + 4.0 * self.k * np.sin(np.pi * j / (2.0 * (self.P + 1))) ** 2
        else:
            j = np.arange(self.P)
            lam = self.k0 + 4.0 * self.k * np.sin(np.pi * j / self.P) ** 2
        return np.sort(lam)

    def precision(self):
        return self.stiffness() / self.kT

    def covariance(self):
        return self.kT * np.linalg.inv(self.stiffness())

    def energy(self, u):
        u = np.asarray(u, dtype=float)
        return 0.5 * np.einsum("...i,ij,...j->...", u, self.stiffness(), u)

    def score(self, u):
        """``grad log p = -K u / kT``, shape (..., P)."""
        return -np.asarray(u, dtype=float) @ self.stiffness() / self.kT

    def log_z(self):
        return 0.5 * self.P * math.log(2.0 * math.pi * self.kT) - 0.5 * np.log(self.eigenvalues()).sum()

    def free_energy(self):
        return -self.kT * self.log_z()

    def mean_energy(self):
        return 0.5 * self.P * self.kT

    def entropy(self):
        return 0.5 * self.P + self.log_z()

    def log_prob(self, u):
        return -self.energy(u) / self.kT - self.log_z()

    def sample(self, rng, n):
        """[n, P] samples ``u = L z`` with ``L L^T`` the covariance."""
        L = np.linalg.cholesky(self.covariance())
        return rng.standard_normal((n, self.P)) @ L.T


# ----------------------------------------------------------------------------------------
# Ornstein–Uhlenbeck
# ----------------------------------------------------------------------------------------
def _phi(z):
    """``(1 - e^{-z}) / z`` with phi(0) = 1, stable for all z."""
    z = np.asarray(z, dtype=float)
    safe = np.where(z == 0, 1.0, z)
    return np.where(z == 0, 1.0, -np.expm1(-safe) / safe)


def ou_mean(x0, t, theta, mu):
    """``E[x_t | x_0] = mu + (x0 - mu) e^{-theta t}``."""
    return mu + (np.asarray(x0, dtype=float) - mu) * np.exp(-theta * np.asarray(t, dtype=float))


def ou_var(t, theta, sigma):
    """``Var[x_t | x_0] = sigma^2 (1 - e^{-2 theta t}) / (2 theta)``; ``sigma^2 t`` at theta = 0
    (computed as ``sigma^2 t phi(2 theta t)`` without cancellation)."""
    t = np.asarray(t, dtype=float)
    return sigma ** 2 * t * _phi(2.0 * theta * t)


def ou_transition(x0, t, theta, mu, sigma):
    """``(mean, var)`` of the Gaussian transition law."""
    return ou_mean(x0, t, theta, mu), ou_var(t, theta, sigma)


def ou_transition_logpdf(x, x0, t, theta, mu, sigma):
    """``log p(x_t = x | x_0)`` (per coordinate)."""
    m, v = ou_transition(x0, t, theta, mu, sigma)
    return -0.5 * (np.log(2.0 * np.pi * v) + (np.asarray(x, dtype=float) - m) ** 2 / v)


def ou_stationary(theta, mu, sigma):
    """Stationary law ``N(mu, sigma^2 / (2 theta))`` as ``(mean, var)``; needs theta > 0."""
    _positive("theta", theta)
    return mu, sigma ** 2 / (2.0 * theta)


# ----------------------------------------------------------------------------------------
# 2-D Ising: Onsager (infinite lattice) and Kaufman (finite torus)
# ----------------------------------------------------------------------------------------
ISING_TC = 2.0 / math.log(1.0 + math.sqrt(2.0))


def ising_magnetization(T):
    """Spontaneous magnetisation per spin ``(1 - sinh(2/T)^{-4})^{1/8}`` for T < Tc, else 0."""
    T = np.asarray(T, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        s = np.sinh(2.0 / T)
        return np.where(T < ISING_TC, np.maximum(1.0 - s ** -4.0, 0.0) ** 0.125, 0.0)


def _onsager_kappa(K):
    return 2.0 * np.sinh(2.0 * K) / np.cosh(2.0 * K) ** 2


def ising_energy(T):
    """Internal energy per spin of the infinite lattice:
    ``u = -coth(2K) [1 + (2/pi) (2 tanh^2(2K) - 1) K1(kappa)]``, K = 1/T,
    ``kappa = 2 sinh(2K)/cosh^2(2K)``, K1 the complete elliptic integral of the first kind
    (scipy ``ellipk(m = kappa^2)``).  u(Tc) = -sqrt(2)."""
    from scipy.special import ellipk

    K = 1.0 / np.asarray(T, dtype=float)
    t2 = np.tanh(2.0 * K) ** 2
    m = np.minimum(_onsager_kappa(K) ** 2, 1.0)
    with np.errstate(invalid="ignore"):  # at kappa = 1 (Tc) the product's limit is 0
        corr = np.where(m >= 1.0, 0.0, (2.0 / np.pi) * (2.0 * t2 - 1.0) * ellipk(m))
    return -(1.0 + corr) / np.tanh(2.0 * K)


def ising_specific_heat(T):
    """Specific heat per spin (kB = 1), infinite lattice:
    ``c = (4/pi) (K coth 2K)^2 {K1 - E1 - (1 - tanh^2 2K) [pi/2 + (2 tanh^2 2K - 1) K1]}``
    with E1 = ``ellipe(kappa^2)`` (= du/dT of :func:`ising_energy`); log-divergent (inf) at
    Tc."""
    from scipy.special import ellipe, ellipk

    K = 1.0 / np.asarray(T, dtype=float)
    m = np.minimum(_onsager_kappa(K) ** 2, 1.0)
    k1, e1 = ellipk(m), ellipe(m)
    t2 = np.tanh(2.0 * K) ** 2
    with np.errstate(invalid="ignore"):
        brace = k1 - e1 - (1.0 - t2) * (np.pi / 2.0 + (2.0 * t2 - 1.0) * k1)
    return np.where(m >= 1.0, np.inf, (4.0 / np.pi) * (K / np.tanh(2.0 * K)) ** 2 * brace)


def ising_free_energy(T):
    """Free energy per spin ``f`` (units J) of the infinite lattice, by Onsager's integral
    ``-f/T = log(2 cosh 2K) + (1/2pi) int_0^pi log[(1 + sqrt(1 - kappa^2 sin^2 th))/2] dth``
    (scipy ``quad``)."""
    from scipy.integrate import quad

    def one(Ti):
        K = 1.0 / Ti
        k2 = _onsager_kappa(K) ** 2
        I, _ = quad(lambda th: math.log(0.5 * (1.0 + math.sqrt(max(1.0 - k2 * math.sin(th) ** 2, 0.0)))),
                    0.0, math.pi, epsabs=1e-13, epsrel=1e-13, limit=200)
        return -Ti * (math.log(2.0 * math.cosh(2.0 * K)) + I / (2.0 * math.pi))

    T = np.asarray(T, dtype=float)
    return np.vectorize(one, otypes=[float])(T) if T.ndim else one(float(T))


@dataclass(frozen=True)
class IsingFinite:
    """Exact finite-lattice results (per spin unless stated): ``log_z`` (total, log of Z),
    ``free_energy`` f = -T log Z / N, ``energy`` u = <E>/N, ``specific_heat`` c = var(E)/(N T^2)."""

    T: np.ndarray
    log_z: np.ndarray
    free_energy: np.ndarray
    energy: np.ndarray
    specific_heat: np.ndarray


def _log2cosh(y):
    a = np.abs(y)
    return a + np.log1p(np.exp(-2.0 * a))


def _log2sinh_abs(y):
    a = np.abs(y)
    with np.errstate(divide="ignore"):
        return a + np.log1p(-np.exp(-2.0 * a))


def ising_kaufman(L, T, M=None):
    """Exact partition function of the L x M periodic Ising model (Kaufman 1949), with its
    first two K-derivatives in closed form.  M defaults to L; T may be an array.

    ``Z = (1/2) (2 sinh 2K)^{LM/2} (Z1 + Z2 + Z3 + Z4)``, with products over r = 0..M-1:
    ``Z1 = prod 2 cosh(L g_{2r+1}/2)``, ``Z2 = prod 2 sinh(L g_{2r+1}/2)``,
    ``Z3 = prod 2 cosh(L g_{2r}/2)``, ``Z4 = prod 2 sinh(L g_{2r}/2)``, where
    ``cosh g_k = cosh 2K coth 2K - cos(pi k / M)`` (g_k > 0) for k >= 1 and the *signed*
    ``g_0 = 2K + log tanh K`` (negative above Tc, making Z4 negative).  Then
    ``u = -(1/N) dlogZ/dK`` and ``c = (K^2/N) d^2 logZ/dK^2``.  Checked against brute-force
    enumeration (see tests).  Reference: B. Kaufman, Phys. Rev. 76, 1232 (1949); the form
    follows P. D. Beale, Phys. Rev. Lett. 76, 78 (1996).
    """
    L = int(L)
    M = L if M is None else int(M)
    if L < 2 or M < 2:
        raise ValueError(f"lattice sides must be >= 2, got {L} x {M}")
    T = np.asarray(T, dtype=float)
    _positive("T", T)
    K = (1.0 / np.atleast_1d(T))[:, None]
    sh, ch = np.sinh(2.0 * K), np.cosh(2.0 * K)
    c0 = ch * ch / sh
    c1 = 2.0 * ch * (sh * sh - 1.0) / (sh * sh)
    c2 = 4.0 * sh - 4.0 / sh + 8.0 * ch * ch / sh ** 3
    kk = np.arange(1, 2 * M)
    arg = c0 - np.cos(np.pi * kk / M)
    g = np.arccosh(arg)
    sg = np.sqrt(arg * arg - 1.0)
    g1 = c1 / sg
    g2 = (c2 - arg * g1 * g1) / sg
    g0 = 2.0 * K + np.log(np.tanh(K))
    g0 = np.where(g0 == 0.0, 1e-300, g0)
    g = np.concatenate([g0, g], 1)  # column k = g_k, k = 0..2M-1
    g1 = np.concatenate([2.0 + 2.0 / sh, g1], 1)
    g2 = np.concatenate([-4.0 * ch / sh ** 2, g2], 1)
    y, y1, y2 = 0.5 * L * g, 0.5 * L * g1, 0.5 * L * g2
    odd, even = slice(1, None, 2), slice(2, None, 2)

    lc, ls = _log2cosh(y), _log2sinh_abs(y)
    q = np.exp(-2.0 * np.abs(y))
    tc, sc = np.tanh(y), 4.0 * q / (1.0 + q) ** 2          # tanh, sech^2
    with np.errstate(divide="ignore", invalid="ignore"):  # column 0 (y0 ~ 0) unused here
        ts, ss = 1.0 / tc, -4.0 * q / (1.0 - q) ** 2        # coth, -csch^2

    def parts(sl, lg, t, s):
        return (lg[:, sl].sum(1), (t * y1)[:, sl].sum(1), (s * y1 ** 2 + t * y2)[:, sl].sum(1))

    l1, a1, b1 = parts(odd, lc, tc, sc)
    l2, a2, b2 = parts(odd, ls, ts, ss)
    l3r, a3r, b3r = parts(even, lc, tc, sc)
    l4r, a4r, b4r = parts(even, ls, ts, ss)  # r >= 1 factors of Z4
    yy0, yy1, yy2 = y[:, 0], y1[:, 0], y2[:, 0]
    l3 = l3r + lc[:, 0]
    a3 = a3r + tc[:, 0] * yy1
    b3 = b3r + sc[:, 0] * yy1 ** 2 + tc[:, 0] * yy2
    l4 = l4r + ls[:, 0]
    sign4 = np.sign(yy0)
    # signed log-sum-exp by hand: scipy 1.17's logsumexp returns nan when the largest
    # exponent is tied between a positive and a negative weight (Z3 ~ -Z4 well above Tc)
    lmax = np.maximum(np.maximum(l1, l2), np.maximum(l3, l4))
    lsum = lmax + np.log(np.exp(l1 - lmax) + np.exp(l2 - lmax) + np.exp(l3 - lmax)
                         + sign4 * np.exp(l4 - lmax))
    w = [np.exp(l - lsum) for l in (l1, l2, l3)]
    A4 = sign4 * np.exp(l4 - lsum)                       # Z4 / Z
    B4 = np.exp(l4r + lc[:, 0] - lsum)                   # Z4 coth(y0) / Z, finite at y0 = 0
    d1 = w[0] * a1 + w[1] * a2 + w[2] * a3 + (B4 * yy1 + A4 * a4r)
    d2 = (w[0] * (b1 + a1 ** 2) + w[1] * (b2 + a2 ** 2) + w[2] * (b3 + a3 ** 2)
          + A4 * yy1 ** 2 + B4 * yy2 + A4 * b4r + 2.0 * B4 * yy1 * a4r + A4 * a4r ** 2)
    N = L * M
    Kf = K[:, 0]
    shf = sh[:, 0]
    logz = math.log(0.5) + 0.5 * N * np.log(2.0 * shf) + lsum
    dlogz = N * ch[:, 0] / shf + d1
    d2logz = -2.0 * N / shf ** 2 + d2 - d1 ** 2
    Tf = 1.0 / Kf
    out = [logz, -Tf * logz / N, -dlogz / N, Kf ** 2 * d2logz / N]
    if T.ndim == 0:
        out = [float(v[0]) for v in out]
    return IsingFinite(T, *out)


# ----------------------------------------------------------------------------------------
# Kramers escape and mean first-passage time
# ----------------------------------------------------------------------------------------
def kramers_rate(barrier, curvature_well, curvature_barrier, kT=1.0, gamma=1.0):
    """Overdamped high-barrier escape rate (1/time)
    ``k = sqrt(U''_well |U''_barrier|) / (2 pi gamma) exp(-Delta U / kT)``;
    relative corrections O(kT / Delta U)."""
    _positive("kT", kT)
    _positive("gamma", gamma)
    return (math.sqrt(curvature_well * abs(curvature_barrier)) / (2.0 * math.pi * gamma)
            * math.exp(-barrier / kT))


def double_well_kramers_rate(a=1.0, b=0.0, kT=1.0, gamma=1.0, start="left"):
    """Kramers rate out of the ``start`` ('left' or 'right') well of ``a (x^2-1)^2 + b x``
    (``U'' = 12 a x^2 - 4 a``)."""
    pts = double_well_stationary_points(a, b)
    if pts.size != 3:
        raise ValueError(f"double well with a={a}, b={b} has a single minimum")
    well = pts[0] if start == "left" else pts[2]
    U = double_well_energy(pts, a, b)
    dU = U[1] - (U[0] if start == "left" else U[2])
    curv = 12.0 * a * pts ** 2 - 4.0 * a
    return kramers_rate(dU, 12.0 * a * well ** 2 - 4.0 * a, curv[1], kT, gamma)


def mfpt_1d(U, kT, gamma, x0, b, lo, n=20001):
    """Exact mean first-passage time (time units) from x0 to an absorbing point b > x0 for
    overdamped motion in U with a reflecting wall at ``lo`` (use lo far to the left, where U
    is high, for the ``-inf`` of the formula):
    ``T = (gamma/kT) int_{x0}^{b} e^{U(y)/kT} int_{lo}^{y} e^{-U(z)/kT} dz dy``.
    Cumulative Simpson quadrature on uniform grids over [lo, x0] and [x0, b]."""
    from scipy.integrate import cumulative_simpson, simpson

    _positive("kT", kT)
    _positive("gamma", gamma)
    if not lo <= x0 <= b:
        raise ValueError(f"need lo <= x0 <= b, got lo={lo}, x0={x0}, b={b}")
    if x0 == b:
        return 0.0
    y1 = np.linspace(lo, x0, n)
    y2 = np.linspace(x0, b, n)
    u1, u2 = np.asarray(U(y1), float), np.asarray(U(y2), float)
    shift = min(u1.min(), u2.min())
    inner0 = simpson(np.exp(-(u1 - shift) / kT), x=y1) if x0 > lo else 0.0
    inner = inner0 + cumulative_simpson(np.exp(-(u2 - shift) / kT), x=y2, initial=0.0)
    return float(gamma / kT * simpson(np.exp((u2 - shift) / kT) * inner, x=y2))


# ----------------------------------------------------------------------------------------
# Nonequilibrium work: exact answers and estimators
# ----------------------------------------------------------------------------------------
def trap_stiffness_delta_f(k_start, k_end, kT=1.0, dim=1):
    """``Delta F = (D kT / 2) log(k_end / k_start)`` for a harmonic trap's stiffness change
    (dragging the centre at fixed k gives Delta F = 0)."""
    _positive("k_start", k_start)
    _positive("k_end", k_end)
    return 0.5 * dim * kT * math.log(k_end / k_start)


def dragged_trap_work(v, tau, k, gamma, kT=1.0):
    """``(mean, var)`` of the (Gaussian) work for an overdamped trap of stiffness k dragged at
    speed v for time tau from equilibrium: ``<W> = gamma v^2 [tau - tau_r (1 - e^{-tau/tau_r})]``,
    tau_r = gamma/k, ``var W = 2 kT <W>``; Delta F = 0."""
    tr = gamma / k
    mean = gamma * v * v * (tau - tr * (-math.expm1(-tau / tr)))
    return mean, 2.0 * kT * mean


def stiffness_ramp_mean_work(k_start, k_end, tau, gamma=1.0, kT=1.0):
    """Exact ``<W>`` for the linear ramp ``k(t) = k_start + (k_end - k_start) t/tau`` of an
    overdamped 1-D trap started in equilibrium: ``<W> = (k_end - k_start)/(2 tau) int_0^tau
    s(t) dt`` where ``s = <x^2>`` solves ``ds/dt = -2 k(t) s / gamma + 2 kT / gamma``,
    ``s(0) = kT / k_start`` (scipy ``solve_ivp``, rtol 1e-11).  tau = 0 gives the sudden
    limit ``(k_end - k_start) kT / (2 k_start)``."""
    from scipy.integrate import solve_ivp

    _positive("k_start", k_start)
    dk = k_end - k_start
    if tau == 0:
        return 0.5 * dk * kT / k_start

    def rhs(t, y):
        k = k_start + dk * t / tau
        return [-2.0 * k * y[0] / gamma + 2.0 * kT / gamma, y[0]]

    sol = solve_ivp(rhs, (0.0, tau), [kT / k_start, 0.0], method="LSODA", rtol=1e-11, atol=1e-14)
    return float(0.5 * dk / tau * sol.y[1, -1])


def jarzynski_free_energy(work, kT=1.0, se="delta", n_boot=1000, seed=0):
    """Jarzynski estimate ``Delta F = -kT log mean exp(-W/kT)`` (logsumexp), as an
    :class:`Estimate`.  ``se='delta'``: ``kT sd(e^{-W/kT}) / (sqrt(n) mean(e^{-W/kT}))``
    (delta method); ``se='bootstrap'``: sd over ``n_boot`` resamples drawn from
    ``numpy.random.default_rng(seed)``.  The estimator is biased upward by about
    ``kT var(e^{-W/kT}) / (2 n mean^2)``, negligible when the work spread is a few kT."""
    from scipy.special import logsumexp

    w = np.asarray(work, dtype=float).ravel()
    n = w.size
    if n < 2:
        raise ValueError("need at least 2 work values")
    a = -w / kT
    value = -kT * (logsumexp(a) - math.log(n))
    if se == "delta":
        r = np.exp(a - a.max())
        err = kT * r.std(ddof=1) / (math.sqrt(n) * r.mean())
    elif se == "bootstrap":
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        boots = -kT * (logsumexp(a[idx], axis=1) - math.log(n))
        err = boots.std(ddof=1)
    else:
        raise ValueError(f"se must be 'delta' or 'bootstrap', got {se!r}")
    return Estimate(float(value), float(err))


def bar_free_energy(work_forward, work_reverse, kT=1.0):
    """Bennett acceptance ratio (Crooks) estimate of ``Delta F = F_B - F_A`` from forward
    (A -> B) and reverse (B -> A) work.  Solves
    ``sum_F f(M + (W_F - dF)/kT) = sum_R f(-M + (W_R + dF)/kT)``, f(x) = 1/(1 + e^x),
    M = log(n_F / n_R).  se from Bennett's asymptotic variance
    ``var(dF/kT) = (<f^2>_F/<f>_F^2 - 1)/n_F + (<f^2>_R/<f>_R^2 - 1)/n_R``."""
    from scipy.optimize import brentq
    from scipy.special import expit

    wf = np.asarray(work_forward, float).ravel() / kT
    wr = np.asarray(work_reverse, float).ravel() / kT
    nf, nr = wf.size, wr.size
    if nf < 2 or nr < 2:
        raise ValueError("need at least 2 forward and 2 reverse work values")
    M = math.log(nf / nr)

    def imbalance(df):
        return expit(-(M + wf - df)).sum() - expit(-(-M + wr + df)).sum()

    lo, hi = min(wf.min(), -wr.max()) - 1.0, max(wf.max(), -wr.min()) + 1.0
    df = brentq(imbalance, lo, hi, xtol=1e-14, rtol=1e-14)
    ff, fr = expit(-(M + wf - df)), expit(-(-M + wr + df))
    var = ((ff ** 2).mean() / ff.mean() ** 2 - 1.0) / nf + ((fr ** 2).mean() / fr.mean() ** 2 - 1.0) / nr
    return Estimate(float(kT * df), float(kT * math.sqrt(max(var, 0.0))))


# ----------------------------------------------------------------------------------------
# Equipartition / Maxwell–Boltzmann
# ----------------------------------------------------------------------------------------
def maxwell_boltzmann_logpdf(v, mass=1.0, kT=1.0):
    """Log density of one velocity component, ``N(0, kT/m)``; ``<m v^2> = kT`` per dof."""
    v = np.asarray(v, dtype=float)
    s2 = kT / mass
    return -0.5 * (math.log(2.0 * math.pi * s2) + v * v / s2)


def maxwell_speed_pdf(s, mass=1.0, kT=1.0, dim=3):
    """Density of the speed |v| in ``dim`` dimensions:
    ``2 (m/2kT)^{d/2} s^{d-1} e^{-m s^2 / 2kT} / Gamma(d/2)``."""
    s = np.asarray(s, dtype=float)
    a = mass / (2.0 * kT)
    return np.where(s >= 0, 2.0 * a ** (dim / 2) * s ** (dim - 1) * np.exp(-a * s * s) / math.gamma(dim / 2), 0.0)
