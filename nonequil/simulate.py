"""Chunked simulation driver: validation, device dispatch, recording, checkpoint and resume.

``simulate(config, out=..., resume=False, callback=None)`` runs ``config.steps`` steps of
``config.walkers`` walkers (absolute indices ``first_walker ..``) and records every
``record_every``-th step (frame 0 is the initial state; the final step is always recorded).

The run goes in chunks of steps.  After each chunk the recorded frames are appended to
``OUT.partial`` (H5MD, flushed), and a checkpoint ``OUT.partial.ckpt`` with the whole
dynamical state (positions, velocities, work, heat, first-passage times), the step and the
number of committed frames is written atomically.  Chunks last about ``chunk_seconds``
(2 s) of compute, so a checkpoint lands at least every ~10 s.  On success the partial file is
renamed to ``OUT`` and the checkpoint removed.  Because every random number is a pure function
of (seed, purpose, walker, step, coordinate), the result does not depend on the chunking,
the thread count, the device or a resume.
"""
import dataclasses
import glob
import json
import math
import os
import re
import time

import numpy as np

from . import potentials as pots
from .errors import InputError, RunError
from .store import OutputLock

PROCESS_KEYS = {
    "ou": {"theta": 1.0, "mu": 0.0, "sigma": 1.0},
    "langevin": {"kT": 1.0, "gamma": 1.0},
    "underdamped": {"kT": 1.0, "gamma": 1.0, "mass": 1.0},
}
# forward SDEs of diffusion models (nonequil.processes), run as exact Gaussian chains on the
# OU kernels; parameters: ``schedule`` (vp, subvp) plus its keys, or sigma_min, sigma_max (ve)
FORWARD = ("vp", "subvp", "ve")
PROCESSES = tuple(PROCESS_KEYS) + FORWARD
METHODS = ("exact", "em")
MAX_U32 = 2**32

# configuration fields that a checkpoint must match to be resumed
_IDENTITY = ("process", "potential", "params", "walkers", "first_walker", "steps", "dt",
             "record_every", "x0", "init", "absorb", "seed", "device", "precision", "method",
             "dim")


@dataclasses.dataclass
class SimulationConfig:
    """Everything that defines a run (see ``nonequil simulate --help``)."""
    process: str = "ou"                # ou | langevin | underdamped | vp | subvp | ve
    potential: object = "harmonic"     # a name, or a user njit energy_grad(x, p, g) -> U
    params: dict = dataclasses.field(default_factory=dict)
    walkers: int = None
    steps: int = 1000
    dt: float = 1e-2
    first_walker: int = 0
    record_every: int = None           # default: about 100 frames
    x0: object = None                  # number, list (one per dimension) or "boltzmann"
    init: str = None                   # HDF5 sample set or trajectory
    absorb: str = None                 # "x>=B", "x[i]<=B", ...
    seed: int = 0
    device: str = "cpu"
    precision: str = "float64"
    method: str = None                 # ou, vp, subvp, ve: exact (default) | em;
                                       # langevin: em (default) | exact
    dim: int = None
    potential_params: object = None    # float64 vector for a user potential

    def identity(self):
        d = dataclasses.asdict(self)
        if callable(self.potential):
            d["potential"] = getattr(self.potential, "__name__", "user")
            d["potential_params"] = None if self.potential_params is None else \
                [float(t) for t in np.ravel(self.potential_params)]
        from kernels.philox import NORMALS_VERSION

        ident = {k: d[k] for k in _IDENTITY}
        ident["normals"] = NORMALS_VERSION      # the Box-Muller transform's version
        from kernels.potentials import POTENTIALS_VERSION, VERSIONED_POTENTIALS

        if self.process != "ou" and self.potential in VERSIONED_POTENTIALS:
            ident["potentials"] = POTENTIALS_VERSION   # its maths' version (exp_poly)
        return json.loads(json.dumps(ident, default=_jsonable))


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    return str(v)


@dataclasses.dataclass
class Result:
    """What a run returns: the final state and, without ``out``, the recorded frames."""
    x: np.ndarray
    v: np.ndarray
    work: np.ndarray                   # work, heat, first_passage_time: None for the
    heat: np.ndarray                   # Gaussian chains (ou without --absorb, vp, subvp,
    first_passage_time: np.ndarray     # ve), which do not compute them
    steps: int
    path: str = None
    frames: dict = None


ABSORB_RE = re.compile(r"^\s*x\s*(?:\[\s*(\d+)\s*\])?\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


def parse_absorb(text, D):
    """'x>=B' or 'x[i]<=B' -> (dim, sign, level); sign +1 absorbs at x >= B."""
    m = ABSORB_RE.match(text or "")
    if not m:
        raise InputError(f"--absorb {text!r} is not a condition; write e.g. \"x>=1.5\" or "
                         "\"x[1]<=-2\"")
    dim = int(m.group(1) or 0)
    if dim >= D:
        raise InputError(f"--absorb {text!r} names coordinate {dim}, but the state has "
                         f"{D} coordinate(s) (0..{D - 1})")
    sign = 1.0 if m.group(2).startswith(">") else -1.0
    return dim, sign, float(m.group(3))


def _finite_pos(name, v):
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a finite number > 0, got {v!r}")


class Plan:
    """A validated configuration, resolved to kernel arguments."""

    def __init__(self, cfg):
        self.cfg = cfg
        c = cfg
        if c.process not in PROCESSES:
            raise InputError(f"unknown process {c.process!r}; valid: {', '.join(PROCESSES)}")
        if c.device not in ("cpu", "cuda"):
            raise InputError(f"--device {c.device!r}: expected cpu or cuda")
        if c.precision not in ("float64", "float32"):
            raise InputError(f"--precision {c.precision!r}: expected float64 or float32")
        _finite_pos("--dt", c.dt)
        if not isinstance(c.steps, int) or not 1 <= c.steps < MAX_U32:
            raise InputError(f"--steps must be an integer in 1..{MAX_U32 - 1}, got {c.steps!r}")
        if not isinstance(c.seed, int) or not 0 <= c.seed < 2**64:
            raise InputError(f"--seed must be an integer in 0..2**64-1, got {c.seed!r}")
        if c.first_walker < 0:
            raise InputError(f"--first-walker must be >= 0, got {c.first_walker}")
        self.user = callable(c.potential)
        if self.user and c.device != "cpu":
            raise InputError("a user potential runs on the CPU only; use --device cpu")

        # ---- initial positions (and dimension)
        self.v_init = None
        self.x_init = None
        if c.init is not None:
            if c.x0 is not None:
                raise InputError("give either --x0 or --init, not both")
            from .store import read_initial_state

            x, v, _ = read_initial_state(c.init)
            if c.walkers is not None and c.walkers != x.shape[0]:
                raise InputError(f"--walkers {c.walkers} does not match the {x.shape[0]} "
                                 f"states in --init {c.init}; omit --walkers to use them all")
            self.x_init, self.v_init = x, v
            walkers = x.shape[0]
            D = x.shape[1]
            if c.dim is not None and c.dim != D:
                raise InputError(f"--dim {c.dim} does not match the dimension {D} of {c.init}")
        else:
            walkers = c.walkers
            if walkers is None and not (isinstance(c.x0, np.ndarray) and c.x0.ndim == 2):
                raise InputError("--walkers is required (or --init FILE.h5)")
            D = c.dim
            if isinstance(c.x0, np.ndarray) and c.x0.ndim == 2:      # one row per walker
                if walkers is None:
                    walkers = c.x0.shape[0]
                if c.x0.shape[0] != walkers:
                    raise InputError(f"x0 has {c.x0.shape[0]} rows for {walkers} walkers")
                check = np.asarray(c.x0, dtype=np.float64)
                if not np.all(np.isfinite(check)):
                    raise InputError("x0 holds non-finite values")
                self.x_init = check
                D = c.x0.shape[1]
            elif isinstance(c.x0, (list, tuple, np.ndarray)) and len(c.x0) > 1:
                if D is not None and D != len(c.x0):
                    raise InputError(f"--x0 has {len(c.x0)} values but --dim is {D}")
                D = len(c.x0)
            if D is None:
                D = 1
                if not self.user and c.process not in ("ou",) + FORWARD:
                    D = pots.get(c.potential).dim or 1
        if not isinstance(walkers, int) or walkers < 1:
            raise InputError(f"--walkers must be a positive integer, got {walkers!r}")
        if c.first_walker + walkers > MAX_U32:
            raise InputError(f"walker indices must stay below 2**32: --first-walker "
                             f"{c.first_walker} + --walkers {walkers} is too large")
        if D < 1 or D > 4096:
            raise InputError(f"dimension must be in 1..4096, got {D}")
        self.M, self.D = walkers, D
        self.K = c.record_every or max(1, c.steps // 100)
        if not isinstance(self.K, int) or self.K < 1:
            raise InputError(f"--record-every must be a positive integer, got {c.record_every!r}")
        self.dtype = np.float32 if c.precision == "float32" else np.float64
        if c.process in FORWARD:
            self._plan_forward()
            return

        # ---- parameters
        base = dict(PROCESS_KEYS[c.process])
        pot = None
        if c.process != "ou" and not self.user:
            pot = pots.get(c.potential)
            base.update(pot.defaults)
        for k, v in c.params.items():
            if k not in base:
                raise InputError(f"unknown parameter {k!r} for --process {c.process}"
                                 + ("" if pot is None else f" --potential {pot.name}")
                                 + f"; valid: {', '.join(base)}")
            if isinstance(v, tuple) and (pot is None or k not in pot.keys or k in pot.list_keys):
                raise InputError(f"--set {k}=start:end: only scalar potential parameters "
                                 f"({', '.join(t for t in (pot.keys if pot else ()) if t not in pot.list_keys) or 'none'}) "
                                 "may follow a protocol")
            base[k] = v
        self.values = base
        self.pot = pot
        self.proto = any(isinstance(v, tuple) for v in base.values())

        self.method = c.method
        if c.process == "ou":
            self.method = c.method or "exact"
            th, mu, sg = (float(base[k]) for k in ("theta", "mu", "sigma"))
            if th < 0 or sg < 0 or not all(map(math.isfinite, (th, mu, sg))):
                raise InputError("ou: theta and sigma must be finite and >= 0")
            if self.method == "em" and th * c.dt >= 2.0:
                raise InputError(f"unstable step: Euler-Maruyama OU needs theta*dt < 2, got "
                                 f"theta*dt = {th * c.dt:g}; reduce --dt below {2 / th:g} or "
                                 "use --method exact")
        else:
            self.method = c.method or "em"
            for k in PROCESS_KEYS[c.process]:
                _finite_pos(f"--set {k}", float(base[k]))
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r}: expected exact or em")
        if c.process == "underdamped" and c.method not in (None, "baoab"):
            raise InputError("--method does not apply to underdamped runs (BAOAB)")
        if c.process == "langevin" and self.method == "exact" and c.potential != "harmonic":
            raise InputError("--method exact for langevin needs --potential harmonic "
                             "(the exact OU step); use --method em")

        # ---- kernel arguments
        kT = float(base.get("kT", 1.0))
        if self.user:
            p = np.ascontiguousarray(np.ravel(c.potential_params if c.potential_params
                                              is not None else []), dtype=np.float64)
            if p.size == 0:
                p = np.zeros(1)
            self.p0, self.p1, self.pid = p, p.copy(), 0
        elif pot is not None:
            self.p0, self.p1 = pots.pack(pot.name, base, D, kT)
            self.pid = pot.pid
            self._check_stability(pot, base)
        else:
            self.pid = 0
        self.absorb = (-1, 1.0, 0.0)
        if c.absorb:
            self.absorb = parse_absorb(c.absorb, D)
        if c.process == "ou":
            th, mu, sg = (float(base[k]) for k in ("theta", "mu", "sigma"))
            self.ou = _ou_coeffs(th, mu, sg, c.dt, self.method)
            if c.absorb:    # OU == overdamped Langevin in a harmonic trap (gamma = 1)
                if th <= 0 or sg <= 0:
                    raise InputError("--absorb with OU needs theta > 0 and sigma > 0")
                self.kind = 1 if self.method == "exact" else 0
                self.pid = 0
                self.p0 = np.array([th, mu])
                self.p1 = self.p0.copy()
                self.kT, self.gamma, self.mass = 0.5 * sg * sg, 1.0, 1.0
        else:
            self.kind = {"langevin": 1 if self.method == "exact" else 0,
                         "underdamped": 2}[c.process]
            self.kT = kT
            self.gamma = float(base["gamma"])
            self.mass = float(base.get("mass", 1.0))
            if self.kind == 1 and (min(self.p0[0], self.p1[0]) <= 0):
                raise InputError("--method exact needs a harmonic stiffness k > 0")
        self.lanes_ou = c.process == "ou" and not c.absorb
        # overdamped EM in Muller-Brown without protocol or absorption: the lanes kernel
        # (same bits as langevin_run, several times faster)
        self.lanes_mb = (c.process == "langevin" and self.kind == 0 and not self.user and
                         self.pid == 2 and not self.proto and not c.absorb and self.D == 2)
        self.observables = []
        if not self.lanes_ou:
            if c.process != "ou":
                self.observables += ["energy"]
            if self.proto:
                self.observables += ["work"]
            if c.process != "ou":
                self.observables += ["heat"]
            if c.absorb:
                self.observables += ["first_passage_time"]

    def _plan_forward(self):
        """vp / subvp / ve: the exact (or Euler-Maruyama) Gaussian chain on t_n = n dt."""
        from .models import SCHEDULE_KEYS, make_process
        from .models import PROCESS_KEYS as FORWARD_KEYS

        c = self.cfg
        params = dict(c.params)
        schedule = params.pop("schedule", "linear") if c.process != "ve" else "linear"
        if schedule not in SCHEDULE_KEYS:
            raise InputError(f"--set schedule={schedule}: unknown schedule; valid: "
                             f"{', '.join(SCHEDULE_KEYS)}")
        valid = (("schedule",) + SCHEDULE_KEYS[schedule] if c.process != "ve"
                 else FORWARD_KEYS["ve"])
        for k, v in params.items():
            if k not in valid:
                raise InputError(f"unknown parameter {k!r} for --process {c.process}"
                                 + (f" (schedule {schedule})" if c.process != "ve" else "")
                                 + f"; valid: {', '.join(valid)}")
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise InputError(f"--set {k}={v!r}: expected one finite number")
        if c.absorb:
            raise InputError(f"--absorb applies to ou, langevin and underdamped, not to "
                             f"--process {c.process}")
        if isinstance(c.x0, str):
            raise InputError(f"--x0 {c.x0!r} does not apply to --process {c.process}; give "
                             "numbers or start from a dataset with --init DATA.h5")
        try:
            self.sde = make_process(c.process, schedule, params)
        except InputError as e:
            raise InputError(f"--process {c.process}: {e}") from None
        t_end = c.steps * c.dt
        if t_end > self.sde.t_max * (1.0 + 1e-12):
            raise InputError(f"--steps {c.steps} x --dt {c.dt:g} = {t_end:g} runs past the end "
                             f"of the {c.process} process (t_max = {self.sde.t_max:g}); use "
                             f"--dt <= {self.sde.t_max / c.steps:g}")
        self.method = c.method or "exact"
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r}: expected exact or em")
        if self.method == "em" and c.process != "ve":   # beta(t) grows with t
            r = float(self.sde.schedule.beta((c.steps - 1) * c.dt)) * c.dt
            if not r < 4.0:
                raise InputError(f"unstable step: Euler-Maruyama {c.process} needs beta(t) dt "
                                 f"< 4, got {r:g} at the last step; reduce --dt or use "
                                 "--method exact")
        self.values = self.sde.params()
        self.pot, self.proto, self.pid = None, False, 0
        self.absorb = (-1, 1.0, 0.0)
        self.lanes_ou = True
        self.observables = []

    def coefficients(self, s0, n):
        """(A, B, C) float64 arrays for ``ou_lanes``: length 1 (OU) or n (forward chains)."""
        if self.cfg.process in FORWARD:
            from .processes import chain_coefficients

            return chain_coefficients(self.sde, self.cfg.dt, s0, n, self.method)
        return tuple(np.array([t], dtype=np.float64) for t in self.ou)

    def _check_stability(self, pot, v):
        """Refuse steps that are certainly unstable (the curvature bound of the scheme)."""
        c = self.cfg

        def big(key):
            t = v[key]
            return max(abs(float(t[0])), abs(float(t[1]))) if isinstance(t, tuple) else abs(float(t))
        if pot.name == "harmonic":
            kmax = big("k")
        elif pot.name == "double-well":
            kmax = max(8.0 * big("a") + abs(2 * big("b")) * 0, big("k_perp"))
        elif pot.name == "muller-brown":
            kmax = 4100.0 * big("scale")
        else:
            s = np.array(pots._as_list(v["sigmas"]))
            kmax = float(v.get("kT", 1.0)) / float(s.min()) ** 2
        if c.process == "langevin" and self.cfg.method != "exact":
            r = kmax * c.dt / float(v["gamma"])
            if r >= 2.0:
                raise InputError(f"unstable step: Euler-Maruyama needs curvature*dt/gamma < 2, "
                                 f"got {r:g} (curvature about {kmax:g}); reduce --dt below "
                                 f"{2 * float(v['gamma']) / kmax:g}")
        if c.process == "underdamped":
            r = math.sqrt(kmax / float(v["mass"])) * c.dt
            if r >= 2.0:
                raise InputError(f"unstable step: BAOAB needs omega*dt < 2, got {r:g}; reduce "
                                 f"--dt below {2 / math.sqrt(kmax / float(v['mass'])):g}")

    # ------------------------------------------------------------ initial state
    def initial_state(self):
        from kernels import philox, streams

        c, M, D = self.cfg, self.M, self.D
        seed = np.uint64(c.seed)
        if self.x_init is not None:
            x = np.array(self.x_init, dtype=np.float64)
        elif isinstance(c.x0, str):
            if c.x0 != "boltzmann":
                raise InputError(f"--x0 {c.x0!r}: expected numbers or 'boltzmann'")
            x = self._boltzmann(seed)
        else:
            x0 = np.zeros(D) if c.x0 is None else np.asarray(c.x0, dtype=np.float64).ravel()
            if x0.size == 1:
                x0 = np.full(D, x0[0])
            if x0.size != D or not np.all(np.isfinite(x0)):
                raise InputError(f"--x0 needs 1 or {D} finite values, got {list(x0)}")
            x = np.tile(x0, (M, 1))
        v = None
        if c.process == "underdamped":
            if self.v_init is not None:
                v = np.array(self.v_init, dtype=np.float64)
            else:
                v = np.empty((M, D))
                streams.normals(seed, np.uint64(philox.PURPOSE_VINIT), c.first_walker, 0, v)
                v *= math.sqrt(self.kT / self.mass)
        if self.dtype == np.float32:
            x = x.astype(np.float32).astype(np.float64)
            if v is not None:
                v = v.astype(np.float32).astype(np.float64)
        return x, v

    def _boltzmann(self, seed):
        """Exact Boltzmann draws where they exist (PURPOSE_INIT stream)."""
        from kernels import philox, streams

        c, M, D = self.cfg, self.M, self.D
        z = np.empty((M, D))
        streams.normals(seed, np.uint64(philox.PURPOSE_INIT), c.first_walker, 0, z)
        u = np.empty((M, 1))
        streams.uniforms(seed, np.uint64(philox.PURPOSE_INIT), c.first_walker, 1, u)
        v0 = {k: (t[0] if isinstance(t, tuple) else t) for k, t in self.values.items()}
        if c.process == "ou":
            th, mu, sg = v0["theta"], v0["mu"], v0["sigma"]
            if th <= 0:
                raise InputError("--x0 boltzmann needs theta > 0 (OU has no stationary law)")
            return mu + sg / math.sqrt(2 * th) * z
        name = None if self.user else self.pot.name
        kT = self.kT
        if name == "harmonic":
            x = z * math.sqrt(kT / v0["k"])
            x[:, 0] += v0["center"]
            return x
        if name == "double-well":
            from .analytic import double_well_boltzmann

            if v0["a"] <= 0:
                raise InputError("--x0 boltzmann needs a > 0 for the double well")
            x = z * math.sqrt(kT / v0["k_perp"])
            x[:, 0] = double_well_boltzmann(v0["a"], v0["b"], kT).inverse_cdf(u[:, 0])
            return x
        if name == "gaussian-mixture":
            p = self.p0
            K = int(p[1])
            w = p[2:2 + K]
            m = p[2 + K:2 + K + K * D].reshape(K, D)
            s = p[2 + K + K * D:]
            comp = np.minimum(np.searchsorted(np.cumsum(w), u[:, 0] * np.sum(w)), K - 1)
            return m[comp] + s[comp, None] * z
        raise InputError(f"--x0 boltzmann is not available for "
                         f"{name or 'a user potential'}: start from an equilibrated run with "
                         "--init FILE.h5")


def _ou_coeffs(theta, mu, sigma, dt, method):
    if method == "em":
        return 1.0 - theta * dt, theta * mu * dt, sigma * math.sqrt(dt)
    if theta == 0.0:
        return 1.0, 0.0, sigma * math.sqrt(dt)
    A = math.exp(-theta * dt)
    return A, mu * (1.0 - A), sigma * math.sqrt(-math.expm1(-2.0 * theta * dt) / (2.0 * theta))


# ====================================================================== running
class _State:
    """The dynamical state of the walkers between chunks (what a checkpoint holds).

    The Gaussian-chain processes (``plan.lanes_ou``: OU without absorption, vp, subvp, ve)
    have positions only: work, heat, first-passage times and velocities are not allocated
    (``None``) nor checkpointed.  Langevin processes hold all of them (velocities only when
    underdamped).
    """

    def __init__(self, plan, x, v):
        M = plan.M
        self.x = np.ascontiguousarray(x, dtype=np.float32 if plan.lanes_ou and plan.dtype ==
                                      np.float32 else np.float64)
        self.v = np.ascontiguousarray(v) if v is not None else np.zeros((1, 1))
        self.langevin = not plan.lanes_ou
        self.work = np.zeros(M) if self.langevin else None
        self.heat = np.zeros(M) if self.langevin else None
        self.fpt = np.full(M, np.nan) if self.langevin else None
        self.step = 0

    def arrays(self):
        """name -> array of the state to checkpoint (and to restore on resume)."""
        if not self.langevin:
            return {"x": self.x}
        return {"x": self.x, "v": self.v, "work": self.work, "heat": self.heat,
                "fpt": self.fpt}


def _energies(plan, x):
    from kernels import langevin_cpu

    out = np.empty(plan.M)
    fn = langevin_cpu.energies if not plan.user else _user_kernels(plan)[1]
    fn(plan.pid, plan.D, plan.p0, np.ascontiguousarray(x, np.float64), out)
    return out


_USER_CACHE = {}


def _user_kernels(plan):
    fn = plan.cfg.potential
    if fn not in _USER_CACHE:
        from kernels import langevin_cpu

        _USER_CACHE[fn] = langevin_cpu.user_kernels(fn)
    return _USER_CACHE[fn]


def _run_chunk(plan, st, s0, nsteps, rec):
    """Advance the state from step s0 by nsteps; returns recorded frames (dict)."""
    c, M, D = plan.cfg, plan.M, plan.D
    R = len(rec)
    seed = np.uint64(c.seed)
    frames = {"position": np.empty((R, M, D), dtype=st.x.dtype)}
    if plan.lanes_ou:
        A, B, C = plan.coefficients(s0, nsteps)
        # float32 state: float64 arithmetic, rounded to float32 after every step (both devices)
        if c.device == "cuda":
            from kernels import langevin_cuda as k

            k.ou_run(seed, c.first_walker, s0, nsteps, A, B, C, st.x, rec, frames["position"])
        else:
            from kernels import langevin_cpu as k

            k.ou_lanes(seed, c.first_walker, s0, nsteps, A, B, C, st.x, rec, frames["position"])
        if not np.all(np.isfinite(frames["position"])) or not np.all(np.isfinite(st.x)):
            bad = np.nonzero(~np.isfinite(st.x).all(axis=1))[0]
            raise _BlowUp(s0 + nsteps, bad)
        return frames
    rv = np.empty((R, M, D)) if c.process == "underdamped" else np.empty((1, 1, 1))
    re_, rw, rq, rf = (np.empty((R, M)) for _ in range(4))
    blow = np.full(M, -1, dtype=np.int64)
    ab = plan.absorb
    args = (plan.kind, plan.pid, D, seed, c.first_walker, s0, nsteps, c.steps, c.dt, plan.kT,
            plan.gamma, plan.mass, plan.p0, plan.p1, plan.proto, st.x, st.v, st.work, st.heat,
            st.fpt, ab[0], ab[1], ab[2], rec, frames["position"], rv, re_, rw, rq, rf, blow)
    if plan.user:
        _user_kernels(plan)[0](*args)
    elif plan.lanes_mb and c.device == "cpu":
        from kernels import langevin_cpu

        langevin_cpu.mb_lanes(seed, c.first_walker, s0, nsteps, c.dt, plan.kT, plan.gamma,
                              float(plan.p0[0]), st.x, st.work, st.heat, st.fpt, rec,
                              frames["position"], re_, rw, rq, rf, blow)
    elif c.device == "cuda":
        from kernels import langevin_cuda

        langevin_cuda.langevin_run(*args)
    else:
        from kernels import langevin_cpu

        langevin_cpu.langevin_run(*args)
    if (blow >= 0).any():
        bad = np.nonzero(blow >= 0)[0]
        raise _BlowUp(int(blow[bad].min()), bad)
    if c.process == "underdamped":
        frames["velocity"] = rv
    obs = {"energy": re_, "work": rw, "heat": rq, "first_passage_time": rf}
    frames.update({k: obs[k] for k in plan.observables})
    return frames


class _BlowUp(Exception):
    def __init__(self, step, walkers):
        self.step, self.walkers = step, walkers


def _record_steps(s0, s1, K, S):
    r = np.arange((s0 // K + 1) * K, s1 + 1, K, dtype=np.int64)
    if s1 == S and (r.size == 0 or r[-1] != S):
        r = np.append(r, np.int64(S))
    return r


def _parameters_attrs(plan):
    c = plan.cfg
    from kernels import philox

    attrs = {"process": c.process,
             "potential": "none" if c.process in ("ou",) + FORWARD else
             (getattr(c.potential, "__name__", "user") if plan.user else c.potential),
             "dt": c.dt, "steps": c.steps, "walkers": plan.M, "first_walker": c.first_walker,
             "dimension": plan.D, "record_every": plan.K, "seed": str(c.seed),
             "method": plan.method if c.process != "underdamped" else "baoab",
             "precision": c.precision, "device": c.device,
             "absorb": c.absorb or "", "protocol": "linear in step: p(n) = start + "
             "(end - start) n / steps; work W += U(x_n; p(n+1)) - U(x_n; p(n))",
             "counter_layout": "philox4x32-10 key=(seed lo, seed hi), counter=(walker, q lo, "
             "q hi, purpose), q=(step*D+d)>>1, cos/sin half by parity; purposes "
             f"noise={philox.PURPOSE_NOISE} vnoise={philox.PURPOSE_VNOISE} "
             f"bridge={philox.PURPOSE_BRIDGE} init={philox.PURPOSE_INIT} "
             f"vinit={philox.PURPOSE_VINIT}; normals=Box-Muller version "
             f"{philox.NORMALS_VERSION} (kernels/philox.py)",
             "init": c.init or "", "x0": json.dumps(c.x0, default=_jsonable)}
    if c.process not in ("ou",) + FORWARD and not plan.user:
        from kernels.potentials import POTENTIALS_VERSION

        attrs["potentials_version"] = np.int64(POTENTIALS_VERSION)
    if "kT" in plan.values:
        attrs["kT"] = float(plan.values["kT"])
    for k, v in plan.values.items():
        if isinstance(v, tuple):
            attrs[f"{k}_start"], attrs[f"{k}_end"] = float(v[0]), float(v[1])
        elif isinstance(v, (list, tuple, np.ndarray)):
            attrs[k] = np.asarray(v, dtype=np.float64)
        elif isinstance(v, str):
            attrs[k] = v
        else:
            attrs[k] = float(v)
    return attrs


def simulate(config=None, *, out=None, resume=False, callback=None, chunk_seconds=2.0,
             max_chunk_steps=None, warn=None, **kwargs):
    """Run a simulation; see the module docstring.

    ``config`` is a ``SimulationConfig`` (or give its fields as keyword arguments).
    ``out`` is the HDF5 output path; without it the frames are returned in memory.
    ``callback(info)`` receives progress dicts; ``warn(msg)`` receives warnings.
    ``max_chunk_steps`` caps the steps per chunk (tests use it to vary the chunking).
    """
    if config is None:
        config = SimulationConfig(**kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    warn = warn or (lambda msg: None)
    plan = Plan(config)
    c = plan.cfg
    if c.device == "cuda":
        _check_cuda()
    x, v = plan.initial_state()
    if not np.all(np.isfinite(x)):
        raise InputError("the initial state holds non-finite values")
    if out is None:
        return _run_memory(plan, x, v, callback, chunk_seconds, max_chunk_steps)
    return _run_file(plan, x, v, os.fspath(out), resume, callback, warn, chunk_seconds,
                     max_chunk_steps)


def _check_cuda():
    from numba import cuda

    if not cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available (set "
                         "NUMBA_ENABLE_CUDASIM=1 to use the simulator, or use --device cpu)")


def _frame0(plan, st):
    f = {"position": st.x[None].copy()}
    if plan.cfg.process == "underdamped":
        f["velocity"] = st.v[None].copy()
    if "energy" in plan.observables:
        f["energy"] = _energies(plan, st.x)[None]
    for k in ("work", "heat"):
        if k in plan.observables:
            f[k] = np.zeros((1, plan.M))
    if "first_passage_time" in plan.observables:
        f["first_passage_time"] = np.full((1, plan.M), np.nan)
    return f


def _chunks(plan, s_start, chunk_seconds, max_chunk_steps, on_chunk):
    """Drive the chunk loop from s_start; on_chunk(s1, rec, frames) after each chunk."""
    c = plan.cfg
    S, K = c.steps, plan.K
    per_frame = plan.M * plan.D * 8 * (2 if c.process == "underdamped" else 1) + plan.M * 32
    max_frames = max(1, (256 << 20) // per_frame)
    n = min(S - s_start, max(1, K), 64)        # first chunk small: measures the rate
    s = s_start
    while s < S:
        if max_chunk_steps:
            n = min(n, max_chunk_steps)
        n = max(1, min(n, S - s, max_frames * K))
        rec = _record_steps(s, s + n, K, S)
        t0 = time.perf_counter()
        frames = _run_chunk(plan, plan._st, s, n, rec)
        dt_wall = time.perf_counter() - t0
        s += n
        plan._st.step = s
        on_chunk(s, rec, frames)
        rate = n / max(dt_wall, 1e-6)
        n = int(max(1, min(rate * chunk_seconds, 4 * n + 1)))


def _run_memory(plan, x, v, callback, chunk_seconds, max_chunk_steps):
    plan._st = st = _State(plan, x, v)
    acc = {k: [a] for k, a in _frame0(plan, st).items()}
    steps = [np.zeros(1, np.int64)]
    t0 = time.perf_counter()

    def on_chunk(s, rec, frames):
        steps.append(rec)
        for k, a in frames.items():
            acc[k].append(a)
        _progress(callback, plan, s, t0, sum(len(r) for r in steps))
    try:
        _chunks(plan, 0, chunk_seconds, max_chunk_steps, on_chunk)
    except _BlowUp as b:
        raise _blow_error(plan, b, None) from None
    frames = {k: np.concatenate(a) for k, a in acc.items()}
    frames["step"] = np.concatenate(steps)
    frames["time"] = frames["step"] * plan.cfg.dt
    return Result(st.x, st.v if plan.cfg.process == "underdamped" else None, st.work,
                  st.heat, st.fpt, plan.cfg.steps, None, frames)


def _progress(callback, plan, s, t0, frames):
    if callback is None:
        return
    el = time.perf_counter() - t0
    callback({"step": s, "steps": plan.cfg.steps, "frames": frames, "elapsed": el,
              "walker_steps_per_s": plan.M * s / el if el > 0 else float("nan")})


def _blow_error(plan, b, files):
    w = b.walkers + plan.cfg.first_walker
    shown = ", ".join(str(int(t)) for t in w[:8]) + (f" ... ({len(w)} walkers)" if len(w) > 8
                                                     else "")
    msg = (f"non-finite state at step {b.step} in walker(s) {shown} with dt={plan.cfg.dt:g}: "
           "the step is unstable; reduce --dt")
    if files:
        msg += f"; kept the partial file {files[0]} and checkpoint {files[1]}"
    return RunError(msg)


def _run_file(plan, x, v, out, resume, callback, warn, chunk_seconds, max_chunk_steps):
    from .store import (H5MDWriter, provenance, read_checkpoint, remove_checkpoint,
                        write_checkpoint)

    c = plan.cfg
    if os.path.exists(out) and not resume:
        raise InputError(f"--out {out} already exists; remove it, choose another path, or "
                         "give --resume")
    if resume and os.path.exists(out):
        raise InputError(f"--out {out} is already complete; nothing to resume")
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise InputError(f"--out {out}: directory {d} does not exist")
    partial = out + ".partial"
    ckpt = partial + ".ckpt"
    lock = OutputLock(partial + ".lock", out)
    writer = None
    for stale in glob.glob(glob.escape(ckpt) + ".tmp*") + glob.glob(glob.escape(partial)
                                                                     + ".new"):
        os.remove(stale)          # left by a kill during a checkpoint write or file creation
    try:
        ident = c.identity()
        plan._st = st = _State(plan, x, v)
        start = 0
        got = read_checkpoint(ckpt, warn) if resume else None
        if resume and got is None:
            warn(f"no usable checkpoint for {out}; restarting from step 0")
        if got is not None:
            meta, arrs = got
            diff = sorted(k for k in set(ident) | set(meta["config"])
                          if ident.get(k) != meta["config"].get(k))
            if diff:
                why = ""
                if {"normals", "potentials"} & set(diff):
                    why = ("; it was written by a nonequil version whose noise or potential "
                           "maths differ in the last bits, so it cannot be continued: rerun "
                           "without --resume")
                raise InputError(f"checkpoint {ckpt} does not match the arguments; differing "
                                 f"fields: {', '.join(diff)}{why}")
            try:
                writer = H5MDWriter.reopen(partial, meta["frames"])
            except (OSError, KeyError) as e:
                warn(f"partial file {partial} cannot be resumed ({e}); restarting from step 0")
                got = None
            else:
                # a checkpoint of an older version may hold more arrays (an OU run's unused
                # work/heat/fpt): only the state's own are restored
                for k, a in st.arrays().items():
                    a[...] = arrs[k]
                start = st.step = int(meta["step"])
        if got is None:
            remove_checkpoint(ckpt)
            # build the file under a temporary name: a kill before its first flush must not
            # leave an OUT.partial that HDF5 cannot open
            fresh = partial + ".new"
            writer = H5MDWriter.create(
                fresh, plan.M, plan.D, c.dt, velocity=c.process == "underdamped",
                observables=plan.observables,
                dtype=np.float32 if c.precision == "float32" else np.float64,
                parameters=_parameters_attrs(plan),
                prov=provenance(ident, c.device, c.precision))
            f0 = _frame0(plan, st)
            writer.append([0], f0["position"], f0.get("velocity"), f0)
            os.replace(fresh, partial)
        t0 = time.perf_counter()
        last = [time.perf_counter()]

        def commit(s):
            write_checkpoint(ckpt, {"config": ident, "step": int(s), "frames": writer.frames},
                             {k: a for k, a in st.arrays().items()})

        if got is None:
            commit(0)

        def on_chunk(s, rec, frames):
            writer.append(rec, frames["position"], frames.get("velocity"), frames)
            commit(s)
            last[0] = time.perf_counter()
            _progress(callback, plan, s, t0, writer.frames)

        try:
            _chunks(plan, start, chunk_seconds, max_chunk_steps, on_chunk)
        except _BlowUp as b:
            raise _blow_error(plan, b, (partial, ckpt)) from None
        writer.f["particles/ensemble"].attrs["final_step"] = np.int64(c.steps)
        writer.close()
        writer = None
        os.replace(partial, out)
        remove_checkpoint(ckpt)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass
        lock.release(remove=True)
        raise
    lock.release(remove=True)
    return Result(st.x, st.v if c.process == "underdamped" else None, st.work, st.heat,
                  st.fpt, c.steps, out, None)
