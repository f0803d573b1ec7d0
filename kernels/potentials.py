r"""Built-in potentials as scalar functions shared by the CPU and GPU kernels.

``energy_grad(pid, x, D, p, g)`` returns U(x) and writes grad U(x) into ``g[:D]``.  ``x`` is
one walker's position (length D), ``p`` the packed float64 parameter vector of the potential
(built by ``nonequil.potentials``).  Energies are in the units of kT.

pid  name               U(x)                                                   p
---  -----------------  -----------------------------------------------------  -----------------
0    harmonic           k/2 [(x_0 - center)^2 + sum_{d>0} x_d^2]               [k, center]
1    double-well        a (x_0^2 - 1)^2 + b x_0 + k_perp/2 sum_{d>0} x_d^2     [a, b, k_perp]
2    muller-brown       scale * sum_i A_i exp(a_i X^2 + b_i X Y + c_i Y^2),    [scale]
                        X = x - x0_i, Y = y - y0_i (D = 2; Muller & Brown 1979)
3    gaussian-mixture   -kT log sum_k w_k N(x; m_k, s_k^2 I)                   [kT, K, w(K),
                                                                                m(K*D), s(K)]
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

from ._target import scalar

HARMONIC = 0
DOUBLE_WELL = 1
MULLER_BROWN = 2
GAUSSIAN_MIXTURE = 3

MB_A = np.array([-200.0, -100.0, -170.0, 15.0])
MB_a = np.array([-1.0, -1.0, -6.5, 0.7])
MB_b = np.array([0.0, 0.0, 11.0, 0.6])
MB_c = np.array([-10.0, -10.0, -6.5, 0.7])
MB_X0 = np.array([1.0, 0.0, -0.5, -1.0])
MB_Y0 = np.array([0.0, 0.5, 1.5, 1.0])
LOG_2PI = 1.8378770664093453

# Potential-maths versions (recorded in /parameters and, for the potentials concerned, in the
# checkpoint identity; a checkpoint of another version is refused on resume):
#   1  math.exp (libm) in muller-brown;
#   2  (current) muller-brown uses ``exp_poly`` (fdlibm's e_exp.c algorithm, branch-free,
#      < 1 ulp): the same bits on every device, and LLVM vectorises it across walkers.
#      Results differ from version 1 in the last bits.
POTENTIALS_VERSION = 2
VERSIONED_POTENTIALS = ("muller-brown",)

# exp: fdlibm e_exp.c (Sun Microsystems), k = round(x / ln 2), r = x - k ln 2 in
# [-ln2/2, ln2/2] (ln 2 split hi + lo, k * LN2_HI exact), exp(r) by its Remez form
INV_LN2 = 1.44269504088896338700e+00
EXP_LN2_HI = 6.93147180369123816490e-01
EXP_LN2_LO = 1.90821492927058770002e-10
EXP_P1 = 1.66666666666666019037e-01
EXP_P2 = -2.77777777770155933842e-03
EXP_P3 = 6.61375632143793436117e-05
EXP_P4 = -1.65339022054652515390e-06
EXP_P5 = 4.13813679705723846039e-08


@intrinsic
def _bits_as_f64(typingctx, i):
    """Reinterpret the bits of an int64 as a float64 (CPU only)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return sig, codegen


def _pow2_cpu(k):
    return _bits_as_f64((k + 1023) << 52)


@scalar(cpu=_pow2_cpu)
def pow2(k):
    """2.0**k, exactly, for an integer -1022 <= k <= 1023 (the CPU build sets the exponent
    bits directly, so that LLVM can vectorise it; the same value)."""
    return math.ldexp(1.0, k)


@scalar
def exp_poly(x):
    """exp(x) in float64, branch-free, within 1 ulp (fdlibm's algorithm; tested).

    Overflows to inf above ~709.78 and rounds to (subnormal or) 0 below ~-708.4 like
    ``math.exp``; NaN gives NaN.  2**k is applied in two exact halves so that subnormal
    results are rounded once.
    """
    xc = x if x == x else 0.0
    xc = min(max(xc, -746.0), 710.0)
    k = math.floor(xc * INV_LN2 + 0.5)
    hi = xc - k * EXP_LN2_HI
    lo = k * EXP_LN2_LO
    r = hi - lo
    z = r * r
    c = r - z * (EXP_P1 + z * (EXP_P2 + z * (EXP_P3 + z * (EXP_P4 + z * EXP_P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    k1 = k >> 1
    res = y * pow2(k1) * pow2(k - k1)
    return res if x == x else x


@scalar
def mb_term(x, y, A, a, b, c, x0, y0, u, gx, gy):
    """(u, gx, gy) plus one Gaussian term A exp(a X^2 + b X Y + c Y^2), X = x-x0, Y = y-y0."""
    X = x - x0
    Y = y - y0
    e = A * exp_poly(a * X * X + b * X * Y + c * Y * Y)
    return u + e, gx + e * (2.0 * a * X + b * Y), gy + e * (b * X + 2.0 * c * Y)


@scalar
def mb_energy_grad(x, y, sc):
    """Muller-Brown (U, dU/dx, dU/dy) at (x, y) for amplitude scale ``sc``.

    The four terms (constants ``MB_*``) are written out, in the order i = 0..3, so that the
    lanes kernel (``langevin_cpu.mb_lanes``) and ``energy_grad`` run the same expressions.
    """
    u, gx, gy = mb_term(x, y, -200.0, -1.0, 0.0, -10.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    u, gx, gy = mb_term(x, y, -100.0, -1.0, 0.0, -10.0, 0.0, 0.5, u, gx, gy)
    u, gx, gy = mb_term(x, y, -170.0, -6.5, 11.0, -6.5, -0.5, 1.5, u, gx, gy)
    u, gx, gy = mb_term(x, y, 15.0, 0.7, 0.6, 0.7, -1.0, 1.0, u, gx, gy)
    return sc * u, sc * gx, sc * gy


@scalar(inline=False)
def energy_grad(pid, x, D, p, g):
    """U(x; p) for potential ``pid``; grad U written into g[0:D]."""
    if pid == 0:
        k = p[0]
        y = x[0] - p[1]
        u = y * y
        g[0] = k * y
        for d in range(1, D):
            u += x[d] * x[d]
            g[d] = k * x[d]
        return 0.5 * k * u
    if pid == 1:
        a = p[0]
        b = p[1]
        kp = p[2]
        x0 = x[0]
        q = x0 * x0 - 1.0
        u = a * q * q + b * x0
        g[0] = 4.0 * a * x0 * q + b
        s = 0.0
        for d in range(1, D):
            s += x[d] * x[d]
            g[d] = kp * x[d]
        return u + 0.5 * kp * s
    if pid == 2:
        u, gx, gy = mb_energy_grad(x[0], x[1], p[0])
        g[0] = gx
        g[1] = gy
        return u
    # gaussian mixture: log-sum-exp over components, responsibilities for the gradient
    kT = p[0]
    K = int(p[1])
    ow = 2
    om = 2 + K
    osg = 2 + K + K * D
    lmax = -1e308
    for c in range(K):
        s = p[osg + c]
        r2 = 0.0
        for d in range(D):
            y = x[d] - p[om + c * D + d]
            r2 += y * y
        lc = math.log(p[ow + c]) - 0.5 * r2 / (s * s) - D * (math.log(s) + 0.5 * LOG_2PI)
        if lc > lmax:
            lmax = lc
    for d in range(D):
        g[d] = 0.0
    tot = 0.0
    for c in range(K):
        s = p[osg + c]
        r2 = 0.0
        for d in range(D):
            y = x[d] - p[om + c * D + d]
            r2 += y * y
        lc = math.log(p[ow + c]) - 0.5 * r2 / (s * s) - D * (math.log(s) + 0.5 * LOG_2PI)
        wc = math.exp(lc - lmax)
        tot += wc
        for d in range(D):
            g[d] += wc * (x[d] - p[om + c * D + d]) / (s * s)
    for d in range(D):
        g[d] = kT * g[d] / tot
    return -kT * (lmax + math.log(tot))
