"""Array fills from the Philox streams (initial states, dataset draws).

``normals(seed, purpose, first_walker, j0, out[M, K])``: ``out[i, k]`` is element
``j0 + k`` of the normal stream of walker ``first_walker + i`` (see ``kernels.philox``).
``uniforms(seed, purpose, first_walker, step, out[M, K])``: ``out[i, k]`` is a float64
uniform in (0, 1] from the counter ``(walker, step, k // 2, purpose)``, word pair k % 2.
"""
import numpy as np
from numba import prange

from ._target import cpu_kernel
from .philox import normal_j, philox_words, uniform53


@cpu_kernel(parallel=True)
def normals(seed, purpose, first_walker, j0, out):
    M, K = out.shape
    for i in prange(M):
        w = np.uint64(first_walker + i)
        for k in range(K):
            out[i, k] = normal_j(np.uint64(seed), np.uint64(purpose), w, np.uint64(j0 + k))


@cpu_kernel(parallel=True)
def uniforms(seed, purpose, first_walker, step, out):
    M, K = out.shape
    for i in prange(M):
        w = np.uint64(first_walker + i)
        for b in range((K + 1) // 2):
            w0, w1, w2, w3 = philox_words(np.uint64(seed), np.uint64(purpose), w,
                                          np.uint64(step), np.uint64(b))
            out[i, 2 * b] = uniform53(w0, w1)
            if 2 * b + 1 < K:
                out[i, 2 * b + 1] = uniform53(w2, w3)
