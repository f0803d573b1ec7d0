r"""Philox4x32-10 counter-based noise, written once for the CPU (njit) and the GPU (cuda).

Reference: J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers:
as easy as 1, 2, 3", SC'11 (Random123).  The round function and constants are those of
Random123's ``philox4x32_R(10, ctr, key)``.

Counter layout
--------------
Every random word in nonequil is a pure function of five integers::

    key     = (seed & 0xffffffff, seed >> 32)          seed: 0 <= seed < 2**64
    counter = (walker, step, block, purpose)            each 0 <= . < 2**32

* ``walker``  absolute walker (or sample / row) index, never relative to a chunk or shard;
* ``step``, ``block``  two free 32-bit words whose meaning each stream documents;
* ``purpose`` a stream identifier (constants ``PURPOSE_*`` below), so that different uses of
              the same walker never share words.

Normal streams (``normal_j``).  The Gaussian noise of one walker under one purpose is a single
sequence z_0, z_1, ...  The normal used by coordinate ``d`` of a D-dimensional state in the
step from n to n+1 is element ``j = n*D + d``.  Element j is the cos (j even) or sin (j odd)
half of the Box-Muller pair computed from the counter
``(walker, q & 0xffffffff, q >> 32, purpose)`` with ``q = j >> 1``.  Both halves of every
Philox call are used (for D = 1, steps 2m and 2m+1 share one call), and a normal depends only
on (seed, purpose, walker, n, d): never on chunks, threads, devices or the other walkers.

Uniform streams use ``(walker, step, block, purpose)`` literally: for example the
Brownian-bridge uniform of the step from n to n+1 is word pair (w0, w1) of
``(walker, n, 0, PURPOSE_BRIDGE)``.

One call gives four 32-bit words (w0, w1, w2, w3).  Float64 uniforms take 53 bits from two
words: ``n = (w_hi >> 6) * 2**27 + (w_lo >> 5)`` and ``u = (n + 1) * 2**-53`` in (0, 1], never 0,
so ``log(u)`` is always finite.  The Box-Muller pair uses u1 = (w0, w1) and u2 = (w2, w3):
``z0 = sqrt(-2 log u1) cos(2 pi u2)``, ``z1 = sqrt(-2 log u1) sin(2 pi u2)``.  The smallest
u1 is 2**-53, so float64 normals are truncated at sqrt(106 ln 2) ~ 8.57 sigma (a tail mass of
~1e-17).  Float32 runs draw the same float64 normals and round them, so their noise is the
float64 noise rounded, not a separate 24-bit stream.

All integer arithmetic is done on typed ``uint64`` values holding 32-bit quantities and is
masked back to 32 bits.  Under NUMBA_ENABLE_CUDASIM the device functions run as Python on
NumPy scalars, and with NumPy 2's promotion rules a ``uint32 * int`` product would wrap where
njit widens it; keeping every operand ``uint64`` makes both targets agree.

``log`` and ``sin``/``cos`` are branch-free polynomials on exactly representable reduced
arguments, so that LLVM can vectorise the CPU kernels across walkers (llvmlite has no vector
math library) and the GPU computes the same expressions.  The polynomials are the minimax
ones of fdlibm (Sun Microsystems; e_log.c ``Lg1..Lg7``, k_sin.c ``S1..S6``, k_cos.c
``C1..C6``; errors below 2**-58 on the reduced ranges), evaluated in Horner form.

Normal-transform versions (``NORMALS_VERSION``; the Philox words and the counter layout never
changed):
  1  Taylor series for sin/cos to r^17 / r^18 and the atanh series of log to s^21;
  2  the fdlibm minimax polynomials above: 7 instead of 11 terms for log, 6 instead of 9
     for each of sin and cos, about 10% faster Box-Muller normals.  The normals differ from
     version 1 in the last bits (both are accurate to a few ulp), so a checkpoint written
     with version 1 is refused on resume (it names ``normals``).
  3  (current) Box-Muller's own minimax polynomials, one term fewer for log (``BL1..BL6``)
     and for cos (``BC1..BC5``), the exponent times a single ``LN2``, and the angle reduced
     in integers (``sincos_turns53``): about 12% more walker-steps per CPU-second in
     ``ou_lanes``.  Accuracy, measured (tests/test_philox.py ``box_muller_errors``) over
     10^7 Philox draws plus 12369 extreme rows (u1 = k 2**-53 and 1 - k 2**-53 for
     k < 2000, the log's fold edge in every binade, u2 within 1000 ulp of every quadrant
     edge) against long-double references of the same uniforms, largest relative errors:
     normals 5.4e-16 (version 2: 5.0e-16), log 4.9e-16 (3.2e-16), sin/cos 3.2e-16
     (2.6e-16).  tests/test_philox.py enforces 1e-14 for the normals (2e-15 for the log,
     1e-15 for sin/cos).  A checkpoint written with version 2 is refused on resume (it
     names ``normals``).
"""
import math

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from ._target import scalar

# ---- constants (typed uint64 so that njit and the CUDA simulator agree) --------------
MASK32 = np.uint64(0xFFFFFFFF)
PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
U0 = np.uint64(0)
U1 = np.uint64(1)
U2 = np.uint64(2)
U4 = np.uint64(4)
U5 = np.uint64(5)
U6 = np.uint64(6)
U8 = np.uint64(8)
U16 = np.uint64(16)
U27 = np.uint64(27)
U32 = np.uint64(32)
U51 = np.uint64(51)
U52 = np.uint64(52)
U10 = np.uint64(10)
U63 = np.uint64(63)

# purposes: the fourth counter word
PURPOSE_NOISE = 1        # position noise (OU, overdamped Langevin, forward chains)
PURPOSE_VNOISE = 2       # velocity noise (underdamped O-step)
PURPOSE_BRIDGE = 3       # uniforms for the Brownian-bridge crossing test
PURPOSE_INIT = 4         # initial states drawn by nonequil (e.g. --x0 boltzmann)
PURPOSE_VINIT = 5        # initial Maxwell-Boltzmann velocities
PURPOSE_DATASET = 16     # dataset generators use 16..31
PURPOSE_TRAIN = 32       # training (batches, times, noise) uses 32..47
PURPOSE_SAMPLE = 48      # reverse samplers use 48..63 (likelihood: 52..54 and 56, reweight: 55)
PURPOSE_GAN = 64         # GAN training and sampling use 64..79

NORMALS_VERSION = 3      # see "Normal-transform versions" above

# fdlibm minimax coefficients: log(f) = 2s + s R(s^2), s = (f-1)/(f+1) (e_log.c)
LG1 = 6.666666666666735130e-01
LG2 = 3.999999999940941908e-01
LG3 = 2.857142874366239149e-01
LG4 = 2.222219843214978396e-01
LG5 = 1.818357216161805012e-01
LG6 = 1.531383769920937332e-01
LG7 = 1.479819860511658591e-01
# Box-Muller's log (normals version 3): log(f) = 2s + s R(s^2), R(z) = z (BL1 + ... + z^5 BL6),
# minimax for the relative error of log f on |s| <= 3 - 2 sqrt 2 (Lawson's algorithm in 40-digit
# mpmath; 1.9e-16 before rounding), one term fewer than fdlibm's Lg1..Lg7
BL1 = 0.6666666666658748
BL2 = 0.4000000005214279
BL3 = 0.28571417150133716
BL4 = 0.22223370303641982
BL5 = 0.1812368504200272
BL6 = 0.1681933544350039
# Box-Muller's cos (version 3): cos r = 1 - (z/2 - z^2 (BC1 + ... + z^4 BC5)), minimax for
# the relative error on |r| <= pi/4 (9.2e-17 before rounding), one term fewer than fdlibm's
BC1 = 0.041666666666596526
BC2 = -0.001388888887761056
BC3 = 2.4801580706799655e-05
BC4 = -2.7555523017906575e-07
BC5 = 2.064511308158618e-09
# sin r = r + r z S(z), cos r = 1 - (z/2 - z^2 C(z)), z = r^2, |r| <= pi/4 (k_sin.c, k_cos.c)
S1 = -1.66666666666666324348e-01
S2 = 8.33333333332248946124e-03
S3 = -1.98412698298579493134e-04
S4 = 2.75573137070700676789e-06
S5 = -2.50507602534068634195e-08
S6 = 1.58969099521155010221e-10
C1 = 4.16666666666666019037e-02
C2 = -1.38888888888741095749e-03
C3 = 2.48015872894767294178e-05
C4 = -2.75573143513906633035e-07
C5 = 2.08757232129817482790e-09
C6 = -1.13596475577881948265e-11

TWO_M52 = 2.0 ** -52
TWO_M53 = 2.0 ** -53
LN2_HI = 6.93147180369123816490e-01   # fdlibm split of ln 2
LN2_LO = 1.90821492927058770002e-10
LN2 = 0.6931471805599453              # ln 2 rounded to float64
SQRT2 = 1.4142135623730951
HALF_PI = 1.5707963267948966
HALF_TURN_Q = np.uint64(1 << 50)      # 1/2 in units of 2**-51 (q = 4u = m 2**-51)
HALF_PI_M51 = HALF_PI * 2.0 ** -51    # exact: a power-of-two scaling of HALF_PI


@scalar
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds. All arguments uint64 holding 32-bit values."""
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        n0 = ((p1 >> U32) ^ c1 ^ k0) & MASK32
        n1 = p1 & MASK32
        n2 = ((p0 >> U32) ^ c3 ^ k1) & MASK32
        n3 = p0 & MASK32
        c0 = n0
        c1 = n1
        c2 = n2
        c3 = n3
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


@scalar
def philox_words(seed, purpose, walker, step, block):
    """The four words for (seed, purpose, walker, step, block); all uint64 arguments."""
    return philox4x32_10(walker & MASK32, step & MASK32, block & MASK32, purpose & MASK32,
                         seed & MASK32, (seed >> U32) & MASK32)


@scalar
def bits53(hi, lo):
    """53-bit integer n+1 in [1, 2**53] from two 32-bit words (uint64)."""
    return (((hi >> U6) << U27) | (lo >> U5)) + U1


@scalar
def uniform53(hi, lo):
    """Float64 uniform in (0, 1] from two 32-bit words."""
    return float(bits53(hi, lo)) * TWO_M53


def _clz53_cpu(m):
    return leading_zeros(m)


@scalar(cpu=_clz53_cpu)
def clz53(m):
    """Leading zero bits of a uint64 1 <= m <= 2**53 (branch-free binary search; the CPU
    build uses LLVM's ctlz intrinsic, with the same result)."""
    e = U0
    if (m >> (e + U32)) != U0:
        e = e + U32
    if (m >> (e + U16)) != U0:
        e = e + U16
    if (m >> (e + U8)) != U0:
        e = e + U8
    if (m >> (e + U4)) != U0:
        e = e + U4
    if (m >> (e + U2)) != U0:
        e = e + U2
    if (m >> (e + U1)) != U0:
        e = e + U1
    return U63 - e


@scalar
def log_uniform53(hi, lo):
    """log(uniform53(hi, lo)) for Box-Muller, branch-free, relative error below 1e-15.

    The argument is the integer m = n + 1 in [1, 2**53]; with lz its leading zero bits the
    mantissa f = m 2**(lz - 63) in [1, 2) is exact (``(m << (lz - 10)) >> 1``, lz >= 10),
    the exponent is 10 - lz, f is folded into [sqrt(1/2), sqrt 2), and log f = 2 s + s R(z)
    with s = (f-1)/(f+1), |s| <= 0.1716, z = s^2 and the degree-6 minimax R above
    (``BL1..BL6``); the exponent enters as ``ef * LN2`` (one rounding, not fdlibm's hi/lo
    split: the log only feeds sqrt(-2 log u)).  Measured against long-double references
    (tests/test_philox.py ``box_muller_errors``), the relative error stays below 1e-15
    (largest seen 4.9e-16 over 10^7 draws and the extreme uniforms).
    """
    m = bits53(hi, lo)
    lz = clz53(m)
    f = float((m << (lz - U10)) >> U1) * TWO_M52   # in [1, 2), exact
    ef = 10.0 - float(lz)
    if f > SQRT2:
        f = f * 0.5
        ef = ef + 1.0
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    R = z * (BL1 + z * (BL2 + z * (BL3 + z * (BL4 + z * (BL5 + z * BL6)))))
    return ef * LN2 + (2.0 * s + s * R)


@scalar
def sincos_turns(u):
    """(sin(2 pi u), cos(2 pi u)) for u in [0, 1], branch-free.

    Reduction is exact: q = 4u, k = round(q), f = q - k in [-1/2, 1/2], r = f pi/2.  fdlibm's
    minimax polynomials (degree 13 for sin, 14 for cos) are accurate to ~1e-16 on
    |r| <= pi/4; the quadrant k mod 4 rotates (sin r, cos r).
    """
    q = 4.0 * u
    k = math.floor(q + 0.5)
    r = (q - k) * HALF_PI
    z = r * r
    sr = r + r * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))))
    cr = 1.0 - (0.5 * z - z * z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6))))))
    quad = k & 3
    # branch-free quadrant rotation (selects by exact 0/1 weights, signs by exact +-1):
    # quad 0: (sr, cr)  1: (cr, -sr)  2: (-sr, -cr)  3: (-cr, sr)
    odd = float(quad & 1)
    even = 1.0 - odd
    sgn_s = 1.0 - 2.0 * float(quad >> 1)
    sgn_c = 1.0 - 2.0 * float((quad ^ (quad >> 1)) & 1)
    s = sgn_s * (sr * even + cr * odd)
    c = sgn_c * (cr * even + sr * odd)
    return s, c


@scalar
def sincos_turns53(hi, lo):
    """``sincos_turns(uniform53(hi, lo))``, bit for bit, with the reduction done in integers.

    With m = bits53(hi, lo), q = 4u = m 2**-51 exactly, so the nearest quadrant
    k = floor(q + 1/2) = (m + 2**50) >> 51 and the exact remainder (q - k) 2**51 = m - k 2**51,
    an integer of magnitude <= 2**50 that converts to float64 exactly; r = that times
    (pi/2) 2**-51 equals ``sincos_turns``' (q - k) pi/2 (scaling by a power of two is exact).
    The quadrant rotation selects and negates instead of multiplying by 0/1 and +-1 weights
    (the same values, signed zeros included).  Fewer vector instructions: no float floor, no
    float->int->float round trip, no weight multiplications.  The cosine polynomial is the
    degree-12 minimax ``BC1..BC5`` (normals version 3), so only the value taken from the
    sine polynomial (sin in even quadrants, cos in odd ones) equals ``sincos_turns``' bit for
    bit; both are within a few 1e-16 of sin/cos, relative.
    """
    m = bits53(hi, lo)
    k = (m + HALF_TURN_Q) >> U51
    r = float(np.int64(m) - np.int64(k << U51)) * HALF_PI_M51
    z = r * r
    sr = r + r * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))))
    cr = 1.0 - (0.5 * z - z * z * (BC1 + z * (BC2 + z * (BC3 + z * (BC4 + z * BC5)))))
    # quadrant k mod 4 rotates (sin r, cos r): 0: (sr, cr)  1: (cr, -sr)  2: (-sr, -cr)
    # 3: (-cr, sr)
    odd = (k & U1) != U0
    s = cr if odd else sr
    c = sr if odd else cr
    if (k & U2) != U0:
        s = -s
    if ((k ^ (k >> U1)) & U1) != U0:
        c = -c
    return s, c


@scalar
def box_muller(w0, w1, w2, w3):
    """Two standard normals from four 32-bit words (float64)."""
    rad = math.sqrt(-2.0 * log_uniform53(w0, w1))
    s, c = sincos_turns53(w2, w3)
    return rad * c, rad * s


@scalar
def normal_pair(seed, purpose, walker, step, block):
    """Two independent N(0,1) float64 draws for (seed, purpose, walker, step, block)."""
    w0, w1, w2, w3 = philox_words(seed, purpose, walker, step, block)
    return box_muller(w0, w1, w2, w3)


@scalar
def uniform_pair(seed, purpose, walker, step, block):
    """Two independent U(0,1] float64 draws for (seed, purpose, walker, step, block)."""
    w0, w1, w2, w3 = philox_words(seed, purpose, walker, step, block)
    return uniform53(w0, w1), uniform53(w2, w3)


@scalar
def normal_j(seed, purpose, walker, j):
    """Element j (uint64) of the normal stream of (seed, purpose, walker): see the layout."""
    q = j >> U1
    z0, z1 = normal_pair(seed, purpose, walker, q & MASK32, q >> U32)
    if (j & U1) == U0:
        return z0
    return z1
