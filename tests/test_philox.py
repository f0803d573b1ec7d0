"""Philox4x32-10 known-answer vectors (CPU and CUDA simulator) and the float transforms."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from kernels import philox, streams

U = np.uint64
KAT = [  # (counter, key, expected) from Random123 kat_vectors, quoted in DESIGN.md
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_known_answers_cpu(ctr, key, want):
    got = philox.philox4x32_10(*(U(c) for c in ctr), *(U(k) for k in key))
    assert tuple(int(g) for g in got) == want


CUDASIM_SCRIPT = r"""
import json, numpy as np
from numba import cuda
from kernels import philox
from kernels._target import cuda_scalars
ph = cuda_scalars()["philox4x32_10"]
nj = cuda_scalars()["normal_j"]

@cuda.jit
def kat(ctr, key, out):
    i = cuda.grid(1)
    if i < ctr.shape[0]:
        a, b, c, d = ph(ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3], key[i, 0], key[i, 1])
        out[i, 0] = a; out[i, 1] = b; out[i, 2] = c; out[i, 3] = d

@cuda.jit
def norms(seed, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        for j in range(out.shape[1]):
            out[i, j] = nj(seed, np.uint64(1), np.uint64(i + 5), np.uint64(j))

ctr = np.array(%s, dtype=np.uint64); key = np.array(%s, dtype=np.uint64)
out = np.zeros((3, 4), dtype=np.uint64)
kat[1, 3](ctr, key, out)
z = np.zeros((8, 7))
norms[1, 8](np.uint64(123), z)
print(json.dumps({"kat": out.tolist(), "normals": z.tolist()}))
"""


@pytest.mark.cudasim
def test_known_answers_and_normals_cuda_simulator():
    ctr = [list(k[0]) for k in KAT]
    key = [list(k[1]) for k in KAT]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    res = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT % (ctr, key)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert [tuple(r) for r in got["kat"]] == [k[2] for k in KAT]
    want = np.empty((8, 7))
    streams.normals(U(123), U(1), 5, 0, want)
    assert np.array_equal(np.array(got["normals"]), want)   # bitwise, same words and maths


def test_uniform_range_and_log():
    assert philox.uniform53(U(0), U(0)) == 2.0**-53
    assert philox.uniform53(U(0xFFFFFFFF), U(0xFFFFFFFF)) == 1.0
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**32, size=(20000, 2), dtype=np.uint64)
    words[:4] = [[0, 0], [0, 31], [0xFFFFFFFF, 0xFFFFFFFF], [1, 0]]
    for hi, lo in words:
        u = philox.uniform53(hi, lo)
        assert 0.0 < u <= 1.0
        lg = philox.log_uniform53(hi, lo)
        assert abs(lg - np.log(u)) <= 2e-15 * max(1.0, abs(np.log(u)))    # version 3


def test_sincos_turns_accuracy():
    for u in np.concatenate([np.linspace(0, 1, 4001), np.random.default_rng(1).random(4000)]):
        s, c = philox.sincos_turns(u)
        assert abs(s - np.sin(2 * np.pi * u)) < 1e-15
        assert abs(c - np.cos(2 * np.pi * u)) < 1e-15


def _bits53(hi, lo):
    return (((hi >> U(6)) << U(27)) | (lo >> U(5))) + U(1)


def _words_for_m(m):
    """(hi, lo) words with bits53(hi, lo) == m (1 <= m <= 2**53), spare bits set."""
    n = np.asarray(m, dtype=np.uint64) - U(1)
    return ((n >> U(27)) << U(6)) | U(63), ((n & U(2**27 - 1)) << U(5)) | U(31)


def extreme_words(rng):
    """Rows (w0, w1, w2, w3) at the extremes of Box-Muller's two uniforms: u1 = m 2**-53 for
    the smallest and largest m, at the log's fold edge (mantissa near sqrt 2) in every
    binade, and u2 at and next to every quadrant edge k 2**-2; the other pair random."""
    s52 = int(philox.SQRT2 * 2.0**52)
    m1 = list(range(1, 2001)) + list(range(2**53 - 2000, 2**53 + 1))
    for e in range(53):                       # m = mantissa near sqrt 2, times 2**(e - 52)
        for d in range(-3, 4):
            v = (s52 + d) >> (52 - e) if e < 52 else (s52 + d) << 1
            if 1 <= v <= 2**53:
                m1.append(v)
    m2 = [k * 2**51 + d for k in range(5) for d in range(-1000, 1001) if 1 <= k * 2**51 + d <= 2**53]
    a = rng.integers(0, 2**32, size=(len(m1) + len(m2), 4), dtype=np.uint64)
    a[:len(m1), 0], a[:len(m1), 1] = _words_for_m(m1)
    a[len(m1):, 2], a[len(m1):, 3] = _words_for_m(m2)
    return a


def box_muller_errors(words):
    """Largest relative errors of ``log_uniform53``, the sine/cosine and the two normals of
    ``box_muller`` over word rows [N, 4], against long-double references of the same
    uniforms (the angle reduction is exact, so the reference reduces exactly as well)."""
    from numba import njit

    @njit
    def run(w, out):
        for i in range(w.shape[0]):
            z0, z1 = philox.box_muller(w[i, 0], w[i, 1], w[i, 2], w[i, 3])
            s, c = philox.sincos_turns53(w[i, 2], w[i, 3])
            out[i, 0] = philox.log_uniform53(w[i, 0], w[i, 1])
            out[i, 1], out[i, 2], out[i, 3], out[i, 4] = s, c, z0, z1

    out = np.empty((words.shape[0], 5))
    run(words, out)
    ld = np.longdouble
    m1 = _bits53(words[:, 0], words[:, 1])
    m2 = _bits53(words[:, 2], words[:, 3])
    lg = np.log(m1.astype(ld) * ld(2.0**-53))
    k = (m2 + U(2**50)) >> U(51)
    r = (m2.astype(np.int64) - (k << U(51)).astype(np.int64)).astype(ld) * \
        (ld("1.57079632679489661923132169163975144") * ld(2.0**-51))
    sr, cr = np.sin(r), np.cos(r)
    odd, neg_s, neg_c = (k & U(1)) == 1, (k & U(2)) != 0, ((k ^ (k >> U(1))) & U(1)) == 1
    s_ref = np.where(odd, cr, sr) * np.where(neg_s, -1, 1)
    c_ref = np.where(odd, sr, cr) * np.where(neg_c, -1, 1)
    rad = np.sqrt(-2 * lg)
    refs = [lg, s_ref, c_ref, rad * c_ref, rad * s_ref]

    def rel(got, ref):
        zero = ref == 0
        assert np.all(got[zero] == 0)
        return float(np.max(np.abs(got[~zero] - ref[~zero]) / np.abs(ref[~zero]), initial=0.0))
    return {name: rel(out[:, i], refs[i]) for i, name in enumerate(("log", "sin", "cos", "z0", "z1"))}


def test_box_muller_relative_error_below_1e14():
    """Normals version 3 (kernels/philox.py): log, sin, cos and both normals within 1e-14
    relative of long-double references, on 300k Philox draws and the extreme uniforms (the
    10^7-draw figure in the docstring comes from the same function:
    ``box_muller_errors(np.concatenate([extreme_words(rng), philox draws]))``)."""
    rng = np.random.default_rng(11)
    w = np.empty((300_000, 4), dtype=np.uint64)
    streams_words(U(31), 0, w)
    err = box_muller_errors(np.concatenate([extreme_words(rng), w]))
    assert max(err.values()) <= 1e-14, err
    assert err["log"] <= 2e-15 and err["sin"] <= 1e-15 and err["cos"] <= 1e-15, err


def streams_words(seed, first, out):
    """out[i] = the four Philox words of counter (first + i, 0, 0, PURPOSE_NOISE)."""
    from numba import njit

    @njit
    def fill(seed, first, out):
        for i in range(out.shape[0]):
            out[i, 0], out[i, 1], out[i, 2], out[i, 3] = philox.philox_words(
                seed, U(1), U(first + i), U(0), U(0))
    fill(seed, first, out)


def test_sincos_turns53_is_sincos_turns_of_the_uniform_bitwise():
    """The integer-domain reduction gives ``sincos_turns(uniform53(hi, lo))``: the half that
    comes from the sine polynomial bit for bit (signed zeros included), the other within 2
    ulp (version 3 has its own minimax cosine), at the quadrant edges and on random words."""
    from numba import njit

    @njit
    def both(words, out):
        for i in range(words.shape[0]):
            hi, lo = words[i, 0], words[i, 1]
            s0, c0 = philox.sincos_turns(philox.uniform53(hi, lo))
            s1, c1 = philox.sincos_turns53(hi, lo)
            out[i, 0], out[i, 1], out[i, 2], out[i, 3] = s0, c0, s1, c1

    edges = []
    for m in [1, 2, 3] + [k * 2**50 + d for k in range(9) for d in (-1, 0, 1)]:
        if 1 <= m <= 2**53:
            n = m - 1                                   # m = n + 1 = bits53(hi, lo)
            edges.append([n >> 27 << 6 | 63, (n & (2**27 - 1)) << 5 | 31])
    rng = np.random.default_rng(3)
    words = np.concatenate([np.array(edges, dtype=np.uint64),
                            rng.integers(0, 2**32, size=(400_000, 2), dtype=np.uint64)])
    out = np.empty((words.shape[0], 4))
    both(words, out)
    # even quadrants take sin from the sine polynomial, odd ones take cos from it
    even = (((_bits53(words[:, 0], words[:, 1]) + U(2**50)) >> U(51)) & U(1)) == 0
    assert np.array_equal(out[even, 0].view(np.uint64), out[even, 2].view(np.uint64))
    assert np.array_equal(out[~even, 1].view(np.uint64), out[~even, 3].view(np.uint64))
    assert np.all(np.abs(out[:, :2] - out[:, 2:]) <= 2 * np.spacing(np.abs(out[:, :2])))
    assert np.array_equal(np.signbit(out[:, :2]), np.signbit(out[:, 2:]))
    m = np.array([int(philox.bits53(U(h), U(lo))) for h, lo in words[:len(edges)]])
    assert set(range(9)) <= {int(v) // 2**50 for v in m}         # every quadrant edge hit
    assert np.any(out[:, 2] == 0.0) and np.any(np.signbit(out[:, 2]) & (out[:, 2] == 0.0))


def test_normal_stream_layout():
    """Element j is the cos (even j) / sin (odd j) half of pair q = j >> 1."""
    z = np.empty((3, 6))
    streams.normals(U(9), U(1), 40, 0, z)
    for i in range(3):
        for q in range(3):
            a, b = philox.normal_pair(U(9), U(1), U(40 + i), U(q), U(0))
            assert z[i, 2 * q] == a and z[i, 2 * q + 1] == b


def test_normals_are_standard_normal():
    """Stochastic (seed 2024, z = 5): mean, variance and KS of 400k normals."""
    z = np.empty((4000, 100))
    streams.normals(U(2024), U(1), 0, 0, z)
    z = z.ravel()
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-6      # ~5 sigma
    # neighbouring walkers and steps are uncorrelated
    zz = z.reshape(4000, 100)
    assert abs(np.mean(zz[:, :-1] * zz[:, 1:])) < 5 / np.sqrt(zz[:, 1:].size)
    assert abs(np.mean(zz[:-1] * zz[1:])) < 5 / np.sqrt(zz[1:].size)
