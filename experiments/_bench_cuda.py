"""CUDA part of experiments/bench_ou.py: a raw Philox-normal kernel on the GPU.

Imported only for ``--device cuda`` (it imports numba.cuda).  The kernel uses the same
``normal_pair`` device function as ``kernels.langevin_cuda.ou_kernel`` (one thread per
walker, both halves of every Box-Muller pair consumed), and reduces the normals into one
sum per walker so that the figure is the generation rate, not a memory-write rate.
"""
import numpy as np
from numba import cuda

from kernels import langevin_cuda  # noqa: F401  (registers and builds the device functions)
from kernels._target import cuda_scalars
from kernels.langevin_cpu import U_MASK, U_NOISE, U_SHIFT

_NS = cuda_scalars()
normal_pair = _NS["normal_pair"]


@cuda.jit
def philox_raw_kernel(seed, first_walker, npairs, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        w = np.uint64(first_walker + i)
        useed = np.uint64(seed)
        acc = 0.0
        for q in range(npairs):
            uq = np.uint64(q)
            a, b = normal_pair(useed, U_NOISE, w, uq & U_MASK, uq >> U_SHIFT)
            acc += a + b
        out[i] = acc


def philox_raw(seed, first_walker, npairs, dout, threads=128):
    """Launch on a device array ``dout`` (one float64 per walker); synchronises."""
    M = dout.shape[0]
    blocks = (M + threads - 1) // threads
    philox_raw_kernel[blocks, threads](np.uint64(seed), first_walker, npairs, dout)
    cuda.synchronize()
