r"""2-D Ising model kernels for the CPU: checkerboard Metropolis and Wolff cluster updates.

Model
-----
``H = -J sum_<xy> s_x s_y`` with J = 1, kB = 1, on an L x L square lattice with periodic
boundaries; spins are ``int8`` +-1, stored as ``spins[L, L]`` or as a batch of independent
replicas ``spins[R, L, L]``.  ``beta = 1/T``.  Site (i, j) has the neighbours
(i+-1 mod L, j) and (i, j+-1 mod L); ``h = sum of the four neighbour spins`` and flipping
s costs ``dE = 2 s h`` in {-8, -4, 0, 4, 8}.

Every random number is a Philox4x32-10 word (``kernels.philox``), a pure function of
``(seed, purpose, walker, step, block)``, so results do not depend on the thread count, on
which replicas are simulated together (``replica_offset``), on how the sweeps are chunked
(``first_sweep``), or on the target: the CUDA kernel in ``kernels.ising_cuda`` draws the same
words and gives the same spins, bit for bit.

Counter layout: checkerboard Metropolis
---------------------------------------
* ``purpose = ISING_PURPOSE`` (= PURPOSE_DATASET + 1);
* ``walker  = replica_offset + r``, the absolute replica index (< 2**32);
* ``step    = 2 * sweep + colour``, ``sweep`` the absolute sweep index (``first_sweep + n``,
  < 2**31), ``colour`` 0 for the sites with (i + j) even, 1 for (i + j) odd.  A sweep
  updates colour 0, then colour 1;
* ``block   = k // 4`` and the site uses word ``k % 4`` of that block, where
  ``k = i * (L // 2) + j // 2`` is the site's index *within its colour's sub-lattice*
  (row-major; L is even, so each row holds L/2 sites of each colour).  Every word of the
  block is used, and the update of one colour never reads another site of the same colour,
  so the order in which sites are visited is irrelevant.

Acceptance: the 32-bit word w gives ``u = (w + 1) * 2**-32`` in (0, 1] (exact in float64),
and the flip is accepted iff ``u <= p[(s h + 4) / 2]`` with the float64 table
``p = (1, 1, 1, exp(-4 beta), exp(-8 beta))`` computed once per call on the host by
``metropolis_table`` (NumPy ``exp``, so both targets use the very same table).  The
acceptance probability is then ``floor(p 2**32) / 2**32``: within 2**-32 of the exact
Metropolis probability, and exactly 1 for dE <= 0.  At T = 0.5 the smallest probability is
exp(-16) ~ 1.1e-7, still resolved to ~2e-3 relative.  (The CPU kernel applies the same rule
in the equivalent integer form ``w < floor(p 2**32)``; see the comment above
``metropolis_thresholds``.)

Counter layout: Wolff
---------------------
* ``purpose = ISING_WOLFF_PURPOSE`` (= ISING_PURPOSE + 1);
* ``walker  = replica_offset + r``;
* ``step    = first_cluster + c``, the absolute cluster index (< 2**32);
* ``block 0``: words (w0, w1) give the seed site ``((w0 << 32) | w1) mod L**2`` (row-major,
  bias < L**2 / 2**64); w2 and w3 are unused;
* bond tests: the d-th bond test of the cluster (d = 0, 1, ...) uses word ``d % 4`` of
  ``block 1 + d // 4`` as a 32-bit uniform as above, and adds the neighbour iff
  ``u <= p_add = 1 - exp(-2 beta)`` (``-expm1(-2 beta)`` on the host).
  The cluster is grown from an explicit LIFO stack: the seed is flipped and pushed; a popped
  site (i, j) tests its neighbours in the order (i+1, j), (i-1, j), (i, j+1), (i, j-1); a
  neighbour is tested (and consumes a word) only if its spin still equals the cluster's
  original spin, i.e. it is aligned and not yet in the cluster; an added neighbour is
  flipped at once and pushed.  Each bond is tested at most once, so this is the Wolff
  (1989) algorithm; the order makes the word <-> bond assignment deterministic.

No floating-point reduction crosses replicas; energies and magnetisations are exact integer
sums divided by L**2 at the end.

Reference: U. Wolff, Phys. Rev. Lett. 62, 361 (1989); checkerboard decomposition as in
Preis et al., J. Comput. Phys. 228, 4468 (2009).
"""
import sys

import numba
import numpy as np
from numba import prange

from ._target import cpu_kernel, scalar
from .philox import PURPOSE_DATASET, U0, U1, U2, U16, U32, philox_words

ISING_PURPOSE = np.uint64(PURPOSE_DATASET + 1)        # checkerboard Metropolis words
ISING_WOLFF_PURPOSE = np.uint64(PURPOSE_DATASET + 2)  # Wolff seed-site and bond words
TWO_M32 = 2.0 ** -32
U8 = np.uint64(8)
U24 = np.uint64(24)
MAX_SWEEP = 2 ** 31          # step = 2 sweep + colour must fit in 32 bits
MAX_COUNTER = 2 ** 32
# Fewer replicas than threads: share the rows of each colour out only from this many sites
# (R L**2) up.  Each sweep is then two parallel regions, whose start-up cost dominates small
# lattices (measured on 2 cores with the earlier, ~10x slower, per-site kernel: rows lost at
# L = 16, broke even at L = 32, and won from L = 64, by 1.3x there and ~1.8x from L = 128;
# with the vectorised kernel the break-even is at larger L), and which stall when the cores
# are shared (on a loaded 2-core machine rows lose at every L measured, up to 1024).
ROW_PARALLEL_MIN_SITES = 4096


# ---- scalar maths shared with kernels/ising_cuda.py ----------------------------------
@scalar
def ising_pick_word(w0, w1, w2, w3, q):
    """Word ``q`` (0..3) of a Philox block."""
    w = w0
    if q == 1:
        w = w1
    if q == 2:
        w = w2
    if q == 3:
        w = w3
    return w


@scalar
def ising_uniform32(w):
    """Float64 uniform ``(w + 1) 2**-32`` in (0, 1] from one 32-bit word (uint64), exact."""
    return float(w + U1) * TWO_M32


@scalar
def ising_metropolis_accept(ptable, s, h, w):
    """Whether flipping spin ``s`` (int, +-1) with neighbour sum ``h`` is accepted with word w."""
    return ising_uniform32(w) <= ptable[(s * h + 4) >> 1]


# ---- host-side helpers ---------------------------------------------------------------
def metropolis_table(beta):
    """Float64 acceptance table ``p[(s h + 4) / 2] = min(1, exp(-2 beta s h))``, shape [5]."""
    beta = float(beta)
    x = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.where(x > 0, np.exp(-2.0 * beta * np.maximum(x, 0.0)), 1.0)


def wolff_add_probability(beta):
    """The Wolff bond-activation probability ``p_add = 1 - exp(-2 beta)`` (float64)."""
    return float(-np.expm1(-2.0 * float(beta)))


def _check_beta(beta):
    beta = float(beta)
    if not (np.isfinite(beta) and beta >= 0.0):
        raise ValueError(f"beta must be finite and >= 0 (beta = 1/T), got {beta!r}")
    return beta


def _check_counter(name, value, limit):
    value = int(value)
    if not 0 <= value < limit:
        raise ValueError(f"{name} must be in [0, {limit}), got {value}")
    return value


def as_batch(spins, *, even=False, writeable=True):
    """View ``spins`` ([L, L] or [R, L, L], int8, C-contiguous, writeable) as [R, L, L].

    Values are not checked: every entry must be +1 or -1 (the caller validates data).
    """
    if not isinstance(spins, np.ndarray):
        raise TypeError(f"spins must be a numpy array, got {type(spins).__name__}")
    if spins.dtype != np.int8:
        raise TypeError(f"spins must have dtype int8 (values +-1), got {spins.dtype}")
    if spins.ndim not in (2, 3) or spins.shape[-1] != spins.shape[-2]:
        raise ValueError(f"spins must have shape [L, L] or [R, L, L], got {spins.shape}")
    L = spins.shape[-1]
    if L < 2 or (even and L % 2):
        need = "even and >= 2 (checkerboard)" if even else ">= 2"
        raise ValueError(f"the lattice size L must be {need}, got L = {L}")
    if not spins.flags.c_contiguous or (writeable and not spins.flags.writeable):
        raise ValueError("spins must be C-contiguous and writeable (updated in place); "
                         "pass np.ascontiguousarray(spins)")
    return spins.reshape((-1, L, L))


# ---- checkerboard Metropolis ---------------------------------------------------------
# The CPU kernel updates one colour of a run of whole rows ``i_lo .. i_hi - 1`` (a "chunk")
# at a time, in flat branch-free loops that LLVM vectorises whatever L is:
#   1. the chunk's Philox blocks, one lane per block; each word w becomes a one-byte site
#      code (bit 0: the site is active, bit 1: w < T[3], bit 2: w < T[4]), four codes packed
#      in a uint32 per block, so that byte k - 4 b_lo is the code of sub-lattice site k;
#   2. the codes spread over the chunk's columns: sub-lattice site k is at the flat position
#      i L + 2 m + j0 = 2 k + j0 (k = i L/2 + m, j0 = (i + colour) & 1), so a uint16 per k,
#      ``code << 8 j0`` read as two bytes (little-endian), puts the code at its column and a
#      0 (never flipped) at the other colour's;
#   3. the chunk's L (i_hi - i_lo) flat positions, in int8 lanes: neighbour sum, s h, the
#      code bit for that s h, and the new spin by a select.  The neighbours come from a
#      copy of the chunk padded with the rows above and below (periodic in i); the periodic
#      wrap in j is a select on a precomputed first/last-column pattern.  Only the other
#      colour's spins are read as neighbours, and they do not change during the update.
# T[a] = floor(p[a] 2**32) is the integer form of the documented acceptance rule: with
# u = (w + 1) 2**-32 exact, u <= p  <=>  w + 1 <= p 2**32 (exact scaling by 2**32)
# <=>  w + 1 <= floor(p 2**32)  <=>  w < T (w + 1 is an integer); p[0..2] = 1 accept always
# (u <= 1), so only p[3] and p[4] need words.  Same words, same decisions, same bits.
_LITTLE_ENDIAN = sys.byteorder == "little"
CHUNK_SITES = 16384     # sites per chunk (scratch ~4 bytes a site, kept in L2)


def metropolis_thresholds(ptable):
    """uint64 ``(T[3], T[4])`` with ``T = floor(p 2**32)``: ``u(w) <= p  <=>  w < T``.

    ``ptable`` is ``metropolis_table(beta)``; its entries 0..2 must be exactly 1."""
    p = np.asarray(ptable, dtype=np.float64)
    if p.shape != (5,) or not np.all(p[:3] == 1.0) or not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError(f"not a Metropolis acceptance table: {p!r}")
    return np.floor(p[3:] * 2.0 ** 32).astype(np.uint64)


@cpu_kernel
def _chunk_patterns(L, rows):
    """The read-only patterns of chunks of up to ``rows`` rows (they depend only on the
    position within the chunk): ``edge`` [rows L] int8, 1 on the first column, 2 on the
    last, else 0; ``parity`` [rows L / 2] uint8, the chunk-relative row parity of each
    sub-lattice site."""
    edge = np.zeros(rows * L, np.int8)
    half = L // 2
    parity = np.empty(rows * half, np.uint8)
    for i in range(rows):
        edge[i * L] = 1
        edge[i * L + L - 1] = 2
        for m in range(half):
            parity[i * half + m] = i & 1
    return edge, parity


@cpu_kernel
def _chunk_buffers(n_buffers, L, rows):
    """Per-thread scratch for chunks of up to ``rows`` rows: (codes, wide, ext)."""
    n = rows * L
    codes = np.empty((n_buffers, n // 8 + 2), np.uint32)
    wide = np.empty((n_buffers, n // 2), np.uint16)
    ext = np.empty((n_buffers, n + 2 * L), np.int8)
    return codes, wide, ext


@cpu_kernel
def _metropolis_chunk(spins, r, i_lo, i_hi, thresholds, seed, walker, step, codes, wide, ext,
                      edge, parity):
    """Update the sites of colour ``step & 1`` in rows ``i_lo .. i_hi - 1`` of replica ``r``
    (scratch and patterns for at least ``i_hi - i_lo`` rows)."""
    L = spins.shape[1]
    half = L // 2
    t3 = thresholds[0]
    t4 = thresholds[1]
    # 1. Philox blocks -> site codes
    k_lo = i_lo * half
    nk = (i_hi - i_lo) * half
    b_lo = k_lo >> 2
    nb = ((k_lo + nk - 1) >> 2) - b_lo + 1
    for b in range(nb):
        w0, w1, w2, w3 = philox_words(seed, ISING_PURPOSE, walker, step, np.uint64(b_lo + b))
        c0 = U1 | (np.uint64(w0 < t3) << U1) | (np.uint64(w0 < t4) << U2)
        c1 = U1 | (np.uint64(w1 < t3) << U1) | (np.uint64(w1 < t4) << U2)
        c2 = U1 | (np.uint64(w2 < t3) << U1) | (np.uint64(w2 < t4) << U2)
        c3 = U1 | (np.uint64(w3 < t3) << U1) | (np.uint64(w3 < t4) << U2)
        codes[b] = np.uint32(c0 | (c1 << U8) | (c2 << U16) | (c3 << U24))
    code = codes.view(np.uint8)[k_lo - 4 * b_lo:]
    # 2. spread over the columns (the chunk's first row has j0 = (i_lo + colour) & 1)
    j0 = np.uint8((i_lo + np.int64(step & U1)) & 1)
    for k in range(nk):
        c = np.uint16(code[k])
        if parity[k] != j0:
            c = np.uint16(c << 8)
        wide[k] = c
    column_code = wide.view(np.uint8)
    # 3. the flat positions; ext = [row i_lo - 1, rows i_lo .. i_hi - 1, row i_hi]
    n = 2 * nk
    lattice = spins[r]
    im = i_lo - 1
    if im < 0:
        im = L - 1
    ip = i_hi
    if ip == L:
        ip = 0
    flat = lattice.reshape(L * L)[i_lo * L:i_hi * L]
    # (offset views, so that every loop index is a plain non-negative p or j: an index that
    # might be negative gets Numba's wraparound select, and loads and stores become gathers
    # and scatters; explicit loops: Numba's slice assignment is a much slower generic copy)
    above = ext[0:n]
    below = ext[2 * L:2 * L + n]
    centre = ext[L:L + n]
    left = ext[L - 1:L - 1 + n]
    right = ext[L + 1:L + 1 + n]
    left_wrap = ext[2 * L - 1:2 * L - 1 + n]   # (i, L - 1), for the first column
    right_wrap = ext[1:1 + n]                  # (i, 0), for the last column
    halo_top = ext[0:L]
    halo_bottom = ext[L + n:2 * L + n]
    row_im = lattice[im]
    row_ip = lattice[ip]
    for j in range(L):
        halo_top[j] = row_im[j]
        halo_bottom[j] = row_ip[j]
    for p in range(n):
        centre[p] = flat[p]
    for p in range(n):
        s = centre[p]
        sl = left[p]
        sr = right[p]
        e = edge[p]
        if e == 1:
            sl = left_wrap[p]
        if e == 2:
            sr = right_wrap[p]
        h = np.int8(above[p] + below[p] + sl + sr)
        sh = np.int8(-h)                   # s h
        if s > 0:
            sh = h
        mask = np.uint8(1)                 # the code bit that decides this s h
        if sh == 2:
            mask = np.uint8(2)
        if sh == 4:
            mask = np.uint8(4)
        snew = s
        if np.uint8(column_code[p] & mask) != 0:   # (np.uint8 keeps the lanes 8 bits wide)
            snew = np.int8(-s)
        flat[p] = snew


@cpu_kernel
def _observe(spins, r):
    """Exact integer sums (sum_<xy> s_x s_y, sum_x s_x) of replica ``r``."""
    L = spins.shape[1]
    b = 0
    m = 0
    for i in range(L):
        ip = i + 1
        if ip == L:
            ip = 0
        for j in range(L):
            jp = j + 1
            if jp == L:
                jp = 0
            s = np.int64(spins[r, i, j])
            b += s * (np.int64(spins[r, ip, j]) + np.int64(spins[r, i, jp]))
            m += s
    return b, m


@cpu_kernel
def _record(spins, r, n, energy, magnetisation):
    """energy[n, r] and magnetisation[n, r], per spin, when recording (else nothing)."""
    if energy.shape[0] > 0:
        b, m = _observe(spins, r)
        n_sites = spins.shape[1] * spins.shape[2]
        energy[n, r] = -b / n_sites
        magnetisation[n, r] = m / n_sites


@cpu_kernel(parallel=True)
def _metropolis_kernel(spins, thresholds, seed, first_sweep, n_sweeps, replica_offset,
                       energy, magnetisation, n_slots):
    """``n_slots == 0``: whole replicas per thread; else the rows of each colour shared out
    as ``n_slots`` contiguous runs.  Each colour of a replica is updated in chunks of up to
    CHUNK_SITES sites (whole rows); the bits do not depend on any of this."""
    R = spins.shape[0]
    L = spins.shape[1]
    rows = max(1, min(L, CHUNK_SITES // L))
    edge, parity = _chunk_patterns(L, rows)
    if n_slots == 0:
        # whole replicas per thread: one parallel region, sweeps inside
        for r in prange(R):
            codes, wide, ext = _chunk_buffers(1, L, rows)
            walker = replica_offset + np.uint64(r)
            for n in range(n_sweeps):
                sweep = first_sweep + np.uint64(n)
                for colour in range(2):
                    step = U2 * sweep + np.uint64(colour)
                    for i_lo in range(0, L, rows):
                        _metropolis_chunk(spins, np.int64(r), i_lo, min(L, i_lo + rows),
                                          thresholds, seed, walker, step, codes[0], wide[0],
                                          ext[0], edge, parity)
                _record(spins, r, n, energy, magnetisation)
    else:
        # rows in parallel, two regions per sweep: slot t updates the rows t R L / n_slots
        # .. (t + 1) R L / n_slots - 1 of the batch (rows of all replicas, in order)
        codes, wide, ext = _chunk_buffers(n_slots, L, rows)
        total = R * L
        for n in range(n_sweeps):
            sweep = first_sweep + np.uint64(n)
            for colour in range(2):
                step = U2 * sweep + np.uint64(colour)
                for t in prange(n_slots):
                    g = np.int64(t) * total // n_slots
                    g_hi = (np.int64(t) + 1) * total // n_slots
                    while g < g_hi:
                        r = g // L
                        i_lo = g - r * L
                        i_hi = min(L, i_lo + rows, i_lo + g_hi - g)
                        _metropolis_chunk(spins, r, i_lo, i_hi, thresholds, seed,
                                          replica_offset + np.uint64(r), step, codes[t],
                                          wide[t], ext[t], edge, parity)
                        g += i_hi - i_lo
            if energy.shape[0] > 0:
                for r in prange(R):
                    _record(spins, r, n, energy, magnetisation)


def _series(out, n_steps, spins):
    """The (energy, magnetisation) recording arrays as [n_steps, R] views (or empty)."""
    R = 1 if spins.ndim == 2 else spins.shape[0]
    if out is None:
        empty = np.empty((0, R))
        return empty, empty
    want = (n_steps,) if spins.ndim == 2 else (n_steps, R)
    arrays = tuple(out)
    if len(arrays) != 2 or any(not isinstance(a, np.ndarray) or a.dtype != np.float64
                               or a.shape != want or not a.flags.c_contiguous
                               or not a.flags.writeable for a in arrays):
        raise ValueError(f"out must be two writeable C-contiguous float64 arrays of shape "
                         f"{want} (energy, magnetisation per spin)")
    return arrays[0].reshape((n_steps, R)), arrays[1].reshape((n_steps, R))


def metropolis_sweeps(spins, beta, seed, first_sweep, n_sweeps, replica_offset=0, out=None,
                      schedule="auto"):
    """Checkerboard Metropolis sweeps of the 2-D Ising model, in place.

    Parameters
    ----------
    spins : int8 array [L, L] or [R, L, L], values +-1, C-contiguous, L even.
        Updated in place; replica r is walker ``replica_offset + r``.
    beta : float, inverse temperature 1/T (J = kB = 1), >= 0.
    seed : int in [0, 2**64), the Philox key.
    first_sweep : int, absolute index of the first sweep (for chunking / resuming).
    n_sweeps : int >= 0, number of sweeps; each updates colour 0 then colour 1.
    replica_offset : int, absolute index of replica 0.
    out : optional (energy, magnetisation), float64 arrays [n_sweeps, R] ([n_sweeps] for
        [L, L] input), filled with the energy and the signed magnetisation per spin of each
        replica after each sweep (the time series for autocorrelation analysis).
    schedule : "replicas" (each thread runs whole replicas, all sweeps: one parallel region
        per call), "rows" (the rows of each colour are shared out: two regions per sweep) or
        "auto": "rows" when there are fewer replicas than Numba threads and at least
        ``ROW_PARALLEL_MIN_SITES`` sites in all, else "replicas".  Speed only: every schedule
        gives the same bits.

    The result is a pure function of (initial spins, beta, seed, absolute sweep indices,
    absolute replica indices): see the module docstring for the counter layout.
    """
    s3 = as_batch(spins, even=True)
    beta = _check_beta(beta)
    seed = _check_counter("seed", seed, 2 ** 64)
    first_sweep = _check_counter("first_sweep", first_sweep, MAX_SWEEP)
    n_sweeps = _check_counter("n_sweeps", n_sweeps, MAX_SWEEP - first_sweep + 1)
    replica_offset = _check_counter("replica_offset", replica_offset,
                                    MAX_COUNTER - s3.shape[0] + 1)
    energy, magnetisation = _series(out, n_sweeps, spins)
    if schedule not in ("auto", "replicas", "rows"):
        raise ValueError(f"schedule must be 'auto', 'replicas' or 'rows', got {schedule!r}")
    if n_sweeps == 0 or s3.shape[0] == 0:
        return
    # (decided here: numba.get_num_threads() inside a kernel defeats its on-disk cache)
    threads = numba.get_num_threads()
    if schedule == "auto":
        by_replica = s3.shape[0] >= threads or s3.size < ROW_PARALLEL_MIN_SITES
    else:
        by_replica = schedule == "replicas"
    n_slots = 0 if by_replica else max(1, min(threads, s3.shape[0] * s3.shape[1]))
    if not _LITTLE_ENDIAN:   # the packed site codes are read back as bytes (see above)
        raise NotImplementedError("the CPU Metropolis kernel assumes a little-endian machine")
    _metropolis_kernel(s3, metropolis_thresholds(metropolis_table(beta)), np.uint64(seed),
                       np.uint64(first_sweep), np.int64(n_sweeps), np.uint64(replica_offset),
                       energy, magnetisation, np.int64(n_slots))


# ---- Wolff cluster updates -----------------------------------------------------------
@cpu_kernel
def _wolff_cluster(spins, r, stack, p_add, seed, walker, step):
    """Grow and flip one Wolff cluster in replica ``r``; returns its size."""
    L = spins.shape[1]
    n_sites = np.uint64(L * L)
    w0, w1, w2, w3 = philox_words(seed, ISING_WOLFF_PURPOSE, walker, step, U0)
    site = np.int64(((w0 << U32) | w1) % n_sites)
    i = site // L
    j = site - i * L
    s0 = spins[r, i, j]
    spins[r, i, j] = -s0
    stack[0] = site
    top = 1
    size = 1
    d = 0                      # bond tests so far in this cluster
    b0 = U0
    b1 = U0
    b2 = U0
    b3 = U0
    while top > 0:
        top -= 1
        site = stack[top]
        i = site // L
        j = site - i * L
        for nb in range(4):
            ii = i
            jj = j
            if nb == 0:
                ii = i + 1
                if ii == L:
                    ii = 0
            elif nb == 1:
                ii = i - 1
                if ii < 0:
                    ii = L - 1
            elif nb == 2:
                jj = j + 1
                if jj == L:
                    jj = 0
            else:
                jj = j - 1
                if jj < 0:
                    jj = L - 1
            if spins[r, ii, jj] == s0:
                q = d & 3
                if q == 0:
                    b0, b1, b2, b3 = philox_words(seed, ISING_WOLFF_PURPOSE, walker, step,
                                                  U1 + np.uint64(d >> 2))
                d += 1
                if ising_uniform32(ising_pick_word(b0, b1, b2, b3, q)) <= p_add:
                    spins[r, ii, jj] = -s0
                    stack[top] = ii * L + jj
                    top += 1
                    size += 1
    return size


@cpu_kernel(parallel=True)
def _wolff_kernel(spins, p_add, seed, first_cluster, n_clusters, replica_offset, flipped,
                  energy, magnetisation):
    R = spins.shape[0]
    L = spins.shape[1]
    for r in prange(R):
        stack = np.empty(L * L, np.int64)
        walker = replica_offset + np.uint64(r)
        total = 0
        for c in range(n_clusters):
            total += _wolff_cluster(spins, r, stack, p_add, seed, walker,
                                    first_cluster + np.uint64(c))
            _record(spins, r, c, energy, magnetisation)
        flipped[r] = total


def wolff_updates(spins, beta, seed, first_cluster, n_clusters, replica_offset=0, out=None):
    """Wolff single-cluster updates of the 2-D Ising model, in place.

    Parameters
    ----------
    spins : int8 array [L, L] or [R, L, L], values +-1, C-contiguous, L >= 2.
    beta : float, inverse temperature (J = kB = 1), >= 0.
    seed : int in [0, 2**64).
    first_cluster : int, absolute index of the first cluster update.
    n_clusters : int >= 0, cluster updates per replica (serial within a replica).
    replica_offset : int, absolute index of replica 0.
    out : optional (energy, magnetisation), float64 arrays [n_clusters, R] ([n_clusters] for
        [L, L] input), filled with the energy and signed magnetisation per spin after each
        cluster update (an O(L**2) cost per cluster: record only when needed).

    Returns
    -------
    flipped : int64 array [R] (or a Python int for [L, L] input), the total number of spins
        flipped per replica, i.e. the sum of the cluster sizes (``flipped / L**2`` is the
        work in sweep units; ``flipped / n_clusters`` estimates the mean cluster size).
    """
    s3 = as_batch(spins)
    beta = _check_beta(beta)
    seed = _check_counter("seed", seed, 2 ** 64)
    first_cluster = _check_counter("first_cluster", first_cluster, MAX_COUNTER)
    n_clusters = _check_counter("n_clusters", n_clusters, MAX_COUNTER - first_cluster + 1)
    replica_offset = _check_counter("replica_offset", replica_offset,
                                    MAX_COUNTER - s3.shape[0] + 1)
    energy, magnetisation = _series(out, n_clusters, spins)
    flipped = np.zeros(s3.shape[0], np.int64)
    if n_clusters > 0 and s3.shape[0] > 0:
        _wolff_kernel(s3, wolff_add_probability(beta), np.uint64(seed),
                      np.uint64(first_cluster), np.int64(n_clusters),
                      np.uint64(replica_offset), flipped, energy, magnetisation)
    return int(flipped[0]) if spins.ndim == 2 else flipped


# ---- observables ---------------------------------------------------------------------
@cpu_kernel(parallel=True)
def _observables_kernel(spins, energy, magnetisation):
    for r in prange(spins.shape[0]):
        _record(spins, r, 0, energy, magnetisation)


def energy_magnetisation(spins):
    """Energy per spin ``e = -sum_<xy> s_x s_y / L**2`` and magnetisation per spin
    ``m = sum_x s_x / L**2`` (signed) of each replica.

    ``spins`` is int8 [L, L] or [R, L, L]; returns two float64 arrays [R] (or two floats for
    [L, L] input).  The sums are exact integers; each replica is reduced on its own.
    """
    if isinstance(spins, np.ndarray):
        spins = np.ascontiguousarray(spins)
    s3 = as_batch(spins, writeable=False)
    e = np.empty((1, s3.shape[0]))
    m = np.empty((1, s3.shape[0]))
    _observables_kernel(s3, e, m)
    e, m = e[0], m[0]
    if spins.ndim == 2:
        return float(e[0]), float(m[0])
    return e, m
