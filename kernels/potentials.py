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
        sc = p[0]
        u = 0.0
        gx = 0.0
        gy = 0.0
        for i in range(4):
            X = x[0] - MB_X0[i]
            Y = x[1] - MB_Y0[i]
            e = MB_A[i] * math.exp(MB_a[i] * X * X + MB_b[i] * X * Y + MB_c[i] * Y * Y)
            u += e
            gx += e * (2.0 * MB_a[i] * X + MB_b[i] * Y)
            gy += e * (MB_b[i] * X + 2.0 * MB_c[i] * Y)
        g[0] = sc * gx
        g[1] = sc * gy
        return sc * u
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
