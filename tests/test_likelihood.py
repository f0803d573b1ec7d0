"""Likelihoods (nonequil/likelihood.py, nonequil/cmd_likelihood.py).

Oracles: the exact score of an anisotropic, correlated Gaussian under the VP and sub-VP
SDEs (its exact log-density at t_eps and its differential entropy), and the closed forms of
the bound's reconstruction and prior terms.

Stochastic tests (labelled in their docstrings) use fixed seeds and z = 5 standard errors.
"""
import copy
import json
import math
import os

import h5py
import numpy as np
import pytest

from nonequil import likelihood, processes, samplers, score
from nonequil.errors import InputError
from tests.test_samplers import _ddpm_model, _mlp_model

Z = 5.0
MEAN = np.array([1.0, -0.5, 0.3])
A = np.array([[0.5, 0.2, 0.0], [0.1, 0.3, -0.1], [0.0, 0.2, 0.8]])
COV = A @ A.T                  # anisotropic and correlated (eigenvalues ~0.04 .. 0.7)


def _gauss(proc="vp"):
    return score.GaussianScore(MEAN, COV, processes.make(proc))


def _neg_entropy():
    return -0.5 * 3 * (1 + math.log(2 * math.pi)) - 0.5 * np.linalg.slogdet(COV)[1]


def _points(n, seed):
    return np.random.default_rng(seed).multivariate_normal(MEAN, COV, n)


# ------------------------------------------------------------------------- ode
@pytest.mark.parametrize("proc", ["vp", "subvp"])
def test_ode_likelihood_matches_analytic_density(proc):
    """Deterministic: the probability-flow log-likelihood of the exact score of an
    anisotropic, correlated 3-D Gaussian, with the exact terminal marginal q_T as the prior,
    equals the analytic log-density of p_{t_eps} to 1e-4 nats per point (RK45, tolerances
    1e-8); ``likelihood(method="ode")`` reports its mean, per dim and SE."""
    gs = _gauss(proc)
    x = _points(25, 7)
    model = samplers.ExactModel(gs)
    r = likelihood.ode_likelihood(model, x, rtol=1e-8, atol=1e-8,
                                  prior_logp=lambda y: gs.log_prob(y, model.t_max))
    ref = gs.log_prob(x, model.t_eps)
    assert np.max(np.abs(r.logp - ref)) < 1e-4
    out = likelihood.likelihood(gs, x, method="ode", rtol=1e-8, atol=1e-8)
    assert out["method"] == "ode" and out["n"] == 25 and out["trace"] == "exact"
    assert out["nll_nats_per_dim"] == pytest.approx(out["nll_nats_per_sample"] / 3)
    assert out["se"] == pytest.approx(np.std(-ref, ddof=1) / 5, rel=0.05)


# ------------------------------------------------------------------------- elbo
def test_elbo_closed_form_terms():
    """Deterministic: the reconstruction term is D/2 (log(2 pi sigma_0^2/m_0^2) + 1) and the
    prior term the Gaussian KL of q(z_T | y) from N(0, I), for each point."""
    gs = _gauss()
    x = _points(4, 1)
    r = likelihood.elbo(gs, x, steps=3, n_time=2)
    sde = gs.sde
    m0, v0 = float(sde.mean_coeff(1e-3)), float(sde.variance(1e-3))
    assert r.terms["reconstruction"] == pytest.approx(1.5 * (math.log(2 * math.pi * v0 / m0**2)
                                                              + 1), rel=1e-12)
    m1, v1 = float(sde.mean_coeff(1.0)), float(sde.variance(1.0))
    kl = 0.5 * np.sum(v1 + m1**2 * x**2 - 1 - math.log(v1), axis=1)
    assert r.terms["prior"] == pytest.approx(kl.mean(), rel=1e-12)
    assert r.info["steps"] == 3 and r.nll.shape == (4,) and r.nll_vdm.shape == (4,)


@pytest.mark.slow
def test_elbo_is_a_bound_and_tightens_with_steps():
    """Stochastic: on 400 exact draws of the 3-D Gaussian with its exact score, the mean ELBO
    (discrete bound with K = 10, 100, 1000 steps, and the continuous VDM bound) is at most
    the negative entropy + 5 SE, and, paired per point, at most the exact log-density of the
    model's p_{t_eps} + 5 SE.  The gap shrinks as K grows (differences beyond 5 combined
    SEs), and the continuous bound (K -> infinity) is the tightest."""
    gs = _gauss()
    x = _points(400, 3)
    negH = _neg_entropy()
    logp = gs.log_prob(x, 1e-3)
    gaps = []
    for K in (10, 100, 1000):
        r = likelihood.elbo(gs, x, steps=K, n_time=32, seed=K, continuous=K == 1000)
        e = -r.nll_nats_per_sample
        assert e <= negH + Z * r.se, (K, e, negH, r.se)
        d = -r.nll - logp
        assert d.mean() <= Z * d.std(ddof=1) / math.sqrt(d.size), K
        gaps.append((negH - e, r.se))
    for (g1, s1), (g2, s2) in zip(gaps, gaps[1:]):
        assert g1 - g2 > Z * math.hypot(s1, s2), gaps
    ev = -r.nll_vdm_nats_per_sample
    assert ev <= negH + Z * r.se_vdm
    d = -r.nll_vdm - logp
    assert d.mean() <= Z * d.std(ddof=1) / math.sqrt(d.size)
    assert ev - (-r.nll_nats_per_sample) > Z * math.hypot(r.se, r.se_vdm)
    assert negH - ev < 0.25             # the continuous bound is nearly tight here


def test_elbo_log_snr_grid_is_uniform_in_log_snr_and_tighter_than_uniform_t():
    """Deterministic grid: ``grid="logsnr"`` runs from t_eps to t_max with equal falls of log
    SNR (to 1e-9).  Stochastic: on 400 exact draws of the 3-D Gaussian with its exact score,
    the K = 100 discrete bound on that grid is still a bound (mean ELBO <= negative entropy
    + 5 SE, and paired per point <= the exact log p_{t_eps} + 5 SE), and its gap is smaller
    than the same K's gap on the uniform-t grid by more than 5 combined SEs (uniform in t,
    the first step drops SNR from ~1e4 by half and carries most of the excess)."""
    gs = _gauss()
    tm = likelihood._Times(samplers.ExactModel(gs), False)
    g = likelihood._elbo_grid(samplers.ExactModel(gs), tm, 100, "logsnr")
    m, v = (np.asarray(a, np.float64) for a in tm.m_v(g))
    dlam = np.diff(np.log(m * m / v))
    assert g[0] == 1e-3 and g[-1] == 1.0 and g.size == 101 and np.all(np.diff(g) > 0)
    assert np.max(np.abs(dlam - dlam.mean())) < 1e-9
    x = _points(400, 3)
    negH = _neg_entropy()
    logp = gs.log_prob(x, 1e-3)
    gaps = {}
    for grid in ("t", "logsnr"):
        r = likelihood.elbo(gs, x, steps=100, seed=5, continuous=False, grid=grid)
        assert r.info["grid"] == grid
        e = -r.nll_nats_per_sample
        assert e <= negH + Z * r.se, (grid, e, negH, r.se)
        d = -r.nll - logp
        assert d.mean() <= Z * d.std(ddof=1) / math.sqrt(d.size), grid
        gaps[grid] = (negH - e, r.se)
    (gt, st), (gl, sl) = gaps["t"], gaps["logsnr"]
    assert gt - gl > Z * math.hypot(st, sl), gaps
    with pytest.raises(InputError, match="valid: t, logsnr"):
        likelihood.elbo(gs, x[:3], steps=10, grid="bogus")


def test_elbo_noise_is_a_pure_function_of_the_point_index():
    """Deterministic: the bounds of points 3..5 do not depend on the batch or on which
    points are evaluated with them (first_sample gives their absolute index)."""
    gs = _gauss()
    x = _points(6, 2)
    full = likelihood.elbo(gs, x, steps=20, n_time=4, seed=9, batch=4)
    part = likelihood.elbo(gs, x[3:], steps=20, n_time=4, seed=9, first_sample=3)
    assert np.array_equal(full.nll[3:], part.nll)
    assert np.array_equal(full.nll_vdm[3:], part.nll_vdm)


def test_elbo_of_mlp_and_ddpm_models_in_data_units():
    """Deterministic: an MLP model's bound includes the normalisation Jacobian
    (sum log s_d nats); a DDPM-chain model gets the discrete bound on its own chain only."""
    m = _mlp_model(dim=2)
    x = m.to_data(np.random.default_rng(0).standard_normal((5, 2)))
    r = likelihood.elbo(m, x, steps=10, n_time=4)
    assert r.terms["log_det_normalisation"] == pytest.approx(np.sum(np.log(m.std)))
    y = m.normalise(x)
    ident = copy.copy(m)                 # the same network, identity normalisation
    ident.mean, ident.std = np.zeros(2), np.ones(2)
    r0 = likelihood.elbo(ident, y, steps=10, n_time=4)
    assert np.allclose(r.nll - r0.nll, np.sum(np.log(m.std)), atol=1e-10)
    d = _ddpm_model()
    rd = likelihood.elbo(d, np.linspace(-1, 1, 7)[:, None], steps=50)
    assert rd.nll_vdm is None and rd.info["steps"] == 50 and np.all(np.isfinite(rd.nll))
    with pytest.raises(InputError, match="1..999"):
        likelihood.elbo(d, np.zeros((3, 1)), steps=1000)


def test_elbo_of_the_binomial_chain_is_its_own_bound():
    """A binomial-chain model gets the bit-flip chain's bound (tests/test_binomial_bound.py),
    not a Gaussian one: no VDM bound, steps = T, no normalisation Jacobian."""
    m = _mlp_model(dim=3, width=8, depth=1, process="binomial")
    r = likelihood.elbo(m, np.zeros((3, 3)))
    assert r.nll_vdm is None and r.info["steps"] == 100 and r.info["process"] == "binomial"
    assert r.terms["log_det_normalisation"] == 0.0 and np.all(np.isfinite(r.nll))


# ------------------------------------------------------------------------- the CLI
def _cli(*args):
    from nonequil.cli import main

    return main([str(a) for a in args])


def assert_error_lines(capsys, cases):
    """Each ``(args, fragment)``: ``nonequil likelihood ARGS --json`` exits non-zero with one
    ``error:`` line on stderr containing the fragment, no traceback and nothing on stdout."""
    for args, msg in cases:
        capsys.readouterr()
        assert _cli("likelihood", *args, "--json") != 0, args
        cap = capsys.readouterr()
        err = cap.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], (args, err)
        assert "Traceback" not in cap.err and cap.out == ""


@pytest.fixture
def files(tmp_path):
    mpath = tmp_path / "model.h5"
    m = _mlp_model(dim=2)
    m.write(str(mpath))
    dpath = tmp_path / "data.h5"
    with h5py.File(dpath, "w") as f:
        f["samples"] = m.to_data(np.random.default_rng(1).standard_normal((30, 2)))
        f["other"] = np.zeros((30, 3))
        bad = np.zeros((30, 2))
        bad[17, 1] = np.nan
        f["bad"] = bad
        f["one"] = np.zeros((1, 2))
    return m, mpath, dpath


@pytest.mark.parametrize("method", ["ode", "elbo"])
def test_cli_likelihood_json(files, capsys, method):
    """``likelihood --json`` prints only one JSON document with the contract keys; the
    values equal the library's."""
    m, mpath, dpath = files
    capsys.readouterr()
    extra = ("--steps", 20, "--time-samples", 4) if method == "elbo" else ()
    assert _cli("likelihood", mpath, dpath, "--method", method, "--n", 12, "--json",
                "--quiet", *extra) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    for k in ("method", "n", "nll_nats_per_sample", "nll_nats_per_dim", "se"):
        assert k in out
    assert out["method"] == method and out["n"] == 12 and cap.err == ""
    with h5py.File(dpath) as f:
        x = f["samples"][:12]
    ref = likelihood.likelihood(m, x, method=method, steps=20, n_time=4)
    assert out["nll_nats_per_sample"] == pytest.approx(ref["nll_nats_per_sample"], rel=1e-12)
    assert out["nll_nats_per_dim"] == pytest.approx(ref["nll_nats_per_sample"] / 2, rel=1e-12)
    if method == "elbo":
        assert {"vdm_nll_nats_per_sample", "vdm_se", "steps"} <= set(out)
    assert _cli("likelihood", mpath, dpath, "--n", 5, "--quiet") == 0
    assert "nats per sample" in capsys.readouterr().out


def test_cli_likelihood_errors(files, tmp_path, capsys):
    m, mpath, dpath = files
    (tmp_path / "junk.h5").write_text("not hdf5")
    bits = tmp_path / "bits.h5"
    _mlp_model(dim=2, width=8, depth=1, process="binomial").write(str(bits))
    cases = [
        ((tmp_path / "nope.h5", dpath), "does not exist"),
        ((mpath, tmp_path / "missing.h5"), "does not exist"),
        ((mpath, tmp_path / "junk.h5"), "not an HDF5 file"),
        ((dpath, dpath), "no /model group"),
        ((mpath, dpath, "--dataset", "/nothere"), "no dataset /nothere"),
        ((mpath, dpath, "--dataset", "/bad"), "row 17 (0-based), column 1"),
        ((mpath, dpath, "--dataset", "/other"), "per-sample shape (3,)"),
        ((mpath, dpath, "--dataset", "/one"), "at least 2"),
        ((mpath, dpath, "--method", "bogus"), "valid: ode, elbo"),
        ((mpath, dpath, "--trace", "bogus"), "valid: auto, exact, hutchinson"),
        ((mpath, dpath, "--method", "elbo", "--grid", "bogus"), "valid: t, logsnr"),
        ((bits, dpath, "--method", "elbo", "--grid", "logsnr"), "own integer steps"),
        ((mpath, dpath, "--n", "0"), "invalid count"),
        ((mpath, dpath, "--rtol", "-1"), "tolerance"),
        ((bits, dpath), "process vp, subvp, ve"),
    ]
    assert_error_lines(capsys, cases)
    assert not os.path.exists(tmp_path / "nope.h5")


def test_cli_likelihood_help_lists_common_flags(capsys):
    with pytest.raises(SystemExit):
        _cli("likelihood", "--help")
    text = capsys.readouterr().out
    for flag in ("--quiet", "--debug", "--seed", "--json", "--method", "--dataset", "--n"):
        assert flag in text
