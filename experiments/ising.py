r"""``ising``: the 2-D Ising model (J = kB = 1, L x L periodic) below, at and above Tc:
Monte Carlo data against Kaufman's exact finite lattice, and generative models of the
spin configurations (the binomial bit-flip diffusion chain of Sohl-Dickstein et al. 2015
against the GAN baseline).

    python -m experiments.ising [--quick] [--out DIR] [--device cpu|cuda] [--seed S]

Per temperature T (full: L = 16, T in {1.8, 2.269, 3.0}; quick: L = 8, T in {1.8, 3.0}):

1. data: ``nonequil dataset ising --method wolff`` (cluster updates spaced by the measured
   autocorrelation time, each sample globally flipped with probability 1/2);
2. the mean energy per spin of the data against Kaufman's exact value for the L x L torus
   (``nonequil.analytic.ising_kaufman``) within z SE (z = 5; SE from the integrated
   autocorrelation time, ``nonequil.compare.compare_to_analytic``);
3. ``nonequil train --process binomial`` (the reverse bit-flip chain, an MLP predicting the
   bit probabilities: a dense one, T = 100 steps, and a local one, ``patch`` x ``patch``
   neighbourhoods, T = ``local_T`` steps: 200 in full, see the notes at FULL for why) and
   ``nonequil sample --sampler binomial``; the mean energy per spin of the generated
   configurations against Kaufman's value: within 2 % away from Tc (the issue's
   full-settings target; the quick settings use 10 %), reported (not checked) at Tc;
4. ``nonequil gan`` + ``nonequil sample`` on the same data: the same figures, as values,
   with the GAN's error beside diffusion's;
5. |m| distributions: the mean |m| of data, diffusion and GAN, with Onsager's infinite-lattice
   spontaneous magnetisation (and energy) as the asymptotes (finite-L values differ from them,
   most near Tc), and the two-sample KS distance of each model's energy and |m| to the data's.

Figures: sample configurations (data, diffusion, GAN at every T); energy histograms.
"""
import math
import sys

import numpy as np

try:
    from . import _report
except ImportError:                     # run as a script
    import _report

NAME = "ising"
TITLE = "2-D Ising: Monte Carlo vs Kaufman's exact energy; binomial diffusion vs GAN"
SUMMARY = ("Wolff Monte Carlo data of the L x L periodic Ising model below, at and above Tc "
           "are checked against Kaufman's exact finite-lattice energy; a binomial bit-flip "
           "diffusion chain and a GAN are trained on them, and the energy and |m| "
           "distributions of their samples are compared with the data, Kaufman and Onsager.")

TC = 2.0 / math.log(1.0 + math.sqrt(2.0))
# quick: fewer data (1500), samples (600) and GAN steps (400) than the first quick settings
# (2000, 1000, 800), which took 57 s under load.  Measured in one process on the 2-core
# machine: 8.5 CPU-s against 11.7 (wall 40 s against 74 s at a load average of ~6).  The 800
# training steps stay: 600 left the T = 1.8 diffusion check failing (-1.53 against -1.86).
# Two binomial-chain models per temperature: "diffusion", one dense MLP over all L^2 bits
# with the per-bit skip logit (logit_skip, the default), and "local", one MLP shared by all
# sites on the site's patch x patch periodic neighbourhood plus the mean spin (patch=k, a
# convolution; float32).  Measured at L = 16 (6000 steps): dense -1.82 at T = 1.8 but
# ~-0.58 at T = 3 (it cannot represent the short-range correlations of the disordered
# phase).  The local network's settings (L = 16, T = 3.0, Kaufman -0.8177; 1000-2000
# samples, SE ~0.004 / ~0.003; width 96, depth 2, batch 64 configurations):
#   patch 5, 8000 steps, chain T = 100: -0.7855 (+3.9 %);  patch 9: -0.7966 (+2.6 %);
#   patch 11: -0.7976 (+2.5 %);  patch 9, 16000 steps: -0.8042 +- 0.0027 (+1.65 %);
#   patch 9, 16000 steps, chain T = 200: -0.8067 +- 0.0026 (+1.35 %; the full setting).
# The full setting at T = 1.8: -1.8498 +- 0.0018 against Kaufman -1.8593 (+0.51 %; patch 5,
# 8000 steps, T = 100 gave -1.815, +2.4 %).  Each local model: ~650 CPU-s of training and
# ~100 CPU-s for 2000 samples (T = 200) on the 2-core machine.
# Why: (1) the receptive field.  The exact reverse step needs the posterior magnetisation
# E[s_0,i | s_t] of the Ising model in the field atanh(r_t) s_t (nonequil.ising_exact); at
# high noise it is the linear response sum_j <s_i s_j> h_t s_t,j, and at T = 3 a 5 x 5
# patch holds only 54 % of sum_j <s_0 s_j> (9 x 9: 80 %, 11 x 11: 88 %; from the data).
# Against heat-bath posterior magnetisations (experiments/ising_denoiser_check.py, 16
# configurations x 32 replicas x 300 sweeps) the patch-5 network's nearest-neighbour
# correlation of m is 3 % low at t = 60 and 8 % low at t = 80 (RMS error of m 0.05-0.06),
# patch 9 1 % and 2 % (RMS 0.03-0.04): an under-confident, too disordered reverse step.
# (2) the chain: each reverse step draws the bits independently given x_t, exact only as
# T -> inf; with the EXACT marginals on the 4 x 4 torus at T = 3 the samples are too
# disordered by 0.69 % (T = 100) and 0.29 % (T = 200), +- 0.18 %
# (experiments/ising_exact_chain.py), so the local chain runs T = 200 steps in full.
QUICK = dict(L=8, temps=(1.8, 3.0), n_data=1500, train_steps=800, width=64, batch=256,
             n_samples=600, gan_steps=400, patch=3, local_steps=800, local_width=32,
             local_batch=32, local_T=100)
FULL = dict(L=16, temps=(1.8, 2.269, 3.0), n_data=10000, train_steps=6000, width=128,
            batch=256, n_samples=5000, gan_steps=3000, patch=9, local_steps=16000,
            local_width=96, local_batch=64, local_T=200)
MODELS = ("diffusion", "local")          # the two binomial-chain models
SOURCES = ("data",) + MODELS + ("gan",)
TOL_E = (0.02, 0.10)             # relative energy tolerance of the generated samples (full, quick)


def _tag(T):
    return f"T{T:g}".replace(".", "p")


def _compare(x, L, T):
    """compare_to_analytic(spins, 'ising'): {key: (value, se)}."""
    from nonequil.compare import compare_to_analytic

    r = compare_to_analytic(np.asarray(x), "ising", {"L": L, "T": T})
    return {k: (v["value"], v["se"]) for k, v in r.items()}


def _series(x):
    """Energy and |m| per spin of configurations [n, L, L] (``metrics`` conventions)."""
    s = np.asarray(x, np.float64)
    e = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).mean((1, 2))
    return e, np.abs(s.mean((1, 2)))


def _load(path):
    import h5py

    with h5py.File(path, "r") as f:
        return f["samples"][()]


def _one_temperature(ctx, s, q, T):
    """Data, both models and their comparison at temperature T; returns the series."""
    from scipy.stats import ks_2samp

    rep, L, tag = ctx.report, s["L"], _tag(T)
    data, model, samples = (ctx.path(f"data_{tag}.h5"), ctx.path(f"model_{tag}.h5"),
                            ctx.path(f"samples_{tag}.h5"))
    gan, gan_s = ctx.path(f"gan_{tag}.h5"), ctx.path(f"gan_samples_{tag}.h5")
    ctx.verb(f"data T={T:g}", ["dataset", "ising", "--set", f"L={L}", "--set", f"T={T:g}",
                               "--method", "wolff", "--n", s["n_data"], "--seed", ctx.seed,
                               "--out", data])
    ctx.verb(f"train the binomial chain T={T:g}", [
        "train", data, "--process", "binomial", "--steps", s["train_steps"], "--batch",
        s["batch"], "--set", f"width={s['width']}", "--seed", ctx.seed + 1, "--out", model])
    ctx.verb(f"generate (reverse bit-flip chain) T={T:g}", [
        "sample", model, "--n", s["n_samples"], "--sampler", "binomial", "--seed",
        ctx.seed + 2, "--device", ctx.device, "--out", samples])
    local, local_s = ctx.path(f"local_{tag}.h5"), ctx.path(f"local_samples_{tag}.h5")
    ctx.verb(f"train the local binomial chain T={T:g}", [
        "train", data, "--process", "binomial", "--steps", s["local_steps"], "--batch",
        s["local_batch"], "--set", f"patch={s['patch']}", "--set", f"width={s['local_width']}",
        "--set", "depth=2", "--set", "dtype=float32", "--set", f"T={s['local_T']}", "--seed",
        ctx.seed + 1, "--out", local])
    ctx.verb(f"generate with the local chain T={T:g}", [
        "sample", local, "--n", s["n_samples"], "--sampler", "binomial", "--seed",
        ctx.seed + 2, "--device", ctx.device, "--out", local_s])
    ctx.verb(f"train the GAN T={T:g}", ["gan", data, "--steps", s["gan_steps"], "--seed",
                                        ctx.seed + 4, "--out", gan])
    ctx.verb(f"generate with the GAN T={T:g}", ["sample", gan, "--n", s["n_samples"],
                                                "--seed", ctx.seed + 5, "--out", gan_s])
    for f, what in ((data, "Wolff Monte Carlo spins /samples [N, L, L] int8"),
                    (model, "binomial-chain model (dense MLP)"),
                    (samples, "reverse-chain samples (dense MLP)"),
                    (local, f"binomial-chain model (local, patch {s['patch']})"),
                    (local_s, "reverse-chain samples (local)"),
                    (gan, "GAN baseline"), (gan_s, "GAN samples")):
        rep.file(f.rsplit("/", 1)[1], f"{what}, T = {T:g}")
    x = {"data": _load(data), "diffusion": _load(samples), "local": _load(local_s),
         "gan": _load(gan_s)}
    with ctx.stage(f"compare T={T:g}", "nonequil.compare.compare_to_analytic(spins, 'ising', "
                   f"L={L}, T={T:g}) for data, both diffusion models and GAN"):
        m = {k: _compare(v, L, T) for k, v in x.items()}
        ser = {k: _series(v) for k, v in x.items()}
    uk = m["data"]["energy_per_spin_exact"][0]
    uo, mo = m["data"]["energy_per_spin_onsager"][0], m["data"][
        "abs_magnetization_per_spin_onsager"][0]
    ed = m["data"]["energy_per_spin"]
    rep.check(f"mc_energy_{tag}", f"T={T:g}: MC energy per spin vs Kaufman (L={L})", ed[0],
              ed[1], reference=uk, kind="zscore",
              note=f"tau_int = {m['data']['energy_tau_int'][0]:.2f} samples; Onsager's L = inf "
              f"value {uo:.4f}")
    errs = {}
    for who in MODELS + ("gan",):
        e = m[who]["energy_per_spin"]
        rel = (e[0] - uk) / abs(uk)
        errs[who] = rel
        name = {"diffusion": "diffusion (dense)", "local": "diffusion (local)"}.get(who, who)
        if who in MODELS and abs(T - TC) > 0.05:
            tol = TOL_E[q] * abs(uk)
            rep.check(f"{who}_energy_{tag}", f"T={T:g}: {name} energy per spin vs "
                      f"Kaufman (within {100 * TOL_E[q]:g} %)", e[0], e[1], reference=uk,
                      tol=tol, kind="abs", note=f"relative error {100 * rel:+.2f} %; "
                      f"{s['n_samples']} samples")
        else:
            rep.value(f"{who}_energy_{tag}", f"T={T:g}: {name} energy per spin", e[0], e[1],
                      note=f"Kaufman {uk:.4f}; relative error {100 * rel:+.2f} %"
                      + (" (at Tc: reported, not checked)" if who in MODELS else ""))
    best = min(MODELS, key=lambda k: abs(errs[k]))
    rep.value(f"gan_minus_diffusion_energy_{tag}", f"T={T:g}: |GAN energy error| - "
              f"|best diffusion energy error| (relative; best: {best})",
              abs(errs["gan"]) - abs(errs[best]), note="positive: the GAN does worse")
    rows = []
    for who in SOURCES:
        a = m[who]["abs_magnetization_per_spin"]
        rep.value(f"{who}_abs_m_{tag}", f"T={T:g}: {who} mean |m|", a[0], a[1],
                  note=f"Onsager (L = inf) {mo:.4f}")
        ks_e = ks_m = float("nan")
        if who != "data":
            ks_e = ks_2samp(ser[who][0], ser["data"][0]).statistic
            ks_m = ks_2samp(ser[who][1], ser["data"][1]).statistic
            rep.value(f"{who}_ks_energy_{tag}", f"T={T:g}: {who} KS distance of the energy "
                      "distribution to the data's", ks_e)
            rep.value(f"{who}_ks_abs_m_{tag}", f"T={T:g}: {who} KS distance of the |m| "
                      "distribution to the data's", ks_m)
        rows.append([who, m[who]["energy_per_spin"][0], m[who]["energy_per_spin"][1], uk, uo,
                     a[0], mo, ks_e, ks_m])
    ctx.report.table(f"T = {T:g} (L = {L}): energy per spin and |m|", [
        "samples", "energy", "SE", "Kaufman (L)", "Onsager (inf)", "mean |m|",
        "Onsager m (inf)", "KS energy vs data", "KS |m| vs data"], rows)
    return x, ser, uk


def _figures(ctx, s, results):
    plt = _report.pyplot()
    temps = s["temps"]
    fig, ax = plt.subplots(len(temps), 3 * len(SOURCES),
                           figsize=(17, 1.6 * len(temps) + 0.4))
    ax = np.atleast_2d(ax)
    for i, T in enumerate(temps):
        x = results[T][0]
        for j, who in enumerate(SOURCES):
            for k in range(3):
                a = ax[i, 3 * j + k]
                a.imshow(x[who][k], cmap="gray", vmin=-1, vmax=1)
                a.set_xticks([])
                a.set_yticks([])
                if k == 0:
                    a.set_title(f"{who}, T={T:g}", fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "ising_configurations.png", "Three configurations per source (MC data, "
               "binomial diffusion with the dense and the local network, GAN) at each "
               "temperature (white +1, black -1).")
    fig, ax = plt.subplots(2, len(temps), figsize=(4 * len(temps), 6.5))
    ax = np.asarray(ax).reshape(2, len(temps))
    for i, T in enumerate(temps):
        _, ser, uk = results[T]
        for r, (idx, lab) in enumerate(((0, "energy per spin"), (1, "|m|"))):
            lo = min(v[idx].min() for v in ser.values())
            hi = max(v[idx].max() for v in ser.values())
            for who, c in (("data", "k"), ("diffusion", "C0"), ("local", "C2"),
                           ("gan", "C3")):
                ax[r, i].hist(ser[who][idx], bins=40, range=(lo, hi), density=True,
                              histtype="step", color=c, label=who)
            if idx == 0:
                ax[r, i].axvline(uk, color="k", ls="--", lw=1, label="Kaufman <e>")
            ax[r, i].set_xlabel(lab)
            ax[r, i].set_title(f"T = {T:g}")
            ax[r, i].legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "ising_histograms.png", "Energy per spin (top) and |m| (bottom) "
               "distributions of the MC data, the binomial diffusion samples (dense and local "
               "network) and the GAN samples; dashed: Kaufman's exact mean energy of the "
               "L x L torus.")


def run(ctx):
    s = QUICK if ctx.quick else FULL
    q = 1 if ctx.quick else 0
    rep = ctx.report
    rep.settings.update({"model": "E = -sum_<xy> s_x s_y, J = kB = 1, periodic",
                         "Tc": round(TC, 5), **{k: v for k, v in s.items() if k != "temps"},
                         "temps": ", ".join(f"{T:g}" for T in s["temps"])})
    results = {T: _one_temperature(ctx, s, q, T) for T in s["temps"]}
    failed = [(who, T) for T in s["temps"] for who in MODELS
              if rep.checks.get(f"{who}_energy_{_tag(T)}", {}).get("verdict") == "FAIL"]
    if failed:
        why = {("diffusion", False): f"the dense MLP (width {s['width']}) learns the global "
               "order of the ordered phase but not the short-range correlations of the "
               "disordered one, so its samples' energy is too high there",
               ("diffusion", True): f"the dense MLP (width {s['width']}) misses part of the "
               "ordered phase's correlations at these settings",
               ("local", True): f"the local network (one MLP on each site's {s['patch']} x "
               f"{s['patch']} neighbourhood and the mean spin) makes too many domain walls in "
               "the ordered phase at these settings (measured with patch 5: +2.4 % at T = 1.8)",
               ("local", False): f"the local network's {s['patch']} x {s['patch']} "
               "neighbourhood is narrower than the posterior correlations at high noise, "
               "which makes an under-confident (too disordered) reverse step"}
        rep.note(f"diffusion fails {len(failed)} energy check(s): "
                 + "; ".join(f"{who} at T = {T:g}: {why[who, T < TC]}" for who, T in failed)
                 + ".  Both reverse kernels factorise over sites at each step of the chain (T "
                 f"= 100 for the dense model, {s['local_T']} for the local one); with the "
                 "exact per-bit probabilities (4 x 4 torus, T = 3) that alone leaves the "
                 "samples 0.69 % (T = 100) or 0.29 % (T = 200) too disordered, +- 0.18 %, so "
                 "the rest is the networks'.  The data themselves pass Kaufman's check.")
    rep.note("Onsager's values are for the infinite lattice: the finite-L mean energy and "
             "mean |m| differ from them (most near Tc, where |m| ~ L^(-1/8) stays finite); "
             "Kaufman's energy is exact for the simulated L x L torus and is the reference of "
             "every check.")
    if ctx.quick:
        rep.note(f"quick settings (L = {s['L']}, short training): the generated-energy "
                 f"tolerance is {100 * TOL_E[1]:g} %; the full run (L = 16) uses 2 %.")
    _figures(ctx, s, results)


if __name__ == "__main__":
    sys.exit(_report.main(NAME))
