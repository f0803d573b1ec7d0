r"""The benchmark suite behind ``nonequil bench`` (issue 8).  Not a test.

    python -m experiments.bench_suite [--quick] [--device cpu|cuda] [--json] [--quiet]
                                      [--only NAMES] [--no-scaling]

Runs every benchmark module of ``experiments/`` through one interface: a fresh process
``python -m experiments.<module> --json [--quick] [--device D] [size flags]`` whose stdout is
one JSON document with ``"results"``, ``"ratios"`` and ``"targets"`` (the convention of
``bench_ou``).  ``--device`` is passed to a module whose ``--help`` lists it, and a size flag
(``--walkers``, ``--L``, ``--width``) only where the module's ``--help`` lists it.  A module
that is not present (``bench_train``, ``bench_sample`` before they land) is reported as
"not available"; one that fails is reported as an error with the end of its stderr, and the
suite goes on (exit status 1 at the end).

Benchmarks (``BENCHMARKS``): ou (OU ensemble), mb (Müller-Brown overdamped Langevin), ising
(checkerboard Metropolis), train (DSM training), sample (reverse sampling), memory (peak RSS
of a streamed 10^7-walker OU run), dask (strong scaling of a sharded OU ensemble, local:1 vs
local:2), startup (``nonequil --help`` and the time to the first
simulated step, cold and warm).  Scaling (``SCALING``): each rate figure again at other
sizes, from 10^4 to 10^7 walkers (OU), 10^4 to 10^6 (Müller-Brown), L = 64..1024 lattices
(Ising) and MLP widths 64..512 (train, sample).

The suite prints one table: every figure with its size, rate and rate per CPU-second, every
ratio, and PASS/FAIL against each target of the issue; with ``--json`` only the combined
JSON document goes to stdout, and progress (the modules' own stderr) to stderr.
"""
import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

from experiments._bench import cpu_model, cpus_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# key, module, what it measures, extra argv (full run), extra argv (--quick), timeout (s)
BENCHMARKS = [
    ("ou", "experiments.bench_ou", "OU ensemble, walker-steps/s (EM and exact, f64/f32)",
     ["--reps", "2"], ["--walkers", "20000", "--steps", "20", "--reps", "1"], 1800),
    ("mb", "experiments.bench_mb", "Muller-Brown overdamped Langevin, walker-steps/s",
     ["--reps", "2"], ["--walkers", "4000", "--steps", "20", "--reps", "1"], 1800),
    ("ising", "experiments.bench_ising", "Ising checkerboard Metropolis, spin-flips/s",
     ["--reps", "2"], ["--L", "32", "--sweeps", "5", "--reps", "1", "--no-dataset"], 1200),
    ("train", "experiments.bench_train", "DSM training, steps/s", [], [], 1800),
    ("sample", "experiments.bench_sample", "reverse sampling, samples x steps/s", [], [], 1800),
    ("memory", "experiments.bench_memory", "peak RSS of a streamed OU run", [],
     ["--walkers", "10000", "--steps", "20,80"], 1800),
    ("startup", "experiments.bench_startup", "start-up times", [], ["--no-cold"], 900),
    ("dask", "experiments.bench_dask", "sharded OU ensemble on local Dask (1 vs 2 workers)",
     [], [], 900),
]
# key -> (flag the module must list, [(label, argv)] full, [(label, argv)] quick)
SCALING = {
    "ou": ("--walkers",
           [("1e4 x 10000", ["--walkers", "10000", "--steps", "10000", "--reps", "1"]),
            ("1e5 x 2000", ["--walkers", "100000", "--steps", "2000", "--reps", "1"]),
            ("1e7 x 100", ["--walkers", "10000000", "--steps", "100", "--reps", "1"])],
           [("2e3 x 20", ["--walkers", "2000", "--steps", "20", "--reps", "1",
                          "--no-peers"])]),
    "mb": ("--walkers",
           [("1e4 x 1000", ["--walkers", "10000", "--steps", "1000", "--reps", "1"]),
            ("1e6 x 50", ["--walkers", "1000000", "--steps", "50", "--reps", "1"])],
           []),
    "ising": ("--L",
              [("8 x 64^2 x 100", ["--L", "64", "--sweeps", "100", "--reps", "1",
                                   "--no-dataset"]),
               ("8 x 1024^2 x 5", ["--L", "1024", "--sweeps", "5", "--reps", "1",
                                   "--no-dataset"])],
              []),
    "train": ("--width", [("width 64", ["--width", "64"]), ("width 512", ["--width", "512"])],
              [("width 64", ["--width", "64"])]),
    "sample": ("--width", [("width 64", ["--width", "64"]), ("width 512", ["--width", "512"])],
               [("width 64", ["--width", "64"])]),
}
_HELP = {}


class Reporter:
    def __init__(self, quiet):
        self.quiet = quiet

    def __call__(self, msg):
        if not self.quiet:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()


def available(module):
    """True when the module's source is present (``find_spec``; nothing is imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def module_flags(module):
    """The option strings that ``python -m module --help`` lists (cached per module)."""
    if module not in _HELP:
        p = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        _HELP[module] = {t.strip(",[]") for t in p.stdout.split() if t.startswith("--")}
    return _HELP[module]


def run_module(module, argv, timeout, say):
    """Run ``python -m module *argv``; returns a record with the parsed JSON document.

    The child's stderr is forwarded line by line through ``say`` (its progress), and its
    last lines are kept for the error report.
    """
    cmd = [sys.executable, "-m", module, *argv]
    rec = {"module": module, "argv": argv}
    t0 = time.perf_counter()
    tail = []

    def pump(stream):
        for line in stream:
            line = line.rstrip("\n")
            tail.append(line)
            del tail[:-20]
            say(f"  | {line}")

    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=pump, args=(p.stderr,), daemon=True)
        reader.start()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rec.update(status="error", reason=f"timed out after {timeout} s")
        reader.join(timeout=10)
        out.seek(0)
        text = out.read()
    rec["wall_s"] = time.perf_counter() - t0
    if "status" in rec:
        return rec
    if p.returncode != 0:
        rec.update(status="error", reason=f"exit status {p.returncode}: " + " / ".join(tail[-5:]))
        return rec
    try:
        doc = json.loads(text)
    except ValueError as e:
        rec.update(status="error", reason=f"stdout is not one JSON document ({e})")
        return rec
    missing = [k for k in ("results", "ratios", "targets") if k not in doc]
    if missing:
        rec.update(status="error", reason=f"JSON document lacks {', '.join(missing)}")
        return rec
    rec.update(status="ok", doc=doc)
    return rec


def module_argv(module, quick, device, extra):
    argv = ["--json"] + (["--quick"] if quick else [])
    if device != "cpu" and "--device" in module_flags(module):
        argv += ["--device", device]
    return argv + list(extra)


def figure_value(r):
    """(value, unit) of one result: a rate, a time or a memory figure; None if it has none."""
    if isinstance(r.get("rate"), (int, float)):
        return r["rate"], r.get("unit", "items/s")
    if isinstance(r.get("best_s"), (int, float)):
        return r["best_s"], "s"
    if isinstance(r.get("peak_rss_mib"), (int, float)):
        return r["peak_rss_mib"], "MiB peak RSS"
    return None


def figures_of(key, doc, size):
    rows = []
    for name, r in doc["results"].items():
        if not isinstance(r, dict):
            continue
        st = r.get("status", "ok")
        if st != "ok":
            rows.append({"benchmark": key, "figure": name, "size": size, "status": "skipped",
                         "reason": r.get("reason", st)})
            continue
        v = figure_value(r)
        if v is None:
            continue
        rows.append({"benchmark": key, "figure": name, "size": size, "status": "ok",
                     "value": v[0], "unit": v[1], "per_cpu_s": r.get("rate_per_cpu_s"),
                     "label": r.get("label", name)})
    return rows


def size_label(key, doc, quick):
    c = doc.get("config", {})
    if "walkers" in c and "steps" in c:
        w, s = c["walkers"], c["steps"]
        s = ",".join(map(str, s)) if isinstance(s, list) else s
        return f"{w:.0e} x {s}" if isinstance(w, int) else f"{w} x {s}"
    if "L" in c:
        return f"{c.get('replicas', '?')} x {c['L']}^2 x {c.get('sweeps', '?')}"
    return "quick" if quick else "default"


def machine():
    from importlib import metadata

    vers = {"python": platform.python_version()}
    for pkg in ("nonequil", "numpy", "numba", "llvmlite", "scipy", "h5py", "torch", "jax",
                "jaxlib"):
        try:
            vers[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            vers[pkg] = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpus_available": cpus_available(),
            "platform": platform.platform(), "versions": vers}


def loadavg():
    try:
        return [round(t, 2) for t in os.getloadavg()]
    except OSError:
        return None


def run_suite(quick=False, device="cpu", only=None, scaling=True, say=None):
    """Run the suite; returns the combined JSON-able document (see the module docstring)."""
    say = say or (lambda msg: None)
    doc = {"suite": "nonequil bench", "quick": quick, "device": device,
           "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "loadavg_start": loadavg(), "benchmarks": {}, "scaling": {},
           "figures": [], "ratios": {}, "ratios_per_cpu_s": {}, "targets": []}
    t_start = time.perf_counter()
    for key, module, what, full, qk, timeout in BENCHMARKS:
        if only and key not in only:
            continue
        if not available(module):
            doc["benchmarks"][key] = {"module": module, "what": what, "status": "not available",
                                      "reason": f"{module} is not present"}
            say(f"[bench] {key}: {module} not available")
            continue
        argv = module_argv(module, quick, device, qk if quick else full)
        say(f"[bench] {key}: python -m {module} {' '.join(argv)}")
        rec = run_module(module, argv, timeout, say)
        rec["what"] = what
        say(f"[bench] {key}: {rec['status']} in {rec['wall_s']:.1f} s"
            + (f" ({rec['reason']})" if rec["status"] != "ok" else ""))
        doc["benchmarks"][key] = rec
        if rec["status"] != "ok":
            continue
        d = rec["doc"]
        size = size_label(key, d, quick)
        doc["figures"] += figures_of(key, d, size)
        doc["ratios"].update({f"{key}: {k}": v for k, v in d["ratios"].items()
                              if isinstance(v, (int, float))})
        doc["ratios_per_cpu_s"].update({f"{key}: {k}": v for k, v in
                                        d.get("ratios_per_cpu_s", {}).items()
                                        if isinstance(v, (int, float))})
        for t in d["targets"]:
            doc["targets"].append(dict(t, benchmark=key, size=size))
        if scaling and key in SCALING:
            doc["scaling"][key] = run_scaling(key, module, quick, device, timeout, size, say)
    doc["loadavg_end"] = loadavg()
    doc["wall_s"] = time.perf_counter() - t_start
    st = [t.get("status") for t in doc["targets"]]
    doc["summary"] = {
        "targets_pass": st.count("PASS"), "targets_fail": st.count("FAIL"),
        "targets_skipped": len(st) - st.count("PASS") - st.count("FAIL"),
        "not_available": [k for k, r in doc["benchmarks"].items()
                          if r["status"] == "not available"],
        "errors": [k for k, r in doc["benchmarks"].items() if r["status"] == "error"]}
    return doc


def run_scaling(key, module, quick, device, timeout, main_size, say):
    """The module's figures again at the SCALING sizes (besides the main run's size)."""
    flag, full, qk = SCALING[key]
    if flag not in module_flags(module):
        return {"status": "not available", "reason": f"{module} has no {flag} option"}
    points = []
    for label, extra in (qk if quick else full):
        argv = module_argv(module, quick, device, extra)
        say(f"[bench] {key} scaling {label}: python -m {module} {' '.join(argv)}")
        rec = run_module(module, argv, timeout, say)
        pt = {"size": label, "argv": argv, "status": rec["status"], "wall_s": rec["wall_s"]}
        if rec["status"] != "ok":
            pt["reason"] = rec["reason"]
        else:
            d = rec["doc"]
            pt["size"] = size_label(key, d, quick)
            pt["figures"] = figures_of(key, d, pt["size"])
            pt["ratios"] = d["ratios"]
            pt["targets"] = [{k: t.get(k) for k in ("key", "target", "ratio", "need", "status")}
                             for t in d["targets"]]
        points.append(pt)
    return {"status": "ok", "main_size": main_size, "points": points}


# ---------------------------------------------------------------- table
def _num(v):
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.3e}" if abs(v) >= 1e4 or abs(v) < 1e-2 else f"{v:.3f}"


def fmt_table(doc):
    m = doc["machine"]
    v = m["versions"]
    out = [f"nonequil bench ({'quick' if doc['quick'] else 'full'}, device {doc['device']}) "
           f"{doc['date_utc']}, {doc['wall_s']:.0f} s",
           f"machine: {m['cpu']}, {m['cpus_available']} CPUs available ({m['cpu_count']} total);"
           f" loadavg start {doc['loadavg_start']} end {doc['loadavg_end']}",
           "versions: " + ", ".join(f"{k} {t}" for k, t in v.items() if t), ""]
    hdr = f"{'bench':<8} {'figure':<22} {'size':<16} {'value':>10} {'unit':<20} {'per cpu-s':>10}"
    out += [hdr, "-" * len(hdr)]
    for f in doc["figures"]:
        if f["status"] != "ok":
            out.append(f"{f['benchmark']:<8} {f['figure']:<22} {f['size']:<16} skipped: "
                       f"{str(f.get('reason', ''))[:60]}")
            continue
        out.append(f"{f['benchmark']:<8} {f['figure'][:22]:<22} {f['size'][:16]:<16} "
                   f"{_num(f['value']):>10} {f['unit'][:20]:<20} {_num(f['per_cpu_s']):>10}")
    for k, r in doc["benchmarks"].items():
        if r["status"] != "ok":
            out.append(f"{k:<8} {r['status']}: {r.get('reason', '')}")
    out += ["", f"{'ratios':<46} {'wall':>9} {'per cpu-s':>10}"]
    for k, r in doc["ratios"].items():
        rc = doc["ratios_per_cpu_s"].get(k)
        out.append(f"  {k:<44} {r:9.3f} " + (f"{rc:10.3f}" if rc is not None else ""))
    out.append("(per cpu-s: the same ratio of items per CPU-second of each process, a check "
               "on uneven background load; the targets use wall time)")
    out += ["", "scaling (rate of each figure at each size):"]
    for key, sc in doc["scaling"].items():
        if sc.get("status") != "ok":
            out.append(f"  {key}: {sc.get('status')}: {sc.get('reason', '')}")
            continue
        for pt in sc["points"]:
            if pt["status"] != "ok":
                out.append(f"  {key} {pt['size']}: {pt['status']}: {pt.get('reason', '')}")
                continue
            figs = ", ".join(f"{f['figure']} {_num(f['value'])}" for f in pt["figures"]
                             if f["status"] == "ok")
            tg = "; ".join(f"{t['status']} {_num(t.get('ratio'))}x/{t.get('need')}"
                           for t in pt["targets"] if t.get("status") in ("PASS", "FAIL"))
            out.append(f"  {key} {pt['size']}: {figs}" + (f"  [targets: {tg}]" if tg else ""))
    st = doc["benchmarks"].get("startup", {})
    for what, imp in (st.get("doc", {}).get("imports", {}) if st.get("status") == "ok"
                      else {}).items():
        out.append(f"start-up imports ({what}): {imp['total_import_s']:.3f} s in all; "
                   + ", ".join(f"{k} {v:.3f}" for k, v in imp["slowest_packages_s"].items()))
    out += ["", "targets:"]
    for t in doc["targets"]:
        st = t.get("status", "?")
        ratio = t.get("ratio")
        if ratio is None and "best_s" in t:
            detail = f"best {t['best_s']:.3f} s (cpu {t.get('cpu_best_s', float('nan')):.3f} s)"
        elif ratio is not None:
            detail = f"{ratio:.2f}x (need {t.get('need')})"
            if t.get("ratio_per_cpu_s") is not None:
                detail += f"; per cpu-s {t['ratio_per_cpu_s']:.2f}x"
        else:
            detail = ""
        out.append(f"  [{str(st).upper():<7}] {t['benchmark']:<8} {t.get('target', '')}: {detail}")
    s = doc["summary"]
    out += ["", f"{s['targets_pass']} PASS, {s['targets_fail']} FAIL, {s['targets_skipped']} "
            f"skipped; not available: {', '.join(s['not_available']) or 'none'}; errors: "
            f"{', '.join(s['errors']) or 'none'}"]
    return "\n".join(out)


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m experiments.bench_suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (about a minute)")
    p.add_argument("--json", action="store_true", help="only the JSON document on stdout")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--only", help="comma list of benchmarks: "
                   + ",".join(b[0] for b in BENCHMARKS))
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling sizes")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


def parse_only(text):
    """'ou,mb' -> {'ou', 'mb'}; an unknown name raises ValueError naming the valid ones."""
    if not text:
        return None
    names = {t.strip() for t in text.split(",") if t.strip()}
    valid = [b[0] for b in BENCHMARKS]
    bad = sorted(names - set(valid))
    if bad or not names:
        raise ValueError(f"--only {text!r}: unknown benchmark(s) {', '.join(bad) or '(none)'}; "
                         f"valid: {', '.join(valid)}")
    return names


def main(argv=None):
    a = parse(argv)
    try:
        only = parse_only(a.only)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    doc = run_suite(a.quick, a.device, only, not a.no_scaling, Reporter(a.quiet))
    print(json.dumps(doc, indent=1) if a.json else fmt_table(doc))
    return 1 if doc["summary"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
