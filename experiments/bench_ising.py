r"""2-D Ising Metropolis speed benchmark, and dataset-generation timing.  Not a test.

    python -m experiments.bench_ising [--quick] [--json] [--L L] [--replicas R]
                                      [--sweeps S] [--reps N] [--no-dataset]

Measures, in one process, checkerboard Metropolis sweeps of R independent L x L periodic
lattices at T = 2.269 (beta = 1/2.269, J = 1), in spin-flip attempts per second
(``R L^2 sweeps / time``; every site is attempted once per sweep):

* ``cpu_checkerboard``: ``kernels.ising_cpu.metropolis_sweeps`` on all the cores Numba may
  use (``numba.get_num_threads()``), Philox words per site.  The first call compiles (or
  loads the on-disk cache) and is excluded (``compile_s``).
* ``numpy_checkerboard``: a well-written NumPy vectorised checkerboard, in one thread as
  NumPy runs it: the lattice is split into its four (row parity, column parity) strided
  sub-lattices, so each colour update touches only the active half; neighbour sums are two
  strided views plus two ``np.roll`` of the opposite sub-lattices (int8), the acceptance is
  a 9-entry float32 table indexed by ``s h + 4``, uniforms are float32 from
  ``numpy.random.default_rng`` (PCG64) into a preallocated buffer, and flips are
  multiplications by ``1 - 2 [u < p]`` in place.  The target is measured against this one.
* ``numpy_masked`` (context only): the textbook version, full-lattice neighbour sums from four
  ``np.roll``, float64 uniforms, ``exp`` per site and a colour mask (twice the work).
* ``cuda_checkerboard`` (only when ``numba.cuda.is_available()``): the CUDA kernel on a
  device array (no host copies inside the timing), synchronised.

Each figure is timed ``--reps`` times (default 3), round-robin; the rate uses the best
repetition (the median is reported too).  The target (issue 3) is cpu >= 5x numpy.  Both
implementations also report the mean energy per spin after the run, a cheap check that they
simulate the same model.

``dataset_double_well``: the wall time of ``nonequil.datasets.generate("double-well",
10**6)`` (exact inverse-CDF sampling), first call (including Numba's cache load) and a second
call; the target is "seconds, not minutes".

``--json`` prints only the JSON document on stdout; progress goes to stderr.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import kernels  # noqa: F401  (points Numba's cache at kernels/ before numba is imported)
import numba
import numpy as np

from experiments._bench import log
from kernels.ising_cpu import energy_magnetisation, metropolis_sweeps

T = 2.269
SEED = 20240607


class NumpyCheckerboard:
    """Vectorised checkerboard Metropolis on spins [R, L, L] (int8, L even), in place."""

    def __init__(self, spins, beta, seed):
        self.s = spins
        self.rng = np.random.default_rng(seed)
        x = np.arange(-4, 5)                     # s h in -4..4
        self.table = np.where(x > 0, np.exp(-2.0 * beta * np.maximum(x, 0)), 1.0) \
            .astype(np.float32)
        s = spins
        self.A, self.B = s[:, 0::2, 0::2], s[:, 0::2, 1::2]
        self.C, self.D = s[:, 1::2, 0::2], s[:, 1::2, 1::2]
        shape = self.A.shape
        self.u = np.empty(shape, np.float32)
        self.h = np.empty(shape, np.int8)
        self.f = np.empty(shape, np.int8)
        self.p = np.empty(shape, np.float32)

    def _update(self, X, n1, n2, n3, n4):
        h = self.h
        np.add(n1, n2, out=h)
        h += n3
        h += n4
        h *= X                                    # s h
        h += 4
        np.take(self.table, h, out=self.p)
        self.rng.random(out=self.u, dtype=np.float32)
        np.less(self.u, self.p, out=self.f.view(bool))
        self.f *= -2
        self.f += 1                               # -1 where flipped, else 1
        X *= self.f

    def sweeps(self, n):
        A, B, C, D = self.A, self.B, self.C, self.D
        for _ in range(n):
            # colour 0: A (even, even) and D (odd, odd); colour 1: B and C
            self._update(A, C, np.roll(C, 1, axis=1), B, np.roll(B, 1, axis=2))
            self._update(D, B, np.roll(B, -1, axis=1), C, np.roll(C, -1, axis=2))
            self._update(B, D, np.roll(D, 1, axis=1), A, np.roll(A, -1, axis=2))
            self._update(C, A, np.roll(A, -1, axis=1), D, np.roll(D, 1, axis=2))


class NumpyMasked:
    """The textbook vectorised checkerboard, for context: full-lattice neighbour sums from
    four ``np.roll``, float64 uniforms, and a colour mask (twice the work of the above)."""

    def __init__(self, spins, beta, seed):
        self.s = spins
        self.rng = np.random.default_rng(seed)
        self.beta = beta
        L = spins.shape[-1]
        i, j = np.indices((L, L))
        self.masks = [((i + j) % 2 == c) for c in (0, 1)]

    def sweeps(self, n):
        s = self.s
        for _ in range(n):
            for mask in self.masks:
                h = (np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2)
                     + np.roll(s, -1, 2))
                dE = 2 * s * h
                flip = mask & (self.rng.random(s.shape) < np.exp(-self.beta * dE))
                s[flip] *= -1


class Impl:
    def __init__(self, name, unit_items):
        self.name, self.items, self.times = name, unit_items, []
        self.compile_s = None
        self.status = "ok"
        self.energy = None

    def result(self):
        if self.status != "ok":
            return {"status": self.status}
        best = min(self.times)
        return {"status": "ok", "rate": self.items / best,
                "rate_median": self.items / statistics.median(self.times),
                "best_s": best, "median_s": statistics.median(self.times),
                "times_s": self.times, "unit": "spin-flip attempts/s",
                "compile_s": self.compile_s, "energy_per_spin": self.energy}


def bench_lattices(L, R, S, reps):
    beta = 1.0 / T
    items = R * L * L * S
    cpu, npy, gpu = Impl("cpu_checkerboard", items), Impl("numpy_checkerboard", items), \
        Impl("cuda_checkerboard", items)
    msk = Impl("numpy_masked", items)
    s_cpu = np.ones((R, L, L), np.int8)
    t0 = time.perf_counter()
    metropolis_sweeps(s_cpu, beta, SEED, 0, 1)
    cpu.compile_s = time.perf_counter() - t0
    s_np = np.ones((R, L, L), np.int8)
    nb = NumpyCheckerboard(s_np, beta, SEED)
    nb.sweeps(1)
    s_mk = np.ones((R, L, L), np.int8)
    nm = NumpyMasked(s_mk, beta, SEED)
    nm.sweeps(1)
    d_spins = None
    try:
        from numba import cuda

        if cuda.is_available():
            from kernels.ising_cuda import metropolis_sweeps_cuda

            d_spins = cuda.to_device(np.ones((R, L, L), np.int8))
            t0 = time.perf_counter()
            metropolis_sweeps_cuda(d_spins, beta, SEED, 0, 1)
            cuda.synchronize()
            gpu.compile_s = time.perf_counter() - t0
        else:
            gpu.status = "skipped (no CUDA GPU)"
    except Exception as e:  # noqa: BLE001
        gpu.status = f"skipped ({type(e).__name__}: {e})"
    sweep = 1
    for rep in range(reps):
        t0 = time.perf_counter()
        metropolis_sweeps(s_cpu, beta, SEED, sweep, S)
        cpu.times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nb.sweeps(S)
        npy.times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nm.sweeps(S)
        msk.times.append(time.perf_counter() - t0)
        if d_spins is not None:
            t0 = time.perf_counter()
            metropolis_sweeps_cuda(d_spins, beta, SEED, sweep, S)
            cuda.synchronize()
            gpu.times.append(time.perf_counter() - t0)
        sweep += S
        log(f"rep {rep + 1}/{reps}: cpu {cpu.times[-1]:.3f} s, numpy {npy.times[-1]:.3f} s, "
            f"numpy masked {msk.times[-1]:.3f} s"
            + (f", cuda {gpu.times[-1]:.3f} s" if d_spins is not None else ""))
    cpu.energy = float(np.mean(energy_magnetisation(s_cpu)[0]))
    npy.energy = float(np.mean(energy_magnetisation(s_np)[0]))
    msk.energy = float(np.mean(energy_magnetisation(s_mk)[0]))
    if d_spins is not None:
        gpu.energy = float(np.mean(energy_magnetisation(d_spins.copy_to_host())[0]))
    return {i.name: i.result() for i in (cpu, npy, msk, gpu)}


def bench_double_well(n):
    from nonequil.datasets import generate

    out = {}
    for label in ("first_call_s", "second_call_s"):
        t0 = time.perf_counter()
        ds = generate("double-well", n, seed=1)
        out[label] = time.perf_counter() - t0
        log(f"double-well {n} samples: {out[label]:.2f} s ({label})")
    out.update({"n": n, "samples_per_s": n / out["second_call_s"],
                "sample_mean": float(ds.samples.mean()),
                "sample_var": float(ds.samples.var())})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--json", action="store_true", help="print only JSON on stdout")
    ap.add_argument("--L", type=int, help="lattice side (even; default 256, quick 64)")
    ap.add_argument("--replicas", type=int, help="lattices (default 8, quick 8)")
    ap.add_argument("--sweeps", type=int, help="sweeps per timing (default 100, quick 20)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-dataset", action="store_true", help="skip the double-well timing")
    a = ap.parse_args(argv)
    L = a.L or (64 if a.quick else 256)
    R = a.replicas or 8
    S = a.sweeps or (20 if a.quick else 100)
    if L % 2 or L < 2:
        ap.error("--L must be even")
    threads = numba.get_num_threads()
    log(f"Ising checkerboard Metropolis: {R} lattices {L}x{L}, {S} sweeps x {a.reps} reps, "
        f"T = {T}, numba threads {threads}")
    res = bench_lattices(L, R, S, a.reps)
    ratios = {}
    if res["numpy_checkerboard"]["status"] == "ok":
        ratios["cpu/numpy"] = res["cpu_checkerboard"]["rate"] / res["numpy_checkerboard"]["rate"]
        ratios["cpu_per_thread/numpy"] = ratios["cpu/numpy"] / threads
        ratios["cpu/numpy_masked"] = (res["cpu_checkerboard"]["rate"]
                                      / res["numpy_masked"]["rate"])
        if res["cuda_checkerboard"]["status"] == "ok":
            ratios["cuda/cpu"] = res["cuda_checkerboard"]["rate"] / res["cpu_checkerboard"]["rate"]
    need = 5.0
    targets = [{"target": "CPU checkerboard (all cores) >= 5x numpy vectorised (issue 3)",
                "ratio": ratios.get("cpu/numpy"), "need": need,
                "status": "PASS" if ratios.get("cpu/numpy", 0) >= need else "FAIL"}]
    doc = {"benchmark": "ising_metropolis",
           "config": {"L": L, "replicas": R, "sweeps": S, "reps": a.reps, "T": T,
                      "quick": a.quick},
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "cpu_count": os.cpu_count(), "numba_threads": threads,
                       "numpy": np.__version__, "numba": numba.__version__,
                       "python": platform.python_version()},
           "results": res, "ratios": ratios, "targets": targets}
    if not a.no_dataset:
        n = 10 ** 5 if a.quick else 10 ** 6
        dw = bench_double_well(n)
        dw["target"] = "10^6 double-well samples in seconds, not minutes (issue 3)"
        dw["status"] = "PASS" if dw["second_call_s"] * (10 ** 6 / n) < 30 else "FAIL"
        doc["dataset_double_well"] = dw
    if a.json:
        print(json.dumps(doc, indent=1))
    else:
        for name, r in res.items():
            if r["status"] == "ok":
                print(f"{name:20s} {r['rate']:.3e} spin-flip attempts/s (median "
                      f"{r['rate_median']:.3e}), <e> = {r['energy_per_spin']:.4f}")
            else:
                print(f"{name:20s} {r['status']}")
        for k, v in ratios.items():
            print(f"{k:20s} {v:.2f}")
        for t in targets:
            print(f"{t['status']}: {t['target']} (ratio {t['ratio']:.2f})")
        if "dataset_double_well" in doc:
            dw = doc["dataset_double_well"]
            print(f"double-well {dw['n']} samples: {dw['second_call_s']:.2f} s "
                  f"(first call {dw['first_call_s']:.2f} s) {dw['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
