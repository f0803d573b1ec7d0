"""``kramers``: escape from a double well over a range of barrier heights: the mean
first-passage time from simulated trajectories against the exact integral and Kramers'
formula.

    python -m experiments.kramers [--quick] [--out DIR] [--device cpu|cuda] [--seed S]

For each barrier height ``a`` (``U = a (x^2 - 1)^2``, barrier a kT at kT = 1, gamma = 1),
``nonequil simulate --process langevin --potential double-well`` (overdamped
Euler-Maruyama) runs walkers from the left minimum x = -1 with an absorbing boundary at the
right minimum, ``--absorb x>=1``, for about 8 exact MFPTs -> ``escape_aA.h5`` (H5MD; the
first-passage times are ``/observables/first_passage_time``).  The MFPT estimate is the
exponential-tail MLE ``(sum of the passage times + n_c T) / n_absorbed`` (n_c walkers not
absorbed by the end T; the plain mean when n_c = 0), SE ``MFPT / sqrt(n)``.  References:
``nonequil.analytic.mfpt_1d`` (the exact double integral, reflecting wall far left) and
``1 / double_well_kramers_rate`` (Kramers' high-barrier formula, relative corrections
O(kT / barrier)).  Euler-Maruyama biases the MFPT by O(dt U'') (dt U'' <= 0.04 here).
"""
import math
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


def run(ctx):
    import h5py

    s = QUICK if ctx.quick else FULL
    q = 1 if ctx.quick else 0
    rep = ctx.report
    rep.settings.update({"potential": "U = a (x^2 - 1)^2 (barrier a)", "kT": KT,
                         "gamma": GAMMA, "start": "x0 = -1", "absorb": "x >= 1",
                         "integrator": "overdamped Euler-Maruyama", **s})
    rows = []
    for i, a in enumerate(s["barriers"]):
        exact, kramers = _exact(a)
        steps = int(math.ceil(s["horizon"] * exact / s["dt"]))
        path = ctx.path(f"escape_a{a:g}.h5")
        ctx.verb(f"escape, barrier {a:g} kT", [
            "simulate", "--process", "langevin", "--potential", "double-well", "--set",
            f"a={a:g}", "--set", "b=0", "--set", f"kT={KT:g}", "--set", f"gamma={GAMMA:g}",
            "--x0", "-1", "--walkers", s["walkers"], "--absorb", "x>=1", "--steps", steps,
            "--dt", s["dt"], "--record-every", steps, "--seed", ctx.seed + i, "--device",
            ctx.device, "--out", path])
        rep.file(f"escape_a{a:g}.h5", f"H5MD trajectory (first and last frame) and "
                 f"first-passage times, barrier {a:g} kT")
        with h5py.File(path, "r") as f:
            fpt = f["observables/first_passage_time/value"][-1]
        tau, se, nc = _mfpt(fpt, steps * s["dt"])
        rows.append((a, tau, se, exact, kramers, nc, steps))
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


if __name__ == "__main__":
    sys.exit(_report.main(NAME))
