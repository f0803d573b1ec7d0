"""Shared machinery of the benchmark scripts (``experiments/bench_*.py``).  Not a test.

* ``Bench``: one timed figure (``setup()`` untimed, then ``run()`` per repetition around the
  script's own ``timed()``, which alone holds the timed region); ``result()`` turns its
  repetitions into the JSON record every script reports (rate of the best repetition, the
  median, CPU seconds and items per CPU-second);
* ``Lineup``: the figures of one run in their order, with the peers that could not be built
  (``Skipped``) recorded as skipped; ``Lineup.run`` sets every figure up and times them
  round-robin, so that background load hits all of them alike;
* ``import_torch`` / ``import_jax``: the optional peers, ``Skipped`` when absent;
* thread pinning (``choose_threads``), ``OMP_WAIT_POLICY`` (``omp_policy``), machine
  information (``machine_info``, ``machine``, ``cpu_model``, ``loadavg``);
* the argument parser's common options and the printing of ratios, targets and the JSON
  document.

Nothing heavy is imported at module level: ``bench_suite`` (behind ``nonequil bench``) uses
``cpu_model`` and ``cpus_available`` without loading Numba.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time


def log(*a):
    """Progress on stderr (stdout is kept for the table or the JSON document)."""
    print(*a, file=sys.stderr, flush=True)


class Skipped(Exception):
    """A figure that cannot run here (a peer not importable, no CUDA); its reason is shown."""


# ---------------------------------------------------------------- one figure
class Bench:
    """One timed implementation: ``setup()`` (untimed warm-up / compile), then ``run()``."""
    name = ""
    label = ""
    unit = "walker-steps/s"
    group = "nonequil"

    def __init__(self):
        self.times = []
        self.cpu = []
        self.compile_s = None
        self.extra = {}

    def items(self):
        raise NotImplementedError

    def setup(self):
        pass

    def reset(self):
        pass

    def timed(self):
        raise NotImplementedError

    def check(self):
        return {}

    def first_call(self, fn, *args):
        """``fn(*args)`` (setup: the compile, a cache load, first-run allocations), its time
        recorded as ``compile_s`` (excluded from the rates); returns its result."""
        t0 = time.perf_counter()
        out = fn(*args)
        self.compile_s = time.perf_counter() - t0
        return out

    def run(self):
        self.reset()
        c0 = time.process_time()
        self.times.append(self.timed())
        self.cpu.append(time.process_time() - c0)

    def result(self):
        best = min(self.times)
        med = statistics.median(self.times)
        ib = self.times.index(best)
        r = {"status": "ok", "label": self.label, "group": self.group, "unit": self.unit,
             "rate": self.items() / best, "rate_median": self.items() / med,
             "items": self.items(), "best_s": best, "median_s": med, "times_s": self.times,
             "compile_s": self.compile_s, "cpu_s": self.cpu,
             "cpu_per_wall_best": self.cpu[ib] / best,
             "rate_per_cpu_s": self.items() / min(self.cpu)}
        r.update(self.extra)
        r.update(self.check())
        return r


def skipped(reason):
    """The record of a figure that did not run."""
    return {"status": "skipped", "reason": str(reason)}


# ---------------------------------------------------------------- the figures of one run
class Lineup:
    """The figures of one benchmark run, in order, and the results of those skipped."""

    def __init__(self):
        self.benches, self.results = [], {}

    def add(self, factory, name):
        """Build a figure with ``factory()``; a ``Skipped`` one is recorded under ``name``."""
        try:
            self.benches.append(factory())
        except Skipped as e:
            self.results[name] = skipped(e)
            log(f"[skip] {name}: {e}")

    def skip(self, names, reason):
        """Record ``names`` as skipped for ``reason`` (``--no-peers``, no CUDA)."""
        for name in names:
            self.results[name] = skipped(reason)

    def run(self, reps, width=16):
        """setup() each figure, then ``reps`` round-robin timed runs; returns the results
        (the figures in their order, then the skipped ones).  ``width``: the name column of
        the progress lines."""
        ready = []
        for b in self.benches:
            log(f"[setup] {b.name} ...")
            try:
                b.setup()
            except Skipped as e:
                self.results[b.name] = skipped(e)
                continue
            ready.append(b)
        for rep in range(reps):
            for b in ready:
                b.run()
                log(f"[rep {rep + 1}/{reps}] {b.name:<{width}} {b.times[-1]:8.3f} s  "
                    f"{b.items() / b.times[-1]:.3e} {b.unit}")
        order = [b.name for b in self.benches]
        for b in ready:
            self.results[b.name] = b.result()
        return {k: self.results[k]
                for k in order + [k for k in self.results if k not in order]}


# ---------------------------------------------------------------- optional peers
def import_torch(threads=None, device="cpu"):
    """torch, with ``threads`` intra-op threads on the CPU (left alone when None); raises
    ``Skipped`` when torch is not importable, or for ``device="cuda"`` without CUDA."""
    try:
        import torch
    except Exception as e:      # noqa: BLE001 - any import failure means "not available"
        raise Skipped(f"torch not importable: {type(e).__name__}: {e}")
    if device == "cpu":
        if threads is not None:
            torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        raise Skipped("torch has no CUDA")
    return torch


def torch_label(device, threads):
    """``torch cpu loop (T thr)`` / ``torch cuda loop``."""
    return f"torch {device} loop" + (f" ({threads} thr)" if device == "cpu" else "")


def torch_sync(torch, device):
    """Wait for the GPU (a no-op on the CPU), so that a timed region holds all its work."""
    if device != "cpu":
        torch.cuda.synchronize()


def import_jax(x64=True):
    """(jax, jax.numpy, jax.lax) on the CPU, with float64 enabled when ``x64``; raises
    ``Skipped`` when jax is not importable."""
    try:
        import jax
        import jax.numpy as jnp
        from jax import lax
    except Exception as e:      # noqa: BLE001
        raise Skipped(f"jax not importable: {type(e).__name__}: {e}")
    if x64:
        jax.config.update("jax_enable_x64", True)
    try:
        jax.config.update("jax_platforms", "cpu")
    except Exception:           # noqa: BLE001 - already initialised
        pass
    return jax, jnp, lax


# ---------------------------------------------------------------- threads, machine
def choose_threads(requested):
    """T threads; pin the process to T CPUs when fewer than available (jax included)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    import kernels  # noqa: F401  (sets the Numba cache directory before numba is imported)
    import numba

    T = requested or min(len(cpus), numba.config.NUMBA_NUM_THREADS)
    T = max(1, min(T, numba.config.NUMBA_NUM_THREADS))
    if T < len(cpus) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus[:T])
    numba.set_num_threads(T)
    return T


def omp_policy(active):
    """Set OMP_WAIT_POLICY=PASSIVE unless ``active`` or already set (see bench_train's
    docstring); returns the policy in force.  Effective only before libgomp is loaded."""
    if not active:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "(unset: active)")


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def cpus_available():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def loadavg():
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info(threads):
    """The CPU, the thread counts and the versions of Python, NumPy and Numba."""
    import kernels  # noqa: F401  (sets the Numba cache directory before numba is imported)
    import numba
    import numpy as np

    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpus_available": cpus_available(),
            "threads": threads, "numba_threads": numba.get_num_threads(),
            "numba_config_threads": numba.config.NUMBA_NUM_THREADS,
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "platform": platform.platform()}


def machine(threads):
    """``machine_info`` and Numba's threading layer (None before any parallel region)."""
    import numba

    info = machine_info(threads)
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        info["numba_threading_layer"] = None
    return info


# ---------------------------------------------------------------- command line, output
def parser(prog, doc, quick_help):
    """The parser of a benchmark script, with ``--quick`` and ``--json``."""
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", action="store_true", help="only JSON on stdout")
    return p


def add_threads_reps(p, reps):
    """``--threads`` and ``--reps`` (default ``reps``)."""
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every implementation (default: available CPUs)")
    p.add_argument("--reps", type=int, default=reps,
                   help=f"repetitions (>= 1; default {reps})")


def add_omp_active(p):
    p.add_argument("--omp-active", action="store_true",
                   help="leave OMP_WAIT_POLICY alone (default: PASSIVE if unset)")


def argv_of(argv):
    """The arguments as given (``sys.argv[1:]`` when run from the command line)."""
    return sys.argv[1:] if argv is None else list(argv)


def print_doc(doc, as_json, table, indent=2):
    """Print the JSON document alone (``as_json``: ``--json`` was given), else
    ``table(doc)``; returns 0, the exit status."""
    if as_json:
        print(json.dumps(doc, indent=indent))
    else:
        print(table(doc))
    return 0


def ratio_lines(doc, width):
    """The table of ratios, wall and per CPU-second, names ``width`` wide."""
    out = ["", f"{'ratios':<{width + 2}} {'wall':>8} {'per cpu-s':>10}"]
    for k, r in doc["ratios"].items():
        rc = doc["ratios_per_cpu_s"].get(k)
        out.append(f"  {k:<{width}} {r:7.2f}x " + (f"{rc:9.2f}x" if rc is not None else ""))
    return out


def target_lines(targets, need_text):
    """One line per target: ``[STATUS] target: ours / against = ratio (need_text(t))``."""
    out = []
    for t in targets:
        if t["status"] == "skipped":
            out.append(f"  [SKIP] {t['target']}")
            continue
        rc = t.get("ratio_per_cpu_s")
        out.append(f"  [{t['status']}] {t['target']}: {t['ours']} / {t['against']} = "
                   f"{t['ratio']:.2f}x ({need_text(t)})"
                   + (f"; per cpu-s {rc:.2f}x" if rc is not None else ""))
    return out
