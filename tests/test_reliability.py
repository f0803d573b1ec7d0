"""SIGKILL trials at exact points, for every verb that writes a file (issue 9 "Faults").

Each trial runs the CLI in a subprocess through ``tests/_faults.py``, which SIGKILLs the
process itself at an exact, seeded point of the run (no timing): before the first
checkpoint, at the entry of the N-th checkpoint, with the N-th checkpoint's temporary file
half written (a torn write), between the two renames of the N-th checkpoint (only ``.prev``
on disk), inside the N-th HDF5 append after its K-th dataset write (before the flush; N = 1
is while the file is being created), at the entry of the N-th compute chunk or training
step, inside the final model write, and right after the final rename.  N and K are drawn
from ``random.Random(seed)`` over the number of such points that the uninterrupted
reference run has (counted by the same harness).  Some trials kill the resumed run a second
time.

After every kill: the partial output file opens with h5py (no h5clear) and holds every
frame the checkpoint reports as committed, equal bit for bit to the reference run's frames
(``simulate``); a usable checkpoint, if one is left, is continued from (the resume must not
restart from step 0).  Then ``--resume`` (plain CLI, default chunking -- so the resumed run
is also chunked differently from the killed one) runs to completion, and every dataset of
the result (trajectory, observables; model weights, EMA, Adam state and losses) is bitwise
identical to the uninterrupted run's, and no partial, checkpoint or lock file is left.

Adding a verb is one entry in ``VERBS`` (its arguments, the
datasets to compare, its compute function for ``call`` kills) plus rows in ``TRIALS``.
Time-based kills of long ``simulate`` runs are in tests/test_resume.py; checkpoint
corruption, disk full and a second writer are in tests/test_faults_io.py.
"""
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from nonequil.store import read_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = [sys.executable, "-m", "tests._faults"]
CLI = [sys.executable, "-m", "nonequil.cli"]
TIMEOUT = 600            # a cold Numba cache on a loaded 2-core machine compiles for a while
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


# ------------------------------------------------------------------ verbs
def _series(path):
    """Every dataset under /particles and /observables: name -> array."""
    out = {}
    with h5py.File(path, "r") as f:
        for grp in ("particles", "observables"):
            if grp in f:
                f[grp].visititems(lambda n, o, g=grp: out.__setitem__(f"{g}/{n}", o[()])
                                  if isinstance(o, h5py.Dataset) else None)
    return out


def _model(path):
    """Every dataset of the /model group (weights, EMA, Adam moments, losses, ...)."""
    out = {}
    with h5py.File(path, "r") as f:
        f["model"].visititems(lambda n, o: out.__setitem__(n, o[()])
                              if isinstance(o, h5py.Dataset) else None)
        out["@step"] = np.asarray(f["model"].attrs.get("step", -1))
    return out


def _files(out):
    p = f"{out}.partial"
    return p, p + ".ckpt", p + ".ckpt.prev", p + ".lock"


def _check_simulate_kill(out, ref, what):
    """The partial file opens without h5clear and holds the committed frames (bitwise)."""
    partial, ckpt, _, _ = _files(out)
    got = read_checkpoint(ckpt)           # newest, else .prev: what --resume will read
    if not os.path.exists(partial):
        assert got is None, f"{what}: a checkpoint without its partial file"
        return False
    try:
        data = _series(partial)
    except OSError as e:
        raise AssertionError(f"{what}: the killed partial file does not open without "
                             f"h5clear: {e}") from None
    if got is None:
        return False
    frames = int(got[0]["frames"])
    assert data, f"{what}: a checkpoint at step {got[0]['step']} but an empty partial file"
    for k, a in data.items():
        b = ref[k][:frames]
        assert a.shape[0] >= frames, (f"{what}: {k} holds {a.shape[0]} frames, the checkpoint "
                                      f"reports {frames} as written")
        assert a[:frames].dtype == b.dtype and a[:frames].tobytes() == b.tobytes(), \
            f"{what}: committed frames of {k} differ from the uninterrupted run"
    return True


def _check_train_kill(out, ref, what):
    """The partial file (if any) opens without h5clear; the checkpoint's step is sane."""
    partial, ckpt, _, _ = _files(out)
    got = read_checkpoint(ckpt)
    if os.path.exists(partial):
        try:
            with h5py.File(partial, "r"):
                pass
        except OSError as e:
            raise AssertionError(f"{what}: the killed partial file does not open without "
                                 f"h5clear: {e}") from None
    if got is None:
        return False
    step = int(got[0]["step"])
    assert 0 <= step <= int(ref["@step"]), f"{what}: checkpoint step {step}"
    assert got[1]["loss"].tobytes() == ref["loss"][:step].tobytes(), \
        f"{what}: the checkpoint's losses differ from the uninterrupted run's"
    return True


def _check_gan_kill(out, ref, what):
    """As for train: the partial file opens; the checkpoint's logged diagnostics are the
    uninterrupted run's first ``step`` entries, bit for bit."""
    partial, ckpt, _, _ = _files(out)
    if os.path.exists(partial):
        try:
            with h5py.File(partial, "r"):
                pass
        except OSError as e:
            raise AssertionError(f"{what}: the killed partial file does not open without "
                                 f"h5clear: {e}") from None
    got = read_checkpoint(ckpt)
    if got is None:
        return False
    step = int(got[0]["step"])
    assert 0 <= step <= int(ref["@step"]), f"{what}: checkpoint step {step}"
    for k in ("value", "d_real", "d_fake"):
        assert got[1]["log_" + k].tobytes() == ref["log/" + k][:step].tobytes(), \
            f"{what}: the checkpoint's {k} log differs from the uninterrupted run's"
    return True


@dataclasses.dataclass
class Verb:
    """One verb under test: how to run it and what must be bitwise identical."""
    argv: object            # inputs dir -> CLI argv (without --out / --resume)
    read: object            # path -> {name: array}: compared bit for bit
    check_kill: object      # (out, ref, what) -> True if a usable checkpoint was left
    calls: tuple = ()       # compute functions counted for ``call`` kills
    spec: dict = dataclasses.field(default_factory=dict)   # fixed faults-harness options
    append_writes: int = 0  # dataset writes per HDF5 append (``append`` kills)


DW = ["simulate", "--process", "langevin", "--potential", "double-well", "--set", "b=0:1",
      "--x0", "-1", "--walkers", "64", "--steps", "600", "--dt", "1e-3", "--record-every",
      "20", "--seed", "11"]
UD = ["simulate", "--process", "underdamped", "--potential", "muller-brown",
      "--x0", "-0.55,1.44", "--walkers", "33", "--steps", "500", "--dt", "1e-3",
      "--record-every", "25", "--seed", "5", "--first-walker", "7"]
TRAIN = ["--steps", "40", "--set", "width=16", "--set", "depth=2", "--batch", "32",
         "--threads", "1", "--seed", "4", "--checkpoint-every", "1e-9"]

GAN = ["--steps", "40", "--set", "g_width=16", "--set", "d_width=16", "--batch", "32",
       "--threads", "1", "--seed", "4", "--checkpoint-every", "1e-9"]

VERBS = {
    # 4 groups (position, energy, work, heat) x (value, step, time)
    "simulate-dw": Verb(lambda d: DW, _series, _check_simulate_kill,
                        ("nonequil.simulate:_run_chunk",), {"max_chunk_steps": 100}, 12),
    # position, velocity, energy, heat
    "simulate-ud": Verb(lambda d: UD, _series, _check_simulate_kill,
                        ("nonequil.simulate:_run_chunk",), {"max_chunk_steps": 70}, 12),
    # a checkpoint after every step (--checkpoint-every 1e-9)
    "train": Verb(lambda d: ["train", str(d / "data.h5")] + TRAIN, _model, _check_train_kill,
                  ("nonequil.train:_Trainer.step", "nonequil.models:MLPScoreModel.save")),
    # generator and discriminator weights, EMA, Adam moments, logs; a checkpoint every step
    "gan": Verb(lambda d: ["gan", str(d / "data.h5")] + GAN, _model, _check_gan_kill,
                ("nonequil.gan_train:_GANTrainer.step", "nonequil.gan:GANModel.save")),
}

# (verb, kill points, seed).  A point is (at, n, k): n/k None = drawn from the seeded rng over
# the reference run's count; a second point kills the resumed run.
TRIALS = [
    ("simulate-dw", [("ckpt-enter", 1, None)], 1),          # before the first checkpoint
    ("simulate-dw", [("append", 1, None)], 2),              # creating the file (frame 0)
    ("simulate-dw", [("append", None, None)], 3),           # during an HDF5 append
    ("simulate-dw", [("append", None, 12)], 4),             # append written, not flushed
    ("simulate-dw", [("ckpt-torn", None, None)], 5),        # during a checkpoint write
    ("simulate-dw", [("ckpt-between", None, None)], 6),     # between the checkpoint renames
    ("simulate-dw", [("call", None, None)], 7),             # inside a compute chunk
    ("simulate-dw", [("rename-out", None, None)], 8),       # after the final rename
    ("simulate-dw", [("append", None, None), ("ckpt-torn", 2, None)], 9),
    ("simulate-ud", [("ckpt-enter", 1, None)], 10),
    ("simulate-ud", [("append", None, None)], 11),
    ("simulate-ud", [("ckpt-torn", None, None)], 12),
    ("simulate-ud", [("ckpt-between", None, None), ("append", 2, None)], 13),
    ("train", [("ckpt-enter", 1, None)], 20),                # before the first checkpoint
    ("train", [("ckpt-torn", None, None)], 21),
    ("train", [("ckpt-between", None, None)], 22),
    ("train", [("call", None, None)], 23),                   # inside a training step
    ("train", [("call", None, None), ("call", None, None)], 24),
    ("train", [("ckpt-torn", 1, None)], 25),                 # the first checkpoint torn
    ("train", [("call-save", 1, None)], 26),                # inside the final model write
    ("train", [("rename-out", None, None)], 27),
    ("gan", [("ckpt-enter", 1, None)], 30),                  # before the first checkpoint
    ("gan", [("ckpt-torn", None, None)], 31),                # during a checkpoint write
    ("gan", [("call", None, None)], 32),                     # inside a training step
    ("gan", [("call-save", 1, None)], 33),                   # inside the final model write
]


# More trials on demand: NONEQUIL_KILL_TRIALS=N adds N seeded random trials (a random verb,
# one or two random points), e.g.  NONEQUIL_KILL_TRIALS=200 pytest -m slow
# tests/test_reliability.py -k extra
_POINTS = ["ckpt-enter", "ckpt-torn", "ckpt-between", "append", "call", "rename-out"]


def _extra_trials(n, seed=4242):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        verb = rng.choice(sorted(VERBS))
        pts = [p for p in _POINTS if p != "append" or VERBS[verb].append_writes]
        k = 1 if rng.random() < 0.7 else 2
        chosen = [(rng.choice(pts), None, None) for _ in range(k)]
        if chosen[0][0] == "rename-out":
            chosen = chosen[:1]
        rows.append((verb, chosen, 1000 + i))
    return rows


EXTRA = _extra_trials(int(os.environ.get("NONEQUIL_KILL_TRIALS", "0") or 0))


# ------------------------------------------------------------------ harness
def _run(argv, out, spec=None, resume=False):
    cmd = (FAULTS + [json.dumps(spec)] if spec is not None else CLI) + list(argv) + \
        ["--out", str(out), "--quiet"] + (["--resume"] if resume else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=ENV,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("reliability")
    rng = np.random.default_rng(9)
    with h5py.File(d / "data.h5", "w") as f:
        f["samples"] = np.concatenate([rng.normal(-1.0, 0.3, (128, 2)),
                                       rng.normal(1.0, 0.5, (128, 2))])
    return d


@pytest.fixture(scope="module")
def reference(inputs):
    """reference(verb) -> (data, counts): the uninterrupted run and its fault points."""
    cache = {}

    def get(name):
        if name not in cache:
            v = VERBS[name]
            out = inputs / f"ref-{name}.h5"
            counts = inputs / f"counts-{name}.json"
            spec = dict(v.spec, count=str(counts), count_calls=list(v.calls))
            r = _run(v.argv(inputs), out, spec)
            assert r.returncode == 0, r.stderr
            cache[name] = (v.read(out), json.loads(counts.read_text()))
        return cache[name]
    return get


def _point(verb, at, n, k, counts, rng, first):
    """The kill spec of one point; n is drawn over the reference run's count where None."""
    v = VERBS[verb]
    kill = {"at": at}
    if at == "call-save":
        return {"at": "call", "n": 1, "target": v.calls[1]}
    if at == "call":
        kill["target"] = v.calls[0]
        total = counts[v.calls[0]]
    elif at == "append":
        total = counts["append"]
        kill["k"] = k or rng.randint(1, v.append_writes)
    elif at.startswith("ckpt"):
        total = counts["ckpt"]
    else:
        return kill
    lo = 2 if at == "ckpt-between" else 1
    if first:
        kill["n"] = n or rng.randint(lo, total)
    else:       # the resumed run has fewer points left: stay early
        kill["n"] = n or rng.randint(lo, max(lo, total // 4))
    return kill


def _ids():
    rows = [t.values if hasattr(t, "values") else t for t in TRIALS]
    return [f"{v}-{'+'.join(p[0] for p in pts)}-{s}" for v, pts, s in rows]


def _rows():
    return [t.values if hasattr(t, "values") else t for t in TRIALS]


@pytest.mark.slow
@pytest.mark.parametrize("verb,points,seed", TRIALS, ids=_ids())
def test_sigkill_at_a_point_then_resume_is_bitwise(reference, inputs, tmp_path, verb, points,
                                                   seed):
    _trial(reference, inputs, tmp_path, verb, points, seed)


@pytest.mark.slow
@pytest.mark.parametrize("verb,points,seed", EXTRA,
                         ids=[f"extra-{v}-{'+'.join(p[0] for p in pts)}-{s}"
                              for v, pts, s in EXTRA])
def test_extra_random_kill_trials(reference, inputs, tmp_path, verb, points, seed):
    """Only with NONEQUIL_KILL_TRIALS=N (N seeded random trials)."""
    _trial(reference, inputs, tmp_path, verb, points, seed)


def _trial(reference, inputs, tmp_path, verb, points, seed):
    v = VERBS[verb]
    ref, counts = reference(verb)
    rng = random.Random(90210 + seed)
    out = tmp_path / "run.h5"
    argv = v.argv(inputs)
    continued, kills, what = False, 0, verb
    for i, (at, n, k) in enumerate(points):
        if out.exists():
            break
        kill = _point(verb, at, n, k, counts, rng, first=i == 0)
        what += f" [{json.dumps(kill)}]"
        r = _run(argv, out, dict(v.spec, kill=kill), resume=i > 0)
        assert "Traceback" not in r.stderr and "error" not in r.stderr, f"{what}: {r.stderr}"
        if continued:
            assert "restarting from step 0" not in r.stderr, \
                f"{what}: a usable checkpoint was left but the resume restarted: {r.stderr}"
        if i == 0:
            assert r.returncode == -signal.SIGKILL, f"{what}: not killed ({r.returncode})"
        elif r.returncode != -signal.SIGKILL:
            assert r.returncode == 0, f"{what}: {r.stderr}"
            continue    # the resumed run had fewer points than drawn: it completed
        kills += 1
        if not out.exists():        # else: killed after the final rename, nothing to resume
            continued = v.check_kill(out, ref, what)
    assert kills >= 1
    done_by_kill = out.exists()
    if not done_by_kill:
        r = _run(argv, out, resume=True)
        assert r.returncode == 0, f"{what}: the resume failed: {r.stderr}"
        assert "Traceback" not in r.stderr and "error" not in r.stderr, r.stderr
        if continued:
            assert "restarting from step 0" not in r.stderr, \
                f"{what}: a usable checkpoint was left but the resume restarted: {r.stderr}"
        for p in _files(out):
            assert not os.path.exists(p), f"{what}: {p} left after a completed run"
    got = v.read(out)
    assert sorted(got) == sorted(ref), f"{what}: datasets {sorted(got)} vs {sorted(ref)}"
    for name, a in ref.items():
        b = got[name]
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), \
            f"{what}: {name} is not bitwise identical to the uninterrupted run"


def test_at_least_twenty_kill_trials_over_simulate_and_train():
    assert len(TRIALS) >= 20
    assert {v for v, _, _ in _rows()} == set(VERBS)
    at = {p[0] for _, pts, _ in _rows() for p in pts}
    assert {"ckpt-enter", "ckpt-torn", "ckpt-between", "append", "call"} <= at
