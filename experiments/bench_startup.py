r"""Start-up benchmark of the ``nonequil`` command (issue 8).  Not a test.

    python -m experiments.bench_startup [--quick] [--json] [--reps R] [--no-cold]

Every figure runs a fresh process and measures its wall time (and its CPU time, user + sys,
from ``os.wait4``: less sensitive to other load on the machine):

* ``python``: ``python -c pass``, the interpreter alone (the floor under every figure);
* ``help``: ``nonequil --help``;
* ``simulate_cold``: ``nonequil simulate --process ou --walkers 1000 --steps 1 --dt 0.01
  --out F.h5`` with an empty Numba cache (a fresh temporary ``NUMBA_CACHE_DIR``), so the
  kernel is compiled;
* ``simulate_warm``: the same command again with that cache populated.
``--no-cold`` (used by ``nonequil bench --quick``) skips the cold figure, and the warm runs
use the default Numba cache (after an untimed run that fills it where it is empty).
The simulate figures are the whole run of a 1-step simulation (start-up, validation, the
first step, writing and closing a tiny file), an upper bound on the time to the first
simulated step.  The command is the ``nonequil`` console script beside this Python, or
``python -m nonequil.cli`` when there is none.

``imports``: ``python -X importtime`` of ``nonequil --help`` and of the warm simulate run,
as the total import time and the packages that take most of it (the self times of their
modules summed per top-level package), to show what a start-up figure is made of.

Targets (issue 8): warm simulate < 2 s and ``--help`` < 0.5 s, judged on the best of
``--reps`` runs (the median and CPU times are reported too).  ``--json`` prints only the
JSON document on stdout; progress goes to stderr.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from experiments._bench import log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = [("help", "nonequil --help < 0.5 s (issue 8)", 0.5),
           ("simulate_warm", "time to first simulated step, warm Numba cache, < 2 s (issue 8)",
            2.0)]


def run_child(cmd, env=None, cwd=None):
    """Run cmd to completion; returns (wall_s, cpu_s, max_rss_bytes, returncode, stderr).

    CPU time and peak resident set size are the child's own (``os.wait4``), not those of
    other children of this process.
    """
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd or ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    return (wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, p.returncode,
            err.decode(errors="replace"))


def nonequil_cmd():
    """The console script beside this Python when it is one, else ``python -m nonequil.cli``."""
    exe = os.path.join(os.path.dirname(sys.executable), "nonequil")
    if os.path.exists(exe):
        with open(exe, "rb") as f:
            if b"python" in f.readline():
                return [sys.executable, exe]
    exe = shutil.which("nonequil")
    if exe:
        return [exe]
    return [sys.executable, "-m", "nonequil.cli"]


def figure(name, cmd, reps, env=None):
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu, _, rc, err = run_child(cmd, env=env)
        if rc != 0:
            raise RuntimeError(f"{name}: {' '.join(cmd)} exited {rc}: {err.strip()[-500:]}")
        walls.append(wall)
        cpus.append(cpu)
        log(f"[startup] {name:<14} {wall:7.3f} s wall, {cpu:7.3f} s cpu")
    return summary(walls, cpus, reps)


def summary(walls, cpus, reps):
    """The record of one figure from its wall and CPU times (best, median, all)."""
    s = sorted(walls)
    return {"status": "ok", "best_s": s[0], "median_s": s[len(s) // 2], "times_s": walls,
            "cpu_s": cpus, "cpu_best_s": min(cpus), "unit": "s", "reps": reps}


def import_profile(cmd, env=None, top=8):
    """Total import time of ``python -X importtime``, and the packages that take most of it
    (the self times of all their modules, summed per top-level package name)."""
    _, _, _, rc, err = run_child([cmd[0], "-X", "importtime", *cmd[1:]], env=env)
    pkgs = {}
    total = 0
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            self_us = int(parts[0])
        except ValueError:
            continue                                  # the header line
        total += self_us
        root = parts[2].strip().split(".")[0]
        pkgs[root] = pkgs.get(root, 0) + self_us
    slow = sorted(pkgs.items(), key=lambda kv: -kv[1])[:top]
    return {"total_import_s": total / 1e6, "returncode": rc,
            "slowest_packages_s": {k: v / 1e6 for k, v in slow}}


def simulate_args(out):
    return ["simulate", "--process", "ou", "--walkers", "1000", "--steps", "1", "--dt",
            "0.01", "--quiet", "--out", out]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench_startup",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one run per figure")
    p.add_argument("--json", action="store_true", help="only JSON on stdout")
    p.add_argument("--no-cold", action="store_true", help="skip the cold (empty cache) run; "
                   "the warm runs then use the default Numba cache, after an untimed run "
                   "that populates it if needed")
    p.add_argument("--reps", type=int, default=None, help="runs per figure (default 5, "
                   "quick 1)")
    a = p.parse_args(argv)
    reps = a.reps or (1 if a.quick else 5)
    if reps < 1:
        p.error("--reps must be >= 1")
    cmd = nonequil_cmd()
    results = {"python": figure("python", [sys.executable, "-c", "pass"], reps),
               "help": figure("help", cmd + ["--help"], reps)}
    with tempfile.TemporaryDirectory(prefix="nonequil-startup-") as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba-cache"))
        if a.no_cold:
            env = None              # the user's own (keyed) cache, populated by a first run
        outs = iter(os.path.join(tmp, f"run{i}.h5") for i in range(10 * reps + 10))
        if a.no_cold:
            run_child(cmd + simulate_args(next(outs)))       # populates the cache if empty
            results["simulate_cold"] = {"status": "skipped", "reason": "--no-cold"}
        else:
            results["simulate_cold"] = figure("simulate_cold", cmd + simulate_args(next(outs)),
                                              1, env)
        walls, cpus = [], []
        for _ in range(reps):
            r = figure("simulate_warm", cmd + simulate_args(next(outs)), 1, env)
            walls += r["times_s"]
            cpus += r["cpu_s"]
        results["simulate_warm"] = summary(walls, cpus, reps)
        imports = {"help": import_profile(cmd + ["--help"]),
                   "simulate_warm": import_profile(cmd + simulate_args(next(outs)), env)}
    targets = []
    for key, desc, need in TARGETS:
        r = results[key]
        targets.append({"key": key, "target": desc, "need_s": need, "best_s": r["best_s"],
                        "median_s": r["median_s"], "cpu_best_s": r["cpu_best_s"],
                        "status": "PASS" if r["best_s"] < need else "FAIL"})
    ratios = {"help/python": results["help"]["best_s"] / results["python"]["best_s"]}
    if results["simulate_cold"]["status"] == "ok":
        ratios["simulate_cold/simulate_warm"] = (results["simulate_cold"]["best_s"]
                                                 / results["simulate_warm"]["best_s"])
    doc = {"benchmark": "startup", "config": {"reps": reps, "quick": a.quick,
                                              "command": cmd},
           "results": results, "imports": imports, "ratios": ratios, "targets": targets}
    if a.json:
        print(json.dumps(doc, indent=1))
        return 0
    for k, r in results.items():
        if r["status"] != "ok":
            print(f"{k:<16} skipped: {r['reason']}")
            continue
        print(f"{k:<16} best {r['best_s']:.3f} s, median {r['median_s']:.3f} s, "
              f"cpu {r['cpu_best_s']:.3f} s")
    for k, v in imports.items():
        print(f"imports {k}: {v['total_import_s']:.3f} s; slowest "
              + ", ".join(f"{m} {t:.3f}" for m, t in v["slowest_packages_s"].items()))
    for t in targets:
        print(f"  [{t['status']}] {t['target']}: best {t['best_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
