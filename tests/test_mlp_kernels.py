"""The CPU MLP engine (kernels/mlp_cpu.py): gradients, optimiser, clipping, EMA, fused rows.

Deterministic tests: every random input comes from a seeded ``np.random.default_rng`` in the
test itself (never inside a kernel), so nothing here is stochastic.
"""
import math

import numpy as np
import pytest
from scipy.special import expit

from kernels import mlp_cpu as M

ACTS = [("silu", M.ACT_SILU), ("tanh", M.ACT_TANH), ("relu", M.ACT_RELU)]
TINY = [3, 5, 4, 2]


def _net(sizes, seed, act="silu", dtype=np.float64, bias_scale=0.3):
    """A network with random (non-zero) biases, so that the bias paths are exercised."""
    rng = np.random.default_rng(seed)
    off = M.mlp_layout(sizes)
    theta = M.init_params(sizes, rng.standard_normal(M.n_params(off)), act=act)
    for l in range(off.shape[0]):
        b0, nout = off[l, 1], off[l, 3]
        theta[b0:b0 + nout] = bias_scale * rng.standard_normal(nout)
    return off, theta.astype(dtype), rng


def _loss(theta, off, act, X, R):
    return float(np.sum(R * M.mlp_forward(theta, off, act, X)))


# ---------------------------------------------------------------------------------------
# layout and initialisation
# ---------------------------------------------------------------------------------------
def test_layout_offsets_and_sizes():
    off = M.mlp_layout(TINY)
    assert off.dtype == np.int64 and off.shape == (3, 4)
    np.testing.assert_array_equal(off, [[0, 15, 3, 5], [20, 40, 5, 4], [44, 52, 4, 2]])
    assert M.n_params(off) == 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2
    assert M.layer_sizes(off) == TINY
    assert M.cache_size(off, 7) == 7 * (3 + 2 * (5 + 4))
    assert M.cache_size(M.mlp_layout([2, 1]), 4) == 4 * 2
    with pytest.raises(ValueError, match="at least"):
        M.mlp_layout([3])
    with pytest.raises(ValueError, match=">= 1"):
        M.mlp_layout([3, 0, 1])


def test_layout_matches_reference_unpacking():
    """W_l is row-major [in, out] followed by b_l: forward equals a NumPy unpacked reference."""
    off, theta, rng = _net(TINY, 1)
    X = rng.standard_normal((6, 3))
    H = X
    for l in range(3):
        w0, b0, nin, nout = off[l]
        W = theta[w0:b0].reshape(nin, nout)
        b = theta[b0:b0 + nout]
        Z = H @ W + b
        H = Z * (1.0 / (1.0 + np.exp(-Z))) if l < 2 else Z
    np.testing.assert_allclose(M.mlp_forward(theta, off, M.ACT_SILU, X), H, rtol=1e-13, atol=1e-14)


def test_init_params_scaling():
    sizes = [4, 8, 8, 3]
    off = M.mlp_layout(sizes)
    z = np.random.default_rng(2).standard_normal(M.n_params(off))
    for act, gain in (("silu", 2.0), ("relu", 2.0), ("tanh", 1.0)):
        th = M.init_params(sizes, z, act=act, out_scale=0.5)
        for l in range(3):
            w0, b0, nin, nout = off[l]
            std = math.sqrt((gain if l < 2 else 1.0) / nin) * (0.5 if l == 2 else 1.0)
            np.testing.assert_allclose(th[w0:b0], std * z[w0:b0], rtol=1e-15)
            assert np.all(th[b0:b0 + nout] == 0.0)
    assert M.init_params(sizes, z, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="normals must have shape"):
        M.init_params(sizes, z[:-1])
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        M.init_params(sizes, z, act="gelu")


def test_activation_code():
    assert M.activation_code("silu") == M.ACT_SILU
    assert M.activation_code("TANH") == M.ACT_TANH
    assert M.activation_code(2) == M.ACT_RELU
    with pytest.raises(ValueError, match="relu"):
        M.activation_code(7)


# ---------------------------------------------------------------------------------------
# scalar maths
# ---------------------------------------------------------------------------------------
# references in extended precision where the platform has it (x86: 64-bit mantissa)
EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
REF_ULP = 0.51 if EXTENDED else 1.0        # error of the rounded reference, in ulp


def _ulp_err(got, ref_ld):
    ref = ref_ld.astype(np.float64)
    return np.abs((got - ref_ld).astype(np.float64)) / np.spacing(np.abs(ref))


def test_exp_neg_accuracy():
    """exp_neg is within 1 ulp (Cody-Waite reduction, 1 + (r + tail) summed last)."""
    a = np.concatenate([np.linspace(0.0, 30.0, 3001), np.linspace(30.0, 708.0, 1001),
                        np.random.default_rng(0).uniform(0.0, 40.0, 4000),
                        [1e-300, 0.5 * math.log(2.0), math.log(2.0), 707.9999]])
    got = np.array([M.exp_neg(x) for x in a])
    assert np.max(_ulp_err(got, np.exp(-a.astype(np.longdouble)))) <= 1.0 + REF_ULP
    assert M.exp_neg(0.0) == 1.0
    assert M.exp_neg(709.0) == 0.0 and M.exp_neg(math.inf) == 0.0
    assert math.isnan(M.exp_neg(math.nan))


def test_activations_scalar():
    z = np.concatenate([np.linspace(-40.0, 40.0, 801), [-1e3, 1e3, 0.0, -745.0, 745.0],
                        np.random.default_rng(1).uniform(-700.0, 700.0, 1000)])
    sig = np.array([M.sigmoid(x) for x in z])
    # exp_neg's 1 ulp, then 1/(1+e) (two roundings) and, for z < 0, e * s (one more)
    zl = z.astype(np.longdouble)
    assert np.max(_ulp_err(sig, 1 / (1 + np.exp(-zl)))) <= 3.0 + REF_ULP
    # the portable scalar definitions (shared with the GPU) against exact references
    # portable silu: exp (1 ulp), then 1 + e, z * e and the division (half an ulp each);
    # checked where exp(-|z|) is a normal number (below, z * e magnifies e's rounding)
    zn = z[np.abs(z) <= 700.0]
    silu = np.array([M.mlp_act(x, M.ACT_SILU) for x in zn])
    zl = zn.astype(np.longdouble)
    assert np.max(_ulp_err(silu, zl / (1 + np.exp(-zl)))) <= 2.5 + REF_ULP
    assert -1e-300 < M.mlp_act(-1e3, M.ACT_SILU) <= 0.0 and M.mlp_act(1e3, M.ACT_SILU) == 1e3
    th = np.array([M.mlp_act(x, M.ACT_TANH) for x in z])      # libm tanh: within 1 ulp
    assert np.max(_ulp_err(th, np.tanh(z.astype(np.longdouble)))) <= 1.0 + REF_ULP
    assert M.mlp_act(-2.0, M.ACT_RELU) == 0.0 and M.mlp_act(2.0, M.ACT_RELU) == 2.0
    assert M.mlp_act_grad(0.0, 0.0, M.ACT_RELU) == 0.0
    s = expit(z)
    dsilu = np.array([M.mlp_act_grad(x, M.mlp_act(x, M.ACT_SILU), M.ACT_SILU) for x in z])
    np.testing.assert_allclose(dsilu, s * (1 + z * (1 - s)), rtol=1e-14, atol=1e-300)
    for _, code in ACTS:
        for x in (-2.3, -0.4, 0.7, 3.1):
            h = 1e-6
            fd = (M.mlp_act(x + h, code) - M.mlp_act(x - h, code)) / (2 * h)
            assert abs(M.mlp_act_grad(x, M.mlp_act(x, code), code) - fd) < 1e-8


def test_exp_neg32_accuracy():
    """exp_neg32 (float32 arithmetic) is within 2 ulp of float32 where exp(-a) is a normal
    float32 (a <= 87), 0 above 87 and for inf, NaN for NaN; float32 in, float32 out."""
    from numba import njit

    @njit
    def ev(a, out):
        for i in range(a.shape[0]):
            out[i] = M.exp_neg32(a[i])

    a = np.concatenate([np.linspace(0.0, 87.0, 20001),
                        np.random.default_rng(2).uniform(0.0, 20.0, 4000),
                        [0.5 * math.log(2.0), math.log(2.0)]]).astype(np.float32)
    got = np.empty_like(a)
    ev(a, got)
    ref = np.exp(-a.astype(np.float64))
    ulp32 = np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp32) <= 2.0
    edge = np.array([0.0, 87.5, np.inf, np.nan], np.float32)
    out = np.empty_like(edge)
    ev(edge, out)
    assert out[0] == 1.0 and out[1] == 0.0 and out[2] == 0.0 and np.isnan(out[3])


def test_float32_silu_loops_match_float64():
    """The float32 array loops (float32 arithmetic, exp_neg32) give silu and silu' within a
    few float32 ulp of the float64 loops, at every z where the values are normal."""
    # float32-representable inputs, so that both paths see the same z
    z = np.concatenate([np.linspace(-80.0, 80.0, 4001), [0.0]]).astype(np.float32)
    z = z.astype(np.float64)
    off = M.mlp_layout([1, 1, 1])
    n = z.size
    c64 = M.mlp_forward_cache(np.array([1.0, 0.0, 1.0, 0.0]), off, M.ACT_SILU,
                              z.reshape(-1, 1))[1]
    c32 = M.mlp_forward_cache(np.array([1.0, 0.0, 1.0, 0.0], np.float32), off, M.ACT_SILU,
                              z.astype(np.float32).reshape(-1, 1))[1]
    assert c32.dtype == np.float32
    # act' = s + h (1 - s) cancels near z = -1.28 (where it is 0): its error is measured in
    # ulp of the size of its terms, s + |h (1 - s)|; H = z s has no cancellation
    sig = expit(z)
    scales = (sig + np.abs(z * sig * (1 - sig)), np.abs(z * sig))
    for blk, scale in zip((slice(n, 2 * n), slice(2 * n, 3 * n)), scales):   # act', then H
        ref, got = c64[blk], c32[blk].astype(np.float64)
        ok = scale > 1e-30
        ulp = np.spacing(scale[ok].astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(got[ok] - ref[ok]) / ulp) <= 4.0
        assert np.all(np.abs(got[~ok]) <= 1e-30)


def test_sampling_silu_fast32_accuracy():
    """The sampling kernel's float32 SiLU (kernels.reverse_cpu.silu_fast32, through the
    array loop act_rows with fused multiply-adds) is within 2.5 float32 ulp of the exact
    silu for z >= -87 (where its exp is not clamped), within |z| 1.7e-38 of it below; +inf
    and NaN pass, -0 gives 0; act_rows in float64 stays the float64 silu (1e-15)."""
    from kernels import reverse_cpu as RC

    rng = np.random.default_rng(3)
    z = np.concatenate([np.linspace(-100.0, 100.0, 400001), 4.0 * rng.standard_normal(10**5),
                        [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, -88.0]]).astype(np.float32)
    got = z.reshape(-1, 1).copy()
    RC.act_rows(got, np.zeros(1, np.float32), M.ACT_SILU)
    got = got[:, 0].astype(np.float64)
    zd = z.astype(np.float64)
    ref = zd * expit(zd)
    assert np.all(got[zd == 0.0] == 0.0)
    ok = (zd >= -87.0) & (zd != 0.0)
    assert np.all(np.abs(ref[ok]) >= np.finfo(np.float32).tiny)     # all normal there
    ulp = np.spacing(np.abs(ref[ok]).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[ok] - ref[ok]) / ulp) <= 2.5
    assert np.all(np.abs(got[~ok] - ref[~ok]) <= 1.7e-38 * np.abs(zd[~ok]))
    edge = np.array([[np.inf], [np.nan], [-0.0]], np.float32)
    RC.act_rows(edge, np.zeros(1, np.float32), M.ACT_SILU)
    assert edge[0, 0] == np.inf and np.isnan(edge[1, 0]) and edge[2, 0] == 0.0
    z64 = np.linspace(-50.0, 50.0, 1001).reshape(-1, 1)
    g64 = z64.copy()
    RC.act_rows(g64, np.zeros(1), M.ACT_SILU)
    np.testing.assert_allclose(g64[:, 0], z64[:, 0] * expit(z64[:, 0]), rtol=1e-15,
                               atol=1e-300)


@pytest.mark.parametrize("name,act", ACTS)
def test_array_activations_match_scalar_definition(name, act):
    """The vectorised CPU loops (forward cache: H and act') agree with mlp_act/mlp_act_grad."""
    z = np.concatenate([np.linspace(-50.0, 50.0, 1001), [0.0, -800.0, 800.0]])
    off = M.mlp_layout([1, 1, 1])
    theta = np.array([1.0, 0.0, 1.0, 0.0])                 # W_0 = 1, b_0 = 0, W_1 = 1, b_1 = 0
    Y, cache = M.mlp_forward_cache(theta, off, act, z.reshape(-1, 1))
    n = z.size
    D, H = cache[n:2 * n], cache[2 * n:]
    h_ref = np.array([M.mlp_act(x, act) for x in z])
    d_ref = np.array([M.mlp_act_grad(x, M.mlp_act(x, act), act) for x in z])
    np.testing.assert_allclose(H, h_ref, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(D, d_ref, rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(Y[:, 0], H)
    np.testing.assert_array_equal(M.mlp_forward(theta, off, act, z.reshape(-1, 1))[:, 0], H)


def test_fourier_embed():
    t = np.array([0.0, 0.013, 0.5, 0.77, 1.0, -0.3])
    f = M.fourier_frequencies(8)
    assert f[0] == 0.25 and abs(f[-1] - 32.0) < 1e-12 and np.all(np.diff(f) > 0)
    E = M.fourier_embed(t, f)
    assert E.shape == (6, 16) and E.dtype == np.float64
    arg = 2.0 * np.pi * np.outer(t, f)
    np.testing.assert_allclose(E[:, :8], np.sin(arg), rtol=0, atol=1e-13)
    np.testing.assert_allclose(E[:, 8:], np.cos(arg), rtol=0, atol=1e-13)
    assert not np.allclose(E[0], E[4])          # t = 0 and t = 1 are told apart
    out = np.full((6, 19), 7.0)
    M.fourier_embed_into(t, f, out, 2)
    np.testing.assert_array_equal(out[:, 2:18], E)
    assert np.all(out[:, :2] == 7.0) and np.all(out[:, 18] == 7.0)
    with pytest.raises(ValueError, match="out must have shape"):
        M.fourier_embed_into(t, f, out, 4)


# ---------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,act", ACTS)
def test_gradients_match_central_differences(name, act):
    """dL/dtheta and dL/dX against central differences, L = sum(R * Y), float64."""
    off, theta, rng = _net(TINY, 10 + act, act=name)
    X = rng.standard_normal((6, 3))
    R = rng.standard_normal((6, 2))
    Y, cache = M.mlp_forward_cache(theta, off, act, X)
    np.testing.assert_array_equal(Y, M.mlp_forward(theta, off, act, X))
    h = 1e-6
    hidden = np.ones(cache.size, dtype=bool)
    hidden[:X.size] = False                    # the cache minus its copy of X: Z_l and H_l

    def loss(th, x):
        # A central difference is only valid where L is smooth.  For relu, check that the
        # step leaves every unit on the same side of the kink as at the base point.
        if act == M.ACT_RELU:
            c = M.mlp_forward_cache(th, off, act, x)[1]
            assert np.array_equal(c[hidden] > 0, cache[hidden] > 0)
        return _loss(th, off, act, x, R)

    grad, dX = M.mlp_backward(theta, off, act, cache, R)
    fd = np.empty_like(theta)
    for i in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += h
        tm[i] -= h
        fd[i] = (loss(tp, X) - loss(tm, X)) / (2 * h)
    fdx = np.empty_like(X)
    for idx in np.ndindex(*X.shape):
        xp, xm = X.copy(), X.copy()
        xp[idx] += h
        xm[idx] -= h
        fdx[idx] = (loss(theta, xp) - loss(theta, xm)) / (2 * h)
    assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 1e-6
    assert np.max(np.abs(grad - fd)) / np.max(np.abs(fd)) < 1e-6
    assert np.linalg.norm(dX - fdx) / np.linalg.norm(fdx) < 1e-6
    assert np.max(np.abs(dX - fdx)) / np.max(np.abs(fdx)) < 1e-6


def test_backward_into_overwrites_and_matches():
    off, theta, rng = _net([2, 16, 16, 16, 3], 3)
    X = rng.standard_normal((33, 2))
    dY = rng.standard_normal((33, 3))
    Y, cache = M.mlp_forward_cache(theta, off, M.ACT_SILU, X)
    grad, dX = M.mlp_backward(theta, off, M.ACT_SILU, cache, dY)
    cache2 = np.full(M.cache_size(off, 33), np.nan)
    Y2 = np.full((33, 3), np.nan)
    M.mlp_forward_cache_into(theta, off, M.ACT_SILU, X, cache2, Y2)
    g2 = np.full_like(theta, 123.0)
    dX2 = np.full((33, 2), 123.0)
    M.mlp_backward_into(theta, off, M.ACT_SILU, cache2, dY, g2, dX2)
    np.testing.assert_array_equal(Y2, Y)
    np.testing.assert_array_equal(g2, grad)
    np.testing.assert_array_equal(dX2, dX)
    # linearity in dY: the gradient of 2 L is twice the gradient of L
    g3, dX3 = M.mlp_backward(theta, off, M.ACT_SILU, cache, 2.0 * dY)
    np.testing.assert_array_equal(g3, 2.0 * grad)
    np.testing.assert_array_equal(dX3, 2.0 * dX)


def test_float32_engine():
    off, th64, rng = _net([2, 32, 32, 2], 4)
    th32 = th64.astype(np.float32)
    X = rng.standard_normal((40, 2))
    dY = rng.standard_normal((40, 2))
    Y32, c32 = M.mlp_forward_cache(th32, off, M.ACT_SILU, X.astype(np.float32))
    g32, dX32 = M.mlp_backward(th32, off, M.ACT_SILU, c32, dY.astype(np.float32))
    Y64, c64 = M.mlp_forward_cache(th64, off, M.ACT_SILU, X)
    g64, dX64 = M.mlp_backward(th64, off, M.ACT_SILU, c64, dY)
    for a32, a64 in ((Y32, Y64), (g32, g64), (dX32, dX64), (c32, c64)):
        assert a32.dtype == np.float32 and a32.shape == a64.shape
        assert np.max(np.abs(a32 - a64)) < 1e-5 * np.max(np.abs(a64))
    Yr = M.mlp_forward_rows(th32, off, M.ACT_SILU, X.astype(np.float32))
    assert Yr.dtype == np.float32
    assert np.max(np.abs(Yr - Y64)) < 1e-5 * np.max(np.abs(Y64))


def test_shape_errors():
    off, theta, rng = _net(TINY, 5)
    X = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="X must have shape"):
        M.mlp_forward(theta, off, 0, rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="theta length"):
        M.mlp_forward(theta[:-1], off, 0, X)
    with pytest.raises(ValueError, match="X must have shape"):
        M.mlp_forward_rows(theta, off, 0, rng.standard_normal((4, 4)))
    Y, cache = M.mlp_forward_cache(theta, off, 0, X)
    with pytest.raises(ValueError, match="cache length"):
        M.mlp_backward(theta, off, 0, cache[:-1], Y)
    with pytest.raises(ValueError, match="dY must have shape"):
        M.mlp_backward(theta, off, 0, cache, np.ones((4, 3)))
    with pytest.raises(ValueError, match="Y must have shape"):
        M.mlp_forward_into(theta, off, 0, X, np.empty((4, 3)))
    with pytest.raises(ValueError, match="same length"):
        M.adam_step(theta, theta[:-1], theta.copy(), theta.copy(), 1, 1e-3)
    with pytest.raises(ValueError, match="step counts from 1"):
        M.adam_step(theta, theta.copy(), theta.copy(), theta.copy(), 0, 1e-3)


# ---------------------------------------------------------------------------------------
# fused per-walker forward
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,act", ACTS)
def test_forward_rows_matches_batched(name, act):
    """Equal to the BLAS forward to 1e-12 of the output scale (not bitwise: sum order)."""
    off, theta, rng = _net([4, 48, 48, 48, 3], 20 + act, act=name)
    X = rng.standard_normal((101, 4))          # not a multiple of the 16-row block
    Yb = M.mlp_forward(theta, off, act, X)
    Yr = M.mlp_forward_rows(theta, off, act, X)
    assert Yr.shape == Yb.shape and Yr.dtype == np.float64
    assert np.max(np.abs(Yr - Yb)) <= 1e-12 * np.max(np.abs(Yb))
    # a row's result does not depend on which rows go with it: bitwise
    np.testing.assert_array_equal(M.mlp_forward_rows(theta, off, act, X[17:43]), Yr[17:43])
    np.testing.assert_array_equal(M.mlp_forward_rows(theta, off, act, X[5:6]), Yr[5:6])


# ---------------------------------------------------------------------------------------
# optimiser, clipping, EMA
# ---------------------------------------------------------------------------------------
def _adam_reference(theta, grads, lr, b1, b2, eps, wd):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    theta = theta.copy()
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g * g)
        mh = m / (1 - b1 ** t)
        vh = v / (1 - b2 ** t)
        theta = theta - lr * (mh / (np.sqrt(vh) + eps) + wd * theta)
    return theta, m, v


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_numpy_reference(wd):
    rng = np.random.default_rng(6)
    theta0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) * 10.0 ** rng.uniform(-3, 1) for _ in range(5)]
    lr, b1, b2, eps = 3e-3, 0.85, 0.995, 1e-8
    th = theta0.copy()
    m = np.zeros(50)
    v = np.zeros(50)
    for t, g in enumerate(grads, start=1):
        M.adam_step(th, g, m, v, t, lr, b1, b2, eps, wd)
    ref_th, ref_m, ref_v = _adam_reference(theta0, grads, lr, b1, b2, eps, wd)
    np.testing.assert_allclose(m, ref_m, rtol=1e-14, atol=0)
    np.testing.assert_allclose(v, ref_v, rtol=1e-14, atol=0)
    np.testing.assert_allclose(th, ref_th, rtol=1e-14, atol=1e-16)
    # defaults are the usual ones: beta1 = 0.9, beta2 = 0.999, eps = 1e-8, no weight decay
    th2 = theta0.copy()
    m2 = np.zeros(50)
    v2 = np.zeros(50)
    M.adam_step(th2, grads[0], m2, v2, 1, lr)
    ref2, _, _ = _adam_reference(theta0, grads[:1], lr, 0.9, 0.999, 1e-8, 0.0)
    np.testing.assert_allclose(th2, ref2, rtol=1e-14, atol=1e-16)
    # the first bias-corrected step is lr |g| / (|g| + eps) against the gradient: at most lr,
    # and within lr eps / |g| of it
    g0 = grads[0]
    step1 = theta0 - th2
    assert np.all(np.sign(step1) == np.sign(g0))
    assert np.all(np.abs(step1) <= lr * (1 + 1e-15))
    assert np.all(np.abs(step1) >= lr * (1 - 1e-8 / np.abs(g0)) * (1 - 1e-14))


def test_adam_float32_keeps_dtype():
    rng = np.random.default_rng(7)
    th = rng.standard_normal(20).astype(np.float32)
    g = rng.standard_normal(20).astype(np.float32)
    m = np.zeros(20, np.float32)
    v = np.zeros(20, np.float32)
    th0 = th.copy()
    M.adam_step(th, g, m, v, 1, 1e-2)
    assert th.dtype == np.float32 and m.dtype == np.float32
    np.testing.assert_allclose(th0 - th, 1e-2 * np.sign(g), rtol=1e-3)


def test_clip_grad_norm():
    rng = np.random.default_rng(8)
    g = rng.standard_normal(1000)
    norm = np.linalg.norm(g)
    assert abs(M.grad_global_norm(g) - norm) <= 1e-14 * norm
    c = g.copy()
    ret = M.clip_grad_norm(c, 0.5 * norm)
    assert abs(ret - norm) <= 1e-14 * norm
    assert abs(np.linalg.norm(c) - 0.5 * norm) <= 1e-14 * norm
    np.testing.assert_allclose(c, 0.5 * g, rtol=1e-14)        # direction kept
    c = g.copy()
    M.clip_grad_norm(c, 2.0 * norm)
    np.testing.assert_array_equal(c, g)                       # below the bound: untouched
    M.clip_grad_norm(c, math.inf)
    np.testing.assert_array_equal(c, g)
    bad = g.copy()
    bad[3] = np.nan
    assert math.isnan(M.clip_grad_norm(bad, 1.0))             # reported, not hidden
    np.testing.assert_array_equal(bad[4:], g[4:])
    c32 = g.astype(np.float32)
    M.clip_grad_norm(c32, 1.0)
    assert c32.dtype == np.float32 and abs(np.linalg.norm(c32.astype(float)) - 1.0) < 1e-6


def test_ema_update():
    rng = np.random.default_rng(9)
    theta = rng.standard_normal(30)
    ema = rng.standard_normal(30)
    ref = ema.copy()
    for k in range(5):
        th = theta + k
        M.ema_update(ema, th, 0.99)
        ref = 0.99 * ref + (1 - 0.99) * th
    np.testing.assert_allclose(ema, ref, rtol=1e-15, atol=1e-15)
    e = ema.copy()
    M.ema_update(e, theta, 0.0)
    np.testing.assert_array_equal(e, theta)
    e = ema.copy()
    M.ema_update(e, theta, 1.0)
    np.testing.assert_array_equal(e, ema)
    with pytest.raises(ValueError, match="same length"):
        M.ema_update(ema, theta[:-1], 0.9)


# ---------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------
def test_regression_fit_sin():
    """2 x 32 SiLU net, full-batch Adam, 2000 steps: learns sin on [-pi, pi] (deterministic)."""
    sizes = [1, 32, 32, 1]
    off = M.mlp_layout(sizes)
    theta = M.init_params(sizes, np.random.default_rng(11).standard_normal(M.n_params(off)))
    X = np.linspace(-np.pi, np.pi, 256).reshape(-1, 1)
    y = np.sin(X)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    ema = theta.copy()
    cache = np.empty(M.cache_size(off, 256))
    Y = np.empty((256, 1))
    grad = np.empty_like(theta)
    dX = np.empty_like(X)
    losses = []
    for step in range(1, 2001):
        M.mlp_forward_cache_into(theta, off, M.ACT_SILU, X, cache, Y)
        r = Y - y
        losses.append(float(np.mean(r * r)))
        M.mlp_backward_into(theta, off, M.ACT_SILU, cache, 2.0 * r / r.size, grad, dX)
        M.clip_grad_norm(grad, 10.0)
        M.adam_step(theta, grad, m, v, step, 3e-3)
        M.ema_update(ema, theta, 0.99)
    mse = float(np.mean((M.mlp_forward(theta, off, M.ACT_SILU, X) - y) ** 2))
    assert mse < 1e-3, mse
    assert losses[0] > 100 * mse
    assert float(np.mean((M.mlp_forward(ema, off, M.ACT_SILU, X) - y) ** 2)) < 1e-3
