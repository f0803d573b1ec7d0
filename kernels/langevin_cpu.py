r"""Langevin and Ornstein-Uhlenbeck kernels (CPU); the per-walker maths is shared with the GPU.

Processes (one walker, D coordinates, step n -> n+1, dt, noise z from the normal stream):

* ``ou_lanes``: the affine Gaussian chain ``x_{n+1} = A_n x_n + B_n + C_n z_n`` in any D
  (independent coordinates, the same coefficients for every coordinate and walker).  The
  coefficients are float arrays: of length 1 (constant: OU) or of length >= nsteps (element
  ``n - step0`` is the step n -> n+1: the forward chains of diffusion models, whose exact
  Gaussian transitions ``nonequil.processes.chain_coefficients`` tabulates).  For OU
  ``dx = theta (mu - x) dt + sigma dW`` both methods are such a map:
    exact  A = exp(-theta dt), B = mu (1 - A), C = sigma sqrt((1 - A^2) / (2 theta))
    em     A = 1 - theta dt,  B = theta mu dt, C = sigma sqrt(dt)
  Walkers run in lanes of ``OU_LANES`` innermost, inside a ``prange`` over lane blocks
  aligned on the absolute walker index (padding lanes are computed and discarded), so that
  LLVM vectorises Philox, Box-Muller and the update across walkers.  The noise of a block
  comes from ``ou_noise``: ``OU_PAIRS`` Box-Muller pairs per lane per pass, independent
  chains that keep the out-of-order core busy (the transform is latency-bound with one).

* ``mb_lanes``: overdamped Euler-Maruyama in the Muller-Brown potential without protocol or
  absorption (what ``nonequil.simulate`` runs on the CPU for that case): ``walker_run``'s
  arithmetic and noise in the lane layout of ``ou_lanes``, one Box-Muller pair per step,
  the potential inlined (``potentials.mb_energy_grad``, whose ``exp_poly`` vectorises), so
  it gives ``langevin_run``'s bits (tested) several times faster.

* ``walker_run`` (overdamped / underdamped Langevin, one walker, plain scalar code that the
  CPU kernel ``langevin_run`` calls inside a ``prange`` over walkers and the CUDA kernel calls
  from one thread per walker).  Potential parameters follow a linear protocol
  ``lambda_n = p0 + (p1 - p0) n / total``.  Step n -> n+1 is
    1. switch: ``W += U(x_n; lambda_{n+1}) - U(x_n; lambda_n)`` (work done on the system);
    2. move at fixed lambda_{n+1}:
       kind 0  Euler-Maruyama  x += -grad U dt/gamma + sqrt(2 kT dt/gamma) z
       kind 1  exact OU step for the harmonic trap (pid 0): with a = exp(-k dt/gamma),
               x_0 <- c + (x_0 - c) a + sqrt(kT/k (1 - a^2)) z, x_d <- x_d a + ... (d>0).
               The chain preserves each Boltzmann law exactly, so Jarzynski holds exactly.
       kind 2  BAOAB: B (v -= dt/2 grad U/m), A (x += dt/2 v),
               O (v <- c1 v + sqrt(kT/m (1 - c1^2)) xi, c1 = exp(-gamma dt)), A, B.
    3. heat: overdamped ``Q += U(x_{n+1}; l_{n+1}) - U(x_n; l_{n+1})``; underdamped the
       kinetic-energy change of the O-step (Sivak, Chodera & Crooks 2013).  For BAOAB the
       rest of the energy change is the integrator's shadow work.
  Absorption (``ab_dim >= 0``): the walker is absorbed at the first step whose end point
  satisfies ``ab_sign * (x[ab_dim] - ab_level) >= 0``, or (overdamped kinds) whose
  Brownian bridge crossed the level in between: with distances d0, d1 > 0 of both ends from
  the level, the bridge crosses with probability ``exp(-d0 d1 gamma / (kT dt))`` (the free
  Brownian bridge of diffusion constant kT/gamma), tested against the uniform of
  ``(walker, n, 0, PURPOSE_BRIDGE)``.  The first-passage time stored is ``(n+1) dt`` and the
  walker is frozen from then on.  A non-finite state stops the walker and records the step
  in ``blow[i]``.
"""
import math

import numpy as np
from numba import prange as numba_prange

from ._target import cpu_kernel, scalar
from .philox import PURPOSE_BRIDGE, PURPOSE_NOISE, PURPOSE_VNOISE, normal_j, normal_pair, uniform_pair
from .potentials import energy_grad, mb_energy_grad

# walkers per lane block of mb_lanes.  32 measured 1.11x the walker-steps per CPU-second of
# 16 (3.28e8 against 2.94e8, one thread, the same maths) on a 2-core AMD EPYC with AVX-512;
# results do not depend on it (blocks are aligned on the absolute walker index)
LANES = 32
# ou_lanes: walkers per lane block, and Box-Muller pairs per lane per pass of ``ou_noise``.
# Measured on the same machine (2-core AMD EPYC, AVX-512; one thread, walker-steps per
# CPU-second, variants compiled side by side in one process): 4 pairs in lanes of 128 in a
# separately compiled ``ou_noise`` ran 1.44x the previous layout (2 pairs inlined into
# ou_lanes, lanes of 32); with 4 pairs, lanes of 32 / 64 / 256 gave 0.83x / 0.98x / 1.0x of
# lanes of 128, 6 or 8 pairs were slower (register spills), and the same loop inlined into
# ou_lanes 0.87x.  bench_ou run back to back against the previous tree: 1.24x-1.31x per
# CPU-second.  Results do not depend on either constant.
OU_LANES = 128
OU_PAIRS = 4
OU_GROUP = 2 * OU_PAIRS     # stream elements per lane per pass
U_NOISE = np.uint64(PURPOSE_NOISE)
U_VNOISE = np.uint64(PURPOSE_VNOISE)
U_BRIDGE = np.uint64(PURPOSE_BRIDGE)
U_ZERO = np.uint64(0)
U_ONE = np.uint64(1)
U_TWO = np.uint64(2)
U_THREE = np.uint64(3)
U_SHIFT = np.uint64(32)
U_MASK = np.uint64(0xFFFFFFFF)

EM = 0
EXACT_HARMONIC = 1
BAOAB = 2


@cpu_kernel
def ou_noise(seed, base, q0, buf):
    """buf[k, l] = element ``2 q0 + k`` (k < OU_GROUP) of walker ``base + l``'s normal stream.

    ``seed``, ``q0`` uint64 (q0 a multiple of OU_PAIRS), purpose PURPOSE_NOISE, walkers
    ``base .. base + OU_LANES - 1``; ``buf`` float64[OU_GROUP, OU_LANES].  The same numbers
    as ``normal_j``.  Compiled as a function of its own (not inlined into ``ou_lanes``): LLVM
    vectorises this simple loop better there, and one call per OU_LANES x OU_GROUP normals
    costs nothing.
    """
    q1 = q0 + U_ONE
    q2 = q0 + U_TWO
    q3 = q0 + U_THREE
    for l in range(OU_LANES):
        w = np.uint64(base + l)
        a0, b0 = normal_pair(seed, U_NOISE, w, q0 & U_MASK, q0 >> U_SHIFT)
        a1, b1 = normal_pair(seed, U_NOISE, w, q1 & U_MASK, q1 >> U_SHIFT)
        a2, b2 = normal_pair(seed, U_NOISE, w, q2 & U_MASK, q2 >> U_SHIFT)
        a3, b3 = normal_pair(seed, U_NOISE, w, q3 & U_MASK, q3 >> U_SHIFT)
        buf[0, l] = a0
        buf[1, l] = b0
        buf[2, l] = a1
        buf[3, l] = b1
        buf[4, l] = a2
        buf[5, l] = b2
        buf[6, l] = a3
        buf[7, l] = b3


@cpu_kernel(parallel=True)
def ou_lanes(seed, first_walker, step0, nsteps, A, B, C, x, rec_steps, rec_x):
    """Advance walkers x[M, D] from step0 by nsteps; frames at rec_steps go to rec_x.

    ``A, B, C``: float arrays of length 1 (constant coefficients) or >= nsteps (per step,
    element ``n - step0`` for the step n -> n+1).  The normal stream is consumed in aligned
    groups of OU_GROUP elements (``ou_noise``); element j of a walker's stream is the same
    number as in ``normal_j``.
    """
    M, D = x.shape
    per_step = 1 if A.shape[0] > 1 else 0
    wb0 = (first_walker // OU_LANES) * OU_LANES
    nblk = (first_walker + M - wb0 + OU_LANES - 1) // OU_LANES
    R = rec_steps.shape[0]
    useed = np.uint64(seed)
    jend = (step0 + nsteps) * D
    for blk in numba_prange(nblk):
        base = wb0 + blk * OU_LANES
        xs = np.zeros((D, OU_LANES), dtype=x.dtype)
        buf = np.empty((OU_GROUP, OU_LANES), dtype=np.float64)
        for l in range(OU_LANES):
            i = base + l - first_walker
            if i >= 0 and i < M:
                for d in range(D):
                    xs[d, l] = x[i, d]
        r = 0
        j = step0 * D
        while j < jend:
            jq = j - j % OU_GROUP
            ou_noise(useed, base, np.uint64(jq >> 1), buf)
            jstop = min(jq + OU_GROUP, jend)
            for jj in range(j, jstop):
                d = jj % D
                k = jj - jq
                n = jj // D
                kc = (n - step0) * per_step
                a = A[kc]
                b = B[kc]
                c = C[kc]
                for l in range(OU_LANES):
                    xs[d, l] = a * xs[d, l] + b + c * buf[k, l]
                if d == D - 1 and r < R and rec_steps[r] == n + 1:
                    for l in range(OU_LANES):
                        i = base + l - first_walker
                        if i >= 0 and i < M:
                            for dd in range(D):
                                rec_x[r, i, dd] = xs[dd, l]
                    r += 1
            j = jstop
        for l in range(OU_LANES):
            i = base + l - first_walker
            if i >= 0 and i < M:
                for d in range(D):
                    x[i, d] = xs[d, l]


@scalar
def lam_params(out, p0, p1, n, total):
    """out = p0 + (p1 - p0) * n / total (the linear protocol at step n)."""
    f = float(n) / float(total)
    for k in range(p0.shape[0]):
        out[k] = p0[k] + (p1[k] - p0[k]) * f


@scalar(inline=False)
def walker_run(i, kind, pid, D, seed, first_walker, step0, nsteps, total, dt, kT, gamma, mass,
               p0, p1, proto, x, v, work, heat, fpt, ab_dim, ab_sign, ab_level,
               rec_steps, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow,
               xl, vl, g, pa, pb):
    """Advance walker i (absolute index first_walker + i); see the module docstring."""
    w = np.uint64(first_walker + i)
    useed = np.uint64(seed)
    R = rec_steps.shape[0]
    for d in range(D):
        xl[d] = x[i, d]
        if kind == 2:
            vl[d] = v[i, d]
    W = work[i]
    Q = heat[i]
    F = fpt[i]
    frozen = (F == F) or blow[i] >= 0
    if proto:
        lam_params(pa, p0, p1, step0, total)
    else:
        for k in range(p0.shape[0]):
            pa[k] = p0[k]
            pb[k] = p0[k]
    U_prev = energy_grad(pid, xl, D, pa, g)
    sq_em = math.sqrt(2.0 * kT * dt / gamma)
    c1 = math.exp(-gamma * dt)
    sq_o = math.sqrt(kT / mass * (1.0 - c1 * c1))
    r = 0
    while r < R and rec_steps[r] <= step0:
        r += 1
    for n in range(step0, step0 + nsteps):
        if not frozen:
            if proto:
                lam_params(pb, p0, p1, n + 1, total)
                U_a = energy_grad(pid, xl, D, pb, g)
                W += U_a - U_prev
            else:
                U_a = U_prev
            x_ab = 0.0
            if ab_dim >= 0:
                x_ab = xl[ab_dim]
            jn = np.uint64(n * D)
            # one call site for the noise (Numba inlines it at every site it appears)
            purpose = U_NOISE
            a_h = 0.0
            sd_h = 0.0
            if kind == 1:
                kk = pb[0]
                a_h = math.exp(-kk * dt / gamma)
                sd_h = math.sqrt(kT / kk * (1.0 - a_h * a_h))
            elif kind == 2:
                purpose = U_VNOISE
                for d in range(D):
                    vl[d] = vl[d] - 0.5 * dt * g[d] / mass
                    xl[d] = xl[d] + 0.5 * dt * vl[d]
            ke = 0.0
            for d in range(D):
                z = normal_j(useed, purpose, w, jn + np.uint64(d))
                if kind == 0:
                    xl[d] = xl[d] - g[d] * dt / gamma + sq_em * z
                elif kind == 1:
                    c = 0.0
                    if d == 0:
                        c = pb[1]
                    xl[d] = c + (xl[d] - c) * a_h + sd_h * z
                else:
                    ke -= vl[d] * vl[d]
                    vl[d] = c1 * vl[d] + sq_o * z
                    ke += vl[d] * vl[d]
                    xl[d] = xl[d] + 0.5 * dt * vl[d]
            if kind == 2:
                Q += 0.5 * mass * ke
            U_b = energy_grad(pid, xl, D, pb, g)
            if kind == 2:
                for d in range(D):
                    vl[d] = vl[d] - 0.5 * dt * g[d] / mass
            else:
                Q += U_b - U_a
            U_prev = U_b
            ok = math.isfinite(U_b)
            for d in range(D):
                if not math.isfinite(xl[d]):
                    ok = False
                if kind == 2 and not math.isfinite(vl[d]):
                    ok = False
            if not ok:
                blow[i] = n + 1
                frozen = True
                break
            if ab_dim >= 0:
                d1 = ab_sign * (ab_level - xl[ab_dim])
                if d1 <= 0.0:
                    F = (n + 1) * dt
                    frozen = True
                elif kind != 2:
                    d0 = ab_sign * (ab_level - x_ab)
                    u, u2 = uniform_pair(useed, U_BRIDGE, w, np.uint64(n), U_ZERO)
                    if u < math.exp(-d0 * d1 * gamma / (kT * dt)):
                        F = (n + 1) * dt
                        frozen = True
            for k in range(p0.shape[0]):
                pa[k] = pb[k]
        if r < R and rec_steps[r] == n + 1:
            for d in range(D):
                rec_x[r, i, d] = xl[d]
                if kind == 2:
                    rec_v[r, i, d] = vl[d]
            if frozen and proto:
                # a frozen walker's energy still follows the protocol: U(x; lambda_{n+1})
                lam_params(pb, p0, p1, n + 1, total)
                rec_e[r, i] = energy_grad(pid, xl, D, pb, g)
            else:
                rec_e[r, i] = U_prev
            rec_w[r, i] = W
            rec_q[r, i] = Q
            rec_f[r, i] = F
            r += 1
    if blow[i] < 0:
        for d in range(D):
            x[i, d] = xl[d]
            if kind == 2:
                v[i, d] = vl[d]
        work[i] = W
        heat[i] = Q
        fpt[i] = F


@cpu_kernel(parallel=True)
def langevin_run(kind, pid, D, seed, first_walker, step0, nsteps, total, dt, kT, gamma, mass,
                 p0, p1, proto, x, v, work, heat, fpt, ab_dim, ab_sign, ab_level,
                 rec_steps, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow):
    """prange over walkers of ``walker_run`` (arguments as there; blow[i] = -1 if fine)."""
    M = x.shape[0]
    P = p0.shape[0]
    for i in numba_prange(M):
        xl = np.empty(D, dtype=np.float64)
        vl = np.empty(D, dtype=np.float64)
        g = np.empty(D, dtype=np.float64)
        pa = np.empty(P, dtype=np.float64)
        pb = np.empty(P, dtype=np.float64)
        walker_run(i, kind, pid, D, seed, first_walker, step0, nsteps, total, dt, kT, gamma,
                   mass, p0, p1, proto, x, v, work, heat, fpt, ab_dim, ab_sign, ab_level,
                   rec_steps, rec_x, rec_v, rec_e, rec_w, rec_q, rec_f, blow,
                   xl, vl, g, pa, pb)


@cpu_kernel(parallel=True)
def mb_lanes(seed, first_walker, step0, nsteps, dt, kT, gamma, sc, x, work, heat, fpt,
             rec_steps, rec_x, rec_e, rec_w, rec_q, rec_f, blow):
    """Overdamped Euler-Maruyama in the Muller-Brown potential, walkers in lanes.

    The same process, noise and floating-point expressions as ``langevin_run`` with kind 0,
    pid 2, D = 2, no protocol and no absorption (arguments as there; ``sc`` the scale),
    hence the same bits: step n uses the Box-Muller pair ``q = n`` of the walker's stream
    (elements 2n, 2n+1: one Philox call per step).  Walkers run in ``LANES`` lanes aligned
    on the absolute index; the noise and position update form one loop across the lanes
    (vectorised) and the potential (four ``exp``) another.  The heat is accumulated per
    step, ``Q += U(x_{n+1}) - U(x_n)``, exactly as there.
    """
    M = x.shape[0]
    wb0 = (first_walker // LANES) * LANES
    nblk = (first_walker + M - wb0 + LANES - 1) // LANES
    R = rec_steps.shape[0]
    useed = np.uint64(seed)
    sq_em = math.sqrt(2.0 * kT * dt / gamma)
    r0 = 0
    while r0 < R and rec_steps[r0] <= step0:
        r0 += 1
    for blk in numba_prange(nblk):
        base = wb0 + blk * LANES
        xs = np.zeros((2, LANES))
        gs = np.zeros((2, LANES))
        us = np.zeros(LANES)
        qs = np.zeros(LANES)
        bl = np.full(LANES, -1, dtype=np.int64)
        for l in range(LANES):
            i = base + l - first_walker
            if i >= 0 and i < M:
                xs[0, l] = x[i, 0]
                xs[1, l] = x[i, 1]
                qs[l] = heat[i]
                bl[l] = blow[i]
            us[l], gs[0, l], gs[1, l] = mb_energy_grad(xs[0, l], xs[1, l], sc)
        r = r0
        for n in range(step0, step0 + nsteps):
            q = np.uint64(n)
            for l in range(LANES):
                z0, z1 = normal_pair(useed, U_NOISE, np.uint64(base + l), q & U_MASK,
                                     q >> U_SHIFT)
                xs[0, l] = xs[0, l] - gs[0, l] * dt / gamma + sq_em * z0
                xs[1, l] = xs[1, l] - gs[1, l] * dt / gamma + sq_em * z1
            for l in range(LANES):
                u, g0, g1 = mb_energy_grad(xs[0, l], xs[1, l], sc)
                qs[l] += u - us[l]
                us[l] = u
                gs[0, l] = g0
                gs[1, l] = g1
            for l in range(LANES):
                ok = math.isfinite(us[l]) and math.isfinite(xs[0, l]) and \
                    math.isfinite(xs[1, l])
                if bl[l] < 0 and not ok:
                    bl[l] = n + 1
            if r < R and rec_steps[r] == n + 1:
                for l in range(LANES):
                    i = base + l - first_walker
                    if i >= 0 and i < M:
                        rec_x[r, i, 0] = xs[0, l]
                        rec_x[r, i, 1] = xs[1, l]
                        rec_e[r, i] = us[l]
                        rec_w[r, i] = work[i]
                        rec_q[r, i] = qs[l]
                        rec_f[r, i] = fpt[i]
                r += 1
        for l in range(LANES):
            i = base + l - first_walker
            if i >= 0 and i < M:
                blow[i] = bl[l]
                if bl[l] < 0:
                    x[i, 0] = xs[0, l]
                    x[i, 1] = xs[1, l]
                    heat[i] = qs[l]


@cpu_kernel(parallel=True)
def energies(pid, D, p, x, out):
    """out[i] = U(x[i]; p) for every walker (frame 0 of a trajectory)."""
    for i in numba_prange(x.shape[0]):
        g = np.empty(D, dtype=np.float64)
        xl = np.empty(D, dtype=np.float64)
        for d in range(D):
            xl[d] = x[i, d]
        out[i] = energy_grad(pid, xl, D, p, g)


def user_kernels(user_energy_grad):
    """Uncached (``langevin_run``, ``energies``) whose potential is the user's function.

    ``user_energy_grad(x, p, g) -> U`` must be a ``numba.njit`` function: it receives the
    walker's position ``x`` (float64[D]) and the parameter vector ``p`` (float64[P]), writes
    grad U into ``g`` and returns U (in units of kT).  Numba's on-disk cache cannot hold
    kernels built around a user function, so these compile in every process.
    """
    from numba import njit

    from ._target import cpu_uncached, retarget

    ueg = user_energy_grad

    @njit
    def pot(pid, x, D, p, g):
        return ueg(x, p, g)

    walker_fn, _ = retarget(walker_run.py_func, cpu_uncached, {"energy_grad": pot})
    run, _ = retarget(langevin_run.py_func, cpu_uncached(parallel=True),
                      {"walker_run": walker_fn})
    en, _ = retarget(energies.py_func, cpu_uncached(parallel=True), {"energy_grad": pot})
    return run, en
