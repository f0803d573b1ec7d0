r"""Memory benchmark: peak RSS of a streamed OU run (issue 8).  Not a test.

    python -m experiments.bench_memory [--quick] [--json] [--walkers M]
                                       [--steps S1,S2] [--record-every K]

Runs ``nonequil simulate --process ou --walkers M --steps S --dt 0.01 --record-every K
--out F.h5`` in a fresh process for two step counts S1 < S2 (default 10^7 walkers,
S = 200 and 800, K = 100; quick: 10^5 walkers, S = 100 and 400, K = 10), and reads each
process's peak resident set size (``ru_maxrss`` from ``os.wait4``).  The recorded frames
are streamed to the HDF5 file chunk by chunk, so the peak must not grow with the number of
steps although the file does: the target is ``peak(S2) <= 1.1 peak(S1)``.  For scale the
document also gives the state size (M float64 positions), the file sizes and the peak RSS of
a process that only imports what ``simulate`` imports (``baseline``).  Output files go to a
temporary directory (``--tmp``) and are removed.  ``--json`` prints only the JSON document.
"""
import argparse
import json
import os
import sys
import tempfile

from experiments.bench_startup import log, nonequil_cmd, run_child

GROWTH_LIMIT = 1.1


def measure(cmd, walkers, steps, every, tmp):
    out = os.path.join(tmp, f"mem_{steps}.h5")
    args = ["simulate", "--process", "ou", "--walkers", str(walkers), "--steps", str(steps),
            "--dt", "0.01", "--record-every", str(every), "--quiet", "--out", out]
    wall, cpu, rss, rc, err = run_child(cmd + args)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd + args)} exited {rc}: {err.strip()[-500:]}")
    size = os.path.getsize(out)
    os.remove(out)
    frames = len(range(0, steps + 1, every)) + (steps % every != 0)
    log(f"[memory] {walkers} walkers x {steps} steps: peak RSS {rss / 2**20:.1f} MiB, "
        f"file {size / 2**20:.1f} MiB ({frames} frames), {wall:.1f} s")
    return {"status": "ok", "walkers": walkers, "steps": steps, "record_every": every,
            "frames": frames, "peak_rss_bytes": rss, "peak_rss_mib": rss / 2**20,
            "file_bytes": size, "wall_s": wall, "cpu_s": cpu,
            "walker_steps_per_s": walkers * steps / wall}


def baseline_rss():
    code = ("import kernels, numba, h5py, numpy\nimport nonequil.simulate, nonequil.store\n"
            "from kernels import langevin_cpu")
    _, _, rss, rc, err = run_child([sys.executable, "-c", code])
    if rc != 0:
        raise RuntimeError(f"baseline import failed: {err.strip()[-500:]}")
    return rss


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10^5 walkers, 100 and 400 steps")
    p.add_argument("--json", action="store_true", help="only JSON on stdout")
    p.add_argument("--walkers", type=int, help="default 10^7 (quick 10^5)")
    p.add_argument("--steps", help="two step counts S1,S2 (default 200,800; quick 100,400)")
    p.add_argument("--record-every", type=int, help="default 100 (quick 10)")
    p.add_argument("--tmp", help="directory for the output files (default: the system's)")
    a = p.parse_args(argv)
    M = a.walkers or (10 ** 5 if a.quick else 10 ** 7)
    K = a.record_every or (10 if a.quick else 100)
    steps = [int(t) for t in (a.steps or ("100,400" if a.quick else "200,800")).split(",")]
    if len(steps) != 2 or not 1 <= steps[0] < steps[1] or M < 1 or K < 1:
        p.error("--steps needs two counts 1 <= S1 < S2; --walkers and --record-every >= 1")
    cmd = nonequil_cmd()
    base = baseline_rss()
    with tempfile.TemporaryDirectory(prefix="nonequil-mem-", dir=a.tmp) as tmp:
        runs = [measure(cmd, M, s, K, tmp) for s in steps]
    growth = runs[1]["peak_rss_bytes"] / runs[0]["peak_rss_bytes"]
    results = {f"steps_{r['steps']}": r for r in runs}
    results["baseline"] = {"status": "ok", "peak_rss_bytes": base, "peak_rss_mib": base / 2**20,
                           "what": "python -c 'import kernels, numba, h5py, nonequil.simulate, "
                           "nonequil.store, kernels.langevin_cpu'"}
    state = M * 8
    ratios = {"peak_rss_growth": growth,
              "file_growth": runs[1]["file_bytes"] / runs[0]["file_bytes"],
              "peak_above_baseline_per_state": (runs[1]["peak_rss_bytes"] - base) / state}
    targets = [{"key": "rss_flat", "need": GROWTH_LIMIT, "ratio": growth,
                "target": f"peak RSS of a {M}-walker OU run recording every {K}th step does "
                f"not grow with the steps: peak({steps[1]}) <= {GROWTH_LIMIT} peak({steps[0]})"
                " (issue 8)", "status": "PASS" if growth <= GROWTH_LIMIT else "FAIL"}]
    doc = {"benchmark": "memory",
           "config": {"walkers": M, "steps": steps, "record_every": K, "quick": a.quick,
                      "state_bytes": state, "command": cmd},
           "results": results, "ratios": ratios, "targets": targets}
    if a.json:
        print(json.dumps(doc, indent=1))
        return 0
    for k, r in results.items():
        print(f"{k:<12} peak RSS {r['peak_rss_mib']:9.1f} MiB"
              + (f", file {r['file_bytes'] / 2**20:.1f} MiB" if "file_bytes" in r else ""))
    for k, v in ratios.items():
        print(f"  {k:<32} {v:.3f}")
    for t in targets:
        print(f"  [{t['status']}] {t['target']}: {t['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
