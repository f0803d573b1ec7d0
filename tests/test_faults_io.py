"""Checkpoint corruption, disk full and a second writer (issue 9 "Faults").

- A corrupted (bit-flipped) or truncated newest checkpoint of ``train`` is detected by its
  sha256 and the previous one is used with a warning; with both damaged the run restarts
  from step 0 with a warning.  Either way the finished model is bitwise that of an
  uninterrupted run.  (The same for ``simulate`` is in tests/test_resume.py.)
- Disk full: a checkpoint whose fsync fails with ENOSPC, an HDF5 append that fails with
  ENOSPC (both injected by tests/_faults.py), a real full tmpfs (where this process may
  mount one), and a file-size limit (RLIMIT_FSIZE: writes fail with EFBIG, portable) each
  give one ``error:`` line naming the file, a non-zero exit, no traceback and no ``--out``;
  the last checkpoint and the committed frames are intact, no temporary file is left, and
  ``--resume`` after the space is back finishes bitwise equal to an uninterrupted run.
- A second writer on the same ``--out`` (``train``; ``simulate`` is in
  tests/test_cli_simulate.py) is refused with one error line and leaves the first writer's
  files alone.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from nonequil.store import OutputLock, read_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = [sys.executable, "-m", "tests._faults"]
CLI = [sys.executable, "-m", "nonequil.cli"]
TIMEOUT = 600
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

SIM = ["simulate", "--process", "langevin", "--potential", "double-well", "--set", "b=0:1",
       "--x0", "-1", "--walkers", "1001", "--steps", "1200", "--dt", "1e-3",
       "--record-every", "20", "--seed", "11"]
SIM_SPEC = {"max_chunk_steps": 200}
TRAIN = ["--steps", "30", "--set", "width=16", "--set", "depth=2", "--batch", "32",
         "--threads", "1", "--seed", "4", "--checkpoint-every", "1e-9"]


def _run(argv, out, spec=None, resume=False, preexec=None, cwd=ROOT):
    cmd = (FAULTS + [json.dumps(spec)] if spec is not None else CLI) + list(argv) + \
        ["--out", str(out), "--quiet"] + (["--resume"] if resume else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=ENV,
                          cwd=cwd, preexec_fn=preexec)


def _one_error_line(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _datasets(path, group=None):
    out = {}
    with h5py.File(path, "r") as f:
        root = f[group] if group else f
        root.visititems(lambda n, o: out.__setitem__(n, o[()])
                        if isinstance(o, h5py.Dataset) else None)
    if not group:
        out = {k: v for k, v in out.items() if k.startswith(("particles", "observables"))}
    return out


def _assert_same(a, b, what):
    assert sorted(a) == sorted(b), what
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), f"{what}: {k}"


def _partial_files(out):
    p = f"{out}.partial"
    return [x for x in os.listdir(os.path.dirname(p))
            if x.startswith(os.path.basename(p))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults_io")
    rng = np.random.default_rng(9)
    with h5py.File(d / "data.h5", "w") as f:
        f["samples"] = rng.normal(0.5, 1.5, (200, 2))
    r = _run(SIM, d / "sim-ref.h5", dict(SIM_SPEC, count=str(d / "sim-counts.json")))
    assert r.returncode == 0, r.stderr
    r = _run(["train", str(d / "data.h5")] + TRAIN, d / "train-ref.h5")
    assert r.returncode == 0, r.stderr
    return d


# ------------------------------------------------------------------ corrupt checkpoints
def _flip(path, n=16):
    blob = bytearray(open(path, "rb").read())
    for i in range(n):                     # in the payload, past the magic and the digest
        j = len(blob) // 2 + 37 * i
        blob[j] ^= 0x5A
    open(path, "wb").write(bytes(blob))


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size * 2 // 3)


@pytest.fixture(scope="module")
def killed_training(inputs):
    """A training run SIGKILLed at the entry of step 20 (checkpoints at 18 and 19)."""
    out = inputs / "killed" / "m.h5"
    out.parent.mkdir()
    r = _run(["train", str(inputs / "data.h5")] + TRAIN, out,
             {"kill": {"at": "call", "n": 20, "target": "nonequil.train:_Trainer.step"}})
    assert r.returncode == -signal.SIGKILL, r.stderr
    return out


@pytest.mark.parametrize("damage,expect", [
    ("flip-newest", "previous"), ("truncate-newest", "previous"),
    ("flip-both", "restart"), ("truncate-both", "restart")])
def test_train_corrupt_checkpoint_is_detected(inputs, killed_training, tmp_path, damage,
                                              expect):
    """Damage the checkpoint(s) of a killed training run and resume: the checksum rejects
    the damaged one with a warning, the previous one (or step 0) is used, and the model is
    bitwise that of the uninterrupted run."""
    out = tmp_path / "m.h5"
    argv = ["train", str(inputs / "data.h5")] + TRAIN
    for x in os.listdir(killed_training.parent):
        shutil.copy(killed_training.parent / x, tmp_path / x)
    ckpt = f"{out}.partial.ckpt"
    assert read_checkpoint(ckpt)[0]["step"] == 19
    assert read_checkpoint(ckpt + ".prev")[0]["step"] == 18
    how = _flip if damage.startswith("flip") else _truncate
    how(ckpt)
    if damage.endswith("both"):
        how(ckpt + ".prev")
    warnings = []
    got = read_checkpoint(ckpt, warnings.append)
    assert any("checksum mismatch" in w or "unusable" in w for w in warnings), warnings
    if expect == "previous":
        assert got[0]["step"] == 18
    else:
        assert got is None
    r = _run(argv, out, resume=True)
    assert r.returncode == 0, r.stderr
    assert "checksum mismatch (corrupt or truncated)" in r.stderr, r.stderr
    if expect == "previous":
        assert "using the previous checkpoint" in r.stderr, r.stderr
        assert "restarting from step 0" not in r.stderr, r.stderr
    else:
        assert "restarting from step 0" in r.stderr, r.stderr
    _assert_same(_datasets(out, "model"), _datasets(inputs / "train-ref.h5", "model"), damage)


# ------------------------------------------------------------------ disk full
def _check_kept(out, ref, what):
    """After a failed write: no --out, no temporary checkpoint; the newest checkpoint is
    readable without warnings, and the partial file holds its frames, bitwise."""
    assert not os.path.exists(out), what
    left = _partial_files(out)
    assert not [x for x in left if ".tmp" in x], f"{what}: temporary files left: {left}"
    warnings = []
    meta, _ = read_checkpoint(f"{out}.partial.ckpt", warnings.append)
    assert not warnings, warnings
    frames = int(meta.get("frames", 0))
    if frames:
        got = _datasets(f"{out}.partial")
        for k, a in ref.items():
            assert got[k][:frames].tobytes() == a[:frames].tobytes(), f"{what}: {k}"
    return meta


@pytest.mark.parametrize("verb,at,n", [("simulate", "ckpt", 3), ("simulate", "append", 4),
                                        ("train", "ckpt", 12)])
def test_disk_full_is_a_clear_error_and_keeps_the_last_checkpoint(inputs, tmp_path, verb, at,
                                                                  n):
    """ENOSPC injected at the n-th checkpoint fsync or the n-th HDF5 append."""
    out = tmp_path / "run.h5"
    if verb == "simulate":
        argv, spec, ref = SIM, dict(SIM_SPEC), _datasets(inputs / "sim-ref.h5")
        ref_path, group = inputs / "sim-ref.h5", None
    else:
        argv, spec = ["train", str(inputs / "data.h5")] + TRAIN, {}
        ref, ref_path, group = {}, inputs / "train-ref.h5", "model"
    r = _run(argv, out, dict(spec, enospc={"at": at, "n": n}))
    assert r.returncode == 1, r.stderr
    target = f"{out}.partial.ckpt" if at == "ckpt" else f"{out}.partial"
    _one_error_line(r, "cannot ", f"{target}:", "the disk is full", "--resume")
    meta = _check_kept(out, ref, f"{verb}/{at}")
    if verb == "train":
        assert meta["step"] == n - 2         # checkpoints at steps 0, 1, ..: the last good
    r = _run(argv, out, resume=True)         # the space is back
    assert r.returncode == 0, r.stderr
    assert "restarting from step 0" not in r.stderr, r.stderr
    _assert_same(_datasets(out, group), _datasets(ref_path, group), f"{verb}/{at}")


def _can_mount_tmpfs(d):
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode:
        return False
    subprocess.run(["umount", str(d)], check=True)
    return True


def test_real_disk_full_on_a_small_tmpfs(inputs, tmp_path):
    """A real ENOSPC from a 1.2 MB tmpfs (the trajectory needs about 2 MB): one error line
    naming the partial file, committed frames and checkpoint intact; after a remount with
    room, --resume finishes bitwise.  Needs root and mount(8); skipped elsewhere (the
    RLIMIT_FSIZE test below covers the same path without them)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "run.h5"
        r = _run(SIM, out, dict(SIM_SPEC))
        assert r.returncode == 1, r.stderr
        _one_error_line(r, f"{out}.partial", "the disk is full", "--resume")
        _check_kept(out, _datasets(inputs / "sim-ref.h5"), "tmpfs")
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        r = _run(SIM, out, resume=True)
        assert r.returncode == 0, r.stderr
        assert "restarting from step 0" not in r.stderr, r.stderr
        _assert_same(_datasets(out), _datasets(inputs / "sim-ref.h5"), "tmpfs")
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def _fsize_limit(nbytes):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)    # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))
    return limit


def test_file_size_limit_is_a_clear_error(inputs, tmp_path):
    """RLIMIT_FSIZE = 1 MB (the trajectory needs about 2 MB): the HDF5 append that crosses
    it fails with EFBIG inside the write call (no chunk cache), giving one error line naming
    the partial file; the committed frames and the checkpoint are intact, and --resume
    without the limit finishes bitwise."""
    out = tmp_path / "run.h5"
    r = _run(SIM, out, dict(SIM_SPEC), preexec=_fsize_limit(1 << 20))
    assert r.returncode == 1, r.stderr
    _one_error_line(r, "cannot append", f"{out}.partial:", "--resume")
    _check_kept(out, _datasets(inputs / "sim-ref.h5"), "fsize")
    r = _run(SIM, out, resume=True)
    assert r.returncode == 0, r.stderr
    _assert_same(_datasets(out), _datasets(inputs / "sim-ref.h5"), "fsize")


# ------------------------------------------------------------------ second writer
def test_train_second_writer_is_refused(inputs, tmp_path, capsys):
    """While another writer holds OUT.partial.lock (flock: a second open file description
    conflicts even in this process), train with and without --resume is refused with one
    error line, and the holder's files are untouched."""
    from nonequil import cli

    out = tmp_path / "m.h5"
    partial = f"{out}.partial"
    with open(partial, "wb") as fh:
        fh.write(b"first writer's bytes")
    lock = OutputLock(partial + ".lock", str(out))
    try:
        for resume in (False, True):
            capsys.readouterr()
            code = cli.main(["train", str(inputs / "data.h5")] + TRAIN + ["--out", str(out)]
                            + (["--resume"] if resume else []))
            err = capsys.readouterr().err
            assert code == 2, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            assert "another process is writing" in lines[0] and str(out) in lines[0]
            assert open(partial, "rb").read() == b"first writer's bytes"
            assert not out.exists()
    finally:
        lock.release()


def test_dataset_write_failure_is_a_clear_error(tmp_path):
    """``dataset`` under a 1 MB file-size limit (the sample set needs 1.2 MB): one error line
    naming --out, a non-zero exit, and neither OUT nor OUT.partial left."""
    out = tmp_path / "d.h5"
    r = _run(["dataset", "double-well", "--n", "150000"], out, preexec=_fsize_limit(1 << 20),
             cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    _one_error_line(r, "cannot write", str(out), "run it again")
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)
