r"""numba.cuda reverse-sampling kernel: one thread per walker, the MLP score evaluated with
the weights read from global memory (through L1: every thread of a warp reads the same
weight at the same time, a broadcast).

Same contract as ``kernels.reverse_cpu.reverse_fused`` (stages, coefficients, noise,
recording; see that module): one launch runs stages s0..s1-1 for every walker, the state kept
in per-thread local arrays.  The noise is the same Philox stream (``normal_j`` compiled as a
device function by ``kernels._target.cuda_scalars``), so the random words equal the CPU's bit
for bit; the time embedding is ``time_sincos`` and the stage update ``stage_update``, the
same scalar code.  The one difference in maths is the activation: the CPU loops use the
vectorisable ``exp_neg`` (about 1 ulp), the GPU the portable ``mlp_act`` (``math.exp``).
Under ``NUMBA_ENABLE_CUDASIM=1`` the states agree with the CPU's to about 1e-15 relative in
float64 after a few stages (tested at 1e-12).  On a real GPU, NVVM also contracts ``a*b + c``
into fused multiply-adds, so float64 states are expected to agree to about 1e-13 relative
after hundreds of stages in a contracting chain; that has not been measured on a GPU (none
was lent to the session that wrote this).

Limits: the widths of the network (inputs D + 2F, hidden units) at most ``MAXW`` and the
dimension D at most ``MAXD`` (per-thread local arrays need compile-time sizes).  Block-
cooperative tiles (walkers of a block sharing weight tiles staged in shared memory) are not
implemented; the default MLP's weights (~140 KB float64) do not fit shared memory anyway.

Importing this module imports numba.cuda; the library imports it only for ``--device cuda``.
"""
import numpy as np

from . import mlp_cpu, reverse_cpu  # noqa: F401  (register the scalar functions)
from ._target import cuda_scalars

MAXW = 512          # largest layer width (including the input D + 2F) on the GPU
MAXD = 512          # largest state dimension on the GPU
THREADS = 128       # threads per block

# the simulator replaces ``cuda`` in a kernel's globals, so kernels live at module level
from numba import cuda, float32, float64  # noqa: E402

_NS = cuda_scalars()
normal_j = _NS["normal_j"]
time_sincos = _NS["time_sincos"]
mlp_act = _NS["mlp_act"]
stage_update = _NS["stage_update"]


def _make_kernel(wdt):
    """The kernel for network dtype ``wdt`` (numba float64 or float32)."""

    def kernel(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose, first,
               s0, s1, y, u, d, rec_stage, r_start, rec_y):
        i = cuda.grid(1)
        B = y.shape[0]
        if i < B:
            D = y.shape[1]
            L = offsets.shape[0]
            F = freqs.shape[0]
            R = rec_stage.shape[0]
            h = cuda.local.array(MAXW, wdt)
            acc = cuda.local.array(MAXW, wdt)
            ys = cuda.local.array(MAXD, float64)
            us = cuda.local.array(MAXD, float64)
            ds = cuda.local.array(MAXD, float64)
            for k in range(D):
                ys[k] = y[i, k]
                us[k] = u[i, k]
                ds[k] = d[i, k]
            w = np.uint64(first + i)
            useed = np.uint64(seed)
            upur = np.uint64(purpose)
            rr = r_start
            for s in range(s0, s1):
                kind = kinds[s]
                for k in range(D):
                    if kind == 2:
                        h[k] = us[k]
                    else:
                        h[k] = ys[k]
                tau = float(taus[s])
                for q in range(F):
                    sn, cs = time_sincos(float(freqs[q]), tau)
                    h[D + q] = sn
                    h[D + F + q] = cs
                for l in range(L):
                    w0 = offsets[l, 0]
                    b0 = offsets[l, 1]
                    nin = offsets[l, 2]
                    nout = offsets[l, 3]
                    for j in range(nout):
                        acc[j] = 0
                    for ii in range(nin):
                        x = h[ii]
                        base = w0 + ii * nout
                        for j in range(nout):
                            acc[j] += x * theta[base + j]
                    if l == L - 1:
                        for j in range(nout):
                            acc[j] = acc[j] + theta[b0 + j]
                    else:
                        for j in range(nout):
                            h[j] = mlp_act(float(acc[j] + theta[b0 + j]), act)
                c0 = coef[s, 0]
                c1 = coef[s, 1]
                c2 = coef[s, 2]
                c3 = coef[s, 3]
                nz = noise[s]
                for k in range(D):
                    z = 0.0
                    if nz >= 0:
                        z = normal_j(useed, upur, w, np.uint64(nz * D + k))
                    yn, un, dn = stage_update(kind, c0, c1, c2, c3, ys[k], us[k], ds[k],
                                              float(acc[k]), z)
                    ys[k] = yn
                    us[k] = un
                    ds[k] = dn
                while rr < R and rec_stage[rr] == s + 1:
                    for k in range(D):
                        rec_y[rr, i, k] = ys[k]
                    rr += 1
            for k in range(D):
                y[i, k] = ys[k]
                u[i, k] = us[k]
                d[i, k] = ds[k]

    return cuda.jit(kernel)


reverse_kernel_f64 = _make_kernel(float64)
reverse_kernel_f32 = _make_kernel(float32)


def reverse_run(theta, offsets, act, freqs, kinds, coef, taus, noise, seed, purpose, first,
                s0, s1, y, u, d, rec_stage, rec_y):
    """Same contract as ``reverse_cpu.reverse_fused`` (host arrays in, updated in place)."""
    B, D = y.shape
    L = offsets.shape[0]
    if D > MAXD or int(np.max(offsets[:, 2:4])) > MAXW:
        raise ValueError(f"the GPU kernel supports D <= {MAXD} and layer widths <= {MAXW}")
    if offsets[0, 2] != D + 2 * freqs.shape[0] or offsets[L - 1, 3] != D:
        raise ValueError("the network must map [D + 2 F] inputs to D outputs")
    if not 0 <= s0 <= s1 <= kinds.shape[0]:
        raise ValueError("need 0 <= s0 <= s1 <= number of stages")
    if theta.dtype == np.float64:
        kernel = reverse_kernel_f64
    elif theta.dtype == np.float32:
        kernel = reverse_kernel_f32
    else:
        raise ValueError(f"theta must be float64 or float32, got {theta.dtype}")
    r_start = int(np.searchsorted(rec_stage, s0, side="right"))
    dy, du, dd, drec = (cuda.to_device(a) for a in (y, u, d, rec_y))
    blocks = (B + THREADS - 1) // THREADS
    kernel[blocks, THREADS](cuda.to_device(theta), cuda.to_device(offsets), act,
                            cuda.to_device(freqs), cuda.to_device(kinds), cuda.to_device(coef),
                            cuda.to_device(taus), cuda.to_device(noise), np.uint64(seed),
                            purpose, first, s0, s1, dy, du, dd, cuda.to_device(rec_stage),
                            r_start, drec)
    for host, dev in ((y, dy), (u, du), (d, dd), (rec_y, drec)):
        dev.copy_to_host(host)
