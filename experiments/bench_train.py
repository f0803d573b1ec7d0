r"""DSM training speed benchmark (issue 4 "Speed", the training part of issue 8).  Not a test.

    python -m experiments.bench_train [--quick] [--json] [--steps S] [--batch B]
                                      [--threads T] [--reps R] [--no-peers]

Measures, in one process, denoising-score-matching training steps per second of the
benchmark MLP: input 2 + 16 (the 2-D state and 8 Fourier frequencies of the noise level, sin
and cos), 3 hidden layers of 128 SiLU units, 2 outputs; batch 1024; Adam; VP-SDE (linear
schedule) eps-loss; global gradient-norm clipping at 1 and an EMA of the weights (what
``nonequil train`` does every step, so every peer does it too).  Data: 16384 draws of a 2-D
two-component Gaussian mixture.  Default 500 steps per repetition (quick: 20 steps, batch
256).

* ``nonequil_f32`` / ``nonequil_f64``: the product's engine -- ``nonequil.train.trainer``
  builds exactly the trainer that ``nonequil train`` (``nonequil.train.train``) runs, with
  ``dtype`` float32 / float64 and ``threads`` = T, and ``Trainer.run`` executes its steps (the
  Philox draws of the mini-batches, times and noises included).  The first steps (compile or
  Numba's on-disk cache load) are timed separately as ``compile_s``.
* peers (optional: a missing one is reported as skipped; ``--no-peers`` skips them all), the
  same maths and the same per-step work (batch gather, time draw, noise draw, embedding,
  forward, loss, backward, clip, Adam, EMA), in float32 and float64:
  - ``torch``: ``torch.nn`` layers, ``torch.optim.Adam``, ``clip_grad_norm_``, a
    ``_foreach`` EMA; ``torch.set_num_threads(T)``;
  - ``jax``: ``jax.jit`` of a ``lax.scan`` over the steps (the whole run is one compiled
    call), ``value_and_grad``, Adam, clipping and EMA written in ``jax.numpy``; compiled ahead
    of time, compilation excluded;
  - ``numpy``: a plain NumPy forward / backward / Adam, BLAS limited to ``--numpy-threads``
    (default 1: NumPy's OpenBLAS threads busy-wait, and with 2 of them the plain-numpy step
    ran 20-40x slower on a loaded 2-core machine, 4.5 against 85 steps/s, measured; context
    only, no target refers to it).

Every figure is timed ``--reps`` times (default 3) round-robin, so that background load hits
all of them alike; the rate uses the best repetition (median reported too), and each result
also carries items per CPU-second of this process (less sensitive to other load).  Each
figure also reports its mean loss over the last repetition, a cheap check that every
implementation trains the same problem (all start near 1 and decrease).

OpenMP waiting.  Unless ``--omp-active`` is given, the benchmark sets ``OMP_WAIT_POLICY=PASSIVE``
(if the variable is unset) before torch or Numba's OpenMP layer loads libgomp: with the default
active spinning, torch with 2 threads ran 20x slower (2 against 40 steps/s, measured) on a
loaded 2-core machine, which would measure the machine's load rather than torch.  The policy
in force is recorded in ``config.omp_wait_policy``.  (nonequil's training engine runs no
OpenMP region while training: its shard threads are Python threads that block when idle.)

Targets (issue 4, float32): ``nonequil_f32 >= 1.1x torch_f32`` and ``>= 0.8x jax_f32``.

``run(argv) -> dict`` returns the JSON document (the ``nonequil bench`` suite calls it);
``--json`` prints only that document on stdout, progress goes to stderr.
"""
import math
import sys
import time

import kernels  # noqa: F401  (points Numba's cache at kernels/ before numba is imported)
import numpy as np

from experiments._bench import (Bench, Lineup, add_omp_active, add_threads_reps, argv_of,
                                choose_threads, import_jax, import_torch, loadavg, machine,
                                omp_policy, parser, print_doc, ratio_lines, target_lines)

SEED = 20240607
N_DATA = 16384
D = 2
N_FREQ = 8                       # 2 * 8 = 16 time-embedding inputs
WIDTH, DEPTH = 128, 3
F_MIN, F_MAX = 0.25, 8.0
BETA_MIN, BETA_MAX = 0.1, 20.0   # VP linear schedule (score_sde defaults)
T_EPS = 1e-3
LR = 1e-3
CLIP = 1.0
EMA = 0.999
DTYPES = ("float32", "float64")
TARGETS = [      # (key, description, ours, peer, minimum ratio)
    ("vs_torch_f32", "DSM training f32 >= 1.1x torch CPU (issue 4)", "nonequil_f32",
     "torch_f32", 1.1),
    ("vs_jax_f32", "DSM training f32 >= 0.8x jax.jit + lax.scan (issue 4)", "nonequil_f32",
     "jax_f32", 0.8),
]


def tag(dtype):
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


def bench_data():
    """[N_DATA, 2] float64: a two-component Gaussian mixture (NumPy PCG64: benchmark input
    only, not library randomness)."""
    rng = np.random.default_rng(SEED)
    comp = rng.random(N_DATA) < 0.3
    x = rng.standard_normal((N_DATA, D)) * 0.5
    x[comp] += (2.0, -1.0)
    x[~comp] += (-1.0, 0.5)
    return x


def sizes():
    return [D + 2 * N_FREQ] + [WIDTH] * DEPTH + [D]


def vp_mean_coeff(t, xp=np):
    """m(t) of the VP-SDE with the linear schedule (the sigma follows as sqrt(1 - m^2))."""
    return xp.exp(-0.25 * t * t * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN)


def freqs():
    return F_MIN * (F_MAX / F_MIN) ** (np.arange(N_FREQ) / (N_FREQ - 1.0))


def loss_check(losses):
    """The mean loss of the last repetition; sane when every loss is finite."""
    return {"loss_mean_last_rep": float(np.mean(losses)),
            "sane": bool(np.all(np.isfinite(losses)))}


def he_init(rng, dtype):
    """[(W [n_in, n_out], b [n_out]), ...] He-normal hidden layers, LeCun output (peers)."""
    s = sizes()
    out = []
    for l in range(len(s) - 1):
        gain = 2.0 if l < len(s) - 2 else 1.0
        W = rng.standard_normal((s[l], s[l + 1])) * math.sqrt(gain / s[l])
        out.append((W.astype(dtype), np.zeros(s[l + 1], dtype)))
    return out


def torch_mlp(torch, layers, dtype):
    """``torch.nn.Sequential`` of Linear layers with the weights ``layers`` = [(W [n_in,
    n_out], b), ...] and SiLU between them (the benchmark network for the torch peers)."""
    mods = []
    for l, (W, b) in enumerate(layers):
        lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        mods.append(lin)
        if l < len(layers) - 1:
            mods.append(torch.nn.SiLU())
    return torch.nn.Sequential(*mods)


def jax_mlp(jax, params, X):
    """The benchmark network in jax: ``params`` = [(W, b), ...], SiLU between the layers."""
    h = X
    for W, b in params[:-1]:
        h = jax.nn.silu(h @ W + b)
    W, b = params[-1]
    return h @ W + b


# ---------------------------------------------------------------- nonequil (the product)
class NonequilTrain(Bench):
    group = "nonequil"
    unit = "steps/s"

    def __init__(self, S, batch, dtype, threads, reps, warm=3):
        super().__init__()
        import importlib

        train_mod = importlib.import_module("nonequil.train")   # the module, not the verb

        self.S, self.warm = S, warm
        self.name = f"nonequil_{tag(dtype)}"
        self.label = f"nonequil train engine {tag(dtype)} ({threads} thr)"
        self.cfg = train_mod.TrainConfig(
            dtype=np.dtype(dtype).name, batch=batch, width=WIDTH, depth=DEPTH,
            n_freq=N_FREQ, f_min=F_MIN, f_max=F_MAX, lr=LR, clip=CLIP, ema=EMA,
            steps=warm + reps * S, warmup=0, lr_schedule="constant", seed=SEED)
        self.tr = train_mod.trainer(bench_data(), self.cfg, threads=threads)
        self.k = 0
        self.extra.update(threads=threads, batch=self.tr.B, engine=self.tr.engine_info())

    def items(self):
        return self.S

    def setup(self):
        self.first_call(self.tr.run, 0, self.warm)
        self.k = self.warm

    def timed(self):
        t0 = time.perf_counter()
        self.tr.run(self.k, self.k + self.S)
        el = time.perf_counter() - t0
        self.k += self.S
        return el

    def check(self):
        loss = self.tr.model.loss[self.k - self.S:self.k]
        return {"loss_mean_last_rep": float(np.mean(loss)),
                "loss_first": float(self.tr.model.loss[0]),
                "sane": bool(np.all(np.isfinite(loss)))}


# ---------------------------------------------------------------- peers
class TorchTrain(Bench):
    group = "peer"
    unit = "steps/s"

    def __init__(self, S, batch, dtype, threads):
        super().__init__()
        torch = import_torch(threads)
        self.torch = torch
        self.S, self.B = S, batch
        self.name = f"torch_{tag(dtype)}"
        self.label = f"torch CPU {tag(dtype)} ({threads} thr)"
        self.dt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        self.net = torch_mlp(torch, he_init(np.random.default_rng(SEED), dtype), self.dt)
        self.params = list(self.net.parameters())
        self.ema = [p.detach().clone() for p in self.params]
        self.opt = torch.optim.Adam(self.params, lr=LR)
        self.data = torch.from_numpy(bench_data().astype(dtype))
        self.freqs = torch.from_numpy(freqs().astype(dtype))
        self.gen = torch.Generator().manual_seed(SEED)
        self.losses = []
        self.extra.update(version=torch.__version__, threads=torch.get_num_threads())

    def items(self):
        return self.S

    def step(self):
        torch, B = self.torch, self.B
        idx = torch.randint(0, N_DATA, (B,), generator=self.gen)
        t = T_EPS + (1.0 - T_EPS) * torch.rand(B, generator=self.gen, dtype=self.dt)
        m = vp_mean_coeff(t, torch)
        s = torch.sqrt(1.0 - m * m)
        eps = torch.randn(B, D, generator=self.gen, dtype=self.dt)
        yt = m[:, None] * self.data[idx] + s[:, None] * eps
        ang = (2.0 * math.pi) * t[:, None] * self.freqs
        X = torch.cat([yt, torch.sin(ang), torch.cos(ang)], 1)
        loss = ((self.net(X) - eps) ** 2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_mul_(self.ema, EMA)
            torch._foreach_add_(self.ema, self.params, alpha=1.0 - EMA)
        return loss.detach()

    def setup(self):
        t0 = time.perf_counter()
        for _ in range(3):
            self.step()
        self.compile_s = time.perf_counter() - t0

    def timed(self):
        t0 = time.perf_counter()
        losses = [self.step() for _ in range(self.S)]
        el = time.perf_counter() - t0
        self.losses = [float(v) for v in losses]
        return el

    def check(self):
        return loss_check(self.losses)


class JaxTrain(Bench):
    group = "peer"
    unit = "steps/s"

    def __init__(self, S, batch, dtype):
        super().__init__()
        jax, jnp, lax = import_jax()
        self.jax, self.jnp = jax, jnp
        self.S, self.B = S, batch
        self.name = f"jax_{tag(dtype)}"
        B = batch
        self.label = f"jax.jit lax.scan {tag(dtype)}"
        dt = jnp.float32 if np.dtype(dtype) == np.float32 else jnp.float64
        params = [(jnp.asarray(W), jnp.asarray(b))
                  for W, b in he_init(np.random.default_rng(SEED), dtype)]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.state = (params, zeros, zeros, params, jnp.asarray(0, jnp.int32))
        data = jnp.asarray(bench_data().astype(dtype))
        fr = jnp.asarray(freqs().astype(dtype))
        b1, b2, ae = 0.9, 0.999, 1e-8

        def loss_fn(p, X, eps):
            return jnp.mean((jax_mlp(jax, p, X) - eps) ** 2)

        grad_fn = jax.value_and_grad(loss_fn)

        def body(state, key):
            p, m, v, ema, k = state
            k1, k2, k3 = jax.random.split(key, 3)
            idx = jax.random.randint(k1, (B,), 0, N_DATA)
            t = T_EPS + (1.0 - T_EPS) * jax.random.uniform(k2, (B,), dtype=dt)
            mt = vp_mean_coeff(t, jnp)
            st = jnp.sqrt(1.0 - mt * mt)
            eps = jax.random.normal(k3, (B, D), dtype=dt)
            yt = mt[:, None] * data[idx] + st[:, None] * eps
            ang = (2.0 * math.pi) * t[:, None] * fr
            X = jnp.concatenate([yt, jnp.sin(ang), jnp.cos(ang)], 1)
            loss, g = grad_fn(p, X, eps)
            leaves = jax.tree_util.tree_leaves(g)
            norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
            scale = jnp.minimum(1.0, CLIP / (norm + 1e-12)).astype(dt)
            g = jax.tree_util.tree_map(lambda x: x * scale, g)
            k = k + 1
            m = jax.tree_util.tree_map(lambda a, x: b1 * a + (1 - b1) * x, m, g)
            v = jax.tree_util.tree_map(lambda a, x: b2 * a + (1 - b2) * x * x, v, g)
            c1 = (1.0 - b1 ** k).astype(dt)
            c2 = (1.0 - b2 ** k).astype(dt)
            p = jax.tree_util.tree_map(
                lambda w, a, c: w - LR * (a / c1) / (jnp.sqrt(c / c2) + ae), p, m, v)
            ema = jax.tree_util.tree_map(lambda e, w: EMA * e + (1 - EMA) * w, ema, p)
            return (p, m, v, ema, k), loss

        def run(state, key):
            keys = jax.random.split(key, S)
            return lax.scan(body, state, keys)

        self.fn = jax.jit(run)
        self.key = jax.random.key(SEED)
        self.losses = None
        self.extra.update(version=jax.__version__, platform=jax.devices()[0].platform,
                          threads="XLA default (all CPUs this process may use)")

    def items(self):
        return self.S

    def setup(self):
        self.compiled = self.first_call(lambda: self.fn.lower(self.state, self.key).compile())
        self.jax.block_until_ready(self.compiled(self.state, self.key))

    def timed(self):
        self.key = self.jax.random.fold_in(self.key, 1)
        t0 = time.perf_counter()
        self.state, losses = self.jax.block_until_ready(self.compiled(self.state, self.key))
        el = time.perf_counter() - t0
        self.losses = np.asarray(losses)
        return el

    def check(self):
        return loss_check(self.losses)


class NumpyTrain(Bench):
    group = "peer"
    unit = "steps/s"

    def __init__(self, S, batch, dtype, threads):
        super().__init__()
        self.S, self.B, self.T = S, batch, threads
        self.dt = np.dtype(dtype)
        self.name = f"numpy_{tag(dtype)}"
        self.label = f"numpy {tag(dtype)} (BLAS {threads} thr)"
        self.rng = np.random.default_rng(SEED)
        self.p = [a for Wb in he_init(self.rng, self.dt) for a in Wb]
        self.m = [np.zeros_like(a) for a in self.p]
        self.v = [np.zeros_like(a) for a in self.p]
        self.ema = [a.copy() for a in self.p]
        self.data = bench_data().astype(self.dt)
        self.freqs = freqs().astype(self.dt)
        self.k = 0
        self.losses = []

    def items(self):
        return self.S

    def step(self):
        B, dt, p = self.B, self.dt, self.p
        idx = self.rng.integers(0, N_DATA, B)
        t = (T_EPS + (1.0 - T_EPS) * self.rng.random(B)).astype(dt)
        mt = vp_mean_coeff(t)
        st = np.sqrt(1.0 - mt * mt)
        eps = self.rng.standard_normal((B, D), dtype=dt)
        yt = mt[:, None] * self.data[idx] + st[:, None] * eps
        ang = dt.type(2.0 * math.pi) * t[:, None] * self.freqs
        h = np.concatenate([yt, np.sin(ang), np.cos(ang)], 1)
        hs, sg = [h], []
        for l in range(DEPTH):
            z = h @ p[2 * l] + p[2 * l + 1]
            s = 1.0 / (1.0 + np.exp(-z))
            h = z * s
            sg.append((s, h))
            hs.append(h)
        out = h @ p[-2] + p[-1]
        r = out - eps
        loss = float(np.mean(r * r))
        g = [None] * len(p)
        G = (2.0 / r.size) * r
        for l in range(DEPTH, -1, -1):
            g[2 * l] = hs[l].T @ G
            g[2 * l + 1] = G.sum(0)
            if l > 0:
                s, hh = sg[l - 1]
                G = (G @ p[2 * l].T) * (s + hh * (1.0 - s))
        norm = math.sqrt(sum(float(np.sum(x * x)) for x in g))
        if norm > CLIP:
            for x in g:
                x *= dt.type(CLIP / norm)
        self.k += 1
        c1, c2 = 1.0 - 0.9 ** self.k, 1.0 - 0.999 ** self.k
        for w, a, v, x, e in zip(p, self.m, self.v, g, self.ema):
            a *= 0.9
            a += 0.1 * x
            v *= 0.999
            v += 0.001 * (x * x)
            w -= dt.type(LR) * (a / dt.type(c1)) / (np.sqrt(v / dt.type(c2)) + dt.type(1e-8))
            e *= EMA
            e += dt.type(1.0 - EMA) * w
        return loss

    def _steps(self, n):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.T, user_api="blas"):
            return [self.step() for _ in range(n)]

    def setup(self):
        self.first_call(self._steps, 3)

    def timed(self):
        t0 = time.perf_counter()
        self.losses = self._steps(self.S)
        return time.perf_counter() - t0

    def check(self):
        return loss_check(self.losses)


# ---------------------------------------------------------------- driver
def parse(argv):
    p = parser("python -m experiments.bench_train", __doc__, "20 steps, batch 256")
    p.add_argument("--steps", type=int, default=None, help="steps per rep (default 500)")
    p.add_argument("--batch", type=int, default=None, help="default 1024 (quick 256)")
    add_threads_reps(p, 3)
    p.add_argument("--no-peers", action="store_true", help="skip torch/jax/numpy")
    p.add_argument("--numpy-threads", type=int, default=1,
                   help="BLAS threads of the plain-numpy peer (default 1; see above)")
    add_omp_active(p)
    a = p.parse_args(argv)
    if a.steps is None:
        a.steps = 20 if a.quick else 500
    if a.batch is None:
        a.batch = 256 if a.quick else 1024
    if a.steps < 1 or a.batch < 2 or a.reps < 1:
        p.error("--steps and --reps must be >= 1 and --batch >= 2")
    return a


def compute_ratios(results, ours_names, targets):
    """Ratios ours / peer (wall and per CPU-second) for matching dtypes, and the targets."""
    ok = {k: v for k, v in results.items() if v.get("status") == "ok"}
    ratios, ratios_cpu = {}, {}
    for o in ours_names:
        if o not in ok:
            continue
        suffix = o.rsplit("_", 1)[1]
        for p, v in ok.items():
            if v["group"] == "peer" and p.endswith("_" + suffix):
                ratios[f"{o}/{p}"] = ok[o]["rate"] / v["rate"]
                ratios_cpu[f"{o}/{p}"] = ok[o]["rate_per_cpu_s"] / v["rate_per_cpu_s"]
    out = []
    for key, desc, o, p, need in targets:
        r = ratios.get(f"{o}/{p}")
        if r is None:
            out.append({"key": key, "target": desc, "need": need, "status": "skipped"})
            continue
        out.append({"key": key, "target": desc, "need": need, "ours": o, "against": p,
                    "ratio": r, "ratio_per_cpu_s": ratios_cpu.get(f"{o}/{p}"),
                    "status": "PASS" if r >= need else "FAIL"})
    return ratios, ratios_cpu, out


def fmt_table(doc, title):
    m = doc["machine"]
    out = [f"machine: {m['cpu']}, {m['cpus_available']} CPUs available; threads for all = "
           f"{m['threads']} (numba layer {m.get('numba_threading_layer')}); loadavg start "
           f"{m['loadavg_start']} end {m.get('loadavg_end')}",
           f"versions: python {m['python']}, numpy {m['numpy']}, numba {m['numba']}"
           + "".join(f", {k.split('_')[0]} {v['version']}" for k, v in doc["results"].items()
                     if v.get("status") == "ok" and "version" in v and k.endswith("f32")),
           title, ""]
    hdr = (f"{'figure':<38} {'rate (best)':>11} {'median':>10} {'unit':<12} {'best s':>8} "
           f"{'cpu/wall':>8} {'per cpu-s':>10} {'compile s':>9} {'loss':>7}")
    out += [hdr, "-" * len(hdr)]
    for k, v in doc["results"].items():
        if v.get("status") != "ok":
            out.append(f"{k:<38} skipped: {v.get('reason', '')}")
            continue
        loss = v.get("loss_mean_last_rep")
        out.append(f"{v['label'][:38]:<38} {v['rate']:>11.4g} {v['rate_median']:>10.4g} "
                   f"{v['unit']:<12} {v['best_s']:>8.3f} {v['cpu_per_wall_best']:>8.2f} "
                   f"{v['rate_per_cpu_s']:>10.4g} {v['compile_s']:>9.3f} "
                   + (f"{loss:>7.4f}" if loss is not None else ""))
    out += ratio_lines(doc, 34)
    out += ["(wall: best repetitions; per cpu-s: items per CPU-second of this process, a "
            "check on uneven background load)", "", "targets:"]
    out += target_lines(doc["targets"], lambda t: f"need {t['need']:g}x")
    return "\n".join(out)


def run(argv=None):
    """Run the benchmark; returns the JSON document (a dict)."""
    a = parse(argv)
    policy = omp_policy(a.omp_active)
    T = choose_threads(a.threads)
    load0 = loadavg()
    line = Lineup()
    for dt in DTYPES:
        line.add(lambda dt=dt: NonequilTrain(a.steps, a.batch, dt, T, a.reps),
                 f"nonequil_{tag(dt)}")
    peers = ("torch", "jax", "numpy")
    if a.no_peers:
        line.skip([f"{p}_{tag(dt)}" for p in peers for dt in DTYPES], "--no-peers")
    else:
        for dt in DTYPES:
            line.add(lambda dt=dt: TorchTrain(a.steps, a.batch, dt, T), f"torch_{tag(dt)}")
            line.add(lambda dt=dt: JaxTrain(a.steps, a.batch, dt), f"jax_{tag(dt)}")
            line.add(lambda dt=dt: NumpyTrain(a.steps, a.batch, dt, max(1, a.numpy_threads)),
                     f"numpy_{tag(dt)}")
    results = line.run(a.reps)
    info = machine(T)
    info["loadavg_start"], info["loadavg_end"] = load0, loadavg()
    ratios, ratios_cpu, targets = compute_ratios(results, ["nonequil_f32", "nonequil_f64"],
                                                 TARGETS)
    return {"benchmark": "dsm_training",
            "config": {"steps": a.steps, "batch": a.batch, "reps": a.reps, "quick": a.quick,
                       "threads": T, "sizes": sizes(), "activation": "silu",
                       "optimizer": "adam", "lr": LR, "clip": CLIP, "ema": EMA,
                       "process": "vp linear", "data": f"{N_DATA} x {D} Gaussian mixture",
                       "seed": SEED, "rate_from": "best repetition",
                       "omp_wait_policy": policy,
                       "argv": argv_of(argv)},
            "machine": info, "results": results, "ratios": ratios,
            "ratios_per_cpu_s": ratios_cpu, "targets": targets}


def table_title(doc):
    c = doc["config"]
    return (f"DSM training: MLP {c['sizes']} SiLU, batch {c['batch']}, Adam + clip + EMA, "
            f"{c['steps']} steps per rep, best of {c['reps']} reps (round-robin); "
            "compile excluded")


def main(argv=None):
    doc = run(argv)
    return print_doc(doc, "--json" in argv_of(argv), lambda d: fmt_table(d, table_title(d)))


if __name__ == "__main__":
    sys.exit(main())
