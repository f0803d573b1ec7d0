r"""Denoising score matching (DSM) training of ``nonequil.models.MLPScoreModel``.

``train(data, config=None, *, out=None, resume=False, callback=None, warn=None, ...)``
fits the model to a sample set (an HDF5 path holding ``/samples[N, ...]``, or an array) and
returns it; with ``out`` it also writes the model file (``OUT.partial`` + checkpoint, renamed
on success; DESIGN.md "Files written by a verb").

The defaults of ``TrainConfig`` are the product contract of DESIGN.md; what they are, why,
and what they were measured to achieve is in ``DEFAULTS_RATIONALE``.

Objective
---------
Continuous processes (VP, sub-VP, VE), in normalised units (``nonequil.models``)::

    L = E_{t, y_0, eps} [ w(t) |eps_hat(m(t) y_0 + sigma(t) eps, t) - eps|^2 ] / D

* ``t ~ U(t_eps, t_max]`` with ``t_eps`` = 1e-3 for VP and sub-VP (the linear schedule has
  sigma(t_eps) ~ 0.01 there: below it the score grows like 1/sigma and samplers stop at
  t_eps, as in Song et al. 2021) and 1e-5 for VE; set ``t_eps`` to change it.
* ``weighting`` (lambda(t), always normalised to mean 1 over [t_eps, t_max], so that the
  loss scales, and hence ``clip``, are comparable; the mean is stored as ``weight_norm``):
  - ``simple``: lambda = 1, the eps-MSE of Ho et al. 2020 (default);
  - ``likelihood``: lambda = g(t)^2 / sigma(t)^2, i.e. the weight g^2 on the score error
    |s - grad log p|^2 = |eps_hat - eps|^2 / sigma^2 (Song et al. 2021, "maximum likelihood
    training"), which makes the loss proportional to a bound on the negative log-likelihood
    (up to constants);
  - ``vdm``: lambda = -d logSNR/dt / 2, the continuous-time VDM ELBO (Kingma et al. 2021,
    eq. 17 written in eps).  For every linear SDE here ``dm/dt = f m`` and
    ``dsigma^2/dt = 2 f sigma^2 + g^2``, so ``d logSNR/dt = 2 f - (2 f sigma^2 + g^2) / sigma^2
    = -g^2 / sigma^2``: the two weightings are proportional, and after the normalisation they
    train identically (only ``weight_norm`` differs, by 2).
* ``importance=True`` draws t with density proportional to lambda(t) (inverse CDF tabulated
  on 4097 log-spaced times; linear within a cell) and weights each sample by lambda(t) over
  the tabulated density, which is then 1 up to the tabulation: same expectation, less variance.

The DDPM chain (``process=ddpm``): t uniform on 1..T, the simple weighting only.

The binomial chain (``process=binomial``, binary data 0/1 or spins -1/+1): its variational
bound (Sohl-Dickstein et al. 2015): with t uniform on 1..T, x_t ~ q(x_t | x_0) and the exact
posterior bit probability q = q(x_{t-1} = 1 | x_t, x_0), the loss is
``T E[ KL(Bern(q) || Bern(p_theta(x_{t-1} = 1 | x_t))) ] / D`` (the t = 1 term is
-log p(x_0 | x_1) since q is then x_0 itself; the prior term KL(q(x_T | x_0) || Bern(1/2)) is
a constant, 0 for the default betas with r_T = 0), in nats per bit.  The model's logit of
p_theta is ``stay_logit(t) (2 x_t - 1) + net(x_t, t)`` (``logit_skip``, on by default; model
files from before it load with it off): the network learns the correction to the reverse
step of uniform bits (``nonequil.processes.BinomialChain.stay_logit``).

Optimisation: Adam (``lr``, ``beta1``, ``beta2``, ``adam_eps``, decoupled ``weight_decay``)
with a linear warm-up over ``warmup`` steps and then a cosine decay to ``lr * lr_final``
(``lr_schedule=cosine``; ``constant`` keeps lr after the warm-up); the global gradient norm
is clipped to ``clip`` before the step; the EMA of the weights uses the decay
``min(ema, (1 + k) / (10 + k))`` at update k (0-based), so that early weights are forgotten.

Randomness (all Philox, ``kernels.streams``; purposes ``PURPOSE_TRAIN + i``)
------------------------------------------------------------------------------
* i = 0: initial weights, ``normals(seed, 32, 0, 0, [1, P])``;
* i = 1: the data order.  Training sample g (global index ``g = step * batch + i``, step
  0-based) is row ``perm_e[g mod N]`` of epoch ``e = g // N``, where ``perm_e`` is the
  stable argsort of the 53-bit uniforms in column ``e mod K`` of
  ``uniforms(seed, 33, 0, e // K, [N, K])``, ``K = clamp(2^21 // N, 1, 64)`` (several
  epochs per Philox fill; counter (row, e // K, (e mod K) // 2, 33)).  Ties have
  probability ~N^2 / 2^54 and are broken by the row index (stable sort), so the order is
  still a pure function of (seed, N, e).  A batch may straddle two epochs;
* i = 2: times, the uniform of sample g: ``uniforms(seed, 34, g mod 2^32, g >> 32, .)``;
* i = 3: noises, element ``(g >> 32) D + d`` of the normal stream of walker ``g mod 2^32``
  (``normals(seed, 35, ...)``), i.e. "step g >> 32, coordinate d" of the noise layout;
* i = 4: binomial chain, the uniforms of the forward draw of x_t (as i = 2, D per sample).

Hence a run is a pure function of (data, config, seed) on a given machine (BLAS build, CPU
kernels and thread count): it does not depend on checkpoints, resumes or the chunking of
the random draws, and a resumed run equals an uninterrupted one bit for bit.

Threads.  A batch is cut into fixed shards of ``SHARD_ROWS`` (256) rows
(``nonequil.models.ShardedNet``); ``threads`` Python threads run the shards' forward and
backward passes concurrently, each with single-threaded BLAS (set with ``threadpoolctl``
around the run), and the shard gradients are summed in shard order, so batches of more than
256 rows give the same bits for any ``threads``.  A batch of at most 256 rows is one shard,
and its products use ``threads`` OpenBLAS threads (default ``DEFAULT_BLAS_THREADS`` = 1 of
``nonequil.models``: at these sizes two OpenBLAS threads were measured 7-23x slower than one
on a 2-core machine shared with other processes); only then can the thread count change the
last bits.  The count is recorded in the checkpoint and the provenance, and a resume with
another count warns.  No BLAS runs inside a Numba ``prange`` region: the Philox fills run on
one Numba thread between steps, once per block of steps (``_serial_numba``: a 2-thread
parallel region of that size was measured 80x slower on a loaded machine).

Files
-----
With ``out``: the arguments and the data are validated first (DESIGN.md "Files read by a
verb"), then ``OUT.partial`` (provenance and configuration) and the checkpoint
``OUT.partial.ckpt`` (weights, Adam moments, EMA, step, per-step losses, the configuration
and a fingerprint of the data) are created; a lock ``OUT.partial.lock`` refuses a second
writer.  A checkpoint is written every ``checkpoint_seconds`` (10 s) and at the end; then
the model is written to ``OUT.partial``, which is renamed to ``OUT``.  ``resume=True``
continues from the checkpoint (it must match the configuration and the data), or restarts
from step 0 with a warning when there is none.  A non-finite loss or gradient stops the run
with a ``RunError`` naming the step and the kept checkpoint (the last good state).
"""
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time

import numpy as np

from .errors import InputError, RunError
from .models import (CONTINUOUS, DEFAULT_BLAS_THREADS, INT_KEYS, PROCESS_NAMES,
                     ModelConfig, MLPScoreModel, ShardedNet, process_keys)

MAX_U32 = 2**32
MAX_STEPS = 10**8          # the per-step loss history is kept in memory (8 bytes a step)
WEIGHTINGS = ("simple", "likelihood", "vdm")
LR_SCHEDULES = ("cosine", "constant")
IMPORTANCE_GRID = 4097
FORMAT = 1


@dataclasses.dataclass
class TrainConfig(ModelConfig):
    """Every setting of a training run; the defaults are the product contract (DESIGN.md
    "Defaults are a product contract"): see ``DEFAULTS_RATIONALE``."""
    # forward process and model: the fields of nonequil.models.ModelConfig (inherited)
    # optimisation
    steps: int = 20000
    batch: int = 512
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    warmup: int = 500
    lr_final: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip: float = 1.0
    ema: float = 0.999
    weighting: str = "simple"
    importance: bool = False
    seed: int = 0

    # -------------------------------------------------------------------- helpers
    def model_config(self):
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        return ModelConfig(**{k: getattr(self, k) for k in names})

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["process_params"] = self.model_config().to_dict()["process_params"]
        return d

    def identity(self):
        """What a checkpoint must match (everything: the run is a function of it)."""
        return json.loads(json.dumps(self.to_dict(), sort_keys=True))

    def validate(self):
        self.model_config().validate()
        _int_in("steps", self.steps, 1, MAX_STEPS)
        _int_in("batch", self.batch, 1, MAX_U32 - 1)
        _int_in("warmup", self.warmup, 0, MAX_U32 - 1)
        _int_in("seed", self.seed, 0, 2**64 - 1)
        _num_in("lr", self.lr, 0.0, math.inf, lo_open=True)
        _num_in("lr_final", self.lr_final, 0.0, 1.0)
        _num_in("beta1", self.beta1, 0.0, 1.0, hi_open=True)
        _num_in("beta2", self.beta2, 0.0, 1.0, hi_open=True)
        _num_in("adam_eps", self.adam_eps, 0.0, math.inf, lo_open=True)
        _num_in("weight_decay", self.weight_decay, 0.0, math.inf)
        if not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise InputError(f"clip must be > 0 (inf: no clipping), got {self.clip!r}")
        _num_in("ema", self.ema, 0.0, 1.0, hi_open=True)
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        if self.weighting not in WEIGHTINGS:
            raise InputError(f"weighting {self.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if not isinstance(self.importance, (bool, np.bool_)):
            raise InputError(f"importance must be true or false, got {self.importance!r}")
        if self.process in ("ddpm", "binomial") and (self.weighting != "simple"
                                                     or self.importance):
            raise InputError(f"process {self.process} trains with "
                             + ("the simple eps loss" if self.process == "ddpm" else
                                "its variational bound")
                             + ": weighting and importance do not apply (leave the defaults)")
        if self.process == "binomial" and self.parametrisation != "eps":
            raise InputError("the binomial chain predicts bit probabilities: parametrisation "
                             "does not apply (leave the default)")


DEFAULTS_RATIONALE = """\
The defaults (TrainConfig) are chosen so that `train` with no options, followed by a sampler
(probability-flow ODE, Heun, 500 steps), reproduces a 1-D multimodal Boltzmann density
(barriers 3-6 kT, a minority basin of a few per cent, any location and scale) within
W1 <= 0.05 (data units) and basin populations within 0.02 (DESIGN.md):
VP-SDE with the linear schedule (beta 0.1..20, t_eps = 1e-3), data normalised to mean 0 and
std 1 per dimension (so training does not depend on location and scale), an MLP of 3 hidden
layers of 128 SiLU units on [y, 8 Fourier features (frequencies 0.25..8) of the log-SNR
noise level], the eps-parametrisation with the simple loss, batch 512, 20000 Adam steps at
lr 2e-3 (500-step warm-up, cosine decay to 5%), gradient clipping at norm 1 and an EMA of
0.999 (evaluation uses the EMA weights).

Measured (20000 exact samples, one BLAS thread, 2-core machine shared with other jobs;
tests/test_train.py::test_defaults_reproduce_boltzmann_density):
  double well U = 3 (x^2-1)^2 + 0.5 x (populations 0.714 / 0.286): W1 0.003, populations
  off by <= 0.001; triple well (0.720 / 0.258 / 0.022, shifted to x + 5): W1 0.005,
  populations off by <= 0.002; double well a = 6, b = 1.5 (minority 5.3%): W1 0.007, 0.003;
  a = 6, b = 2 (minority 2.1%): W1 0.003, 0.001.  Training takes 65-70 s of CPU
  (3-4 ms a step); 10000 steps gave the same accuracy on these densities, 20000 is margin."""


def _int_in(name, v, lo, hi):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not lo <= v <= hi:
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


def _num_in(name, v, lo, hi, lo_open=False, hi_open=False):
    ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
        and math.isfinite(v)
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise InputError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}"
                         f"{')' if hi_open else ']'}, got {v!r}")


# ----------------------------------------------------------------------------- --set keys
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
# keys settable with --set (process, steps, batch and seed have their own flags)
SET_FIELDS = tuple(k for k in _FIELD_TYPES if k not in ("process", "process_params", "seed",
                                                        "steps", "batch"))
_BOOL = {"1": True, "true": True, "yes": True, "on": True,
         "0": False, "false": False, "no": False, "off": False}


def set_keys(process="vp", schedule="linear"):
    """The valid ``--set`` keys for a process (training settings + process parameters)."""
    return SET_FIELDS + tuple(process_keys(process, schedule))


def config_from_sets(sets, process="vp", **fields):
    """A ``TrainConfig`` from ``--set`` strings ``{key: text}`` plus explicit fields.

    Unknown keys are an ``InputError`` that lists the valid ones.
    """
    schedule = sets.get("schedule", "linear")
    if process not in PROCESS_NAMES:
        raise InputError(f"unknown --process {process!r}; valid: {', '.join(PROCESS_NAMES)}")
    valid = set_keys(process, schedule)
    bad = sorted(set(sets) - set(valid))
    if bad:
        raise InputError(f"unknown --set key(s) {', '.join(bad)} for --process {process}"
                         + (f" (schedule {schedule})" if process in ("vp", "subvp") else "")
                         + f"; valid: {', '.join(valid)}")
    kw = dict(fields)
    pp = {}
    pkeys = process_keys(process, schedule)
    for k, text in sets.items():
        text = str(text).strip()
        if k in pkeys:
            pp[k] = _parse_value(k, text, int if k in INT_KEYS else float)
            continue
        typ = _FIELD_TYPES[k]
        if typ in (int, "int"):
            kw[k] = _parse_value(k, text, int)
        elif typ in (float, "float"):
            kw[k] = _parse_value(k, text, float)
        elif typ in (bool, "bool"):
            if text.lower() not in _BOOL:
                raise InputError(f"--set {k}={text}: expected true or false")
            kw[k] = _BOOL[text.lower()]
        else:
            kw[k] = text
    return TrainConfig(process=process, process_params=pp, **kw)


def _parse_value(k, text, typ):
    try:
        if typ is int:
            v = float(text)
            if not v.is_integer():
                raise ValueError
            return int(v)
        v = float(text)
        if math.isnan(v):
            raise ValueError
        return v
    except ValueError:
        what = "an integer" if typ is int else "a number"
        raise InputError(f"--set {k}={text}: expected {what}") from None


# ----------------------------------------------------------------------------- data
def _load_data(data, dataset, batch, note):
    """(array, batch, source): the DESIGN checks 1-7 on a path or an in-memory array."""
    from .store import check_array, read_samples

    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        arr, batch = read_samples(path, dataset, batch=batch, note=note)
        return arr, batch, f"{path}:{dataset}"
    arr = np.asarray(data)
    check_array(arr, "<array>", "data")
    N = arr.shape[0]
    if N < 2:
        raise InputError(f"the data hold {N} sample; at least 2 are needed")
    if batch > N:
        note(f"batch {batch} is larger than the {N} samples of the data; using {N}")
        batch = N
    return arr, batch, "<array>"


def _binary(arr, source):
    """Bits in {0, 1} (float64) and the encoding ('bits' or 'spins') of binary data."""
    a = np.asarray(arr, np.float64).reshape(arr.shape[0], -1)
    if np.all((a == 0) | (a == 1)):
        return a, "bits"
    if np.all((a == -1) | (a == 1)):
        return 0.5 * (a + 1.0), "spins"
    zero_one = (a == 0) | (a == 1)
    bad = np.argwhere(~zero_one & ~((a == -1) | (a == 1)))
    if bad.size:
        r, c = (int(v) for v in bad[0])
        msg = f"value {a[r, c]:g} at row {r} (0-based), column {c}"
    else:
        r = int(np.argwhere((a == 0).any(axis=1) & (a == -1).any(axis=1))[0, 0])
        msg = f"row {r} (0-based) mixes 0 and -1"
    raise InputError(f"{source}: the binomial chain needs binary data, all 0/1 or all "
                     f"-1/+1; {msg}")


def _epochs_per_draw(N):
    """K: the sort keys of K epochs come from one Philox fill (at most 2^21 numbers)."""
    return max(1, min(64, (1 << 21) // N))


def _block_steps(B, D):
    """Steps whose random inputs are drawn together (~64k numbers; no effect on results)."""
    return max(1, min(256, (1 << 16) // (B * max(1, D))))


def _fingerprint(a):
    h = hashlib.sha256()
    h.update(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the run
class _Trainer:
    """Training state and the step loop (one instance per run)."""

    def __init__(self, cfg, data, batch, threads):
        from kernels import mlp_cpu, philox, streams

        self.cfg = cfg
        self.mc = cfg.model_config()
        self.B = int(batch)
        self.threads = int(threads)
        self.N = data.shape[0]
        self.data_shape = data.shape[1:]
        self.binomial = cfg.process == "binomial"
        if self.binomial:
            bits, enc = _binary(data, "data")
            self.Y0, self.encoding = bits, enc
            mean, std = np.zeros(bits.shape[1]), np.ones(bits.shape[1])
            wh = uw = None
        else:
            x = np.asarray(data, np.float64).reshape(self.N, -1)
            mean, std, wh, uw = MLPScoreModel.fit_normalisation(x, cfg.normalize)
            self.Y0 = np.ascontiguousarray((x - mean) @ wh.T if wh is not None
                                           else (x - mean) / std)
            self.encoding = None
        self.D = self.Y0.shape[1]
        self.seed = np.uint64(cfg.seed)
        self.P0 = philox.PURPOSE_TRAIN
        self.streams = streams
        # initial weights from Philox
        sizes = MLPScoreModel.layer_sizes(self.mc, self.D)
        P = mlp_cpu.n_params(mlp_cpu.mlp_layout(sizes))
        z = np.empty((1, P))
        streams.normals(self.seed, np.uint64(self.P0), 0, 0, z)
        self.model = MLPScoreModel.create(self.mc, self.data_shape, mean, std, z[0],
                                          train_config=cfg.to_dict(), data_encoding=self.encoding,
                                          whiten=wh, unwhiten=uw)
        self.model.loss = np.zeros(cfg.steps)
        self._perms = {}
        self._perm_keys = None
        self._setup_weights()
        # work arrays
        dt = self.model.np_dtype
        m = self.model
        rows = self.B * self.D if self.mc.patch else self.B    # local: one row per site
        self.X = np.empty((rows, m.sizes[0]), dt)
        self.net = ShardedNet(m, rows, self.threads)
        self.out = np.empty((rows, m.sizes[-1]), dt)
        self.dY = np.empty((rows, m.sizes[-1]), dt)
        self.grad = np.empty(m.n_params, dt)
        self.dX = np.empty((rows, m.sizes[0]), dt)
        self.block_steps = _block_steps(self.B, self.D)
        self._block = None

    # ------------------------------------------------------------- time weighting
    def _lambda(self, t):
        if self.cfg.weighting == "simple":
            return np.ones_like(t)
        p = self.model.process
        g2 = np.asarray(p.diffusion(t), np.float64) ** 2
        lam = g2 / np.asarray(p.variance(t), np.float64)
        return lam if self.cfg.weighting == "likelihood" else 0.5 * lam

    def _setup_weights(self):
        if self.cfg.process not in CONTINUOUS:
            self.t_lo, self.t_hi, self.weight_norm = 1, self.model.process.T, 1.0
            self.model.weight_norm = 1.0
            return
        lo, hi = self.model.t_eps, self.model.t_max
        self.t_lo, self.t_hi = lo, hi
        grid = np.geomspace(lo, hi, IMPORTANCE_GRID)
        lam = self._lambda(grid)
        cells = 0.5 * (lam[1:] + lam[:-1]) * np.diff(grid)
        self.grid, self.cdf = grid, np.concatenate([[0.0], np.cumsum(cells)])
        self.weight_norm = float(self.cdf[-1] / (hi - lo))     # mean of lambda
        self.model.weight_norm = self.weight_norm

    def _times(self, u):
        """(t, w) from uniforms u in (0, 1] (continuous), or integer t (chains)."""
        if self.cfg.process not in CONTINUOUS:
            T = self.model.process.T
            t = np.minimum(np.ceil(u * T), T).astype(np.int64)
            return np.maximum(t, 1), np.ones_like(u)
        lo, hi = self.t_lo, self.t_hi
        if not self.cfg.importance:
            t = lo + (hi - lo) * u
            return t, self._lambda(t) / self.weight_norm
        target = u * self.cdf[-1]
        k = np.clip(np.searchsorted(self.cdf, target, side="left") - 1, 0, self.grid.size - 2)
        dC = self.cdf[k + 1] - self.cdf[k]
        dt = self.grid[k + 1] - self.grid[k]
        t = self.grid[k] + np.clip((target - self.cdf[k]) / dC, 0.0, 1.0) * dt
        return t, self._lambda(t) * dt / dC

    # ------------------------------------------------------------- random draws
    def _fill(self, fn, purpose, g0, out, per_step_cols):
        """Fill rows g0 .. g0+n of a sample-keyed stream, splitting at 2**32 boundaries."""
        n = out.shape[0]
        i = 0
        while i < n:
            g = g0 + i
            lo, hi = g % MAX_U32, g // MAX_U32
            k = min(n - i, MAX_U32 - lo)
            fn(self.seed, np.uint64(self.P0 + purpose), lo, hi * per_step_cols, out[i:i + k])
            i += k

    def _perm(self, e):
        """perm_e: stable argsort of column e mod K of uniforms(seed, 33, 0, e // K, [N, K])."""
        p = self._perms.get(e)
        if p is None:
            K = _epochs_per_draw(self.N)
            key = e // K
            if self._perm_keys is None or self._perm_keys[0] != key:
                u = np.empty((self.N, K))
                self.streams.uniforms(self.seed, np.uint64(self.P0 + 1), 0, key, u)
                self._perm_keys = (key, u)
            p = np.argsort(self._perm_keys[1][:, e % K], kind="stable")
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[e] = p
        return p

    def _rows(self, g0, n):
        g = np.arange(g0, g0 + n, dtype=np.int64)
        e = g // self.N
        pos = g - e * self.N
        idx = np.empty(n, np.int64)
        for ep in np.unique(e):
            sel = e == ep
            idx[sel] = self._perm(int(ep))[pos[sel]]
        return idx

    def _draw_block(self, s0, ns):
        """Random inputs of steps s0 .. s0+ns-1 (pure functions of the sample index)."""
        B, D = self.B, self.D
        n = ns * B
        g0 = s0 * B
        u = np.empty((n, 1))
        self._fill(self.streams.uniforms, 2, g0, u, 1)      # step word = g >> 32
        t, w = self._times(u[:, 0])
        blk = {"s0": s0, "ns": ns, "t": t, "w": w, "rows": self._rows(g0, n)}
        if self.binomial:
            ub = np.empty((n, D))
            self._fill(self.streams.uniforms, 4, g0, ub, 1)
            blk["u"] = ub
        else:
            z = np.empty((n, D))
            self._fill(self.streams.normals, 3, g0, z, D)   # element (g >> 32) D + d
            blk["eps"] = z
            m, sig = self.model.m_sigma(t)
            a, J, _ = self.model.affine(t)
            blk.update(m=m, sig=sig, a=a, J=J)
        tau = np.ascontiguousarray(self.model.noise_feature(t), np.float64)
        E = np.empty((n, 2 * self.model.freqs.size))
        from kernels import mlp_cpu

        mlp_cpu.fourier_embed_into(tau, self.model.freqs, E, 0)
        blk["emb"] = E
        self._block = blk

    # ------------------------------------------------------------- schedule
    def lr_at(self, k):
        c = self.cfg
        f = min(1.0, (k + 1) / c.warmup) if c.warmup > 0 else 1.0
        if c.lr_schedule == "cosine":
            span = max(1, c.steps - c.warmup)
            p = min(1.0, max(0.0, (k - c.warmup) / span))
            f *= c.lr_final + (1.0 - c.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))
        return c.lr * f

    def ema_at(self, k):
        return min(self.cfg.ema, (1.0 + k) / (10.0 + k))

    # ------------------------------------------------------------- one step
    def _batch(self, k):
        """The block entry of update k: (block, a, b) with rows a:b of the block arrays."""
        blk = self._block
        if blk is None or not blk["s0"] <= k < blk["s0"] + blk["ns"]:
            with _serial_numba():
                self._draw_block(k, min(self.block_steps, self.cfg.steps - k))
            blk = self._block
        a = (k - blk["s0"]) * self.B
        return blk, a, a + self.B

    def noisy_batch(self, k):
        """(y_0, y_t, eps, t, w) of update k (continuous processes and DDPM)."""
        blk, a, b = self._batch(k)
        y0 = self.Y0[blk["rows"][a:b]]
        eps = blk["eps"][a:b]
        yt = blk["m"][a:b, None] * y0 + blk["sig"][a:b, None] * eps
        return y0, yt, eps, blk["t"][a:b], blk["w"][a:b]

    def run(self, k0, k1):
        """Updates k0 .. k1-1 with the BLAS limited to ``threads`` (``train``'s inner loop
        without callbacks or checkpoints); a non-finite loss raises ``RunError``."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.net.blas_threads, user_api="blas"):
            try:
                for k in range(k0, k1):
                    self.step(k)
            except _NonFinite as e:
                raise RunError(f"training {e.what} became non-finite ({e.value}) at step "
                               f"{e.step}") from None

    def engine_info(self):
        """What runs the network (for benchmarks and provenance)."""
        return {"dtype": self.model.np_dtype.name, "threads": self.threads,
                "shards": len(self.net.bounds), "blas_threads": self.net.blas_threads}

    def step(self, k):
        """Update k (0-based): returns (loss, grad_norm) before the update is applied.

        Raises ``_NonFinite`` (leaving the weights untouched) if the loss or the gradient
        is not finite."""
        from kernels import mlp_cpu

        blk, a, b = self._batch(k)
        D = self.D
        m = self.model
        X = self.X
        if self.mc.patch:                   # local network: each sample's time on its sites
            X[:, m.n_in:] = np.repeat(blk["emb"][a:b], D, axis=0)
        else:
            X[:, D:] = blk["emb"][a:b]
        if self.binomial:
            self._binomial_inputs(self.Y0[blk["rows"][a:b]], blk, a, b)
        else:
            _, yt, eps, _, _ = self.noisy_batch(k)
            X[:, :D] = yt
        if self.binomial:
            self.net.forward_cache(X, self.out)
            o = self.out.astype(np.float64).reshape(self.B, D)    # (local: [B D, 1])
            loss = self._binomial_loss(o + self._skip)
            if not math.isfinite(loss):
                raise _NonFinite(k + 1, "loss", loss)
            self.net.backward(self.dY, self.grad, self.dX)
        else:
            loss = self._dsm_pass(blk, a, b, yt, eps)
            if not math.isfinite(loss):
                raise _NonFinite(k + 1, "loss", loss)
        norm = mlp_cpu.clip_grad_norm(self.grad, float(self.cfg.clip))
        if not math.isfinite(norm):
            raise _NonFinite(k + 1, "gradient norm", norm)
        c = self.cfg
        mlp_cpu.adam_step(m.theta, self.grad, m.adam_m, m.adam_v, k + 1, self.lr_at(k),
                          c.beta1, c.beta2, c.adam_eps, c.weight_decay)
        mlp_cpu.ema_update(m.ema, m.theta, self.ema_at(k))
        if not np.isfinite(m.theta).all():
            raise _NonFinite(k + 1, "weights", "inf or nan")
        m.loss[k] = loss
        m.step = k + 1
        return loss, norm

    def _dsm_pass(self, blk, a, b, yt, eps):
        """Forward, weighted eps loss, dY and backward, shard by shard in one pass (the loss
        is a sum over rows, so each shard computes its own part: one synchronisation of the
        shard threads per step).  Fills self.grad; returns the loss (shard sums added in
        shard order).  The weights are not touched, so a non-finite loss leaves them good."""
        BD = self.B * self.D
        sa, sJ, sw = blk["a"][a:b, None], blk["J"][a:b, None], blk["w"][a:b, None]
        out, dY = self.out, self.dY

        def shard_loss(lo, hi):
            o = out[lo:hi].astype(np.float64)
            J = sJ[lo:hi]
            r = sa[lo:hi] * yt[lo:hi] + J * o - eps[lo:hi]
            wr = sw[lo:hi] * r
            dY[lo:hi] = (2.0 / BD) * (J * wr)
            return float(np.sum(wr * r))

        parts = self.net.forward_backward(self.X, out, dY, self.grad, self.dX, shard_loss)
        return math.fsum(parts) / BD if len(parts) > 1 else parts[0] / BD

    def _binomial_inputs(self, x0, blk, a, b):
        p = self.model.process
        t = blk["t"][a:b]
        p1 = p.marginal_prob_one(x0, t[:, None])
        xt = (blk["u"][a:b] <= p1).astype(np.float64)
        self._q = np.asarray(p.posterior_prob_one(xt, x0, t[:, None]), np.float64)
        if self.mc.patch:
            self.X[:, :self.model.n_in] = self.model.site_patches(2.0 * xt - 1.0)
        else:
            self.X[:, :self.D] = 2.0 * xt - 1.0
        self._skip = (p.stay_logit(t)[:, None] * (2.0 * xt - 1.0)
                      if self.cfg.model_config().skip else 0.0)

    def _binomial_loss(self, o):
        B, D = self.B, self.D
        T = self.model.process.T
        q = self._q
        log_p = -np.logaddexp(0.0, -o)            # log sigmoid(o)
        log_1mp = -np.logaddexp(0.0, o)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0) + \
                np.where(q < 1, (1 - q) * np.log(np.where(q < 1, 1 - q, 1.0)), 0.0)
        kl = ent - q * log_p - (1.0 - q) * log_1mp
        loss = T * float(np.sum(kl)) / (B * D)
        p = 0.5 * (1.0 + np.tanh(0.5 * o))
        self.dY[...] = ((T / (B * D)) * (p - q)).reshape(self.dY.shape)
        return loss


@contextlib.contextmanager
def _serial_numba():
    """Run the Philox fills of a block (``prange`` kernels) on one Numba thread.

    They are small (about 10^5 numbers, 2 ms) and their values do not depend on the thread
    count; on a loaded 2-core machine a 2-thread parallel region was measured to take 28 ms
    of wall time and 8 ms of CPU for 32768 uniforms, against 0.35 ms on one thread (the
    workers wait to be scheduled at every region)."""
    import numba

    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(n)


class _NonFinite(Exception):
    def __init__(self, step, what, value):
        self.step, self.what, self.value = step, what, value


def train(data, config=None, *, out=None, resume=False, callback=None, warn=None, note=None,
          dataset="/samples", checkpoint_seconds=10.0, checkpoint_steps=None, threads=None,
          **overrides):
    """Train an ``MLPScoreModel`` on ``data`` (HDF5 path or array [N, ...]); see the module
    docstring.

    ``config`` is a ``TrainConfig`` (or give its fields as keyword arguments).  ``out``:
    model file (written via OUT.partial + rename; existing files are refused unless
    ``resume``).  ``callback(info)`` receives ``{"step", "steps", "loss", "loss_avg",
    "lr", "grad_norm", "elapsed", "steps_per_s", "eta"}`` after every step (throttle it
    yourself); ``warn(msg)`` and ``note(msg)`` receive warnings and notes (the batch
    shrink).  ``checkpoint_steps`` adds a checkpoint every that many steps (tests).
    ``threads``: BLAS threads (default 1, see the module docstring).  Returns the model.
    """
    from threadpoolctl import threadpool_limits

    warn = warn or (lambda msg: None)
    note = note or warn
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    config.validate()
    threads = DEFAULT_BLAS_THREADS if threads is None else int(threads)
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if out is not None:
        from .store import check_out_path

        out = os.fspath(out)
        if resume and os.path.exists(out):
            raise InputError(f"--out {out} is already complete; nothing to resume")
        check_out_path(out, resume)
    tr, source = _make_trainer(data, config, dataset, threads, note)
    fp = _fingerprint(tr.Y0)
    with threadpool_limits(limits=tr.net.blas_threads, user_api="blas"):
        if out is None:
            try:
                _loop(tr, 0, callback, None)
            except _NonFinite as e:
                raise RunError(f"training {e.what} became non-finite ({e.value}) at step "
                               f"{e.step} of {config.steps}; reduce lr (now {config.lr:g}) "
                               "or clip") from None
            return tr.model
        return _run_file(tr, config, out, resume, callback, warn, fp, source,
                         checkpoint_seconds, checkpoint_steps)


def _make_trainer(data, config, dataset, threads, note):
    """(trainer, source): the data checks of ``train`` and the ``_Trainer`` it runs."""
    arr, batch, source = _load_data(data, dataset, config.batch, note)
    if config.process == "binomial":
        _binary(arr, source)                    # validated before anything is created
    return _Trainer(config, arr, batch, threads), source


def trainer(data, config=None, *, dataset="/samples", threads=None, note=None, **overrides):
    """The trainer object that ``train`` runs, without a file or a loop (benchmarks, tests).

    Same arguments and checks as ``train``.  ``trainer(...).run(k0, k1)`` executes updates
    k0 .. k1-1 (0-based, in order, starting at 0) exactly as ``train`` does, BLAS threads
    limited to ``threads``; ``.model`` is the model being trained.
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    config.validate()
    threads = DEFAULT_BLAS_THREADS if threads is None else int(threads)
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    return _make_trainer(data, config, dataset, threads, note or (lambda msg: None))[0]


def _loop(tr, start, callback, on_step):
    S = tr.cfg.steps
    t0 = time.perf_counter()
    for k in range(start, S):
        loss, norm = tr.step(k)
        if on_step is not None:
            on_step(k + 1)
        if callback is not None:
            el = time.perf_counter() - t0
            done = k + 1 - start
            rate = done / el if el > 0 else float("nan")
            lo = max(0, k + 1 - 100)
            callback({"step": k + 1, "steps": S, "loss": loss,
                      "loss_avg": float(np.mean(tr.model.loss[lo:k + 1])),
                      "lr": tr.lr_at(k), "grad_norm": norm, "elapsed": el,
                      "steps_per_s": rate,
                      "eta": (S - k - 1) / rate if rate > 0 else float("nan")})


def _run_file(tr, cfg, out, resume, callback, warn, fp, source, checkpoint_seconds,
              checkpoint_steps):
    m = tr.model

    def arrays(k):
        return {"theta": m.theta, "ema": m.ema, "adam_m": m.adam_m, "adam_v": m.adam_v,
                "loss": m.loss[:k]}

    def restore(arrs, start):
        for name, dst in (("theta", m.theta), ("ema", m.ema), ("adam_m", m.adam_m),
                          ("adam_v", m.adam_v)):
            dst[...] = arrs[name]
        m.loss[:start] = arrs["loss"][:start]

    def blowup(e, kept):
        return RunError(f"training {e.what} became non-finite ({e.value}) at step {e.step} of "
                        f"{cfg.steps}; reduce lr (now {cfg.lr:g}) or clip{kept} (the run is "
                        "deterministic: resuming with the same settings fails again)")

    return run_file(tr, cfg, out, resume, warn, fp, source, checkpoint_seconds,
                    checkpoint_steps, precision=cfg.dtype, kind=None, arrays=arrays,
                    restore=restore, loop=lambda start, on_step: _loop(tr, start, callback,
                                                                       on_step),
                    blowup=blowup)


def run_file(tr, cfg, out, resume, warn, fp, source, checkpoint_seconds, checkpoint_steps, *,
             precision, kind, arrays, restore, loop, blowup):
    """The file lifecycle of a training run (score model or GAN), shared by both.

    ``OUT.partial`` (a status attribute and the provenance) and its checkpoint
    ``OUT.partial.ckpt`` are written first; ``loop(start, on_step)`` trains from ``start``
    and ``on_step(k)`` commits ``arrays(k)`` on the checkpoint schedule; ``restore(arrays,
    start)`` loads a checkpoint on ``resume``; the finished model is written to the partial
    file, which is then renamed to ``out``.  A checkpoint whose identity (configuration, data
    fingerprint, batch, normals version, ``kind``: None for a score model, "gan") differs is
    refused.  A non-finite value (``_NonFinite``) raises ``blowup(e, kept)``, ``kept`` naming
    the partial file and the last good checkpoint, which are kept.
    """
    from kernels.philox import NORMALS_VERSION

    from .store import (OutputLock, checkpoint_differences, checkpoint_schedule, provenance,
                        read_checkpoint, remove_checkpoint, write_attrs, write_checkpoint,
                        write_h5_replace)

    partial = out + ".partial"
    ckpt = partial + ".ckpt"
    ident = cfg.identity()
    ident_meta = {"config": ident, "data": fp, "batch": tr.B, "format": FORMAT,
                  "blas_threads": tr.threads,
                  "normals": NORMALS_VERSION}     # Box-Muller version: bits of the noise
    if kind is not None:
        ident_meta["kind"] = kind
    prov = provenance(dict(ident, data=source, data_sha256=fp, effective_batch=tr.B),
                      "cpu", precision, {"seed": str(cfg.seed), "blas_threads": tr.threads})
    lock = OutputLock(partial + ".lock", out)
    m = tr.model
    try:
        start = 0
        got = read_checkpoint(ckpt, warn) if resume else None
        if resume and got is None:
            warn(f"no usable checkpoint for {out}; restarting from step 0")
        if got is not None:
            meta, arrs = got
            diff = checkpoint_differences(meta, ident, fp, tr.B, NORMALS_VERSION)
            if meta.get("kind") != kind:
                diff.append(f"kind (a {meta.get('kind') or 'score-model'} checkpoint)")
            if diff:
                raise InputError(f"checkpoint {ckpt} does not match the arguments; differing "
                                 f"fields: {', '.join(diff)}")
            if meta.get("blas_threads") != tr.threads:
                warn(f"resuming with {tr.threads} BLAS thread(s) where the checkpoint used "
                     f"{meta.get('blas_threads')}: the result will not be bitwise that of an "
                     f"uninterrupted run (give --threads {meta.get('blas_threads')} for that)")
            start = int(meta["step"])
            restore(arrs, start)
            m.step = start
        else:
            remove_checkpoint(ckpt)
        if not os.path.exists(partial) or got is None:
            def status(f):
                f.attrs["status"] = "training (see the checkpoint beside this file)"
                write_attrs(f.create_group("provenance"), prov)
            write_h5_replace(partial, status)

        def commit(k):
            write_checkpoint(ckpt, dict(ident_meta, step=int(k)), arrays(k))

        if got is None:
            commit(0)
        on_step = checkpoint_schedule(commit, checkpoint_seconds, checkpoint_steps, cfg.steps)
        try:
            loop(start, on_step)
        except _NonFinite as e:
            got = read_checkpoint(ckpt)
            kept = f" (step {got[0]['step']})" if got else ""
            raise blowup(e, f"; kept the partial file {partial} and the last good checkpoint "
                            f"{ckpt}{kept}") from None

        def final(f):
            m.save(f)
            write_attrs(f.create_group("provenance"), prov)
        write_h5_replace(partial, final)        # a kill here leaves a partial h5py opens
        os.replace(partial, out)
        remove_checkpoint(ckpt)
    finally:
        lock.release()
    return m


def dsm_loss(data, eps_fn, config=None, *, steps=1, start=0, dataset="/samples", **overrides):
    """Per-step DSM losses that training would see at updates ``start .. start+steps-1``
    for a given noise predictor ``eps_fn(y_t [B, D], t [B]) -> eps_hat [B, D]`` in normalised
    units (same Philox batches, times, noises and weights as ``train``; no update is made).

    The normalisation is that of training (per-dimension mean and std of ``data`` unless
    ``normalize=False``).  For the Gaussian processes only (not the binomial chain).
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    config = dataclasses.replace(config, steps=max(config.steps, start + steps))
    config.validate()
    if config.process == "binomial":
        raise InputError("dsm_loss is for the Gaussian processes")
    arr, batch, _ = _load_data(data, dataset, config.batch, lambda m: None)
    tr = _Trainer(config, arr, batch, 1)
    out = np.empty(steps)
    for i, k in enumerate(range(start, start + steps)):
        _, yt, eps, t, w = tr.noisy_batch(k)
        r = np.asarray(eps_fn(yt, t), np.float64).reshape(yt.shape) - eps
        out[i] = float(np.sum(w[:, None] * r * r)) / r.size
    return out
