"""Tests for the 2-D Ising kernels (kernels/ising_cpu.py, kernels/ising_cuda.py).

* Parity: an independent NumPy Philox4x32-10 (checked against the Random123 known-answer
  vectors) drives NumPy/Python references of the documented counter layouts; the CPU
  kernels must equal them bit for bit, and the CUDA kernel (simulator, in a subprocess) must
  equal the CPU kernel bit for bit.
* Invariance: thread count (subprocesses with NUMBA_NUM_THREADS = 1, 2, 3), chunking of
  sweeps / clusters, and which replicas are simulated together.
* Physics (stochastic, fixed seeds, z = 5): averages of the energy and |m| per spin against
  the exact L = 4 enumeration (2**16 states) and the exact finite-lattice energy of Kaufman
  (1949) at L = 16.  Standard errors come from independent replicas (one batch mean per
  replica, after equilibration).
"""
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kernels.ising_cpu import (ISING_PURPOSE, ISING_WOLFF_PURPOSE, energy_magnetisation,
                               metropolis_sweeps, metropolis_table, wolff_add_probability,
                               wolff_updates)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z = 5.0
TC = 2.0 / np.log(1.0 + np.sqrt(2.0))

# ---- an independent NumPy Philox4x32-10 ----------------------------------------------
_MASK = np.uint64(0xFFFFFFFF)


def np_philox(c0, c1, c2, c3, k0, k1):
    """Vectorised Philox4x32-10 over uint64 arrays holding 32-bit values."""
    c0, c1, c2, c3, k0, k1 = (np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3, k0, k1))
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        p0 = m0 * c0
        p1 = m1 * c2
        c0, c1, c2, c3 = (((p1 >> np.uint64(32)) ^ c1 ^ k0) & _MASK, p1 & _MASK,
                          ((p0 >> np.uint64(32)) ^ c3 ^ k1) & _MASK, p0 & _MASK)
        k0 = (k0 + np.uint64(0x9E3779B9)) & _MASK
        k1 = (k1 + np.uint64(0xBB67AE85)) & _MASK
    return c0, c1, c2, c3


def np_words(seed, purpose, walker, step, block):
    """Counter (walker, step, block, purpose), key (seed lo, seed hi), as in kernels.philox."""
    seed = np.uint64(seed)
    return np_philox(walker, step, block, purpose, seed & _MASK, seed >> np.uint64(32))


def test_numpy_philox_reference_known_answers():
    """The reference generator reproduces the Random123 known-answer vectors."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2,
              (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        got = tuple(int(w) for w in np_philox(*ctr, *key))
        assert got == want


# ---- references of the documented counter layouts ------------------------------------
def reference_metropolis(spins, beta, seed, first_sweep, n_sweeps, replica_offset):
    """Vectorised NumPy checkerboard Metropolis with the layout of kernels.ising_cpu."""
    s = spins.astype(np.int64).reshape((-1,) + spins.shape[-2:])
    R, L, _ = s.shape
    ii, jj = np.indices((L, L))
    k = ii * (L // 2) + jj // 2                      # index within the colour's sub-lattice
    walker = (replica_offset + np.arange(R, dtype=np.uint64))[:, None, None]
    x = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    ptable = np.where(x > 0, np.exp(-2.0 * beta * x), 1.0)
    for sweep in range(first_sweep, first_sweep + n_sweeps):
        for colour in (0, 1):
            step = np.uint64(2 * sweep + colour)
            words = np_words(seed, ISING_PURPOSE, walker, step, (k // 4).astype(np.uint64))
            w = np.choose(k % 4, [np.broadcast_to(wd, s.shape) for wd in words])
            u = (w + np.uint64(1)).astype(np.float64) * 2.0 ** -32
            h = (np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2) + np.roll(s, -1, 2))
            p = ptable[(s * h + 4) // 2]
            flip = ((ii + jj) % 2 == colour) & (u <= p)
            s = np.where(flip, -s, s)
    return s.astype(np.int8).reshape(spins.shape)


def reference_wolff(spins, beta, seed, first_cluster, n_clusters, replica_offset):
    """Plain-Python Wolff with the layout of kernels.ising_cpu; returns (spins, flipped)."""
    s = spins.copy().reshape((-1,) + spins.shape[-2:])
    R, L, _ = s.shape
    p_add = -np.expm1(-2.0 * beta)
    flipped = np.zeros(R, np.int64)
    for r in range(R):
        walker = replica_offset + r
        for c in range(first_cluster, first_cluster + n_clusters):
            w = [int(x) for x in np_words(seed, ISING_WOLFF_PURPOSE, walker, c, 0)]
            site = ((w[0] << 32) | w[1]) % (L * L)
            i, j = divmod(site, L)
            s0 = s[r, i, j]
            s[r, i, j] = -s0
            stack, d, size = [(i, j)], 0, 1
            while stack:
                i, j = stack.pop()
                for ii, jj in (((i + 1) % L, j), ((i - 1) % L, j), (i, (j + 1) % L),
                               (i, (j - 1) % L)):
                    if s[r, ii, jj] == s0:
                        blk = np_words(seed, ISING_WOLFF_PURPOSE, walker, c, 1 + d // 4)
                        u = (int(blk[d % 4]) + 1) * 2.0 ** -32
                        d += 1
                        if u <= p_add:
                            s[r, ii, jj] = -s0
                            stack.append((ii, jj))
                            size += 1
            flipped[r] += size
    return s.reshape(spins.shape), flipped


def random_spins(shape, seed):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8)


@pytest.mark.parametrize("L, R, beta", [(4, 3, 0.3), (6, 2, 0.44), (8, 3, 0.6), (10, 1, 0.1)])
def test_metropolis_matches_numpy_reference(L, R, beta):
    """CPU checkerboard Metropolis equals the NumPy reference bit for bit (L = 6 and 10 put
    Philox blocks across row boundaries)."""
    spins = random_spins((R, L, L), L)
    want = reference_metropolis(spins, beta, 2 ** 40 + 7, 11, 4, 5)
    got = spins.copy()
    metropolis_sweeps(got, beta, 2 ** 40 + 7, 11, 4, replica_offset=5)
    assert (got != spins).any()
    np.testing.assert_array_equal(got, want)


def test_metropolis_single_lattice_and_table():
    spins = random_spins((8, 8), 3)
    want = reference_metropolis(spins, 0.4, 99, 0, 3, 0)
    metropolis_sweeps(spins, 0.4, 99, 0, 3)
    np.testing.assert_array_equal(spins, want)
    p = metropolis_table(0.4)
    assert p.dtype == np.float64 and p.shape == (5,)
    np.testing.assert_array_equal(p[:3], 1.0)
    assert p[3] == np.exp(-1.6) and p[4] == np.exp(-3.2)


@pytest.mark.parametrize("L, R, beta", [(5, 2, 0.44), (6, 2, 0.3), (8, 1, 0.6)])
def test_wolff_matches_python_reference(L, R, beta):
    """CPU Wolff equals the plain-Python reference bit for bit, cluster sizes included."""
    spins = random_spins((R, L, L), 10 + L)
    want, want_flipped = reference_wolff(spins, beta, 12345, 3, 12, 2)
    got = spins.copy()
    flipped = wolff_updates(got, beta, 12345, 3, 12, replica_offset=2)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(flipped, want_flipped)
    assert flipped.min() >= 12


def test_chunking_and_replica_subsets_are_invariant():
    """Sweeps/clusters split into chunks, and replicas run alone, give the same bits."""
    spins = random_spins((6, 8, 8), 7)
    whole = spins.copy()
    metropolis_sweeps(whole, 0.42, 5, 0, 7)
    wolff_updates(whole, 0.42, 5, 0, 9)
    parts = spins.copy()
    metropolis_sweeps(parts, 0.42, 5, 0, 3)
    metropolis_sweeps(parts, 0.42, 5, 3, 4)
    wolff_updates(parts, 0.42, 5, 0, 4)
    wolff_updates(parts, 0.42, 5, 4, 5)
    np.testing.assert_array_equal(parts, whole)
    sub = spins[2:5].copy()
    metropolis_sweeps(sub, 0.42, 5, 0, 7, replica_offset=2)
    wolff_updates(sub, 0.42, 5, 0, 9, replica_offset=2)
    np.testing.assert_array_equal(sub, whole[2:5])
    one = spins[4].copy()
    metropolis_sweeps(one, 0.42, 5, 0, 7, replica_offset=4)
    wolff_updates(one, 0.42, 5, 0, 9, replica_offset=4)
    np.testing.assert_array_equal(one, whole[4])


@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
@pytest.mark.parametrize("shape", [(3, 6, 6), (6, 6)])
def test_recorded_series_match_step_by_step(algorithm, shape):
    """out=(energy, magnetisation) records the state after each update, changes nothing."""
    update = metropolis_sweeps if algorithm == "metropolis" else wolff_updates
    spins = random_spins(shape, 4)
    n = 5
    e = np.empty((n,) + shape[:-2])
    m = np.empty((n,) + shape[:-2])
    recorded = spins.copy()
    update(recorded, 0.4, 8, 2, n, out=(e, m))
    stepped = spins.copy()
    for k in range(n):
        update(stepped, 0.4, 8, 2 + k, 1)
        e_k, m_k = energy_magnetisation(stepped)
        np.testing.assert_array_equal(e[k], e_k)
        np.testing.assert_array_equal(m[k], m_k)
    np.testing.assert_array_equal(recorded, stepped)
    with pytest.raises(ValueError, match="out"):
        update(spins.copy(), 0.4, 8, 2, n, out=(e[:-1], m[:-1]))


@pytest.mark.parametrize("R, L", [(1, 6), (3, 10), (2, 64)])
def test_both_parallel_schedules_give_the_same_bits(R, L):
    """Whole replicas per thread and rows per thread give the same bits, also recorded."""
    spins = random_spins((R, L, L), L)
    results = []
    for schedule in ("replicas", "rows", "auto"):
        s = spins.copy()
        e = np.empty((4, R))
        m = np.empty((4, R))
        metropolis_sweeps(s, 0.44, 3, 2, 4, replica_offset=1, out=(e, m), schedule=schedule)
        results.append((s, e, m))
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][0], reference_metropolis(spins, 0.44, 3, 2, 4, 1))
    with pytest.raises(ValueError, match="schedule"):
        metropolis_sweeps(spins.copy(), 0.44, 3, 2, 4, schedule="columns")


def test_energy_magnetisation():
    spins = random_spins((3, 6, 6), 1)
    e, m = energy_magnetisation(spins)
    s = spins.astype(np.int64)
    bonds = (s * np.roll(s, 1, 1) + s * np.roll(s, 1, 2)).sum(axis=(1, 2))
    np.testing.assert_array_equal(e, -bonds / 36.0)
    np.testing.assert_array_equal(m, s.sum(axis=(1, 2)) / 36.0)
    assert energy_magnetisation(np.ones((4, 4), np.int8)) == (-2.0, 1.0)


def test_invalid_input_is_refused():
    with pytest.raises(TypeError, match="int8"):
        metropolis_sweeps(np.ones((4, 4)), 0.4, 0, 0, 1)
    with pytest.raises(ValueError, match="even"):
        metropolis_sweeps(np.ones((5, 5), np.int8), 0.4, 0, 0, 1)
    with pytest.raises(ValueError, match="beta"):
        wolff_updates(np.ones((4, 4), np.int8), -1.0, 0, 0, 1)
    with pytest.raises(ValueError, match="first_sweep"):
        metropolis_sweeps(np.ones((4, 4), np.int8), 0.4, 0, 2 ** 31, 1)
    with pytest.raises(ValueError, match="contiguous"):
        metropolis_sweeps(np.ones((4, 8), np.int8)[:, ::2], 0.4, 0, 0, 1)


# ---- subprocesses: thread count and the CUDA simulator -------------------------------
def run_python(code, **env):
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = ROOT + os.pathsep + full.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


THREAD_SCRIPT = """
import hashlib, numba, numpy as np
from kernels.ising_cpu import metropolis_sweeps, wolff_updates
rng = np.random.default_rng(0)
spins = np.where(rng.random((5, 10, 10)) < 0.5, 1, -1).astype(np.int8)
one = np.where(rng.random((64, 64)) < 0.5, 1, -1).astype(np.int8)  # rows shared out
metropolis_sweeps(spins, 0.44, 77, 3, 6, replica_offset=1)
f = wolff_updates(spins, 0.44, 77, 0, 8, replica_offset=1)
metropolis_sweeps(one, 0.44, 77, 3, 6, replica_offset=3)
data = spins.tobytes() + f.tobytes() + one.tobytes()
print(numba.get_num_threads(), hashlib.sha256(data).hexdigest())
"""


def test_thread_count_invariance():
    """The same bits with 1, 2 and 3 Numba threads (3 splits the work unevenly; the single
    64 x 64 lattice has its rows shared out whenever there are 2 or more threads)."""
    results = {n: run_python(THREAD_SCRIPT, NUMBA_NUM_THREADS=str(n)).split()
               for n in (1, 2, 3)}
    assert [int(r[0]) for r in results.values()] == [1, 2, 3]
    assert len({r[1] for r in results.values()}) == 1
    rng = np.random.default_rng(0)             # same as the script, in this process
    spins = np.where(rng.random((5, 10, 10)) < 0.5, 1, -1).astype(np.int8)
    one = np.where(rng.random((64, 64)) < 0.5, 1, -1).astype(np.int8)
    metropolis_sweeps(spins, 0.44, 77, 3, 6, replica_offset=1)
    f = wolff_updates(spins, 0.44, 77, 0, 8, replica_offset=1)
    metropolis_sweeps(one, 0.44, 77, 3, 6, replica_offset=3)
    data = spins.tobytes() + f.tobytes() + one.tobytes()
    assert hashlib.sha256(data).hexdigest() == results[1][1]


CUDA_SCRIPT = """
import numpy as np
from numba import cuda
from kernels.ising_cpu import metropolis_sweeps
from kernels.ising_cuda import metropolis_sweeps_cuda
rng = np.random.default_rng(3)
for (R, L, beta, first, n, offset) in [(2, 8, 0.44, 4, 3, 3), (1, 6, 0.3, 0, 2, 0)]:
    spins = np.where(rng.random((R, L, L)) < 0.5, 1, -1).astype(np.int8)
    cpu = spins.copy()
    metropolis_sweeps(cpu, beta, 2 ** 33 + 1, first, n, replica_offset=offset)
    gpu = spins.copy()
    metropolis_sweeps_cuda(gpu, beta, 2 ** 33 + 1, first, n, replica_offset=offset)
    assert (cpu != spins).any()
    assert np.array_equal(cpu, gpu), (cpu, gpu)
    d = cuda.to_device(spins)
    metropolis_sweeps_cuda(d, beta, 2 ** 33 + 1, first, n, replica_offset=offset)
    assert np.array_equal(cpu, d.copy_to_host())
one = spins[0].copy()
metropolis_sweeps_cuda(one, beta, 2 ** 33 + 1, first, n, replica_offset=offset)
assert np.array_equal(one, cpu[0])
print("parity ok")
"""


@pytest.mark.cudasim
def test_cuda_kernel_matches_cpu_bitwise():
    """The CUDA checkerboard kernel (NUMBA_ENABLE_CUDASIM=1, set before numba is imported,
    in a subprocess) gives the CPU kernel's spins bit for bit, for host and device arrays."""
    assert run_python(CUDA_SCRIPT, NUMBA_ENABLE_CUDASIM="1") == "parity ok"


# ---- exact oracles ---------------------------------------------------------------------
def exact_enumeration(L, T):
    """Exact <e> and <|m|> per spin of the L x L periodic lattice (L**2 <= 16)."""
    N = L * L
    states = np.arange(2 ** N, dtype=np.int64)
    s = (((states[:, None] >> np.arange(N)) & 1) * 2 - 1).reshape(-1, L, L)
    E = -(s * np.roll(s, 1, 1) + s * np.roll(s, 1, 2)).sum(axis=(1, 2))
    M = np.abs(s.sum(axis=(1, 2)))
    w = np.exp(-(E - E.min()) / T)
    return (w * E).sum() / w.sum() / N, (w * M).sum() / w.sum() / N


def kaufman_log_z(K, L):
    """ln Z of the L x L periodic lattice at coupling K (Kaufman 1949; Ferdinand and Fisher
    1969): Z = 1/2 (2 sinh 2K)^(N/2) sum of four products over gamma_l, with
    cosh gamma_l = cosh 2K coth 2K - cos(pi l / L) and the signed gamma_0 = 2K + ln tanh K."""
    l = np.arange(2 * L)
    gamma = np.arccosh(np.cosh(2 * K) / np.tanh(2 * K) - np.cos(np.pi * l / L))
    gamma[0] = 2 * K + np.log(np.tanh(K))
    logs, signs = [], []
    for g in (gamma[1::2], gamma[0::2]):
        x = 0.5 * L * g
        logs.append(np.sum(np.log(2 * np.cosh(x))))
        signs.append(1.0)
        logs.append(np.sum(np.log(np.abs(2 * np.sinh(x)))))
        signs.append(np.prod(np.sign(x)))
    logs = np.array(logs)
    top = logs.max()
    total = np.sum(np.array(signs) * np.exp(logs - top))
    return np.log(0.5) + 0.5 * L * L * np.log(2 * np.sinh(2 * K)) + top + np.log(total)


def kaufman_energy(L, T):
    """Exact energy per spin u = -(1/N) d ln Z / dK (fourth-order central difference)."""
    K, h = 1.0 / T, 1e-4
    f = [kaufman_log_z(K + a * h, L) for a in (-2, -1, 1, 2)]
    dlnz = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)
    return -dlnz / (L * L)


@pytest.mark.parametrize("T", [1.5, TC, 3.5])
def test_kaufman_oracle_matches_enumeration(T):
    """The Kaufman formula used below agrees with brute force at L = 4 on both sides of Tc."""
    assert kaufman_energy(4, T) == pytest.approx(exact_enumeration(4, T)[0], abs=1e-8)


def run_chain(update, spins, n_equil, n_measure):
    """Replica means of e and |m| over n_measure updates after n_equil; returns
    (mean e, SE e, mean |m|, SE |m|) with SEs from the spread of the independent replicas."""
    update(spins, 0, n_equil, None)
    e = np.empty((n_measure, spins.shape[0]))
    m = np.empty((n_measure, spins.shape[0]))
    update(spins, n_equil, n_measure, (e, m))
    e_rep, m_rep = e.mean(axis=0), np.abs(m).mean(axis=0)
    R = spins.shape[0]
    return (e_rep.mean(), e_rep.std(ddof=1) / np.sqrt(R),
            m_rep.mean(), m_rep.std(ddof=1) / np.sqrt(R))


def metropolis_update(beta, seed):
    return lambda s, first, n, out: metropolis_sweeps(s, beta, seed, first, n, out=out)


def wolff_update(beta, seed):
    return lambda s, first, n, out: wolff_updates(s, beta, seed, first, n, out=out)


@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
@pytest.mark.parametrize("T", [1.5, TC, 3.5])
def test_l4_averages_match_exact_enumeration(algorithm, T):
    """Stochastic (fixed seeds, z = 5): <e> and <|m|> per spin at L = 4, 128 replicas x 1500
    updates after 200, against the exact enumeration of all 2**16 states."""
    beta = 1.0 / T
    make = metropolis_update if algorithm == "metropolis" else wolff_update
    spins = np.ones((128, 4, 4), np.int8)
    e, se_e, m, se_m = run_chain(make(beta, 2024), spins, 200, 1500)
    e_exact, m_exact = exact_enumeration(4, T)
    assert se_e > 0 and se_m > 0
    assert abs(e - e_exact) < Z * se_e, (e, e_exact, se_e)
    assert abs(m - m_exact) < Z * se_m, (m, m_exact, se_m)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, T", [("metropolis", 1.5), ("metropolis", 3.5),
                                          ("wolff", TC)])
def test_l16_energy_matches_kaufman(algorithm, T):
    """Stochastic (fixed seeds, z = 5): energy per spin at L = 16, 64 replicas x 1000 updates
    after 300 (from the all-up state), against Kaufman's exact finite-lattice value."""
    beta = 1.0 / T
    make = metropolis_update if algorithm == "metropolis" else wolff_update
    spins = np.ones((64, 16, 16), np.int8)
    e, se_e, _, _ = run_chain(make(beta, 7), spins, 300, 1000)
    e_exact = kaufman_energy(16, T)
    assert abs(e - e_exact) < Z * se_e, (e, e_exact, se_e)


@pytest.mark.slow
def test_wolff_and_metropolis_agree_at_tc():
    """Stochastic (fixed seeds, z = 5): at L = 8 and T = Tc the two algorithms give the same
    <e> and <|m|> within z times the combined standard error."""
    beta = 1.0 / TC
    a = run_chain(metropolis_update(beta, 11), np.ones((64, 8, 8), np.int8), 300, 1500)
    b = run_chain(wolff_update(beta, 12), np.ones((64, 8, 8), np.int8), 300, 1500)
    assert abs(a[0] - b[0]) < Z * np.hypot(a[1], b[1]), (a, b)
    assert abs(a[2] - b[2]) < Z * np.hypot(a[3], b[3]), (a, b)


def test_wolff_add_probability():
    assert wolff_add_probability(0.5) == -np.expm1(-1.0)
    assert wolff_add_probability(0.0) == 0.0
