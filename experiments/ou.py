"""``ou``: forward OU from a bimodal start, and the reverse chain with the exact and the
learned score, against the analytic marginals at several t.

    python -m experiments.ou [--quick] [--out DIR] [--device cpu|cuda] [--seed S] [--quiet]

Chain:

1. data: ``p_0 = 0.35 N(-2, 0.4^2) + 0.65 N(1.5, 0.5^2)`` (``nonequil dataset
   gaussian-mixture``, exact draws) -> ``data.h5``;
2. forward: ``nonequil simulate --process ou`` (exact OU step) of ``dx = -theta x dt +
   sigma dW`` (theta = 1, sigma = sqrt 2, stationary law N(0, 1)) from the data ->
   ``forward.h5`` (H5MD); every recorded frame against the exact law
   ``GaussianMixture.ou_evolve(t)`` (KS, mean and variance z-scores);
3. reverse, exact score: the VP-SDE (linear beta 0.1..20, itself an OU process with a
   time-dependent rate) reversed by Euler-Maruyama with the closed-form mixture score
   (``nonequil.score.MixtureScore``); every recorded frame at time t_k against the exact VP
   marginal ``sum_k w_k N(m(t) mu_k, m(t)^2 s_k^2 + v(t))``, the final samples against p_0;
4. reverse, learned score: ``nonequil train`` on the data, ``nonequil sample --sampler em
   --record-every`` -> ``samples_learned.h5`` (samples + H5MD trajectory); frames against the
   same marginals in the model's normalised units (the model runs the VP process on
   ``(x - mean)/std``).
"""
import math
import sys

import numpy as np

try:
    from . import _report
except ImportError:                     # run as a script
    import _report

NAME = "ou"
TITLE = "OU: forward and reverse densities against the analytic marginals"
SUMMARY = (
    "A bimodal Gaussian mixture is carried forward by an Ornstein-Uhlenbeck process "
    "(simulated, exact step) and reversed by the VP-SDE chain with the closed-form "
    "time-dependent score and with a learned score; every recorded frame is compared with the "
    "analytic marginal at its time (Sohl-Dickstein et al. 2015, Fig. 1).")

WEIGHTS = (0.35, 0.65)
MEANS = (-2.0, 1.5)
SIGMAS = (0.4, 0.5)
THETA, SIGMA = 1.0, math.sqrt(2.0)

FULL = dict(n_data=50_000, n_forward=50_000, fwd_steps=300, dt=0.01, fwd_every=60,
            n_rev=20_000, rev_steps=1000, rev_every=200, train_steps=8000, width=128,
            batch=512)
QUICK = dict(n_data=10_000, n_forward=10_000, fwd_steps=300, dt=0.01, fwd_every=60,
             n_rev=4000, rev_steps=250, rev_every=50, train_steps=1500, width=64, batch=256)
# tolerances: (full, quick)
TOL_W1 = {"exact": (0.02, 0.05), "learned": (0.05, 0.15)}
TOL_KS_LEARNED = (0.03, 0.08)
P_MIN = 1e-3          # the smallest per-frame KS p-value accepted for exact dynamics


def _mixture():
    from nonequil.analytic import GaussianMixture

    return GaussianMixture(WEIGHTS, MEANS, np.square(SIGMAS))


def _vp_marginal(base, t, shift=0.0, scale=1.0):
    """The VP marginal at t of ``(x - shift)/scale``, x ~ base (a 1-D GaussianMixture)."""
    from nonequil.analytic import GaussianMixture
    from nonequil.processes import VPSDE

    sde = VPSDE()
    m, v = float(sde.mean_coeff(t)), float(sde.variance(t))
    return GaussianMixture(base.weights, m * (base.means - shift) / scale,
                           m * m * base.covs / scale**2 + v)


def _frame_stats(x, law):
    """KS against the law, and mean/variance z-scores (SE from the sample's 4th moment)."""
    from nonequil import metrics

    x = np.asarray(x, float).ravel()
    n = x.size
    ks = metrics.ks_1samp(x, law.cdf)
    mu, var = float(law.mean()[0]), float(law.cov()[0, 0])
    m, v = x.mean(), x.var(ddof=1)
    m4 = np.mean((x - m) ** 4)
    se_m, se_v = math.sqrt(var / n), math.sqrt(max(m4 - v * v, 1e-300) / n)
    return dict(ks=ks.statistic, ks_p=ks.pvalue, mean=m, mean_exact=mu,
                z_mean=(m - mu) / se_m, var=v, var_exact=var, z_var=(v - var) / se_v)


def _forward(ctx, s, base):
    import h5py

    data, fwd = ctx.path("data.h5"), ctx.path("forward.h5")
    ctx.verb("forward OU simulation", [
        "simulate", "--process", "ou", "--set", f"theta={THETA}", "--set", "mu=0",
        "--set", f"sigma={SIGMA!r}", "--init", data, "--steps", s["fwd_steps"], "--dt",
        s["dt"], "--record-every", s["fwd_every"], "--seed", ctx.seed + 1, "--device",
        ctx.device, "--out", fwd])
    ctx.report.file("forward.h5", "H5MD trajectory of the forward OU ensemble")
    rows, frames = [], []
    with h5py.File(fwd, "r") as f:
        pos = f["particles/ensemble/position/value"]
        times = f["particles/ensemble/position/time"][()]
        for k, t in enumerate(times):
            x = pos[k][:, 0]
            law = base.ou_evolve(float(t), THETA, 0.0, SIGMA)
            rows.append(dict(t=float(t), **_frame_stats(x, law)))
            frames.append((float(t), x, law))
    return rows, frames


def _reverse_exact(ctx, s, base):
    from nonequil import samplers
    from nonequil.processes import VPSDE
    from nonequil.score import MixtureScore

    score = MixtureScore(base.weights, base.means, base.covs, VPSDE())
    with ctx.stage("reverse chain, exact score", "nonequil.samplers.sample(ExactModel("
                   f"MixtureScore), n={s['n_rev']}, sampler='em', steps={s['rev_steps']})"):
        res = samplers.sample(score, s["n_rev"], "em", s["rev_steps"], seed=ctx.seed + 2,
                              record_every=s["rev_every"])
    rows, frames = [], []
    for k, t in enumerate(res.frame_times):
        law = _vp_marginal(base, float(t))
        x = res.frames[k][:, 0]
        rows.append(dict(t=float(t), **_frame_stats(x, law)))
        frames.append((float(t), x, law))
    np.save(ctx.path("samples_exact.npy"), res.samples)
    ctx.report.file("samples_exact.npy", "final samples of the reverse chain with the exact "
                    "score (numpy)")
    return rows, frames, res.samples.ravel()


def _reverse_learned(ctx, s, base):
    import h5py

    import nonequil

    data, model, out = ctx.path("data.h5"), ctx.path("model.h5"), ctx.path("samples_learned.h5")
    ctx.verb("train the score model", [
        "train", data, "--steps", s["train_steps"], "--batch", s["batch"], "--set",
        f"width={s['width']}", "--seed", ctx.seed + 3, "--out", model])
    ctx.report.file("model.h5", "the learned score model (nonequil train)")
    ctx.verb("reverse chain, learned score", [
        "sample", model, "--n", s["n_rev"], "--sampler", "em", "--steps", s["rev_steps"],
        "--record-every", s["rev_every"], "--seed", ctx.seed + 4, "--device", ctx.device,
        "--out", out])
    ctx.report.file("samples_learned.h5", "samples and H5MD reverse trajectory of the "
                    "learned model")
    mdl = nonequil.load_model(model)
    shift, scale = float(mdl.mean[0]), float(mdl.std[0])
    rows, frames = [], []
    with h5py.File(out, "r") as f:
        pos = f["particles/ensemble/position/value"]
        times = f["particles/ensemble/position/time"][()]
        for k, t in enumerate(times):
            y = (pos[k][:, 0] - shift) / scale
            law = _vp_marginal(base, float(t), shift, scale)
            rows.append(dict(t=float(t), **_frame_stats(y, law)))
            frames.append((float(t), y, law))
        final = f["samples"][()].ravel()
    return rows, frames, final


def _figure(ctx, panels):
    plt = _report.pyplot()
    ncol = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.6 * ncol, 2.3 * len(panels)),
                             squeeze=False)
    for r, (title, frames, unit) in enumerate(panels):
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(frames):
                ax.axis("off")
                continue
            t, x, law = frames[c]
            lo, hi = np.percentile(x, [0.1, 99.9])
            pad = 0.2 * (hi - lo)
            grid = np.linspace(lo - pad, hi + pad, 300)
            ax.hist(x, bins=60, range=(lo - pad, hi + pad), density=True, color="C0",
                    alpha=0.55)
            ax.plot(grid, np.exp(law.log_prob(grid)), "k-", lw=1.2)
            ax.set_title(f"{title}\nt = {t:.3g}", fontsize=8)
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(unit, fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "ou_densities.png", "Histograms of the forward OU ensemble (top, time "
               "increasing) and of the reverse VP chain with the exact score (middle) and the "
               "learned score (bottom, normalised units), time decreasing; black: the "
               "analytic marginal at each t")


def _w1(x, law):
    from nonequil import metrics

    lo = float(np.min(law.means) - 12 * np.sqrt(np.max(law.covs)))
    hi = float(np.max(law.means) + 12 * np.sqrt(np.max(law.covs)))
    return metrics.wasserstein1_to_cdf(x, law.cdf, np.linspace(lo, hi, 20001))


def _frame_table(rep, title, rows):
    rep.table(title, ["t", "KS D", "KS p", "mean", "exact mean", "z", "var", "exact var", "z"],
              [[r["t"], r["ks"], r["ks_p"], r["mean"], r["mean_exact"], r["z_mean"],
                r["var"], r["var_exact"], r["z_var"]] for r in rows])


def run(ctx):
    s = QUICK if ctx.quick else FULL
    q = 1 if ctx.quick else 0
    rep = ctx.report
    rep.settings.update({"mixture": f"weights {WEIGHTS}, means {MEANS}, sigmas {SIGMAS}",
                         "forward OU": f"theta={THETA}, mu=0, sigma=sqrt 2, exact step",
                         "reverse": "VP-SDE, linear beta 0.1..20, Euler-Maruyama", **s})
    base = _mixture()
    lists = {k: ",".join(map(str, v)) for k, v in (("weights", WEIGHTS), ("means", MEANS),
                                                    ("sigmas", SIGMAS))}
    ctx.verb("data", ["dataset", "gaussian-mixture"] + sum(
        (["--set", f"{k}={v}"] for k, v in lists.items()), []) + [
        "--n", s["n_data"], "--seed", ctx.seed, "--out", ctx.path("data.h5")])
    rep.file("data.h5", "exact draws of the bimodal start p_0 (/samples)")

    fwd, fwd_frames = _forward(ctx, s, base)
    rev, rev_frames, final_exact = _reverse_exact(ctx, s, base)
    lrn, lrn_frames, final_learned = _reverse_learned(ctx, s, base)

    nfr = len(fwd) + len(rev)
    for key, label, rows in (("forward", "forward OU (simulated)", fwd),
                             ("reverse_exact", "reverse chain, exact score", rev)):
        zmax = max(max(abs(r["z_mean"]), abs(r["z_var"])) for r in rows)
        pmin = min(r["ks_p"] for r in rows)
        rep.check(f"{key}_max_abs_z", f"{label}: max |z| of mean and variance over "
                  f"{len(rows)} frames", zmax, None, tol=_report.Z, kind="max",
                  note="z-scores against the exact moments of each frame's marginal")
        rep.check(f"{key}_min_ks_p", f"{label}: min KS p over {len(rows)} frames", pmin,
                  tol=P_MIN / nfr, kind="min", note=f"Bonferroni: {P_MIN:g} / {nfr} frames")
        _frame_table(rep, f"{label}: frames against the analytic marginal", rows)
    w = _w1(final_exact, base)
    rep.check("reverse_exact_w1", "reverse chain, exact score: W1 of the final samples to p_0",
              w.value, w.se, tol=TOL_W1["exact"][q], kind="max",
              note="Euler-Maruyama bias O(1/steps) plus the t_eps = 1e-3 blur")
    ks_l = max(r["ks"] for r in lrn[1:])
    rep.check("reverse_learned_max_ks", "reverse chain, learned score: max KS distance over "
              "the frames t < t_max", ks_l, tol=TOL_KS_LEARNED[q], kind="max",
              note="the learned score is approximate: a distance tolerance, not a p-value")
    w = _w1(final_learned, base)
    rep.check("reverse_learned_w1", "reverse chain, learned score: W1 of the final samples to "
              "p_0", w.value, w.se, tol=TOL_W1["learned"][q], kind="max")
    _frame_table(rep, "reverse chain, learned score: frames against the analytic marginal "
                 "(normalised units)", lrn)
    if ctx.quick:
        rep.note("quick settings: tolerances are the wider quick ones (full: W1 <= "
                 f"{TOL_W1['exact'][0]} exact, {TOL_W1['learned'][0]} learned; KS distance <= "
                 f"{TOL_KS_LEARNED[0]}).")
    _figure(ctx, [("forward OU", fwd_frames, "data units"),
                  ("reverse, exact score", rev_frames, "data units"),
                  ("reverse, learned score", lrn_frames, "normalised units")])


if __name__ == "__main__":
    sys.exit(_report.main(NAME))
