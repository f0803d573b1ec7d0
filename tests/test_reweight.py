"""Reweighting samples to exact Boltzmann statistics (nonequil/reweight.py; the
``--log-weights`` option of ``nonequil sample`` and ``--reweight`` of ``nonequil compare``).

Oracles: the harmonic chain's closed-form free energy (``analytic.HarmonicChain``), the
exact reverse kernel of the binomial chain on a product law of bits (its path ratio is the
data law exactly), Kaufman's exact partition function of a small Ising torus.

Stochastic tests (labelled in their docstrings) use fixed seeds and z = 4 standard errors
(bootstrap SEs of the reweighted estimates).
"""
import json
import math
import os

import h5py
import numpy as np
import pytest

from nonequil import analytic, processes, reweight, samplers, score
from nonequil.errors import InputError
from tests.test_samplers import ExactBinomial, _mlp_model

Z = 4.0
SDE = processes.make("vp")


def _chain(P, k0=0.5):
    C = analytic.HarmonicChain(P, k=1.0, k0=k0)
    return C, score.GaussianScore(np.zeros(P), C.covariance(), SDE)


# ------------------------------------------------------------------------- free energies
@pytest.mark.slow
def test_harmonic_chain_16_ode_free_energy():
    """Stochastic: 300 probability-flow samples (RK45, rtol = atol = 1e-7, exact trace) of the
    exact score of the harmonic chain with N = 16 particles, weighted by
    exp(-U/kT)/p_model(x) with p_model from the same integration: the free energy
    -kT log mean(w) equals the closed form -kT log Z within 4 bootstrap SEs; the
    self-normalised <U> equals N kT/2 within 4 SEs; ESS/N > 0.9."""
    C, gs = _chain(16)
    r = samplers.sample(gs, 300, "ode", seed=1, log_density=True, method="rk45", rtol=1e-7,
                        atol=1e-7)
    assert r.log_proposal.shape == (300,) and r.info["trace"] == "exact"
    U = C.energy(r.samples)
    rw = reweight.reweight(r.log_proposal, U, 1.0, {"energy": U})
    f, se = rw["free_energy"]
    assert 0 < se < 1e-3
    assert abs(f - C.free_energy()) <= Z * se, (f, C.free_energy(), se)
    e, se_e = rw["energy"]
    assert abs(e - C.mean_energy()) <= Z * se_e
    assert rw["ess_fraction"][0] > 0.9 and not rw["low_ess"]


@pytest.mark.slow
@pytest.mark.parametrize("name,steps,kw", [("em", 100, {}), ("pc", 60, {"pilot": 64}),
                                           ("ancestral", 1000, {})])
def test_path_weights_give_the_free_energy(name, steps, kw):
    """Stochastic: the path weights q(x_{1:K} | x_0) / p(x_{0:K}) of em, pc and ancestral
    samples (exact score of a 2-particle harmonic chain; 1 particle for ancestral, whose
    posterior-variance kernel needs many steps) give the closed-form free energy within 4
    bootstrap SEs, although the raw samples are biased by the discretisation."""
    C, gs = _chain(1 if name == "ancestral" else 2)
    r = samplers.sample(gs, 1500, name, steps=steps, seed=5, log_density=True, **kw)
    assert r.info["options"].get("denoise", False) is False
    U = C.energy(r.samples)
    rw = reweight.reweight(r.log_proposal, U, 1.0, {"energy": U})
    f, se = rw["free_energy"]
    assert abs(f - C.free_energy()) <= Z * se, (name, f, C.free_energy(), se)
    assert rw["ess_fraction"][0] > 0.05


def test_binomial_path_ratio_is_the_data_law():
    """Deterministic: with the exact reverse kernel of a product law of bits and
    beta_T = 1, the binomial chain's path ratio P(path)/B(path | x_0) is the data law
    exactly, so log_proposal = log prod_d p_d^{x_d} (1 - p_d)^{1 - x_d} to 1e-9."""
    probs = np.array([0.1, 0.7, 0.5, 0.35])
    r = samplers.sample(ExactBinomial(probs), 64, seed=3, log_density=True)
    x = r.samples
    ref = np.sum(np.where(x == 1, np.log(probs), np.log1p(-probs)), axis=1)
    assert np.max(np.abs(r.log_proposal - ref)) < 1e-9
    plain = samplers.sample(ExactBinomial(probs), 64, seed=3)
    assert np.array_equal(plain.samples, x) and plain.log_proposal is None


class _SpinSquare(ExactBinomial):
    """Independent uniform bits seen as an L x L lattice of spins."""

    def __init__(self, L):
        super().__init__(np.full(L * L, 0.5), "spins")
        self.data_shape = (L, L)


def test_ising_free_energy_by_reweighting():
    """Stochastic: binomial-chain samples of a 3 x 3 spin lattice (uniform bits) reweighted
    to the Ising law at T = 3 give Kaufman's exact log Z and energy per spin within 4
    bootstrap SEs (``reweight_to_analytic``, the keys of ``compare --reweight``)."""
    r = samplers.sample(_SpinSquare(3), 3000, seed=2, log_density=True)
    assert r.samples.shape == (3000, 3, 3)
    out = reweight.reweight_to_analytic(r.samples, r.log_proposal, "ising", {"T": 3.0})
    lz = out["reweight_log_z"]
    assert abs(lz["value"] - out["reweight_log_z_exact"]["value"]) <= Z * lz["se"]
    e = out["reweight_energy_per_spin"]
    assert abs(e["value"] - out["reweight_energy_per_spin_exact"]["value"]) <= Z * e["se"]
    assert out["reweight_low_ess"]["value"] == 0


def test_reweight_estimators_on_known_weights():
    """Deterministic: log Z, ESS and the self-normalised mean on hand-made weights; the
    bootstrap is a pure function of the seed; ESS/N < 1 % sets low_ess."""
    lq = np.log(np.array([1.0, 2.0, 4.0, 1.0]))
    U = np.zeros(4)
    o = np.array([1.0, 2.0, 3.0, 4.0])
    r = reweight.reweight(lq, U, 1.0, {"o": o}, n_boot=50, seed=1)
    w = 1 / np.array([1.0, 2.0, 4.0, 1.0])
    assert r["log_z"][0] == pytest.approx(math.log(w.mean()))
    assert r["free_energy"][0] == pytest.approx(-math.log(w.mean()))
    assert r["ess"][0] == pytest.approx(w.sum() ** 2 / (w * w).sum())
    assert r["o"][0] == pytest.approx((w * o).sum() / w.sum())
    assert r == reweight.reweight(lq, U, 1.0, {"o": o}, n_boot=50, seed=1)
    assert r["log_z"][1] != reweight.reweight(lq, U, 1.0, {"o": o}, n_boot=50, seed=2)["log_z"][1]
    lq2 = np.zeros(200)
    lq2[0] = -50.0
    assert reweight.reweight(lq2, np.zeros(200), 1.0, n_boot=5)["low_ess"]
    with pytest.raises(InputError, match="one log-density per sample"):
        reweight.reweight(np.zeros(3), np.zeros(4))


def test_log_density_option_checks():
    """Bad combinations are clear InputErrors naming the fix."""
    _, gs = _chain(2)
    cases = [
        (dict(sampler="ode"), "method=rk45"),
        (dict(sampler="ode", method="rk45", denoise=True), "denoise=false"),
        (dict(sampler="em", denoise=True), "denoise=false"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputError, match=msg):
            samplers.sample(gs, 4, steps=5, log_density=True, **kw)
    # recording frames with log-densities goes through reweight.sample_with_log_density:
    # the same samples and log-proposals as without recording
    a = samplers.sample(gs, 4, steps=5, log_density=True, sampler="em", seed=3)
    b = samplers.sample(gs, 4, steps=5, log_density=True, sampler="em", seed=3, record_every=2)
    assert np.array_equal(a.samples, b.samples) and np.array_equal(a.log_proposal,
                                                                    b.log_proposal)
    assert b.frames.shape[0] == b.frame_steps.size and b.frames.shape[1] == 4
    with pytest.raises(InputError, match="CPU only .*use --device cpu"):
        reweight.check_log_density({"sampler": "em", "device": "cuda"}, {})
    from tests.test_samplers import _ddpm_model

    with pytest.raises(InputError, match="noise-free"):
        samplers.sample(_ddpm_model(), 4, "ancestral", steps=5, log_density=True)


# ------------------------------------------------------------------------- with frames
@pytest.mark.parametrize("name,kw", [("em", {}), ("ancestral", {}), ("pc", {"pilot": 8}),
                                     ("ode", {"method": "rk45"})])
def test_log_densities_with_recorded_frames(name, kw):
    """Deterministic: ``sample_with_log_density`` with ``record_every`` gives bitwise the
    samples and log-proposals of ``samplers.sample(log_density=True)`` without recording
    (batches of 4 agree to rounding: the Python engine's BLAS), frames at steps 0, 3, 6, 9, 10
    starting at the prior draw and ending at the samples; the em, ancestral and pc frames
    are bitwise those of the plain Python-engine sampler with denoise=false."""
    m = _mlp_model(dim=2)
    ref = samplers.sample(m, 9, name, steps=10, seed=3, log_density=True, **kw)
    r = reweight.sample_with_log_density(m, 9, name, steps=10, seed=3, record_every=3, **kw)
    assert np.array_equal(r.samples, ref.samples)
    assert np.array_equal(r.log_proposal, ref.log_proposal)
    assert list(r.frame_steps) == [0, 3, 6, 9, 10] and r.frames.shape == (5, 9, 2)
    assert np.array_equal(r.frames[-1], r.samples)
    assert np.array_equal(r.frames[0], m.to_data(samplers._prior(m, 3, 0, 9)))
    assert np.allclose(r.frame_times, np.linspace(1.0, 1e-3, 11)[[0, 3, 6, 9, 10]],
                       rtol=0, atol=1e-12)
    if name == "ode":
        return
    b = reweight.sample_with_log_density(m, 9, name, steps=10, seed=3, record_every=3,
                                         batch=4, **kw)
    for u, v in ((b.samples, r.samples), (b.frames, r.frames),
                 (b.log_proposal, r.log_proposal)):    # BLAS rounding of other batch shapes
        assert np.allclose(u, v, rtol=1e-12, atol=1e-10)
    plain = samplers.sample(m, 9, name, steps=10, seed=3, record_every=3, engine="python",
                            **(kw if name == "ancestral" else dict(kw, denoise=False)))
    assert np.array_equal(plain.frames, r.frames)


def test_ode_frames_follow_the_ode():
    """Deterministic: at rtol = atol = 1e-10 the RK45 log-density run's interpolated frames
    equal those of the plain RK45 sampler to 1e-6 (data units), while the final samples are
    the solver's own state."""
    m = _mlp_model(dim=2)
    kw = dict(method="rk45", rtol=1e-10, atol=1e-10)
    r = reweight.sample_with_log_density(m, 5, "ode", steps=10, seed=3, record_every=3, **kw)
    plain = samplers.sample(m, 5, "ode", steps=10, seed=3, record_every=3, **kw)
    assert np.max(np.abs(r.frames - plain.frames)) < 1e-6


def test_binomial_log_densities_with_recorded_frames():
    """Deterministic: the binomial chain's samples and path ratios do not change when its
    frames are recorded; the frames are int8 spins ending at the samples."""
    model = ExactBinomial(np.array([0.1, 0.7, 0.5]), "spins")
    ref = samplers.sample(model, 20, seed=3, log_density=True)
    r = reweight.sample_with_log_density(model, 20, seed=3, record_every=30)
    assert np.array_equal(r.samples, ref.samples)
    assert np.array_equal(r.log_proposal, ref.log_proposal)
    assert list(r.frame_steps) == [0, 30, 60, 90, 100] and r.frames.dtype == np.int8
    assert np.array_equal(r.frames[-1], r.samples)
    plain = samplers.sample(model, 20, seed=3, record_every=30)
    assert np.array_equal(plain.frames, r.frames)


# ------------------------------------------------------------------------- the CLI
def _cli(*args):
    from nonequil.cli import main

    return main([str(a) for a in args])


@pytest.fixture
def chain_files(tmp_path):
    """A harmonic-chain data file (nonequil dataset) and a small MLP model whose provenance
    names it as its training data."""
    from nonequil import datasets

    data = tmp_path / "hc.h5"
    datasets.write_dataset(str(data), "harmonic-chain", 50,
                           {"particles": 2, "k0": 0.5, "kT": 1.5})
    m = _mlp_model(dim=2)
    mpath = tmp_path / "model.h5"
    m.write(str(mpath), prov={"configuration": json.dumps({"data": f"{data}:/samples"})})
    return m, mpath, data


def test_cli_sample_log_weights_and_compare_reweight(chain_files, tmp_path, capsys):
    """``sample --log-weights`` stores /log_proposal (equal to the library's) and
    /log_weights under the training data's law; ``compare --reweight`` reports the
    reweight_* keys against the exact values, from the recorded law, from --reference's
    generator, or from --analytic."""
    m, mpath, data = chain_files
    out = tmp_path / "s.h5"
    assert _cli("sample", mpath, "--n", 40, "--sampler", "em", "--steps", 20, "--seed", 3,
                "--log-weights", "--out", out, "--quiet") == 0
    ref = samplers.sample(m, 40, "em", steps=20, seed=3, log_density=True)
    C = analytic.HarmonicChain(2, k=1.0, k0=0.5, kT=1.5)
    with h5py.File(out) as f:
        assert np.array_equal(f["samples"][()], ref.samples)
        assert np.allclose(f["log_proposal"][()], ref.log_proposal, rtol=0, atol=1e-12)
        assert f["log_weights"].attrs["law"] == "harmonic-chain"
        lw = -C.energy(ref.samples) / 1.5 - ref.log_proposal
        assert np.allclose(f["log_weights"][()], lw, rtol=0, atol=1e-9)
        assert json.loads(f["samples"].attrs["options"])["denoise"] is False
    keys = {"reweight_log_z", "reweight_log_z_exact", "reweight_free_energy",
            "reweight_free_energy_exact", "reweight_ess", "reweight_ess_fraction",
            "reweight_mean_energy", "reweight_mean_energy_exact"}
    for extra in ((), ("--reference", data), ("--analytic", "harmonic-chain", "--set", "k0=0.5",
                                               "--set", "kT=1.5")):
        capsys.readouterr()
        assert _cli("compare", out, "--reweight", "--json", *extra) == 0
        res = json.loads(capsys.readouterr().out)
        assert keys <= set(res)
        assert res["reweight_free_energy_exact"]["value"] == pytest.approx(C.free_energy())
        assert all(set(v) == {"value", "se"} for v in res.values())
        if extra:
            assert ("w1_x0" in res) or ("sliced_w1" in res)
    assert not os.path.exists(str(out) + ".partial")


@pytest.mark.parametrize("sampler,extra", [("em", ("--steps", 10)),
                                           ("ode", ("--steps", 10, "--set", "method=rk45")),
                                           ("binomial", ())])
def test_cli_log_weights_with_record_every(chain_files, tmp_path, sampler, extra):
    """``sample --log-weights --record-every`` writes /samples, /log_proposal, /log_weights
    (where the training data names its law) and the H5MD trajectory in one file; they are
    bitwise those of the run without --record-every."""
    m, mpath, data = chain_files
    if sampler == "binomial":               # spins, no training law: /log_proposal only
        mpath = tmp_path / "bits.h5"
        _mlp_model(dim=2, width=8, depth=1, process="binomial",
                   encoding="spins").write(str(mpath))
    outs = [tmp_path / "plain.h5", tmp_path / "rec.h5"]
    for out, rec in zip(outs, ((), ("--record-every", 4))):
        assert _cli("sample", mpath, "--n", 12, "--sampler", sampler, "--seed", 2,
                    "--log-weights", *extra, *rec, "--out", out, "--quiet") == 0
    K = 100 if sampler == "binomial" else 10
    with h5py.File(outs[0]) as f, h5py.File(outs[1]) as g:
        keys = ["samples", "log_proposal"] + (["log_weights"] if sampler != "binomial" else [])
        assert ("log_weights" in f) == (sampler != "binomial")
        for k in keys:
            assert f[k][()].tobytes() == g[k][()].tobytes(), k
        assert "particles" not in f
        pos = g["particles/ensemble/position"]
        assert list(pos["step"][()]) == list(range(0, K, 4)) + [K]
        assert np.array_equal(pos["value"][-1], g["samples"][()].reshape(12, 2))
    assert not os.path.exists(str(outs[1]) + ".partial")


def test_cli_reweight_errors(chain_files, tmp_path, capsys):
    m, mpath, data = chain_files
    plain = tmp_path / "plain.h5"
    assert _cli("sample", mpath, "--n", 5, "--steps", 4, "--out", plain, "--quiet") == 0
    out = tmp_path / "bad.h5"
    cases = [
        (("compare", plain, "--reweight", "--analytic", "harmonic-chain"), "no /log_proposal"),
        (("compare", plain, "--reweight"), "no /log_proposal"),
        (("sample", mpath, "--sampler", "ode", "--log-weights", "--out", out), "method=rk45"),
        (("sample", mpath, "--sampler", "em", "--set", "denoise=true", "--log-weights",
          "--out", out), "denoise=false"),
        (("sample", mpath, "--sampler", "em", "--log-weights", "--device", "cuda", "--out",
          out), "--device cpu"),
    ]
    with h5py.File(plain, "a") as f:
        f["log_short"] = np.zeros(3)
    cases.append((("compare", plain, "--reweight", "--analytic", "harmonic-chain",
                   "--log-density-dataset", "/log_short"), "one log-density per sample"))
    for args, msg in cases:
        capsys.readouterr()
        assert _cli(*args) != 0, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and msg in err[-1], (args, err)
        assert not os.path.exists(out) and not os.path.exists(str(out) + ".partial")
