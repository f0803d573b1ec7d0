r"""Müller-Brown overdamped Langevin speed benchmark (issue 8).  Not a test.

    python -m experiments.bench_mb [--quick] [--json] [--walkers M] [--steps S]
                                   [--device cpu|cuda] [--threads T] [--reps R] [--no-peers]

Measures, in one process, Euler-Maruyama overdamped Langevin walkers in the 2-D Müller-Brown
potential (Müller & Brown 1979; ``scale = 0.1``, kT = 1, gamma = 1, dt = 1e-4, all walkers
started at the basin minimum (-0.558, 1.442); default 10^5 walkers x 1000 steps, float64):

    x <- x - grad U(x) dt / gamma + sqrt(2 kT dt / gamma) z,   z ~ N(0, I_2)

in walker-steps/s:

* ``nonequil``: ``nonequil.simulate.simulate`` with ``process="langevin",
  potential="muller-brown"`` in memory (frame 0 and the final step recorded) -- the same
  library call and kernel (``kernels.langevin_cpu.langevin_run``, Philox normals) that
  ``nonequil simulate --process langevin --potential muller-brown`` runs; not a special path.
  A first tiny run compiles (or loads Numba's cache) and is excluded (``compile_s``).
* peers (optional; a missing one is reported as skipped):
  - ``numpy``: the vectorised loop over steps on the whole ensemble, the four Gaussian terms
    of the potential with preallocated buffers and in-place ops, ``default_rng`` normals
    (PCG64); numpy runs this in one thread;
  - ``torch``: the same loop in torch CPU (``torch.randn(out=)``, in-place ops),
    ``torch.set_num_threads(--torch-threads)``, default 1: on the loaded 2-core machine
    torch's OpenMP ``exp`` at 2 threads ran 10-25x slower than at 1, so 1 thread is the
    stronger baseline there;
  - ``jax``: ``jax.jit`` of a ``lax.scan`` over steps, ``jax.random.normal`` on
    ``fold_in(key, step)``, float64, compiled ahead of time.
  The peers use their own (equivalent, not Philox) normal noise.
* ``--device cuda`` (only when ``numba.cuda.is_available()``): the same ``simulate`` call on
  the GPU (including its host/device copies per chunk), and torch CUDA.

Every figure is timed ``--reps`` times, round-robin; the rate uses the best repetition (the
median is reported too), with CPU seconds per figure (``rate_per_cpu_s``).  Each result
carries the mean position of the final ensemble; ``sane`` says it agrees with the nonequil
run within z = 6 standard errors of the difference (a cheap check that every implementation
simulates the same process).  ``--json`` prints only the JSON document on stdout.
"""
import math
import sys
import time

import kernels  # noqa: F401  (points Numba's cache at kernels/ before numba is imported)
import numpy as np

from experiments._bench import (Bench, Lineup, add_threads_reps, choose_threads, import_jax,
                                import_torch, loadavg, machine_info, parser, print_doc,
                                torch_label, torch_sync)
from kernels.potentials import MB_A, MB_X0, MB_Y0, MB_a, MB_b, MB_c

SCALE, KT, GAMMA, DT = 0.1, 1.0, 1.0, 1e-4
X0 = (-0.558, 1.442)
SEED = 20240607
Z_SANE = 6.0
TARGETS = [("vs_best_peer", "Muller-Brown >= 4x best of numpy/torch/jax (issue 8)", 4.0)]


def mb_terms():
    """The potential's constants as plain floats (scale folded into the amplitudes)."""
    return [(SCALE * float(MB_A[i]), float(MB_a[i]), float(MB_b[i]), float(MB_c[i]),
             float(MB_X0[i]), float(MB_Y0[i])) for i in range(4)]


def ensemble_stats(xy):
    """Mean and variance of each coordinate of positions xy[M, 2] (float64)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return {"mean": xy.mean(axis=0).tolist(), "var": xy.var(axis=0).tolist(),
            "n": int(xy.shape[0])}


class MBBench(Bench):
    """Base of the Müller-Brown figures: items = walkers x steps, stats of the final state."""
    unit = "walker-steps/s"

    def __init__(self, M, S):
        super().__init__()
        self.M, self.S = M, S
        self.final = None

    def items(self):
        return self.M * self.S

    def check(self):
        return {"final": ensemble_stats(self.final)} if self.final is not None else {}


# ---------------------------------------------------------------- nonequil
class NonequilMB(MBBench):
    name = "nonequil"
    group = "nonequil"

    def __init__(self, M, S, device="cpu"):
        super().__init__(M, S)
        self.device = device
        if device != "cpu":
            self.name, self.group = "nonequil_cuda", "gpu"
        self.label = f"nonequil simulate langevin/muller-brown ({device})"

    def _run(self, M, S):
        from nonequil.simulate import SimulationConfig, simulate

        cfg = SimulationConfig(process="langevin", potential="muller-brown",
                               params={"scale": SCALE, "kT": KT, "gamma": GAMMA}, walkers=M,
                               steps=S, dt=DT, x0=list(X0), record_every=S, seed=SEED,
                               device=self.device)
        return simulate(cfg).x

    def setup(self):
        self.first_call(self._run, 64, 2)

    def timed(self):
        t0 = time.perf_counter()
        self.final = self._run(self.M, self.S)
        return time.perf_counter() - t0


# ---------------------------------------------------------------- peers
class NumpyMB(MBBench):
    name = "numpy"
    label = "numpy loop (PCG64, 1 thread)"
    group = "peer"

    def __init__(self, M, S):
        super().__init__(M, S)
        self.rng = np.random.default_rng(SEED)
        self.buf = {k: np.empty(M) for k in ("X", "Y", "q", "t", "u", "e", "gx", "gy")}
        self.z = np.empty((2, M))

    def _loop(self, x, y, S):
        b = {k: v[:x.size] for k, v in self.buf.items()}
        X, Y, q, t, u, e, gx, gy = (b[k] for k in ("X", "Y", "q", "t", "u", "e", "gx", "gy"))
        z = self.z if x.size == self.M else np.empty((2, x.size))
        drift = -DT / GAMMA
        sq = math.sqrt(2.0 * KT * DT / GAMMA)
        terms = mb_terms()
        for _ in range(S):
            gx[:] = 0.0
            gy[:] = 0.0
            for A, a, bb, c, x0, y0 in terms:     # no temporaries: every op writes a buffer
                np.subtract(x, x0, out=X)
                np.subtract(y, y0, out=Y)
                np.multiply(X, a, out=t)
                np.multiply(Y, bb, out=u)
                t += u                              # a X + b Y
                np.multiply(X, t, out=q)            # a X^2 + b X Y
                np.multiply(Y, Y, out=u)
                u *= c
                q += u
                np.exp(q, out=e)
                e *= A
                np.multiply(X, a, out=u)
                t += u                              # 2 a X + b Y
                t *= e
                gx += t
                np.multiply(Y, 2.0 * c, out=t)
                np.multiply(X, bb, out=u)
                t += u                              # b X + 2 c Y
                t *= e
                gy += t
            self.rng.standard_normal(out=z)
            z *= sq
            gx *= drift
            gy *= drift
            x += gx
            x += z[0]
            y += gy
            y += z[1]

    def setup(self):
        w = min(256, self.M)          # warm-up walkers: the buffers hold M rows
        self.first_call(self._loop, np.full(w, X0[0]), np.full(w, X0[1]), 2)

    def timed(self):
        x, y = np.full(self.M, X0[0]), np.full(self.M, X0[1])
        t0 = time.perf_counter()
        self._loop(x, y, self.S)
        dt = time.perf_counter() - t0
        self.final = np.stack([x, y], axis=1)
        return dt


class TorchMB(MBBench):
    name = "torch"
    group = "peer"

    def __init__(self, M, S, threads, device="cpu"):
        super().__init__(M, S)
        torch = import_torch(threads, device)
        if device != "cpu":
            self.name, self.group = "torch_cuda", "gpu"
        self.torch, self.device = torch, device
        self.label = torch_label(device, threads)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(SEED)
        self.extra["version"] = torch.__version__

    def _loop(self, x, y, S):
        torch = self.torch
        drift = -DT / GAMMA
        sq = math.sqrt(2.0 * KT * DT / GAMMA)
        z = torch.empty((2, x.numel()), dtype=torch.float64, device=self.device)
        gx, gy = torch.empty_like(x), torch.empty_like(x)
        terms = mb_terms()
        for _ in range(S):
            gx.zero_()
            gy.zero_()
            for A, a, bb, c, x0, y0 in terms:
                X = x - x0
                Y = y - y0
                e = torch.exp(X * (a * X + bb * Y) + c * Y * Y).mul_(A)
                gx.add_(e * (2.0 * a * X + bb * Y))
                gy.add_(e * (bb * X + 2.0 * c * Y))
            torch.randn(z.shape, generator=self.gen, out=z, dtype=torch.float64,
                        device=self.device)
            x.add_(gx, alpha=drift).add_(z[0], alpha=sq)
            y.add_(gy, alpha=drift).add_(z[1], alpha=sq)

    def _state(self, M):
        t = self.torch
        return (t.full((M,), X0[0], dtype=t.float64, device=self.device),
                t.full((M,), X0[1], dtype=t.float64, device=self.device))

    def setup(self):
        t0 = time.perf_counter()
        self._loop(*self._state(256), 2)
        torch_sync(self.torch, self.device)
        self.compile_s = time.perf_counter() - t0

    def timed(self):
        x, y = self._state(self.M)
        torch_sync(self.torch, self.device)
        t0 = time.perf_counter()
        self._loop(x, y, self.S)
        torch_sync(self.torch, self.device)
        dt = time.perf_counter() - t0
        self.final = np.stack([x.cpu().numpy(), y.cpu().numpy()], axis=1)
        return dt


class JaxMB(MBBench):
    name = "jax"
    group = "peer"

    def __init__(self, M, S):
        super().__init__(M, S)
        jax, jnp, lax = import_jax()
        self.jax = jax
        terms = mb_terms()
        drift = -DT / GAMMA
        sq = math.sqrt(2.0 * KT * DT / GAMMA)

        def run(xy, key):
            def body(xy, n):
                x, y = xy[0], xy[1]
                gx = jnp.zeros_like(x)
                gy = jnp.zeros_like(y)
                for A, a, bb, c, x0, y0 in terms:
                    X = x - x0
                    Y = y - y0
                    e = A * jnp.exp(a * X * X + bb * X * Y + c * Y * Y)
                    gx = gx + e * (2.0 * a * X + bb * Y)
                    gy = gy + e * (bb * X + 2.0 * c * Y)
                z = jax.random.normal(jax.random.fold_in(key, n), (2, M), dtype=jnp.float64)
                return xy + drift * jnp.stack([gx, gy]) + sq * z, None
            xy, _ = lax.scan(body, xy, jnp.arange(S, dtype=jnp.uint32))
            return xy

        self.fn = jax.jit(run)
        self.key = jax.random.key(SEED)
        self.xy = jnp.stack([jnp.full(M, X0[0]), jnp.full(M, X0[1])]).astype(jnp.float64)
        dev = jax.devices()[0]
        self.label = f"jax.jit lax.scan ({dev.platform}, threefry)"
        self.extra["version"] = jax.__version__
        self.extra["platform"] = dev.platform

    def setup(self):
        self.compiled = self.first_call(lambda: self.fn.lower(self.xy, self.key).compile())
        self.compiled(self.xy, self.key).block_until_ready()

    def timed(self):
        t0 = time.perf_counter()
        out = self.compiled(self.xy, self.key).block_until_ready()
        dt = time.perf_counter() - t0
        self.final = np.asarray(out).T
        return dt


# ---------------------------------------------------------------- ratios, targets, driver
def add_sanity(results):
    """Mark each result sane when its final mean agrees with the nonequil one (z = 6)."""
    ref = results.get("nonequil", {})
    if ref.get("status") != "ok" or "final" not in ref:
        return
    rm, rv, rn = (np.array(ref["final"][k]) for k in ("mean", "var", "n"))
    for r in results.values():
        if r.get("status") != "ok" or "final" not in r:
            continue
        m, v, n = (np.array(r["final"][k]) for k in ("mean", "var", "n"))
        se = np.sqrt(v / n + rv / rn)
        r["sane"] = bool(np.all(np.abs(m - rm) <= Z_SANE * se + 1e-12))
        r["sane_z"] = Z_SANE


def compute_ratios(results):
    ok = {k: v for k, v in results.items() if v.get("status") == "ok"}
    ratios, ratios_cpu, targets = {}, {}, []
    peers = [k for k, v in ok.items() if v["group"] == "peer"]
    if "nonequil" in ok:
        for p in peers:
            ratios[f"nonequil/{p}"] = ok["nonequil"]["rate"] / ok[p]["rate"]
            ratios_cpu[f"nonequil/{p}"] = (ok["nonequil"]["rate_per_cpu_s"]
                                           / ok[p]["rate_per_cpu_s"])
    if "nonequil_cuda" in ok and "torch_cuda" in ok:
        ratios["nonequil_cuda/torch_cuda"] = ok["nonequil_cuda"]["rate"] / ok["torch_cuda"]["rate"]
    for key, desc, need in TARGETS:
        if "nonequil" not in ok or not peers:
            targets.append({"key": key, "target": desc, "need": need, "status": "skipped"})
            continue
        ref = max(peers, key=lambda p: ok[p]["rate"])
        r = ratios[f"nonequil/{ref}"]
        targets.append({"key": key, "target": desc, "need": need, "ours": "nonequil",
                        "against": ref, "ratio": r, "status": "PASS" if r >= need else "FAIL",
                        "ratio_per_cpu_s": ratios_cpu[f"nonequil/{ref}"]})
    return ratios, ratios_cpu, targets


def parse(argv):
    p = parser("python -m experiments.bench_mb", __doc__, "10^4 walkers x 100 steps")
    p.add_argument("--walkers", type=int, default=None, help="default 10^5 (quick 10^4)")
    p.add_argument("--steps", type=int, default=None, help="default 1000 (quick 100)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    add_threads_reps(p, 3)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch CPU intra-op threads (default 1: on a loaded 2-core machine "
                   "torch's OpenMP exp at 2 threads was measured 10-25x slower than at 1)")
    p.add_argument("--no-peers", action="store_true", help="skip numpy/torch/jax")
    a = p.parse_args(argv)
    a.walkers = a.walkers or (10 ** 4 if a.quick else 10 ** 5)
    a.steps = a.steps or (100 if a.quick else 1000)
    if a.walkers < 1 or a.steps < 1 or a.reps < 1:
        p.error("--walkers, --steps and --reps must be >= 1")
    return a


def fmt_table(doc):
    out = []
    for k, v in doc["results"].items():
        if v.get("status") != "ok":
            out.append(f"{k:<16} skipped: {v.get('reason', '')}")
            continue
        out.append(f"{k:<16} {v['rate']:.3e} {v['unit']} (median {v['rate_median']:.3e}; "
                   f"{v['rate_per_cpu_s']:.3e} per cpu-s; compile {v['compile_s']:.2f} s) "
                   f"sane={v.get('sane')}")
    ratios_cpu = doc["ratios_per_cpu_s"]
    for k, r in doc["ratios"].items():
        out.append(f"  {k:<28} {r:7.2f}x" + (f"  per cpu-s {ratios_cpu[k]:.2f}x"
                                             if k in ratios_cpu else ""))
    for t in doc["targets"]:
        out.append(f"  [{t['status']}] {t['target']}"
                   + (f": {t['ratio']:.2f}x vs {t['against']}" if "ratio" in t else ""))
    return "\n".join(out)


def add_figures(line, a, M, S):
    """The figures of this run, in their order, on ``line`` (a ``Lineup``)."""
    line.add(lambda: NonequilMB(M, S), "nonequil")
    if a.no_peers:
        line.skip(("numpy", "torch", "jax"), "--no-peers")
    else:
        line.add(lambda: NumpyMB(M, S), "numpy")
        line.add(lambda: TorchMB(M, S, a.torch_threads), "torch")
        line.add(lambda: JaxMB(M, S), "jax")
    if a.device != "cuda":
        return
    from numba import cuda

    if not cuda.is_available():
        line.skip(("nonequil_cuda", "torch_cuda"), "numba.cuda.is_available() is False")
        return
    line.add(lambda: NonequilMB(M, S, "cuda"), "nonequil_cuda")
    if not a.no_peers:
        line.add(lambda: TorchMB(M, S, a.torch_threads, "cuda"), "torch_cuda")


def main(argv=None):
    a = parse(argv)
    T = choose_threads(a.threads)
    M, S = a.walkers, a.steps
    line = Lineup()
    add_figures(line, a, M, S)
    results = line.run(a.reps, width=14)
    add_sanity(results)
    ratios, ratios_cpu, targets = compute_ratios(results)
    machine = dict(machine_info(T), loadavg_end=loadavg())
    doc = {"benchmark": "muller_brown_langevin",
           "config": {"walkers": M, "steps": S, "dim": 2, "dtype": "float64", "scale": SCALE,
                      "kT": KT, "gamma": GAMMA, "dt": DT, "x0": list(X0), "seed": SEED,
                      "reps": a.reps, "quick": a.quick, "device": a.device, "threads": T,
                      "torch_threads": a.torch_threads,
                      "rate_from": "best repetition"},
           "machine": machine, "results": results, "ratios": ratios,
           "ratios_per_cpu_s": ratios_cpu, "targets": targets}
    return print_doc(doc, a.json, fmt_table, indent=1)

if __name__ == "__main__":
    sys.exit(main())
