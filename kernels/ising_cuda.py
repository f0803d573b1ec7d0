r"""2-D Ising checkerboard Metropolis on the GPU (numba.cuda).

One thread per site of the active colour and replica: thread ``t`` handles replica
``r = t // (L**2 / 2)`` and sub-lattice index ``k = t mod (L**2 / 2)``, i.e. row
``i = k // (L/2)`` and column ``j = 2 (k mod L/2) + ((i + colour) & 1)``.  A sweep is two
launches (colour 0, then colour 1).  Each thread draws the Philox block ``k // 4`` and uses
word ``k % 4``, exactly the counter layout of ``kernels.ising_cpu`` (see its docstring), with
the same scalar functions and the same float64 acceptance table computed on the host, so the
spins after any number of sweeps equal the CPU kernel's, bit for bit.  (Each Philox block
is computed by each of the four threads that use it: simple, and not yet tuned on a GPU.)

``numba.cuda`` is imported only when a kernel is first built, so importing this module works
without CUDA; ``NUMBA_ENABLE_CUDASIM=1`` runs it in the simulator.
"""
import functools
import math

import numpy as np

from ._target import cuda_scalars, retarget
from .ising_cpu import (ISING_PURPOSE, MAX_COUNTER, MAX_SWEEP, U1, _check_beta,
                        _check_counter, as_batch, ising_metropolis_accept, ising_pick_word,
                        ising_uniform32, metropolis_table)
from .philox import philox_words

THREADS_PER_BLOCK = 128
cuda = None  # numba.cuda, bound only in the globals of the compiled kernel (see _build)


def _metropolis_colour(spins, ptable, seed, step, replica_offset):
    """Kernel body: the sites of colour ``step & 1``; one thread per (replica, site)."""
    t = cuda.grid(1)
    L = spins.shape[1]
    half = L // 2
    n_sub = L * half
    if t >= spins.shape[0] * n_sub:
        return
    r = t // n_sub
    k = t - r * n_sub
    i = k // half
    colour = int(step & U1)
    j = 2 * (k - i * half) + ((i + colour) & 1)
    ip = i + 1
    if ip == L:
        ip = 0
    im = i - 1
    if im < 0:
        im = L - 1
    jp = j + 1
    if jp == L:
        jp = 0
    jm = j - 1
    if jm < 0:
        jm = L - 1
    w0, w1, w2, w3 = philox_words(seed, ISING_PURPOSE, replica_offset + np.uint64(r),
                                  step, np.uint64(k >> 2))
    s = int(spins[r, i, j])
    h = (int(spins[r, ip, j]) + int(spins[r, im, j])
         + int(spins[r, i, jp]) + int(spins[r, i, jm]))
    if ising_metropolis_accept(ptable, s, h, ising_pick_word(w0, w1, w2, w3, k & 3)):
        spins[r, i, j] = -s


@functools.lru_cache(maxsize=None)
def _build():
    """Compile (lazily, once per process) the colour kernel and return it.

    The kernel body is rebuilt over a copy of this module's globals in which ``cuda`` is
    numba.cuda (the simulator swaps it for its fake module there) and every scalar name
    points at its CUDA device version.
    """
    from numba import cuda as numba_cuda

    ns = dict(cuda_scalars())
    # cuda_scalars() is built once per process: if it ran before kernels.ising_cpu was
    # imported, our scalars are missing from it, so retarget them here over the same names.
    dicts = []
    for fn in (ising_pick_word, ising_uniform32, ising_metropolis_accept):
        name = fn.py_func.__name__
        if name not in ns:
            ns[name], g = retarget(fn.py_func, numba_cuda.jit(device=True), {})
            dicts.append(g)
    for g in dicts:
        g.update(ns)
    kernel, _ = retarget(_metropolis_colour, numba_cuda.jit, dict(ns, cuda=numba_cuda))
    return kernel


def metropolis_sweeps_cuda(spins, beta, seed, first_sweep, n_sweeps, replica_offset=0,
                           threads_per_block=THREADS_PER_BLOCK):
    """Checkerboard Metropolis sweeps on the GPU; same contract and result as
    ``kernels.ising_cpu.metropolis_sweeps``.

    ``spins`` is either a NumPy int8 array [L, L] or [R, L, L] (copied to the device, updated
    there, and copied back in place) or a numba.cuda device array [R, L, L] (updated on the
    device, nothing copied).  Two kernel launches per sweep.
    """
    from numba import cuda

    on_device = not isinstance(spins, np.ndarray) and (
        hasattr(spins, "__cuda_array_interface__") or hasattr(spins, "copy_to_host"))
    if on_device:
        if spins.ndim != 3 or spins.shape[1] != spins.shape[2] or spins.shape[1] % 2 \
                or spins.shape[1] < 2 or np.dtype(spins.dtype) != np.int8:
            raise ValueError("a device spins array must be int8 [R, L, L] with L even >= 2, "
                             f"got {np.dtype(spins.dtype)} {tuple(spins.shape)}")
        s3 = None
        d_spins = spins
    else:
        s3 = as_batch(spins, even=True)
    beta = _check_beta(beta)
    seed = _check_counter("seed", seed, 2 ** 64)
    first_sweep = _check_counter("first_sweep", first_sweep, MAX_SWEEP)
    n_sweeps = _check_counter("n_sweeps", n_sweeps, MAX_SWEEP - first_sweep + 1)
    R, L = (d_spins if on_device else s3).shape[:2]
    replica_offset = _check_counter("replica_offset", replica_offset, MAX_COUNTER - R + 1)
    if n_sweeps == 0 or R == 0:
        return
    kernel = _build()
    if not on_device:
        d_spins = cuda.to_device(s3)
    d_ptable = cuda.to_device(metropolis_table(beta))
    n_threads = R * L * (L // 2)
    blocks = math.ceil(n_threads / threads_per_block)
    seed64 = np.uint64(seed)
    offset64 = np.uint64(replica_offset)
    for n in range(n_sweeps):
        sweep = first_sweep + n
        for colour in range(2):
            kernel[blocks, threads_per_block](d_spins, d_ptable, seed64,
                                              np.uint64(2 * sweep + colour), offset64)
    if not on_device:
        d_spins.copy_to_host(s3)
