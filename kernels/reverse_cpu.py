r"""Reverse-time sampling with an MLP score on the CPU: a fused per-walker kernel and a
batched driver around the BLAS forward pass.

Pure compute (no I/O, no printing, no ``np.random``).  The sampler (``nonequil.samplers``)
turns every scheme -- Euler-Maruyama on the reverse SDE, the ancestral (posterior) chain,
Heun on the probability-flow ODE, Langevin correctors, a final Tweedie denoising step --
into a list of *stages*.  Stage s evaluates the network once and then updates the state of
every walker with four per-stage coefficients ``coef[s] = (c0, c1, c2, c3)``:

=====  ================  ===============================================================
kind   evaluated at      update (per coordinate; o = network output, z = normal)
=====  ================  ===============================================================
0      y                 ``y <- (c0 y + c1 o) + c2 z``             (affine / noisy step)
1      y                 ``d <- c0 y + c1 o;  u <- y + c3 d``      (Heun predictor)
2      u                 ``y <- y + c3 ((d + c0 u) + c1 o)``       (Heun corrector)
=====  ================  ===============================================================

The network input of stage s is ``[x, sin(2 pi f tau_s), cos(2 pi f tau_s)]`` (x = y or u,
``tau_s = taus[s]`` the model's noise feature of the stage's time, ``f = freqs``), exactly
the row ``nonequil.models.MLPScoreModel.net_input`` builds; the embedding is computed for
every stage with ``kernels.mlp_cpu.time_sincos``.  The output o is in the network's dtype
(float64 or float32) and the update is done in float64; the state ``y, u, d`` is float64.

Noise.  ``noise[s] = n >= 0`` makes stage s draw element ``n*D + d`` of the normal stream of
(seed, purpose, walker) for coordinate d (``kernels.philox.normal_j``); ``noise[s] < 0``
means no noise (z = 0, and c2 = 0).  The walker is the *absolute* sample index
``first + row``, so a walker's result does not depend on which walkers run together.

Recording.  ``rec_stage[r]`` (sorted) is a count of completed stages: after stage s the state
y is copied to ``rec_y[r]`` when ``s + 1 == rec_stage[r]``.

Engines (same stages, same noise, same update arithmetic):

* ``reverse_fused``: ``prange`` over blocks of ``LANES`` walkers; each block keeps its state
  in local arrays across all stages and runs the MLP with explicit loops (the loop order of
  ``mlp_cpu.mlp_forward_rows_into``: sum over the inputs of a unit in index order, then the
  bias), so its results are bitwise those of ``reverse_batched(..., use_rows=True)`` and
  bitwise independent of the thread count and of the batching.  No BLAS.
* ``reverse_batched``: one stage at a time over the whole batch; the network through
  ``mlp_cpu.mlp_forward_into`` (BLAS, ``use_rows=False``) or ``mlp_forward_rows_into``
  (``use_rows=True``); the update loop is serial (no ``prange`` next to BLAS).  The BLAS
  forward agrees with the explicit loops to rounding (about 1e-15 relative per evaluation),
  so the two engines agree to about 1e-13 after hundreds of stages in a contracting chain
  (tested at 1e-12).  Whether BLAS's results for a row depend on the number of rows is up to
  OpenBLAS; in practice they do not (tested: batches of 7 versus all at once).

* ``reverse_shard``: the chunk of the ``sharded`` engine (``nonequil.samplers``): the
  contract of ``reverse_batched`` for one shard of a fixed number of walkers, with the
  network cut down to what differs between walkers.  The first layer's time-feature part
  ``W_0[emb] . emb(tau_s) + b_0`` is the same for every walker at a stage, so it is
  computed once per stage (``_stage_bias``); per walker only the D-deep product with the
  state remains, fused with the activation (no BLAS call for the first layer).  The hidden
  layers are one BLAS call each, followed by bias + activation in place (``act_rows``, with
  ``silu_fast32`` for float32 SiLU); the output layer is a BLAS call whose bias goes into
  the update; the update draws one Philox call per coordinate pair for all walkers of the
  shard (``_update_stage``; ``reverse_batched`` calls ``normal_j`` per coordinate, so two
  Philox calls per walker for D = 2).  This changes the rounding order (first layer, fused
  multiply-adds in the activation loops, a different float32 exp polynomial): its outputs
  agree with ``reverse_batched``'s to about 1e-15 (float64) and 4e-7 (float32) of their
  scale per evaluation (tested at 1e-13 and 1e-5), not bitwise.  A row's bits depend only
  on the row and on the shape of the BLAS calls.

The caller limits the BLAS threads (``threadpoolctl``) around ``reverse_batched`` and
``reverse_shard``.

Speed of ``reverse_shard`` (one thread, one shard of 512 walkers, float32 [18, 128, 128,
128, 2], em; load ~10, thread CPU time): 862 ns per network evaluation against 1034 for
``reverse_batched`` on the same shard (1.20x).  Where it goes: the two 128 x 128 products
680 ns (OpenBLAS sgemm at 97 GFLOP/s, the core's float32 FMA peak), the three SiLU passes
about 160 (0.43 ns an element; ``mlp_cpu.silu_value`` 0.56), the rest (the first layer's
products, the output product, Philox noise and update, stage bias) about 45.  What the
changes saved per evaluation (same measurement): the first layer, a K = 18 BLAS product
(57 ns) plus bias and SiLU (72), became 76 ns in one pass; the noise and update 58 -> 10
(one Philox call per pair, vectorised over walkers); the other SiLU passes 72 -> 55 each
(``silu_fast32`` with fused multiply-adds; 64 without them).  Fusing the last SiLU with the
output layer in explicit loops was slower (161 ns against 80: the per-row dot products did
not vectorise) than SiLU in place plus a BLAS call (7 ns).

Speed (2-core Zen 4, network [17, 128, 128, 128, 1], float64): ``reverse_fused`` ran about
2.4e5 network evaluations per second (8 GMAC/s), 1.2x ``reverse_batched`` with BLAS
(``nonequil.samplers.ENGINE_NOTE``), before the accumulation went eight inputs per pass
(``mlp_cpu._rows_matmul_acc``: float32, [18, 128, 128, 128, 2], one thread, 3.8e5 ->
5.7e5 evaluations per CPU-second, the same bits; ``experiments.bench_sample`` measures the
engines against torch and jax).  Three details of the explicit loops matter (each measured
1.5-5x): index the weights through slices (``theta[w0 + i*nout + j]`` with a start of
unknown sign makes numba emit a negative-index wraparound per element, which stops LLVM from
vectorising the j loop); write the hidden activations back into the input buffer instead of
swapping the two buffers (after a swap LLVM cannot prove they do not alias); and load and
store each accumulator once per eight multiply-adds.  ``kernels.mlp_cpu.mlp_forward_rows_into``
shares the accumulation but copies the activations back from a separate buffer, so
``use_rows=True`` is slower than ``reverse_fused`` while computing the same bits.
"""
import math

import numpy as np
import numba
from numba import njit, prange

from numba.core import types
from numba.extending import overload

from ._target import CACHE, cpu_kernel, scalar
from .mlp_cpu import (_INLINE, ACT_SILU, ACT_TANH, F32_LN2_HI, F32_LN2_LO, F32_LOG2E, F32_ONE,
                      F32_ROUND_MAGIC, _bias_act, _int64_low_bits_as_float32, _max_width,
                      _rows_matmul_acc, mlp_forward_into, mlp_forward_rows_into, sigmoid,
                      silu_value, time_sincos)
from .philox import MASK32, normal_j, normal_pair, philox_words, uniform53

STAGE_AFFINE = 0
STAGE_HEUN_PREDICT = 1
STAGE_HEUN_CORRECT = 2

LANES = 16          # walkers per prange block of the fused kernel
FUSED_CHUNK = 2     # prange blocks a thread takes at a time (dynamic scheduling)


@scalar
def stage_update(kind, c0, c1, c2, c3, y, u, d, o, z):
    """One coordinate of the stage update (see the module docstring); returns (y, u, d)."""
    if kind == 0:
        return (c0 * y + c1 * o) + c2 * z, u, d
    if kind == 1:
        dn = c0 * y + c1 * o
        return y, y + c3 * dn, dn
    return y + c3 * ((d + c0 * u) + c1 * o), u, d


@cpu_kernel
def _check(theta, offsets, freqs, kinds, coef, taus, noise, s0, s1, y, u, d, rec_stage, rec_y):
    B, D = y.shape
    L = offsets.shape[0]
    if offsets[0, 2] != D + 2 * freqs.shape[0] or offsets[L - 1, 3] != D:
        raise ValueError("the network must map [D + 2 F] inputs to D outputs")
    if theta.shape[0] != offsets[L - 1, 1] + offsets[L - 1, 3]:
        raise ValueError("theta length does not match offsets")
    S = kinds.shape[0]
    if coef.shape[0] != S or coef.shape[1] != 4 or taus.shape[0] != S or noise.shape[0] != S:
        raise ValueError("kinds, coef[S, 4], taus and noise must describe the same S stages")
    if not 0 <= s0 <= s1 <= S:
        raise ValueError("need 0 <= s0 <= s1 <= number of stages")
    if u.shape[0] != B or u.shape[1] != D or d.shape[0] != B or d.shape[1] != D:
        raise ValueError("y, u and d must have the same shape [B, D]")
    if rec_y.shape[0] != rec_stage.shape[0] or rec_y.shape[1] != B or rec_y.shape[2] != D:
        raise ValueError("rec_y must have shape [R, B, D] with R = len(rec_stage)")


@njit(**_INLINE)
def _act_into(acc, b, nr, nout, act, h):
    """h[r, j] = act(acc[r, j] + b[j]) for r < nr, j < nout: the arithmetic of
    ``mlp_cpu._bias_act`` (so the fused kernel equals the rows kernel bit for bit)."""
    if act == ACT_SILU:
        for r in range(nr):
            ar = acc[r]
            hr = h[r]
            for j in range(nout):
                hr[j] = silu_value(ar[j] + b[j])
    elif act == ACT_TANH:
        for r in range(nr):
            ar = acc[r]
            hr = h[r]
            for j in range(nout):
                hr[j] = math.tanh(float(ar[j] + b[j]))
    else:
        for r in range(nr):
            ar = acc[r]
            hr = h[r]
            for j in range(nout):
                z = ar[j] + b[j]
                hr[j] = z if z > 0 else 0


@cpu_kernel
def _first_record(rec_stage, s0):
    r = 0
    while r < rec_stage.shape[0] and rec_stage[r] <= s0:
        r += 1
    return r


def reverse_fused(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose, first,
                  s0, s1, y, u, d, rec_stage, rec_y):
    """Run stages s0 .. s1-1 on every walker (rows of y, u, d; updated in place).

    See the module docstring.  ``first`` is the absolute index of row 0.  The blocks of the
    ``prange`` are handed out dynamically, ``FUSED_CHUNK`` at a time
    (``numba.set_parallel_chunksize`` around the call; inside the kernel it would stop
    Numba from caching it), instead of one equal share per thread: on a loaded machine a
    descheduled thread may hold up the whole region (the static split got 0.13 CPU-seconds
    per wall second with 2 threads at load 15 in ``experiments.bench_sample``; an A/B at load
    9 showed no difference either way: 3.75e5 against 3.80e5 evaluations/s, so this is a
    guard, not a measured gain).  The results do not depend on it.
    """
    old = numba.set_parallel_chunksize(FUSED_CHUNK)
    try:
        _reverse_fused(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose,
                       first, s0, s1, y, u, d, rec_stage, rec_y)
    finally:
        numba.set_parallel_chunksize(old)


@cpu_kernel(parallel=True)
def _reverse_fused(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose, first,
                   s0, s1, y, u, d, rec_stage, rec_y):
    """The kernel of ``reverse_fused``."""
    _check(theta, offsets, freqs, kinds, coef, taus, noise, s0, s1, y, u, d, rec_stage, rec_y)
    B, D = y.shape
    L = offsets.shape[0]
    F = freqs.shape[0]
    maxw = offsets[0, 2]
    for l in range(L):
        if offsets[l, 3] > maxw:
            maxw = offsets[l, 3]
    r_start = _first_record(rec_stage, s0)
    R = rec_stage.shape[0]
    useed = np.uint64(seed)
    upur = np.uint64(purpose)
    nblk = (B + LANES - 1) // LANES
    for blk in prange(nblk):
        r0 = blk * LANES
        nr = min(LANES, B - r0)
        h = np.empty((LANES, maxw), dtype=theta.dtype)
        acc = np.empty((LANES, maxw), dtype=theta.dtype)
        ys = np.empty((LANES, D))
        us = np.empty((LANES, D))
        ds = np.empty((LANES, D))
        for r in range(nr):
            for k in range(D):
                ys[r, k] = y[r0 + r, k]
                us[r, k] = u[r0 + r, k]
                ds[r, k] = d[r0 + r, k]
        rr = r_start
        for s in range(s0, s1):
            kind = kinds[s]
            # ---- network input [x, sin, cos]
            if kind == 2:
                for r in range(nr):
                    for k in range(D):
                        h[r, k] = us[r, k]
            else:
                for r in range(nr):
                    for k in range(D):
                        h[r, k] = ys[r, k]
            tau = float(taus[s])
            for q in range(F):
                sn, cs = time_sincos(float(freqs[q]), tau)
                for r in range(nr):
                    h[r, D + q] = sn
                    h[r, D + F + q] = cs
            # ---- forward (loop order of mlp_forward_rows_into; hidden activations are
            # written back into h rather than swapping h and acc, which measured 3-5x
            # slower: LLVM then cannot prove that the two buffers do not alias)
            for l in range(L):
                w0 = offsets[l, 0]
                b0 = offsets[l, 1]
                nin = offsets[l, 2]
                nout = offsets[l, 3]
                for r in range(nr):
                    ar = acc[r]
                    for j in range(nout):
                        ar[j] = 0
                _rows_matmul_acc(h, theta, w0, nin, nout, nr, acc)
                bv = theta[b0:b0 + nout]
                if l == L - 1:
                    for r in range(nr):
                        ar = acc[r]
                        for j in range(nout):
                            ar[j] = ar[j] + bv[j]
                else:
                    _act_into(acc, bv, nr, nout, act, h)
            # the output is in acc
            # ---- update
            c0 = coef[s, 0]
            c1 = coef[s, 1]
            c2 = coef[s, 2]
            c3 = coef[s, 3]
            nz = noise[s]
            for r in range(nr):
                w = np.uint64(first + r0 + r)
                for k in range(D):
                    z = 0.0
                    if nz >= 0:
                        z = normal_j(useed, upur, w, np.uint64(nz * D + k))
                    yn, un, dn = stage_update(kind, c0, c1, c2, c3, ys[r, k], us[r, k],
                                              ds[r, k], float(acc[r, k]), z)
                    ys[r, k] = yn
                    us[r, k] = un
                    ds[r, k] = dn
            while rr < R and rec_stage[rr] == s + 1:
                for r in range(nr):
                    for k in range(D):
                        rec_y[rr, r0 + r, k] = ys[r, k]
                rr += 1
        for r in range(nr):
            for k in range(D):
                y[r0 + r, k] = ys[r, k]
                u[r0 + r, k] = us[r, k]
                d[r0 + r, k] = ds[r, k]


@cpu_kernel
def apply_stage(kind, c0, c1, c2, c3, nz, seed, purpose, first, y, u, d, o):
    """The update of one stage over a batch (serial; o[B, D] is the network output)."""
    B, D = y.shape
    useed = np.uint64(seed)
    upur = np.uint64(purpose)
    for r in range(B):
        w = np.uint64(first + r)
        for k in range(D):
            z = 0.0
            if nz >= 0:
                z = normal_j(useed, upur, w, np.uint64(nz * D + k))
            yn, un, dn = stage_update(kind, c0, c1, c2, c3, y[r, k], u[r, k], d[r, k],
                                      float(o[r, k]), z)
            y[r, k] = yn
            u[r, k] = un
            d[r, k] = dn


@cpu_kernel
def reverse_batched(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose, first,
                    s0, s1, y, u, d, rec_stage, rec_y, use_rows):
    """Same contract as ``reverse_fused``, one stage at a time over the whole batch, the network
    through BLAS (``use_rows=False``) or the explicit-loop rows kernel (``use_rows=True``)."""
    _check(theta, offsets, freqs, kinds, coef, taus, noise, s0, s1, y, u, d, rec_stage, rec_y)
    B, D = y.shape
    F = freqs.shape[0]
    n0 = offsets[0, 2]
    X = np.empty((B, n0), dtype=theta.dtype)
    O = np.empty((B, D), dtype=theta.dtype)
    rr = _first_record(rec_stage, s0)
    R = rec_stage.shape[0]
    for s in range(s0, s1):
        kind = kinds[s]
        for r in range(B):
            for k in range(D):
                X[r, k] = u[r, k] if kind == 2 else y[r, k]
        tau = float(taus[s])
        for q in range(F):
            sn, cs = time_sincos(float(freqs[q]), tau)
            for r in range(B):
                X[r, D + q] = sn
                X[r, D + F + q] = cs
        if use_rows:
            mlp_forward_rows_into(theta, offsets, act, X, O)
        else:
            mlp_forward_into(theta, offsets, act, X, O)
        apply_stage(kind, coef[s, 0], coef[s, 1], coef[s, 2], coef[s, 3], noise[s], seed,
                    purpose, first, y, u, d, O)
        while rr < R and rec_stage[rr] == s + 1:
            for r in range(B):
                for k in range(D):
                    rec_y[rr, r, k] = y[r, k]
            rr += 1


@cpu_kernel
def bit_flips(seed, purpose, first, step, p, x):
    """The binomial chain's draw: ``x[r, k] = 1`` if ``u <= p[r, k]`` else 0, with u the
    float64 uniform of word pair k % 2 of the counter (first + r, step, k // 2, purpose) --
    the layout of ``kernels.streams.uniforms``.  Serial: one Philox call per two bits is
    cheap next to the network, and a parallel launch per step costs more than it saves on
    small batches."""
    B, K = p.shape
    useed = np.uint64(seed)
    upur = np.uint64(purpose)
    for r in range(B):
        w = np.uint64(first + r)
        for b in range((K + 1) // 2):
            w0, w1, w2, w3 = philox_words(useed, upur, w, np.uint64(step), np.uint64(b))
            k = 2 * b
            x[r, k] = 1.0 if uniform53(w0, w1) <= p[r, k] else 0.0
            if k + 1 < K:
                x[r, k + 1] = 1.0 if uniform53(w2, w3) <= p[r, k + 1] else 0.0


# ---------------------------------------------------------------------------------------
# reverse_shard: the compiled chunk of the sharded engine
# ---------------------------------------------------------------------------------------
# The activation loops of reverse_shard let LLVM contract a * b + c into fused multiply-adds
# (fastmath "contract" only: no reassociation, no assumptions about NaN or infinity), which
# made SiLU over [512, 128] float32 about 10 % faster.  A contraction is fixed at compile
# time, so the bits still depend only on the row and the machine.
_CONTRACT = dict(cache=CACHE, error_model="numpy", nogil=True, fastmath={"contract"})

F32_EXP_MAX = np.float32(87.0)
# e^r ~ 1 + r + r^2 (E0 + E1 r + E2 r^2 + E3 r^3 + E4 r^4) on |r| <= ln2 / 2: a minimax
# (Lawson) fit of the relative error, 3.1e-9 with float64 coefficients (a fortieth of a
# float32 ulp); one term fewer than the Taylor polynomial of mlp_cpu.exp_neg32
F32_E0, F32_E1, F32_E2, F32_E3, F32_E4 = (np.float32(v) for v in (
    0.4999999403953552, 0.1666652113199234, 0.04166838899254799, 0.008368710055947304,
    0.001381461275741458))


def silu_sample(z):
    """silu(z) for the sampling kernel (njit code only): float32 ``silu_fast32``, float64
    the ``mlp_cpu.silu_value`` formula."""
    raise NotImplementedError("silu_sample is a Numba overload; call it from njit code")


@njit(**_INLINE)
def silu_fast32(z):
    """silu(z) = z / (1 + exp(-z)) for a float32 z, in float32 arithmetic (CPU, vectorises).

    exp(-z) with -z clamped to [-87, 87] (so 2**n stays a normal float32 and z / (1 + e)
    needs no branch: for z < -87 the result is z e^-87, under |z| 1.7e-38 in magnitude
    where the exact value is smaller still; ``silu_value`` gives 0 there), Cody-Waite
    reduction as in ``mlp_cpu.exp_neg32``, the degree-6 minimax polynomial ``F32_E*``.
    Fewer operations than ``mlp_cpu.silu_value`` (no |z|, no select, one division):
    within 2.4 float32 ulp of the exact silu (``silu_value``: 3.4; tested in
    tests/test_mlp_kernels.py), about 22 % faster with contraction.
    """
    a = min(max(-z, -F32_EXP_MAX), F32_EXP_MAX)
    n = (a * F32_LOG2E + F32_ROUND_MAGIC) - F32_ROUND_MAGIC
    r = (a - n * F32_LN2_HI) - n * F32_LN2_LO
    r2 = r * r
    p = F32_ONE + (r + r2 * ((F32_E0 + r * F32_E1)
                             + r2 * ((F32_E2 + r * F32_E3) + r2 * F32_E4)))
    e = p * _int64_low_bits_as_float32((127 + np.int64(n)) << 23)
    return z / (F32_ONE + e)


@overload(silu_sample, inline="always")
def _silu_sample_impl(z):
    if z == types.float32:
        return lambda z: silu_fast32(z)

    def impl64(z):
        z = float(z)
        return z * sigmoid(z)
    return impl64


@njit(**_CONTRACT)
def act_rows(Z, b, act):
    """Z = act(Z + b) in place (rows of a C-contiguous Z [B, n]); SiLU by ``silu_sample``,
    tanh and relu as ``mlp_cpu._bias_act``."""
    if act != ACT_SILU:
        _bias_act(Z, b, act)
        return
    B, n = Z.shape
    for r in range(B):
        zr = Z[r]
        for j in range(n):
            zr[j] = silu_sample(zr[j] + b[j])


@cpu_kernel
def _stage_bias(theta, offsets, freqs, tau, D, c):
    """c[j] = b_0[j] + sum_q (W_0[D+q, j] sin_q + W_0[D+F+q, j] cos_q): the part of the
    first layer's pre-activation shared by every walker at a stage (noise feature tau).

    The features are rounded to the network's dtype first (as in the input row of the other
    engines); the sum runs in float64 in the order b, (sin, cos) per frequency and is
    rounded once to c's dtype."""
    F = freqs.shape[0]
    w0 = offsets[0, 0]
    b0 = offsets[0, 1]
    n = offsets[0, 3]
    e = np.empty(2 * F, dtype=c.dtype)        # the features in the network's dtype
    for q in range(F):
        sn, cs = time_sincos(float(freqs[q]), tau)
        e[q] = sn
        e[F + q] = cs
    for j in range(n):
        acc = float(theta[b0 + j])
        for q in range(F):
            acc += float(e[q]) * float(theta[w0 + (D + q) * n + j])
            acc += float(e[F + q]) * float(theta[w0 + (D + F + q) * n + j])
        c[j] = acc


@njit(**_CONTRACT)
def first_layer(theta, offsets, X, c, act, apply_act, H):
    """H[r, j] = act((sum_k X[r, k] W_0[k, j]) + c[j]) over the D state inputs (k in index
    order; c from ``_stage_bias``), or without act when ``apply_act`` is False.  The last
    state input, c and the activation go in one pass over the row."""
    B, D = X.shape
    w0 = offsets[0, 0]
    n = offsets[0, 3]
    silu = apply_act and act == ACT_SILU
    for r in range(B):
        hr = H[r]
        if D > 1:
            w = theta[w0:w0 + n]
            x = X[r, 0]
            for j in range(n):
                hr[j] = x * w[j]
            for k in range(1, D - 1):
                w = theta[w0 + k * n:w0 + (k + 1) * n]
                x = X[r, k]
                for j in range(n):
                    hr[j] = hr[j] + x * w[j]
        w = theta[w0 + (D - 1) * n:w0 + D * n]
        x = X[r, D - 1]
        if D == 1:
            for j in range(n):
                hr[j] = x * w[j] + c[j]
        elif silu:
            for j in range(n):
                hr[j] = silu_sample((hr[j] + x * w[j]) + c[j])
        else:
            for j in range(n):
                hr[j] = (hr[j] + x * w[j]) + c[j]
    if apply_act and (D == 1 or not silu):
        zero = np.zeros(n, dtype=H.dtype)
        act_rows(H, zero, act)


@cpu_kernel
def _update_stage(kind, c0, c1, c2, c3, nz, useed, upur, first, y, u, d, o, bo, za, zb):
    """The update of one stage over a shard (network output o + bo), the noise drawn
    walker-innermost with one Philox call per coordinate pair (elements 2q and 2q+1 of the
    normal stream share counter q: the bits of ``philox.normal_j``), not one per
    coordinate."""
    B, D = y.shape
    for k in range(D):
        if nz >= 0:
            j = nz * D + k
            if k == 0 or j % 2 == 0:
                q = np.uint64(j // 2)
                for r in range(B):
                    z0, z1 = normal_pair(useed, upur, np.uint64(first + r), q & MASK32,
                                         q >> np.uint64(32))
                    za[r] = z0
                    zb[r] = z1
            zs = za if j % 2 == 0 else zb
        else:
            zs = za
            for r in range(B):
                zs[r] = 0.0
        bk = bo[k]
        for r in range(B):
            yn, un, dn = stage_update(kind, c0, c1, c2, c3, y[r, k], u[r, k], d[r, k],
                                      float(o[r, k] + bk), zs[r])
            y[r, k] = yn
            u[r, k] = un
            d[r, k] = dn


@cpu_kernel
def reverse_shard(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose, first,
                  s0, s1, y, u, d, rec_stage, rec_y):
    """Same contract as ``reverse_batched`` for one shard (the ``sharded`` engine's chunk):
    stages s0 .. s1-1 on rows y, u, d (walkers first, first + 1, ...), in place.

    Per stage: the first layer's shared part (time features times their weights, plus the
    bias) once (``_stage_bias``), then per walker only the D-deep product with the state,
    fused with the activation (``first_layer``); the other layers through BLAS (``np.dot``;
    the caller limits BLAS to one thread), each hidden one followed by bias + activation in
    place (``act_rows``, float32 SiLU by ``silu_fast32``); the output bias inside the update,
    which draws one Philox call per coordinate pair (``_update_stage``).

    Rounding.  The first layer sums (x terms) + (b + time terms), the activation loops use
    fused multiply-adds, and float32 SiLU is ``silu_fast32`` (within 2.4 ulp of the exact
    value, like ``mlp_cpu.silu_value``'s 3.4, but not the same bits): the network outputs
    differ from the other engines' in the last bits (a few ulp of the network's dtype per
    evaluation).  A row's bits depend only on the row and on the shape of the BLAS calls:
    the caller keeps that shape fixed (``nonequil.samplers._run_sharded`` pads a short shard).
    """
    _check(theta, offsets, freqs, kinds, coef, taus, noise, s0, s1, y, u, d, rec_stage, rec_y)
    B, D = y.shape
    L = offsets.shape[0]
    dt = theta.dtype
    maxw = _max_width(offsets)
    n1 = offsets[0, 3]
    buf_a = np.empty(B * maxw, dtype=dt)
    buf_b = np.empty(B * maxw, dtype=dt)
    X = np.empty((B, D), dtype=dt)
    O = np.empty((B, D), dtype=dt)
    c = np.empty(n1, dtype=dt)
    za = np.empty(B)
    zb = np.empty(B)
    bo = np.zeros(D, dtype=dt)
    if L > 1:
        bo[:] = theta[offsets[L - 1, 1]:offsets[L - 1, 1] + D]
    useed = np.uint64(seed)
    upur = np.uint64(purpose)
    rr = _first_record(rec_stage, s0)
    R = rec_stage.shape[0]
    for s in range(s0, s1):
        kind = kinds[s]
        for r in range(B):
            for k in range(D):
                X[r, k] = u[r, k] if kind == 2 else y[r, k]
        _stage_bias(theta, offsets, freqs, float(taus[s]), D, c)
        H = buf_a[:B * n1].reshape((B, n1))
        if L == 1:
            first_layer(theta, offsets, X, c, act, False, O)
        else:
            first_layer(theta, offsets, X, c, act, True, H)
        use_a = False
        for l in range(1, L):
            nin = offsets[l, 2]
            nout = offsets[l, 3]
            W = theta[offsets[l, 0]:offsets[l, 1]].reshape((nin, nout))
            if l == L - 1:
                np.dot(H, W, O)
                break
            if use_a:
                Z = buf_a[:B * nout].reshape((B, nout))
            else:
                Z = buf_b[:B * nout].reshape((B, nout))
            use_a = not use_a
            np.dot(H, W, Z)
            act_rows(Z, theta[offsets[l, 1]:offsets[l, 1] + nout], act)
            H = Z
        _update_stage(kind, coef[s, 0], coef[s, 1], coef[s, 2], coef[s, 3], noise[s], useed,
                      upur, first, y, u, d, O, bo, za, zb)
        while rr < R and rec_stage[rr] == s + 1:
            for r in range(B):
                for k in range(D):
                    rec_y[rr, r, k] = y[r, k]
            rr += 1
