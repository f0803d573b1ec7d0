r"""Reverse samplers: from the prior back to data with a score model.

``sample(model, n, sampler=None, steps=None, seed=0, device="cpu", record_every=None,
callback=None, first_sample=0, batch=None, engine="auto", **options) -> SampleResult``

Samplers (``SAMPLERS``; an unknown name is an error that lists them)
--------------------------------------------------------------------
All continuous-time samplers run on the uniform grid ``t_k = t_max + (t_eps - t_max) k / K``,
k = 0..K (K = ``steps``), in the model's *normalised units* (``nonequil.models``); the result
is mapped back with ``model.to_data``.  ``f(t) y`` is the drift, ``g(t)`` the diffusion,
``m(t)``, ``sigma(t)^2`` the marginal mean coefficient and variance of the forward process,
and the score is ``s = -eps_hat / sigma``.

* ``em``: the reverse-time SDE ``dy = [f y - g^2 s] dt + g dW-bar`` by Euler-Maruyama, the
  drift evaluated at t_k (K network evaluations), then (``denoise=True``, default) one Tweedie
  step ``y_0 = (y - sigma eps_hat) / m`` at t_eps (Song et al. 2021 return the noise-free
  mean at the end as well).
* ``ancestral``: the reverse chain with the exact posterior of the discretised forward process
  (Sohl-Dickstein et al. 2015; Ho et al. 2020): from t = t_k to s = t_{k+1},
  ``y_s ~ q(y_s | y_t, y_0 = y0_hat)``, ``y0_hat = (y_t - sigma_t eps_hat) / m_t``, i.e. with
  ``a = m_t/m_s`` and ``c^2 = v_t - a^2 v_s``: mean ``(c^2/v_t) m_s y0_hat + (a v_s/v_t) y_t``,
  variance ``c^2 v_s / v_t``.  For the VP SDE this is DDPM with
  ``beta_k = 1 - alpha_bar(t_{k+1}) / alpha_bar(t_k)`` and the posterior variance beta-tilde;
  for a DDPM-chain model (process ``ddpm``) it is DDPM on the chain's own betas (``steps`` < T
  strides the chain), ending at t = 0 with the noise-free posterior mean.
* ``ode``: the probability-flow ODE ``dy/dt = f y - g^2 s / 2`` with Heun's method (2 network
  evaluations a step), deterministic given the prior draw; ``method="rk45"`` integrates it
  with SciPy's adaptive RK45 (``solve_ivp`` on the flattened batch, ``rtol``, ``atol``).
  ``denoise`` defaults to False, so the output is exactly the ODE map of the prior draw.
* ``pc``: predictor-corrector (Song et al. 2021): at each t_k, ``n_corrector`` Langevin
  corrector steps ``y <- y + eps s + sqrt(2 eps) z`` and then the predictor (``em``, default,
  or ``ancestral``) to t_{k+1}; ``denoise=True``.  The step follows Song et al.'s
  signal-to-noise rule ``eps = 2 alpha (snr |z| / |s|)^2`` (``snr=0.16``, ``alpha =
  m(t_{k+1})^2 / m(t_k)^2``, i.e. 1 - beta dt for VP and 1 for VE), with ``|z|`` and ``|s|``
  the mean norms over a *pilot* ensemble: the first ``pilot`` samples (absolute indices
  0..pilot-1, default 512) of the same seed, run first.  Song et al. average over the batch
  being sampled, which would make every sample depend on the batching; the pilot makes the
  step sizes a pure function of (model, seed, steps, options), and samples 0..pilot-1
  reproduce the pilot run.
* ``binomial``: the reverse bit-flip chain of Sohl-Dickstein et al. 2015 for binary data:
  ``x_T ~ Bernoulli(1/2)``, then ``x_{t-1,d} = 1`` with the model's probability
  ``p(x_{t-1,d} = 1 | x_t)`` (``model.prob_prev``), t = T..1; ``steps`` must be T.  Bits are
  decoded with ``model.data_encoding``: ``"spins"`` -> +-1 int8, otherwise 0/1 int8.

Defaults (``DEFAULT_SAMPLER``, ``default_steps``): ``ode`` with 500 Heun steps for the
continuous processes (vp, subvp, ve) -- the sampler the training defaults were chosen with
(``nonequil.train.DEFAULTS_RATIONALE``); ``ancestral`` with T steps for ddpm; ``binomial``
with T steps for the binomial chain.  Per sampler: em 1000, ancestral 1000 (T for ddpm),
ode 500, pc 500 (2 evaluations a step with one corrector), binomial T.

Randomness (all Philox; ``kernels.philox`` purposes ``PURPOSE_SAMPLE + i``)
---------------------------------------------------------------------------
* i = 0: the prior draw ``y_T = prior_std z``, elements 0..D-1 of the normal stream of
  walker = absolute sample index (``kernels.streams.normals(seed, 48, first, 0, .)``); every
  Gaussian sampler starts from the same draw, so ``ode`` maps exactly the points that
  ``em`` starts from;
* i = 1: the chain noise: the n-th noisy stage (counting from 0) of the plan uses elements
  ``n D .. n D + D - 1`` (``kernels.reverse_cpu``);
* i = 2: binomial chain: bit d of a state is 1 when ``u_d <= p_d``, u the uniforms of the
  layout of ``kernels.streams.uniforms(seed, 50, first, k, .)``: k = 0 for the prior
  (p = 1/2), k = 1..T for the step from t = T - k + 1 to T - k
  (``kernels.reverse_cpu.bit_flips``).

Hence sample i depends only on (model, sampler, steps, options, seed, i): not on ``n``,
``batch``, ``first_sample``, the thread count or the engine (up to the engines' documented
rounding differences).  Exception: ``ode`` with ``method="rk45"`` chooses its steps from an
error norm over the whole batch, so its samples depend (within the tolerances) on the batch.

Models
------
``model`` is a ``nonequil.models.MLPScoreModel`` (or anything with the same public surface:
``process``, ``dim``, ``data_shape``, ``t_eps``, ``t_max``, ``prior_std``,
``eps_normalised(y, t)``, ``to_data(y)``), an exact score of ``nonequil.score``
(``GaussianScore``, ``MixtureScore``, ``EmpiricalScore``: wrapped by ``ExactModel``, no
normalisation, t_eps = 1e-3 for VP/sub-VP and 1e-5 for VE unless given), or, for
``binomial``, an object with ``process`` (a ``BinomialChain``), ``dim``, ``data_shape`` and
``prob_prev(x, t)``.

Engines (MLP models; ``engine=``)
---------------------------------
* ``sharded`` (CPU): the batch cut into shards of ``SHARD_ROWS`` walkers (a short last shard
  padded to that size), each shard running chunks of stages inside the compiled
  ``kernels.reverse_cpu.reverse_shard`` (the first layer's time-feature part once per stage,
  the per-walker rest fused with its activation; hidden and output layers through BLAS,
  single-threaded; Philox noise and the update in the kernel), T shards at a time on a
  thread pool (T = ``model.threads`` or the available CPUs).  Every BLAS call has the same
  shape, so a sample's bits depend neither on n, batch, first_sample nor T (tested); small
  runs pay for up to ``SHARD_ROWS - 1`` padding walkers a batch.  Its rounding differs from
  ``blas`` (first layer order, fused multiply-adds, a float32 SiLU within 2.4 ulp):
  network outputs agree to about 1e-15 (float64) and 4e-7 (float32) of their scale per
  evaluation, samples to 1e-12 / 1e-5 (tested);
* ``fused`` (CPU): the whole chain per block of 16 walkers inside one ``prange`` kernel,
  explicit-loop MLP (``kernels.reverse_cpu.reverse_fused``); bitwise batch- and
  thread-independent by construction;
* ``blas`` (CPU): one stage at a time over the whole batch, the MLP through BLAS with T
  threads (a batch of a few rows takes another OpenBLAS kernel: not guaranteed
  batch-independent);
* ``rows``: like ``blas`` with ``kernels.mlp_cpu.mlp_forward_rows_into`` (bitwise equal to
  ``fused``; slower, kept as a reference);
* ``python``: a Python loop over stages (any model; exact scores always use it);
* ``cuda`` is ``device="cuda"`` (``kernels.reverse_cuda``, one thread per walker).
``auto`` picks ``AUTO_ENGINE[dtype]`` on the CPU -- ``sharded`` for float32 and float64, the
fastest measured (``ENGINE_NOTE``).  It depends on the network's dtype only, never on n, so a
run split into pieces (``nonequil.distributed``) uses the same engine in every piece.  The
engines use the same Philox words and the same update arithmetic; ``fused`` and the BLAS
engines differ only in the MLP's summation order, ``sharded`` also in its activation loops
(tested to agree to 1e-12 in float64, to float32 rounding in float32).

Also here
---------
* ``transport(model, y, sampler, steps, ...)``: run a sampler from given states at t_max
  (for ``ode``, the probability-flow map);
* ``ode_likelihood(model, x, ...)``: the log-density of data points under the probability-flow
  ODE (exact Jacobian trace by backward passes of the network up to
  ``EXACT_TRACE_MAX_DIM`` dimensions, Hutchinson above), in data units; it lives in
  ``nonequil.likelihood`` with the variational bounds and is re-exported here;
* ``sample(..., log_density=True)``: each sample's log-density (ode, RK45) or log path
  ratio (em, ancestral, pc, binomial) for importance weights (``nonequil.reweight``);
* ``prepare(...)``: validation and the stage plan without sampling (the CLI validates with it
  before creating any file).

Measured with a default-trained model (``nonequil.train`` defaults, 20000 steps on 20000
exact draws of the double well a = 4, b = 1.5 (barrier ~4 kT, minority basin 5.7 %) mapped
to 2 + x/2; 10^4 samples, seed 1): W1 to the exact law 0.0030 for ode with 100, 200 and 500
Heun steps alike, 0.0057 em 1000, 0.0053 pc 500, 0.0050 ancestral 1000; the majority-basin
population 0.9405 (ode) against 0.9428 exact (|diff| 0.002-0.005 for all samplers; the
targets are W1 <= 0.05 and 0.02).  The ODE negative log-likelihood of 2000 fresh exact draws
was -0.7302 +- 0.0237 nats against -0.7316 for the exact density (KL estimate 0.0014 +-
0.0009 nats).
"""
import dataclasses
import math
import time

import numpy as np

from .errors import InputError, RunError

PURPOSE_PRIOR = 48          # kernels.philox.PURPOSE_SAMPLE + 0
PURPOSE_CHAIN = 49          # + 1
PURPOSE_BITS = 50           # + 2

CONTINUOUS = ("vp", "subvp", "ve")
DEFAULT_SAMPLER = {"vp": "ode", "subvp": "ode", "ve": "ode", "ddpm": "ancestral",
                   "binomial": "binomial"}
ENGINES = ("auto", "fused", "blas", "rows", "python", "sharded")
DEFAULT_T_EPS = {"vp": 1e-3, "subvp": 1e-3, "ve": 1e-5}
ENGINE_NOTE = (
    "CPU engine 'auto' = 'sharded' (float32 and float64).  Measured on the 2-core AMD EPYC "
    "(Zen 4) development machine, benchmark network [18, 128, 128, 128, 2] SiLU, em sampler, "
    "1e4 walkers x 100 steps, network evaluations per CPU-second (the machine was shared: "
    "load 2-6), best of 2 interleaved runs: float32 sharded 9.5e5 (shards of 256-1024 rows "
    "alike; 9.0e5 at 1536) / fused 5.7e5-7.5e5 (1.3-1.65x) / whole-batch BLAS 7.3e5; "
    "float64 sharded 4.7e5 / fused 3.1e5-4.0e5 (1.2-1.5x) / BLAS 1.9e5.  At 70656 flop "
    "per evaluation, sharded float32 runs 67-70 GFLOP per CPU-second against 40-53 for the "
    "fused kernel's explicit loops.  Where a 512-row float32 stage goes (one thread): the "
    "four matrix products alone 1.34e6 evaluations per CPU-second (94 GFLOP, single-thread "
    "OpenBLAS sgemm), with bias+SiLU (mlp_cpu._bias_act, 0.55 ns an element) 1.04e6, the "
    "whole stage with input, Philox noise and update 0.98e6: BLAS about 75 %, SiLU 20 %.  "
    "Shards of 512 rows keep a layer's activations (256 KB in float32) in L2; the threads "
    "meet once per chunk of stages rather than once per matrix product.  "
    "experiments.bench_sample measures auto, fused and blas against torch and jax.  "
    "Since then the sharded chunk is kernels.reverse_cpu.reverse_shard (the first layer's "
    "time part once per stage, first layer + SiLU in one pass, float32 SiLU 0.43 ns an "
    "element with fused multiply-adds, one Philox call per coordinate pair): one 512-row "
    "float32 shard 862 ns per evaluation against 1034 with reverse_batched (thread CPU "
    "time, load ~10); whole engine, 1e4 walkers x 100 steps, 2 threads, interleaved in one "
    "process: 1.08e6 against 9.3e5 evaluations per CPU-second (1.16x), float64 5.0e5 "
    "against 4.5e5 (1.11x).  Shards of 256, 512 and 1024 rows measured alike (1.05-1.09e6); "
    "512 kept.")
DEFAULT_BATCH = 32768
SHARD_ROWS = 512            # walkers per shard of the sharded engine
AUTO_ENGINE = {"float32": "sharded", "float64": "sharded"}   # engine="auto" on the CPU
FRAME_BYTES = 1 << 28       # memory for the recorded frames of one batch


# ====================================================================== models
class ExactModel:
    """An exact score of ``nonequil.score`` seen as a sampling model (identity normalisation).

    ``score`` has ``sde`` and ``eps(x, t)``/``score(x, t)``; ``t_eps`` defaults to 1e-3 (VP,
    sub-VP) or 1e-5 (VE).
    """

    def __init__(self, score, t_eps=None, process=None):
        self.exact = score
        self.process = process if process is not None else score.sde
        name = getattr(self.process, "name", "")
        if name not in CONTINUOUS:
            raise InputError(f"an exact score needs a continuous process (vp, subvp, ve), "
                             f"got {name!r}")
        self.t_eps = float(DEFAULT_T_EPS[name] if t_eps is None else t_eps)
        self.dim = _exact_dim(score)
        self.data_shape = (self.dim,)
        self.discrete = False
        self.t_max = float(self.process.t_max)
        self.prior_std = float(self.process.prior_std)
        self.config = None

    def eps_normalised(self, y, t):
        y = np.asarray(y, np.float64).reshape(-1, self.dim)
        return np.asarray(self.exact.eps(y, float(t)), np.float64).reshape(y.shape)

    def to_data(self, y):
        return np.asarray(y, np.float64).reshape((-1,) + self.data_shape)


def _exact_dim(score):
    if hasattr(score, "dim"):
        return int(score.dim)
    if hasattr(score, "mean"):
        return int(np.asarray(score.mean).size)
    if hasattr(score, "base"):
        return int(score.base.dim)
    if hasattr(score, "data"):
        return int(np.asarray(score.data).shape[1])
    raise InputError("cannot tell the dimension of this score model; give it a 'dim'")


def as_model(model, t_eps=None):
    """The sampling view of ``model``: MLP models and protocol objects pass through, exact
    scores (with an ``sde``) are wrapped in ``ExactModel``."""
    if isinstance(model, ExactModel):
        return model
    if hasattr(model, "process") and (hasattr(model, "eps_normalised")
                                      or hasattr(model, "prob_prev")):
        return model
    if hasattr(model, "sde") and hasattr(model, "eps"):
        return ExactModel(model, t_eps=t_eps)
    raise InputError(f"{type(model).__name__} is not a score model: expected an "
                     "MLPScoreModel (nonequil.models.load), an exact score of nonequil.score, "
                     "or an object with process, dim, eps_normalised(y, t) and to_data(y)")


def _process_name(model):
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "process", None):
        return cfg.process
    return getattr(model.process, "name", "")


def _mlp_parts(model, weights="ema"):
    """(theta, offsets, act, freqs) of an MLP model, or None."""
    need = ("offsets", "act", "freqs", "noise_feature", "config", "dim")
    if not all(hasattr(model, k) for k in need) or not hasattr(model, "ema"):
        return None
    if weights == "ema":
        theta = model.ema
    elif weights in ("raw", "theta", "weights"):
        theta = model.theta
    else:
        raise InputError(f"weights must be 'ema' or 'raw', got {weights!r}")
    return (np.ascontiguousarray(theta), np.ascontiguousarray(model.offsets, np.int64),
            int(model.act), np.ascontiguousarray(model.freqs, np.float64))


# ====================================================================== time functions
class _Times:
    """Per-time coefficients of a model in normalised units (vectorised over t)."""

    def __init__(self, model, mlp):
        self.model = model
        self.proc = model.process
        self.name = _process_name(model)
        self.mlp = mlp

    def m_v(self, t):
        t = np.asarray(t, np.float64)
        if self.name == "ddpm":
            ti = np.asarray(np.rint(t), np.int64)
            ab = np.asarray(self.proc.ab(ti), np.float64)
            return np.sqrt(ab), -np.expm1(np.log(ab))
        return (np.asarray(self.proc.mean_coeff(t), np.float64) * np.ones_like(t),
                np.asarray(self.proc.variance(t), np.float64) * np.ones_like(t))

    def f_g(self, t):
        t = np.asarray(t, np.float64)
        return (np.asarray(self.proc.drift_coeff(t), np.float64) * np.ones_like(t),
                np.asarray(self.proc.diffusion(t), np.float64) * np.ones_like(t))

    def a_j(self, t):
        """(a, J, sigma): eps_hat = a y + J o, o = what the evaluator returns."""
        m, v = self.m_v(t)
        s = np.sqrt(v)
        if not self.mlp:
            return np.zeros_like(s), np.ones_like(s), s
        if hasattr(self.model, "affine"):           # includes the model's Gaussian term
            a, J, sig = self.model.affine(np.asarray(t, np.float64))
            one = np.ones_like(s)
            return (np.asarray(a, np.float64) * one, np.asarray(J, np.float64) * one,
                    np.asarray(sig, np.float64) * one)
        p = self.model.config.parametrisation
        if p == "eps":
            return np.zeros_like(s), np.ones_like(s), s
        if p == "x0":
            return 1.0 / s, -m / s, s
        if p == "score":
            return np.zeros_like(s), -s, s
        if p == "v":
            return s, m, s
        raise InputError(f"unknown parametrisation {p!r}")

    def tau(self, t):
        t = np.asarray(t, np.float64)
        if self.mlp:
            return np.asarray(self.model.noise_feature(t), np.float64) * np.ones_like(t)
        return t.copy()


# ====================================================================== plans
@dataclasses.dataclass
class Plan:
    """A sampler as a list of stages (see ``kernels.reverse_cpu``)."""
    kinds: np.ndarray           # int64 [S]
    coef: np.ndarray            # float64 [S, 4]
    times: np.ndarray           # float64 [S]: time of the network evaluation
    noise: np.ndarray           # int64 [S]: noise element block, -1 for none
    step_end: np.ndarray        # int64 [K + 1]: stages completed after step k
    grid: np.ndarray            # float64 [K + 1]: t_k
    pilot: list = None          # pc: [(stage, alpha, t)] whose coefficients the pilot sets
    evals_per_step: float = 1.0

    @property
    def S(self):
        return int(self.kinds.size)

    def finish(self, tm):
        self.taus = tm.tau(self.times)
        a, J, s = tm.a_j(self.times)
        self.aJs = np.stack([a, J, s], axis=1)
        return self


class _Builder:
    def __init__(self):
        self.kinds, self.coef, self.times, self.noise, self.step_end = [], [], [], [], [0]
        self.n_noise = 0

    def add(self, kind, coef, t, noisy):
        self.kinds.append(kind)
        self.coef.append([float(c) for c in coef])
        self.times.append(float(t))
        if noisy:
            self.noise.append(self.n_noise)
            self.n_noise += 1
        else:
            self.noise.append(-1)
        return len(self.kinds) - 1

    def end_step(self):
        self.step_end.append(len(self.kinds))

    def plan(self, grid, tm, **kw):
        return Plan(np.asarray(self.kinds, np.int64),
                    np.asarray(self.coef, np.float64).reshape(-1, 4),
                    np.asarray(self.times, np.float64), np.asarray(self.noise, np.int64),
                    np.asarray(self.step_end, np.int64), np.asarray(grid, np.float64),
                    **kw).finish(tm)


def _grid(model, steps, tm):
    if tm.name == "ddpm":
        T = int(model.process.T)
        if steps > T:
            raise InputError(f"steps {steps} > T = {T} of the ddpm chain; use at most {T}")
        return np.unique(np.rint(np.linspace(0, T, steps + 1)))[::-1].astype(np.float64)
    t_max, t_eps = float(model.t_max), float(model.t_eps)
    k = np.arange(steps + 1, dtype=np.float64)
    g = t_max + (t_eps - t_max) * (k / steps)
    g[-1] = t_eps
    return g


def _em_coef(tm, t, h):
    f, g = tm.f_g(t)
    a, J, s = tm.a_j(t)
    return (1.0 - f * h - g * g * h * a / s, -g * g * h * J / s, g * math.sqrt(h), 0.0)


def _ancestral_coef(tm, t, s_):
    mt, vt = tm.m_v(t)
    ms, vs = tm.m_v(s_)
    a, J, sig = tm.a_j(t)
    at = mt / ms
    c2 = max(vt - at * at * vs, 0.0)
    k0 = c2 * ms / (vt * mt)
    var = c2 * vs / vt
    return (k0 * (1.0 - sig * a) + at * vs / vt, -k0 * sig * J, math.sqrt(max(var, 0.0)), 0.0)


def _denoise_coef(tm, t):
    m, _ = tm.m_v(t)
    a, J, s = tm.a_j(t)
    return ((1.0 - s * a) / m, -s * J / m, 0.0, 0.0)


def _pf_coef(tm, t):
    f, g = tm.f_g(t)
    a, J, s = tm.a_j(t)
    return f + g * g * a / (2.0 * s), g * g * J / (2.0 * s)


def _need_continuous(name, tm):
    if tm.name not in CONTINUOUS:
        raise InputError(f"sampler {name} needs a continuous-time process (vp, subvp, ve); "
                         f"this model's process is {tm.name}: use "
                         f"{DEFAULT_SAMPLER.get(tm.name, 'ancestral')}")


class Sampler:
    name = ""
    help = ""
    options = {}

    def default_steps(self, model):
        return 1000

    def check_options(self, opts):
        bad = sorted(set(opts) - set(self.options))
        if bad:
            valid = ", ".join(self.options) or "none"
            raise InputError(f"unknown option(s) {', '.join(bad)} for sampler {self.name}; "
                             f"valid: {valid}")
        for k, v in opts.items():
            d = self.options[k]
            if isinstance(d, bool):
                ok = isinstance(v, (bool, np.bool_))
                want = "true or false"
            elif isinstance(d, (int, float)):
                ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                    v, (bool, np.bool_))
                want = "a number"
            else:
                ok, want = True, ""
            if not ok:
                raise InputError(f"--set {k}={v}: expected {want} for sampler {self.name} "
                                 f"(default {k}={d})")
        out = dict(self.options)
        out.update(opts)
        return out


class EM(Sampler):
    name = "em"
    help = "Euler-Maruyama on the reverse-time SDE"
    options = {"denoise": True}

    def plan(self, model, steps, tm, o):
        _need_continuous(self.name, tm)
        grid = _grid(model, steps, tm)
        b = _Builder()
        for k in range(steps):
            b.add(0, _em_coef(tm, grid[k], grid[k] - grid[k + 1]), grid[k], True)
            b.end_step()
        if o["denoise"]:
            b.add(0, _denoise_coef(tm, grid[-1]), grid[-1], False)
        return b.plan(grid, tm)


class Ancestral(Sampler):
    name = "ancestral"
    help = "reverse discrete chain (DDPM / Sohl-Dickstein) with the posterior variance"
    options = {}

    def default_steps(self, model):
        return int(model.process.T) if _process_name(model) == "ddpm" else 1000

    def plan(self, model, steps, tm, o):
        if tm.name not in CONTINUOUS + ("ddpm",):
            raise InputError(f"sampler ancestral needs a Gaussian process (vp, subvp, ve, "
                             f"ddpm), not {tm.name}")
        grid = _grid(model, steps, tm)
        b = _Builder()
        for k in range(grid.size - 1):
            c = _ancestral_coef(tm, grid[k], grid[k + 1])
            b.add(0, c, grid[k], c[2] > 0)
            b.end_step()
        return b.plan(grid, tm)


class ODE(Sampler):
    name = "ode"
    help = "probability-flow ODE (Heun fixed steps, or adaptive RK45)"
    options = {"method": "heun", "rtol": 1e-5, "atol": 1e-5, "denoise": False}

    def default_steps(self, model):
        return 500

    def plan(self, model, steps, tm, o):
        _need_continuous(self.name, tm)
        if o["method"] not in ("heun", "rk45"):
            raise InputError(f"ode method {o['method']!r}; valid: heun, rk45")
        grid = _grid(model, steps, tm)
        b = _Builder()
        if o["method"] == "heun":
            for k in range(steps):
                h = grid[k + 1] - grid[k]
                P0, Q0 = _pf_coef(tm, grid[k])
                P1, Q1 = _pf_coef(tm, grid[k + 1])
                b.add(1, (P0, Q0, 0.0, h), grid[k], False)
                b.add(2, (P1, Q1, 0.0, 0.5 * h), grid[k + 1], False)
                b.end_step()
        else:
            for k in range(steps):
                b.end_step()
        if o["denoise"]:
            b.add(0, _denoise_coef(tm, grid[-1]), grid[-1], False)
        p = b.plan(grid, tm, evals_per_step=2.0)
        p.rk45 = o["method"] == "rk45"
        return p


class PC(Sampler):
    name = "pc"
    help = "predictor-corrector: EM or ancestral predictor + Langevin corrector (SNR rule)"
    options = {"snr": 0.16, "n_corrector": 1, "predictor": "em", "pilot": 512,
               "denoise": True}

    def default_steps(self, model):
        return 500

    def plan(self, model, steps, tm, o):
        _need_continuous(self.name, tm)
        if o["predictor"] not in ("em", "ancestral"):
            raise InputError(f"pc predictor {o['predictor']!r}; valid: em, ancestral")
        nc = o["n_corrector"]
        if nc != int(nc) or int(nc) < 0:
            raise InputError(f"n_corrector must be an integer >= 0, got {nc!r}")
        if not (float(o["snr"]) > 0 and math.isfinite(float(o["snr"]))):
            raise InputError(f"snr must be > 0, got {o['snr']!r}")
        pil = o["pilot"]
        if pil != int(pil) or int(pil) < 2:
            raise InputError(f"pilot must be an integer >= 2, got {pil!r}")
        grid = _grid(model, steps, tm)
        b = _Builder()
        corr = []
        for k in range(steps):
            t, s_ = grid[k], grid[k + 1]
            m0, _ = tm.m_v(t)
            m1, _ = tm.m_v(s_)
            alpha = float(m1 / m0) ** 2
            for _ in range(int(nc)):
                corr.append((b.add(0, (1.0, 0.0, 0.0, 0.0), t, True), alpha, t))
            if o["predictor"] == "em":
                b.add(0, _em_coef(tm, t, t - s_), t, True)
            else:
                c = _ancestral_coef(tm, t, s_)
                b.add(0, c, t, c[2] > 0)
            b.end_step()
        if o["denoise"]:
            b.add(0, _denoise_coef(tm, grid[-1]), grid[-1], False)
        return b.plan(grid, tm, pilot=corr, evals_per_step=1.0 + int(nc))


class Binomial(Sampler):
    name = "binomial"
    help = "reverse bit-flip chain for binary data (Sohl-Dickstein et al. 2015)"
    options = {}

    def default_steps(self, model):
        return int(getattr(model.process, "T", 100))

    def plan(self, model, steps, tm, o):
        if tm.name != "binomial" or not hasattr(model, "prob_prev"):
            raise InputError(f"sampler binomial needs a binomial-chain model (binary data); "
                             f"this model's process is {tm.name}: use "
                             f"{DEFAULT_SAMPLER.get(tm.name, 'ode')}")
        T = int(model.process.T)
        if steps != T:
            raise InputError(f"the binomial chain reverses its T = {T} steps one at a time; "
                             f"steps must be {T}, got {steps}")
        return None


SAMPLERS = {s.name: s for s in (EM(), Ancestral(), ODE(), PC(), Binomial())}


def get_sampler(name):
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def default_sampler(model):
    model = as_model(model)
    return DEFAULT_SAMPLER.get(_process_name(model), "ode")


def default_steps(model, sampler=None):
    model = as_model(model)
    return get_sampler(sampler or default_sampler(model)).default_steps(model)


# ====================================================================== results
@dataclasses.dataclass
class SampleResult:
    """``samples [n, *data_shape]`` (data units; int8 for binomial), and with
    ``record_every`` the reverse trajectory: ``frames [R, n, D]`` (data units, flattened),
    ``frame_steps [R]`` (sampler step k, 0 = the prior draw) and ``frame_times [R]``
    (diffusion time t_k).  ``info``: sampler, steps, options, seed, engine, evaluations."""
    samples: np.ndarray
    frames: np.ndarray = None
    frame_steps: np.ndarray = None
    frame_times: np.ndarray = None
    info: dict = dataclasses.field(default_factory=dict)
    log_proposal: np.ndarray = None     # [n] with log_density=True (nonequil.reweight)


def frame_steps_for(steps, record_every):
    """Recorded steps: 0, K, 2K, ... and always the last step."""
    if record_every is None:
        return np.zeros(0, np.int64)
    fs = list(range(0, steps + 1, int(record_every)))
    if fs[-1] != steps:
        fs.append(steps)
    return np.asarray(fs, np.int64)


# ====================================================================== evaluation
def _threads(model):
    from .models import cpu_threads

    return getattr(model, "threads", None) or cpu_threads()


class _Eval:
    """o(y, stage) for the Python engine: the MLP through BLAS or the model's eps."""

    def __init__(self, model, parts, plan):
        self.model, self.parts, self.plan = model, parts, plan

    def __call__(self, y, s=None, t=None, tau=None):
        if self.parts is None:
            return self.model.eps_normalised(y, self.plan.times[s] if t is None else t)
        from kernels import mlp_cpu

        theta, offsets, act, freqs = self.parts
        if tau is None:
            tau = self.plan.taus[s]
        B, D = y.shape
        X = np.empty((B, offsets[0, 2]), theta.dtype)
        X[:, :D] = y
        F = freqs.size
        emb = np.empty(2 * F)
        for q in range(F):
            emb[q], emb[F + q] = mlp_cpu.time_sincos(float(freqs[q]), float(tau))
        X[:, D:] = emb
        O = np.empty((B, D), theta.dtype)
        mlp_cpu.mlp_forward_into(theta, offsets, act, X, O)
        return O


def _python_run(ev, plan, s0, s1, seed, first, y, u, d, rec_stage, rec):
    from kernels.reverse_cpu import apply_stage

    r = int(np.searchsorted(rec_stage, s0, side="right"))
    for s in range(s0, s1):
        src = u if plan.kinds[s] == 2 else y
        o = np.ascontiguousarray(ev(src, s))
        c = plan.coef[s]
        apply_stage(int(plan.kinds[s]), c[0], c[1], c[2], c[3], int(plan.noise[s]), seed,
                    PURPOSE_CHAIN, first, y, u, d, o)
        while r < rec_stage.size and rec_stage[r] == s + 1:
            rec[r] = y
            r += 1


def _pilot(model, parts, plan, tm, seed, n_pilot, snr):
    """Fill the corrector coefficients of a pc plan from the pilot ensemble (0..P-1)."""
    from kernels import streams

    D = model.dim
    y = _prior(model, seed, 0, n_pilot)
    u = np.zeros_like(y)
    d = np.zeros_like(y)
    ev = _Eval(model, parts, plan)
    todo = {s: (alpha, t) for s, alpha, t in plan.pilot}
    none = np.zeros(0, np.int64)
    norec = np.zeros((0, n_pilot, D))
    z = np.empty((n_pilot, D))
    s = 0
    while s < plan.S:
        if s not in todo:
            nxt = min([k for k in todo if k > s], default=plan.S)
            _python_run(ev, plan, s, nxt, seed, 0, y, u, d, none, norec)
            s = nxt
            continue
        alpha, t = todo[s]
        o = np.asarray(ev(y, s), np.float64)
        a, J, sig = plan.aJs[s]
        score = -(a * y + J * o) / sig
        streams.normals(seed, PURPOSE_CHAIN, 0, int(plan.noise[s]) * D, z)
        gn = float(np.mean(np.sqrt(np.sum(score * score, axis=1))))
        zn = float(np.mean(np.sqrt(np.sum(z * z, axis=1))))
        eps = 2.0 * alpha * (snr * zn / gn) ** 2 if gn > 0 else 0.0
        if not math.isfinite(eps):
            raise RunError(f"pc: the corrector step at t = {t:g} is not finite (score norm "
                           f"{gn:g}); the model's score is broken there")
        plan.coef[s] = (1.0 - eps * a / sig, -eps * J / sig, math.sqrt(2.0 * eps), 0.0)
        _python_run(ev, plan, s, s + 1, seed, 0, y, u, d, none, norec)
        s += 1
    return plan


def _prior(model, seed, first, n):
    from kernels import streams

    z = np.empty((n, model.dim))
    streams.normals(seed, PURPOSE_PRIOR, first, 0, z)
    return z * float(model.prior_std)


# ====================================================================== the driver
def _validate_int(name, v, lo, hi=2**63 - 1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
    return int(v)


def prepare(model, sampler=None, steps=None, seed=0, device="cpu", engine="auto",
            weights="ema", t_eps=None, **options):
    """Validate everything and build the plan (no sampling): returns a dict used by
    ``sample``.  Raises ``InputError`` with a message naming the bad argument."""
    model = as_model(model, t_eps=t_eps)
    name = _process_name(model)
    sampler = sampler or DEFAULT_SAMPLER.get(name, "ode")
    sm = get_sampler(sampler)
    opts = sm.check_options(options)
    steps = sm.default_steps(model) if steps is None else steps
    steps = _validate_int("steps", steps, 1, 2**31 - 1)
    seed = _validate_int("seed", seed, 0, 2**64 - 1)
    if device not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}; valid: cpu, cuda")
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r}; valid: {', '.join(ENGINES)}")
    parts = _mlp_parts(model, weights) if sampler != "binomial" else None
    if engine in ("fused", "blas", "rows", "sharded") and parts is None:
        raise InputError(f"engine {engine} needs an MLP score model; use engine python")
    if device == "cuda":
        if sampler == "binomial":
            raise InputError("the binomial sampler runs on the CPU only; use --device cpu")
        if parts is None:
            raise InputError("--device cuda needs an MLP score model (nonequil.models); "
                             "exact scores run on the CPU")
        if sampler == "ode" and opts.get("method") == "rk45":
            raise InputError("ode method rk45 runs on the CPU only; use method heun on cuda")
        from numba import cuda

        if not cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is available (set "
                             "NUMBA_ENABLE_CUDASIM=1 to use the simulator, or use --device "
                             "cpu)")
    tm = _Times(model, parts is not None)
    plan = sm.plan(model, steps, tm, opts)
    if device == "cuda":
        eng = "cuda"
    elif plan is not None and getattr(plan, "rk45", False):
        eng = "rk45"
    elif engine == "auto":
        eng = (AUTO_ENGINE.get(np.dtype(parts[0].dtype).name, "fused") if parts is not None
               else "python")
    else:
        eng = engine
    return dict(model=model, sampler=sampler, sm=sm, opts=opts, steps=steps, seed=seed,
                device=device, engine=eng, parts=parts, tm=tm, plan=plan, weights=weights)


def sample(model, n, sampler=None, steps=None, seed=0, device="cpu", record_every=None,
           callback=None, first_sample=0, batch=None, engine="auto", weights="ema",
           t_eps=None, trajectory=None, log_density=False, **options):
    """Draw ``n`` samples (see the module docstring) and return a ``SampleResult``.

    ``first_sample``: absolute index of the first sample (samples first..first+n-1).
    ``batch``: samples per batch (memory bound; default 32768, fewer when frames are
    recorded); results do not depend on it.  ``record_every``: record the reverse trajectory
    every that many steps (and the last step).  ``trajectory(start, frames[R, b, D])``, if
    given, receives each batch's frames (data units, rows start..start+b-1) instead of
    collecting them in the result.  ``callback(info)`` gets ``{"step", "steps", "samples",
    "n", "frames", "elapsed", "walker_steps_per_s"}`` during the run.  ``weights``: ``"ema"``
    (default) or ``"raw"`` MLP weights.  Options per sampler: see ``SAMPLERS[name].options``.
    ``log_density=True``: also return ``log_proposal [n]``, each sample's log-density under
    the sampler (ode with method rk45) or its log path ratio (em, ancestral, pc, binomial),
    for importance weights (``nonequil.reweight``; em and pc then default to denoise=false;
    runs on the CPU with the Python engine; with ``record_every`` / ``trajectory`` the frames
    are recorded as well, by ``nonequil.reweight.sample_with_log_density``, and the samples and
    log-proposals keep their bits).
    """
    n = _validate_int("n", n, 1, 2**32)
    first_sample = _validate_int("first_sample", first_sample, 0, 2**32 - 1)
    if first_sample + n > 2**32:
        raise InputError("first_sample + n must be at most 2**32 (walker indices are 32-bit)")
    if log_density and (record_every is not None or trajectory is not None):
        from .reweight import sample_with_log_density     # records the frames as well

        return sample_with_log_density(model, n, sampler, steps, seed, device, record_every,
                                       callback, first_sample, batch, engine, weights, t_eps,
                                       trajectory, **options)
    cfg = prepare(model, sampler, steps, seed, device, engine, weights, t_eps, **options)
    if log_density:                                   # --- log-densities (nonequil.reweight)
        from .reweight import check_log_density

        opts = check_log_density(cfg, options)
        if opts != options:
            cfg = prepare(model, sampler, steps, seed, device, engine, weights, t_eps, **opts)
    if record_every is not None:
        record_every = _validate_int("record_every", record_every, 1)
    if batch is not None:
        batch = _validate_int("batch", batch, 1)
    model, plan, steps = cfg["model"], cfg["plan"], cfg["steps"]
    D = int(model.dim)
    fsteps = frame_steps_for(steps, record_every)
    R = fsteps.size
    bs = batch or DEFAULT_BATCH
    if R and batch is None:
        bs = max(1, min(bs, FRAME_BYTES // (8 * R * D)))
    bs = min(bs, n)
    t0 = time.perf_counter()
    seed = cfg["seed"]
    if cfg["sampler"] == "binomial":
        return _sample_binomial(cfg, n, first_sample, bs, fsteps, callback, trajectory, t0,
                                log_density)
    if plan.pilot:
        _pilot(model, cfg["parts"], plan, cfg["tm"], seed, int(cfg["opts"]["pilot"]),
               float(cfg["opts"]["snr"]))
    if log_density:                                   # --- log-densities (nonequil.reweight)
        from .reweight import sample_log_density

        xs, lq, extra = sample_log_density(cfg, n, first_sample, bs, callback)
        info = dict(sampler=cfg["sampler"], steps=steps, seed=seed, options=cfg["opts"],
                    engine="python" if cfg["sampler"] != "ode" else "rk45", device="cpu",
                    first_sample=first_sample, t_eps=float(plan.grid[-1]),
                    t_max=float(plan.grid[0]), weights=cfg["weights"],
                    seconds=time.perf_counter() - t0, **extra)
        return SampleResult(xs, info=info, log_proposal=lq)
    shape = (n,) + tuple(model.data_shape)
    samples = np.empty(shape)
    frames = np.empty((R, n, D)) if R and trajectory is None else None
    rec_stage = plan.step_end[fsteps] if R else np.zeros(0, np.int64)
    cfg["fsteps"] = fsteps
    nb = (n + bs - 1) // bs
    total = nb * steps
    evals = 0
    for bi, a in enumerate(range(0, n, bs)):
        b = min(n, a + bs)
        first = first_sample + a
        y = _prior(model, seed, first, b - a)
        u = np.zeros_like(y)
        dd = np.zeros_like(y)
        rec = np.empty((R, b - a, D))
        for r in np.nonzero(rec_stage == 0)[0]:
            rec[r] = y

        def report(step_in_batch):
            if callback is None:
                return
            el = time.perf_counter() - t0
            st = bi * steps + step_in_batch
            callback({"step": st, "steps": total, "samples": a, "n": n, "frames": R,
                      "elapsed": el, "walker_steps_per_s":
                      (a + (b - a) * step_in_batch / steps) * steps / el if el > 0 else
                      float("nan")})

        evals += _run_batch(cfg, y, u, dd, first, rec_stage, rec, report)
        if not np.all(np.isfinite(y)):
            bad = int(np.argwhere(~np.isfinite(y).all(axis=1))[0, 0])
            raise RunError(f"sampler {cfg['sampler']} produced a non-finite sample (index "
                           f"{first + bad}); the score model or the step count "
                           f"({steps}) is unusable")
        samples[a:b] = model.to_data(y).reshape((b - a,) + shape[1:])
        if R:
            fr = model.to_data(rec.reshape(R * (b - a), D)).reshape(R, b - a, D)
            if trajectory is not None:
                trajectory(a, fr)
            else:
                frames[:, a:b] = fr
        report(steps)
    info = dict(sampler=cfg["sampler"], steps=steps, seed=seed, options=cfg["opts"],
                engine=cfg["engine"], device=cfg["device"], first_sample=first_sample,
                network_evaluations_per_sample=evals // nb if nb else 0,
                t_eps=float(plan.grid[-1]), t_max=float(plan.grid[0]),
                weights=cfg["weights"], seconds=time.perf_counter() - t0)
    ftimes = plan.grid[fsteps] if R else None
    return SampleResult(samples, frames, fsteps if R else None, ftimes, info)


def _run_batch(cfg, y, u, dd, first, rec_stage, rec, report=None):
    """Run the whole plan on one batch (in place on y, u, dd); returns network evaluations."""
    plan, seed = cfg["plan"], cfg["seed"]
    if cfg["engine"] == "rk45":
        evals = _rk45(cfg, y, cfg.get("fsteps", np.zeros(0, np.int64)), rec)
        if plan.S:        # the denoising stage
            _python_run(_Eval(cfg["model"], cfg["parts"], plan), plan, 0, plan.S, seed,
                        first, y, u, dd, np.zeros(0, np.int64), np.zeros((0,) + y.shape))
        return evals + plan.S
    chunk = max(1, int(4e5 // max(1, y.shape[0])))
    for s0 in range(0, plan.S, chunk):
        s1 = min(plan.S, s0 + chunk)
        _run_stages(cfg, plan, s0, s1, seed, first, y, u, dd, rec_stage, rec)
        if report is not None and s1 < plan.S:      # the caller reports the batch's end
            k = int(np.searchsorted(plan.step_end, s1, side="right")) - 1
            report(min(k, cfg["steps"]))
    return plan.S


def transport(model, y, sampler="ode", steps=None, seed=0, first_sample=0, engine="auto",
              device="cpu", weights="ema", t_eps=None, **options):
    """Run a sampler from given states ``y [B, D]`` at t_max (normalised units) instead of the
    prior draw; returns the final states (normalised units, including a denoising stage if the
    sampler has one).  Rows are samples first_sample.. (their chain noise).  For ``ode`` this
    is the probability-flow map of y."""
    cfg = prepare(model, sampler, steps, seed, device, engine, weights, t_eps, **options)
    if cfg["sampler"] == "binomial":
        raise InputError("transport is defined for the Gaussian samplers")
    model = cfg["model"]
    y = np.array(y, np.float64).reshape(-1, int(model.dim))
    if cfg["plan"].pilot:
        _pilot(model, cfg["parts"], cfg["plan"], cfg["tm"], cfg["seed"],
               int(cfg["opts"]["pilot"]), float(cfg["opts"]["snr"]))
    cfg["fsteps"] = np.zeros(0, np.int64)
    u = np.zeros_like(y)
    dd = np.zeros_like(y)
    _run_batch(cfg, y, u, dd, int(first_sample), np.zeros(0, np.int64),
               np.zeros((0,) + y.shape))
    return y


def _run_stages(cfg, plan, s0, s1, seed, first, y, u, d, rec_stage, rec):
    eng = cfg["engine"]
    if eng == "python":
        _python_run(_Eval(cfg["model"], cfg["parts"], plan), plan, s0, s1, seed, first, y,
                    u, d, rec_stage, rec)
        return
    theta, offsets, act, freqs = cfg["parts"]
    args = (theta, offsets, act, freqs, plan.kinds, plan.coef, plan.taus, plan.noise, seed,
            PURPOSE_CHAIN, first, s0, s1, y, u, d, rec_stage, rec)
    if eng == "cuda":
        from kernels import reverse_cuda

        reverse_cuda.reverse_run(*args)
        return
    from kernels import reverse_cpu
    from threadpoolctl import threadpool_limits

    if eng == "fused":
        with threadpool_limits(limits=1, user_api="blas"):
            reverse_cpu.reverse_fused(*args)
    elif eng == "sharded":
        _run_sharded(_threads(cfg["model"]), args)
    else:
        with threadpool_limits(limits=_threads(cfg["model"]), user_api="blas"):
            reverse_cpu.reverse_batched(*args, eng == "rows")


def _rk45(cfg, y, fsteps, rec):
    """Adaptive RK45 on the probability-flow ODE for one batch (in place on y)."""
    from scipy.integrate import solve_ivp

    model, plan, tm, o = cfg["model"], cfg["plan"], cfg["tm"], cfg["opts"]
    ev = _Eval(model, cfg["parts"], plan)
    B, D = y.shape
    nfev = [0]

    def fun(t, yf):
        yy = yf.reshape(B, D)
        P, Q = _pf_coef(tm, t)
        oo = np.asarray(ev(yy, t=t, tau=float(tm.tau(t))), np.float64)
        nfev[0] += 1
        return (P * yy + Q * oo).ravel()

    t_eval = plan.grid[fsteps] if fsteps.size else None
    sol = solve_ivp(fun, (plan.grid[0], plan.grid[-1]), y.ravel().copy(), method="RK45",
                    rtol=float(o["rtol"]), atol=float(o["atol"]), t_eval=t_eval)
    if not sol.success:
        raise RunError(f"ode rk45 failed: {sol.message}")
    y[:] = sol.y[:, -1].reshape(B, D)
    if fsteps.size:
        rec[:] = sol.y.T.reshape(-1, B, D)
    return nfev[0]


# ====================================================================== binomial
def _decode_bits(model, bits):
    enc = getattr(model, "data_encoding", None)
    if enc == "spins":
        return (2 * bits - 1).astype(np.int8)
    return bits.astype(np.int8)


def _sample_binomial(cfg, n, first_sample, bs, fsteps, callback, trajectory, t0,
                     log_density=False):
    from kernels.reverse_cpu import bit_flips

    model, steps, seed = cfg["model"], cfg["steps"], cfg["seed"]
    D = int(model.dim)
    T = int(model.process.T)
    shape = (n,) + tuple(model.data_shape)
    samples = np.empty(shape, np.int8)
    R = fsteps.size
    frames = np.empty((R, n, D), np.int8) if R and trajectory is None else None
    kw = {"weights": cfg["weights"]} if hasattr(model, "ema") else {}
    logq = np.full(n, -D * math.log(2.0)) if log_density else None     # prior 2^-D
    nb = (n + bs - 1) // bs
    for bi, a in enumerate(range(0, n, bs)):
        b = min(n, a + bs)
        first = first_sample + a
        x = np.empty((b - a, D))
        bit_flips(seed, PURPOSE_BITS, first, 0, np.full((b - a, D), 0.5), x)
        rec = np.empty((R, b - a, D), np.int8)
        r = 0
        for k in range(steps + 1):
            if k > 0:
                t = T - k + 1
                p = np.asarray(model.prob_prev(x.reshape((b - a,) + tuple(model.data_shape)),
                                               t, **kw), np.float64).reshape(b - a, D)
                x_old = x.copy() if log_density else None
                bit_flips(seed, PURPOSE_BITS, first, k, np.ascontiguousarray(p), x)
                if log_density:                       # path ratio (nonequil.reweight)
                    from .reweight import binomial_log_ratio

                    logq[a:b] += binomial_log_ratio(model.process, x_old, x, p, t)
            while r < R and fsteps[r] == k:
                rec[r] = _decode_bits(model, x)
                r += 1
            if callback is not None and (k % 10 == 0 or k == steps):
                el = time.perf_counter() - t0
                callback({"step": bi * steps + k, "steps": nb * steps, "samples": a, "n": n,
                          "frames": R, "elapsed": el,
                          "walker_steps_per_s": (a * steps + (b - a) * k) / el if el > 0
                          else float("nan")})
        samples[a:b] = _decode_bits(model, x).reshape((b - a,) + shape[1:])
        if R:
            if trajectory is not None:
                trajectory(a, rec)
            else:
                frames[:, a:b] = rec
    info = dict(sampler="binomial", steps=steps, seed=seed, options={}, engine="python",
                device="cpu", first_sample=first_sample, network_evaluations_per_sample=steps,
                weights=cfg["weights"], seconds=time.perf_counter() - t0)
    times = (T - fsteps).astype(np.float64) if R else None
    return SampleResult(samples, frames, fsteps if R else None, times, info, logq)


# ====================================================================== likelihood
PURPOSE_PROBE = 51          # PURPOSE_SAMPLE + 3: Hutchinson probes
EXACT_TRACE_MAX_DIM = 64    # trace="auto": exact up to this dimension, Hutchinson above


def ode_likelihood(*args, **kwargs):
    """``nonequil.likelihood.ode_likelihood`` (kept here for existing callers)."""
    from .likelihood import ode_likelihood as f

    return f(*args, **kwargs)


# ====================================================================== sharded BLAS engine
_POOL = {}          # thread count -> ThreadPoolExecutor (kept for the life of the process)


def _pool(T):
    from concurrent.futures import ThreadPoolExecutor

    if T not in _POOL:
        _POOL[T] = ThreadPoolExecutor(T, thread_name_prefix="nonequil-shard")
    return _POOL[T]


def _run_sharded(T, args):
    """The ``sharded`` engine: ``kernels.reverse_cpu.reverse_shard`` on shards of exactly
    ``SHARD_ROWS`` walkers, T shards at a time on a thread pool (the kernel releases the
    GIL), every BLAS call single-threaded.  ``args`` are ``reverse_shard``'s arguments (those
    of ``reverse_batched`` before ``use_rows``); y, u, d and the frames are updated in
    place.

    Reproducibility.  A shard's rows are walkers ``first + a ..`` (absolute indices), so the
    noise does not depend on the sharding.  The network outputs of a row come from BLAS,
    whose code path depends on the shape of the call: OpenBLAS takes a different kernel for
    a few rows (measured: a shard of 1 or 7 rows gave other float32 bits than 64 or more).
    So every call has the same shape: a short last shard is padded to ``SHARD_ROWS`` rows
    (zero states, walkers past the batch; their results are dropped).  A sample's bits then
    depend neither on n, batch, first_sample nor the thread count (tested), at the price of
    computing up to ``SHARD_ROWS - 1`` extra walkers per batch.
    """
    from kernels import reverse_cpu
    from threadpoolctl import threadpool_limits

    *head, first, s0, s1, y, u, d, rec_stage, rec = args
    B, D = y.shape
    M = SHARD_ROWS
    bounds = [(a, min(B, a + M)) for a in range(0, B, M)]

    def run(ab):
        a, b = ab
        if b - a == M:
            reverse_cpu.reverse_shard(*head, first + a, s0, s1, y[a:b], u[a:b], d[a:b],
                                      rec_stage, rec[:, a:b])
            return
        yp, up, dp = (np.zeros((M, D)) for _ in range(3))
        yp[:b - a], up[:b - a], dp[:b - a] = y[a:b], u[a:b], d[a:b]
        recp = np.zeros((rec.shape[0], M, D))
        recp[:, :b - a] = rec[:, a:b]           # frames the kernel does not write stay
        reverse_cpu.reverse_shard(*head, first + a, s0, s1, yp, up, dp, rec_stage, recp)
        y[a:b], u[a:b], d[a:b] = yp[:b - a], up[:b - a], dp[:b - a]
        rec[:, a:b] = recp[:, :b - a]

    with threadpool_limits(limits=1, user_api="blas"):
        if T <= 1 or len(bounds) == 1:
            for ab in bounds:
                run(ab)
        else:
            list(_pool(T).map(run, bounds))      # list(): re-raises a shard's exception
