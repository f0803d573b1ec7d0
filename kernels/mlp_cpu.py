r"""The CPU MLP engine: forward, backward, Adam, clipping and EMA on one flat weight vector.

Pure compute (no I/O, no printing, no ``np.random``, no global state).  Randomness for the
initial weights comes in from outside as pre-drawn standard normals (``init_params``).

Network
-------
``sizes = [n_in, h_1, ..., h_{L-1}, n_out]`` gives L affine layers (numbered 0 .. L-1 in
``offsets``).  Hidden layers apply the activation ``act``; the output layer is linear::

    H_0 = X                                          [B, n_in]
    Z_l = H_{l-1} W_{l-1} + b_{l-1},  H_l = act(Z_l)  l = 1 .. L-1   [B, h_l]
    Y   = H_{L-1} W_{L-1} + b_{L-1}                  [B, n_out]

Activation codes (``ACT_*``; ``activation_code(name)`` maps names):
    0 ``silu``  z sigmoid(z)   (default; sigmoid via a branch-free polynomial exp, see below)
    1 ``tanh``
    2 ``relu``  max(z, 0), derivative 0 at z = 0

Parameter layout
----------------
One flat vector ``theta`` (float64 or float32).  Layer l (0-based) occupies a contiguous block:
first ``W_l`` of shape ``[n_in_l, n_out_l]`` in row-major (C) order, then ``b_l`` of length
``n_out_l``; the blocks follow each other in layer order with no padding.  ``mlp_layout(sizes)``
returns ``offsets``, an int64 array ``[L, 4]`` whose row l is
``(w_start, b_start, n_in_l, n_out_l)``, so ``W_l = theta[w_start : b_start].reshape(n_in_l,
n_out_l)`` and ``b_l = theta[b_start : b_start + n_out_l]``.  Gradients, Adam moments and the
EMA use the same layout.  ``n_params(offsets)`` is the total length.

Activation cache (for backward)
-------------------------------
A flat vector (dtype of theta) of length ``cache_size(offsets, B)
= B * (n_in + 2 * sum(hidden widths))``: the block ``H_0 = X`` ``[B, n_in]``, then for each
hidden layer l the blocks ``D_l = act'(Z_l)`` and ``H_l``, each ``[B, h_l]`` row-major.  The
forward pass stores the activation's derivative rather than Z_l, so the backward pass needs no
second exp per unit.

Precision and dtypes
--------------------
``theta``, ``X``, ``dY`` and every output share one dtype (float64 or float32; a mix fails
to compile), and outputs passed in (``Y``, ``cache``, ``grad``, ``dX``) must be C-contiguous.
Shapes are checked (``ValueError``); dtypes and finiteness are the caller's job.  Matrix
products run in that dtype through BLAS (``np.dot`` inside njit: SciPy's OpenBLAS).
Activations follow the array dtype: float64 arrays in float64 (``exp_neg``); float32 arrays
in float32 arithmetic (``exp_neg32``, within a few float32 ulp; 2.2x faster than float64
maths on float32 data, measured on [1024, 128]).  The dispatch is ``silu_value`` /
``silu_grad`` (Numba overloads on the element type).  ``mlp_forward_rows`` is
the fused per-walker forward used for sampling: the same maths with explicit loops
(summation over the inputs of a unit in index order, then the bias).  It is *not* bitwise equal
to the batched ``mlp_forward``, because BLAS blocks and orders its sums differently; the two
agree to about 1e-15 relative in float64 (tested at 1e-12 of the output scale).
``mlp_forward_rows`` is however bitwise independent of the thread count and of which rows
are evaluated together.

Threads
-------
The batched kernels (``mlp_forward*``, ``mlp_backward*``) are serial apart from BLAS, whose
own thread pool parallelises the products.  ``mlp_forward_rows`` uses Numba ``prange`` and no
BLAS.  Numba's threads and the BLAS's threads fight over the cores (DESIGN.md: a naive mix
was measured 25x slower), so a caller that uses both -- e.g. a sampler running
``mlp_forward_rows`` next to a trainer calling BLAS, or any ``prange`` kernel inside a
BLAS-threaded region -- must limit the
BLAS threads with ``threadpoolctl.threadpool_limits`` (and pick Numba's threading layer
explicitly).  Nothing here calls BLAS inside a ``prange`` region.  Numba's ``np.dot`` calls
SciPy's OpenBLAS (``scipy.linalg.cython_blas``, ``libscipy_openblas``), a different library
from NumPy's; threadpoolctl only limits libraries already loaded, so this module imports it up
front -- a limit set before SciPy's BLAS was loaded would silently miss it (measured: the
"1-thread" products then ran 2-thread and varied tenfold on a busy 2-core machine).

Vectorisable exp
----------------
llvmlite has no vector maths library, so ``math.exp`` inside a loop is a scalar libm call that
stops LLVM from vectorising the activation loops (measured: SiLU over [1024, 128] took 4.4 ns a
unit with libm, 1.0 with ``exp_neg``).  ``exp_neg`` computes ``exp(-a)`` for ``a >= 0`` with
branch-free float operations and one bitcast for 2**-n (CPU only); about 1 ulp.  The portable
scalar definitions ``mlp_act`` / ``mlp_act_grad`` (``kernels._target.scalar``, so the GPU
kernels can use them) call ``math.exp`` and agree with the CPU loops to a few ulp.
"""
import math

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot calls it; see "Threads")
from llvmlite import ir as llvm_ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic, overload

from ._target import CACHE, cpu_kernel, scalar
from .philox import sincos_turns

ACT_SILU = 0
ACT_TANH = 1
ACT_RELU = 2
ACTIVATIONS = {"silu": ACT_SILU, "tanh": ACT_TANH, "relu": ACT_RELU}

ROW_LANES = 16          # rows per prange block in mlp_forward_rows

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01   # fdlibm split of ln 2 (n * LN2_HI exact for |n| < 2**20)
LN2_LO = 1.90821492927058770002e-10
ROUND_MAGIC = 6755399441055744.0      # 1.5 * 2**52: (y + M) - M rounds y to the nearest integer
EXP_NEG_MAX = 708.0                   # exp(-708) ~ 3.3e-308 is still a normal number

# float32 constants of exp_neg32 (numpy float32 globals are float32 constants in njit code)
F32_ZERO = np.float32(0.0)
F32_ONE = np.float32(1.0)
F32_LOG2E = np.float32(LOG2E)
F32_LN2_HI = np.float32(0.693359375)
F32_LN2_LO = np.float32(-2.12194440e-4)
F32_ROUND_MAGIC = np.float32(12582912.0)     # 1.5 * 2**23
F32_EXP_NEG_MAX = np.float32(87.0)           # exp(-87) ~ 1.6e-38 is still a normal float32
F32_C2, F32_C3, F32_C4, F32_C5, F32_C6, F32_C7 = (np.float32(1.0 / math.factorial(k))
                                                  for k in range(2, 8))   # Taylor of exp

# the options of kernels._target.cpu_kernel, for small helpers inlined into the array loops
_INLINE = dict(inline="always", cache=CACHE, error_model="numpy", nogil=True, fastmath=False)


# ---------------------------------------------------------------------------------------
# layout and initialisation (plain Python)
# ---------------------------------------------------------------------------------------
def activation_code(name):
    """Integer code of an activation name ('silu', 'tanh', 'relu'); an int passes through."""
    if isinstance(name, (int, np.integer)) and int(name) in ACTIVATIONS.values():
        return int(name)
    if isinstance(name, str) and name.lower() in ACTIVATIONS:
        return ACTIVATIONS[name.lower()]
    raise ValueError(f"unknown activation {name!r}: expected one of {sorted(ACTIVATIONS)}")


def mlp_layout(sizes):
    """Offsets ``[L, 4]`` int64 of an MLP with layer widths ``sizes = [n_in, ..., n_out]``.

    Row l is ``(w_start, b_start, n_in_l, n_out_l)``; see the module docstring for the layout.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes}")
    if min(sizes) < 1:
        raise ValueError(f"every layer width must be >= 1, got {sizes}")
    L = len(sizes) - 1
    offsets = np.empty((L, 4), dtype=np.int64)
    pos = 0
    for l in range(L):
        nin, nout = sizes[l], sizes[l + 1]
        offsets[l] = (pos, pos + nin * nout, nin, nout)
        pos += nin * nout + nout
    return offsets


def n_params(offsets):
    """Length of the flat parameter vector described by ``offsets``."""
    return int(offsets[-1, 1] + offsets[-1, 3])


def layer_sizes(offsets):
    """The ``sizes`` list that ``mlp_layout`` turned into ``offsets``."""
    return [int(offsets[0, 2])] + [int(n) for n in offsets[:, 3]]


def cache_size(offsets, batch):
    """Length of the activation cache of a batch of ``batch`` rows (see the module docstring)."""
    hidden = int(offsets[1:, 2].sum()) if offsets.shape[0] > 1 else 0
    return int(batch) * (int(offsets[0, 2]) + 2 * hidden)


def init_params(sizes, normals, act="silu", dtype=np.float64, out_scale=1.0):
    """Initial ``theta`` from pre-drawn standard normals (randomness stays with the caller).

    ``normals`` has ``n_params`` entries laid out like ``theta``; only the weight entries are
    used.  Hidden-layer weights are ``N(0, gain / fan_in)`` with gain 2 for silu and relu (He
    et al. 2015) and 1 for tanh (LeCun); the output layer uses gain 1 (LeCun) times
    ``out_scale**2`` (i.e. its std is multiplied by ``out_scale``).  Biases start at zero.
    """
    code = activation_code(act)
    offsets = mlp_layout(sizes)
    normals = np.asarray(normals, dtype=np.float64)
    if normals.shape != (n_params(offsets),):
        raise ValueError(f"normals must have shape ({n_params(offsets)},) for sizes "
                         f"{list(sizes)}, got {normals.shape}")
    gain_hidden = 1.0 if code == ACT_TANH else 2.0
    theta = np.zeros(n_params(offsets), dtype=np.float64)
    L = offsets.shape[0]
    for l in range(L):
        w0, b0, nin, _ = (int(v) for v in offsets[l])
        std = math.sqrt((gain_hidden if l < L - 1 else 1.0) / nin)
        if l == L - 1:
            std *= float(out_scale)
        theta[w0:b0] = std * normals[w0:b0]
    return theta.astype(dtype)


def fourier_frequencies(n_freq, f_min=0.25, f_max=32.0):
    """``n_freq`` geometrically spaced frequencies from ``f_min`` to ``f_max`` (float64).

    With t in [0, 1], an integer frequency gives the same features at t = 0 and t = 1; the
    default ``f_min = 1/4`` keeps the lowest feature monotone over [0, 1].
    """
    if n_freq < 1:
        raise ValueError(f"n_freq must be >= 1, got {n_freq}")
    if n_freq == 1:
        return np.array([float(f_min)])
    return float(f_min) * (float(f_max) / float(f_min)) ** (np.arange(n_freq) / (n_freq - 1.0))


# ---------------------------------------------------------------------------------------
# scalar maths
# ---------------------------------------------------------------------------------------
@intrinsic
def _int64_bits_as_float64(typingctx, x):
    """The float64 whose bit pattern is the int64 x (an LLVM bitcast; CPU only)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return sig, codegen


@njit(**_INLINE)
def exp_neg(a):
    """exp(-a) for a >= 0 (float64): vectorisable, within ~1 ulp; 0 for a > 708; NaN -> NaN.

    Cody-Waite reduction a = n ln2 - r with n = round(a / ln2) (by the 1.5*2**52 trick),
    |r| <= ln2/2; exp(r) = 1 + (r + r^2 P(r)), the degree-13 Taylor polynomial (truncation
    below 5e-18) with its tail in Estrin's scheme (a short dependency chain, since without
    fastmath LLVM may not reassociate); 2**-n is written straight into the exponent bits.
    CPU only (bitcast).
    """
    big = a > EXP_NEG_MAX
    a = min(a, EXP_NEG_MAX)
    n = (a * LOG2E + ROUND_MAGIC) - ROUND_MAGIC
    r = (n * LN2_HI - a) + n * LN2_LO
    r2 = r * r
    r4 = r2 * r2
    q1 = 0.5 + r * (1.0 / 6.0)
    q2 = 1.0 / 24.0 + r * (1.0 / 120.0)
    q3 = 1.0 / 720.0 + r * (1.0 / 5040.0)
    q4 = 1.0 / 40320.0 + r * (1.0 / 362880.0)
    q5 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0)
    q6 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0)
    tail = r2 * ((q1 + r2 * q2) + r4 * ((q3 + r2 * q4) + r4 * (q5 + r2 * q6)))
    p = 1.0 + (r + tail)                              # exp(r): the 1 is added last
    res = p * _int64_bits_as_float64((1023 - np.int64(n)) << 52)
    return 0.0 if big else res


@njit(**_INLINE)
def sigmoid(z):
    """1 / (1 + exp(-z)) (float64) without overflow, vectorisable (CPU)."""
    e = exp_neg(abs(z))
    s = 1.0 / (1.0 + e)
    return e * s if z < 0.0 else s


@intrinsic
def _int64_low_bits_as_float32(typingctx, x):
    """The float32 whose bit pattern is the low 32 bits of the int64 x (CPU only)."""
    sig = types.float32(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], llvm_ir.IntType(32)),
                               llvm_ir.FloatType())

    return sig, codegen


@njit(**_INLINE)
def exp_neg32(a):
    """exp(-a) for a float32 a >= 0, in float32 arithmetic: vectorisable (16 lanes with
    AVX-512), within ~2 ulp of float32; 0 for a > 87; NaN -> NaN.  CPU only (bitcast).

    The scheme of ``exp_neg`` in float32: n = round(a / ln2) by the 1.5*2**23 trick, the
    Cody-Waite split ln2 = 0.693359375 - 2.12194440e-4 (n * LN2_HI32 is exact for n < 2**15),
    |r| <= ln2/2, exp(r) by its degree-7 Taylor polynomial (truncation below 6e-9, a tenth of
    an ulp), 2**-n written into the exponent bits.
    """
    big = a > F32_EXP_NEG_MAX
    a = min(a, F32_EXP_NEG_MAX)
    n = (a * F32_LOG2E + F32_ROUND_MAGIC) - F32_ROUND_MAGIC
    r = (n * F32_LN2_HI - a) + n * F32_LN2_LO
    r2 = r * r
    r4 = r2 * r2
    q1 = F32_C2 + r * F32_C3
    q2 = F32_C4 + r * F32_C5
    q3 = F32_C6 + r * F32_C7
    tail = r2 * ((q1 + r2 * q2) + r4 * q3)
    p = F32_ONE + (r + tail)
    res = p * _int64_low_bits_as_float32((127 - np.int64(n)) << 23)
    return F32_ZERO if big else res


@njit(**_INLINE)
def sigmoid32(z):
    """1 / (1 + exp(-z)) for a float32 z, in float32 arithmetic (vectorisable; CPU)."""
    e = exp_neg32(abs(z))
    s = F32_ONE / (F32_ONE + e)
    return e * s if z < F32_ZERO else s


def silu_grad(z):
    """(silu(z), silu'(z)) in the precision of z (float32 -> float32 arithmetic with
    ``exp_neg32``; anything else -> float64 with ``exp_neg``).  For njit code only."""
    raise NotImplementedError("silu_grad is a Numba overload; call it from njit code")


def silu_value(z):
    """silu(z) in the precision of z (see ``silu_grad``).  For njit code only."""
    raise NotImplementedError("silu_value is a Numba overload; call it from njit code")


@overload(silu_grad, inline="always")
def _silu_grad_impl(z):
    if z == types.float32:
        def impl32(z):
            # 1 - s from e = exp(-|z|) rather than by subtraction: in float32, 1 - s loses
            # all its digits for z > 16 and silu' = s + h (1 - s) was off by 8 ulp there
            e = exp_neg32(abs(z))
            q = F32_ONE / (F32_ONE + e)
            eq = e * q
            neg = z < F32_ZERO
            s = eq if neg else q
            h = z * s
            return h, s + h * (q if neg else eq)
        return impl32

    def impl64(z):
        z = float(z)
        s = sigmoid(z)
        h = z * s
        return h, s + h * (1.0 - s)
    return impl64


@overload(silu_value, inline="always")
def _silu_value_impl(z):
    if z == types.float32:
        return lambda z: z * sigmoid32(z)

    def impl64(z):
        z = float(z)
        return z * sigmoid(z)
    return impl64


@scalar
def mlp_act(z, act):
    """Activation ``act`` at z (float64): the portable definition (GPU kernels, references).

    The CPU array loops compute the same functions with the vectorisable ``exp_neg``.
    """
    if act == 0:
        return z / (1.0 + math.exp(-z)) if z >= 0.0 else z * math.exp(z) / (1.0 + math.exp(z))
    if act == 1:
        return math.tanh(z)
    if z > 0.0:
        return z
    return 0.0


@scalar
def mlp_act_grad(z, h, act):
    """d act / dz at z, given h = act(z) (float64); relu's derivative at 0 is 0."""
    if act == 0:
        if z >= 0.0:
            s = 1.0 / (1.0 + math.exp(-z))
        else:
            e = math.exp(z)
            s = e / (1.0 + e)
        return s + h * (1.0 - s)
    if act == 1:
        return 1.0 - h * h
    if z > 0.0:
        return 1.0
    return 0.0


@scalar
def time_sincos(f, t):
    """(sin(2 pi f t), cos(2 pi f t)) with an exact reduction of f t to [0, 1)."""
    q = f * t
    u = q - math.floor(q)
    return sincos_turns(u)


# ---------------------------------------------------------------------------------------
# array helpers (separate loops per activation, so that each one vectorises)
# ---------------------------------------------------------------------------------------
@cpu_kernel
def _bias_act(Z, b, act):
    """Z = act(Z + b) in place, row by row (one array, so LLVM needs no alias check)."""
    B, n = Z.shape
    if act == ACT_SILU:
        for r in range(B):
            for j in range(n):
                Z[r, j] = silu_value(Z[r, j] + b[j])
    elif act == ACT_TANH:
        for r in range(B):
            for j in range(n):
                Z[r, j] = math.tanh(float(Z[r, j] + b[j]))
    else:
        for r in range(B):
            for j in range(n):
                z = Z[r, j] + b[j]
                Z[r, j] = z if z > 0 else 0


@cpu_kernel
def _bias_act_deriv(ZD, b, H, act):
    """Z = ZD + b (rows); H = act(Z); ZD is overwritten with act'(Z)."""
    B, n = ZD.shape
    if act == ACT_SILU:
        for r in range(B):
            for j in range(n):
                h, dh = silu_grad(ZD[r, j] + b[j])
                H[r, j] = h
                ZD[r, j] = dh
    elif act == ACT_TANH:
        for r in range(B):
            for j in range(n):
                h = math.tanh(float(ZD[r, j] + b[j]))
                H[r, j] = h
                ZD[r, j] = 1.0 - h * h
    else:
        for r in range(B):
            for j in range(n):
                z = ZD[r, j] + b[j]
                pos = z > 0
                H[r, j] = z if pos else 0
                ZD[r, j] = 1 if pos else 0


@cpu_kernel
def _add_bias(Y, b):
    B, n = Y.shape
    for r in range(B):
        for j in range(n):
            Y[r, j] += b[j]


@cpu_kernel
def _mul_inplace(G, D):
    """G *= D elementwise (dL/dH times act' gives dL/dZ)."""
    B, n = G.shape
    for r in range(B):
        for j in range(n):
            G[r, j] = G[r, j] * D[r, j]


@cpu_kernel
def _colsum(G, out):
    """out[j] = sum_r G[r, j], rows summed in order."""
    B, n = G.shape
    for j in range(n):
        out[j] = 0
    for r in range(B):
        for j in range(n):
            out[j] += G[r, j]


@cpu_kernel
def _check_net(theta, offsets, X):
    L = offsets.shape[0]
    if L < 1 or offsets.shape[1] != 4:
        raise ValueError("offsets must have shape [L, 4] with L >= 1 (see mlp_layout)")
    if theta.ndim != 1 or theta.shape[0] != offsets[L - 1, 1] + offsets[L - 1, 3]:
        raise ValueError("theta length does not match offsets")
    if X.ndim != 2 or X.shape[1] != offsets[0, 2]:
        raise ValueError("X must have shape [B, n_in]")


@cpu_kernel
def _cache_len(offsets, B):
    n = offsets[0, 2]
    for l in range(1, offsets.shape[0]):
        n += 2 * offsets[l, 2]
    return B * n


@cpu_kernel
def _max_width(offsets):
    m = offsets[0, 2]
    for l in range(offsets.shape[0]):
        if offsets[l, 3] > m:
            m = offsets[l, 3]
    return m


# ---------------------------------------------------------------------------------------
# batched forward / backward (BLAS)
# ---------------------------------------------------------------------------------------
@cpu_kernel
def mlp_forward_into(theta, offsets, act, X, Y):
    """Y[B, n_out] = MLP(X[B, n_in]) without keeping activations.  Y is written in place."""
    _check_net(theta, offsets, X)
    X = np.ascontiguousarray(X)
    B = X.shape[0]
    L = offsets.shape[0]
    if Y.shape[0] != B or Y.shape[1] != offsets[L - 1, 3]:
        raise ValueError("Y must have shape [B, n_out]")
    maxw = _max_width(offsets)
    buf_a = np.empty(B * maxw, dtype=theta.dtype)
    buf_b = np.empty(B * maxw, dtype=theta.dtype)
    H = X
    use_a = True
    for l in range(L):
        w0 = offsets[l, 0]
        b0 = offsets[l, 1]
        nin = offsets[l, 2]
        nout = offsets[l, 3]
        W = theta[w0:b0].reshape((nin, nout))
        b = theta[b0:b0 + nout]
        if l == L - 1:
            np.dot(H, W, Y)
            _add_bias(Y, b)
        else:
            if use_a:
                Hn = buf_a[:B * nout].reshape((B, nout))
            else:
                Hn = buf_b[:B * nout].reshape((B, nout))
            use_a = not use_a
            np.dot(H, W, Hn)
            _bias_act(Hn, b, act)
            H = Hn


@cpu_kernel
def mlp_forward(theta, offsets, act, X):
    """Y[B, n_out] = MLP(X[B, n_in]) (batched, BLAS); see the module docstring."""
    Y = np.empty((X.shape[0], offsets[offsets.shape[0] - 1, 3]), dtype=theta.dtype)
    mlp_forward_into(theta, offsets, act, X, Y)
    return Y


@cpu_kernel
def mlp_forward_cache_into(theta, offsets, act, X, cache, Y):
    """Forward pass that also fills ``cache`` (length ``cache_size(offsets, B)``) for backward."""
    _check_net(theta, offsets, X)
    B = X.shape[0]
    L = offsets.shape[0]
    if cache.ndim != 1 or cache.shape[0] != _cache_len(offsets, B):
        raise ValueError("cache must have length cache_size(offsets, B)")
    if Y.shape[0] != B or Y.shape[1] != offsets[L - 1, 3]:
        raise ValueError("Y must have shape [B, n_out]")
    n0 = offsets[0, 2]
    H = cache[:B * n0].reshape((B, n0))
    H[:, :] = X
    pos = B * n0
    for l in range(L):
        w0 = offsets[l, 0]
        b0 = offsets[l, 1]
        nin = offsets[l, 2]
        nout = offsets[l, 3]
        W = theta[w0:b0].reshape((nin, nout))
        b = theta[b0:b0 + nout]
        if l == L - 1:
            np.dot(H, W, Y)
            _add_bias(Y, b)
        else:
            D = cache[pos:pos + B * nout].reshape((B, nout))
            pos += B * nout
            Hn = cache[pos:pos + B * nout].reshape((B, nout))
            pos += B * nout
            np.dot(H, W, D)                   # H W, then act'(H W + b) in place
            _bias_act_deriv(D, b, Hn, act)
            H = Hn


@cpu_kernel
def mlp_forward_cache(theta, offsets, act, X):
    """(Y[B, n_out], cache) -- the forward pass keeping what ``mlp_backward`` needs."""
    B = X.shape[0]
    cache = np.empty(_cache_len(offsets, B), dtype=theta.dtype)
    Y = np.empty((B, offsets[offsets.shape[0] - 1, 3]), dtype=theta.dtype)
    mlp_forward_cache_into(theta, offsets, act, X, cache, Y)
    return Y, cache


@cpu_kernel
def mlp_backward_into(theta, offsets, act, cache, dY, grad, dX):
    """Reverse pass: grad (flat, theta's layout) = dL/dtheta and dX[B, n_in] = dL/dX.

    ``dY[B, n_out]`` is dL/dY for the cache of one ``mlp_forward_cache*`` call with the same
    theta and act (the activation's derivative is read from the cache, so ``act`` is not
    used here; it is kept for a uniform signature).  ``grad`` and ``dX`` are overwritten,
    not accumulated.  Every reduction (over rows, for the biases) runs in row order.
    """
    L = offsets.shape[0]
    B = dY.shape[0]
    n0 = offsets[0, 2]
    if grad.ndim != 1 or grad.shape[0] != theta.shape[0]:
        raise ValueError("grad must have the length of theta")
    if cache.ndim != 1 or cache.shape[0] != _cache_len(offsets, B):
        raise ValueError("cache length does not match the batch of dY")
    if dY.ndim != 2 or dY.shape[1] != offsets[L - 1, 3]:
        raise ValueError("dY must have shape [B, n_out]")
    if dX.shape[0] != B or dX.shape[1] != n0:
        raise ValueError("dX must have shape [B, n_in]")
    maxw = _max_width(offsets)
    buf_a = np.empty(B * maxw, dtype=theta.dtype)
    buf_b = np.empty(B * maxw, dtype=theta.dtype)
    G = np.ascontiguousarray(dY)          # dL/dZ of the current layer
    # end of the cache block of H_{l-1} for the current layer l (walks backwards)
    pos = cache.shape[0]
    use_a = True
    for l in range(L - 1, -1, -1):
        w0 = offsets[l, 0]
        b0 = offsets[l, 1]
        nin = offsets[l, 2]
        nout = offsets[l, 3]
        W = theta[w0:b0].reshape((nin, nout))
        gW = grad[w0:b0].reshape((nin, nout))
        gb = grad[b0:b0 + nout]
        if l > 0:
            Hp = cache[pos - B * nin:pos].reshape((B, nin))                # H_{l-1}
            Dp = cache[pos - 2 * B * nin:pos - B * nin].reshape((B, nin))  # act'(Z_{l-1})
            pos -= 2 * B * nin
        else:
            Hp = cache[:B * n0].reshape((B, n0))                           # X
            Dp = Hp
        np.dot(Hp.T, G, gW)
        _colsum(G, gb)
        if l > 0:
            if use_a:
                dH = buf_a[:B * nin].reshape((B, nin))
            else:
                dH = buf_b[:B * nin].reshape((B, nin))
            use_a = not use_a
            np.dot(G, W.T, dH)
            _mul_inplace(dH, Dp)
            G = dH
        else:
            np.dot(G, W.T, dX)


@cpu_kernel
def mlp_backward(theta, offsets, act, cache, dY):
    """(grad_theta (flat), dX[B, n_in]) for the loss gradient dY; see ``mlp_backward_into``."""
    grad = np.empty_like(theta)
    dX = np.empty((dY.shape[0], offsets[0, 2]), dtype=theta.dtype)
    mlp_backward_into(theta, offsets, act, cache, dY, grad, dX)
    return grad, dX


# ---------------------------------------------------------------------------------------
# fused per-walker forward (prange, no BLAS)
# ---------------------------------------------------------------------------------------
@njit(**_INLINE)
def _rows_matmul_acc(h, theta, w0, nin, nout, nr, acc):
    """acc[r, j] += sum_i h[r, i] W[i, j] for r < nr, the terms added one at a time in i
    order (the roundings of ``mlp_cpu.mlp_forward_rows_into``, bit for bit).

    Eight (then four, then one) inputs per pass over acc: each acc vector is loaded and
    stored once per eight multiply-adds instead of once per one (the loop was bound by the
    loads and stores of acc).  Measured in ``reverse_fused`` (float32, [18, 128, 128, 128,
    2], one thread): 3.8e5 network evaluations per CPU-second before, 5.3e5 with four, 5.7e5
    with eight inputs per pass, the same bits.  Weights through slices: with ``theta[w0 + i*nout + j]``
    numba's negative-index wraparound check on an index of unknown sign stops LLVM from
    vectorising the j loop (measured 4-5x slower).
    """
    i = 0
    while i + 8 <= nin:
        w_a = theta[w0 + i * nout:w0 + (i + 1) * nout]
        w_b = theta[w0 + (i + 1) * nout:w0 + (i + 2) * nout]
        w_c = theta[w0 + (i + 2) * nout:w0 + (i + 3) * nout]
        w_d = theta[w0 + (i + 3) * nout:w0 + (i + 4) * nout]
        w_e = theta[w0 + (i + 4) * nout:w0 + (i + 5) * nout]
        w_f = theta[w0 + (i + 5) * nout:w0 + (i + 6) * nout]
        w_g = theta[w0 + (i + 6) * nout:w0 + (i + 7) * nout]
        w_h = theta[w0 + (i + 7) * nout:w0 + (i + 8) * nout]
        for r in range(nr):
            hr = h[r]
            xa = hr[i]
            xb = hr[i + 1]
            xc = hr[i + 2]
            xd = hr[i + 3]
            xe = hr[i + 4]
            xf = hr[i + 5]
            xg = hr[i + 6]
            xh = hr[i + 7]
            ar = acc[r]
            for j in range(nout):
                ar[j] = (((((((ar[j] + xa * w_a[j]) + xb * w_b[j]) + xc * w_c[j])
                            + xd * w_d[j]) + xe * w_e[j]) + xf * w_f[j]) + xg * w_g[j]) \
                    + xh * w_h[j]
        i += 8
    while i + 4 <= nin:
        w_a = theta[w0 + i * nout:w0 + (i + 1) * nout]
        w_b = theta[w0 + (i + 1) * nout:w0 + (i + 2) * nout]
        w_c = theta[w0 + (i + 2) * nout:w0 + (i + 3) * nout]
        w_d = theta[w0 + (i + 3) * nout:w0 + (i + 4) * nout]
        for r in range(nr):
            hr = h[r]
            xa = hr[i]
            xb = hr[i + 1]
            xc = hr[i + 2]
            xd = hr[i + 3]
            ar = acc[r]
            for j in range(nout):
                ar[j] = (((ar[j] + xa * w_a[j]) + xb * w_b[j]) + xc * w_c[j]) + xd * w_d[j]
        i += 4
    while i < nin:
        wr = theta[w0 + i * nout:w0 + (i + 1) * nout]
        for r in range(nr):
            x = h[r, i]
            ar = acc[r]
            for j in range(nout):
                ar[j] += x * wr[j]
        i += 1


@cpu_kernel(parallel=True)
def mlp_forward_rows_into(theta, offsets, act, X, Y):
    """Y = MLP(X) computed row by row with explicit loops, ``prange`` over blocks of rows.

    Every output element is sum_i h_i W_ij (i in order) + b_j, whatever the block, the tail or
    the thread count, so a row's result does not depend on the other rows (bitwise).  Agrees
    with the BLAS ``mlp_forward`` to rounding (not bitwise).  No BLAS is called.
    """
    _check_net(theta, offsets, X)
    B = X.shape[0]
    L = offsets.shape[0]
    if Y.shape[0] != B or Y.shape[1] != offsets[L - 1, 3]:
        raise ValueError("Y must have shape [B, n_out]")
    maxw = _max_width(offsets)
    nblk = (B + ROW_LANES - 1) // ROW_LANES
    for blk in prange(nblk):
        r0 = blk * ROW_LANES
        nr = min(ROW_LANES, B - r0)
        h = np.empty((ROW_LANES, maxw), dtype=theta.dtype)
        acc = np.empty((ROW_LANES, maxw), dtype=theta.dtype)
        n0 = offsets[0, 2]
        for r in range(nr):
            for i in range(n0):
                h[r, i] = X[r0 + r, i]
        for l in range(L):
            w0 = offsets[l, 0]
            b0 = offsets[l, 1]
            nin = offsets[l, 2]
            nout = offsets[l, 3]
            for r in range(nr):
                for j in range(nout):
                    acc[r, j] = 0
            # weights through slices, no buffer swap (aliasing): see _rows_matmul_acc
            _rows_matmul_acc(h, theta, w0, nin, nout, nr, acc)
            bb = theta[b0:b0 + nout]
            if l == L - 1:
                for r in range(nr):
                    for j in range(nout):
                        Y[r0 + r, j] = acc[r, j] + bb[j]
            else:
                _bias_act(acc[:nr, :nout], bb, act)
                for r in range(nr):
                    for j in range(nout):
                        h[r, j] = acc[r, j]


@cpu_kernel
def mlp_forward_rows(theta, offsets, act, X):
    """Fused per-walker forward (see ``mlp_forward_rows_into``); returns Y[B, n_out]."""
    Y = np.empty((X.shape[0], offsets[offsets.shape[0] - 1, 3]), dtype=theta.dtype)
    mlp_forward_rows_into(theta, offsets, act, X, Y)
    return Y


# ---------------------------------------------------------------------------------------
# time embedding
# ---------------------------------------------------------------------------------------
@cpu_kernel
def fourier_embed_into(t, freqs, out, col):
    """out[r, col + k] = sin(2 pi f_k t_r), out[r, col + F + k] = cos(2 pi f_k t_r).

    ``t[B]``, ``freqs[F]``; writes columns col .. col + 2F - 1 of ``out[B, >= col + 2F]`` (so
    the embedding can go straight into the network's input matrix beside x).
    """
    B = t.shape[0]
    F = freqs.shape[0]
    if out.shape[0] != B or out.shape[1] < col + 2 * F or col < 0:
        raise ValueError("out must have shape [B, >= col + 2 F]")
    for r in range(B):
        tr = float(t[r])
        for k in range(F):
            s, c = time_sincos(float(freqs[k]), tr)
            out[r, col + k] = s
            out[r, col + F + k] = c


@cpu_kernel
def fourier_embed(t, freqs):
    """E[B, 2F] = [sin(2 pi f t) ..., cos(2 pi f t) ...] (float64) for t[B], freqs[F]."""
    out = np.empty((t.shape[0], 2 * freqs.shape[0]), dtype=np.float64)
    fourier_embed_into(t, freqs, out, 0)
    return out


# ---------------------------------------------------------------------------------------
# optimiser, clipping, EMA (in place on flat vectors)
# ---------------------------------------------------------------------------------------
@cpu_kernel
def adam_step(theta, grad, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0):
    """One Adam step (Kingma & Ba 2015) in place on theta, m, v; ``step`` counts from 1.

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  mh = m / (1 - b1^step);
    vh = v / (1 - b2^step);  theta <- theta - lr (mh / (sqrt(vh) + eps) + wd theta).
    Weight decay is decoupled (AdamW, Loshchilov & Hutter 2019); 0 gives plain Adam.
    """
    n = theta.shape[0]
    if grad.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("theta, grad, m and v must have the same length")
    if step < 1:
        raise ValueError("step counts from 1")
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    for i in range(n):
        g = float(grad[i])
        mi = beta1 * float(m[i]) + (1.0 - beta1) * g
        vi = beta2 * float(v[i]) + (1.0 - beta2) * (g * g)
        m[i] = mi
        v[i] = vi
        mh = float(m[i]) / bc1
        vh = float(v[i]) / bc2
        th = float(theta[i])
        theta[i] = th - lr * (mh / (math.sqrt(vh) + eps) + weight_decay * th)


@cpu_kernel
def grad_global_norm(grad):
    """Euclidean norm of a flat vector, summed in float64 in index order."""
    s = 0.0
    for i in range(grad.shape[0]):
        g = float(grad[i])
        s += g * g
    return math.sqrt(s)


@cpu_kernel
def clip_grad_norm(grad, max_norm):
    """Scale grad in place so that its global norm is at most ``max_norm``; return the norm
    before clipping.  A non-finite norm is returned unchanged and grad is left alone, so the
    caller can stop on it; ``max_norm = inf`` never clips."""
    norm = grad_global_norm(grad)
    if norm > max_norm and math.isfinite(norm):
        scale = max_norm / norm
        for i in range(grad.shape[0]):
            grad[i] = grad[i] * scale
    return norm


@cpu_kernel
def ema_update(ema, theta, decay):
    """ema <- decay * ema + (1 - decay) * theta, in place."""
    if ema.shape[0] != theta.shape[0]:
        raise ValueError("ema and theta must have the same length")
    c = 1.0 - decay
    for i in range(ema.shape[0]):
        ema[i] = decay * float(ema[i]) + c * float(theta[i])
