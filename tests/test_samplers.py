"""Reverse samplers (nonequil/samplers.py, kernels/reverse_cpu.py, kernels/reverse_cuda.py).

Oracles: the exact scores of nonequil.score (a correlated 2-D Gaussian, a 1-D two-component
mixture) under the VP SDE, the exact law of a linear chain for the order of the schemes, and
the exact reverse posterior of the binomial chain on a product law of bits.

Stochastic tests (labelled in their docstrings) use fixed seeds and z = 5 standard errors;
KS and chi-square tests require p > 1e-6.  Deterministic tests: engine parity, batching
invariance, the ODE's quantile map, the schemes' orders, the CLI.
"""
import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy import stats

from nonequil import processes, samplers, score
from nonequil.errors import InputError

Z = 5.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDE = processes.make("vp")

GAUSS_MEAN = np.array([1.5, -0.5])
GAUSS_COV = np.array([[0.25, 0.1], [0.1, 0.5]])
MIX_W = np.array([0.3, 0.7])
MIX_MU = np.array([-1.5, 1.0])
MIX_VAR = np.array([0.09, 0.25])

# steps giving a discretisation bias well below the statistical error at these sizes
STEPS = {"em": 500, "ancestral": 1000, "ode": 200, "pc": 300}


def _gauss():
    return score.GaussianScore(GAUSS_MEAN, GAUSS_COV, SDE)


def _mixture():
    return score.MixtureScore(MIX_W, MIX_MU, MIX_VAR, SDE)


def _mix_cdf(x, m=1.0, v=0.0):
    """CDF of the mixture pushed to a time with mean coefficient m and variance v."""
    sd = np.sqrt(m * m * MIX_VAR + v)
    return np.sum(MIX_W * stats.norm.cdf((np.asarray(x)[..., None] - m * MIX_MU) / sd), -1)


def _mix_moments():
    mean = float(MIX_W @ MIX_MU)
    var = float(MIX_W @ (MIX_VAR + MIX_MU**2)) - mean**2
    return mean, var


def _check_mean_var(x, mean, var, what):
    """|mean - mu| <= Z SE and |var - sigma^2| <= Z SE (SE of the variance from the sample's
    fourth central moment)."""
    n = x.size
    se_m = math.sqrt(var / n)
    c = x - x.mean()
    se_v = math.sqrt(max(np.mean(c**4) - np.mean(c**2) ** 2, 1e-300) / n)
    assert abs(x.mean() - mean) <= Z * se_m, f"{what}: mean {x.mean()} vs {mean} (SE {se_m})"
    assert abs(x.var() - var) <= Z * se_v, f"{what}: var {x.var()} vs {var} (SE {se_v})"


# ------------------------------------------------------------------------- registry
def test_registry_and_unknown_sampler_lists_valid_names():
    assert list(samplers.SAMPLERS) == ["em", "ancestral", "ode", "pc", "binomial"]
    with pytest.raises(InputError) as e:
        samplers.sample(_gauss(), 4, "langevin")
    for name in samplers.SAMPLERS:
        assert name in str(e.value)
    with pytest.raises(InputError, match="valid: snr, n_corrector, predictor, pilot, denoise"):
        samplers.sample(_gauss(), 4, "pc", steps=3, snrr=0.1)
    with pytest.raises(InputError, match="steps"):
        samplers.sample(_gauss(), 4, "em", steps=0)
    with pytest.raises(InputError, match="continuous-time"):
        samplers.sample(_ddpm_model(), 4, "ode")
    with pytest.raises(InputError, match="binomial-chain model"):
        samplers.sample(_gauss(), 4, "binomial")
    with pytest.raises(InputError, match="MLP score model"):
        samplers.sample(_gauss(), 4, "em", steps=3, device="cuda")


def test_defaults():
    assert samplers.default_sampler(_gauss()) == "ode"
    assert samplers.default_steps(_gauss()) == 500
    assert samplers.default_steps(_gauss(), "em") == 1000
    assert samplers.default_sampler(_ddpm_model()) == "ancestral"
    assert samplers.default_steps(_ddpm_model()) == 1000


# ------------------------------------------------------------------------- exact laws
@pytest.mark.parametrize("name", ["em", "ancestral", "ode", "pc"])
def test_gaussian_exact_score(name):
    """Stochastic: 4000 samples with the exact score of a correlated 2-D Gaussian; each
    coordinate's mean and variance within 5 SE, the covariance within 5 SE, KS p > 1e-6."""
    r = samplers.sample(_gauss(), 4000, name, steps=STEPS[name], seed=7)
    x = r.samples
    assert x.shape == (4000, 2) and np.all(np.isfinite(x))
    for d in range(2):
        _check_mean_var(x[:, d], GAUSS_MEAN[d], GAUSS_COV[d, d], f"{name} coordinate {d}")
        p = stats.kstest(x[:, d], "norm", args=(GAUSS_MEAN[d], math.sqrt(GAUSS_COV[d, d]))).pvalue
        assert p > 1e-6, f"{name} coordinate {d}: KS p = {p}"
    prod = (x[:, 0] - GAUSS_MEAN[0]) * (x[:, 1] - GAUSS_MEAN[1])
    se = prod.std() / math.sqrt(prod.size)
    assert abs(prod.mean() - GAUSS_COV[0, 1]) <= Z * se


@pytest.mark.parametrize("name", ["em", "ancestral", "ode", "pc"])
def test_mixture_exact_score(name):
    """Stochastic: 4000 samples with the exact score of a 1-D two-component mixture: mean and
    variance within 5 SE, KS against the mixture CDF p > 1e-6, and the weight of the left
    component (the mass below 0, where the components barely overlap) within 5 SE."""
    r = samplers.sample(_mixture(), 4000, name, steps=STEPS[name], seed=11)
    x = r.samples[:, 0]
    mean, var = _mix_moments()
    _check_mean_var(x, mean, var, name)
    p = stats.kstest(x, _mix_cdf).pvalue
    assert p > 1e-6, f"{name}: KS p = {p}"
    w_left = float(_mix_cdf(0.0))
    se = math.sqrt(w_left * (1 - w_left) / x.size)
    assert abs(np.mean(x < 0) - w_left) <= Z * se


def test_ode_is_deterministic_quantile_map():
    """Deterministic: the probability-flow ODE maps the quantiles of the exact terminal
    marginal p_T onto the quantiles of p_{t_eps} (a 1-D flow preserves order), to 1e-3 in
    CDF with 200 Heun steps; and the sampler's output depends on the prior draw only."""
    model = samplers.ExactModel(_mixture())
    u = (np.arange(199) + 0.5) / 199
    mT, vT = float(SDE.mean_coeff(1.0)), float(SDE.variance(1.0))
    grid = np.linspace(-6, 6, 200001)
    yT = np.interp(u, _mix_cdf(grid, mT, vT), grid)
    y0 = samplers.transport(model, yT[:, None], "ode", steps=200)[:, 0]
    te = model.t_eps
    got = _mix_cdf(y0, float(SDE.mean_coeff(te)), float(SDE.variance(te)))
    assert np.max(np.abs(got - u)) < 1e-3
    assert np.all(np.diff(y0) > 0)
    a = samplers.sample(model, 300, "ode", steps=50, seed=3).samples
    b = samplers.sample(model, 300, "ode", steps=50, seed=3).samples
    assert np.array_equal(a, b)
    prior = samplers._prior(model, 3, 0, 300)
    assert np.array_equal(samplers.transport(model, prior, "ode", steps=50), a)


def test_rk45_ode_matches_heun():
    """Deterministic: adaptive RK45 and 400-step Heun give the same ODE map (to 1e-4)."""
    model = samplers.ExactModel(_mixture())
    y = np.linspace(-2.5, 2.5, 41)[:, None]
    a = samplers.transport(model, y, "ode", steps=400)
    b = samplers.transport(model, y, "ode", method="rk45", rtol=1e-8, atol=1e-8)
    assert np.max(np.abs(a - b)) < 1e-4


def _linear_law(plan, mu, c):
    """Exact mean and variance of the plan's output for 1-D Gaussian data N(mu, c) and the
    exact eps (affine in y), propagated through the stage coefficients (no sampling)."""
    t0 = plan.grid[0]
    m0 = float(SDE.mean_coeff(t0))
    mean, var = m0 * mu, m0 * m0 * c + float(SDE.variance(t0))      # the exact p_T
    mu_u = var_u = 0.0
    d_aff = None
    cov_yu = 0.0
    for s in range(plan.S):
        t = plan.times[s]
        m, v = float(SDE.mean_coeff(t)), float(SDE.variance(t))
        lam = m * m * c + v
        # eps_hat = sigma (x - m mu) / lam = e1 x + e0
        e1, e0 = math.sqrt(v) / lam, -math.sqrt(v) * m * mu / lam
        c0, c1, c2, c3 = plan.coef[s]
        k = plan.kinds[s]
        if k == 0:
            g1, g0 = c0 + c1 * e1, c1 * e0
            mean, var = g1 * mean + g0, g1 * g1 * var + c2 * c2
        elif k == 1:          # d = c0 y + c1 o(y); u = y + c3 d: u is affine in y
            p1, p0 = c0 + c1 * e1, c1 * e0
            d_aff = (p1, p0)
            mu_u, var_u = (1 + c3 * p1) * mean + c3 * p0, (1 + c3 * p1) ** 2 * var
            cov_yu = (1 + c3 * p1) * var
        else:                 # y <- y + c3 (d + c0 u + c1 o(u))
            p1, p0 = d_aff
            q1, q0 = c0 + c1 * e1, c1 * e0
            # y' = (1 + c3 p1) y + c3 q1 u + c3 (p0 + q0), u = (1 + c3 p1') y + ...
            a_y, a_u = 1 + c3 * p1, c3 * q1
            mean = a_y * mean + a_u * mu_u + c3 * (p0 + q0)
            var = a_y**2 * var + a_u**2 * var_u + 2 * a_y * a_u * cov_yu
    return mean, var


@pytest.mark.parametrize("name,order", [("em", 1), ("ancestral", 1), ("ode", 2)])
def test_weak_order_of_the_schemes(name, order):
    """Deterministic: for Gaussian data the chain is linear, so the exact law of the output
    follows from the stage coefficients; the error of its variance falls with the steps at the
    order the scheme declares (log-log slope within 0.25 of -order)."""
    mu, c = 0.7, 0.3
    gs = score.GaussianScore([mu], [c], SDE)
    model = samplers.ExactModel(gs)
    te = model.t_eps
    target = float(SDE.mean_coeff(te)) ** 2 * c + float(SDE.variance(te))
    ks = [50, 100, 200, 400]
    errs = []
    for k in ks:
        opts = {"denoise": False} if name in ("em", "ode") else {}
        plan = samplers.prepare(model, name, k, **opts)["plan"]
        errs.append(abs(_linear_law(plan, mu, c)[1] - target))
    slope = np.polyfit(np.log(ks), np.log(errs), 1)[0]
    assert abs(slope + order) < 0.25, (name, errs, slope)


# ------------------------------------------------------------------------- MLP engines
def _mlp_model(width=16, depth=2, dim=2, dtype="float64", param="eps", process="vp", seed=0,
               encoding=None):
    from kernels import mlp_cpu
    from nonequil.models import MLPScoreModel, ModelConfig

    cfg = ModelConfig(width=width, depth=depth, n_freq=3, dtype=dtype, parametrisation=param,
                      process=process)
    rng = np.random.default_rng(seed)
    sizes = MLPScoreModel.layer_sizes(cfg, dim)
    P = mlp_cpu.n_params(mlp_cpu.mlp_layout(sizes))
    m = MLPScoreModel.create(cfg, (dim,), np.linspace(-1, 1, dim), np.linspace(0.5, 2, dim),
                             rng.standard_normal(P), data_encoding=encoding)
    m.ema = (m.theta + 0.05 * rng.standard_normal(P)).astype(dtype)
    return m


def _pca_model(dim=2):
    """A whitened model with the Gaussian term (normalize=pca, gaussian_term=True)."""
    from kernels import mlp_cpu
    from nonequil.models import MLPScoreModel, ModelConfig

    cfg = ModelConfig(width=16, depth=2, n_freq=3, normalize="pca", gaussian_term=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, dim)) @ np.array([[1.0, 0.6], [0.0, 0.4]])[:dim, :dim] + 2.0
    mean, std, W, Winv = MLPScoreModel.fit_normalisation(x, "pca")
    P = mlp_cpu.n_params(mlp_cpu.mlp_layout(MLPScoreModel.layer_sizes(cfg, dim)))
    return MLPScoreModel.create(cfg, (dim,), mean, std, rng.standard_normal(P), whiten=W,
                                unwhiten=Winv)


def _ddpm_model():
    return _mlp_model(width=4, depth=1, dim=1, process="ddpm")


@pytest.mark.parametrize("engine", ["auto", "fused"])
@pytest.mark.parametrize("name", ["em", "ancestral", "ode", "pc"])
def test_batching_and_first_sample_bitwise(name, engine, monkeypatch):
    """Deterministic: the same samples and frames whether drawn in batches of 7 or all at
    once, and samples 13..41 drawn alone equal them inside the larger run (the auto engine,
    i.e. sharded, here with shards of 16 rows so that a batch spans several shards and the
    padded last one; and the fused engine)."""
    monkeypatch.setattr(samplers, "SHARD_ROWS", 16)
    m = _mlp_model()
    opts = {"pilot": 16} if name == "pc" else {}
    kw = dict(steps=12, seed=5, record_every=5, engine=engine, **opts)
    ref = samplers.sample(m, 50, name, **kw)
    b7 = samplers.sample(m, 50, name, batch=7, **kw)
    sub = samplers.sample(m, 29, name, first_sample=13, **kw)
    want = samplers.AUTO_ENGINE["float64"] if engine == "auto" else engine
    assert ref.info["engine"] == want
    assert np.array_equal(ref.samples, b7.samples)
    assert np.array_equal(ref.frames, b7.frames)
    assert np.array_equal(ref.samples[13:42], sub.samples)
    assert np.array_equal(ref.frames[:, 13:42], sub.frames)
    assert list(ref.frame_steps) == [0, 5, 10, 12]


def test_batching_bitwise_exact_score():
    """Deterministic: batch invariance on the Python engine with an exact score."""
    a = samplers.sample(_mixture(), 40, "em", steps=20, seed=2)
    b = samplers.sample(_mixture(), 40, "em", steps=20, seed=2, batch=7)
    assert np.array_equal(a.samples, b.samples)


@pytest.mark.parametrize("name", ["em", "ancestral", "ode", "pc"])
@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_fused_equals_rows_and_blas_to_1e12(name, param):
    """Deterministic: the fused kernel equals the rows engine bit for bit (same loop order)
    and the BLAS and Python engines to 1e-12 relative (the MLP's summation order differs)."""
    m = _mlp_model(param=param)
    opts = {"pilot": 16} if name == "pc" else {}
    res = {eng: samplers.sample(m, 37, name, steps=15, seed=9, engine=eng, record_every=4,
                                **opts)
           for eng in ("fused", "rows", "blas", "python", "sharded")}
    f = res["fused"]
    assert np.array_equal(f.samples, res["rows"].samples)
    assert np.array_equal(f.frames, res["rows"].frames)
    scale = np.max(np.abs(f.frames))
    for eng in ("blas", "python", "sharded"):
        assert np.max(np.abs(res[eng].samples - f.samples)) <= 1e-12 * scale
        assert np.max(np.abs(res[eng].frames - f.frames)) <= 1e-12 * scale
    assert np.array_equal(res["blas"].samples, res["python"].samples)


@pytest.mark.parametrize("kind", ["x0", "pca"])
def test_mlp_evaluation_matches_model(kind):
    """Deterministic: the stage evaluation reproduces the model's eps_normalised (x0
    parametrisation; a whitened model with the Gaussian term)."""
    m = _pca_model() if kind == "pca" else _mlp_model(param=kind)
    cfg = samplers.prepare(m, "em", 10)
    plan, tm = cfg["plan"], cfg["tm"]
    y = np.random.default_rng(1).standard_normal((9, 2))
    for s in (0, 4, 10):
        t = plan.times[s]
        o = samplers._Eval(m, cfg["parts"], plan)(y, s)
        a, J, _ = plan.aJs[s]
        assert np.allclose(a * y + J * o, m.eps_normalised(y, t), rtol=1e-13, atol=1e-13)


@pytest.mark.slow
def test_float32_model_runs_and_engines_agree():
    """Deterministic: a float32 network runs on both CPU engines, which agree to float32
    rounding.  Slow only because it compiles the float32 versions of both kernels."""
    m = _mlp_model(dtype="float32")
    a = samplers.sample(m, 20, "ode", steps=10, seed=1, engine="fused").samples
    assert np.all(np.isfinite(a))
    for eng in ("blas", "sharded"):
        b = samplers.sample(m, 20, "ode", steps=10, seed=1, engine=eng).samples
        assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(a))
    assert samplers.prepare(m, "ode", 10)["engine"] == samplers.AUTO_ENGINE["float32"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sharded_engine_bitwise_invariant(dtype, monkeypatch):
    """Deterministic: the sharded engine's samples and frames are bitwise the same for any
    n, batch, first_sample and thread count (every BLAS call has SHARD_ROWS rows: a short
    last shard is padded), and agree with the whole-batch BLAS engine's to 1e-12 (float64)
    or 1e-5 (float32) of the sample scale (kernels.reverse_cpu.reverse_shard rounds the
    first layer, the activations and SiLU differently: measured 5e-16 and 1.4e-7 here).
    Shards of 64 rows: at 1 or 7 rows OpenBLAS takes another kernel (other float32 bits),
    which the padding must hide."""
    monkeypatch.setattr(samplers, "SHARD_ROWS", 64)
    m = _mlp_model(width=32, dtype=dtype)
    kw = dict(sampler="em", steps=6, seed=4, engine="sharded", record_every=3)
    m.threads = 2
    ref = samplers.sample(m, 192, **kw)
    blas = samplers.sample(m, 192, engine="blas",
                           **{k: v for k, v in kw.items() if k != "engine"}).samples
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert np.max(np.abs(blas - ref.samples)) <= tol * np.max(np.abs(blas))
    m.threads = 1
    one = samplers.sample(m, 192, **kw)
    assert np.array_equal(one.samples, ref.samples) and np.array_equal(one.frames, ref.frames)
    m.threads = 2
    for n, first, batch in ((1, 70, None), (7, 100, None), (65, 3, None), (150, 0, 7),
                            (130, 50, 100)):
        r = samplers.sample(m, n, first_sample=first, batch=batch, **kw)
        assert np.array_equal(r.samples, ref.samples[first:first + n]), (n, first, batch)
        assert np.array_equal(r.frames, ref.frames[:, first:first + n]), (n, first, batch)


def _shard_net(D, hidden, act, dtype, F=2, seed=0):
    from kernels import mlp_cpu

    sizes = [D + 2 * F] + list(hidden) + [D]
    off = mlp_cpu.mlp_layout(sizes)
    rng = np.random.default_rng(seed)
    theta = mlp_cpu.init_params(sizes, rng.standard_normal(mlp_cpu.n_params(off)), act=act)
    theta += 0.2 * rng.standard_normal(theta.size)          # non-zero biases
    return theta.astype(dtype), off, mlp_cpu.activation_code(act), np.array([0.5, 3.0][:F])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("D,hidden,act", [(1, [], "silu"), (2, [8], "silu"),
                                          (3, [8, 6, 8], "silu"), (2, [8, 8], "tanh"),
                                          (1, [4, 8], "relu")])
def test_reverse_shard_network_and_noise(D, hidden, act, dtype):
    """Deterministic: the sharded engine's chunk kernel (kernels.reverse_cpu.reverse_shard)
    evaluates the network of the other engines -- a stage y <- o returns the output of
    reverse_batched's BLAS network to 1e-13 (float64) / 1e-5 (float32) of its scale, for 0
    to 3 hidden layers, D = 1..3 and each activation -- and draws the same normals bit for
    bit (a stage y <- y + z, with noise blocks whose elements n D + k start on odd and even
    positions: one Philox call per pair must give normal_j's bits).  Measured network
    differences: at most 1.3e-15 (float64) and 4.4e-7 (float32) of the scale."""
    from kernels import reverse_cpu

    theta, off, code, freqs = _shard_net(D, hidden, act, dtype)
    B, first = 37, 1000
    y0 = np.random.default_rng(1).standard_normal((B, D))
    kinds = np.zeros(3, np.int64)
    taus = np.array([0.9, 0.35, 0.02])
    rec_stage = np.array([1, 2, 3], np.int64)

    def run(kernel, coef, noise, *extra):
        y, u, d = y0.copy(), np.zeros((B, D)), np.zeros((B, D))
        rec = np.zeros((3, B, D))
        kernel(theta, off, code, freqs, kinds, coef, taus, noise, 7, 49, first, 0, 3, y, u, d,
               rec_stage, rec, *extra)
        return rec

    net = np.tile([0.0, 1.0, 0.0, 0.0], (3, 1))       # y <- o at each stage
    none = np.full(3, -1, np.int64)
    got = run(reverse_cpu.reverse_shard, net, none)
    want = run(reverse_cpu.reverse_batched, net, none, False)
    tol = 1e-13 if dtype == "float64" else 1e-5
    assert np.max(np.abs(got - want)) <= tol * np.max(np.abs(want))
    assert not np.array_equal(got[0], got[1])          # the stages see different times
    walk = np.tile([1.0, 0.0, 1.0, 0.0], (3, 1))      # y <- y + z
    noise = np.array([0, 1, 4], np.int64)
    got = run(reverse_cpu.reverse_shard, walk, noise)
    assert np.array_equal(got, run(reverse_cpu.reverse_batched, walk, noise, False))


def test_ddpm_ancestral_chain():
    m = _ddpm_model()
    r = samplers.sample(m, 10, steps=50, seed=1)
    assert r.info["sampler"] == "ancestral" and r.samples.shape == (10, 1)
    assert np.all(np.isfinite(r.samples))
    with pytest.raises(InputError, match="at most 1000"):
        samplers.sample(m, 10, steps=1001)


CUDA_SCRIPT = r"""
import json
import numpy as np
from nonequil import samplers
from tests.test_samplers import _mlp_model
out = {}
for dtype in ("float64", "float32"):
    m = _mlp_model(width=8, depth=2, dim=2, dtype=dtype)
    for name in ("em", "ode", "pc", "ancestral"):
        opts = {"pilot": 8} if name == "pc" else {}
        g = samplers.sample(m, 32, name, steps=5, seed=3, device="cuda", record_every=2, **opts)
        c = samplers.sample(m, 32, name, steps=5, seed=3, engine="fused", record_every=2, **opts)
        scale = float(np.max(np.abs(c.frames)))
        out[dtype + "/" + name] = max(float(np.max(np.abs(g.samples - c.samples))),
                                      float(np.max(np.abs(g.frames - c.frames)))) / scale
print(json.dumps(out))
"""


@pytest.mark.cudasim
def test_cuda_simulator_parity():
    """The CUDA kernel under NUMBA_ENABLE_CUDASIM=1 (set before numba is imported) equals the
    fused CPU kernel to 1e-12 relative in float64 (the same Philox words; only exp differs in
    the activation) and to 1e-6 in float32; 32 walkers, width 8, 5 steps."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", CUDA_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for k, v in got.items():
        assert v <= (1e-12 if k.startswith("float64") else 1e-6), (k, v)


def test_cuda_without_a_gpu_is_a_clear_error():
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a GPU (or the simulator) is available")
    with pytest.raises(InputError, match="no CUDA GPU"):
        samplers.sample(_mlp_model(), 4, "ode", steps=2, device="cuda")


def test_cuda_gpu_parity():
    """On a real GPU (skipped otherwise): the CUDA kernel agrees with the fused CPU kernel to
    1e-10 relative in float64 after 100 stages (NVVM contracts a*b + c into FMAs, so the
    states are not bitwise equal; the expected agreement is about 1e-13)."""
    from numba import cuda

    if not cuda.is_available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("no GPU")
    m = _mlp_model(width=64, depth=3, dim=2)
    for name in ("em", "ode"):
        g = samplers.sample(m, 4096, name, steps=50, seed=3, device="cuda").samples
        c = samplers.sample(m, 4096, name, steps=50, seed=3, engine="fused").samples
        assert np.max(np.abs(g - c)) <= 1e-10 * np.max(np.abs(c)), name


def test_purposes_are_the_sampler_block():
    from kernels import philox

    assert samplers.PURPOSE_PRIOR == philox.PURPOSE_SAMPLE
    assert samplers.PURPOSE_BITS < philox.PURPOSE_SAMPLE + 16


# ------------------------------------------------------------------------- likelihood
def _aniso_gauss():
    mean = np.array([1.0, -0.5, 0.3])
    A = np.array([[0.5, 0.2, 0.0], [0.1, 0.3, -0.1], [0.0, 0.2, 0.8]])
    return score.GaussianScore(mean, A @ A.T, SDE)


def test_ode_likelihood_exact_gaussian():
    """Deterministic: the probability-flow log-density of the exact score of an anisotropic,
    correlated 3-D Gaussian, with the exact terminal marginal q_T as the prior, equals the
    analytic log-density of p_{t_eps} to 1e-4 nats (RK45, tolerances 1e-8)."""
    gs = _aniso_gauss()
    model = samplers.ExactModel(gs)
    x = np.random.default_rng(0).multivariate_normal(gs.mean, gs.cov, 40)
    r = samplers.ode_likelihood(model, x, rtol=1e-8, atol=1e-8,
                                prior_logp=lambda y: gs.log_prob(y, 1.0))
    ref = gs.log_prob(x, model.t_eps)
    assert np.max(np.abs(r.logp - ref)) < 1e-4
    assert r.nll_nats_per_sample == pytest.approx(-np.mean(r.logp))
    assert r.nll_nats_per_dim == pytest.approx(r.nll_nats_per_sample / 3)
    assert r.info["trace"] == "exact"


def test_ode_likelihood_hutchinson_is_unbiased():
    """Stochastic: the Hutchinson estimate (Philox Rademacher probes) of the log-density
    agrees with the exact-trace one on average within 5 SE over 40 points."""
    gs = _aniso_gauss()
    model = samplers.ExactModel(gs)
    x = np.random.default_rng(1).multivariate_normal(gs.mean, gs.cov, 40)
    kw = dict(rtol=1e-7, atol=1e-7, prior_logp=lambda y: gs.log_prob(y, 1.0))
    ex = samplers.ode_likelihood(model, x, **kw).logp
    hu = samplers.ode_likelihood(model, x, trace="hutchinson", seed=3, **kw).logp
    diff = hu - ex
    assert abs(diff.mean()) <= Z * diff.std(ddof=1) / math.sqrt(diff.size)
    assert np.std(diff) > 0


@pytest.mark.parametrize("kind", ["eps", "v", "pca"])
def test_ode_likelihood_mlp_equals_flow_jacobian(kind):
    """Deterministic: for an MLP model (2-D; diagonal normalisation, or PCA whitening with the
    Gaussian term), the integrated divergence (exact trace by backward passes) equals
    log |det| of the flow map's Jacobian, taken by central differences of the mapped points
    in data units: log p(x) = log N(y_T) + log |det dy_T/dx|, to 1e-4 nats (Heun, 2000
    steps)."""
    m = _pca_model() if kind == "pca" else _mlp_model(width=16, depth=2, dim=2, param=kind)
    x = m.to_data(np.random.default_rng(2).standard_normal((6, 2)))
    dlt = 1e-4
    pts = [x]
    for k in range(2):
        for sgn in (1, -1):
            e = np.zeros(2)
            e[k] = sgn * dlt
            pts.append(x + e)
    r = samplers.ode_likelihood(m, np.concatenate(pts), method="heun", steps=2000)
    yT = r.y_T.reshape(5, 6, 2)
    J = np.stack([(yT[1 + 2 * k] - yT[2 + 2 * k]) / (2 * dlt) for k in range(2)], axis=1)
    lp = (-0.5 * np.sum(yT[0] ** 2, 1) - math.log(2 * math.pi)
          + np.log(np.abs(np.linalg.det(J))))
    assert np.max(np.abs(lp - r.logp[:6])) < 1e-4


# ------------------------------------------------------------------------- binomial
class ExactBinomial:
    """The exact per-bit reverse kernel of the binomial chain for data with independent bits
    (then the factorised reverse chain is exact): p(x_{t-1,d} = 1 | x_t) =
    sum_{x0} q(x_{t-1,d} = 1 | x_t, x0) q(x0 | x_t) per bit."""

    def __init__(self, probs, encoding=None):
        self.p = np.asarray(probs, float)
        self.process = processes.BinomialChain()
        self.dim = self.p.size
        self.data_shape = (self.dim,)
        self.data_encoding = encoding

    def prob_prev(self, x, t):
        ch = self.process
        x = np.asarray(x, float).reshape(-1, self.dim)
        lik1 = np.where(x == 1, ch.marginal_prob_one(1.0, t), 1 - ch.marginal_prob_one(1.0, t))
        lik0 = np.where(x == 1, ch.marginal_prob_one(0.0, t), 1 - ch.marginal_prob_one(0.0, t))
        w1 = self.p * lik1 / (self.p * lik1 + (1 - self.p) * lik0)
        return (w1 * ch.posterior_prob_one(x, 1.0, t)
                + (1 - w1) * ch.posterior_prob_one(x, 0.0, t))


def test_binomial_sampler_recovers_product_law():
    """Stochastic: the reverse bit-flip chain with the exact reverse posterior reproduces a
    product law of 3 bits: per-bit frequencies within 5 SE, the 8-state chi-square p > 1e-6;
    spins come back as +-1 int8; batching does not change the bits."""
    probs = np.array([0.1, 0.7, 0.5])
    model = ExactBinomial(probs)
    r = samplers.sample(model, 3000, seed=4)
    x = r.samples
    assert r.info["sampler"] == "binomial" and x.dtype == np.int8 and x.shape == (3000, 3)
    se = np.sqrt(probs * (1 - probs) / x.shape[0])
    assert np.all(np.abs(x.mean(axis=0) - probs) <= Z * se)
    idx = x[:, 0] * 4 + x[:, 1] * 2 + x[:, 2]
    counts = np.bincount(idx, minlength=8)
    states = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)])
    expect = np.prod(np.where(states == 1, probs, 1 - probs), axis=1) * x.shape[0]
    assert stats.chisquare(counts, expect).pvalue > 1e-6
    b = samplers.sample(model, 3000, seed=4, batch=7)
    assert np.array_equal(b.samples, x)
    s = samplers.sample(ExactBinomial(probs, "spins"), 50, seed=4, record_every=40)
    assert set(np.unique(s.samples)) <= {-1, 1} and s.samples.dtype == np.int8
    assert np.array_equal(s.samples, 2 * x[:50] - 1)
    assert list(s.frame_steps) == [0, 40, 80, 100]
    assert np.array_equal(s.frames[-1], s.samples)
    with pytest.raises(InputError, match="steps must be 100"):
        samplers.sample(model, 5, steps=50)


# ------------------------------------------------------------------------- the CLI
def _write_model(path, **kw):
    m = _mlp_model(**kw)
    m.write(str(path))
    return m


def _cli(*args):
    from nonequil.cli import main

    return main([str(a) for a in args])


def test_cli_sample_writes_samples_and_trajectory(tmp_path, capsys):
    mpath = tmp_path / "model.h5"
    m = _write_model(mpath)
    out = tmp_path / "s.h5"
    assert _cli("sample", mpath, "--n", 23, "--steps", 6, "--seed", 4, "--out", out,
                "--quiet", "--batch", 10) == 0
    with h5py.File(out) as f:
        x = f["samples"][()]
        assert x.shape == (23, 2)
        a = dict(f["samples"].attrs)
        assert a["sampler"] == "ode" and a["steps"] == 6 and a["seed"] == 4
        assert "provenance" in f and "particles" not in f
    ref = samplers.sample(m, 23, "ode", steps=6, seed=4).samples
    assert np.array_equal(x, ref)
    out2 = tmp_path / "t.h5"
    assert _cli("sample", mpath, "--n", 9, "--sampler", "pc", "--steps", 5, "--set",
                "pilot=4", "--set", "snr=0.2", "--record-every", 2, "--out", out2,
                "--quiet") == 0
    with h5py.File(out2) as f:
        assert f["samples"].shape == (9, 2)
        assert json.loads(f["samples"].attrs["options"])["snr"] == 0.2
        pos = f["particles/ensemble/position"]
        assert pos["value"].shape == (4, 9, 2)
        assert list(pos["step"][()]) == [0, 2, 4, 5]
        assert pos["time"][0] == pytest.approx(1.0) and pos["time"][-1] == pytest.approx(1e-3)
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["parameters"].attrs["sampler"] == "pc"
    assert not os.path.exists(str(out2) + ".partial")


def test_cli_sample_binomial_model(tmp_path):
    """A binomial-chain MLP model (spins): int8 +-1 samples and an int8 trajectory."""
    mpath = tmp_path / "bits.h5"
    m = _write_model(mpath, dim=4, width=8, depth=1, process="binomial", encoding="spins")
    out = tmp_path / "b.h5"
    assert _cli("sample", mpath, "--n", 6, "--record-every", 40, "--out", out, "--quiet") == 0
    with h5py.File(out) as f:
        x = f["samples"][()]
        assert x.dtype == np.int8 and x.shape == (6, 4) and set(np.unique(x)) <= {-1, 1}
        assert f["samples"].attrs["sampler"] == "binomial"
        pos = f["particles/ensemble/position"]
        assert pos["value"].dtype == np.int8 and pos["value"].shape == (4, 6, 4)
        assert list(pos["time"][()]) == [100, 60, 20, 0]
        assert np.array_equal(pos["value"][-1], x)
    assert np.array_equal(x, samplers.sample(m, 6, seed=0).samples)


def test_cli_sample_errors(tmp_path, capsys):
    mpath = tmp_path / "model.h5"
    _write_model(mpath)
    out = tmp_path / "s.h5"
    cases = [
        (("sample", tmp_path / "missing.h5", "--out", out), "does not exist"),
        (("sample", tmp_path / "junk.h5", "--out", out), "not an HDF5 file"),
        (("sample", tmp_path / "nomodel.h5", "--out", out), "no /model group"),
        (("sample", mpath, "--sampler", "nope", "--out", out), "valid: em, ancestral, ode"),
        (("sample", mpath, "--set", "bogus=1", "--out", out), "valid: method, rtol"),
        (("sample", mpath, "--sampler", "binomial", "--out", out), "binomial-chain model"),
        (("sample", mpath, "--n", "0", "--out", out), "invalid count"),
    ]
    (tmp_path / "junk.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "nomodel.h5", "w") as f:
        f["samples"] = np.zeros(3)
    for args, msg in cases:
        capsys.readouterr()
        assert _cli(*args) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and msg in err[-1], (args, err)
        assert not os.path.exists(out) and not os.path.exists(str(out) + ".partial")
    with h5py.File(out, "w"):
        pass
    assert _cli("sample", mpath, "--out", out) != 0
    assert "already exists" in capsys.readouterr().err


def test_cli_help_lists_common_flags(capsys):
    with pytest.raises(SystemExit):
        _cli("sample", "--help")
    text = capsys.readouterr().out
    for flag in ("--quiet", "--debug", "--seed", "--device", "--out", "--n", "--sampler",
                 "--steps", "--record-every"):
        assert flag in text
