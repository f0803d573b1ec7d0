"""Fault injection for the reliability suite (tests/test_reliability.py, issue 9 "Faults").

Run the ``nonequil`` command with a SIGKILL (or a failing write) at an exact point::

    python -m tests._faults SPEC_JSON VERB ARGS...

``SPEC_JSON`` is a JSON object:

- ``"kill": {"at": POINT, "n": N, "k": K, "target": "module:Qual.name"}`` SIGKILLs the
  process itself at the N-th (1-based) occurrence of POINT:

  ``ckpt-enter``    entry of the N-th ``store.write_checkpoint`` (nothing of it written);
                    N = 1 is before the first checkpoint
  ``ckpt-torn``     the N-th checkpoint's temporary file is cut to half its length (a torn
                    write), then the kill, before its fsync and renames
  ``ckpt-between``  the N-th checkpoint has moved the old one to ``.prev`` but not yet
                    renamed the new one into place (no newest checkpoint on disk); N >= 2
  ``append``        inside the N-th ``H5MDWriter.append``, right after its K-th dataset write
                    (value/step/time per group), before the flush; N = 1 is frame 0, written
                    while the file is still being created
  ``call``          entry of the N-th call of ``target`` (``nonequil.train:_Trainer.step``)
  ``rename-out``    right after the final rename ``OUT.partial`` -> ``OUT`` (before the
                    checkpoint is removed)

- ``"enospc": {"at": "ckpt" | "append", "n": N}`` makes the N-th checkpoint's fsync, or the
  N-th append's first dataset write, fail with ``OSError(ENOSPC)`` (disk full).
- ``"count": PATH`` writes the number of occurrences of each point (and of every ``count_calls``
  target) to PATH as JSON when the process exits normally.
- ``"count_calls": ["module:Qual.name", ...]``: targets counted for ``call`` kills.
- ``"max_chunk_steps": S`` runs ``simulate`` in chunks of exactly S steps (after the first),
  so that the number of appends and checkpoints is a function of the arguments only.

Everything is patched in the child process only; the library has no fault hooks.
"""
import atexit
import errno
import functools
import importlib
import json
import os
import signal
import sys

_COUNTS = {}
_STATE = {"ckpt": None, "append_left": None, "enospc_append": False}


def _bump(name):
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    return _COUNTS[name]


def die():
    """SIGKILL this process (no cleanup, no atexit, no buffered writes)."""
    os.kill(os.getpid(), signal.SIGKILL)


def _resolve(target):
    mod, _, qual = target.partition(":")
    obj = importlib.import_module(mod)
    parts = qual.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    return obj, parts[-1]


def _wrap_call(target, kill):
    owner, name = _resolve(target)
    orig = getattr(owner, name)

    @functools.wraps(orig)
    def wrapper(*a, **k):
        i = _bump(target)
        if kill and kill.get("at") == "call" and kill.get("target") == target and i == kill["n"]:
            die()
        return orig(*a, **k)
    setattr(owner, name, wrapper)


def install(spec):
    """Patch the store, os and h5py functions that the fault points of ``spec`` need."""
    import h5py

    from nonequil import store

    kill = spec.get("kill") or {}
    enospc = spec.get("enospc") or {}
    at = kill.get("at")

    orig_wc = store.write_checkpoint

    @functools.wraps(orig_wc)
    def write_checkpoint(path, meta, arrays):
        i = _bump("ckpt")
        if at == "ckpt-enter" and i == kill["n"]:
            die()
        if at in ("ckpt-torn", "ckpt-between") and i == kill["n"]:
            _STATE["ckpt"] = at
        if enospc.get("at") == "ckpt" and i == enospc["n"]:
            _STATE["ckpt"] = "enospc"
        try:
            return orig_wc(path, meta, arrays)
        finally:
            _STATE["ckpt"] = None
    store.write_checkpoint = write_checkpoint

    real_fsync = os.fsync

    def fsync(fd):
        mode = _STATE["ckpt"]
        if mode == "ckpt-torn":
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            die()
        if mode == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    os.fsync = fsync

    real_replace = os.replace

    def replace(src, dst, **kw):
        r = real_replace(src, dst, **kw)
        s, d = os.fspath(src), os.fspath(dst)
        if _STATE["ckpt"] == "ckpt-between" and d.endswith(".ckpt.prev"):
            die()
        if at == "rename-out" and s.endswith(".partial") and d == s[:-len(".partial")]:
            die()
        return r
    os.replace = replace

    orig_append = store.H5MDWriter.append

    @functools.wraps(orig_append)
    def append(self, *a, **k):
        i = _bump("append")
        if at == "append" and i == kill["n"]:
            _STATE["append_left"] = int(kill.get("k", 1))
        if enospc.get("at") == "append" and i == enospc["n"]:
            _STATE["enospc_append"] = True
        try:
            return orig_append(self, *a, **k)
        finally:
            _STATE["append_left"] = None
    store.H5MDWriter.append = append

    real_setitem = h5py.Dataset.__setitem__

    def setitem(self, key, value):
        if _STATE["enospc_append"]:
            _STATE["enospc_append"] = False
            raise OSError(errno.ENOSPC, "Can't write data (file write failed: "
                          f"errno = {errno.ENOSPC}, error message = 'No space left on device')")
        real_setitem(self, key, value)
        if _STATE["append_left"] is not None:
            _STATE["append_left"] -= 1
            if _STATE["append_left"] <= 0:
                die()
    h5py.Dataset.__setitem__ = setitem

    for target in spec.get("count_calls", ()):
        _wrap_call(target, kill)
    if at == "call" and kill["target"] not in spec.get("count_calls", ()):
        _wrap_call(kill["target"], kill)

    if spec.get("max_chunk_steps"):
        sim = importlib.import_module("nonequil.simulate")

        orig_sim = sim.simulate

        @functools.wraps(orig_sim)
        def simulate(*a, **k):
            k.setdefault("max_chunk_steps", int(spec["max_chunk_steps"]))
            k.setdefault("chunk_seconds", 1e9)
            return orig_sim(*a, **k)
        sim.simulate = simulate

    if spec.get("count"):
        def dump(path=spec["count"]):
            with open(path, "w") as fh:
                json.dump(_COUNTS, fh)
        atexit.register(dump)


def main(argv):
    spec = json.loads(argv[0])
    install(spec)
    from nonequil.cli import main as cli_main

    return cli_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
