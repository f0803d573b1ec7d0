"""``kramers``: escape from a double well over a range of barrier heights: the mean
first-passage time from simulated trajectories against the exact integral and Kramers'
formula.

    python -m experiments.kramers [--quick] [--out DIR] [--device cpu|cuda] [--seed S]
                                  [--cluster local:N | --scheduler ADDRESS]

For each barrier height ``a`` (``U = a (x^2 - 1)^2``, barrier a kT at kT = 1, gamma = 1),
``nonequil simulate --process langevin --potential double-well`` (overdamped
Euler-Maruyama) runs walkers from the left minimum x = -1 with an absorbing boundary at the
right minimum, ``--absorb x>=1``, for about 8 exact MFPTs (H5MD; the first-passage times are
``/observables/first_passage_time``).  The barrier heights run as one ``nonequil sweep``
(``DIR/sweep.toml``: ``a``, ``--steps``, ``--record-every`` and ``--seed`` zipped, point i
with seed S + i): one HDF5 file per point, ``DIR/p{i:03d}-{hash}.h5``, and the sweep's
``DIR/summary.csv`` and ``summary.json``.  The points run in this process by default, or as
Dask tasks with ``--cluster local:N`` / ``--scheduler ADDRESS``; the files, and so the
MFPTs, are bitwise the same either way.  The MFPT estimate is the exponential-tail MLE
``(sum of the passage times + n_c T) / n_absorbed`` (n_c walkers not absorbed by the end T;
the plain mean when n_c = 0), SE ``MFPT / sqrt(n)``.  References:
``nonequil.analytic.mfpt_1d`` (the exact double integral, reflecting wall far left) and
``1 / double_well_kramers_rate`` (Kramers' high-barrier formula, relative corrections
O(kT / barrier)).  Euler-Maruyama biases the MFPT by O(dt U'') (dt U'' <= 0.04 here).
"""
import contextlib
import math
import shlex
import sys

import numpy as np

try:
    from . import _report
except ImportError:                     # run as a script
    import _report

NAME = "kramers"
TITLE = "Kramers escape: MFPT from simulated trajectories against the exact integral"
SUMMARY = ("Overdamped walkers escape a symmetric double well over barriers of several "
           "heights; the simulated mean first-passage time is compared with the exact "
           "double-integral formula and with Kramers' high-barrier rate.")

KT, GAMMA = 1.0, 1.0
FULL = dict(barriers=(2.0, 3.0, 4.0, 5.0), walkers=2000, dt=1e-3, horizon=8.0)
QUICK = dict(barriers=(1.5, 2.5, 3.5), walkers=1000, dt=2e-3, horizon=8.0)
TOL_REL = (0.05, 0.15)             # |MFPT_sim / MFPT_exact - 1|


def _exact(a):
    from nonequil.analytic import double_well_kramers_rate, mfpt_1d

    U = lambda x: a * (x * x - 1.0) ** 2            # noqa: E731
    return mfpt_1d(U, KT, GAMMA, -1.0, 1.0, -3.0), 1.0 / double_well_kramers_rate(a, 0.0, KT,
                                                                                  GAMMA)


def _mfpt(fpt, T):
    n = fpt.size
    absorbed = np.isfinite(fpt)
    na, nc = int(absorbed.sum()), int(n - absorbed.sum())
    if na == 0:
        return math.nan, math.nan, nc
    tau = (float(fpt[absorbed].sum()) + nc * T) / na
    return tau, tau / math.sqrt(n), nc


# ====================================================================== the sweep
_DASK = {"scheduler": None, "cluster": None}


@contextlib.contextmanager
def dask_target(scheduler=None, cluster=None):
    """Inside this block the barrier sweep runs as Dask tasks: on the scheduler at
    ``scheduler`` (an address) or on a local cluster of ``cluster`` ('local:N') worker
    processes; both None: in this process.  Checked on entry (an InputError)."""
    if scheduler or cluster:
        from nonequil.distributed import check_target

        check_target(scheduler, cluster)
    old = dict(_DASK)
    _DASK.update(scheduler=scheduler, cluster=cluster)
    try:
        yield
    finally:
        _DASK.update(old)


def _target():
    """(flag, value) of the Dask target set by ``dask_target`` (None, None: in-process)."""
    for flag in ("scheduler", "cluster"):
        if _DASK[flag]:
            return f"--{flag}", _DASK[flag]
    return None, None


def _write_spec(ctx, s, steps):
    """DIR/sweep.toml: one ``simulate`` point per barrier, (a, steps, seed) zipped."""
    from nonequil.cmd_sweep import write_spec

    n = len(s["barriers"])
    args = ["--process", "langevin", "--potential", "double-well", "--set", "b=0", "--set",
            f"kT={KT:g}", "--set", f"gamma={GAMMA:g}", "--x0", "-1", "--walkers",
            s["walkers"], "--absorb", "x>=1", "--dt", s["dt"], "--device", ctx.device]
    path = ctx.path("sweep.toml")
    write_spec(path, "simulate", args, zips=[[
        ("a", [float(a) for a in s["barriers"]]), ("--steps", steps),
        ("--record-every", steps), ("--seed", [ctx.seed + i for i in range(n)])]],
        observables=["absorbed_fraction", "mfpt_exponential_tail"])
    return path


def _run_sweep(ctx, spec_path):
    """Run the sweep into the report directory (in this process or on Dask); returns its
    summary rows (one per barrier, in order) and records the sweep and each point as
    steps of the report.  A failed point is a RunError."""
    from nonequil import distributed as dist
    from nonequil.cmd_sweep import prepare_sweep, run_sweep
    from nonequil.errors import RunError

    spec = prepare_sweep(spec_path, ctx.out)
    flag, where = _target()

    def progress(info):
        a = spec.points()[info["point"]]["a"]
        ctx.log(f"{NAME}: escape, barrier {a:g} kT {info['status']} "
                f"({info['done']}/{info['total']})")

    shown = ctx.shown(spec_path)
    cmd = f"nonequil sweep {shown} {flag} {where} --out {ctx.final}" if flag else \
        f"nonequil.cmd_sweep.run_sweep({shown!r}, {ctx.final!r}, client=None)  # in-process"
    with ctx.stage(f"escape sweep, {len(spec.points())} barriers", cmd):
        if flag:
            with dist.connect(**{flag[2:]: where}) as client:
                rows = run_sweep(spec, ctx.out, client, callback=progress)
        else:
            rows = run_sweep(spec, ctx.out, None, callback=progress)
    for r in rows:
        if r["status"] == "failed":
            raise RunError(f"sweep point {r['point']} (barrier {r['a']:g} kT) failed: "
                           f"{r['error']}")
        argv = spec.argv(spec.points()[r["point"]], ctx.path(r["file"]))
        ctx.report.step(f"escape, barrier {r['a']:g} kT", "nonequil " + " ".join(
            shlex.quote(ctx.shown(a)) for a in argv), r["seconds"])
    return rows


def run(ctx):
    import h5py

    s = QUICK if ctx.quick else FULL
    q = 1 if ctx.quick else 0
    rep = ctx.report
    flag, where = _target()
    if flag and f"{flag} " not in rep.command:
        rep.command += f" {flag} {shlex.quote(where)}"
    rep.settings.update({"potential": "U = a (x^2 - 1)^2 (barrier a)", "kT": KT,
                         "gamma": GAMMA, "start": "x0 = -1", "absorb": "x >= 1",
                         "integrator": "overdamped Euler-Maruyama", **s,
                         "sweep": f"Dask {flag} {where}" if flag else "in-process"})
    refs = [_exact(a) for a in s["barriers"]]
    steps = [int(math.ceil(s["horizon"] * exact / s["dt"])) for exact, _ in refs]
    points = _run_sweep(ctx, _write_spec(ctx, s, steps))
    rep.file("sweep.toml", "the sweep spec: one simulate point per barrier, a, --steps, "
             "--record-every and --seed zipped")
    rep.file("summary.csv", "the sweep's summary table: per point its values, status, "
             "seconds, absorbed fraction and MFPT (exponential tail) with SEs")
    rep.file("summary.json", "the same summary as JSON, with the spec")
    rows = []
    for (exact, kramers), st, p in zip(refs, steps, points):
        a = p["a"]
        rep.file(p["file"], f"H5MD trajectory (first and last frame) and first-passage "
                 f"times, barrier {a:g} kT (sweep point {p['point']})")
        with h5py.File(ctx.path(p["file"]), "r") as f:
            fpt = f["observables/first_passage_time/value"][-1]
        tau, se, nc = _mfpt(fpt, st * s["dt"])
        rows.append((a, tau, se, exact, kramers, nc, st))
        rep.check(f"mfpt_a{a:g}", f"MFPT / exact, barrier {a:g} kT", tau / exact, se / exact,
                  reference=1.0, tol=TOL_REL[q], kind="abs",
                  note=f"MFPT {tau:.4g} ± {se:.2g} vs exact {exact:.4g} (time units); "
                  f"{nc} of {s['walkers']} walkers not absorbed")
        rep.value(f"kramers_over_exact_a{a:g}", f"Kramers 1/k over the exact MFPT, barrier "
                  f"{a:g} kT", kramers / exact, note="-> 1 as the barrier grows")
    rep.table("MFPT against the exact integral and Kramers' formula (time units)",
              ["barrier (kT)", "MFPT sim", "SE", "exact", "1/k Kramers", "sim / exact",
               "not absorbed", "steps"],
              [[a, t, e, x, k, t / x, nc, st] for a, t, e, x, k, nc, st in rows])
    if ctx.quick:
        rep.note(f"quick settings: tolerance {TOL_REL[1]} on MFPT/exact (full: {TOL_REL[0]}).")
    plt = _report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    a = np.array([r[0] for r in rows])
    ax.errorbar(a, [1 / r[1] for r in rows], yerr=[_report.Z * r[2] / r[1] ** 2 for r in rows],
                fmt="o", label=f"simulation (bars: {_report.Z:g} SE)")
    ag = np.linspace(a.min() - 0.3, a.max() + 0.3, 100)
    ax.semilogy(ag, [1 / _exact(x)[0] for x in ag], "k-", label="exact 1/MFPT")
    ax.semilogy(ag, [1 / _exact(x)[1] for x in ag], "C3--", label="Kramers rate")
    ax.set_xlabel("barrier height (kT)")
    ax.set_ylabel("escape rate (1/time)")
    ax.legend()
    fig.tight_layout()
    ctx.figure(fig, "kramers.png", "Escape rate 1/MFPT against the barrier height (log "
               "scale): simulation, the exact integral and Kramers' formula")


def main(argv=None):
    """``python -m experiments.kramers [experiment flags] [--cluster local:N | --scheduler
    ADDRESS]``: the experiment flags as for ``nonequil experiment kramers``; the Dask flags
    run the barrier sweep on a cluster.  Returns the exit status."""
    from nonequil.cli import CLIError, _Parser
    from nonequil.cmd_experiment import import_experiment
    from nonequil.errors import InputError

    argv = list(sys.argv[1:] if argv is None else argv)
    p = _Parser(prog="python -m experiments.kramers", add_help=False)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cluster", metavar="local:N", help="run the barrier sweep on a local "
                   "Dask cluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run the barrier sweep on the "
                   "workers of a running Dask scheduler")
    try:
        a, rest = p.parse_known_args(argv)
        if "-h" in rest or "--help" in rest:
            sys.stdout.write("python -m experiments.kramers also takes (the barrier sweep "
                             "on Dask):\n" + p.format_help().split("options:\n", 1)[-1] + "\n")
            return _report.main(NAME, rest)
        # the module that ``nonequil experiment`` runs (not ``__main__`` under ``python -m``)
        with import_experiment(NAME).dask_target(a.scheduler, a.cluster):
            return _report.main(NAME, rest)
    except (CLIError, InputError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
