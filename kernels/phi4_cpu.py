r"""Hybrid (Hamiltonian) Monte Carlo for the 2-D lattice phi^4 theory, CPU (Numba).

Model
-----
On an L x L periodic lattice, in the hopping-parameter form of the lattice-flow literature::

    S[phi] = sum_x [ -2 kappa sum_{mu=1,2} phi_x phi_{x+mu} + phi_x^2 + lambda (phi_x^2 - 1)^2 ]

(mu over the two positive directions, so each bond is counted once; for L = 2 the bonds
x -> x+mu and x+mu -> x are both counted, as the formula says).  The force is
``dS/dphi_x = -2 kappa sum_mu (phi_{x+mu} + phi_{x-mu}) + 2 phi_x + 4 lambda phi_x (phi_x^2 - 1)``.

HMC (Duane, Kennedy, Pendleton & Roweth, Phys. Lett. B 195, 216 (1987)): momenta
``pi_x ~ N(0, 1)``, ``H = sum pi^2 / 2 + S``, ``n_leap`` leapfrog steps of size ``eps_t``,
accepted with probability ``min(1, exp(-Delta H))``; on rejection the field is restored.
The step of trajectory t is jittered, ``eps_t = eps (0.9 + 0.2 u_t)``, which keeps the
chain exact (u_t is independent of the state) and breaks the resonances of a fixed
trajectory length.

Counter layout (Philox4x32-10, ``kernels.philox``)
--------------------------------------------------
* ``purpose = PHI4_PURPOSE`` (= PURPOSE_DATASET + 7), ``walker = replica_offset + r``;
* momenta of trajectory t (absolute index ``first_traj + n``): site x (row-major,
  0 <= x < V = L^2) takes element ``j = t * Vp + x`` of the walker's normal stream,
  ``Vp = V + (V & 1)`` (each trajectory starts on a Box-Muller pair): the pair
  ``q = j >> 1`` comes from the counter ``(walker, q & 0xffffffff, q >> 32, purpose)``,
  cos half for even j, sin half for odd j, exactly as ``kernels.philox.normal_j``;
* trajectory t's accept / jitter uniforms: counter ``(walker, t, 0xffffffff, purpose)``,
  words (w0, w1) -> the accept uniform, (w2, w3) -> the jitter uniform u_t (53-bit, (0, 1]).
  The normal stream reaches block word 0xffffffff only for q >= 2**64 - 2**32, never.
Accept iff ``Delta H <= 0`` or ``u <= exp(-Delta H)``.

Each replica runs in one thread (``prange`` over replicas); its field, momenta and forces
live in per-replica buffers and every sum runs in a fixed order, so the result does not
depend on the thread count or on which replicas run together.  No fastmath.
"""
import math

import numpy as np
from numba import prange

from ._target import cpu_kernel
from .philox import MASK32, PURPOSE_DATASET, U32, normal_pair, philox_words, uniform53

PHI4_PURPOSE = np.uint64(PURPOSE_DATASET + 7)
BLOCK_UNIFORM = np.uint64(0xFFFFFFFF)
MAX_TRAJ = 2 ** 32


@cpu_kernel
def phi4_action(phi, kappa, lam):
    """S[phi] of one field [L, L] (float64), summed row-major."""
    L = phi.shape[0]
    s = 0.0
    for i in range(L):
        ip = i + 1
        if ip == L:
            ip = 0
        for j in range(L):
            jp = j + 1
            if jp == L:
                jp = 0
            p = phi[i, j]
            p2 = p * p
            d = p2 - 1.0
            s += -2.0 * kappa * p * (phi[ip, j] + phi[i, jp]) + p2 + lam * d * d
    return s


@cpu_kernel
def phi4_force(phi, kappa, lam, f):
    """f = dS/dphi for one field [L, L]."""
    L = phi.shape[0]
    for i in range(L):
        ip = i + 1
        if ip == L:
            ip = 0
        im = i - 1
        if im < 0:
            im = L - 1
        for j in range(L):
            jp = j + 1
            if jp == L:
                jp = 0
            jm = j - 1
            if jm < 0:
                jm = L - 1
            p = phi[i, j]
            nb = phi[ip, j] + phi[im, j] + phi[i, jp] + phi[i, jm]
            f[i, j] = -2.0 * kappa * nb + 2.0 * p + 4.0 * lam * p * (p * p - 1.0)


@cpu_kernel
def _momenta(seed, walker, t, pi):
    L = pi.shape[0]
    V = L * L
    Vp = V + (V & 1)
    q0 = np.uint64(t) * np.uint64(Vp // 2)
    for h in range(Vp // 2):
        q = q0 + np.uint64(h)
        z0, z1 = normal_pair(seed, PHI4_PURPOSE, walker, q & MASK32, q >> U32)
        x = 2 * h
        pi[x // L, x % L] = z0
        x += 1
        if x < V:
            pi[x // L, x % L] = z1


@cpu_kernel
def _trajectory(phi, old, pi, f, kappa, lam, eps, n_leap, seed, walker, t):
    """One HMC trajectory on the field ``phi`` [L, L] in place; returns (accepted, dH)."""
    L = phi.shape[0]
    _momenta(seed, walker, t, pi)
    w0, w1, w2, w3 = philox_words(seed, PHI4_PURPOSE, walker, np.uint64(t), BLOCK_UNIFORM)
    e = eps * (0.9 + 0.2 * uniform53(w2, w3))
    k_old = 0.0
    for i in range(L):
        for j in range(L):
            old[i, j] = phi[i, j]
            k_old += 0.5 * pi[i, j] * pi[i, j]
    h_old = k_old + phi4_action(phi, kappa, lam)
    phi4_force(phi, kappa, lam, f)
    for i in range(L):
        for j in range(L):
            pi[i, j] -= 0.5 * e * f[i, j]
    for n in range(n_leap):
        for i in range(L):
            for j in range(L):
                phi[i, j] += e * pi[i, j]
        phi4_force(phi, kappa, lam, f)
        c = e if n < n_leap - 1 else 0.5 * e
        for i in range(L):
            for j in range(L):
                pi[i, j] -= c * f[i, j]
    k_new = 0.0
    for i in range(L):
        for j in range(L):
            k_new += 0.5 * pi[i, j] * pi[i, j]
    dH = k_new + phi4_action(phi, kappa, lam) - h_old
    accept = dH <= 0.0
    if not accept and dH < 745.0:
        accept = uniform53(w0, w1) <= math.exp(-dH)
    if not accept:
        for i in range(L):
            for j in range(L):
                phi[i, j] = old[i, j]
    return accept, dH


@cpu_kernel(parallel=True)
def _hmc_kernel(phi, kappa, lam, eps, n_leap, seed, first_traj, n_traj, replica_offset,
                action, magnetisation, accepted, max_dh):
    R = phi.shape[0]
    L = phi.shape[1]
    for r in prange(R):
        old = np.empty((L, L))
        pi = np.empty((L, L))
        f = np.empty((L, L))
        walker = replica_offset + np.uint64(r)
        acc = 0
        big = 0.0
        for n in range(n_traj):
            ok, dH = _trajectory(phi[r], old, pi, f, kappa, lam, eps, n_leap, seed, walker,
                                 first_traj + n)
            if ok:
                acc += 1
            a = abs(dH)
            if a != a:                    # NaN: report it as inf
                big = np.inf
            elif a > big:
                big = a
            if action.shape[0] > 0:
                action[n, r] = phi4_action(phi[r], kappa, lam)
                m = 0.0
                for i in range(L):
                    for j in range(L):
                        m += phi[r, i, j]
                magnetisation[n, r] = m / (L * L)
        accepted[r] = acc
        max_dh[r] = big


def hmc_trajectories(phi, kappa, lam, eps, n_leap, seed, first_traj, n_traj, replica_offset=0,
                     out=None):
    """Run ``n_traj`` HMC trajectories on each replica of ``phi`` [R, L, L] (float64), in place.

    Parameters
    ----------
    phi : float64 array [R, L, L], C-contiguous; replica r is walker ``replica_offset + r``.
    kappa, lam : the couplings of the action (see the module docstring).
    eps : float > 0, the leapfrog step before jitter; ``n_leap`` >= 1 steps per trajectory.
    seed : int in [0, 2**64); ``first_traj``: absolute index of the first trajectory.
    out : optional (action, magnetisation), float64 arrays [n_traj, R], filled after each
        trajectory with S and the magnetisation per site ``sum_x phi_x / L^2``.

    Returns
    -------
    (accepted int64 [R], max_abs_dH float64 [R]): accepted trajectories per replica and the
    largest |Delta H| met (NaN or inf flags a blow-up of the integrator).
    """
    if not (isinstance(phi, np.ndarray) and phi.dtype == np.float64 and phi.ndim == 3
            and phi.shape[1] == phi.shape[2] and phi.shape[1] >= 2
            and phi.flags.c_contiguous and phi.flags.writeable):
        raise ValueError("phi must be a writeable C-contiguous float64 array [R, L, L], L >= 2")
    R = phi.shape[0]
    if not (math.isfinite(eps) and eps > 0) or int(n_leap) < 1:
        raise ValueError(f"need eps > 0 and n_leap >= 1, got eps={eps}, n_leap={n_leap}")
    if not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if not (0 <= int(first_traj) and int(first_traj) + int(n_traj) <= MAX_TRAJ):
        raise ValueError("trajectory indices must stay in [0, 2**32)")
    if not 0 <= int(replica_offset) <= 2 ** 32 - R:
        raise ValueError("replica indices must stay in [0, 2**32)")
    if out is None:
        action = np.empty((0, R))
        mag = np.empty((0, R))
    else:
        action, mag = out
        for a in (action, mag):
            if not (isinstance(a, np.ndarray) and a.dtype == np.float64
                    and a.shape == (n_traj, R) and a.flags.c_contiguous):
                raise ValueError(f"out must be two C-contiguous float64 arrays [{n_traj}, {R}]")
    accepted = np.zeros(R, np.int64)
    max_dh = np.zeros(R)
    if n_traj > 0 and R > 0:
        _hmc_kernel(phi, float(kappa), float(lam), float(eps), int(n_leap), np.uint64(seed),
                    np.int64(first_traj), np.int64(n_traj), np.uint64(replica_offset), action,
                    mag, accepted, max_dh)
    return accepted, max_dh


@cpu_kernel(parallel=True)
def _observables_kernel(phi, kappa, lam, action, magnetisation):
    R = phi.shape[0]
    L = phi.shape[1]
    for r in prange(R):
        action[r] = phi4_action(phi[r], kappa, lam)
        m = 0.0
        for i in range(L):
            for j in range(L):
                m += phi[r, i, j]
        magnetisation[r] = m / (L * L)


def action_magnetisation(phi, kappa, lam):
    """(S [R], magnetisation per site [R]) of fields ``phi`` [R, L, L] (float64)."""
    phi = np.ascontiguousarray(phi, dtype=np.float64)
    R = phi.shape[0]
    s = np.empty(R)
    m = np.empty(R)
    _observables_kernel(phi, float(kappa), float(lam), s, m)
    return s, m
