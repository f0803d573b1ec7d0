"""Bitwise invariance: threads, chunking, walker subsets, and CPU == CUDA simulator."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nonequil.simulate import simulate

RUNS = {
    "ou-exact": dict(process="ou", params={"theta": 1.3, "mu": 0.2, "sigma": 0.7}, dt=0.05,
                     x0=[0.5, -1.0, 2.0]),
    "ou-em-f32": dict(process="ou", method="em", params={"theta": 1.3}, dt=0.05,
                      precision="float32"),
    "ou-absorb": dict(process="ou", params={"theta": 1.0, "sigma": 1.0}, dt=0.05,
                      absorb="x>=0.8"),
    "dw-protocol": dict(process="langevin", potential="double-well",
                        params={"b": (0.0, 1.0), "k_perp": 2.0}, dt=2e-3, x0=[-1.0, 0.3],
                        absorb="x[0]>=1.2"),
    "mb-underdamped": dict(process="underdamped", potential="muller-brown", dt=1e-3,
                           x0=[-0.5, 1.4], params={"kT": 5.0}),
    # overdamped EM in Muller-Brown runs the lanes kernel on the CPU (mb_lanes) and
    # walker_run on the GPU: the simulator comparison checks that they agree bit for bit
    "mb-em": dict(process="langevin", potential="muller-brown", dt=1e-3, x0=[-0.5, 1.4],
                  params={"kT": 5.0}),
    "gm": dict(process="langevin", potential="gaussian-mixture", dt=1e-2, x0="boltzmann",
               params={"weights": [0.3, 0.7], "means": [-1.0, 2.0], "sigmas": [0.4, 0.8]}),
    "vp-cosine": dict(process="vp", params={"schedule": "cosine"}, dt=0.01, x0=[0.5, -1.0]),
    "ve-em": dict(process="ve", method="em", params={"sigma_max": 4.0}, dt=0.01),
    "harmonic-exact": dict(process="langevin", potential="harmonic", method="exact",
                           params={"k": (1.0, 3.0), "center": (0.0, 1.0)}, dt=0.05,
                           x0="boltzmann"),
}


def _frames(r):
    return {k: v for k, v in r.frames.items()}


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k], equal_nan=True), k


@pytest.mark.parametrize("name", sorted(RUNS))
def test_chunking_does_not_change_bits(name):
    kw = dict(RUNS[name], walkers=37, steps=60, seed=99, record_every=7)
    ref = _frames(simulate(**kw))
    for chunk in (1, 5, 13):
        _equal(_frames(simulate(**kw, max_chunk_steps=chunk)), ref)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_walker_subset_equals_same_walkers_in_larger_run(name):
    """Walkers 17..42 run alone (--first-walker 17, 26 walkers) equal them in a 50-walker run."""
    big = _frames(simulate(**RUNS[name], walkers=50, steps=40, seed=5, record_every=9))
    sub = _frames(simulate(**RUNS[name], walkers=26, first_walker=17, steps=40, seed=5,
                           record_every=9))
    for k, v in big.items():
        if v.ndim >= 2:
            assert np.array_equal(v[:, 17:43], sub[k], equal_nan=True), k
        else:
            assert np.array_equal(v, sub[k]), k


THREAD_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
from nonequil.simulate import simulate
from tests.test_invariance import RUNS
out = {}
for name, kw in sorted(RUNS.items()):
    r = simulate(**kw, walkers=41, steps=50, seed=3, record_every=5)
    h = hashlib.sha256()
    for k in sorted(r.frames):
        h.update(np.ascontiguousarray(r.frames[k]).tobytes())
    out[name] = h.hexdigest()
print(json.dumps(out))
"""


def _run_script(script, **env):
    e = dict(os.environ, **env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    e["PYTHONPATH"] = root + os.pathsep + e.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", script], env=e, capture_output=True,
                         text=True, timeout=600, cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_thread_count_does_not_change_bits():
    one = _run_script(THREAD_SCRIPT, NUMBA_NUM_THREADS="1")
    two = _run_script(THREAD_SCRIPT, NUMBA_NUM_THREADS="2")
    assert one == two


CUDA_SCRIPT = r"""
import hashlib, json
import numpy as np
from nonequil.simulate import simulate
from tests.test_invariance import RUNS
out = {}
for name, kw in sorted(RUNS.items()):
    r = simulate(**kw, walkers=%d, steps=%d, seed=3, record_every=4, device="%s")
    out[name] = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in r.frames.items()}
print(json.dumps(out))
"""


@pytest.mark.cudasim
def test_cpu_equals_cuda_simulator():
    """The CUDA kernels under NUMBA_ENABLE_CUDASIM give the CPU's bits (same words, maths)."""
    M, S = 19, 12
    cpu = _run_script(CUDA_SCRIPT % (M, S, "cpu"))
    gpu = _run_script(CUDA_SCRIPT % (M, S, "cuda"), NUMBA_ENABLE_CUDASIM="1")
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        for k in cpu[name]:
            a = np.array(cpu[name][k], dtype=np.float64)
            b = np.array(gpu[name][k], dtype=np.float64)
            assert np.array_equal(a, b, equal_nan=True), (name, k)
