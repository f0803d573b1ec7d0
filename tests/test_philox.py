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
        assert abs(lg - np.log(u)) <= 4.5e-16 * max(1.0, abs(np.log(u)))


def test_sincos_turns_accuracy():
    for u in np.concatenate([np.linspace(0, 1, 4001), np.random.default_rng(1).random(4000)]):
        s, c = philox.sincos_turns(u)
        assert abs(s - np.sin(2 * np.pi * u)) < 1e-15
        assert abs(c - np.cos(2 * np.pi * u)) < 1e-15


def test_sincos_turns53_is_sincos_turns_of_the_uniform_bitwise():
    """The integer-domain reduction gives ``sincos_turns(uniform53(hi, lo))`` bit for bit
    (signed zeros included), at the quadrant edges and on random words."""
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
    assert np.array_equal(out[:, :2].view(np.uint64), out[:, 2:].view(np.uint64))
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
