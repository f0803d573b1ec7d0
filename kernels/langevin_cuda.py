"""numba.cuda kernels for OU and Langevin: one thread per walker, the CPU's scalar maths.

The per-walker body is ``kernels.langevin_cpu.walker_run`` compiled as a device function
(``kernels._target.cuda_scalars``), and the noise is the same Philox stream, so a walker's
random words on the GPU equal the CPU's bit for bit.  Under ``NUMBA_ENABLE_CUDASIM=1`` the
floats are identical as well (tested).  On a real GPU, NVVM contracts ``a*b + c`` into fused
multiply-adds where the CPU kernels round twice, so normals and states may differ from the
CPU's in the last bits; in a contracting process (OU, a confining potential) such per-step
differences of order 1e-16 relative do not grow, so float64 states are expected to agree to
about 1e-13 after 10^3 steps.  That figure has not been measured on a GPU yet (no GPU was
lent to the session that wrote this); tests/test_invariance.py holds the CUDA-simulator parity.

Importing this module imports numba.cuda; the library imports it only for ``--device cuda``.
"""
import numpy as np

from . import langevin_cpu  # noqa: F401  (registers walker_run and its callees)
from ._target import cuda_scalars

MAXD = 16       # largest dimension on the GPU (local arrays need a compile-time size)
MAXP = 64       # largest packed potential-parameter vector on the GPU

# the simulator replaces ``cuda`` in a kernel's globals, so kernels live at module level
from numba import cuda, float64  # noqa: E402

_NS = cuda_scalars()
walker_run = _NS["walker_run"]
normal_pair = _NS["normal_pair"]
U_NOISE = langevin_cpu.U_NOISE
U_MASK = langevin_cpu.U_MASK
U_SHIFT = langevin_cpu.U_SHIFT


@cuda.jit
def langevin_kernel(kind, pid, D, seed, first_walker, step0, nsteps, total, dt, kT, gamma,
                    mass, p0, p1, proto, x, v, work, heat, fpt, ab_dim, ab_sign, ab_level,
                    rec_steps, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow):
    i = cuda.grid(1)
    if i < x.shape[0]:
        xl = cuda.local.array(MAXD, float64)
        vl = cuda.local.array(MAXD, float64)
        g = cuda.local.array(MAXD, float64)
        pa = cuda.local.array(MAXP, float64)
        pb = cuda.local.array(MAXP, float64)
        walker_run(i, kind, pid, D, seed, first_walker, step0, nsteps, total, dt, kT,
                   gamma, mass, p0, p1, proto, x, v, work, heat, fpt, ab_dim, ab_sign,
                   ab_level, rec_steps, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow,
                   xl, vl, g, pa, pb)


@cuda.jit
def ou_kernel(seed, first_walker, step0, nsteps, A, B, C, x, rec_steps, rec_x):
    i = cuda.grid(1)
    M = x.shape[0]
    D = x.shape[1]
    if i < M:
        w = np.uint64(first_walker + i)
        useed = np.uint64(seed)
        R = rec_steps.shape[0]
        per_step = 1 if A.shape[0] > 1 else 0
        r = 0
        zc = 0.0
        zs = 0.0
        # the state is updated in x itself so that float32 runs round every step, as the
        # CPU lanes do
        for n in range(step0, step0 + nsteps):
            kc = (n - step0) * per_step
            a = A[kc]
            b = B[kc]
            c = C[kc]
            for d in range(D):
                j = n * D + d
                if (j & 1) == 0 or j == step0 * D:
                    q = np.uint64(j >> 1)
                    zc, zs = normal_pair(useed, U_NOISE, w, q & U_MASK, q >> U_SHIFT)
                if (j & 1) == 0:
                    x[i, d] = a * float(x[i, d]) + b + c * zc
                else:
                    x[i, d] = a * float(x[i, d]) + b + c * zs
            if r < R and rec_steps[r] == n + 1:
                for d in range(D):
                    rec_x[r, i, d] = x[i, d]
                r += 1


def _launch(kernel, M, *args):
    threads = 128
    blocks = (M + threads - 1) // threads
    kernel[blocks, threads](*args)


def ou_run(seed, first_walker, step0, nsteps, A, B, C, x, rec_steps, rec_x):
    """Same contract as ``langevin_cpu.ou_lanes`` (host arrays in, updated in place)."""
    if x.shape[1] > MAXD:
        raise ValueError(f"dimension {x.shape[1]} > {MAXD} is not supported on the GPU")
    dx = cuda.to_device(x)
    drec = cuda.to_device(rec_x)
    coeffs = [cuda.to_device(np.ascontiguousarray(t)) for t in (A, B, C)]
    _launch(ou_kernel, x.shape[0], np.uint64(seed), first_walker, step0, nsteps,
            *coeffs, dx, cuda.to_device(rec_steps), drec)
    dx.copy_to_host(x)
    drec.copy_to_host(rec_x)


def langevin_run(kind, pid, D, seed, first_walker, step0, nsteps, total, dt, kT, gamma, mass,
                 p0, p1, proto, x, v, work, heat, fpt, ab_dim, ab_sign, ab_level,
                 rec_steps, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow):
    """Same contract as ``langevin_cpu.langevin_run`` (host arrays in, updated in place)."""
    if D > MAXD or p0.shape[0] > MAXP:
        raise ValueError(f"the GPU kernel supports D <= {MAXD} and <= {MAXP} parameters")
    outs = [x, v, work, heat, fpt, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow]
    dev = [cuda.to_device(a) for a in outs]
    dx, dv, dwork, dheat, dfpt, drx, drv, dre, drw, drq, drf, dblow = dev
    _launch(langevin_kernel, x.shape[0], kind, pid, D, np.uint64(seed), first_walker,
            step0, nsteps, total, dt, kT, gamma, mass, cuda.to_device(p0), cuda.to_device(p1),
            proto, dx, dv, dwork, dheat, dfpt, ab_dim, ab_sign, ab_level,
            cuda.to_device(rec_steps), drx, drv, dre, drw, drq, drf, dblow)
    for h, d in zip(outs, dev):
        d.copy_to_host(h)
