"""HDF5 layouts: H5MD trajectories, sample sets, checkpoints, validation and provenance.

Trajectories (H5MD 1.1)::

    /h5md                                   attrs version=[1,1]; author/, creator/
    /particles/ensemble/box                 attrs dimension=D, boundary=["none"]*D
    /particles/ensemble/position/{value[T][M][D], step[T], time[T]}
    /particles/ensemble/velocity/...        underdamped runs
    /observables/<name>/{value[T][M], step[T], time[T]}   energy, work, heat,
                                                          first_passage_time
    /parameters                             attrs: process, potential, dt, kT, seed, ...
    /provenance                             attrs: versions, configuration, command line

Frames are appended in chunks (resizable, chunked datasets) and the file is flushed after
every append.  h5py's default libver, no SWMR: a killed writer leaves a file that reopens
without h5clear.  Time is ``step * dt`` from the integer step.

Files are opened without HDF5's chunk cache (``rdcc_nbytes=0``): every write reaches the
disk inside the call that makes it, so a failing write (a full disk) raises there, as a
``RunError`` naming the file, instead of surfacing later while HDF5 evicts its cache (where
h5py can only print it, and the process may crash on exit).  A disk-full error leaves the
frames committed so far and the last checkpoint intact.

Checkpoints are ``FILE.h5.ckpt``: a magic line, the sha256 of the payload, then an ``.npz``
payload.  They are written to a temporary file, fsynced and renamed; the previous one is
kept as ``.ckpt.prev`` and used (with a warning) when the newest is corrupt.
"""
import errno
import hashlib
import io
import json
import os
import re
import sys

import numpy as np

from . import _context
from .errors import InputError, RunError

CKPT_MAGIC = b"NONEQUIL-CKPT-1\n"
# HDF5 file options for every file nonequil writes: no chunk cache (see the module docstring)
H5_WRITE_OPTS = {"rdcc_nbytes": 0}


def write_failed(path, err, what="write to", resumable=True):
    """A ``RunError`` for a failed write (disk full, quota, I/O error) that names the file."""
    text = str(err)
    reason = (getattr(err, "strerror", None) or text).split(" (")[0].strip() or repr(err)
    m = re.search(r"error message = '([^']+)'", text)     # HDF5's errno text
    if m and m.group(1) not in reason:
        reason = f"{reason}: {m.group(1)}"
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or \
        "No space left" in text or "errno = 28" in text
    hint = "the disk is full: free space" if full else "fix the cause"
    then = ("then rerun with --resume (what was committed before, and the last checkpoint, "
            "are kept)" if resumable else "then run it again")
    return RunError(f"cannot {what} {path}: {reason}; {hint}, {then}")


def checkpoint_schedule(commit, seconds, steps, total):
    """``on_step(k)`` for a training loop: calls ``commit(k)`` when ``seconds`` have passed
    since the last commit, every ``steps`` steps (if given) and at the last step ``total``."""
    import time

    last = [time.perf_counter()]

    def on_step(k):
        if (time.perf_counter() - last[0] >= seconds or k == total
                or (steps and k % steps == 0)):
            commit(k)
            last[0] = time.perf_counter()
    return on_step


def checkpoint_differences(meta, ident, fp, batch, normals):
    """The fields in which a training checkpoint's ``meta`` differs from this run: config keys,
    ``data`` (its sha256 ``fp``), the effective ``batch`` and the Box-Muller ``normals``
    version (a checkpoint without one was written by version 1)."""
    old = meta.get("config", {})
    diff = sorted(k for k in set(ident) | set(old) if ident.get(k) != old.get(k))
    if meta.get("data") != fp:
        diff.append("data")
    if meta.get("batch") != batch:
        diff.append("batch (effective)")
    if meta.get("normals", 1) != normals:
        diff.append("normals (the checkpoint was written by another Box-Muller version)")
    return diff


def write_h5_replace(path, fill, resumable=True):
    """Write the HDF5 file ``path`` whole, or not at all: ``fill(f)`` writes into
    ``path + '.new'``, which is flushed, fsynced and renamed over ``path``.  A kill at any
    moment leaves either the old ``path`` or the new one, each a file h5py opens; a failed
    write (disk full) removes the temporary file and raises a ``RunError`` naming ``path``."""
    import h5py

    tmp = os.fspath(path) + ".new"
    try:
        with h5py.File(tmp, "w", **H5_WRITE_OPTS) as f:
            fill(f)
            f.flush()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, FileNotFoundError):
            raise write_failed(path, e, "write", resumable) from None
        raise


# ---------------------------------------------------------------- provenance
def provenance(config, device, precision, extra=None):
    """The provenance attributes every output file carries (DESIGN.md "Storage").

    Parameters
    ----------
    config : dict
        The full configuration of the run (stored as sorted JSON); its ``"seed"``, when
        present, is also stored on its own.
    device : str
        ``"cpu"`` or ``"cuda"``.
    precision : str
        ``"float64"`` or ``"float32"``.
    extra : dict, optional
        More attributes; they override the defaults.

    Returns
    -------
    dict
        Strings and numbers: the versions of nonequil, Python, NumPy, Numba, SciPy, h5py and
        HDF5, the platform, the configuration, the command line, the device, the precision,
        the fastmath flag of the compiled kernels, Numba's threading layer and thread count,
        the seed and the Philox counter layout.  Nothing here depends on the wall clock.
    """
    import platform

    import h5py
    import numba
    import scipy

    from kernels import philox
    from kernels._target import _OPTS

    from . import __version__

    d = {
        "nonequil_version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "platform": platform.platform(),
        "configuration": json.dumps(config, sort_keys=True, default=str),
        "command_line": _context.COMMAND_LINE or " ".join(sys.argv),
        "device": device,
        "precision": precision,
        "fastmath": "on" if _OPTS.get("fastmath") else "off",
        "threading_layer": _threading_layer(),
        "threads": int(numba.get_num_threads()),
        "seed": str(config.get("seed", "")) if isinstance(config, dict) else "",
        "counter_layout": "philox4x32-10 key=(seed lo, seed hi), counter=(walker or sample, "
                          "step, block, purpose); normals: Box-Muller version "
                          f"{philox.NORMALS_VERSION}; purposes: see kernels/philox.py",
    }
    if extra:
        d.update(extra)
    return d


def _threading_layer():
    """Numba's threading layer (``"omp"``, ``"tbb"`` or ``"workqueue"``), started if need be."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:              # not started yet: start it, so the name is the real one
        pass
    try:
        from numba.np.ufunc.parallel import _launch_threads

        _launch_threads()
        return numba.threading_layer()
    except Exception:  # noqa: BLE001 -- provenance must never fail a run
        return f"{numba.config.THREADING_LAYER} (not started)"


def write_attrs(group, attrs):
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = np.asarray(v)
        group.attrs[k] = v


# ---------------------------------------------------------------- H5MD writer
class H5MDWriter:
    """Append-only H5MD trajectory writer (one open file, flushed after each append)."""

    def __init__(self, h5, M, D, dt, velocity=False, observables=(), dtype=np.float64):
        self.f = h5
        self.M, self.D, self.dt = M, D, dt
        self.obs = tuple(observables)
        self.velocity = velocity
        self.dtype = dtype

    @classmethod
    def create(cls, path, M, D, dt, *, velocity, observables, dtype, parameters, prov):
        import h5py

        f = h5py.File(path, "w", **H5_WRITE_OPTS)
        try:
            return cls._build(f, path, M, D, dt, velocity, observables, dtype, parameters, prov)
        except (OSError, RuntimeError) as e:
            _close_quietly(f)
            raise write_failed(path, e, "create") from None

    @classmethod
    def _build(cls, f, path, M, D, dt, velocity, observables, dtype, parameters, prov):
        h = f.create_group("h5md")
        h.attrs["version"] = np.array([1, 1], dtype=np.int32)
        h.create_group("author").attrs["name"] = "nonequil user"
        from . import __version__

        c = h.create_group("creator")
        c.attrs["name"] = "nonequil"
        c.attrs["version"] = __version__
        ens = f.create_group("particles/ensemble")
        box = ens.create_group("box")
        box.attrs["dimension"] = np.int32(D)
        box.attrs["boundary"] = np.array(["none"] * D, dtype="S4")
        rows = max(1, min(M, (1 << 17) // max(D, 1)))
        for name in ["position"] + (["velocity"] if velocity else []):
            g = ens.create_group(name)
            g.create_dataset("value", shape=(0, M, D), maxshape=(None, M, D), dtype=dtype,
                             chunks=(1, rows, D))
            cls._time(g)
        rows = max(1, min(M, 1 << 17))
        for name in observables:
            g = f.create_group(f"observables/{name}")
            g.create_dataset("value", shape=(0, M), maxshape=(None, M), dtype=np.float64,
                             chunks=(1, rows))
            cls._time(g)
        write_attrs(f.create_group("parameters"), parameters)
        write_attrs(f.create_group("provenance"), prov)
        f.flush()
        return cls(f, M, D, dt, velocity, observables, dtype)

    @staticmethod
    def _time(g):
        g.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        g.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(4096,))

    @classmethod
    def reopen(cls, path, frames):
        """Open an existing partial file and truncate every time series to ``frames``."""
        import h5py

        f = h5py.File(path, "r+", **H5_WRITE_OPTS)
        pos = f["particles/ensemble/position/value"]
        M, D = pos.shape[1], pos.shape[2]
        if pos.shape[0] < frames:
            f.close()
            raise OSError(f"{path} holds {pos.shape[0]} frames, the checkpoint {frames}")
        obs = tuple(f["observables"].keys()) if "observables" in f else ()
        w = cls(f, M, D, float(f["parameters"].attrs["dt"]),
                "velocity" in f["particles/ensemble"], obs, pos.dtype)
        for g in w._groups():
            for k in ("value", "step", "time"):
                g[k].resize(frames, axis=0)
        f.flush()
        return w

    def _groups(self):
        gs = [self.f["particles/ensemble/position"]]
        if self.velocity:
            gs.append(self.f["particles/ensemble/velocity"])
        gs += [self.f[f"observables/{n}"] for n in self.obs]
        return gs

    @property
    def frames(self):
        return self.f["particles/ensemble/position/value"].shape[0]

    def append(self, steps, position, velocity=None, observables=None):
        """Append frames: steps[R], position[R,M,D], observables name -> [R,M]; then flush."""
        R = len(steps)
        if R == 0:
            return
        steps = np.asarray(steps, dtype=np.int64)
        t = steps * self.dt
        data = [position] + ([velocity] if self.velocity else [])
        data += [observables[n] for n in self.obs]
        try:
            for g, arr in zip(self._groups(), data):
                n0 = g["value"].shape[0]
                for k in ("value", "step", "time"):
                    g[k].resize(n0 + R, axis=0)
                g["value"][n0:] = arr
                g["step"][n0:] = steps
                g["time"][n0:] = t
            self.f.flush()
        except (OSError, RuntimeError) as e:
            _detach(self.f)
            raise write_failed(self._path(), e, f"append {R} frame(s) to") from None

    def _path(self):
        """The file's current name (it may have been renamed from ``NAME.new`` since)."""
        p = self.f.filename
        if not os.path.exists(p) and p.endswith(".new") and os.path.exists(p[:-4]):
            return p[:-4]
        return p

    def close(self):
        """Close the file; a failing final flush (disk full) is a ``RunError``, not a file
        that is renamed into place half written."""
        if not self.f.id.valid:
            return
        if getattr(self.f, "_nonequil_detached", False):     # after a failed append
            _close_quietly(self.f)
            return
        path = self._path()
        try:
            self.f.flush()
        except (OSError, RuntimeError) as e:
            _detach(self.f)
            _close_quietly(self.f)
            raise write_failed(path, e, "close") from None
        self.f.close()


def _detach(f):
    """After a failed write, send everything HDF5 still writes to this file (its metadata
    cache and superblock at close) to /dev/null: the file on disk stays as it was at its
    last flush, which opens without h5clear.  (Flushing a superblock whose end-of-file lies
    past the data that could not be written leaves a 'truncated file' HDF5 refuses.)"""
    f._nonequil_detached = True
    try:
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, RuntimeError, ValueError, TypeError):
        pass


def _close_quietly(f):
    """Close an h5py File; after a failed write HDF5 may fail to flush on close: ignore it
    (the file's committed part is what was flushed before)."""
    try:
        f.close()
    except (OSError, RuntimeError):
        pass


# ---------------------------------------------------------------- checkpoints
def _fsync_dir(path):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_checkpoint(path, meta, arrays):
    """Atomically write a checksummed checkpoint; the old one becomes ``path + '.prev'``."""
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8),
             **arrays)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(CKPT_MAGIC + digest + b"\n" + payload)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise write_failed(path, e, "write the checkpoint") from None
    if os.path.exists(path):
        os.replace(path, path + ".prev")
    os.replace(tmp, path)
    _fsync_dir(path)


def _read_one(path):
    with open(path, "rb") as fh:
        blob = fh.read()
    if not blob.startswith(CKPT_MAGIC):
        raise ValueError("not a nonequil checkpoint")
    rest = blob[len(CKPT_MAGIC):]
    digest, _, payload = rest.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (corrupt or truncated)")
    z = np.load(io.BytesIO(payload))
    meta = json.loads(bytes(z["__meta__"]).decode())
    return meta, {k: z[k] for k in z.files if k != "__meta__"}


def read_checkpoint(path, warn=None):
    """(meta, arrays) from ``path`` or, if it is corrupt, from ``path.prev``; None if neither."""
    for p in (path, path + ".prev"):
        if not os.path.exists(p):
            continue
        try:
            got = _read_one(p)
        except Exception as e:  # noqa: BLE001  corrupt checkpoint: fall back
            if warn:
                warn(f"checkpoint {p} is unusable ({e}); trying the previous one")
            continue
        if p != path and warn:
            warn(f"using the previous checkpoint {p}")
        return got
    return None


def remove_checkpoint(path):
    for p in (path, path + ".prev"):
        if os.path.exists(p):
            os.remove(p)


# ---------------------------------------------------------------- reading inputs
def open_h5(path, what="input file"):
    """Open ``path`` read-only with the first two checks (exists, is HDF5)."""
    import h5py

    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist; give the path of an HDF5 file")
    if not h5py.is_hdf5(path):
        raise InputError(f"{what} {path} is not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{what} {path} cannot be opened as HDF5 ({e}); is it truncated?") \
            from None


def check_array(arr, path, dataset):
    """Checks 4-6 of DESIGN.md on an in-memory array: rank/dtype, non-empty, finite."""
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{path}:{dataset} has dtype {arr.dtype}; expected float or int")
    if arr.ndim < 1:
        raise InputError(f"{path}:{dataset} is a scalar; expected shape [N] or [N, ...]")
    if arr.shape[0] == 0 or arr.size == 0:
        raise InputError(f"{path}:{dataset} is empty; expected at least one sample")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            row = int(idx[0])
            col = ", ".join(str(int(c)) for c in idx[1:]) or "0"
            raise InputError(f"{path}:{dataset} has a non-finite value at row {row} "
                             f"(0-based), column {col}; remove or fix that row")


def read_samples(path, dataset="/samples", batch=None, note=None):
    """Read and validate a sample set ``/samples[N, ...]`` (DESIGN.md's seven checks).

    Returns the array (float64 for floats, as stored for ints).  With ``batch``, returns
    ``(array, batch)`` where a batch larger than N shrinks to N with a note, and N < 2 is
    refused.
    """
    with open_h5(path) as f:
        if dataset not in f:
            raise InputError(f"{path} has no dataset {dataset}; a sample set needs "
                             f"{dataset} of shape [N] or [N, ...]")
        ds = f[dataset]
        if not hasattr(ds, "dtype"):
            raise InputError(f"{path}:{dataset} is a group, not a dataset")
        if ds.dtype.kind not in "fiub" or ds.ndim < 1:
            raise InputError(f"{path}:{dataset} has shape {ds.shape} and dtype {ds.dtype}; "
                             "expected shape [N] or [N, ...] of float or int")
        try:
            arr = ds[()]
        except OSError as e:
            raise InputError(f"{path}:{dataset} cannot be read ({e}); is the file "
                             "truncated?") from None
    check_array(arr, path, dataset)
    if batch is None:
        return arr
    N = arr.shape[0]
    if N < 2:
        raise InputError(f"{path}:{dataset} holds {N} sample; at least 2 are needed")
    if batch > N:
        if note:
            note(f"batch {batch} is larger than the {N} samples of {path}; using {N}")
        batch = N
    return arr, batch


def read_initial_state(path):
    """Initial positions (and velocities if present) from a sample set or a trajectory.

    A sample set ``/samples[N]`` or ``[N, D]`` gives N walkers; a trajectory gives its last
    frame.  Returns ``(x[N, D] float64, v or None, source)``.
    """
    with open_h5(path, "init file") as f:
        is_traj = "particles" in f
    if not is_traj:
        x = read_samples(path)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        elif x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        return x, None, "samples"
    with open_h5(path, "init file") as f:
        key = "particles/ensemble/position/value"
        if key not in f or f[key].ndim != 3 or f[key].shape[0] == 0:
            raise InputError(f"init file {path} has no frames in /{key}")
        x = np.asarray(f[key][-1], dtype=np.float64)
        v = None
        vk = "particles/ensemble/velocity/value"
        if vk in f and f[vk].shape[0] > 0:
            v = np.asarray(f[vk][-1], dtype=np.float64)
    check_array(x, path, "/" + key + "[-1]")
    return x, v, "trajectory"


# ---------------------------------------------------------------- inspect
def describe(path):
    """A human-readable summary of an HDF5 file written by (or readable by) nonequil."""
    lines = []
    with open_h5(path) as f:
        kind = ("trajectory (H5MD)" if "particles" in f else
                "sample set" if "samples" in f else
                "model" if "model" in f else "HDF5 file")
        lines.append(f"{path}: {kind}")
        lines.append("layout:")

        def visit(name, obj):
            depth = name.count("/")
            if hasattr(obj, "shape"):
                lines.append(f"  {'  ' * depth}{name.split('/')[-1]}  {obj.shape} {obj.dtype}")
            else:
                lines.append(f"  {'  ' * depth}{name.split('/')[-1]}/")
        f.visititems(visit)
        for grp in ("parameters", "provenance"):
            if grp in f:
                lines.append(f"{grp}:")
                for k, v in sorted(f[grp].attrs.items()):
                    if isinstance(v, bytes):
                        v = v.decode()
                    lines.append(f"  {k} = {v}")
        if "samples" in f:
            ds = f["samples"]
            for k, v in sorted(ds.attrs.items()):
                lines.append(f"  samples.{k} = {v}")
    return "\n".join(lines)


# ---------------------------------------------------------------- sample sets
def check_out_path(out, resume=False):
    """Validate an --out path before any work: refuse an existing file, need its directory."""
    out = os.fspath(out)
    if os.path.exists(out) and not resume:
        raise InputError(f"--out {out} already exists; remove it, choose another path, or "
                         "give --resume")
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise InputError(f"--out {out}: directory {d} does not exist")
    return out


def write_samples(out, samples, attrs=None, extra=None, prov=None):
    """Write a sample set ``/samples`` (+ ``extra`` datasets) via ``OUT.partial`` + rename.

    ``attrs`` go on ``/samples`` (source, parameters, units); ``extra`` maps dataset paths to
    arrays (reference observables, labels); ``prov`` goes to ``/provenance``.  After an
    error nothing exists at ``out`` (the partial file is removed).
    """
    import h5py

    out = check_out_path(out)
    partial = out + ".partial"
    try:
        with h5py.File(partial, "w", **H5_WRITE_OPTS) as f:
            ds = f.create_dataset("samples", data=samples,
                                  chunks=True if np.ndim(samples) else None)
            write_attrs(ds, attrs or {})
            for k, v in (extra or {}).items():
                f.create_dataset(k, data=v)
            if prov:
                write_attrs(f.create_group("provenance"), prov)
        os.replace(partial, out)
    except BaseException as e:
        if os.path.exists(partial):
            os.remove(partial)
        if isinstance(e, (OSError, RuntimeError)):
            raise write_failed(out, e, "write", resumable=False) from None
        raise
    return out


# ---------------------------------------------------------------- output lock
class OutputLock:
    """An exclusive advisory lock on ``OUT.partial.lock``: a second writer is refused."""

    def __init__(self, path, out):
        import fcntl

        self.path = path
        while True:
            self.fh = open(path, "a+")
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.fh.close()
                raise InputError(f"another process is writing {out} (its lock file {path} "
                                 "is held); wait for it or choose another --out") from None
            # the holder may have removed the file between our open and our lock: only a
            # lock on the file that is still at ``path`` counts
            try:
                if os.stat(path).st_ino == os.fstat(self.fh.fileno()).st_ino:
                    return
            except FileNotFoundError:
                pass
            self.fh.close()

    def release(self, remove=True):
        if remove:
            try:
                os.remove(self.path)
            except OSError:
                pass
        self.fh.close()
