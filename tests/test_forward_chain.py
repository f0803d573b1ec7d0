"""Forward chains of diffusion models (vp, subvp, ve) on the OU lane kernels (issue 4).

``nonequil simulate --process vp|subvp|ve`` runs the exact Gaussian transition of the SDE
between t_n = n dt and t_{n+1} through ``kernels.langevin_cpu.ou_lanes`` (per-step
coefficients from ``nonequil.processes.chain_coefficients``).  Checked here:

* the kernel equals a NumPy recursion with the same Philox normals, bit for bit;
* stored trajectories of a known dataset match the exact marginals (stochastic: mean and
  variance within z SE, z = 5, and a KS test against the exact mixture CDF);
* chunking (across the coefficient-table block boundary) and resume are bitwise;
* CPU equals the CUDA simulator, bit for bit (the simulator runs the same float64 maths;
  on a real GPU, fused multiply-adds may change the last bits: see kernels/langevin_cuda.py);
* bad input gives one ``error:`` line and no output file.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special, stats

from nonequil import processes
from nonequil.simulate import Plan, SimulationConfig, simulate

h5py = pytest.importorskip("h5py")

Z = 5.0                       # z of every stochastic bound in this file
# the x0 dataset: coordinate 0 a two-component Gaussian mixture, coordinate 1 a Gaussian
MIX_W = np.array([0.3, 0.7])
MIX_MU = np.array([-2.0, 1.5])
MIX_SD = np.array([0.3, 0.5])
G_MU, G_SD = 1.0, 0.4
CASES = {
    "vp-linear": ("vp", {}, 1000, 1e-3),
    "vp-loglinear": ("vp", {"schedule": "loglinear"}, 1000, 1e-3),
    "subvp-cosine": ("subvp", {"schedule": "cosine", "s": 0.01}, 900, 1e-3),
    "ve": ("ve", {"sigma_min": 0.02, "sigma_max": 5.0}, 1000, 1e-3),
}


def _dataset(n, seed=1234):
    """n rows of the 2-D x0 law (test-side draws; the library never uses np.random)."""
    rng = np.random.default_rng(seed)
    comp = (rng.random(n) < MIX_W[0]).astype(int) ^ 1        # 0 with probability 0.3
    x = np.empty((n, 2))
    x[:, 0] = MIX_MU[comp] + MIX_SD[comp] * rng.standard_normal(n)
    x[:, 1] = G_MU + G_SD * rng.standard_normal(n)
    return x


def _sde(process, params):
    from nonequil.models import make_process

    p = dict(params)
    return make_process(process, p.pop("schedule", "linear"), p)


def _exact_moments(m, v):
    """Mean, variance and CDF of x_t = m x_0 + sqrt(v) z for both coordinates."""
    mus, sds = m * MIX_MU, np.sqrt(m * m * MIX_SD**2 + v)
    mean0 = float(MIX_W @ mus)
    var0 = float(MIX_W @ (sds**2 + mus**2)) - mean0**2

    def cdf0(x):
        return sum(w * special.ndtr((x - mu) / sd) for w, mu, sd in zip(MIX_W, mus, sds))
    sd1 = math.sqrt(m * m * G_SD**2 + v)
    return [(mean0, var0, cdf0), (m * G_MU, sd1**2, stats.norm(m * G_MU, sd1).cdf)]


# ------------------------------------------------------------------ kernel == NumPy
@pytest.mark.parametrize("method", ["exact", "em"])
def test_kernel_equals_numpy_recursion(method):
    """x_{n+1} = A_n x_n + B_n + C_n z_n with z from the documented Philox stream, in NumPy."""
    from kernels import philox, streams

    M, D, S, dt, seed = 37, 3, 50, 0.01, 77
    x0 = _dataset(M * D).reshape(-1)[:M * D].reshape(M, D)
    r = simulate(process="vp", x0=x0, steps=S, dt=dt, seed=seed, record_every=1,
                 method=method, first_walker=5)
    sde = _sde("vp", {})
    A, B, C = processes.chain_coefficients(sde, dt, 0, S, method)
    z = np.empty((M, S * D))
    streams.normals(np.uint64(seed), np.uint64(philox.PURPOSE_NOISE), 5, 0, z)
    x = x0.copy()
    traj = [x.copy()]
    for n in range(S):
        x = A[n] * x + B[n] + C[n] * z[:, n * D:(n + 1) * D]
        traj.append(x.copy())
    assert np.array_equal(r.frames["position"], np.array(traj))


def test_coefficients_are_the_exact_transition():
    """Composing the per-step maps gives the marginal's mean coefficient and variance."""
    for name, (process, params, S, dt) in CASES.items():
        sde = _sde(process, params)
        A, B, C = processes.chain_coefficients(sde, dt, 0, S)
        m, v = 1.0, 0.0
        for n in range(S):
            m, v = A[n] * m, A[n] ** 2 * v + C[n] ** 2
        t = S * dt
        assert math.isclose(m, float(sde.mean_coeff(t)), rel_tol=1e-9), name
        assert math.isclose(v, float(sde.variance(t)), rel_tol=1e-9), name
        assert not B.any()


# ------------------------------------------------------------------ exact marginals
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_exact_marginal(name, tmp_path):
    """Stochastic (z = 5; KS p > 1e-4 at each of 4 times x 2 coordinates): a dataset noised
    by the CLI run with --init has, at every recorded t, the exact marginal of the SDE."""
    from nonequil import cli

    process, params, S, dt = CASES[name]
    N = 40000
    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        f["samples"] = _dataset(N)
    out = tmp_path / "fwd.h5"
    sets = [f"--set={k}={v}" for k, v in params.items()]
    rc = cli.main(["simulate", "--process", process, *sets, "--init", str(data),
                   "--steps", str(S), "--dt", str(dt), "--record-every", str(S // 4),
                   "--seed", "21", "--quiet", "--out", str(out)])
    assert rc == 0
    sde = _sde(process, params)
    with h5py.File(out, "r") as f:
        pos = f["particles/ensemble/position"]
        xs, times = pos["value"][()], pos["time"][()]
        attrs = dict(f["parameters"].attrs)
    assert xs.shape == (5, N, 2) and np.array_equal(xs[0], _dataset(N))
    assert attrs["process"] == process and attrs["method"] == "exact"
    if "schedule" in params:
        assert attrs["schedule"] == params["schedule"]
    for k in range(1, 5):
        t = times[k]
        assert math.isclose(t, k * (S // 4) * dt)
        m, v = float(sde.mean_coeff(t)), float(sde.variance(t))
        for d, (mean, var, cdf) in enumerate(_exact_moments(m, v)):
            x = xs[k, :, d]
            se_mean = math.sqrt(var / N)
            c = x - x.mean()
            se_var = math.sqrt(np.mean((c * c - c.var()) ** 2) / N)
            assert abs(x.mean() - mean) < Z * se_mean, (name, t, d, x.mean(), mean)
            assert abs(x.var() - var) < Z * se_var, (name, t, d, x.var(), var)
            assert stats.kstest(x, cdf).pvalue > 1e-4, (name, t, d)


def test_marginal_test_would_catch_a_wrong_variance():
    """The check above is not vacuous: the VP marginal with the sub-VP variance fails it."""
    sde, N, t = _sde("vp", {}), 40000, 0.3
    r = simulate(process="subvp", x0=_dataset(N), steps=300, dt=1e-3, seed=21,
                 record_every=300)
    x = r.frames["position"][-1, :, 1]
    mean, var, cdf = _exact_moments(float(sde.mean_coeff(t)), float(sde.variance(t)))[1]
    c = x - x.mean()
    se_var = math.sqrt(np.mean((c * c - c.var()) ** 2) / N)
    assert abs(x.var() - var) > Z * se_var
    assert stats.kstest(x, cdf).pvalue < 1e-4


# ------------------------------------------------------------------ invariance, resume
def test_chunking_and_walker_subsets_do_not_change_bits():
    """Across the CHAIN_BLOCK boundary (step 4096), for several chunkings, float32 too."""
    kw = dict(process="vp", params={"schedule": "cosine"}, x0=[0.5, -1.0], steps=4200,
              dt=2e-4, seed=8, record_every=700)
    ref = simulate(walkers=21, **kw).frames
    for chunk in (1000, 4095, 97):
        got = simulate(walkers=21, max_chunk_steps=chunk, **kw).frames
        assert np.array_equal(got["position"], ref["position"]), chunk
    sub = simulate(walkers=9, first_walker=7, max_chunk_steps=333, **kw).frames
    assert np.array_equal(sub["position"], ref["position"][:, 7:16])
    f32 = simulate(walkers=21, precision="float32", **kw).frames["position"]
    f32b = simulate(walkers=21, precision="float32", max_chunk_steps=500, **kw)
    assert f32.dtype == np.float32 and np.array_equal(f32, f32b.frames["position"])


def test_interrupt_then_resume_is_bitwise(tmp_path, capsys):
    """Ctrl-C from the progress callback leaves a checkpoint; --resume completes it bitwise."""
    from nonequil import cli

    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        f["samples"] = _dataset(300)
    args = ["simulate", "--process", "ve", "--set", "sigma_max=3", "--init", str(data),
            "--steps", "5000", "--dt", "2e-4", "--record-every", "250", "--seed", "4",
            "--quiet"]
    ref = tmp_path / "ref.h5"
    assert cli.main(args + ["--out", str(ref)]) == 0
    out = tmp_path / "run.h5"
    mp = pytest.MonkeyPatch()

    def stop(self, info):
        if 1000 <= info["step"] < info["steps"]:
            raise KeyboardInterrupt
    from nonequil import simulate as sim
    mp.setattr(cli.Progress, "__call__", stop)
    mp.setattr(sim, "_chunks", _small_chunks(sim._chunks))
    try:
        assert cli.main(args + ["--out", str(out)]) == 130
    finally:
        mp.undo()
    assert not out.exists() and os.path.exists(str(out) + ".partial.ckpt")
    from nonequil.store import read_checkpoint

    assert 1000 <= read_checkpoint(str(out) + ".partial.ckpt")[0]["step"] < 5000
    capsys.readouterr()
    assert cli.main(args + ["--out", str(out), "--resume"]) == 0
    assert "restarting" not in capsys.readouterr().err
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        for k in ("value", "step", "time"):
            key = f"particles/ensemble/position/{k}"
            x, y = a[key][()], b[key][()]
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), k
        assert dict(a["parameters"].attrs).keys() == dict(b["parameters"].attrs).keys()


def _small_chunks(chunks):
    """Wrap the driver's chunk loop so that chunks are at most 700 steps (several commits)."""
    def wrapped(plan, s_start, chunk_seconds, max_chunk_steps, on_chunk):
        return chunks(plan, s_start, chunk_seconds, 700, on_chunk)
    return wrapped


# ------------------------------------------------------------------ CPU == CUDA simulator
CUDA_SCRIPT = r"""
import json
import numpy as np
from nonequil.simulate import simulate
out = {}
x0 = np.linspace(-2.0, 2.0, 2 * %(M)d).reshape(%(M)d, 2)
for name, kw in [("vp", dict(process="vp", params={"schedule": "cosine"})),
                 ("subvp-em", dict(process="subvp", method="em")),
                 ("ve", dict(process="ve", params={"sigma_max": 3.0}))]:
    r = simulate(**kw, x0=x0, steps=%(S)d, dt=1.0 / %(S)d * 0.99, seed=3, record_every=7,
                 first_walker=5, device="%(dev)s", max_chunk_steps=20)
    out[name] = r.frames["position"].tolist()
print(json.dumps(out))
"""


@pytest.mark.cudasim
def test_cpu_equals_cuda_simulator():
    """The CUDA kernel under NUMBA_ENABLE_CUDASIM gives the CPU kernel's bits."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(dev, **env):
        e = dict(os.environ, **env)
        e["PYTHONPATH"] = root + os.pathsep + e.get("PYTHONPATH", "")
        res = subprocess.run([sys.executable, "-c", CUDA_SCRIPT % dict(M=64, S=50, dev=dev)],
                             env=e, capture_output=True, text=True, timeout=600, cwd=root)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout.strip().splitlines()[-1])
    cpu = run("cpu")
    gpu = run("cuda", NUMBA_ENABLE_CUDASIM="1")
    assert cpu.keys() == gpu.keys()
    for k in cpu:
        a, b = np.array(cpu[k]), np.array(gpu[k])
        assert a.shape == (9, 64, 2) and np.array_equal(a, b), k


# ------------------------------------------------------------------ bad input
def _cli(args, tmp_path):
    out = tmp_path / "o.h5"
    res = subprocess.run([sys.executable, "-m", "nonequil.cli", "simulate", *args,
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    return res, out


BAD = {
    "unknown process": (["--process", "vpp", "--walkers", "3"], "invalid choice: 'vpp'"),
    "unknown schedule": (["--process", "vp", "--set", "schedule=quadratic", "--walkers", "3"],
                         "valid: linear, cosine, loglinear"),
    "bad schedule parameter": (["--process", "vp", "--set", "beta_min=30", "--walkers", "3"],
                               "beta_min < beta_max"),
    "unknown key": (["--process", "subvp", "--set", "schedule=cosine", "--set", "beta_max=3",
                     "--walkers", "3"], "valid: schedule, s, alpha_bar_min"),
    "schedule for ve": (["--process", "ve", "--set", "schedule=linear", "--walkers", "3"],
                        "valid: sigma_min, sigma_max"),
    "ve order": (["--process", "ve", "--set", "sigma_max=0.001", "--walkers", "3"],
                 "0 < sigma_min < sigma_max"),
    "protocol": (["--process", "vp", "--set", "beta_max=5:10", "--walkers", "3"],
                 "expected one finite number"),
    "past t_max": (["--process", "subvp", "--set", "schedule=cosine", "--walkers", "3",
                    "--steps", "1000", "--dt", "1e-3"], "t_max = 0.99"),
    "init missing": (["--process", "ve", "--init", "/nonexistent/data.h5"],
                     "/nonexistent/data.h5"),
    "absorb": (["--process", "vp", "--absorb", "x>=1", "--walkers", "3"], "--absorb"),
    "boltzmann": (["--process", "vp", "--x0", "boltzmann", "--walkers", "3"], "--init"),
    "em unstable": (["--process", "vp", "--method", "em", "--walkers", "3", "--steps", "2",
                     "--dt", "0.45"], "beta(t) dt < 4"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gives_one_error_line(name, tmp_path):
    args, needle = BAD[name]
    if "--steps" not in args:
        args = args + ["--steps", "100", "--dt", "1e-3"]
    res, out = _cli(args, tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists() and not os.path.exists(str(out) + ".partial")


def test_plan_rejects_nan_parameter():
    from nonequil.errors import InputError

    with pytest.raises(InputError, match="beta_max"):
        Plan(SimulationConfig(process="vp", params={"beta_max": float("nan")}, walkers=2))
