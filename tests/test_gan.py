"""GAN baseline (nonequil.gan, nonequil.gan_train, ``nonequil gan``, ``sample`` of a GAN).

Oracles: central differences of the GAN losses (the engine's gradients, through the
discriminator's input gradient and the tanh relaxation); the optimal discriminator
D* = p_r / (p_r + p_g) and the value 2 JS - 2 log 2 with JS by quadrature (Goodfellow et al.
2014) for a fixed affine generator of known density; the moments of a shifted, scaled
Gaussian for the defaults contract.  Training data come from seeded numpy Generators in the
tests; everything inside training is Philox, so every trained model is a fixed function of
its seed.  Tests labelled *stochastic* compare sample averages with z * SE bounds (z stated);
the model-error allowances on top of them are stated at each test with the measured value.
Theory and mode-coverage checks that are heavier live in tests/test_gan_theory.py.
"""
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from nonequil.errors import InputError, RunError  # noqa: E402
from nonequil.gan import GANConfig, config_from_sets, load  # noqa: E402
from nonequil.gan_train import _GANTrainer, train_gan  # noqa: E402

CLI = [sys.executable, "-m", "nonequil.cli"]
TINY = dict(latent_dim=2, g_width=5, g_depth=1, d_width=6, d_depth=2, batch=8)
SMALL = dict(latent_dim=2, g_width=16, g_depth=2, d_width=16, d_depth=2, batch=32)


def _softplus(z):
    return np.logaddexp(0.0, z)


# ------------------------------------------------------------------ gradients
def _fd_grad(f, theta, h=1e-6):
    g = np.empty_like(theta)
    for i in range(theta.size):
        old = theta[i]
        theta[i] = old + h
        fp = f()
        theta[i] = old - h
        fm = f()
        theta[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("data_kind,loss", [("continuous", "nonsaturating"),
                                            ("continuous", "minimax"),
                                            ("spins", "nonsaturating")])
def test_update_gradients_match_central_differences(data_kind, loss):
    """The discriminator's BCE gradient (with label smoothing and instance noise) and the
    generator's gradient through D's input gradient (and tanh for binary data) equal central
    differences of the losses recomputed in numpy from the same Philox inputs (rel. 1e-6).
    lr_d = 1e-300 and lr_g = 0 leave the weights as they were, so the gradients can be read
    after each update."""
    from kernels import mlp_cpu

    rng = np.random.default_rng(1)
    if data_kind == "spins":
        data = np.where(rng.random((40, 3)) < 0.6, 1.0, -1.0)
    else:
        data = 2.0 + 3.0 * rng.standard_normal((40, 3))
    cfg = GANConfig(**TINY, loss=loss, label_smoothing=0.1, instance_noise=0.3, steps=4,
                    lr_d=1e-300, lr_g=0.0, seed=7)
    tr = _GANTrainer(cfg, data, cfg.batch, 1)
    m, B, D = tr.model, tr.B, tr.D
    sigma = tr.noise_std(0)
    assert sigma == pytest.approx(0.3) and m.binary == (data_kind == "spins")

    def gen(u):
        y = mlp_cpu.mlp_forward(m.g_theta, m.g_offsets, m.act, tr._latent(u).copy())
        return np.tanh(y) if m.binary else y

    xr = tr.Y0[tr._rows(0, B)] + sigma * tr._draw(4, 0, B, D)
    xf = gen(0) + sigma * tr._draw(5, 0, B, D)
    t = 1.0 - cfg.label_smoothing

    def d_loss():
        a = mlp_cpu.mlp_forward(m.d_theta, m.d_offsets, m.act, np.vstack([xr, xf]))[:, 0]
        return float(np.mean(t * _softplus(-a[:B]) + (1 - t) * _softplus(a[:B]))
                     + np.mean(_softplus(a[B:])))

    ref = _fd_grad(d_loss, m.d_theta)
    info = tr.d_update(0, 0)
    assert info["d_loss"] == pytest.approx(d_loss(), rel=1e-12)
    np.testing.assert_allclose(tr.d_grad, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())

    noise_g = sigma * tr._draw(5, B, B, D).copy()          # update u = 1 (k = 1)

    def g_loss():
        a = mlp_cpu.mlp_forward(m.d_theta, m.d_offsets, m.act, gen(1) + noise_g)[:, 0]
        return float(np.mean(_softplus(-a)) if loss == "nonsaturating"
                     else -np.mean(_softplus(a)))

    ref = _fd_grad(g_loss, m.g_theta)
    before = m.g_theta.copy()
    assert tr.g_update(0) == pytest.approx(g_loss(), rel=1e-12)
    np.testing.assert_allclose(tr.g_grad, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    assert np.array_equal(m.g_theta, before)               # lr_g = 0


def test_value_and_js_logs_are_consistent():
    """Per step: value = -mean softplus(-a_r) - mean softplus(a_f) and js = (value + log 4)/2;
    without label smoothing d_loss = -value; D means lie in (0, 1)."""
    rng = np.random.default_rng(2)
    m = train_gan(rng.standard_normal((200, 2)), **SMALL, steps=30)
    lg = m.logs
    np.testing.assert_allclose(lg["js"], 0.5 * (lg["value"] + math.log(4)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(lg["d_loss"], -lg["value"], rtol=1e-14)
    assert np.all((lg["d_real"] > 0) & (lg["d_real"] < 1) & (lg["d_fake"] > 0)
                  & (lg["d_fake"] < 1))
    assert m.step == 30 and np.all(np.isfinite(lg["g_loss"]))


# ------------------------------------------------------------------ determinism, draws
def test_draw_blocks_do_not_change_values():
    """The block-ahead Philox fills equal a direct fill of the same sample indices."""
    from kernels import streams

    cfg = GANConfig(**TINY)
    tr = _GANTrainer(cfg, np.random.default_rng(3).standard_normal((30, 2)), 8, 1)
    a = tr._draw(2, 5 * 8, 8, 2).copy()                    # block starting at 40
    tr._blocks.clear()
    tr._draw(2, 0, 8, 2)                                   # block starting at 0
    b = tr._draw(2, 40, 8, 2).copy()
    direct = np.empty((8, 2))
    streams.normals(np.uint64(cfg.seed), np.uint64(64 + 2), 40, 0, direct)
    assert np.array_equal(a, b) and np.array_equal(a, direct)


def test_runs_are_deterministic_and_seeded():
    x = np.random.default_rng(4).standard_normal((100, 1))
    a = train_gan(x, **SMALL, steps=20, seed=3)
    b = train_gan(x, **SMALL, steps=20, seed=3)
    c = train_gan(x, **SMALL, steps=20, seed=4)
    assert np.array_equal(a.g_theta, b.g_theta) and np.array_equal(a.d_theta, b.d_theta)
    assert not np.array_equal(a.g_theta, c.g_theta)


def test_sample_depends_only_on_index():
    x = np.random.default_rng(5).standard_normal((100, 2))
    m = train_gan(x, **SMALL, steps=5)
    full = m.sample(50, seed=9)
    part = m.sample(10, seed=9, first=17, batch=3)
    assert np.array_equal(full[17:27], part)
    assert not np.array_equal(full, m.sample(50, seed=10))


def test_uniform_latent_and_k_steps():
    """latent=uniform draws h in (-1, 1]; k = 3 makes three discriminator Adam steps per
    generator step (the Adam step counter of D is s k + j + 1)."""
    x = np.random.default_rng(6).standard_normal((100, 1))
    m = train_gan(x, **SMALL, steps=1, latent="uniform", k=3)
    h = m.latent_points(1000, seed=1)
    assert h.min() > -1.0 and h.max() <= 1.0 and abs(h.mean()) < 4 * math.sqrt(1 / 3 / 2000)
    cfg = GANConfig(**SMALL, steps=2, k=3)
    tr = _GANTrainer(cfg, x, 32, 1)
    calls = []
    real = tr.d_update
    tr.d_update = lambda s, j: calls.append((s, j)) or real(s, j)
    tr.step(0)
    tr.step(1)
    assert calls == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


# ------------------------------------------------------------------ files, resume, errors
def _arrays(path):
    with h5py.File(path, "r") as f:
        out = {}
        f["model"].visititems(lambda n, o: out.__setitem__(n, o[()]) if hasattr(o, "shape")
                              else None)
        return out


def test_model_file_roundtrip(tmp_path):
    x = np.random.default_rng(7).standard_normal((100, 2)) * [1.0, 5.0] + [3.0, -1.0]
    out = tmp_path / "g.h5"
    m = train_gan(x, **SMALL, steps=10, out=out)
    assert out.exists() and not os.path.exists(f"{out}.partial")
    assert not os.path.exists(f"{out}.partial.ckpt")
    r = load(out)
    assert np.array_equal(r.g_ema, m.g_ema) and np.array_equal(r.d_theta, m.d_theta)
    np.testing.assert_allclose(r.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(r.std, x.std(0), rtol=1e-14)
    assert np.array_equal(r.sample(20, seed=2), m.sample(20, seed=2))
    assert r.logs["value"].shape == (10,) and r.step == 10
    from nonequil.store import describe

    text = describe(str(out))
    assert "model" in text.splitlines()[0] and "generator/" in text and "latent = normal" in text


def test_resume_after_interruption_is_bitwise(tmp_path):
    """A run stopped by an exception after a checkpoint (step 12 of 30) and resumed equals an
    uninterrupted run, bit for bit, in every array of the model file."""
    x = np.random.default_rng(8).standard_normal((200, 2))
    kw = dict(SMALL, steps=30, instance_noise=0.5, label_smoothing=0.1, k=2)
    ref = tmp_path / "ref.h5"
    train_gan(x, **kw, out=ref)
    out = tmp_path / "m.h5"

    class Stop(Exception):
        pass

    def stop(info):
        if info["step"] == 13:
            raise Stop

    with pytest.raises(Stop):
        train_gan(x, **kw, out=out, checkpoint_steps=4, callback=stop)
    assert not out.exists() and os.path.exists(f"{out}.partial.ckpt")
    train_gan(x, **kw, out=out, resume=True)
    a, b = _arrays(ref), _arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    with pytest.raises(InputError, match="already complete"):
        train_gan(x, **kw, out=out, resume=True)


def test_resume_refuses_other_settings(tmp_path):
    x = np.random.default_rng(9).standard_normal((100, 1))
    out = tmp_path / "m.h5"

    def stop(info):
        if info["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(x, **SMALL, steps=10, out=out, checkpoint_steps=2, callback=stop)
    with pytest.raises(InputError, match="differing fields: lr_g"):
        train_gan(x, **SMALL, steps=10, lr_g=5e-4, out=out, resume=True)


def test_resume_without_checkpoint_restarts_with_warning(tmp_path):
    x = np.random.default_rng(11).standard_normal((100, 1))
    msgs = []
    out = tmp_path / "m.h5"
    m = train_gan(x, **SMALL, steps=5, out=out, resume=True, warn=msgs.append)
    assert m.step == 5 and out.exists()
    assert len(msgs) == 1 and "no usable checkpoint" in msgs[0] and "step 0" in msgs[0]
    ref = train_gan(x, **SMALL, steps=5)
    assert np.array_equal(ref.g_theta, load(out).g_theta)


def test_nonfinite_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    """A learning rate of 1e300 overflows the weights: the run stops with a RunError naming
    the step, the partial file and the last good checkpoint, and --out does not exist."""
    x = np.random.default_rng(10).standard_normal((100, 1))
    out = tmp_path / "m.h5"
    with pytest.raises(RunError) as e:
        train_gan(x, **SMALL, steps=50, lr_d=1e300, lr_g=1e300, out=out)
    msg = str(e.value)
    assert "non-finite" in msg and "generator step" in msg and f"{out}.partial.ckpt" in msg
    assert not out.exists() and os.path.exists(f"{out}.partial.ckpt")
    from nonequil.store import read_checkpoint

    meta, arrs = read_checkpoint(f"{out}.partial.ckpt")
    assert all(np.isfinite(v).all() for v in arrs.values())


def test_config_from_sets():
    c = config_from_sets({"k": "2", "loss": "minimax", "clip": "inf", "lr_d": "2e-4"}, steps=5)
    assert (c.k, c.loss, c.clip, c.lr_d, c.steps) == (2, "minimax", math.inf, 2e-4, 5)
    with pytest.raises(InputError, match="valid: latent, latent_dim"):
        config_from_sets({"widht": "3"})
    with pytest.raises(InputError, match="k must be an integer"):
        config_from_sets({"k": "0"}).validate()
    with pytest.raises(InputError, match="loss 'wgan'; valid: nonsaturating, minimax"):
        config_from_sets({"loss": "wgan"}).validate()


# ------------------------------------------------------------------ CLI
def _run(args, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gan_cli")
    rng = np.random.default_rng(18)
    with h5py.File(d / "good.h5", "w") as f:
        f["samples"] = 5.0 + 2.0 * rng.standard_normal(300)
    with h5py.File(d / "spins.h5", "w") as f:
        f["samples"] = np.where(rng.random((300, 3, 3)) < 0.7, 1, -1).astype(np.int8)
    bad = rng.standard_normal((6, 3))
    bad[4, 2] = np.nan
    with h5py.File(d / "nan.h5", "w") as f:
        f["samples"] = bad
    with h5py.File(d / "one.h5", "w") as f:
        f["samples"] = np.ones((1, 2))
    with h5py.File(d / "other.h5", "w") as f:
        f["data"] = np.ones((10, 2))
    (d / "text.h5").write_text("not hdf5\n")
    small = ["--set", "g_width=16", "--set", "d_width=16", "--set", "latent_dim=2"]
    r = _run(["gan", d / "good.h5", "--steps", "40", "--batch", "64", *small, "--quiet",
              "--out", d / "gan.h5"])
    assert r.returncode == 0, r.stderr
    r = _run(["gan", d / "spins.h5", "--steps", "20", "--batch", "64", *small, "--quiet",
              "--out", d / "gan_spins.h5"])
    assert r.returncode == 0, r.stderr
    return d


def test_cli_help_lists_common_flags():
    r = _run(["gan", "--help"], timeout=120)
    assert r.returncode == 0
    for flag in ("--quiet", "--debug", "--seed", "--device", "--out", "--resume", "--set",
                 "--dataset", "--steps", "--batch"):
        assert flag in r.stdout, flag


@pytest.mark.parametrize("name,args,needle", [
    ("missing", ["{d}/none.h5"], "does not exist"),
    ("not-hdf5", ["{d}/text.h5"], "is not an HDF5 file"),
    ("no-dataset", ["{d}/other.h5"], "has no dataset /samples"),
    ("nan-row", ["{d}/nan.h5"], "row 4 (0-based), column 2"),
    ("one-sample", ["{d}/one.h5"], "at least 2 are needed"),
    ("unknown-set", ["{d}/good.h5", "--set", "widht=3"], "valid: "),
    ("bad-value", ["{d}/good.h5", "--set", "lr_d=fast"], "lr_d=fast"),
    ("bad-choice", ["{d}/good.h5", "--set", "latent=cauchy"], "valid: normal, uniform"),
    ("cuda", ["{d}/good.h5", "--device", "cuda"], "CPU only"),
    ("exists", ["{d}/good.h5", "--out", "{d}/gan.h5"], "already exists"),
])
def test_cli_bad_input(files, tmp_path, name, args, needle):
    out = tmp_path / "m.h5"
    args = [a.format(d=files) for a in args]
    if "--out" not in args:
        args += ["--out", out]
    r = _run(["gan"] + args + ["--steps", "3"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not os.path.exists(f"{out}.partial")


def test_cli_progress_and_note(files, tmp_path):
    out = tmp_path / "m.h5"
    r = _run(["gan", files / "good.h5", "--steps", "5", "--batch", "1000", "--out", out])
    assert r.returncode == 0, r.stderr
    assert "batch 1000 is larger than the 300 samples" in r.stderr
    assert "gan: step 5/5" in r.stderr and "D real" in r.stderr and "JS~" in r.stderr
    assert load(out).config.batch == 1000


def test_cli_sample_from_gan_layout(files, tmp_path):
    """``sample GAN.h5`` writes /samples[n, *data_shape] in data units (float64), or int8
    spins for binary data, with the sample attributes; sample i depends only on (seed, i)."""
    out = tmp_path / "s.h5"
    r = _run(["sample", files / "gan.h5", "--n", "40", "--seed", "3", "--out", out])
    assert r.returncode == 0, r.stderr
    m = load(files / "gan.h5")
    with h5py.File(out, "r") as f:
        x = f["samples"][()]
        at = dict(f["samples"].attrs)
        assert "provenance" in f
    assert x.shape == (40,) and x.dtype == np.float64
    assert np.array_equal(x, m.sample(40, seed=3))
    assert at["sampler"] == "gan" and at["source_kind"] == "gan model" and at["model_step"] == 40
    part = tmp_path / "p.h5"
    r = _run(["sample", files / "gan.h5", "--n", "5", "--first-sample", "10", "--seed", "3",
              "--out", part, "--quiet"])
    assert r.returncode == 0 and r.stderr == ""
    with h5py.File(part, "r") as f:
        assert np.array_equal(f["samples"][()], x[10:15])
    sp = tmp_path / "sp.h5"
    r = _run(["sample", files / "gan_spins.h5", "--n", "30", "--out", sp, "--quiet"])
    assert r.returncode == 0, r.stderr
    with h5py.File(sp, "r") as f:
        s = f["samples"][()]
    assert s.shape == (30, 3, 3) and s.dtype == np.int8 and set(np.unique(s)) <= {-1, 1}
    ms = load(files / "gan_spins.h5")
    assert ms.data_encoding == "spins"
    with h5py.File(files / "gan_spins.h5", "r") as f:
        assert "sign at sampling" in f["model"].attrs["relaxation"]


@pytest.mark.parametrize("flag", [["--sampler", "ode"], ["--steps", "10"],
                                  ["--set", "snr=0.1"], ["--device", "cuda"]])
def test_cli_sample_gan_refuses_score_options(files, tmp_path, flag):
    out = tmp_path / "s.h5"
    r = _run(["sample", files / "gan.h5", "--n", "5", *flag, "--out", out])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag[0] in lines[0]
    assert not out.exists() and not os.path.exists(f"{out}.partial")


@pytest.mark.slow
def test_cli_sigkill_resume_is_bitwise(files, tmp_path):
    """SIGKILL a CLI GAN run (checkpoint every 0.2 s) after it has written a mid-run
    checkpoint, resume with --resume, and compare every array of the model file with an
    uninterrupted run's, bit for bit."""
    args = ["gan", files / "good.h5", "--steps", "3000", "--batch", "64", "--set",
            "g_width=16", "--set", "d_width=16", "--checkpoint-every", "0.2", "--quiet"]
    ref = tmp_path / "ref.h5"
    r = _run(args + ["--out", ref])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "m.h5"
    ckpt = f"{out}.partial.ckpt"
    p = subprocess.Popen(CLI + [str(a) for a in args] + ["--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t = time.time()
    while not os.path.exists(ckpt + ".prev") and p.poll() is None and time.time() - t < 300:
        time.sleep(0.01)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    assert killed, "the run finished before it could be killed"
    assert not out.exists()
    with h5py.File(f"{out}.partial", "r"):
        pass
    r = _run(args + ["--out", out, "--resume"])
    assert r.returncode == 0, r.stderr
    a, b = _arrays(ref), _arrays(out)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_gan_purposes_are_the_ones_reserved_in_philox():
    from kernels import philox
    from nonequil import gan

    assert gan.PURPOSE_GAN == philox.PURPOSE_GAN == 64
