"""Reproducibility of every writing verb (issue 9 "Reproducibility").

* The same command and seed give byte-identical HDF5 datasets: ``simulate``, ``dataset``,
  ``train``, ``sample`` and ``gan`` are each run in this process (Numba's default thread
  count) and again in fresh processes with ``NUMBA_NUM_THREADS=1`` and ``=4``; every dataset
  outside ``/provenance`` must match in dtype, shape and bytes, and so must every attribute
  outside ``/provenance`` (no file holds a wall-clock time stamp outside it).
* A different seed gives different data (for every verb).
* Every output file carries the provenance fields DESIGN.md and the issue list: the versions
  of nonequil, NumPy, Numba, SciPy, h5py and HDF5, the device, the precision, the fastmath
  flag, the threading layer, the thread count, the seed, the counter layout and the command
  line, and the thread count recorded is the one the run used.

Chunk-size and walker-subset invariance and CPU == CUDA simulator are in
tests/test_invariance.py (and tests/test_philox.py for the RNG words).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from nonequil import cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# verb -> argv (without --seed/--out); "{d}" is the run directory
COMMANDS = {
    "simulate": ["simulate", "--process", "langevin", "--potential", "double-well",
                 "--walkers", "37", "--steps", "40", "--dt", "0.01", "--record-every", "8"],
    "dataset": ["dataset", "double-well", "--n", "300"],
    "train": ["train", "{d}/data.h5", "--steps", "30", "--set", "width=8", "--set", "depth=1",
              "--batch", "16"],
    "sample": ["sample", "{d}/model.h5", "--n", "40", "--steps", "12"],
    "gan": ["gan", "{d}/data.h5", "--steps", "15", "--set", "g_width=8", "--set", "d_width=8",
            "--set", "batch=32"],
}
ORDER = ["simulate", "dataset", "train", "sample", "gan"]
PROVENANCE_FIELDS = ("nonequil_version", "numpy", "numba", "scipy", "h5py", "hdf5", "device",
                     "precision", "fastmath", "threading_layer", "threads", "seed",
                     "counter_layout", "command_line")

RUN_SCRIPT = r"""
import json, sys
from nonequil import cli
for argv in json.loads(sys.argv[1]):
    sys.argv = ["nonequil"] + argv          # what a shell invocation would hold
    rc = cli.main(argv)
    if rc:
        sys.exit(rc)
"""


def _argv(verb, d, seed, tag):
    a = [x.replace("{d}", str(d)) for x in COMMANDS[verb]]
    return a + ["--seed", str(seed), "--out", str(d / f"{verb}{tag}.h5"), "--quiet"]


def _all_argvs(d, seed, tag):
    return [_argv(v, d, seed, tag) for v in ORDER]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """seed 1 in-process ("a"), seed 2 in-process ("c"), seed 1 with 1 and 4 Numba threads
    in fresh processes ("t1", "t4").  The sample verb reads the model trained by the same
    batch of runs; the data file for train and gan is written once."""
    d = tmp_path_factory.mktemp("repro")
    assert cli.main(["dataset", "double-well", "--n", "200", "--seed", "9",
                     "--out", str(d / "data.h5"), "--quiet"]) == 0

    def fix(argvs, tag):
        # sample reads the model of its own batch
        for a in argvs:
            if a[0] == "sample":
                a[1] = str(d / f"train{tag}.h5")
        return argvs

    for seed, tag in ((1, "a"), (2, "c")):
        for a in fix(_all_argvs(d, seed, tag), tag):
            assert cli.main(a) == 0, a
    for n in (1, 4):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(n))
        argvs = fix(_all_argvs(d, 1, f"t{n}"), f"t{n}")
        res = subprocess.run([sys.executable, "-c", RUN_SCRIPT, json.dumps(argvs)], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return d


def _content(path):
    """{name: (dtype, shape, bytes) or attribute value} of everything outside /provenance."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if name == "provenance" or name.startswith("provenance/"):
                return
            if isinstance(obj, h5py.Dataset):
                a = obj[()]
                out[name] = (str(obj.dtype), obj.shape, np.asarray(a).tobytes())
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = np.asarray(v).tobytes() if not isinstance(v, str) else v
        for k, v in f.attrs.items():
            out[f"@{k}"] = np.asarray(v).tobytes() if not isinstance(v, str) else v
        f.visititems(visit)
    return out


def _datasets(c):
    return {k: v for k, v in c.items() if "@" not in k}


def _differs(a, b):
    """Names of the entries that differ (paths of the output files themselves excepted)."""
    keys = set(a) | set(b)
    return sorted(k for k in keys if a.get(k) != b.get(k))


@pytest.mark.parametrize("verb", ORDER)
def test_same_seed_same_bytes_at_1_2_4_threads(runs, verb):
    a = _content(runs / f"{verb}a.h5")
    assert _datasets(a), f"{verb}: no datasets"
    for tag in ("t1", "t4"):
        b = _content(runs / f"{verb}{tag}.h5")
        bad = [k for k in _differs(a, b)
               if not (isinstance(a.get(k), str) and str(runs) in a.get(k, ""))]
        assert not bad, f"{verb} ({tag}): {bad}"


@pytest.mark.parametrize("verb", ORDER)
def test_different_seed_different_data(runs, verb):
    a = _datasets(_content(runs / f"{verb}a.h5"))
    c = _datasets(_content(runs / f"{verb}c.h5"))
    assert a.keys() == c.keys()
    changed = [k for k in a if a[k][2] != c[k][2]]
    assert changed, f"{verb}: seed 2 gave the same bytes as seed 1"


@pytest.mark.parametrize("verb", ORDER)
def test_provenance_has_every_field(runs, verb):
    for tag, threads in (("t1", 1), ("t4", 4)):
        with h5py.File(runs / f"{verb}{tag}.h5", "r") as f:
            assert "provenance" in f, verb
            p = dict(f["provenance"].attrs)
        missing = [k for k in PROVENANCE_FIELDS if k not in p]
        assert not missing, f"{verb}: provenance lacks {missing}"
        assert int(p["threads"]) == threads, (verb, p["threads"])
        assert str(p["seed"]) == "1", (verb, p["seed"])
        assert p["fastmath"] == "off"
        assert p["device"] == "cpu"
        assert p["threading_layer"] in ("omp", "tbb", "workqueue"), p["threading_layer"]
        assert "philox4x32-10" in str(p["counter_layout"])
        assert str(p["command_line"]).startswith(f"nonequil {verb} "), p["command_line"]
        assert "--seed 1" in str(p["command_line"]), p["command_line"]
        assert json.loads(p["configuration"])
