r"""Reverse-sampling speed benchmark (issue 5 "Speed", the sampling part of issue 8).  Not a
test.

    python -m experiments.bench_sample [--quick] [--json] [--n N] [--steps S]
                                       [--threads T] [--reps R] [--no-peers]

Measures, in one process, reverse-sampling throughput in samples x steps per second (network
evaluations per second) of the benchmark MLP of ``experiments.bench_train`` ([18, 128, 128,
128, 2], SiLU, float32, a VP-SDE eps model with freshly initialised weights: the speed does
not depend on the values) with the Euler-Maruyama reverse-SDE sampler (``em``): default
10^4 samples x 1000 steps (quick: 256 x 20).

* ``nonequil_f32``: the product -- ``nonequil.samplers.sample(model, n, sampler="em",
  steps=S)`` with ``engine="auto"``, what ``nonequil sample`` runs on the CPU
  (``samplers.AUTO_ENGINE``: ``sharded`` for float32 and float64): the chain in chunks of
  stages inside ``kernels.reverse_cpu.reverse_shard`` (compiled: the first layer's time part
  once per stage, the per-walker first layer fused with SiLU, BLAS for the hidden and output
  layers, Philox noise in the kernel) on fixed-size shards of ``samplers.SHARD_ROWS``
  walkers, T shards at a time on a thread pool, single-threaded BLAS.  The engine auto
  chose is in ``extra.engine_resolved``.  What limits it: about 80 % of its CPU time is the
  two 128 x 128 sgemm products, which OpenBLAS runs at the core's float32 FMA peak; SiLU is
  most of the rest (``kernels.reverse_cpu`` docstring).
* ``nonequil_fused_f32``: ``engine="fused"`` (the ``prange`` kernel
  ``kernels.reverse_cpu.reverse_fused``: walkers in blocks of 16, explicit-loop MLP);
* ``nonequil_blas_f32``: ``engine="blas"`` (one stage at a time over the whole batch, the
  network through BLAS with T threads): measured beside the others to show which is
  fastest here (ratios ``auto/fused``, ``auto/blas``, ``fused/blas``).
* peers (optional; ``--no-peers`` skips them), the same loop -- the same per-stage
  coefficients ``y <- (c0 y + c1 o) + c2 z`` and noise levels tau taken from the sampler's
  plan (``nonequil.samplers.prepare``), the network input ``[y, sin(2 pi f tau), cos(2 pi f
  tau)]``, one network evaluation and one normal per coordinate per step, float32:
  - ``torch``: ``torch.inference_mode``, ``torch.nn`` layers, ``torch.randn(out=)``, a Python
    loop over the steps, ``torch.set_num_threads(T)``;
  - ``jax``: ``jax.jit`` of a ``lax.scan`` over the steps (the whole chain is one compiled
    call), ``jax.random.normal`` on ``fold_in(key, step)``; compiled ahead of time.

Every figure is timed ``--reps`` times (default 2) round-robin; the rate uses the best
repetition (median reported too), and items per CPU-second are reported beside it.  Each
result carries the mean and standard deviation of its final samples (normalised units), a
check that every implementation runs the same chain (same weights, same coefficients: the
values agree in distribution, not bitwise, since the noise generators differ; see
``bench_model`` for why they all end near 0).

OpenMP waiting: as ``experiments.bench_train`` (``OMP_WAIT_POLICY=PASSIVE`` unless
``--omp-active``; recorded in ``config.omp_wait_policy``).

Target (issue 5, float32): the product's engine ``>= 1.3x torch``; the JAX ratio is reported.

``run(argv) -> dict`` returns the JSON document (for ``nonequil bench``); ``--json`` prints
only that document on stdout, progress goes to stderr.
"""
import math
import sys
import time

import kernels  # noqa: F401  (points Numba's cache at kernels/ before numba is imported)
import numpy as np

from experiments._bench import (Bench, Lineup, add_omp_active, add_threads_reps, argv_of,
                                choose_threads, import_jax, import_torch, loadavg, machine,
                                omp_policy, parser, print_doc)
from experiments.bench_train import (D, DEPTH, F_MAX, F_MIN, N_FREQ, SEED, WIDTH,
                                     compute_ratios, fmt_table, jax_mlp, torch_mlp)

SAMPLER = "em"
ENGINES = [("auto", "nonequil_f32"), ("fused", "nonequil_fused_f32"),
           ("blas", "nonequil_blas_f32")]           # (engine, figure) of the product
TARGETS = [      # (key, description, ours, peer, minimum ratio)
    ("vs_torch_f32", "reverse sampling f32 >= 1.3x torch CPU (issue 5)", "nonequil_f32",
     "torch_f32", 1.3),
    ("vs_jax_f32", "reverse sampling f32 vs jax.jit + lax.scan (reported; parity is the "
     "goal)", "nonequil_f32", "jax_f32", 1.0),
]


def bench_model():
    """A float32 VP model of the benchmark network, weights from Philox normals.

    The x0-parametrisation with the output layer scaled by 0.1 makes the untrained network
    close to the exact model of data concentrated at 0 (o = 0 is that model exactly), so the
    chain is stable and every implementation ends near 0: a check that they run the same
    chain.  The parametrisation only changes the per-stage coefficients, not the cost.
    """
    from kernels import mlp_cpu, streams
    from nonequil.models import MLPScoreModel, ModelConfig

    cfg = ModelConfig(width=WIDTH, depth=DEPTH, n_freq=N_FREQ, f_min=F_MIN, f_max=F_MAX,
                      parametrisation="x0", dtype="float32")
    sizes = MLPScoreModel.layer_sizes(cfg, D)
    z = np.empty((1, mlp_cpu.n_params(mlp_cpu.mlp_layout(sizes))))
    streams.normals(np.uint64(SEED), np.uint64(7), 0, 0, z)
    model = MLPScoreModel.create(cfg, (D,), np.zeros(D), np.ones(D), z[0])
    w0 = int(model.offsets[-1, 0])
    model.theta[w0:] *= np.float32(0.1)
    model.ema[:] = model.theta
    return model


def plan_arrays(model, steps):
    """(coef [S, 4], taus [S], noisy [S]) of the sampler's stages (all affine for em)."""
    from nonequil import samplers

    plan = samplers.prepare(model, SAMPLER, steps)["plan"]
    if np.any(plan.kinds != 0):
        raise RuntimeError(f"sampler {SAMPLER} has non-affine stages; the peers implement "
                           "affine ones only")
    return plan.coef.copy(), plan.taus.copy(), plan.noise >= 0


def layers(model):
    """[(W [n_in, n_out], b), ...] float32 views of the model's EMA weights."""
    out = []
    for w0, b0, nin, nout in model.offsets:
        out.append((model.ema[w0:b0].reshape(nin, nout), model.ema[b0:b0 + nout]))
    return out


def moments(y):
    y = np.asarray(y, np.float64)
    ok = bool(np.all(np.isfinite(y)))
    return {"final_mean": float(y.mean()), "final_std": float(y.std()), "sane": ok}


# ---------------------------------------------------------------- nonequil (the product)
class NonequilSample(Bench):
    group = "nonequil"
    unit = "samples*steps/s"

    def __init__(self, model, n, steps, engine, threads, name):
        super().__init__()
        from nonequil import samplers

        self.samplers = samplers
        self.model, self.n, self.steps, self.engine = model, n, steps, engine
        self.name = name
        cfg = samplers.prepare(model, SAMPLER, steps, engine=engine)
        resolved = cfg["engine"]
        shown = engine if engine == resolved else f"{engine}={resolved}"
        self.label = f"nonequil sample em {shown} f32 ({threads} thr)"
        self.S = cfg["plan"].S
        self.y = None
        self.extra.update(engine=engine, engine_resolved=resolved, threads=threads,
                          stages=self.S)

    def items(self):
        return self.n * self.S

    def _call(self, n, steps):
        return self.samplers.sample(self.model, n, sampler=SAMPLER, steps=steps, seed=SEED,
                                    engine=self.engine)

    def setup(self):
        self.first_call(self._call, 64, 2)

    def timed(self):
        t0 = time.perf_counter()
        res = self._call(self.n, self.steps)
        el = time.perf_counter() - t0
        self.y = res.samples
        return el

    def check(self):
        return moments(self.y)


# ---------------------------------------------------------------- peers
class TorchSample(Bench):
    group = "peer"
    unit = "samples*steps/s"
    name = "torch_f32"

    def __init__(self, model, n, steps, threads):
        super().__init__()
        torch = import_torch(threads)
        self.torch = torch
        self.label = f"torch CPU loop f32 ({threads} thr)"
        self.n = n
        self.coef, taus, self.noisy = plan_arrays(model, steps)
        f = model.freqs
        ang = 2.0 * math.pi * taus[:, None] * f[None, :]
        self.emb = torch.from_numpy(np.concatenate([np.sin(ang), np.cos(ang)], 1)
                                    .astype(np.float32))
        self.net = torch_mlp(torch, layers(model), torch.float32)
        self.gen = torch.Generator().manual_seed(SEED)
        self.y = None
        self.extra.update(version=torch.__version__, threads=torch.get_num_threads())

    def items(self):
        return self.n * self.coef.shape[0]

    def _loop(self, n):
        torch = self.torch
        with torch.inference_mode():
            y = torch.randn(n, D, generator=self.gen)
            z = torch.empty(n, D)
            X = torch.empty(n, D + self.emb.shape[1])
            for s in range(self.coef.shape[0]):
                X[:, :D] = y
                X[:, D:] = self.emb[s]
                o = self.net(X)
                c0, c1, c2, _ = (float(c) for c in self.coef[s])
                y.mul_(c0).add_(o, alpha=c1)
                if self.noisy[s]:
                    torch.randn(n, D, generator=self.gen, out=z)
                    y.add_(z, alpha=c2)
        return y.numpy()

    def setup(self):
        self.first_call(self._loop, 64)

    def timed(self):
        t0 = time.perf_counter()
        self.y = self._loop(self.n)
        return time.perf_counter() - t0

    def check(self):
        return moments(self.y)


class JaxSample(Bench):
    group = "peer"
    unit = "samples*steps/s"
    name = "jax_f32"

    def __init__(self, model, n, steps):
        super().__init__()
        jax, jnp, lax = import_jax(x64=False)
        self.jax = jax
        self.label = "jax.jit lax.scan f32 (threefry)"
        self.n = n
        coef, taus, noisy = plan_arrays(model, steps)
        self.S = coef.shape[0]
        params = [(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32))
                  for W, b in layers(model)]
        fr = jnp.asarray(model.freqs, jnp.float32)
        xs = (jnp.asarray(coef, jnp.float32), jnp.asarray(taus, jnp.float32),
              jnp.asarray(noisy.astype(np.float32)), jnp.arange(self.S, dtype=jnp.uint32))

        def chain(key):
            y0 = jax.random.normal(jax.random.fold_in(key, 2**31), (n, D), jnp.float32)

            def body(y, x):
                c, tau, nz, s = x
                ang = (2.0 * math.pi) * tau * fr
                emb = jnp.broadcast_to(jnp.concatenate([jnp.sin(ang), jnp.cos(ang)]),
                                       (n, 2 * fr.shape[0]))
                o = jax_mlp(jax, params, jnp.concatenate([y, emb], 1))
                z = jax.random.normal(jax.random.fold_in(key, s), (n, D), jnp.float32)
                return (c[0] * y + c[1] * o) + (c[2] * nz) * z, None

            y, _ = lax.scan(body, y0, xs)
            return y

        self.fn = jax.jit(chain)
        self.key = jax.random.key(SEED)
        self.y = None
        self.extra.update(version=jax.__version__, platform=jax.devices()[0].platform,
                          threads="XLA default (all CPUs this process may use)")

    def items(self):
        return self.n * self.S

    def setup(self):
        self.compiled = self.first_call(lambda: self.fn.lower(self.key).compile())

    def timed(self):
        t0 = time.perf_counter()
        self.y = self.compiled(self.key).block_until_ready()
        return time.perf_counter() - t0

    def check(self):
        return moments(self.y)


# ---------------------------------------------------------------- driver
def parse(argv):
    p = parser("python -m experiments.bench_sample", __doc__, "256 samples x 20 steps")
    p.add_argument("--n", type=int, default=None, help="samples (default 10^4)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 1000)")
    add_threads_reps(p, 2)
    p.add_argument("--no-peers", action="store_true", help="skip torch/jax")
    add_omp_active(p)
    a = p.parse_args(argv)
    if a.n is None:
        a.n = 256 if a.quick else 10 ** 4
    if a.steps is None:
        a.steps = 20 if a.quick else 1000
    if a.n < 1 or a.steps < 1 or a.reps < 1:
        p.error("--n, --steps and --reps must be >= 1")
    return a


def run(argv=None):
    """Run the benchmark; returns the JSON document (a dict)."""
    a = parse(argv)
    policy = omp_policy(a.omp_active)
    T = choose_threads(a.threads)
    load0 = loadavg()
    model = bench_model()
    model.threads = T                  # BLAS threads of the blas engine
    line = Lineup()
    for engine, name in ENGINES:
        line.add(lambda e=engine, n=name: NonequilSample(model, a.n, a.steps, e, T, n), name)
    if a.no_peers:
        line.skip(("torch_f32", "jax_f32"), "--no-peers")
    else:
        line.add(lambda: TorchSample(model, a.n, a.steps, T), "torch_f32")
        line.add(lambda: JaxSample(model, a.n, a.steps), "jax_f32")
    results = line.run(a.reps)
    info = machine(T)
    info["loadavg_start"], info["loadavg_end"] = load0, loadavg()
    ratios, ratios_cpu, targets = compute_ratios(results, [n for _, n in ENGINES], TARGETS)
    ok = {k: v for k, v in results.items() if v.get("status") == "ok"}
    for key, o, p in (("auto/fused", "nonequil_f32", "nonequil_fused_f32"),
                      ("auto/blas", "nonequil_f32", "nonequil_blas_f32"),
                      ("fused/blas", "nonequil_fused_f32", "nonequil_blas_f32")):
        if o in ok and p in ok:
            ratios[key] = ok[o]["rate"] / ok[p]["rate"]
            ratios_cpu[key] = ok[o]["rate_per_cpu_s"] / ok[p]["rate_per_cpu_s"]
    for t in targets:
        if t["key"] == "vs_jax_f32" and t["status"] != "skipped":
            t["status"] = "REPORTED"
    return {"benchmark": "reverse_sampling",
            "config": {"n": a.n, "steps": a.steps, "sampler": SAMPLER, "reps": a.reps,
                       "quick": a.quick, "threads": T, "sizes": list(model.sizes),
                       "dtype": "float32", "seed": SEED, "rate_from": "best repetition",
                       "omp_wait_policy": policy,
                       "argv": argv_of(argv)},
            "machine": info, "results": results, "ratios": ratios,
            "ratios_per_cpu_s": ratios_cpu, "targets": targets}


def table_title(doc):
    c = doc["config"]
    return (f"reverse sampling ({c['sampler']}): MLP {c['sizes']} SiLU f32, {c['n']} samples "
            f"x {c['steps']} steps, best of {c['reps']} reps (round-robin); compile excluded")


def main(argv=None):
    doc = run(argv)
    return print_doc(doc, "--json" in argv_of(argv), lambda d: fmt_table(d, table_title(d)))


if __name__ == "__main__":
    sys.exit(main())
