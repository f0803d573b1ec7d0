r"""``jarzynski``: work distributions and free energies from nonequilibrium driving of an
overdamped harmonic trap (kT = 1, gamma = 1), started from equilibrium.

    python -m experiments.jarzynski [--quick] [--out DIR] [--device cpu|cuda] [--seed S]

Protocols (``nonequil simulate --process langevin --potential harmonic --x0 boltzmann``,
a protocol is ``--set name=start:end``, linear in the step; the work is
``W += U(x_n; p(n+1)) - U(x_n; p(n))``, ``/observables/work``):

* dragged trap: k = 1, centre 0 -> v tau (v = 1, tau = 2): W is Gaussian with
  ``<W> = gamma v^2 [tau - tau_r (1 - e^{-tau/tau_r})]``, ``var W = 2 kT <W>``
  (``nonequil.analytic.dragged_trap_work``), Delta F = 0;
* stiffness change k = 1 -> 4 (forward) and 4 -> 1 (reverse, for Crooks/BAR) over tau = 1:
  Delta F = (kT/2) log 4 (``trap_stiffness_delta_f``); ``<W>`` from
  ``stiffness_ramp_mean_work``.  The work law is not Gaussian.  Its exact law *for the
  simulated chain* follows because W is a quadratic form of a Gaussian vector: the
  Euler-Maruyama positions ``x_0..x_{N-1}`` are jointly Gaussian (x_0 ~ N(0, kT/k_0),
  ``x_{n+1} = (1 - k_n dt/gamma) x_n + sqrt(2 kT dt/gamma) xi_n``) with covariance C, and
  ``W = sum_n c_n x_n^2``, ``c_n = (k_{n+1} - k_n)/2``; so ``W = sum_i l_i chi^2_1`` with
  l_i the eigenvalues of ``L^T diag(c) L`` (C = L L^T), whose CDF is Imhof's (1961)
  integral.  The simulated work is KS-tested against it.

Estimators (``nonequil.analytic``): Jarzynski ``-kT log <e^{-W/kT}>`` for both protocols,
BAR from forward and reverse work; the bias of the Jarzynski estimator against the number n
of work samples (the mean over disjoint blocks of n, SE over blocks) against its large-n
form ``kT (e^{var W / kT^2} - 1) / (2 n)`` for Gaussian work.
"""
import math
import sys

import numpy as np

try:
    from . import _report
except ImportError:                     # run as a script
    import _report

NAME = "jarzynski"
TITLE = "Jarzynski and Crooks: work distributions and free energies of a driven trap"
SUMMARY = ("A harmonic trap is dragged, or its stiffness ramped, from equilibrium; the work "
           "histograms are compared with their exact laws, the Jarzynski and BAR free "
           "energies with the exact Delta F, and the bias of the Jarzynski estimator with its "
           "large-n form.")

KT, GAMMA = 1.0, 1.0
V, TAU_DRAG, K_DRAG = 1.0, 2.0, 1.0
K0, K1, TAU_K = 1.0, 4.0, 1.0
FULL = dict(walkers=50_000, dt=1e-3, block_sizes=(1, 2, 5, 10, 20, 50, 100, 200, 500))
QUICK = dict(walkers=10_000, dt=2e-3, block_sizes=(1, 2, 5, 10, 20, 50, 100))
TOL_DF = (0.02, 0.06)             # kT, Jarzynski and BAR Delta F
TOL_MEAN = (0.01, 0.03)           # kT, mean work
P_MIN = 1e-3                      # KS p-value bound against the exact laws


def _simulate(ctx, label, fname, sets, steps, dt, walkers, seed):
    path = ctx.path(fname)
    argv = ["simulate", "--process", "langevin", "--potential", "harmonic"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    argv += ["--set", f"kT={KT:g}", "--set", f"gamma={GAMMA:g}", "--x0", "boltzmann",
             "--walkers", walkers, "--steps", steps, "--dt", dt, "--record-every", steps,
             "--seed", seed, "--device", ctx.device, "--out", path]
    ctx.verb(label, argv)
    import h5py

    with h5py.File(path, "r") as f:
        return f["observables/work/value"][-1].astype(float)


def _ramp_eigenvalues(k0, k1, steps, dt):
    """l_i of W = sum_i l_i chi^2_1 for the Euler-Maruyama chain of the linear ramp."""
    k = k0 + (k1 - k0) * np.arange(steps + 1) / steps
    a = 1.0 - k[:-1] * dt / GAMMA
    var = np.empty(steps)
    var[0] = KT / k0
    for n in range(steps - 1):
        var[n + 1] = a[n] ** 2 * var[n] + 2.0 * KT * dt / GAMMA
    la = np.concatenate([[0.0], np.cumsum(np.log(np.abs(a[:-1])))])
    # C[m, n] = var[min] * prod_{j=min}^{max-1} a_j
    lo = np.minimum.outer(np.arange(steps), np.arange(steps))
    hi = np.maximum.outer(np.arange(steps), np.arange(steps))
    C = var[lo] * np.exp(la[hi] - la[lo])
    L = np.linalg.cholesky(C)
    c = 0.5 * np.diff(k)
    lam = np.linalg.eigvalsh(L.T @ (c[:, None] * L))
    return lam[np.abs(lam) > 1e-14 * np.abs(lam).max()]


def _imhof_cdf(ws, lam):
    """P(sum_i l_i chi^2_1 <= w) for each w in ``ws`` (l_i > 0) by Imhof's integral
    ``1/2 - (1/pi) int_0^inf sin(theta(u)) / (u rho(u)) du``, ``theta = sum_i arctan(l_i u)/2
    - w u / 2``, ``rho = prod_i (1 + l_i^2 u^2)^(1/4)``, by the trapezoid rule on a grid
    that resolves the oscillation (du <= 0.2 / max w) up to where ``u rho(u) > e^16`` (the
    tail beyond is below ~1e-6)."""
    ws = np.asarray(ws, float)
    lam = np.asarray(lam, float)

    def log_urho(u):
        return np.log(u) + 0.25 * np.log1p(np.square(np.multiply.outer(u, lam))).sum(-1)

    u_max = 1.0
    while log_urho(np.array([u_max]))[0] < 16.0:
        u_max *= 2.0
    du = min(0.05, 0.2 / max(float(ws.max()), 1e-3))
    u = np.linspace(du * 1e-3, u_max, int(u_max / du) + 2)
    ul = np.multiply.outer(u, lam)
    half_theta = 0.5 * np.arctan(ul).sum(-1)
    inv = np.exp(-log_urho(u))
    out = np.empty(ws.size)
    for i, w in enumerate(ws):
        out[i] = 0.5 - np.trapezoid(np.sin(half_theta - 0.5 * w * u) * inv, u) / math.pi
    return out


def _exact_cdf(lam, w_max):
    """A vectorised CDF, tabulated by Imhof's integral and interpolated (monotone)."""
    g = np.concatenate([np.linspace(0.0, 0.2, 41)[:-1], np.linspace(0.2, w_max, 400)])
    F = np.maximum.accumulate(np.clip(_imhof_cdf(g, lam), 0.0, 1.0))
    return g, F, lambda x: np.interp(x, g, F, left=0.0, right=1.0)


def _bias_table(w, ns, df_exact):
    from scipy.special import logsumexp

    rows = []
    for n in ns:
        B = w.size // n
        blocks = -w[:B * n].reshape(B, n) / KT
        est = -KT * (logsumexp(blocks, axis=1) - math.log(n))
        rows.append((n, B, float(est.mean() - df_exact),
                     float(est.std(ddof=1) / math.sqrt(B)) if B > 1 else math.nan))
    return rows


def run(ctx):
    from nonequil import analytic, metrics

    s = QUICK if ctx.quick else FULL
    q = 1 if ctx.quick else 0
    rep = ctx.report
    rep.settings.update({"kT": KT, "gamma": GAMMA, "integrator": "overdamped Euler-Maruyama",
                         "dragged trap": f"k = {K_DRAG:g}, centre 0 -> {V * TAU_DRAG:g} over "
                         f"tau = {TAU_DRAG:g}", "stiffness": f"k = {K0:g} -> {K1:g} and back "
                         f"over tau = {TAU_K:g}", **s})
    dt, M = s["dt"], s["walkers"]
    n_drag, n_k = int(round(TAU_DRAG / dt)), int(round(TAU_K / dt))
    w_drag = _simulate(ctx, "dragged trap", "drag.h5",
                       {"k": K_DRAG, "center": f"0:{V * TAU_DRAG:g}"}, n_drag, dt, M, ctx.seed)
    w_fwd = _simulate(ctx, "stiffness 1 -> 4", "stiffness_forward.h5", {"k": f"{K0:g}:{K1:g}"},
                      n_k, dt, M, ctx.seed + 1)
    w_rev = _simulate(ctx, "stiffness 4 -> 1", "stiffness_reverse.h5", {"k": f"{K1:g}:{K0:g}"},
                      n_k, dt, M, ctx.seed + 2)
    for f, what in (("drag.h5", "dragged trap"), ("stiffness_forward.h5", "stiffness 1 -> 4"),
                    ("stiffness_reverse.h5", "stiffness 4 -> 1")):
        rep.file(f, f"H5MD: first and last frames and the work, {what}")

    # dragged trap: Gaussian law
    mean_d, var_d = analytic.dragged_trap_work(V, TAU_DRAG, K_DRAG, GAMMA, KT)
    m = metrics.mean_estimate(w_drag)
    rep.check("drag_mean_work", "dragged trap: mean work (kT)", m.value, m.se, reference=mean_d,
              tol=TOL_MEAN[q], kind="abs")
    from scipy.stats import norm

    ks = metrics.ks_1samp(w_drag, lambda x: norm.cdf(x, mean_d, math.sqrt(var_d)))
    rep.check("drag_ks_p", "dragged trap: KS p-value against the exact Gaussian", ks.pvalue,
              tol=P_MIN, kind="min", note=f"KS distance {ks.statistic:.3g}")
    jd = analytic.jarzynski_free_energy(w_drag, KT)
    rep.check("drag_jarzynski", "dragged trap: Jarzynski Delta F (kT)", jd.value, jd.se,
              reference=0.0, tol=TOL_DF[q], kind="abs")

    # stiffness change: exact law of the simulated chain
    with ctx.stage("exact work law of the ramp", "W = sum_i l_i chi^2_1 (EM covariance), "
                   "Imhof's integral"):
        lam = _ramp_eigenvalues(K0, K1, n_k, dt)
        g, F, cdf = _exact_cdf(lam, float(np.quantile(w_fwd, 0.9999)) * 1.5)
    mean_k = analytic.stiffness_ramp_mean_work(K0, K1, TAU_K, GAMMA, KT)
    m = metrics.mean_estimate(w_fwd)
    rep.check("stiffness_mean_work", "stiffness 1 -> 4: mean work (kT)", m.value, m.se,
              reference=mean_k, tol=TOL_MEAN[q], kind="abs",
              note=f"the chain's own exact mean sum(l_i) = {lam.sum():.5f}")
    ks = metrics.ks_1samp(w_fwd, cdf)
    rep.check("stiffness_ks_p", "stiffness 1 -> 4: KS p-value against the exact "
              "(generalised chi^2) law", ks.pvalue, tol=P_MIN, kind="min",
              note=f"KS distance {ks.statistic:.3g}; {lam.size} eigenvalues")
    df_k = analytic.trap_stiffness_delta_f(K0, K1, KT)
    jf = analytic.jarzynski_free_energy(w_fwd, KT)
    jr = analytic.jarzynski_free_energy(w_rev, KT)
    bar = analytic.bar_free_energy(w_fwd, w_rev, KT)
    rep.check("stiffness_jarzynski_forward", "stiffness 1 -> 4: Jarzynski Delta F (kT)",
              jf.value, jf.se, reference=df_k, tol=TOL_DF[q], kind="abs")
    rep.check("stiffness_jarzynski_reverse", "stiffness 4 -> 1: -(Jarzynski Delta F) (kT)",
              -jr.value, jr.se, reference=df_k, tol=TOL_DF[q], kind="abs")
    rep.check("stiffness_bar", "stiffness: BAR Delta F from forward + reverse work (kT)",
              bar.value, bar.se, reference=df_k, tol=TOL_DF[q], kind="abs")
    rep.value("delta_f_exact", "exact Delta F of the stiffness change (kT)", df_k)

    # bias of the Jarzynski estimator against n (dragged trap, Gaussian work)
    rows = _bias_table(w_drag, s["block_sizes"], 0.0)
    asym = [KT * math.expm1(var_d / KT**2) / (2 * n) for n, *_ in rows]
    rep.table("Jarzynski estimator bias against the number of work samples n (dragged trap)",
              ["n", "blocks", "bias (kT)", "SE", "large-n form (kT)"],
              [[n, B, b, e, a] for (n, B, b, e), a in zip(rows, asym)])
    n_big, B_big, b_big, e_big = rows[-1]
    rep.check("bias_large_n", f"Jarzynski bias at n = {n_big} (kT)", b_big, e_big,
              reference=asym[-1], kind="zscore", note="against kT (e^{var W} - 1)/(2n), the "
              "leading term for Gaussian work")
    if ctx.quick:
        rep.note(f"quick settings: tolerances {TOL_DF[1]} kT on Delta F and {TOL_MEAN[1]} kT on "
                 f"the mean work (full: {TOL_DF[0]}, {TOL_MEAN[0]}).")
    _figure(ctx, w_drag, mean_d, var_d, w_fwd, w_rev, g, F, rows, asym)


def _figure(ctx, w_drag, mean_d, var_d, w_fwd, w_rev, g, F, rows, asym):
    plt = _report.pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    x = np.linspace(w_drag.min(), w_drag.max(), 300)
    ax[0].hist(w_drag, bins=80, density=True, alpha=0.55)
    ax[0].plot(x, np.exp(-(x - mean_d) ** 2 / (2 * var_d)) / math.sqrt(2 * math.pi * var_d),
               "k-", label="exact Gaussian")
    ax[0].set_title("dragged trap: work")
    ax[0].set_xlabel("W (kT)")
    ax[0].legend()
    ax[1].hist(w_fwd, bins=100, range=(0, np.quantile(w_fwd, 0.999)), density=True,
               alpha=0.55, label="1 -> 4")
    gm = 0.5 * (g[1:] + g[:-1])
    ax[1].plot(gm, np.diff(F) / np.diff(g), "k-", label="exact law (Imhof)")
    ax[1].hist(-w_rev, bins=100, range=(0, np.quantile(w_fwd, 0.999)), density=True,
               alpha=0.4, label="-W, 4 -> 1")
    ax[1].axvline(0.5 * math.log(K1 / K0), color="C3", ls=":", label="Delta F")
    ax[1].set_xlim(0, np.quantile(w_fwd, 0.999))
    ax[1].set_title("stiffness change: work (Crooks crossing at Delta F)")
    ax[1].set_xlabel("W (kT)")
    ax[1].legend(fontsize=8)
    n = np.array([r[0] for r in rows])
    ax[2].errorbar(n, [r[2] for r in rows], yerr=[_report.Z * r[3] if math.isfinite(r[3]) else 0
                                                  for r in rows], fmt="o",
                   label=f"measured (bars {_report.Z:g} SE)")
    ax[2].plot(n, asym, "k--", label="kT (e^{var W} - 1) / 2n")
    ax[2].set_xscale("log")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("n work samples")
    ax[2].set_ylabel("bias of the Jarzynski Delta F (kT)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "jarzynski.png", "Work histograms against their exact laws (left: dragged "
               "trap, Gaussian; middle: stiffness change, the generalised chi^2 law of the "
               "chain, with the reverse work mirrored) and the bias of the Jarzynski "
               "estimator against the number of samples (right)")


if __name__ == "__main__":
    sys.exit(_report.main(NAME))
