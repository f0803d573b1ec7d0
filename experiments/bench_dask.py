r"""Strong scaling of a sharded OU ensemble on a local Dask cluster (issue 10).  Not a test.

    python -m experiments.bench_dask [--quick] [--json] [--walkers M] [--steps S]
                                     [--threads-per-worker T]

One OU ensemble (exact method, 1-D, ``--walkers`` x ``--steps``, two recorded frames: the
work is compute, not I/O) is run, in this order and in this one process:

* ``in-process``: ``nonequil.simulate.simulate`` with T Numba threads (T =
  ``--threads-per-worker``, default 1: one core per worker);
* ``local:1``: ``distributed.simulate_sharded`` on a ``LocalCluster`` of 1 worker (T threads),
  1 shard;
* ``local:2``: the same on 2 workers (T threads each), 2 shards of half the walkers.

Each cluster is started and warmed up (a small sharded run that loads the kernels) before
the timed run, so the wall time of a sharded run is compute + shard-file write + assembly
+ scheduling; the start-up (cluster and warm-up) is reported apart.  CPU seconds are the
client's and the workers' process CPU time over the run.  The strong-scaling efficiency is
``T1 / (2 T2)`` (wall) and the same with CPU seconds; ``local:1 / in-process`` measures the
overhead of running through Dask.  The three files are checked bitwise equal.

With ``--json`` stdout is one JSON document with ``results`` (``best_s`` wall, ``cpu_s``,
``rate`` walker-steps/s, ``rate_per_cpu_s``), ``ratios``, ``ratios_per_cpu_s`` and
``targets`` (none: the issue asks for the figure, not a threshold), as ``bench_suite``
expects.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from experiments._bench import log

SEED = 2026


def _cpu():
    return time.process_time()


def _config(M, S):
    from nonequil.simulate import SimulationConfig

    return SimulationConfig(process="ou", params={"theta": 1.0, "mu": 0.0, "sigma": 1.0},
                            walkers=M, steps=S, dt=0.01, x0=[0.5], seed=SEED,
                            record_every=S, method="exact")


def _in_process(cfg, path, threads):
    import numba

    from nonequil.simulate import simulate

    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        simulate(dataclasses_replace(cfg, walkers=min(cfg.walkers, 1000)))     # load kernels
        c0, t0 = _cpu(), time.perf_counter()
        simulate(cfg, out=path)
        return time.perf_counter() - t0, _cpu() - c0
    finally:
        numba.set_num_threads(old)


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def _sharded(cfg, workdir, workers, threads):
    from nonequil import distributed as dist

    t0 = time.perf_counter()
    with dist.connect(cluster=workers, threads_per_worker=threads) as client:
        warm = dataclasses_replace(cfg, walkers=1000 * workers)
        dist.simulate_sharded(warm, os.path.join(workdir, f"warm{workers}.h5"), client,
                              shards=workers)
        startup = time.perf_counter() - t0
        wc0 = sum(client.run(_cpu).values())
        c0, t1 = _cpu(), time.perf_counter()
        out = os.path.join(workdir, f"local{workers}.h5")
        res = dist.simulate_sharded(cfg, out, client, shards=workers)
        wall = time.perf_counter() - t1
        cpu = _cpu() - c0 + sum(client.run(_cpu).values()) - wc0
    return wall, cpu, startup, [round(r["seconds"], 3) for r in res], out


def _same(a, b):
    import h5py
    import numpy as np

    key = "particles/ensemble/position/value"
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        return bool(np.array_equal(fa[key][()], fb[key][()]))


def run(M, S, threads, log):
    work = tempfile.mkdtemp(prefix="bench_dask_")
    try:
        cfg = _config(M, S)
        items = M * S
        results = {}
        log(f"[in-process] {M} walkers x {S} steps, {threads} thread(s)")
        w, c = _in_process(cfg, os.path.join(work, "inproc.h5"), threads)
        results["in-process"] = {"label": f"in-process, {threads} thread(s)", "best_s": w,
                                 "cpu_s": c, "rate": items / w, "rate_per_cpu_s": items / c,
                                 "unit": "walker-steps/s", "status": "ok"}
        for n in (1, 2):
            log(f"[local:{n}] starting {n} worker(s) x {threads} thread(s)")
            w, c, st, shard_s, out = _sharded(cfg, work, n, threads)
            results[f"local:{n}"] = {
                "label": f"--cluster local:{n} ({n} shard(s))", "best_s": w, "cpu_s": c,
                "rate": items / w, "rate_per_cpu_s": items / c, "unit": "walker-steps/s",
                "startup_s": st, "shard_seconds": shard_s, "status": "ok",
                "bitwise_equal_in_process": _same(os.path.join(work, "inproc.h5"), out)}
            log(f"[local:{n}] wall {w:.3f} s, cpu {c:.3f} s, start-up {st:.2f} s, "
                f"shards {shard_s}")
        r1, r2, r0 = results["local:1"], results["local:2"], results["in-process"]
        ratios = {"strong-scaling efficiency T1/(2 T2), local:1 -> local:2":
                  r1["best_s"] / (2 * r2["best_s"]),
                  "speed-up T1/T2": r1["best_s"] / r2["best_s"],
                  "Dask overhead T(local:1)/T(in-process)": r1["best_s"] / r0["best_s"]}
        ratios_cpu = {"strong-scaling efficiency T1/(2 T2), local:1 -> local:2":
                      r1["cpu_s"] / r2["cpu_s"],
                      "Dask overhead T(local:1)/T(in-process)": r1["cpu_s"] / r0["cpu_s"]}
        return results, ratios, ratios_cpu
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fmt_table(doc):
    c = doc["config"]
    out = [f"sharded OU ensemble: {c['walkers']} walkers x {c['steps']} steps, "
           f"{c['threads_per_worker']} thread(s) per worker, {c['cores']} cores",
           f"{'run':<34} {'wall s':>8} {'cpu s':>8} {'start-up s':>10} {'walker-steps/s':>15} "
           f"{'bitwise':>8}"]
    for k, r in doc["results"].items():
        st = f"{r['startup_s']:.2f}" if "startup_s" in r else "-"
        eq = str(r.get("bitwise_equal_in_process", "-"))
        out.append(f"{r['label']:<34} {r['best_s']:8.3f} {r['cpu_s']:8.3f} {st:>10} "
                   f"{r['rate']:15.3e} {eq:>8}")
    out.append("")
    for k, v in doc["ratios"].items():
        cpu = doc["ratios_per_cpu_s"].get(k)
        out.append(f"{k:<58} {v:6.3f}" + (f"   (cpu-s: {cpu:.3f})" if cpu else ""))
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench_dask", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2*10^5 walkers x 20 steps")
    p.add_argument("--json", action="store_true", help="only JSON on stdout")
    p.add_argument("--walkers", type=int, default=None, help="default 4*10^6 (quick 2*10^5)")
    p.add_argument("--steps", type=int, default=None, help="default 200 (quick 20)")
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="Numba threads per worker and in-process (default 1)")
    a = p.parse_args(argv)
    M = a.walkers or (200_000 if a.quick else 4_000_000)
    S = a.steps or (20 if a.quick else 200)
    if M < 2 or S < 1 or a.threads_per_worker < 1:
        p.error("--walkers must be >= 2, --steps and --threads-per-worker >= 1")
    from nonequil.distributed import cores, require_dask

    require_dask()
    results, ratios, ratios_cpu = run(M, S, a.threads_per_worker, log)
    doc = {"benchmark": "dask_strong_scaling",
           "config": {"walkers": M, "steps": S, "process": "ou", "method": "exact",
                      "frames": 2, "threads_per_worker": a.threads_per_worker,
                      "cores": cores(), "quick": a.quick, "seed": SEED,
                      "argv": sys.argv[1:] if argv is None else list(argv)},
           "machine": {"loadavg": list(os.getloadavg()), "python": sys.version.split()[0]},
           "results": results, "ratios": ratios, "ratios_per_cpu_s": ratios_cpu,
           "targets": []}
    print(json.dumps(doc, indent=2) if a.json else fmt_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
