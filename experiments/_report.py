"""The shared machinery of the experiments: the run lifecycle and the report writer.

An experiment module defines ``NAME``, ``TITLE``, ``SUMMARY`` and ``run(ctx)``, and ends
with ``if __name__ == "__main__": sys.exit(_report.main(NAME))``.  ``run(ctx)`` writes its
HDF5 files into ``ctx.out`` (through the ``nonequil`` verbs where one exists:
``ctx.verb([...])``) and records what it measured on ``ctx.report``:

* ``check(key, label, value, se, reference=, tol=, kind=)``: a pass/fail check.  ``kind``
  ``"abs"``: PASS iff ``|value - reference| <= tol``; ``"max"``: iff ``value <= tol``;
  ``"min"``: iff ``value >= tol``; ``"zscore"``: iff ``|value - reference| <= z se``.  Every
  check also records ``z se`` (z = ``Z`` = 5 unless given) and whether the difference lies
  within it, so that each tolerance is paired with its statistical resolution;
* ``value(key, label, value, se)``: a measured quantity without a verdict;
* ``table(title, header, rows)``, ``figure(fig, name, caption)``, ``file(name, what)``,
  ``pending(key, text)`` (a step that was not run, and why), ``note(text)``.

Lifecycle (DESIGN.md "Files written by a verb", for a directory): the arguments are checked
before anything is created; an existing non-empty ``DIR`` is refused; everything is written
into ``DIR.partial`` (a stale one is removed first), which is renamed to ``DIR`` when the
report is complete.  After bad input nothing exists; after a failure during the run the
partial directory is kept and the error names it.

Outputs: ``DIR/report.md`` (what was run, the exact command, the checks with error bars and
verdicts, the other results, the figures, the commands of each step with their wall times,
the files), ``DIR/results.json`` (the same figures; keys are only ever added) and
``DIR/headline.md`` (the title, the command, the first figure and the checks table: the
block a README gallery includes).
"""
import contextlib
import datetime
import json
import math
import os
import shlex
import shutil
import sys
import time

import numpy as np

Z = 5.0
FORMAT = 1
_INVOCATION = [None]       # the command line when run as ``python -m experiments.NAME``


# ============================================================================ numbers
def _num(v):
    """A JSON-safe float (None for NaN/inf/None)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    v = float(v)
    return v if math.isfinite(v) else None


def _json(v):
    if isinstance(v, dict):
        return {str(k): _json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, np.ndarray):
        return _json(v.tolist())
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    return v


def _cell(text):
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt(v, se=None, digits=4):
    """``value ± se`` with ``digits`` significant figures ('—' for a missing value)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)) and se is None:
        return str(int(v))
    s = f"{float(v):.{digits}g}"
    if se is not None and math.isfinite(float(se)):
        s += f" ± {float(se):.2g}"
    return s


# ============================================================================ the report
class Report:
    """What an experiment measured; ``write(dir)`` makes report.md and results.json."""

    def __init__(self, name, title, summary, command, settings):
        self.name, self.title, self.summary, self.command = name, title, summary, command
        self.settings = dict(settings)
        self.checks, self.values, self.tables = {}, {}, []
        self.figures, self.files, self.steps, self.notes, self.pendings = [], [], [], [], {}
        self.wall_seconds = None
        self.cpu_seconds = None

    # ------------------------------------------------------------------ recording
    def check(self, key, label, value, se=None, *, reference=None, tol=None, kind="abs",
              z=Z, note=""):
        """Record a check and return its verdict (True for PASS); see the module doc."""
        value, se, ref = _num(value), _num(se), _num(reference)
        diff = None if value is None or ref is None else value - ref
        z_se = None if se is None else z * se
        if value is None:
            ok = False
        elif kind == "abs":
            ok = diff is not None and abs(diff) <= tol
        elif kind == "max":
            ok = value <= tol
        elif kind == "min":
            ok = value >= tol
        elif kind == "zscore":
            ok = diff is not None and z_se is not None and abs(diff) <= z_se
        else:
            raise ValueError(f"unknown check kind {kind!r}")
        dev = diff if diff is not None else (value if kind == "max" else None)
        within = None if dev is None or z_se is None else bool(abs(dev) <= z_se)
        self.checks[key] = {"label": label, "value": value, "se": se, "reference": ref,
                            "diff": diff, "tolerance": _num(tol), "kind": kind, "z": z,
                            "z_se": z_se, "within_z_se": within,
                            "verdict": "PASS" if ok else "FAIL", "note": note}
        return ok

    def value(self, key, label, value, se=None, note=""):
        self.values[key] = {"label": label, "value": _num(value), "se": _num(se),
                            "note": note}

    def table(self, title, header, rows):
        self.tables.append({"title": title, "header": list(header),
                            "rows": [[_json(c) for c in r] for r in rows]})

    def figure(self, name, caption):
        self.figures.append({"file": name, "caption": caption})

    def file(self, name, what):
        self.files.append({"file": name, "what": what})

    def step(self, label, command, seconds, cpu_seconds=None):
        """A step of the run: its wall time and (when given) the CPU time of this process
        over it, all threads (``time.process_time``; the load-independent cost)."""
        self.steps.append({"step": label, "command": command, "seconds": _num(seconds),
                           "cpu_seconds": _num(cpu_seconds)})

    def note(self, text):
        self.notes.append(text)

    def pending(self, key, text):
        self.pendings[key] = text

    # ------------------------------------------------------------------ output
    def counts(self):
        v = [c["verdict"] for c in self.checks.values()]
        return {"pass": v.count("PASS"), "fail": v.count("FAIL"), "checks": len(v)}

    def to_dict(self):
        return _json({"format": FORMAT, "experiment": self.name, "title": self.title,
                      "command": self.command, "settings": self.settings,
                      "wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds,
                      "summary": self.counts(),
                      "checks": self.checks, "values": self.values, "tables": self.tables,
                      "figures": self.figures, "files": self.files, "steps": self.steps,
                      "pending": self.pendings, "notes": self.notes})

    def markdown(self):
        c = self.counts()
        s = self.settings
        L = [f"# {self.title}", "", self.summary.strip(), "",
             f"**Command:** `{self.command}`", "",
             f"Run {s.get('date', '')} on {s.get('device', 'cpu')}, seed {s.get('seed')}, "
             f"{'quick' if s.get('quick') else 'full'} settings; wall time "
             f"{fmt(self.wall_seconds, digits=3)} s ({fmt(self.cpu_seconds, digits=3)} CPU-s "
             f"of this process).  **{c['pass']} of {c['checks']} checks "
             "pass.**", "", "## Settings", "", "| setting | value |", "|---|---|"]
        L += [f"| {k} | {v} |" for k, v in s.items() if k not in ("date",)]
        L += ["", "## Checks", "",
              "Verdicts: `abs` PASS iff |value - reference| <= tolerance; `max` iff value <= "
              "tolerance; `min` iff value >= tolerance; `zscore` iff |value - reference| <= "
              "z·SE.  The z·SE column is the statistical resolution of each figure (z = "
              f"{Z:g} unless stated); 'in z·SE' says whether the deviation lies within it.", "",
              "| check | value ± SE | reference | tolerance (kind) | z·SE | in z·SE "
              "| verdict |", "|---|---|---|---|---|---|---|"]
        yes_no = {None: "—", True: "yes", False: "no"}
        for k in self.checks.values():
            tol = "—" if k["tolerance"] is None else fmt(k["tolerance"])
            L.append(f"| {_cell(k['label'])} | {fmt(k['value'], k['se'])} | "
                     f"{fmt(k['reference'])} | {tol} ({k['kind']}) | "
                     f"{fmt(k['z_se'], digits=2)} | {yes_no[k['within_z_se']]} | "
                     f"**{k['verdict']}** |")
        notes = [f"- {k['label']}: {k['note']}" for k in self.checks.values() if k["note"]]
        if notes:
            L += [""] + notes
        if self.values:
            L += ["", "## Other results", "", "| quantity | value ± SE | note |", "|---|---|---|"]
            L += [f"| {_cell(v['label'])} | {fmt(v['value'], v['se'])} | {_cell(v['note'])} |"
                  for v in self.values.values()]
        for t in self.tables:
            L += ["", f"### {t['title']}", "", "| " + " | ".join(t["header"]) + " |",
                  "|" + "---|" * len(t["header"])]
            L += ["| " + " | ".join(fmt(x) if isinstance(x, float) else str(x) for x in r)
                  + " |" for r in t["rows"]]
        if self.pendings:
            L += ["", "## Not run", ""] + [f"- **{k}**: {v}" for k, v in self.pendings.items()]
        if self.notes:
            L += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        if self.figures:
            L += ["", "## Figures", ""]
            for f in self.figures:
                L += [f"![{f['caption']}]({f['file']})", "", f"*{f['caption']}*", ""]
        if self.steps:
            L += ["", "## Steps", "", "| step | command | seconds | CPU-s |", "|---|---|---|---|"]
            L += [f"| {st['step']} | `{st['command']}` | {fmt(st['seconds'], digits=3)} | "
                  f"{fmt(st.get('cpu_seconds'), digits=3)} |" for st in self.steps]
        if self.files:
            L += ["", "## Files", ""] + [f"- `{f['file']}`: {f['what']}" for f in self.files]
        return "\n".join(L) + "\n"

    def headline(self, prefix=""):
        """A short markdown block for a README gallery: the title, the command, the first
        figure (its path under ``prefix``) and the checks table."""
        c = self.counts()
        L = [f"### {self.title}", "", f"`{self.command}` ({c['pass']} of {c['checks']} "
             f"checks pass; wall time {fmt(self.wall_seconds, digits=3)} s)", ""]
        if self.figures:
            f = self.figures[0]
            L += [f"![{f['caption']}]({prefix}{f['file']})", ""]
        L += ["| check | value ± SE | reference | tolerance | verdict |", "|---|---|---|---|---|"]
        L += [f"| {_cell(k['label'])} | {fmt(k['value'], k['se'])} | {fmt(k['reference'])} | "
              f"{'—' if k['tolerance'] is None else fmt(k['tolerance'])} | {k['verdict']} |"
              for k in self.checks.values()]
        return "\n".join(L) + "\n"

    def write(self, directory):
        """``results.json``, ``report.md`` and ``headline.md`` (the README gallery block)."""
        with open(os.path.join(directory, "results.json"), "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        with open(os.path.join(directory, "report.md"), "w") as f:
            f.write(self.markdown())
        with open(os.path.join(directory, "headline.md"), "w") as f:
            f.write(self.headline())


# ============================================================================ the context
class Context:
    """What ``run(ctx)`` gets: settings, the output directory and helpers."""

    def __init__(self, out, final, quick, device, seed, quiet, report):
        self.out, self.final = out, final
        self.quick, self.device, self.seed, self.quiet = quick, device, seed, quiet
        self.report = report

    def path(self, name):
        """Absolute path of ``name`` inside the (partial) report directory."""
        return os.path.join(self.out, name)

    def log(self, msg):
        if not self.quiet:
            from nonequil.cli import _end_progress_line

            _end_progress_line()
            sys.stderr.write(f"{msg}\n")

    def shown(self, text):
        """``text`` with the partial directory's path replaced by the final DIR."""
        return str(text).replace(self.out, self.final)

    def verb(self, label, argv):
        """Run ``nonequil ARGV`` in-process (errors propagate as exceptions) and record the
        command and its wall time as a step of the report."""
        from nonequil import cli

        args = [str(a) for a in argv] + (["--quiet"] if self.quiet else [])
        ns = cli.build_parser().parse_args(args)
        t0, c0 = time.perf_counter(), time.process_time()
        ns.handler(ns)
        dt = time.perf_counter() - t0
        self.report.step(label, "nonequil " + " ".join(shlex.quote(self.shown(a))
                                                       for a in argv), dt,
                         time.process_time() - c0)
        self.log(f"{self.report.name}: {label} done in {dt:.1f} s")
        return dt

    @contextlib.contextmanager
    def stage(self, label, what):
        """Time a library step (no verb) and record it as a step of the report."""
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        dt = time.perf_counter() - t0
        self.report.step(label, what, dt, time.process_time() - c0)
        self.log(f"{self.report.name}: {label} done in {dt:.1f} s")

    def figure(self, fig, name, caption):
        fig.savefig(self.path(name), dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.report.figure(name, caption)


def pyplot():
    """matplotlib.pyplot with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ============================================================================ common steps
# The steps that the diffusion experiments share (data -> VP model -> samples, the GAN
# baseline), each run through a ``nonequil`` verb and recorded on the report.
GAN_HEADER = ["quantity", "GAN", "diffusion", "exact", "GAN error - diffusion error"]


def quick_or_full(ctx, quick, full):
    """``(settings, q)``: the ``quick`` or ``full`` settings dict, and ``q`` (1 or 0), the
    index of a ``(full, quick)`` tolerance pair."""
    return (quick, 1) if ctx.quick else (full, 0)


def dataset(ctx, name, sets, n, what):
    """``nonequil dataset NAME --set K=V ... --n N --seed SEED`` into ``data.h5`` (recorded
    as a file: ``what``); ``sets``: the ``K=V`` strings.  Returns the file's path."""
    data = ctx.path("data.h5")
    argv = ["dataset", name]
    for kv in sets:
        argv += ["--set", kv]
    ctx.verb("data", argv + ["--n", n, "--seed", ctx.seed, "--out", data])
    ctx.report.file("data.h5", what)
    return data


def train_model(ctx, s, data, extra=()):
    """``nonequil train`` of the VP score model on ``data`` into ``model.h5``:
    ``s["train_steps"]`` steps, seed ``ctx.seed + 1``, the arguments ``extra``; quick runs add
    ``--batch s["batch"]`` and ``--set width=s["width"]``.  Returns the model's path."""
    model = ctx.path("model.h5")
    train = ["train", data, "--steps", s["train_steps"], *extra, "--seed", ctx.seed + 1,
             "--out", model]
    if ctx.quick:
        train[4:4] = ["--batch", s["batch"], "--set", f"width={s['width']}"]
    ctx.verb("train the VP score model", train)
    ctx.report.file("model.h5", "the VP-SDE score model")
    return model


def generate(ctx, s, model, what, record=True):
    """``nonequil sample --sampler ode`` (probability-flow ODE): ``s["n_samples"]`` samples
    in ``s["sampler_steps"]`` steps, seed ``ctx.seed + 2``, on ``ctx.device``, with the
    reverse trajectories every ``s["record_every"]`` steps when ``record``, into
    ``samples.h5`` (recorded as a file: ``what``).  Returns the file's path."""
    samples = ctx.path("samples.h5")
    rec = ["--record-every", s["record_every"]] if record else []
    ctx.verb("generate (reverse the chain)", [
        "sample", model, "--n", s["n_samples"], "--sampler", "ode", "--steps",
        s["sampler_steps"], *rec, "--seed", ctx.seed + 2, "--device", ctx.device,
        "--out", samples])
    ctx.report.file("samples.h5", what)
    return samples


def gan_samples(ctx, s):
    """The GAN baseline on ``data.h5``: ``nonequil gan`` (``s["gan_steps"]`` steps, seed
    ``ctx.seed + 4``) and ``nonequil sample`` of ``s["n_samples"]`` (seed ``ctx.seed + 5``);
    returns the samples ``[n, ...]``, or None (recorded as pending) where ``nonequil.gan``
    is not in the tree."""
    import importlib.util

    import h5py

    if importlib.util.find_spec("nonequil.gan") is None:
        ctx.report.pending("GAN baseline", "nonequil.gan is not in this tree; _gan_baseline "
                           "runs it when it is")
        return None
    gan, out = ctx.path("gan.h5"), ctx.path("gan_samples.h5")
    ctx.verb("train the GAN baseline", ["gan", ctx.path("data.h5"), "--steps",
                                        s["gan_steps"], "--seed", ctx.seed + 4, "--out", gan])
    ctx.verb("generate with the GAN", ["sample", gan, "--n", s["n_samples"], "--seed",
                                       ctx.seed + 5, "--out", out])
    ctx.report.file("gan.h5", "the GAN baseline (nonequil gan, default settings)")
    ctx.report.file("gan_samples.h5", "GAN samples")
    with h5py.File(out, "r") as f:
        return f["samples"][()]


def gan_table(report, rows):
    """The table of the GAN baseline against diffusion: rows ``[quantity, GAN, diffusion,
    exact, GAN error - diffusion error]``."""
    report.table("GAN baseline against diffusion (same data, same number of samples)",
                 GAN_HEADER, rows)


def analytic_metrics(x, name, params):
    """``nonequil.compare.compare_to_analytic(x, name, params)`` as ``{key: (value, se)}``."""
    from nonequil.compare import compare_to_analytic

    r = compare_to_analytic(x, name, params)
    return {k: (v["value"], v["se"]) for k, v in r.items()}


# ============================================================================ lifecycle
def _check_out(out, make_parent=False):
    """Refuse a file or a non-empty directory at ``out``; its parent must exist (unless
    ``make_parent``: the default ``runs/``, created after every check)."""
    from nonequil.errors import InputError

    out = os.path.normpath(out)
    if os.path.isfile(out):
        raise InputError(f"--out {out} is a file; give a directory for the report")
    if os.path.isdir(out) and os.listdir(out):
        raise InputError(f"--out {out} already exists and is not empty; remove it or choose "
                         "another directory")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) and not make_parent:
        raise InputError(f"--out {out}: its parent directory {parent} does not exist")
    return out


def _check_device(device):
    from nonequil.errors import InputError

    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r}; valid: cpu, cuda")
    if device == "cuda":
        from numba import cuda

        if not cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is available (use --device cpu)")


def run_module(mod, *, quick=False, out=None, device="cpu", seed=0, quiet=False, argv=None):
    """Check the arguments, run ``mod.run(ctx)`` into ``OUT.partial``, write the report and
    rename the directory to ``OUT``; returns the report.  Prints the report path on stdout
    and one summary line on stderr (unless ``quiet``)."""
    from nonequil import __version__
    from nonequil.errors import InputError, RunError

    default = out is None
    if default:
        out = os.path.join("runs", mod.NAME + ("-quick" if quick else ""))
    out = _check_out(out, make_parent=default)
    _check_device(device)
    if default:
        os.makedirs(os.path.dirname(out), exist_ok=True)
    inv = _INVOCATION[0]
    command = " ".join(shlex.quote(a) for a in (inv if inv is not None else argv or []))
    partial = out + ".partial"
    if os.path.exists(partial):
        shutil.rmtree(partial)
    os.makedirs(partial)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    settings = {"date": date, "quick": quick, "seed": seed, "device": device,
                "nonequil": __version__, "z": Z}
    rep = Report(mod.NAME, mod.TITLE, mod.SUMMARY, command, settings)
    ctx = Context(os.path.abspath(partial), out, quick, device, seed, quiet, rep)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        mod.run(ctx)
        rep.wall_seconds = time.perf_counter() - t0
        rep.cpu_seconds = time.process_time() - c0
        rep.write(partial)
    except InputError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001
        if isinstance(e, RunError):
            raise RunError(f"experiment {mod.NAME}: {e}; partial directory kept: "
                           f"{partial}") from e
        raise RunError(f"experiment {mod.NAME} failed ({type(e).__name__}: {e}); partial "
                       f"directory kept: {partial} (rerun with --debug for details)") from e
    if os.path.isdir(out):
        os.rmdir(out)                     # empty (checked above)
    os.replace(partial, out)
    c = rep.counts()
    if not quiet:
        from nonequil.cli import _end_progress_line

        _end_progress_line()
        sys.stderr.write(f"{mod.NAME}: {c['pass']} of {c['checks']} checks pass; wall time "
                         f"{rep.wall_seconds:.1f} s; report {os.path.join(out, 'report.md')}\n")
    print(os.path.join(out, "report.md"))
    return rep


def main(name, argv=None):
    """``python -m experiments.NAME [--quick] [--out DIR] ...``: the same as
    ``nonequil experiment NAME ...`` (same flags, checks and error lines)."""
    from nonequil import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    _INVOCATION[0] = ["python", "-m", f"experiments.{name.replace('-', '_')}"] + argv
    try:
        return cli.main(["experiment", name] + argv)
    finally:
        _INVOCATION[0] = None
