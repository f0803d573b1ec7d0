"""``nonequil sweep SPEC.toml [--scheduler ADDRESS | --cluster local:N] --out DIR``.

A grid of runs of one verb, as Dask tasks.  The spec (TOML)::

    verb = "simulate"                  # simulate | dataset | train | sample | any verb with --out
    args = ["--process", "ou", "--walkers", "4000", "--steps", "200", "--dt", "0.01",
            "--x0", "1"]
    observables = ["mean_x", "var_x"]  # gathered into the summary table (see OBSERVABLES)

    [grid]                             # the Cartesian product, in this order
    theta = [0.5, 1.0, 2.0]            # a plain key is --set theta=VALUE
    sigma = [0.5, 1.0]
    "--seed" = [1, 2]                  # a key starting with -- is that flag

Zipped axes: the keys of a ``[zip]`` table vary together (point j of the group takes the j-th
value of every key; the lists must have one length), for parameters that depend on each
other, such as the step count on a barrier height::

    [zip]                              # one axis: (a, steps) = (2, 2e4), (3, 6e4), (4, 2e5)
    a = [2.0, 3.0, 4.0]
    "--steps" = [20000, 60000, 200000]

Several groups are written ``[[zip]]``, one table each.  The sweep is the Cartesian product
of its axes: one per ``[grid]`` key, in order, then one per zip group, in order (the last
axis varies fastest); a spec needs a ``[grid]``, a ``[zip]`` or both, and a key may appear
in only one of them.  ``write_spec`` writes a spec file from Python (the ``kramers``
experiment runs its barrier heights as such a sweep).

Point i writes ``DIR/p{i:03d}-{hash}.h5``, where the hash covers the verb, the arguments and
the point's values, so a rerun of the same spec finds its finished points and skips them (a
point whose run was cut off resumes from its checkpoint where the verb has ``--resume``).
A failing point is reported with its error in the summary and does not stop the others.
``DIR/summary.csv`` and ``DIR/summary.json`` hold one row per point: its values, status,
error, seconds and each observable with its standard error (``NAME`` and ``NAME_se``);
summary.json also holds the spec's path (its file name when the spec lies in DIR, so the
directory can be moved), verb, args, grid, zip groups and observables.

``run_sweep(spec, out_dir, client)`` runs the points as Dask tasks on ``client``; with
``client=None`` it runs them one after another in this process (the same task function, no
Dask needed).

Only argparse-level imports at module level; Dask, h5py and numpy are imported when a sweep
runs.
"""
import argparse
import hashlib
import itertools
import json
import os

STATUSES = ("ran", "resumed", "skipped", "failed")
EXAMPLE = """\
    verb = "simulate"
    args = ["--process", "langevin", "--potential", "double-well", "--walkers", "2000",
            "--dt", "1e-3", "--x0", "-1", "--absorb", "x>=1"]
    observables = ["absorbed_fraction", "mfpt_exponential_tail"]

    [grid]                  # the Cartesian product, in this order
    "--seed" = [1, 2]       # a key starting with -- is that flag

    [zip]                   # varied together (equal lengths), crossed with [grid]
    a = [1.0, 2.0, 3.0]     # a plain key is --set a=VALUE (barrier height a)
    "--steps" = [5000, 20000, 60000]

    # 6 points: (seed, a, steps) = (1, 1.0, 5000), (1, 2.0, 20000), ..., (2, 3.0, 60000).
    # Several zip groups: one [[zip]] table each.
"""
SKIP_VERBS = ("sweep", "inspect")


def add(sub, base, run):
    p = sub.add_parser(
        "sweep", parents=[base], help="run a grid of runs of a verb on Dask",
        description="Run a grid of runs of one verb (a TOML spec: verb, args, [grid] of "
        "--set parameters or --flags, [zip] of keys that vary together, observables) as "
        "Dask tasks, one HDF5 output per point in --out DIR, and gather the observables into "
        "DIR/summary.csv and DIR/summary.json.  The points are the Cartesian product of the "
        "[grid] keys and the [zip] groups; the keys of one [zip] table (say a barrier height "
        "and its step count) take their j-th values together and need lists of one length "
        "(several groups: [[zip]] tables).  A rerun skips finished points; a failing point "
        "is reported and does not stop the others.  Observables: "
        + ", ".join(sorted(OBSERVABLES)) + ".  "
        "Needs Dask: pip install 'nonequil[dist]'.")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "example SPEC.toml:\n\n" + EXAMPLE
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep specification")
    p.add_argument("--out", metavar="DIR", required=True, help="output directory (created "
                   "if missing; its parent must exist)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--cluster", metavar="local:N", help="start a local Dask cluster of N "
                   "worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. "
                   "tcp://10.0.0.1:8786")
    p.set_defaults(handler=_cmd_sweep, needs_out=False)


# ====================================================================== observables
def _mean_se(v):
    import numpy as np

    v = np.asarray(v, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), se


def _var_se(v):
    """Sample variance and its asymptotic SE sqrt((m4 - s^4) / n)."""
    import numpy as np

    v = np.asarray(v, dtype=np.float64).ravel()
    if v.size < 2:
        return float("nan"), float("nan")
    s2 = float(v.var(ddof=1))
    m4 = float(np.mean((v - v.mean()) ** 4))
    return s2, float(np.sqrt(max(m4 - s2 * s2, 0.0) / v.size))


def _final_x(f):
    """First coordinate of each walker's final state, or of each sample."""
    if "particles/ensemble/position/value" in f:
        return f["particles/ensemble/position/value"][-1][:, 0]
    if "samples" in f:
        s = f["samples"][()]
        return s.reshape(s.shape[0], -1)[:, 0]
    raise KeyError("no /particles/ensemble/position or /samples")


def _last(f, name):
    key = f"observables/{name}/value"
    if key not in f:
        raise KeyError(f"no /{key} (was the run recording {name}?)")
    return f[key][-1]


def _abs_magnetization(f):
    import numpy as np

    s = f["samples"][()]
    return _mean_se(np.abs(s.reshape(s.shape[0], -1).mean(axis=1)))


def _jarzynski(f):
    """-kT log <exp(-W/kT)>; SE by the delta method."""
    import numpy as np

    w = np.asarray(_last(f, "work"), dtype=np.float64)
    kT = float(f["parameters"].attrs.get("kT", 1.0))
    a = -w / kT
    c = a.max()
    e = np.exp(a - c)
    m = e.mean()
    return float(-kT * (c + np.log(m))), float(kT * e.std(ddof=1) / (np.sqrt(e.size) * m))


def _absorbed(f):
    import numpy as np

    t = _last(f, "first_passage_time")
    p = float(np.mean(np.isfinite(t)))
    return p, float(np.sqrt(p * (1 - p) / t.size))


def _mfpt_tail(f):
    """MFPT with the walkers not absorbed by the last frame's time T counted as exponential
    tails: ``(sum of the passage times + n_c T) / n_absorbed`` (the MLE of an exponential
    passage law censored at T; the plain mean when n_c = 0), SE ``MFPT / sqrt(n)``."""
    import math

    import numpy as np

    t = _last(f, "first_passage_time")
    T = float(f["observables/first_passage_time/time"][-1])
    absorbed = np.isfinite(t)
    na = int(absorbed.sum())
    if na == 0:
        return float("nan"), float("nan")
    tau = (float(t[absorbed].sum()) + (t.size - na) * T) / na
    return tau, tau / math.sqrt(t.size)


def _final_loss(f):
    loss = f["model/loss"][()]
    return _mean_se(loss[-min(200, loss.size):])


OBSERVABLES = {
    "mean_x": ("mean of the first coordinate of the final state (or of the samples)",
               lambda f: _mean_se(_final_x(f))),
    "var_x": ("variance of the first coordinate of the final state (or of the samples)",
              lambda f: _var_se(_final_x(f))),
    "mean_energy": ("mean energy at the last frame", lambda f: _mean_se(_last(f, "energy"))),
    "mean_work": ("mean cumulative work at the last frame", lambda f: _mean_se(_last(f, "work"))),
    "jarzynski_free_energy": ("-kT log <exp(-W/kT)> over the walkers", _jarzynski),
    "absorbed_fraction": ("fraction of walkers absorbed by --absorb", _absorbed),
    "mean_first_passage_time": ("mean first-passage time of the absorbed walkers",
                                lambda f: _mean_se(_last(f, "first_passage_time"))),
    "mfpt_exponential_tail": ("mean first-passage time, the walkers not absorbed by the end "
                              "T counted as exponential tails: (sum t + n_c T) / n_absorbed",
                              _mfpt_tail),
    "abs_magnetization": ("mean |sample mean| of a sample set (Ising: <|m|>)",
                          _abs_magnetization),
    "final_loss": ("a model's mean training loss over its last 200 steps (naive SE)",
                   _final_loss),
}


def measure(path, names):
    """{name: (value, se)} for the observables ``names`` of the file ``path``.

    An observable that does not apply to the file gives (nan, nan) and a note."""
    import h5py

    vals, notes = {}, []
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return {}, f"{path} cannot be read ({e})"
    with f:
        for n in names:
            try:
                vals[n] = OBSERVABLES[n][1](f)
            except KeyError as e:
                vals[n] = (float("nan"), float("nan"))
                notes.append(f"{n}: {e.args[0] if e.args else e}")
    return vals, "; ".join(notes)


# ====================================================================== the spec
class Spec:
    """A validated sweep specification: verb, args, grid [(key, values)], zips (groups of
    [(key, values)] of one length), observables."""

    def __init__(self, path):
        import tomllib

        from .errors import InputError

        self.path = path
        if not os.path.exists(path):
            raise InputError(f"sweep spec {path} does not exist; give a TOML file (see "
                             "nonequil sweep --help)")
        try:
            with open(path, "rb") as fh:
                d = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"sweep spec {path} is not valid TOML: {e}") from None
        unknown = sorted(set(d) - {"verb", "args", "grid", "zip", "observables"})
        if unknown:
            raise InputError(f"sweep spec {path}: unknown key(s) {', '.join(unknown)}; valid: "
                             "verb, args, grid, zip, observables")
        self.verb = d.get("verb")
        self.args = d.get("args", [])
        if not isinstance(self.args, list) or not all(isinstance(a, (str, int, float))
                                                      for a in self.args):
            raise InputError(f"sweep spec {path}: args must be a list of strings, e.g. "
                             "args = [\"--walkers\", \"1000\"]")
        self.args = [str(a) for a in self.args]
        if "--out" in self.args or any(a.startswith("--out=") for a in self.args):
            raise InputError(f"sweep spec {path}: args must not hold --out (each point's "
                             "output goes into the sweep's --out DIR)")
        self.grid = self._axes(d.get("grid"), "grid") if "grid" in d else []
        self.zips = self._zips(d.get("zip"))
        if not self.grid and not self.zips:
            raise InputError(f"sweep spec {path}: needs a [grid] table of key = [values], "
                             "e.g. theta = [0.5, 1.0] (or a [zip] table of keys that vary "
                             "together)")
        self._check_unique()
        self.observables = d.get("observables", [])
        if not isinstance(self.observables, list):
            raise InputError(f"sweep spec {path}: observables must be a list of names, e.g. "
                             "observables = [\"mean_x\"]")
        bad = ", ".join(str(n) for n in self.observables if n not in OBSERVABLES)
        if bad:
            raise InputError(f"sweep spec {path}: unknown observable(s) {bad}; valid: "
                             f"{', '.join(sorted(OBSERVABLES))}")
        self.parser = self._verb_parser()

    def _axes(self, table, name):
        """[(key, values)] of a [grid] or [zip] table, each a non-empty list of scalars."""
        from .errors import InputError

        if not isinstance(table, dict) or not table:
            raise InputError(f"sweep spec {self.path}: needs a [{name}] table of key = "
                             "[values], e.g. theta = [0.5, 1.0]")
        out = []
        for k, v in table.items():
            if not isinstance(v, list) or not v or not all(
                    isinstance(t, (str, int, float)) and not isinstance(t, bool) for t in v):
                raise InputError(f"sweep spec {self.path}: {name} key {k!r} needs a non-empty "
                                 "list of numbers or strings")
            out.append((k, v))
        return out

    def _zips(self, z):
        """The zip groups: ``[zip]`` (one table) or ``[[zip]]`` (a list of tables)."""
        from .errors import InputError

        if z is None:
            return []
        tables = [z] if isinstance(z, dict) else z
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict)
                                                                 for t in tables):
            raise InputError(f"sweep spec {self.path}: zip must be a [zip] table of key = "
                             "[values] (or [[zip]] tables, one per group)")
        groups = []
        for j, t in enumerate(tables):
            g = self._axes(t, "zip")
            lengths = {len(v) for _, v in g}
            if len(lengths) > 1:
                which = "[zip]" if isinstance(z, dict) else f"[[zip]] group {j}"
                raise InputError(f"sweep spec {self.path}: the keys of {which} vary together "
                                 "and need lists of one length; got " + ", ".join(
                                     f"{k} ({len(v)} values)" for k, v in g))
            groups.append(g)
        return groups

    def _check_unique(self):
        from .errors import InputError

        seen = set()
        for k, _ in self.grid + [kv for g in self.zips for kv in g]:
            if k in seen:
                raise InputError(f"sweep spec {self.path}: key {k!r} appears more than once "
                                 "in [grid] and [zip]; give each key in one place")
            seen.add(k)

    def _verb_parser(self):
        import argparse

        from .cli import build_parser
        from .errors import InputError

        sub = next(a for a in build_parser()._actions
                   if isinstance(a, argparse._SubParsersAction))
        valid = sorted(v for v, p in sub.choices.items()
                       if v not in SKIP_VERBS and "--out" in p._option_string_actions)
        if self.verb not in valid:
            raise InputError(f"sweep spec {self.path}: verb {self.verb!r} cannot be swept; "
                             f"valid: {', '.join(valid)}")
        return sub.choices[self.verb]

    @property
    def resumable(self):
        return "--resume" in self.parser._option_string_actions

    def axes(self):
        """The sweep's axes, crossed in order: one per [grid] key, then one per zip group;
        each axis a list of {key: value}."""
        ax = [[{k: x} for x in v] for k, v in self.grid]
        for g in self.zips:
            ax.append([{k: v[j] for k, v in g} for j in range(len(g[0][1]))])
        return ax

    def points(self):
        """[{key: value}] of every point: the Cartesian product of the axes (the last
        varies fastest)."""
        return [{k: v for d in combo for k, v in d.items()}
                for combo in itertools.product(*self.axes())]

    def argv(self, point, out):
        """The verb's command line for one point."""
        av = [self.verb] + self.args
        for k, v in point.items():
            av += [k, str(v)] if k.startswith("--") else ["--set", f"{k}={v}"]
        return av + ["--out", out, "--quiet"]

    def file_name(self, i, point):
        blob = json.dumps([self.verb, self.args, point], sort_keys=True).encode()
        return f"p{i:03d}-{hashlib.sha256(blob).hexdigest()[:10]}.h5"

    def check_points(self, out_dir):
        """Parse every point's command line now, so that a typo fails before any work."""
        from .cli import CLIError, _fix_negative_values
        from .errors import InputError

        for i, pt in enumerate(self.points()):
            av = _fix_negative_values(self.argv(pt, os.path.join(out_dir, "x.h5")))
            try:
                self.parser.parse_args(av[1:])
            except CLIError as e:
                raise InputError(f"sweep spec {self.path}: point {i} {pt}: {e}") from None


def _toml_value(v):
    import math

    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise TypeError(f"a sweep spec value must be a number or a string, not {v!r}")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "nan" if v != v else "inf" if v > 0 else "-inf"
    return json.dumps(v)            # a JSON string is a TOML basic string


def _toml_key(k):
    return k if k[:1].isalpha() and k.replace("_", "").isalnum() else json.dumps(k)


def _toml_axes(table, keys):
    return [f"[{table}]"] + [f"{_toml_key(k)} = [{', '.join(_toml_value(x) for x in v)}]"
                             for k, v in keys]


def write_spec(path, verb, args, grid=(), zips=(), observables=()):
    """Write a sweep spec (TOML) that ``Spec`` reads back.

    Parameters
    ----------
    path : str
        The file to write.
    verb : str
        The verb of every point.
    args : list of str or number
        The verb's arguments common to every point (no ``--out``).
    grid : list of (key, values)
        The ``[grid]`` axes (a plain key is ``--set key=VALUE``, a ``--key`` that flag).
    zips : list of list of (key, values)
        Zip groups: the keys of one group vary together (equal lengths).
    observables : list of str
        Names of ``OBSERVABLES`` gathered into the summary.
    """
    lines = [f"verb = {_toml_value(verb)}",
             f"args = [{', '.join(_toml_value(str(a)) for a in args)}]",
             f"observables = [{', '.join(_toml_value(n) for n in observables)}]"]
    if grid:
        lines += [""] + _toml_axes("grid", grid)
    for g in zips:
        lines += [""] + _toml_axes("[zip]" if len(zips) > 1 else "zip", g)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


# ====================================================================== running
def _one_line(e):
    from .cli import CLIError
    from .errors import InputError, RunError

    msg = str(e) if isinstance(e, (CLIError, InputError, RunError, OSError)) else \
        f"{type(e).__name__}: {e}"
    return msg.replace("\n", " ")


def run_point(argv, out, resumable):
    """Dask task: run one point's verb in this worker; never raises for a failing point.

    Returns {"status": ran | resumed | failed, "error", "seconds", "threads"}.
    """
    import time

    import shlex

    from . import _context, cli
    from .distributed import task_threads

    threads = task_threads()
    t0 = time.perf_counter()
    argv = list(argv)
    status = "ran"
    if resumable and any(os.path.exists(out + ".partial" + s) for s in (".ckpt", ".ckpt.prev")):
        argv.append("--resume")
        status = "resumed"
    outer, _context.COMMAND_LINE = _context.COMMAND_LINE, shlex.join(["nonequil", *argv])
    try:                                        # (provenance records the point's own argv)
        a = cli.build_parser().parse_args(cli._fix_negative_values(argv))
        a.handler(a)
        err = ""
    except Exception as e:  # noqa: BLE001  reported in the summary, the sweep goes on
        status, err = "failed", _one_line(e)
    finally:
        _context.COMMAND_LINE = outer
    return {"status": status, "error": err, "seconds": time.perf_counter() - t0,
            "threads": threads}


def prepare_sweep(spec_path, out_dir):
    """Every check of a sweep before any work; returns the Spec."""
    from .errors import InputError

    spec = Spec(spec_path)
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise InputError(f"--out {out_dir}: directory {parent} does not exist")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} exists and is not a directory")
    spec.check_points(out_dir)
    return spec


def run_sweep(spec, out_dir, client=None, callback=None):
    """Run the points of ``spec`` (a Spec or a path); write the summary.

    The points run as Dask tasks on ``client``, or, with ``client=None``, one after another
    in this process (the same task function).  Returns the summary rows (dicts).
    ``callback(info)`` gets ``{"done", "total", "point", "status"}`` after each point.
    """
    from .store import OutputLock

    if not isinstance(spec, Spec):
        spec = prepare_sweep(spec, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lock = OutputLock(os.path.join(out_dir, "sweep.lock"), out_dir)
    try:
        pts = spec.points()
        rows = []
        for i, pt in enumerate(pts):
            name = spec.file_name(i, pt)
            rows.append({"point": i, "file": name, **{k.lstrip("-"): v for k, v in pt.items()},
                         "status": "skipped", "error": "", "seconds": 0.0})
        todo = [i for i, r in enumerate(rows)
                if not os.path.exists(os.path.join(out_dir, r["file"]))]
        calls = {i: (spec.argv(pts[i], os.path.join(out_dir, rows[i]["file"])),
                     os.path.join(out_dir, rows[i]["file"]), spec.resumable) for i in todo}
        done = len(pts) - len(todo)
        if client is None:
            _run_here(calls, rows, done, len(pts), callback)
        else:
            _gather(calls, rows, done, len(pts), callback, client)
        _observe(spec, out_dir, rows)
        write_summary(out_dir, spec, rows)
    finally:
        lock.release(remove=True)
    return rows


def _finish(rows, i, r, done, total, callback):
    rows[i].update({k: r[k] for k in ("status", "error", "seconds")})
    if callback:
        callback({"done": done, "total": total, "point": i, "status": r["status"]})


def _run_here(calls, rows, done, total, callback):
    for i, call in calls.items():
        done += 1
        _finish(rows, i, run_point(*call), done, total, callback)


def _gather(calls, rows, done, total, callback, client):
    from distributed import as_completed

    from .distributed import _submit_opts

    opts = _submit_opts(client)
    futs = {client.submit(run_point, *call, pure=False, **opts): i for i, call in calls.items()}
    try:
        for fut in as_completed(list(futs)):
            try:
                r = fut.result()
            except Exception as e:  # noqa: BLE001  e.g. KilledWorker: report, go on
                r = {"status": "failed", "error": _one_line(e), "seconds": float("nan")}
            done += 1
            _finish(rows, futs[fut], r, done, total, callback)
    except BaseException:
        client.cancel(list(futs))
        raise


def _observe(spec, out_dir, rows):
    for r in rows:
        vals, note = {}, ""
        if r["status"] != "failed":
            vals, note = measure(os.path.join(out_dir, r["file"]), spec.observables)
        for n in spec.observables:
            v, se = vals.get(n, (float("nan"), float("nan")))
            r[n], r[n + "_se"] = v, se
        if note:
            r["error"] = (r["error"] + "; " if r["error"] else "") + note


def write_summary(out_dir, spec, rows):
    """DIR/summary.json and DIR/summary.csv (written to temporary files, then renamed)."""
    import csv
    import math

    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    spec_path = os.path.abspath(spec.path)
    if os.path.dirname(spec_path) == os.path.abspath(out_dir):
        spec_path = os.path.basename(spec_path)     # inside DIR: the directory can be moved
    doc = {"spec": spec_path, "verb": spec.verb, "args": spec.args,
           "grid": {k: v for k, v in spec.grid},
           "zip": [{k: v for k, v in g} for g in spec.zips], "observables": spec.observables,
           "points": [{k: clean(v) for k, v in r.items()} for r in rows]}
    path = os.path.join(out_dir, "summary.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(path + ".tmp", path)
    cols = list(rows[0]) if rows else []
    path = os.path.join(out_dir, "summary.csv")
    with open(path + ".tmp", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if clean(v) is None else repr(v) if isinstance(v, float) else v)
                        for k, v in r.items()})
    os.replace(path + ".tmp", path)


# ====================================================================== the verb
def _sweep_line(info):
    return f"point {info['point']} {info['status']}; {info['done']}/{info['total']} done"


def _cmd_sweep(a):
    from . import distributed as dist
    from .cli import Progress

    dist.check_target(a.scheduler, a.cluster)
    spec = prepare_sweep(a.spec, a.out)
    prog = Progress(a.quiet, "sweep", _sweep_line, lambda i: i["done"] >= i["total"])
    with dist.connect(a.scheduler, a.cluster) as client:
        rows = run_sweep(spec, a.out, client, callback=prog)
    count = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    prog.note(f"wrote {os.path.join(a.out, 'summary.csv')} and summary.json: "
              + ", ".join(f"{n} {s}" for s, n in count.items() if n))
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        prog.warn(f"point {r['point']} ({r['file']}) failed: {r['error']}")
    if failed:
        from .errors import RunError

        raise RunError(f"{len(failed)} of {len(rows)} sweep points failed (see "
                       f"{os.path.join(a.out, 'summary.csv')}); fix them and rerun: finished "
                       "points are skipped")
