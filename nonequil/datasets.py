r"""Physics dataset generators: exact or Monte-Carlo samples written as HDF5 sample sets.

``GENERATORS`` maps a name to a :class:`Generator` (its ``--set`` keys with defaults and
units, its methods, its formula and the function that draws the samples).  Use
:func:`generate` for arrays in memory and :func:`write_dataset` for a file; the command is
``nonequil dataset NAME [--set key=value ...] --n N [--method M] [--seed S] --out FILE.h5``.

=================  ===========================================================  ==============
name               law (energies in the units of kT unless stated)               keys
=================  ===========================================================  ==============
double-well        p(x) ~ exp(-U/kT), U = a (x^2 - 1)^2 + b x  (x dimensionless)  a, b, kT
muller-brown       p(x, y) ~ exp(-U/kT), U = scale sum_i A_i exp(a_i X^2 +        kT, scale
                   b_i X Y + c_i Y^2) (Müller & Brown 1979, standard parameters)
gaussian-mixture   p(x) = sum_k w_k N(x; m_k, Sigma_k) in ``dim`` dimensions      dim, weights,
                                                                                 means, sigmas,
                                                                                 covs
harmonic-chain     u ~ N(0, kT K^{-1}): fixed ends U = k/2 sum_{i=0}^{P}           particles, k,
                   (u_{i+1} - u_i)^2 + k0/2 sum u_i^2, u_0 = u_{P+1} = 0;          k0, ends, kT
                   periodic ends u_{P+1} = u_1 (needs k0 > 0)
ising              p(s) ~ exp(-E/T), E = -sum_<xy> s_x s_y (J = kB = 1), L x L    L, T
                   periodic, spins +-1
phi4               p(phi) ~ exp(-S), S = sum_x [-2 kappa sum_mu phi_x phi_{x+mu}   L, kappa,
                   + phi_x^2 + lambda (phi_x^2 - 1)^2] (dimensionless)             lambda
swiss-roll         t = 1.5 pi (1 + 2 u), u ~ U(0, 1);  (x, y) = scale (t cos t +   noise, scale
                   noise z_1, t sin t + noise z_2), z ~ N(0, I)
=================  ===========================================================  ==============

Methods (the first is the default):

* ``double-well``: ``exact`` draws ``x = F^{-1}(u)`` from the quadrature CDF of
  :func:`nonequil.analytic.double_well_boltzmann` (Simpson cells, monotone Hermite CDF,
  inverted to round-off), i.e. i.i.d. samples of the exact law up to quadrature error.
  ``langevin`` runs overdamped Euler-Maruyama ``dx = -U'(x)/gamma dt + sqrt(2 kT/gamma) dW``
  (``nonequil.simulate``) from ``start`` = ``exact`` (the exact draws above) or ``minimum``
  (every walker at the global minimum), for ``relax`` times the relaxation time
  ``t_relax``: with ``start=exact`` the initial law is already the target and only the
  discretisation bias relaxes, on the slowest intra-well time ``t_relax = gamma / min U''``
  at the minima; with ``start=minimum`` the memory of the start decays like
  ``exp(-lambda_1 t)``, and ``t_relax = 1/lambda_1`` is the spectral gap of the
  Fokker-Planck operator, computed from the symmetrised detailed-balance birth-death
  discretisation of the generator on a grid (rates ``(kT/gamma h^2) exp(-(U_j - U_i)/2kT)``
  between neighbours; eigenvalues by ``scipy``).  The samples are the final positions; they
  follow the Euler-Maruyama chain's stationary law (bias O(dt)).
* ``muller-brown``: ``exact`` is rejection sampling against a rigorous cell-wise envelope on
  the grid of :func:`nonequil.analytic.muller_brown_boltzmann` (box [-3.3, 1.5] x [-1.3, 3.3],
  steps 0.005): a cell is picked with probability proportional to its envelope mass
  ``h_x h_y exp(-U_low/kT)``, a point uniformly in the cell, and it is accepted with
  probability ``exp(-(U(x) - U_low)/kT)``, where ``U_low = U(c) - |grad U(c)| r - H r^2/2``
  bounds U below on the cell (c its centre, r its half-diagonal, H a bound of the Hessian
  norm on the cell from the exact Gaussian form of each term).  The accepted points follow
  the exact density restricted to the box (widened by 0.25 per side, up to [-6, 4] x [-4, 6],
  until its edge lies >= 30 kT above the minimum; hotter settings are refused).
  ``langevin`` as for the double well, in 2-D (``start=minimum`` begins at minimum A; the
  spectral gap comes from a 241 x 231 grid).  Basin labels (0 = A, 1 = B, 2 = C, steepest
  descent, from :func:`nonequil.analytic.muller_brown_basin`) go to ``/labels`` (int8).
* ``gaussian-mixture``: ``exact``: component k by inverse CDF of the weights, then
  ``x = m_k + L_k z`` with ``L_k L_k^T = Sigma_k``.  List keys are comma lists:
  ``--set weights=0.3,0.7 --set means=-1,0,1,0.5`` (K values put on the first coordinate,
  or K*dim values row-major), ``--set sigmas=0.5,0.2`` (K isotropic standard deviations or
  K*dim per-coordinate ones) or ``--set covs=...`` (K isotropic variances, K*dim diagonal
  variances, or K*dim*dim full matrices row-major); give sigmas or covs, not both.
  ``/labels`` holds each sample's component.
* ``harmonic-chain``: ``exact``: ``u = C z`` with ``C C^T = kT K^{-1}`` (Cholesky of the
  exact covariance of :class:`nonequil.analytic.HarmonicChain`).  Periodic ends with
  ``k0 <= 0`` are refused: the uniform translation then has zero stiffness and
  ``exp(-U/kT)`` cannot be normalised.
* ``ising``: ``metropolis`` (checkerboard, ``kernels.ising_cpu`` / ``kernels.ising_cuda``
  with ``--device cuda``; the same bits on both) or ``wolff`` (single-cluster, CPU); see
  "Markov chains" below.  ``/samples`` int8 [N, L, L]; ``/energy`` and ``/magnetization``
  per spin of each stored sample.
* ``phi4``: ``hmc`` (``kernels.phi4_cpu``; trajectory length 1, ``n_leap`` leapfrog steps of
  size 1/n_leap jittered by +-10 %, n_leap tuned during thermalisation until the acceptance
  of a block lies in [0.7, 0.9]).  ``/samples`` float64 [N, L, L]; ``/magnetization`` (per
  site, sum phi / L^2) and ``/action`` (S) of each sample.  Phases at lambda = 0.022, located
  by the crossing of the Binder cumulant ``U4 = 1 - <m^4>/(3 <m^2>^2)`` (HMC scans, 32
  replicas x 8000 trajectories, kappa = 0.24 .. 0.30): U4 of L = 8 and 16 cross at
  kappa ~ 0.2685 (U4 ~ 0.45), of L = 16 and 32 at ~ 0.270, so kappa_c ~ 0.27.  Symmetric
  phase: ``kappa = 0.2`` (U4 -> 0 with L; 0.00 +- 0.04 at L = 16); broken phase:
  ``kappa = 0.3`` (U4 -> 2/3; 0.665 at L = 16).
* ``swiss-roll``: ``exact``, the 2-D swiss roll of Sohl-Dickstein et al. (2015) as it is
  commonly generated (``sklearn.datasets.make_swiss_roll`` columns x and z, divided by 10);
  ``scale`` and ``noise`` as in the table (noise before scaling).

Markov chains (ising, phi4)
---------------------------
``R = min(N, 32)`` independent replicas run in parallel (one thread each), all from an
ordered start (all spins +1; phi = 1 everywhere), which avoids long-lived domain walls below
Tc.  A pilot run measures the integrated autocorrelation times of |m| and of the energy
(action), with the estimator of Sokal (1997): the autocovariance of each replica's series
around the grand mean (FFT, normalised by n - t), summed over replicas, ``rho(t)``,
``tau_int(W) = 1/2 + sum_{t=1}^{W} rho(t)``, and the automatic window: the smallest
``W >= c tau_int(W)`` with ``c = 6``.  The pilot is a burn-in of 64 time units followed by
runs that double the total; each estimate uses the latest run, i.e. the second half of the
pilot, and the pilot stops when that half is at least ``50 tau`` long
(``tau = max(tau_|m|, tau_E)``).  Thermalisation is the whole pilot (>= 100 tau).  Samples
are then taken every ``spacing = ceil(4 tau)`` time units (>= 4 tau_int in Sokal's
convention, >= 2 in the ``1 + 2 sum rho`` one) from every replica in turn: sample
``k R + r`` is replica r after round k.  Time units are sweeps (Metropolis), single-cluster
updates (Wolff) and HMC trajectories.  Each stored sample is multiplied by -1 with
probability 1/2 (a global flip, exact because E and S are even): local updates do not
tunnel between the two ordered phases below the transition, and on a finite lattice just
above it tunnelling is still far slower than tau.  All of this is recorded as attributes.

Noise: Philox4x32-10 (``kernels.philox``), key = the seed; one purpose per generator (the
fourth counter word; PURPOSE_DATASET = 16):

========  =====================================================================
purpose   use (counter = (walker, step, block, purpose))
========  =====================================================================
16        double-well: sample i's uniform is (i, 0, 0) words (w0, w1)
17, 18    ising: Metropolis and Wolff kernel words (``kernels.ising_cpu``)
19        ising: global flip of sample i, (i, 1, 0) words (w0, w1)
20        muller-brown: attempt a of sample i uses (i, a, 0..1): cell, x, y, accept
21        gaussian-mixture: normals z_i = elements 0..dim-1 of walker i's normal stream;
          component uniform (i, 2^32-1, 0)
22        harmonic-chain: normals, elements 0..P-1 of walker i's normal stream
23        phi4: HMC momenta and accept/jitter uniforms (``kernels.phi4_cpu``)
24        phi4: global flip of sample i, (i, 1, 0) words (w0, w1)
25        swiss-roll: normals, elements 0, 1 of walker i's stream; u from (i, 2^32-1, 0)
========  =====================================================================

``--method langevin`` also draws the Euler-Maruyama noise of ``nonequil.simulate``
(purpose 1) under the derived key ``(w1 << 32) | w0`` of the words of
``(2^32-1, 2^32-1, 2^32-1, purpose)`` under the seed, so it never shares words with a
``nonequil simulate`` run of the same seed.  Normal streams are documented in
``kernels.philox``; uniforms are 53-bit in (0, 1].  Every draw is a pure function of
(seed, purpose, sample index, ...), so the same arguments give the same samples, bit for
bit, whatever the thread count (BLAS runs on one thread while a generator runs, so the
quadrature references do not depend on it; the Cholesky transforms sum each row in a fixed order,
without BLAS, so a row does not depend on the other rows either).

Sharding: every generator but ising and phi4 (``Generator.shardable``) draws sample i from
(seed, parameters, i) alone, including the Langevin relaxation (walker i of the run is
sample i), so ``generate(..., first=F)`` gives rows F.. of the ``first=0`` dataset, bit
for bit; ``nonequil dataset --cluster/--scheduler`` (``nonequil.distributed``) joins such
shards.  The reference attributes and ``/reference`` datasets come from the law and are the
same in every shard.  Attributes computed from the samples are only ``n``,
``first_sample`` and, for muller-brown's rejection sampler, ``acceptance``,
``rejection_rounds`` and ``rejection_attempts``: the assembly recomputes them for the whole
set (sum of attempts, largest round count), equal to a one-process run's.
"""
import dataclasses
import functools
import json
import math
import time

import numpy as np

from .errors import InputError, RunError

PURPOSE_DATASET = 16                       # = kernels.philox.PURPOSE_DATASET (tested)
P_DOUBLE_WELL, P_ISING_FLIP, P_MULLER_BROWN = 16, 19, 20
P_MIXTURE, P_CHAIN, P_PHI4, P_PHI4_FLIP, P_SWISS = 21, 22, 23, 24, 25
TOP = 0xFFFFFFFF
MAX_N = 2 ** 32 - 1                        # sample indices are walker words (< 2**32 - 1)
REPLICAS = 32
PILOT_BURN = 64
PILOT_TAUS = 50.0
SPACING_TAUS = 4.0
WINDOW_C = 6.0
MAX_PILOT = 2 ** 19


# ================================================================== registry
@dataclasses.dataclass(frozen=True)
class Key:
    """A ``--set`` key: default, unit, meaning, kind (float|int|floats|choice)."""
    default: object
    unit: str
    doc: str
    kind: str = "float"
    choices: tuple = ()
    methods: tuple = ()          # methods the key applies to (empty: all)


@dataclasses.dataclass(frozen=True)
class Generator:
    name: str
    formula: str
    units: str
    keys: dict
    methods: tuple               # the first is the default
    purpose: int
    sample: object               # sample(n, p, method, seed, device, callback, first) -> Dataset
    devices: dict = dataclasses.field(default_factory=dict)   # method -> devices (cpu only)
    shardable: bool = True       # sample i is a pure function of (seed, parameters, i)


@dataclasses.dataclass
class Dataset:
    """What a generator returns: ``samples``, attributes for ``/samples``, extra datasets."""
    samples: np.ndarray
    attrs: dict
    extra: dict
    elapsed: float = 0.0


def _langevin_keys(dt):
    m = ("langevin",)
    return {"dt": Key(dt, "time", "Euler-Maruyama step", methods=m),
            "gamma": Key(1.0, "energy time / length^2", "friction", methods=m),
            "relax": Key(10.0, "1", "run length in relaxation times t_relax", methods=m),
            "start": Key("exact", "", "initial state", "choice", ("exact", "minimum"), m)}


# ================================================================== parameters
def _value(gen, key, spec, raw):
    what = f"--set {key}={raw!r} for dataset {gen}"
    try:
        if spec.kind == "choice":
            v = str(raw).strip()
            if v not in spec.choices:
                raise InputError(f"{what}: expected one of {', '.join(spec.choices)}")
            return v
        if spec.kind == "floats":
            items = raw.split(",") if isinstance(raw, str) else np.ravel(raw).tolist()
            v = [float(t) for t in items if not (isinstance(t, str) and not t.strip())]
            if not v:
                raise ValueError
        else:
            v = float(raw)
            if spec.kind == "int":
                if v != int(v):
                    raise InputError(f"{what}: expected an integer")
                v = int(v)
    except (TypeError, ValueError, OverflowError):
        kind = {"floats": "a number or a comma list of numbers", "int": "an integer"}
        raise InputError(f"{what}: expected {kind.get(spec.kind, 'a number')}") from None
    if not all(math.isfinite(t) for t in (v if isinstance(v, list) else [v])):
        raise InputError(f"{what}: values must be finite")
    return v


def get(name):
    """The :class:`Generator` called ``name`` (InputError listing the valid names)."""
    try:
        return GENERATORS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; valid: {', '.join(GENERATORS)}") from None


def resolve(name, params=None, method=None, n=None, device="cpu"):
    """Validate everything; return ``(generator, method, parameters)`` or raise InputError.

    ``params`` maps keys to values or strings (as given to ``--set``: numbers, comma lists,
    choice names).  Keys left out take their defaults.
    """
    gen = get(name)
    method = gen.methods[0] if method is None else method
    if method not in gen.methods:
        raise InputError(f"--method {method!r} is not available for dataset {name}; valid: "
                         f"{', '.join(gen.methods)}")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r}: expected cpu or cuda")
    if device != "cpu" and device not in gen.devices.get(method, ()):
        ok = [m for m, d in gen.devices.items() if device in d]
        raise InputError(f"dataset {name} --method {method} runs on the CPU only; use "
                         f"--device cpu" + (f" (cuda: --method {', '.join(ok)})" if ok else ""))
    if device == "cuda":
        from numba import cuda

        if not cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is available (set "
                             "NUMBA_ENABLE_CUDASIM=1 for the simulator, or use --device cpu)")
    if n is not None and (not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_N):
        raise InputError(f"--n must be an integer in 1..{MAX_N}, got {n!r}")
    p = {}
    given = set((params or {}).keys())
    for key, raw in (params or {}).items():
        spec = gen.keys.get(key)
        if spec is None:
            raise InputError(f"unknown parameter {key!r} for dataset {name}; valid: "
                             f"{_key_list(gen)}")
        if spec.methods and method not in spec.methods:
            raise InputError(f"--set {key} applies to dataset {name} only with --method "
                             f"{' or '.join(spec.methods)}, not --method {method}")
        p[key] = _value(name, key, spec, raw)
    for key, spec in gen.keys.items():
        if key not in p and (not spec.methods or method in spec.methods):
            p[key] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    _CHECKS[name](p, method, given)
    return gen, method, p


def _key_list(gen):
    common = [k for k, s in gen.keys.items() if not s.methods]
    text = ", ".join(common)
    for m in gen.methods:
        extra = [k for k, s in gen.keys.items() if m in s.methods]
        if extra:
            text += f" (with --method {m} also: {', '.join(extra)})"
    return text


def _need(cond, msg):
    if not cond:
        raise InputError(msg)


# ================================================================== running
def check_first(gen, n, first):
    """Validate ``first`` (absolute index of the first sample) for generator ``gen``."""
    if not isinstance(first, (int, np.integer)) or first < 0:
        raise InputError(f"first sample index must be an integer >= 0, got {first!r}")
    if first and not gen.shardable:
        raise InputError(f"dataset {gen.name} cannot be drawn from a first sample index other "
                         f"than 0: {NOT_SHARDABLE}")
    if n is not None and first + n > MAX_N:
        raise InputError(f"first sample {first} + --n {n} must be at most {MAX_N}")


NOT_SHARDABLE = ("its samples come from replica Markov chains (sample k R + r is replica r "
                 "after round k), so a sample depends on every sample before it; run it in "
                 "one process")


def generate(name, n, params=None, method=None, seed=0, device="cpu", callback=None, first=0):
    """Draw ``n`` samples of dataset ``name``; returns a :class:`Dataset`.

    ``seed`` in [0, 2**64) keys the Philox noise; ``callback(info)`` receives progress dicts
    ``{"stage", "done", "total"}``.  ``first`` is the absolute index of the first sample:
    for a generator with ``shardable`` set, samples ``first .. first+n-1`` are bit for bit
    rows ``first .. first+n-1`` of the dataset drawn with ``first=0`` (a sharded run joins
    such pieces); others accept only 0.  Raises InputError for bad arguments (before any
    work).
    """
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise InputError(f"--seed must be an integer in 0..2**64-1, got {seed!r}")
    gen, method, p = resolve(name, params, method, n, device)
    check_first(gen, n, first)
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    # one BLAS thread: a multi-threaded dot product (the quadrature references) splits its
    # sum by thread count, and a Dask worker has fewer threads than a lone process
    with threadpool_limits(1, user_api="blas"):
        ds = gen.sample(int(n), p, method, int(seed), device,
                        callback or (lambda info: None), first=int(first))
    attrs = {"source": f"nonequil dataset {name}", "generator": name, "method": method,
             "formula": gen.formula, "units": gen.units,
             "parameters": json.dumps(p, sort_keys=True), "n": int(n), "seed": str(seed),
             "first_sample": int(first), "purpose": gen.purpose,
             "counter_layout": _COUNTER_NOTE}
    attrs.update({k: v for k, v in p.items() if k not in attrs})
    attrs.update(ds.attrs)
    ds.attrs = attrs                    # (no wall-clock time goes into the file)
    ds.elapsed = time.perf_counter() - t0
    return ds


_COUNTER_NOTE = ("philox4x32-10, key = seed, counter = (sample or replica index, step, block, "
                 "purpose); purposes: double-well 16, ising 17/18 (kernels) and 19 (flips), "
                 "muller-brown 20, gaussian-mixture 21, harmonic-chain 22, phi4 23 (HMC) and "
                 "24 (flips), swiss-roll 25; see nonequil.datasets")


def write_dataset(out, name, n, params=None, method=None, seed=0, device="cpu",
                  callback=None, first=0):
    """Validate, generate and write ``out`` (``/samples`` + extras, via ``out.partial``);
    ``first`` as for :func:`generate` (a shard of a sharded run)."""
    from .store import check_out_path, provenance, write_samples

    check_out_path(out)
    gen = resolve(name, params, method, n, device)[0]
    check_first(gen, n, first)
    ds = generate(name, n, params, method, seed, device, callback, first)
    config = dataset_config(name, n, ds.attrs, seed, device, first)
    write_samples(out, ds.samples, ds.attrs, ds.extra, provenance(config, device, "float64"))
    return ds


def dataset_config(name, n, attrs, seed, device, first=0):
    """The ``/provenance`` configuration of a dataset file (also identifies a shard: the
    normals' Box-Muller version is part of it, so a shard of another version is not kept)."""
    from kernels.philox import NORMALS_VERSION

    return {"dataset": name, "n": int(n), "method": attrs["method"],
            "parameters": json.loads(attrs["parameters"]), "seed": int(seed),
            "device": device, "first_sample": int(first), "normals": NORMALS_VERSION}


def _rows_times(z, L):
    """``z @ L.T`` for z [n, k] and a lower-triangular L [k, k], each row summed in the same
    fixed order (column 0, 1, ...) whatever n is, so row i does not depend on the other rows
    (BLAS matrix products do: their kernels differ with the row count)."""
    out = z[:, :1] * L[:, 0]
    for j in range(1, L.shape[0]):
        out[:, j:] += z[:, j:j + 1] * L[j:, j]
    return out


# ================================================================== Philox fills
def _uniforms(seed, purpose, n, step, k=1, first=0):
    from kernels import streams

    u = np.empty((n, k))
    streams.uniforms(np.uint64(seed), np.uint64(purpose), first, np.uint64(step), u)
    return u


def _normals(seed, purpose, n, k, first=0):
    from kernels import streams

    z = np.empty((n, k))
    streams.normals(np.uint64(seed), np.uint64(purpose), first, 0, z)
    return z


def _derived_seed(seed, purpose):
    from kernels.philox import philox_words

    u = np.uint64(TOP)
    w = philox_words(np.uint64(seed), np.uint64(purpose), u, u, u)
    return int(w[0]) | (int(w[1]) << 32)


def _flips(seed, purpose, n):
    """-1 / +1 per sample: flip iff the uniform of (i, 1, 0) is <= 1/2 (replica chains only,
    which always start at sample 0)."""
    return np.where(_uniforms(seed, purpose, n, 1)[:, 0] <= 0.5, -1, 1)


# ================================================================== double well
def _check_double_well(p, method, given):
    _need(p["a"] > 0, f"--set a={p['a']}: the double well needs a > 0 (U -> -inf otherwise)")
    _need(p["kT"] > 0, f"--set kT={p['kT']}: kT must be > 0")
    if method == "langevin":
        _check_langevin(p)


def _check_langevin(p):
    for k in ("dt", "gamma", "relax"):
        _need(p[k] > 0, f"--set {k}={p[k]}: must be > 0")


def _dw_boltzmann(p):
    from .analytic import double_well_boltzmann

    return double_well_boltzmann(p["a"], p["b"], p["kT"])


def _double_well(n, p, method, seed, device, callback, first=0):
    from .analytic import double_well_stationary_points

    law = _dw_boltzmann(p)
    if method == "exact" or p["start"] == "exact":
        u = _uniforms(seed, P_DOUBLE_WELL, n, 0, first=first)[:, 0]
        x = np.empty(n)
        chunk = 1 << 18
        for s in range(0, n, chunk):
            x[s:s + chunk] = law.inverse_cdf(u[s:s + chunk])
            callback({"stage": "inverse CDF", "done": min(n, s + chunk), "total": n})
    pts = double_well_stationary_points(p["a"], p["b"])
    attrs = {"reference_log_z": law.log_z, "reference_free_energy": law.free_energy,
             "reference_mean_energy": law.mean_energy, "quadrature": "Simpson, 20001 nodes "
             f"on [{law.x[0]:g}, {law.x[-1]:g}]"}
    if pts.size == 3:
        attrs["basin_divider"] = float(pts[1])
        attrs["reference_populations"] = law.populations([pts[1]])
    if method == "exact":
        return Dataset(x, attrs, {})
    U = lambda y: p["a"] * (y * y - 1.0) ** 2 + p["b"] * y          # noqa: E731
    minima = pts[[0, -1]] if pts.size == 3 else pts
    x_min = float(minima[np.argmin(U(minima))])
    curv = float(np.min(12.0 * p["a"] * minima ** 2 - 4.0 * p["a"]))
    if p["start"] == "exact":
        t_relax = p["gamma"] / curv
    else:
        grid = np.linspace(law.x[0], law.x[-1], 2001)
        t_relax = 1.0 / _fp_gap(U(grid), [grid[1] - grid[0]], p["kT"], p["gamma"])
        x = np.full(n, x_min)
    params = {"a": p["a"], "b": p["b"], "kT": p["kT"], "gamma": p["gamma"]}
    y, info = _run_langevin("double-well", params, x[:, None], t_relax, p, seed, device,
                            callback, first)
    attrs.update(info)
    return Dataset(y[:, 0], attrs, {})


def _fp_gap(U, h, kT, gamma):
    """Spectral gap lambda_1 (1/time) of the overdamped Fokker-Planck generator, from the
    symmetrised birth-death discretisation on a grid (U [nx] or [nx, ny], steps h); nodes
    more than 40 kT above the minimum are left out (reflecting)."""
    from scipy import sparse
    from scipy.sparse.linalg import eigsh

    e = (U - U.min()) / kT
    keep = e < 40.0
    idx = np.full(U.shape, -1, np.int64)
    idx[keep] = np.arange(int(keep.sum()))
    m = int(keep.sum())
    D = kT / gamma
    rows, cols, vals = [], [], []
    diag = np.zeros(m)
    for ax in range(U.ndim):
        a = [slice(None)] * U.ndim
        b = [slice(None)] * U.ndim
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        ia, ib = idx[tuple(a)].ravel(), idx[tuple(b)].ravel()
        ea, eb = e[tuple(a)].ravel(), e[tuple(b)].ravel()
        ok = (ia >= 0) & (ib >= 0)
        ia, ib, ea, eb = ia[ok], ib[ok], ea[ok], eb[ok]
        c = D / h[ax] ** 2
        np.add.at(diag, ia, c * np.exp(-(eb - ea) / 2.0))
        np.add.at(diag, ib, c * np.exp(-(ea - eb) / 2.0))
        rows += [ia, ib]
        cols += [ib, ia]
        vals += [np.full(ia.size, -c)] * 2
    A = sparse.coo_matrix((np.concatenate(vals + [diag]),
                           (np.concatenate(rows + [np.arange(m)]),
                            np.concatenate(cols + [np.arange(m)]))), shape=(m, m)).tocsc()
    lam = np.sort(eigsh(A, k=2, sigma=-1e-6, which="LM", return_eigenvectors=False,
                        v0=np.ones(m))) if m > 2 else np.array([0.0, 0.0])
    if not lam[1] > 1e-12:
        raise InputError("start=minimum: the relaxation is too slow to compute (spectral gap "
                         f"{lam[1]:.3g}); use --set start=exact")
    return float(lam[1])


def _run_langevin(potential, params, x0, t_relax, p, seed, device, callback, first=0):
    from .simulate import simulate

    steps = int(math.ceil(p["relax"] * t_relax / p["dt"]))
    n = x0.shape[0]
    if steps >= 2 ** 31 or steps * n > 1e13:
        raise InputError(f"--method langevin would need {steps} steps of dt={p['dt']:g} "
                         f"(relax x t_relax = {p['relax']:g} x {t_relax:.4g}) for {n} walkers; "
                         "use --set start=exact, a larger dt, or a smaller relax")

    def relay(info):
        callback({"stage": "langevin", "done": info["step"], "total": info["steps"]})
    r = simulate(process="langevin", potential=potential, params=params, walkers=n,
                 steps=max(steps, 1), dt=p["dt"], seed=_derived_seed(seed, _purpose_of(
                     potential)), x0=np.ascontiguousarray(x0), record_every=max(steps, 1),
                 first_walker=first,
                 device=device, callback=relay)
    info = {"langevin_steps": steps, "langevin_dt": p["dt"], "langevin_gamma": p["gamma"],
            "langevin_t_relax": t_relax, "langevin_start": p["start"],
            "langevin_scheme": "overdamped Euler-Maruyama (nonequil.simulate, purpose 1 "
            "under the derived key)"}
    return r.x, info


def _purpose_of(potential):
    return {"double-well": P_DOUBLE_WELL, "muller-brown": P_MULLER_BROWN}[potential]


# ================================================================== Müller-Brown
MB_XLIM, MB_YLIM, MB_NX, MB_NY = (-3.3, 1.5), (-1.3, 3.3), 961, 921
MB_EDGE_KT = 30.0


@functools.lru_cache(maxsize=16)
def _mb_box(kT, scale):
    """The sampling box: the grid box of ``muller_brown_boltzmann``, widened by 0.25 per
    side until its edge lies >= MB_EDGE_KT kT above the minimum (None if [-6, 4] x [-4, 6]
    does not suffice)."""
    from .analytic import muller_brown_energy, muller_brown_minima

    umin = muller_brown_minima(1.0)[1].min()
    for k in range(17):
        xl = (max(MB_XLIM[0] - 0.25 * k, -6.0), min(MB_XLIM[1] + 0.25 * k, 4.0))
        yl = (max(MB_YLIM[0] - 0.25 * k, -4.0), min(MB_YLIM[1] + 0.25 * k, 6.0))
        x = np.linspace(*xl, MB_NX)
        y = np.linspace(*yl, MB_NY)
        edge = np.concatenate([np.stack([x, np.full_like(x, y[0])], 1),
                               np.stack([x, np.full_like(x, y[-1])], 1),
                               np.stack([np.full_like(y, x[0]), y], 1),
                               np.stack([np.full_like(y, x[-1]), y], 1)])
        gap = (muller_brown_energy(edge, 1.0).min() - umin) * scale / kT
        if gap >= MB_EDGE_KT:
            return xl, yl
    return None


def _check_muller_brown(p, method, given):
    _need(p["kT"] > 0, f"--set kT={p['kT']}: kT must be > 0")
    _need(p["scale"] > 0, f"--set scale={p['scale']}: scale must be > 0")
    _need(_mb_box(p["kT"], p["scale"]) is not None,
          f"muller-brown with kT={p['kT']:g}, scale={p['scale']:g}: too hot to sample; even "
          f"the box [-6, 4] x [-4, 6] has points less than {MB_EDGE_KT:g} kT above the "
          "minimum on its edge; lower kT/scale")
    if method == "langevin":
        _check_langevin(p)


@functools.lru_cache(maxsize=4)
def _mb_envelope(kT, scale):
    """Grid cells and a rigorous lower bound U_low of U on each (see the module docstring)."""
    from .analytic import MB_A, MB_X0, MB_Y0, MB_a, MB_b, MB_c

    xl, yl = _mb_box(kT, scale)
    x = np.linspace(*xl, MB_NX)
    y = np.linspace(*yl, MB_NY)
    hx, hy = x[1] - x[0], y[1] - y[0]
    cx = (x[:-1] + 0.5 * hx)[:, None]
    cy = (y[:-1] + 0.5 * hy)[None, :]
    r = 0.5 * math.hypot(hx, hy)
    U = np.zeros((MB_NX - 1, MB_NY - 1))
    gx = np.zeros_like(U)
    gy = np.zeros_like(U)
    H = np.zeros_like(U)
    for k in range(4):
        dx, dy = cx - MB_X0[k], cy - MB_Y0[k]
        q = MB_a[k] * dx * dx + MB_b[k] * dx * dy + MB_c[k] * dy * dy
        qx, qy = 2 * MB_a[k] * dx + MB_b[k] * dy, MB_b[k] * dx + 2 * MB_c[k] * dy
        hq = float(np.max(np.abs(np.linalg.eigvalsh(
            np.array([[2 * MB_a[k], MB_b[k]], [MB_b[k], 2 * MB_c[k]]])))))
        t = scale * MB_A[k] * np.exp(q)
        U += t
        gx += t * qx
        gy += t * qy
        gq = np.hypot(qx, qy)
        H += (scale * abs(MB_A[k]) * np.exp(q + gq * r + 0.5 * hq * r * r)
              * ((gq + hq * r) ** 2 + hq))
    low = U - np.hypot(gx, gy) * r - 0.5 * H * r * r
    return x, y, hx, hy, low


@functools.lru_cache(maxsize=4)
def _mb_law(kT, scale):
    """The quadrature reference on the sampling box (cached: labelling the grid is slow)."""
    from .analytic import muller_brown_boltzmann

    xl, yl = _mb_box(kT, scale)
    return muller_brown_boltzmann(kT, scale, xl, yl, MB_NX, MB_NY)


def _mb_exact(n, p, seed, callback, first=0):
    from .analytic import muller_brown_energy

    kT = p["kT"]
    x, y, hx, hy, low = _mb_envelope(kT, p["scale"])
    ref = low.min()
    cum = np.cumsum(np.exp(-(low.ravel() - ref) / kT))
    total = cum[-1]
    lowf = low.ravel()
    ny = low.shape[1]
    out = np.empty((n, 2))
    pending = np.arange(n)
    attempts = 0
    a = 0
    while pending.size:
        if a >= TOP:
            raise RunError("muller-brown rejection sampling ran out of attempts")
        lo, hi = int(pending[0]), int(pending[-1]) + 1
        u = _uniforms(seed, P_MULLER_BROWN, hi - lo, a, 4, first=first + lo)[pending - lo]
        cell = np.minimum(np.searchsorted(cum, u[:, 0] * total, side="left"), cum.size - 1)
        i, j = np.divmod(cell, ny)
        pt = np.stack([x[i] + u[:, 1] * hx, y[j] + u[:, 2] * hy], 1)
        acc = u[:, 3] <= np.exp(-(muller_brown_energy(pt, p["scale"]) - lowf[cell]) / kT)
        out[pending[acc]] = pt[acc]
        attempts += pending.size
        pending = pending[~acc]
        a += 1
        callback({"stage": "rejection sampling", "done": n - pending.size, "total": n})
    return out, {"acceptance": n / attempts, "rejection_rounds": a,
                 "rejection_attempts": attempts,
                 "grid": f"{MB_NX} x {MB_NY} nodes on [{x[0]:g}, {x[-1]:g}] x "
                 f"[{y[0]:g}, {y[-1]:g}]"}


def _muller_brown(n, p, method, seed, device, callback, first=0):
    from .analytic import (muller_brown_basin, muller_brown_energy, muller_brown_gradient,
                           muller_brown_minima)

    xy, attrs = None, {}
    if method == "exact" or p["start"] == "exact":
        xy, attrs = _mb_exact(n, p, seed, callback, first)
    if method == "langevin":
        minima = muller_brown_minima(p["scale"])[0]
        hess = []
        for m in minima:
            e = 1e-5
            cols = [(muller_brown_gradient(m + e * d, p["scale"])
                     - muller_brown_gradient(m - e * d, p["scale"])) / (2 * e)
                    for d in np.eye(2)]
            hess.append(np.linalg.eigvalsh(0.5 * (np.array(cols) + np.array(cols).T)).min())
        if p["start"] == "exact":
            t_relax = p["gamma"] / min(hess)
        else:
            xl, yl = _mb_box(p["kT"], p["scale"])
            gx = np.linspace(*xl, 241)
            gy = np.linspace(*yl, 231)
            G = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1)
            t_relax = 1.0 / _fp_gap(muller_brown_energy(G, p["scale"]),
                                    [gx[1] - gx[0], gy[1] - gy[0]], p["kT"], p["gamma"])
            xy = np.tile(minima[0], (n, 1))
        params = {"kT": p["kT"], "scale": p["scale"], "gamma": p["gamma"]}
        xy, info = _run_langevin("muller-brown", params, xy, t_relax, p, seed, device,
                                 callback, first)
        attrs.update(info)
    callback({"stage": "basin labels", "done": 0, "total": 1})
    labels = muller_brown_basin(xy).astype(np.int8)
    law = _mb_law(p["kT"], p["scale"])
    attrs.update({"reference_populations": law.populations, "reference_log_z": law.log_z,
                  "reference_free_energy": law.free_energy,
                  "reference_mean_energy": law.mean_energy,
                  "labels": "0 = A (-0.558, 1.442), 1 = B (0.623, 0.028), 2 = C (-0.050, "
                  "0.467): steepest-descent basins"})
    return Dataset(xy, attrs, {"labels": labels})


# ================================================================== Gaussian mixture
def _check_mixture(p, method, given):
    D = p["dim"]
    _need(1 <= D <= 4096, f"--set dim={D}: expected 1..4096")
    w = np.array(p["weights"])
    K = w.size
    _need(np.all(w >= 0) and w.sum() > 0, "--set weights: need non-negative weights with a "
          "positive sum")
    _need(len(p["means"]) in (K, K * D), f"--set means: {len(p['means'])} values; with "
          f"{K} weights and dim={D} give {K} values" + (f" (first coordinate) or {K * D} "
                                                         "(K x dim, row-major)" if D > 1 else ""))
    if "covs" in given:
        _need("sigmas" not in given, "give --set sigmas or --set covs, not both")
        p["sigmas"] = None
        _need(len(p["covs"]) in (K, K * D, K * D * D), f"--set covs: {len(p['covs'])} values; "
              f"give {K} (isotropic variances), {K * D} (diagonal variances) or {K * D * D} "
              "(full K x dim x dim matrices, row-major)")
    else:
        s = np.array(p["sigmas"])
        _need(s.size in (K, K * D), f"--set sigmas: {s.size} values; give {K} (isotropic) or "
              f"{K * D} (per coordinate) standard deviations")
        _need(np.all(s > 0), "--set sigmas: standard deviations must be > 0")
    try:
        _mixture(p)
    except ValueError as e:
        raise InputError(f"dataset gaussian-mixture: {e}") from None


def _mixture(p):
    from .analytic import GaussianMixture

    D, w = p["dim"], np.array(p["weights"])
    K = w.size
    m = np.array(p["means"])
    means = np.zeros((K, D))
    if m.size == K and D > 1:
        means[:, 0] = m
    else:
        means = m.reshape(K, D)
    if p.get("covs") is not None:
        c = np.array(p["covs"])
        covs = c if c.size == K else c.reshape(K, D) if c.size == K * D else c.reshape(K, D, D)
    else:
        s = np.array(p["sigmas"])
        covs = s ** 2 if s.size == K else (s ** 2).reshape(K, D)
    return GaussianMixture(w, means, covs)


def _gaussian_mixture(n, p, method, seed, device, callback, first=0):
    gm = _mixture(p)
    D = gm.dim
    u = _uniforms(seed, P_MIXTURE, n, TOP, first=first)[:, 0]
    x = _normals(seed, P_MIXTURE, n, D, first=first)
    # component k iff c_{k-1} < u <= c_k (c the cumulative weights; u in (0, 1])
    comp = np.minimum(np.searchsorted(np.cumsum(gm.weights), u, side="left"),
                      gm.weights.size - 1)
    chol = np.linalg.cholesky(gm.covs)
    for k in range(gm.weights.size):
        sel = np.nonzero(comp == k)[0]
        x[sel] = gm.means[k] + _rows_times(x[sel], chol[k])
    callback({"stage": "sampling", "done": n, "total": n})
    attrs = {"reference_mean": gm.mean(), "component_weights": gm.weights}
    extra = {"labels": comp.astype(np.int8 if gm.weights.size < 128 else np.int32),
             "reference/mean": gm.mean(), "reference/cov": gm.cov(),
             "reference/means": gm.means, "reference/covs": gm.covs}
    return Dataset(x if D > 1 else x[:, 0], attrs, extra)


# ================================================================== harmonic chain
def _check_chain(p, method, given):
    P = p["particles"]
    _need(1 <= P <= 4096, f"--set particles={P}: expected 1..4096")
    _need(p["kT"] > 0, f"--set kT={p['kT']}: kT must be > 0")
    _need(p["k"] >= 0 and p["k0"] >= 0, f"--set k={p['k']}, k0={p['k0']}: stiffnesses must "
          "be >= 0")
    if p["ends"] == "periodic":
        _need(p["k0"] > 0, "harmonic-chain with ends=periodic needs an on-site stiffness "
              "k0 > 0: without it the uniform translation u_i -> u_i + c costs no energy (a "
              "zero mode), so exp(-U/kT) has no normalisable Boltzmann law; give e.g. "
              "--set k0=0.1, or use --set ends=fixed")
    else:
        _need(p["k"] > 0 or p["k0"] > 0, "harmonic-chain with fixed ends needs k > 0 or k0 > 0")


def _harmonic_chain(n, p, method, seed, device, callback, first=0):
    from .analytic import HarmonicChain

    hc = HarmonicChain(p["particles"], p["k"], p["k0"], p["ends"], p["kT"])
    cov = hc.covariance()
    P = hc.P
    u = np.empty((n, P))
    C = np.linalg.cholesky(cov)
    step = max(1, (1 << 22) // P)
    for s in range(0, n, step):
        z = _normals(seed, P_CHAIN, min(step, n - s), P, first=first + s)
        u[s:s + step] = _rows_times(z, C)
        callback({"stage": "sampling", "done": min(n, s + step), "total": n})
    attrs = {"reference_log_z": float(hc.log_z()), "reference_free_energy":
             float(hc.free_energy()), "reference_entropy": float(hc.entropy()),
             "reference_mean_energy": hc.mean_energy()}
    return Dataset(u, attrs, {"reference/covariance": cov,
                              "reference/eigenvalues": hc.eigenvalues()})


# ================================================================== Markov chains
def tau_int(series, c=WINDOW_C):
    """Integrated autocorrelation time of ``series`` [n, R] (R replicas) in Sokal's
    convention ``1/2 + sum_{t>=1} rho(t)`` with the automatic window (smallest W >= c
    tau(W)); returns ``(tau, ok)``, ok False when no window fits in n/2.  The
    autocovariance is taken around the grand mean, normalised by n - t, summed over
    replicas."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    x = x - x.mean()
    f = np.fft.rfft(x, 2 * n, axis=0)
    acf = np.fft.irfft(f * np.conj(f), 2 * n, axis=0)[:n].sum(axis=1) / (n - np.arange(n))
    if not acf[0] > 0.0:                # a constant series
        return 0.5, True
    taus = np.cumsum(acf / acf[0]) - 0.5
    w = np.arange(n)
    ok = (w >= 1) & (w >= c * taus) & (w < n // 2)
    if not ok.any():
        return float(max(taus[n // 2], 0.5)), False
    return float(max(taus[int(np.argmax(ok))], 0.5)), True


def _markov(n, runner, unit, callback):
    """Pilot (tau), thermalisation and spaced sampling over the runner's R replicas."""
    runner.advance(PILOT_BURN, record=False)
    total = PILOT_BURN
    while True:
        chunk = total
        a, b = runner.advance(chunk, record=True)
        total += chunk
        (ta, oka), (tb, okb) = tau_int(a), tau_int(b)
        tau = max(ta, tb)
        callback({"stage": f"pilot ({unit})", "done": total, "total": total})
        if oka and okb and chunk >= PILOT_TAUS * tau:
            break
        if total >= MAX_PILOT:
            raise RunError(f"{runner.name}: the autocorrelation time could not be measured "
                           f"within {MAX_PILOT} {unit} (tau >= {tau:.3g}); "
                           f"{runner.too_slow}")
    spacing = max(1, int(math.ceil(SPACING_TAUS * tau)))
    R = runner.R
    rounds = -(-n // R)
    out = np.empty((rounds * R,) + runner.shape, runner.dtype)
    for k in range(rounds):
        runner.advance(spacing, record=False)
        out[k * R:(k + 1) * R] = runner.state()
        callback({"stage": "sampling", "done": min(n, (k + 1) * R), "total": n})
    info = {f"tau_int_{runner.names[0]}": ta, f"tau_int_{runner.names[1]}": tb,
            "tau_int": tau, "tau_unit": unit, "tau_estimator": "Sokal automatic window, "
            f"c = {WINDOW_C:g}, tau = 1/2 + sum rho; replica-summed autocovariance",
            "thermalisation": total, "pilot_analysed": chunk, "spacing": spacing,
            "replicas": R, "start": runner.start,
            "sample_order": "sample k R + r is replica r after round k"}
    return out[:n], info


class _IsingRunner:
    names = ("abs_m", "energy")
    shape = ()
    dtype = np.int8
    start = "ordered: all spins +1"

    def __init__(self, R, L, T, method, seed, device):
        self.R, self.L, self.beta, self.method = R, L, 1.0 / T, method
        self.seed, self.device, self.t = seed, device, 0
        self.shape = (L, L)
        self.spins = np.ones((R, L, L), np.int8)
        self.name = f"ising --method {method}"
        self.too_slow = ("near Tc use --method wolff, or a smaller L" if method == "metropolis"
                         else "use a smaller L")
        self.d_spins = None
        if device == "cuda":
            from numba import cuda

            self.d_spins = cuda.to_device(self.spins)

    def advance(self, k, record):
        from kernels import ising_cpu

        e = np.empty((k, self.R)) if record else None
        m = np.empty((k, self.R)) if record else None
        if self.device == "cuda":
            from kernels.ising_cuda import metropolis_sweeps_cuda

            if record:
                for s in range(k):
                    metropolis_sweeps_cuda(self.d_spins, self.beta, self.seed, self.t + s, 1)
                    e[s], m[s] = ising_cpu.energy_magnetisation(self.d_spins.copy_to_host())
            else:
                metropolis_sweeps_cuda(self.d_spins, self.beta, self.seed, self.t, k)
        elif self.method == "metropolis":
            ising_cpu.metropolis_sweeps(self.spins, self.beta, self.seed, self.t, k,
                                        out=(e, m) if record else None)
        else:
            ising_cpu.wolff_updates(self.spins, self.beta, self.seed, self.t, k,
                                    out=(e, m) if record else None)
        self.t += k
        return (np.abs(m), e) if record else None

    def state(self):
        return self.d_spins.copy_to_host() if self.d_spins is not None else self.spins


def _check_ising(p, method, given):
    L = p["L"]
    _need(L >= 2, f"--set L={L}: expected L >= 2")
    _need(method != "metropolis" or L % 2 == 0, f"--set L={L}: checkerboard Metropolis needs "
          "an even L (or use --method wolff)")
    _need(L <= 4096, f"--set L={L}: expected L <= 4096")
    _need(p["T"] > 0, f"--set T={p['T']}: the temperature must be > 0")


def _ising(n, p, method, seed, device, callback, first=0):
    from kernels.ising_cpu import energy_magnetisation

    from .analytic import ISING_TC, ising_energy, ising_kaufman, ising_magnetization

    runner = _IsingRunner(min(n, REPLICAS), p["L"], p["T"], method, seed, device)
    unit = "sweeps" if method == "metropolis" else "cluster updates"
    spins, info = _markov(n, runner, unit, callback)
    spins = np.ascontiguousarray(spins * _flips(seed, P_ISING_FLIP, n)[:, None, None]
                                 .astype(np.int8))
    e, m = energy_magnetisation(spins)
    kf = ising_kaufman(p["L"], p["T"])
    info.update({"global_flip": "each sample multiplied by -1 iff its purpose-19 uniform is "
                 "<= 1/2 (at every T)", "reference_energy_per_spin": kf.energy,
                 "reference_specific_heat_per_spin": kf.specific_heat,
                 "reference": "Kaufman (1949) exact L x L torus", "Tc": ISING_TC,
                 "onsager_energy_per_spin": float(ising_energy(p["T"])),
                 "onsager_magnetization": float(ising_magnetization(p["T"])),
                 "energy_units": "J per spin", "magnetization_units": "per spin"})
    return Dataset(spins, info, {"energy": e, "magnetization": m})


# ---------------------------------------------------------------- phi^4
TUNE_BLOCK = 16
TUNE_MAX_BLOCKS = 40


class _Phi4Runner:
    names = ("abs_m", "action")
    dtype = np.float64
    start = "ordered: phi = 1 on every site"
    too_slow = "choose (kappa, lambda) away from the transition, or a smaller L"

    def __init__(self, R, L, kappa, lam, seed):
        self.R, self.L, self.kappa, self.lam, self.seed = R, L, kappa, lam, seed
        self.shape = (L, L)
        self.phi = np.ones((R, L, L))
        self.t = 0
        self.n_leap = 10
        self.accepted = 0
        self.trajectories = 0
        self.name = "phi4 --method hmc"

    def _run(self, k, out=None):
        from kernels.phi4_cpu import hmc_trajectories

        acc, dh = hmc_trajectories(self.phi, self.kappa, self.lam, 1.0 / self.n_leap,
                                   self.n_leap, self.seed, self.t, k, out=out)
        if not np.all(np.isfinite(dh)) or not np.all(np.isfinite(self.phi)):
            raise RunError(f"phi4: the leapfrog integrator blew up (|dH| = {dh.max():.3g}) "
                           f"at trajectory {self.t}; the couplings may be unstable "
                           "(lambda must be >= 0)")
        self.t += k
        return int(acc.sum())

    def tune(self, callback):
        for block in range(TUNE_MAX_BLOCKS):
            a = self._run(TUNE_BLOCK) / (TUNE_BLOCK * self.R)
            callback({"stage": "tuning step size", "done": block + 1, "total": TUNE_MAX_BLOCKS})
            if a < 0.7:
                self.n_leap = int(math.ceil(self.n_leap * 1.25))
            elif a > 0.9 and self.n_leap > 1:
                self.n_leap = max(1, int(math.floor(self.n_leap / 1.25)))
            else:
                return a
        return a

    def advance(self, k, record):
        if not record:
            self.accepted += self._run(k)
            self.trajectories += k * self.R
            return None
        s, m = np.empty((k, self.R)), np.empty((k, self.R))
        self.accepted += self._run(k, out=(s, m))
        self.trajectories += k * self.R
        return np.abs(m), s

    def state(self):
        return self.phi


def _check_phi4(p, method, given):
    _need(2 <= p["L"] <= 1024, f"--set L={p['L']}: expected 2..1024")
    _need(p["lambda"] >= 0, f"--set lambda={p['lambda']}: lambda must be >= 0 (the action "
          "is unbounded below otherwise)")
    _need(p["lambda"] > 0 or 4 * abs(p["kappa"]) < 1, "with lambda = 0 the Gaussian action "
          "needs |kappa| < 1/4")


def _phi4(n, p, method, seed, device, callback, first=0):
    from kernels.phi4_cpu import action_magnetisation

    runner = _Phi4Runner(min(n, REPLICAS), p["L"], p["kappa"], p["lambda"], seed)
    tuned = runner.tune(callback)
    tuning = runner.t
    phi, info = _markov(n, runner, "trajectories", callback)
    phi = phi * _flips(seed, P_PHI4_FLIP, n)[:, None, None]
    s, m = action_magnetisation(phi, p["kappa"], p["lambda"])
    info.update({"hmc_n_leapfrog": runner.n_leap, "hmc_step_size": 1.0 / runner.n_leap,
                 "hmc_step_jitter": "eps (0.9 + 0.2 u)", "hmc_trajectory_length": 1.0,
                 "hmc_tuning_trajectories": tuning, "hmc_tuning_acceptance": tuned,
                 "hmc_acceptance": runner.accepted / max(runner.trajectories, 1),
                 "thermalisation": info["thermalisation"] + tuning,
                 "global_flip": "each sample multiplied by -1 iff its purpose-24 uniform is "
                 "<= 1/2", "magnetization_units": "per site (sum phi / L^2)",
                 "action_units": "dimensionless (S, the whole lattice)"})
    return Dataset(np.ascontiguousarray(phi), info, {"magnetization": m, "action": s})


# ================================================================== swiss roll
def _check_swiss(p, method, given):
    _need(p["noise"] >= 0, f"--set noise={p['noise']}: must be >= 0")
    _need(p["scale"] > 0, f"--set scale={p['scale']}: must be > 0")


def _swiss_roll(n, p, method, seed, device, callback, first=0):
    u = _uniforms(seed, P_SWISS, n, TOP, first=first)[:, 0]
    z = _normals(seed, P_SWISS, n, 2, first=first)
    t = 1.5 * np.pi * (1.0 + 2.0 * u)
    x = np.stack([t * np.cos(t) + p["noise"] * z[:, 0], t * np.sin(t) + p["noise"] * z[:, 1]],
                 1) * p["scale"]
    callback({"stage": "sampling", "done": n, "total": n})
    return Dataset(x, {"reference": "Sohl-Dickstein et al. 2015 (arXiv 1503.03585), Fig. 1; "
                       "sklearn make_swiss_roll columns (x, z) / 10 with scale = 0.1"},
                   {"t": t})


# ================================================================== the registry
_CHECKS = {"double-well": _check_double_well, "muller-brown": _check_muller_brown,
           "gaussian-mixture": _check_mixture, "harmonic-chain": _check_chain,
           "ising": _check_ising, "phi4": _check_phi4, "swiss-roll": _check_swiss}

GENERATORS = {
    "double-well": Generator(
        "double-well", "p(x) = exp(-U(x)/kT) / Z, U = a (x^2 - 1)^2 + b x",
        "x dimensionless; a, b, kT in energy units", {
            "a": Key(1.0, "energy", "well depth / barrier height at b = 0"),
            "b": Key(0.0, "energy", "tilt"),
            "kT": Key(1.0, "energy", "temperature"), **_langevin_keys(1e-3)},
        ("exact", "langevin"), P_DOUBLE_WELL, _double_well, {"langevin": ("cpu", "cuda")}),
    "muller-brown": Generator(
        "muller-brown", "p(x, y) = exp(-U/kT) / Z, U = scale sum_i A_i exp(a_i (x-x0_i)^2 + "
        "b_i (x-x0_i)(y-y0_i) + c_i (y-y0_i)^2), Müller & Brown (1979) parameters",
        "x, y dimensionless; kT and scale in energy units", {
            "kT": Key(1.0, "energy", "temperature"),
            "scale": Key(0.1, "energy", "energy scale of the potential"),
            **_langevin_keys(1e-4)},
        ("exact", "langevin"), P_MULLER_BROWN, _muller_brown, {"langevin": ("cpu", "cuda")}),
    "gaussian-mixture": Generator(
        "gaussian-mixture", "p(x) = sum_k w_k N(x; m_k, Sigma_k)", "x in data units", {
            "dim": Key(1, "1", "dimension", "int"),
            "weights": Key((0.5, 0.5), "1", "K weights (normalised)", "floats"),
            "means": Key((-1.0, 1.0), "length", "K (first coordinate) or K*dim values",
                         "floats"),
            "sigmas": Key((0.5, 0.5), "length", "K or K*dim standard deviations", "floats"),
            "covs": Key(None, "length^2", "K, K*dim or K*dim*dim covariance entries "
                        "(instead of sigmas)", "floats")},
        ("exact",), P_MIXTURE, _gaussian_mixture),
    "harmonic-chain": Generator(
        "harmonic-chain", "p(u) ~ exp(-U/kT), U = k/2 sum (u_{i+1} - u_i)^2 + k0/2 sum u_i^2 "
        "(fixed: u_0 = u_{P+1} = 0; periodic: u_{P+1} = u_1)",
        "u in length; k, k0 in energy/length^2; kT in energy", {
            "particles": Key(8, "1", "number of particles P", "int"),
            "k": Key(1.0, "energy/length^2", "spring stiffness"),
            "k0": Key(0.0, "energy/length^2", "on-site stiffness (> 0 for periodic ends)"),
            "ends": Key("fixed", "", "boundary condition", "choice", ("fixed", "periodic")),
            "kT": Key(1.0, "energy", "temperature")},
        ("exact",), P_CHAIN, _harmonic_chain),
    "ising": Generator(
        "ising", "p(s) ~ exp(-E/T), E = -sum_<xy> s_x s_y, L x L periodic, J = kB = 1",
        "spins +-1 (int8); T and energies in units of J", {
            "L": Key(16, "sites", "lattice side", "int"),
            "T": Key(2.269, "J", "temperature (Tc = 2.2692)")},
        ("metropolis", "wolff"), P_ISING_FLIP, _ising, {"metropolis": ("cpu", "cuda")},
        shardable=False),
    "phi4": Generator(
        "phi4", "p(phi) ~ exp(-S), S = sum_x [-2 kappa sum_mu phi_x phi_{x+mu} + phi_x^2 + "
        "lambda (phi_x^2 - 1)^2], L x L periodic", "phi, kappa, lambda and S dimensionless", {
            "L": Key(16, "sites", "lattice side", "int"),
            "kappa": Key(0.3, "1", "hopping parameter (0.2 symmetric, 0.3 broken at "
                         "lambda = 0.022)"),
            "lambda": Key(0.022, "1", "quartic coupling")},
        ("hmc",), P_PHI4, _phi4, shardable=False),
    "swiss-roll": Generator(
        "swiss-roll", "t = 1.5 pi (1 + 2u); (x, y) = scale (t cos t + noise z1, t sin t + "
        "noise z2)", "x, y in data units (scale)", {
            "noise": Key(1.0, "length before scaling", "Gaussian noise sd"),
            "scale": Key(0.1, "1", "overall scale")},
        ("exact",), P_SWISS, _swiss_roll),
}


def describe():
    """A text table of the generators, their methods and keys (for ``dataset --help``)."""
    lines = ["datasets (--set KEY=DEFAULT: meaning, unit; the first method is the default):"]
    for g in GENERATORS.values():
        lines.append(f"  {g.name}: {g.formula}")
        lines.append(f"      methods: {', '.join(g.methods)}; units: {g.units}")
        for k, s in g.keys.items():
            d = (",".join(map(str, s.default)) if isinstance(s.default, tuple)
                 else "-" if s.default is None else s.default)
            only = f" [--method {'/'.join(s.methods)}]" if s.methods else ""
            ch = f" ({'|'.join(s.choices)})" if s.choices else ""
            unit = f", {s.unit}" if s.unit and s.unit != "1" else ""
            lines.append(f"      {k}={d}{ch}: {s.doc}{unit}{only}")
    return "\n".join(lines)
