r"""``gan-optimum``: the seed theory of GANs (Goodfellow et al. 2014) checked numerically.

    python -m experiments.gan_optimum [--quick] [--out DIR] [--device cpu|cuda] [--seed S]

Real data: p_r = N(0, 1) (``nonequil dataset gaussian-mixture`` with one component, exact
draws).  Two parts, both in data units and nats:

* **The optimal discriminator (Proposition 1, Theorem 1).**  A fixed, known generator
  G(h) = MU_G + SD_G h, h ~ N(0, 1) (an affine GAN generator with no hidden layer, so
  p_g = N(MU_G, SD_G^2)), and the discriminator trained alone against it
  (``nonequil.gan_train.train_discriminator``).  Checks: D(x) against
  ``D*(x) = p_r / (p_r + p_g)`` (``gan_theory.optimal_discriminator``) on a grid of 21
  points in [-2.5, 2.5] (max error) and as an RMS error weighted by m = (p_r + p_g)/2 on a
  fine grid; the value ``L(G, D) = E_r log D + E_g log(1 - D)`` on fresh samples
  (``gan_theory.value_estimate``, with its SE) against ``L(G, D*) = 2 JS - 2 log 2``, JS
  by quadrature (``gan_theory.optimal_value``).  L(G, D) <= L(G, D*) for every D, and the
  gap is second order in D - D*, so the tolerance is z SE plus a small allowance for the
  residual sub-optimality of a finite network trained on finite data.
* **The global optimum.**  A GAN with the product defaults (``nonequil gan``) trained on
  the same data; at p_g = p_r, D = 1/2 everywhere and L = -2 log 2.  Checks (from
  ``gan_theory.equilibrium_report`` on held-out real draws and fresh generated samples):
  mean D on real and on generated samples against 1/2; L + log 4 against 0; the mean and
  std of ``nonequil sample GAN.h5`` against 0 and 1.

Figure: D(x) of the trained-alone discriminator against D*(x) (and p_r, p_g); D(x) of the
equilibrium GAN against 1/2 with the histogram of its samples against p_r.
"""
import math
import sys

import numpy as np

try:
    from . import _report
except ImportError:                     # run as a script
    import _report

NAME = "gan-optimum"
TITLE = "GAN optimum: the optimal discriminator D*, the value 2 JS - 2 log 2, and D = 1/2"
SUMMARY = ("A discriminator is trained alone against a fixed affine generator with a known "
           "density and compared with D* = p_r / (p_r + p_g) and with L(G, D*) = 2 JS - 2 log 2 "
           "(JS by quadrature); a GAN with the default settings is trained on the same 1-D "
           "Gaussian and compared with the global optimum D = 1/2, L = -2 log 2.")

MU_G, SD_G = 0.5, 1.5           # the fixed generator: p_g = N(MU_G, SD_G^2)
REAL = {"weights": (1.0,), "means": (0.0,), "sigmas": (1.0,)}
LOG4 = math.log(4.0)

QUICK = dict(n_data=20000, d_steps=1200, d_batch=512, n_eval=50000, gan_steps=1500,
             n_samples=20000)
FULL = dict(n_data=50000, d_steps=3000, d_batch=1024, n_eval=200000, gan_steps=4000,
            n_samples=100000)
# tolerances (full, quick)
TOL = {"dmax": (0.03, 0.06), "drms": (0.01, 0.02), "value_extra": (0.003, 0.006),
       "d_half": (0.02, 0.03), "opt_extra": (0.003, 0.01), "moment": (0.02, 0.05)}


def _npdf(x, mu=0.0, sd=1.0):
    x = np.asarray(x, np.float64)
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))


def _p_r(x):
    return _npdf(x)


def _p_g(x):
    return _npdf(x, MU_G, SD_G)


def _real(n, seed):
    """``n`` exact draws of p_r (Philox, ``nonequil.datasets``), shape [n]."""
    from nonequil import datasets

    return datasets.generate("gaussian-mixture", n, REAL, seed=seed).samples.ravel()


def _fixed_generator_model(cfg):
    """A GANModel whose generator is G(h) = MU_G + SD_G h (no hidden layer, no
    normalisation); its discriminator is trained by ``train_discriminator``."""
    from kernels.mlp_cpu import mlp_layout, n_params
    from nonequil.gan import GANModel

    P = GANModel.layer_sizes(cfg, 1)[1]
    return GANModel(cfg, (), [0.0], [1.0], np.array([SD_G, MU_G]),
                    np.zeros(n_params(mlp_layout(P))))


def _optimal_d(ctx, s, q):
    """Part 1: D alone against the fixed generator; returns the model and the grids."""
    from nonequil import gan_theory as th
    from nonequil.gan import GANConfig
    from nonequil.gan_train import train_discriminator

    rep = ctx.report
    cfg = GANConfig(latent_dim=1, g_depth=0, normalize="none", steps=s["d_steps"],
                    batch=s["d_batch"], seed=ctx.seed + 2)
    m = _fixed_generator_model(cfg)
    with ctx.stage("train D alone against G(h) = 0.5 + 1.5 h", "nonequil.gan_train."
                   f"train_discriminator(data.h5, model, steps={s['d_steps']}, "
                   f"batch={s['d_batch']})"):
        train_discriminator(ctx.path("data.h5"), m, cfg)
    xs = np.linspace(-2.5, 2.5, 21)
    err = np.abs(m.discriminator(xs) - th.optimal_discriminator(_p_r(xs), _p_g(xs)))
    fine = np.linspace(-8.0, 8.0, 4001)
    wm = 0.5 * (_p_r(fine) + _p_g(fine))
    e2 = (m.discriminator(fine) - th.optimal_discriminator(_p_r(fine), _p_g(fine))) ** 2
    rms = math.sqrt(np.sum(wm * e2) / np.sum(wm))
    rep.check("d_max_error", "D alone: max |D - D*| on 21 points in [-2.5, 2.5]",
              float(err.max()), tol=TOL["dmax"][q], kind="max",
              note=f"at x = {xs[int(np.argmax(err))]:g}; the counting error of the "
              f"{s['n_data']} real samples alone moves D* by ~0.015 in the tails")
    rep.check("d_rms_error", "D alone: RMS |D - D*| weighted by (p_r + p_g)/2", rms,
              tol=TOL["drms"][q], kind="max")
    fake = m.sample(s["n_eval"], seed=ctx.seed + 3).ravel()
    L, se = th.value_estimate(m, _real(s["n_eval"], ctx.seed + 10), fake)
    js = th.js_divergence(_p_r, _p_g, -40.0, 40.0)
    Lopt = th.optimal_value(_p_r, _p_g, -40.0, 40.0)
    extra = TOL["value_extra"][q]
    rep.check("value_vs_js", "D alone: L(G, D) against 2 JS - 2 log 2 (nats)", L, se,
              reference=Lopt, tol=ctx_tol(se, extra), kind="abs",
              note=f"L on {s['n_eval']} fresh real + {s['n_eval']} generated samples; tolerance "
              f"= 5 SE + {extra:g} (the allowance for D's residual sub-optimality: L(G, D) <= "
              f"L(G, D*) to second order in D - D*); JS by quadrature = {js:.5f} nats")
    rep.check("generator_mean", "fixed generator: mean of G(h) (exactly 0.5)",
              float(fake.mean()), SD_G / math.sqrt(fake.size), reference=MU_G, kind="zscore")
    rep.value("js_quadrature", "JS(N(0,1) || N(0.5, 1.5^2)) by quadrature (nats)", js)
    rep.value("js_estimate", "JS estimate (L + log 4)/2 of the trained D (nats)",
              0.5 * (L + LOG4), 0.5 * se)
    tail = m.logs["js"][-max(1, s["d_steps"] // 10):]
    rep.value("js_logged_tail", "mean logged mini-batch JS over the last 10% of steps",
              float(tail.mean()), float(tail.std(ddof=1) / math.sqrt(tail.size)))
    return m, xs, err


def ctx_tol(se, extra, z=_report.Z):
    """z SE + extra: the tolerance of a value check with a stated model allowance."""
    return z * se + extra


def _equilibrium(ctx, s, q):
    """Part 2: the defaults GAN at its global optimum; returns the model and its samples."""
    import h5py

    from nonequil import gan_theory as th
    from nonequil.gan import load

    rep = ctx.report
    gan, out = ctx.path("gan.h5"), ctx.path("gan_samples.h5")
    ctx.verb("train the GAN (defaults)", ["gan", ctx.path("data.h5"), "--steps",
                                          s["gan_steps"], "--seed", ctx.seed + 4, "--out", gan])
    ctx.verb("generate with the GAN", ["sample", gan, "--n", s["n_samples"], "--seed",
                                       ctx.seed + 5, "--out", out])
    rep.file("gan.h5", "the GAN trained with the product defaults (nonequil gan)")
    rep.file("gan_samples.h5", "GAN samples (nonequil sample)")
    with h5py.File(out, "r") as f:
        x = f["samples"][()].ravel()
    m = load(gan)
    with ctx.stage("equilibrium report", "nonequil.gan_theory.equilibrium_report(model, "
                   f"held-out real, n={s['n_eval']})"):
        r = th.equilibrium_report(m, _real(s["n_eval"], ctx.seed + 11), n=s["n_eval"],
                                  seed=ctx.seed + 6)
    tol = TOL["d_half"][q]
    for key, who in (("d_real", "held-out real"), ("d_fake", "generated")):
        rep.check(f"equilibrium_{key}", f"GAN: mean D on {who} samples (optimum 1/2)",
                  r[key]["value"], r[key]["se"], reference=0.5, tol=tol, kind="abs")
    v = r["value_minus_opt"]
    extra = TOL["opt_extra"][q]
    rep.check("equilibrium_value", "GAN: L + 2 log 2 (nats; optimum 0)", v["value"], v["se"],
              reference=0.0, tol=ctx_tol(v["se"], extra), kind="abs",
              note=f"L = {r['value']['value']:.5f} against -2 log 2 = {-LOG4:.5f}; tolerance "
              f"= 5 SE + {extra:g} (the trained pair is near, not at, the optimum)")
    rep.value("equilibrium_js", "GAN: JS estimate (L + log 4)/2 (nats)", r["js"]["value"],
              r["js"]["se"])
    n = x.size
    mtol = TOL["moment"][q]
    rep.check("gan_mean", "GAN samples: mean (data 0)", float(x.mean()),
              math.sqrt(1.0 / s["n_data"] + 1.0 / n), reference=0.0,
              tol=mtol, kind="abs", note="SE combines the data's and the samples' "
              "sampling errors")
    rep.check("gan_std", "GAN samples: std (data 1)", float(x.std()),
              math.sqrt(0.5 / s["n_data"] + 0.5 / n), reference=1.0, tol=mtol, kind="abs")
    return m, x


def _figure(ctx, m_alone, m_gan, x):
    from nonequil import gan_theory as th

    plt = _report.pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    g = np.linspace(-5.0, 6.0, 600)
    ax[0].plot(g, th.optimal_discriminator(_p_r(g), _p_g(g)), "k-", lw=2,
               label="D*(x) = p_r/(p_r+p_g)")
    ax[0].plot(g, m_alone.discriminator(g), "C3--", lw=1.5, label="D(x), trained alone")
    ax[0].plot(g, _p_r(g), "C0:", lw=1, label="p_r = N(0, 1)")
    ax[0].plot(g, _p_g(g), "C1:", lw=1, label=f"p_g = N({MU_G:g}, {SD_G:g}²)")
    ax[0].set_xlabel("x")
    ax[0].set_ylabel("D(x), density")
    ax[0].set_title("optimal discriminator against a fixed generator")
    ax[0].legend(fontsize=8)
    g2 = np.linspace(-4.0, 4.0, 600)
    ax[1].hist(x, bins=100, range=(-4, 4), density=True, alpha=0.5, color="C2",
               label=f"GAN samples (n = {x.size})")
    ax[1].plot(g2, _p_r(g2), "C0-", lw=1, label="p_r = N(0, 1)")
    ax[1].plot(g2, m_gan.discriminator(g2), "C3-", lw=1.5, label="D(x) of the trained GAN")
    ax[1].axhline(0.5, color="k", ls="--", lw=1, label="D = 1/2")
    ax[1].set_xlabel("x")
    ax[1].set_title("the GAN at its global optimum")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "gan_optimum.png", "Left: the discriminator trained alone against the "
               "fixed generator G(h) = 0.5 + 1.5 h, against D* = p_r / (p_r + p_g).  Right: "
               "the default GAN trained on N(0, 1): its samples and D(x) against 1/2.")


def run(ctx):
    s = QUICK if ctx.quick else FULL
    q = 1 if ctx.quick else 0
    rep = ctx.report
    rep.settings.update({"p_r": "N(0, 1)", "fixed generator": f"G(h) = {MU_G:g} + {SD_G:g} h, "
                         f"h ~ N(0, 1)", **s})
    ctx.verb("data", ["dataset", "gaussian-mixture", "--set", "weights=1", "--set", "means=0",
                      "--set", "sigmas=1", "--n", s["n_data"], "--seed", ctx.seed,
                      "--out", ctx.path("data.h5")])
    rep.file("data.h5", "exact N(0, 1) draws, /samples")
    m_alone, _, _ = _optimal_d(ctx, s, q)
    m_gan, x = _equilibrium(ctx, s, q)
    if ctx.quick:
        rep.note("quick settings (fewer data, shorter training): the tolerances are the wider "
                 "quick ones; the full run uses max |D - D*| <= 0.03, RMS <= 0.01, |L - L*| <= "
                 "5 SE + 0.003, |D - 1/2| <= 0.02, |L + 2 log 2| <= 5 SE + 0.003.")
    _figure(ctx, m_alone, m_gan, x)


if __name__ == "__main__":
    sys.exit(_report.main(NAME))
