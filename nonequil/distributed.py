"""Sharded ensembles and parameter sweeps on Dask distributed.

A sharded ``simulate`` splits the walkers ``first .. first+M-1`` into K contiguous ranges
(K defaults to the number of workers).  Shard ``i`` runs as one Dask task that calls
``nonequil.simulate.simulate`` with ``first_walker`` = the range's first index, writing its
own complete H5MD file next to the output::

    OUT.h5                       the assembled file (small): H5MD groups whose ``value``
                                 datasets are HDF5 virtual datasets over the shard files,
                                 ``step``/``time`` copied, and a ``/shards`` table
    OUT.shard000-of003.h5 ...    one H5MD file per shard (walkers lo..hi-1), kept

Because every random number is a pure function of (seed, purpose, walker, step, block),
the assembled ``/particles/ensemble/position/value[T][M][D]`` equals the single-process run
bit for bit, for any K.  The virtual datasets name their sources by file name only
(relative to the assembled file's directory), so the directory can be moved.  A missing
shard reads as NaN (the fill value); ``nonequil inspect`` lists the shards and flags it.

Per-shard lifecycle: a shard writes ``SHARD.partial`` plus its checkpoint (the ``simulate``
file lifecycle).  A retried task (Dask re-runs the tasks of a worker that died) resumes its
partial shard file from the checkpoint, truncating it to the committed frames, so the result
is unchanged; a finished shard is verified against the arguments and never recomputed.

Threads: a local cluster of N workers gives each worker ``cores // N`` threads and one
``nonequil`` resource slot, so one shard runs per worker and Numba uses the worker's share
of the cores (``numba.set_num_threads`` in the task).  On a cluster whose workers do not
advertise the resource, a worker with T threads may run T tasks at once and each task uses
1 Numba thread.

``sample_sharded`` does the same for ``nonequil sample`` by sample index (``--first-sample``
and ``--n`` per shard; ``/samples`` joined along axis 0, the reverse trajectories along
axis 1).  ``dataset_sharded`` does it for ``nonequil dataset`` by sample index (generators
with ``Generator.shardable``: ``/samples`` and the per-sample datasets ``/labels``, ``/t``
joined along axis 0; the law's reference data copied; the sample-derived attributes
recomputed, see ``nonequil.datasets``).  The sweep engine (``run_sweep``) lives in
``nonequil.cmd_sweep``.
"""
import contextlib
import dataclasses
import json
import os
import re
import signal
import time

from .errors import InputError, RunError

INSTALL = "pip install 'nonequil[dist]' (or: pip install 'dask[distributed]')"
SLOT = "nonequil"          # worker resource: how many nonequil tasks a worker runs at once


# ====================================================================== clusters
def require_dask(flag="--cluster"):
    """Import ``distributed`` or raise an InputError that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"{flag} needs Dask distributed, which is not installed; install "
                         f"it with {INSTALL}") from None
    return distributed


def parse_cluster(text):
    """'local:N' -> N (worker processes)."""
    m = re.fullmatch(r"\s*local\s*:\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1:
        raise InputError(f"--cluster {text!r}: expected local:N with N >= 1 worker "
                         "processes, e.g. --cluster local:2")
    return int(m.group(1))


def check_target(scheduler=None, cluster=None):
    """Validate --scheduler/--cluster before any work; returns the worker count or None."""
    if scheduler and cluster:
        raise InputError("give either --scheduler ADDRESS or --cluster local:N, not both")
    if not scheduler and not cluster:
        raise InputError("a distributed run needs --scheduler ADDRESS or --cluster local:N")
    n = parse_cluster(cluster) if cluster else None
    require_dask("--scheduler" if scheduler else "--cluster")
    return n


def cores():
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # pragma: no cover  (not Linux)
        return os.cpu_count() or 1


@contextlib.contextmanager
def connect(scheduler=None, cluster=None, threads_per_worker=None):
    """Yield a ``distributed.Client``: to ``scheduler`` (an address), or to a new local
    cluster of ``cluster`` ('local:N' or N) worker processes on loopback, closed on exit;
    each local worker gets ``threads_per_worker`` threads (default: cores // N)."""
    import logging

    if cluster is not None and not isinstance(cluster, int):
        cluster = parse_cluster(cluster)
    d = require_dask("--scheduler" if scheduler else "--cluster")
    if scheduler:
        try:
            client = d.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({e}); start one with "
                             "`dask scheduler` and workers with `dask worker ADDRESS`") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                raise InputError(f"--scheduler {scheduler}: no worker joined within 60 s; "
                                 "start workers with `dask worker ADDRESS`") from None
            yield client
        return
    share = threads_per_worker or max(1, cores() // cluster)
    import kernels  # noqa: F401  (sets NUMBA_CACHE_DIR for this process and its workers)

    env = {k: os.environ[k] for k in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_CACHING",
                                      "NUMBA_THREADING_LAYER_PRIORITY") if k in os.environ}
    lc = d.LocalCluster(n_workers=cluster, threads_per_worker=share, processes=True,
                        resources={SLOT: 1}, host="127.0.0.1", dashboard_address=":0",
                        silence_logs=logging.ERROR, env=dict(env, OMP_NUM_THREADS=str(share)))
    try:
        with d.Client(lc) as client:
            try:
                yield client
            except BaseException:
                # interrupted or failed: stop the running tasks now instead of letting the
                # workers finish them on close (every task keeps a checkpoint to resume from)
                with contextlib.suppress(Exception):
                    for pid in client.run(os.getpid).values():
                        os.kill(pid, signal.SIGKILL)
                raise
    finally:
        lc.close()


def _workers(client):
    return client.scheduler_info(n_workers=-1)["workers"]


def _submit_opts(client):
    """Resource restriction when every worker advertises the nonequil slot."""
    ws = _workers(client).values()
    if ws and all(SLOT in (w.get("resources") or {}) for w in ws):
        return {"resources": {SLOT: 1}}
    return {}


def worker_numba_config():
    """Point this process's Numba at the kernels' hash-keyed cache directory.

    ``kernels`` sets ``NUMBA_CACHE_DIR`` (and the threading-layer priority) in the
    environment before Numba is imported, but a Dask worker imports Numba before any task
    runs, so Numba would read the default: ``kernels/__pycache__``, whose entries are not
    invalidated when an inlined helper in another file changes (stale Philox code, other
    bits).  Re-reading Numba's configuration here, before the first kernel module is
    imported, fixes that; a kernel module imported earlier keeps its cache locator."""
    import sys

    from kernels import _cachedir  # noqa: F401  (sets the environment, imports no Numba)

    want = os.environ.get("NUMBA_CACHE_DIR")
    numba = sys.modules.get("numba")
    if numba is not None and want and numba.config.CACHE_DIR != want:
        numba.config.reload_config()


def task_threads():
    """In a Dask task: set Numba's thread count to this task's share of the worker's cores
    (worker threads / concurrent nonequil tasks) and return it; None outside a worker."""
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        return None
    worker_numba_config()
    st = w.state
    slots = int(st.total_resources.get(SLOT, st.nthreads)) or 1
    import numba

    n = max(1, min(st.nthreads // slots, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


# ====================================================================== sharding
def shard_ranges(first, M, K):
    """K contiguous walker ranges covering first..first+M-1: [(first_walker, walkers)]."""
    return [(first + M * i // K, M * (i + 1) // K - M * i // K) for i in range(K)]


def shard_path(out, i, K):
    """The i-th of K shard files next to ``out``: ``OUT.shard000-of003.h5``."""
    base, ext = os.path.splitext(os.fspath(out))
    return f"{base}.shard{i:03d}-of{K:03d}{ext or '.h5'}"


def _identity_json(cfg):
    return json.loads(json.dumps(cfg.identity(), sort_keys=True, default=str))


def check_shard(path, cfg):
    """Raise InputError unless the complete shard file ``path`` was written by ``cfg``."""
    from .store import open_h5

    with open_h5(path, "shard file") as f:
        try:
            got = json.loads(f["provenance"].attrs["configuration"])
        except (KeyError, ValueError):
            raise InputError(f"shard file {path} has no nonequil configuration; remove it") \
                from None
    want = _identity_json(cfg)
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if diff:
        raise InputError(f"shard file {path} was written with other arguments (differing "
                         f"fields: {', '.join(diff)}); remove it or rerun with the original "
                         "arguments")


def run_shard(config, path, chunk=None):
    """Dask task: simulate one shard into ``path`` (resume a partial one; keep a finished one).

    Returns a dict: path, status (ran | resumed | kept), seconds, threads, pid.
    """
    from .simulate import simulate

    threads = task_threads()
    t0 = time.perf_counter()
    if os.path.exists(path):      # finished, e.g. by an attempt whose worker then died
        check_shard(path, config)
        status = "kept"
    else:
        partial = path + ".partial"
        resume = any(os.path.exists(partial + s) for s in (".ckpt", ".ckpt.prev"))
        simulate(config, out=path, resume=resume, **(chunk or {}))
        status = "resumed" if resume else "ran"
    return {"path": path, "status": status, "seconds": time.perf_counter() - t0,
            "threads": threads, "pid": os.getpid()}


def prepare_sharded(config, out, *, shards=None, workers=None, resume=False):
    """Every check of a sharded run, before any work: returns (plan, ranges, paths).

    ``shards`` defaults to ``workers``; it is capped at the number of walkers.
    """
    from .simulate import Plan
    from .store import check_out_path

    if config.init is not None:
        raise InputError("--init is not supported with --cluster/--scheduler yet (each shard "
                         "would need its rows of the init file); run it in one process")
    plan = Plan(config)
    out = os.fspath(out)
    if resume and os.path.exists(out):
        raise InputError(f"--out {out} is already complete; nothing to resume")
    check_out_path(out, resume)
    K = shards or workers or 1
    if not isinstance(K, int) or K < 1:
        raise InputError(f"--shards must be a positive integer, got {K!r}")
    K = min(K, plan.M)
    ranges = shard_ranges(config.first_walker, plan.M, K)
    paths = [shard_path(out, i, K) for i in range(K)]
    if not resume:
        old = [q for p in paths for q in (p, p + ".partial") if os.path.exists(q)]
        if old:
            raise InputError(f"shard file {old[0]} exists from an earlier run; give --resume "
                             "to keep its finished shards and resume the partial ones, or "
                             "remove the shard files")
    return plan, ranges, paths


def simulate_sharded(config, out, client, *, shards=None, resume=False, callback=None,
                     chunk=None, extra=None):
    """Run ``config`` sharded over the workers of ``client``; assemble ``out``.

    ``shards``: number of shards (default: one per worker).  ``callback(info)`` gets
    ``{"done", "total", "status", "shard", "seconds"}`` after each shard.  ``chunk`` holds
    extra keyword arguments for ``simulate`` (``max_chunk_steps``: tests vary the chunking).
    ``extra`` goes into the output's provenance.  Returns the list of shard results.
    """
    from .store import OutputLock

    out = os.fspath(out)
    plan, ranges, paths = prepare_sharded(config, out, shards=shards,
                                          workers=len(_workers(client)), resume=resume)
    cfgs = [dataclasses.replace(config, first_walker=lo, walkers=n) for lo, n in ranges]
    lock = OutputLock(out + ".partial.lock", out)
    try:
        results = [None] * len(paths)
        todo = []
        for i, (c, p) in enumerate(zip(cfgs, paths)):
            if os.path.exists(p):
                check_shard(p, c)          # finished: not recomputed
                results[i] = {"path": p, "status": "kept", "seconds": 0.0}
            else:
                todo.append(i)
        calls = {i: (run_shard, (cfgs[i], paths[i], chunk)) for i in todo}
        results = _run_tasks(client, calls, results, callback)
        prov = {"shards": len(paths), "shard_seconds": json.dumps(
            [round(r["seconds"], 3) for r in results])}
        prov.update(extra or {})
        assemble(out, paths, ranges, config, prov)
    finally:
        lock.release(remove=True)
    return results


def _run_tasks(client, calls, results, callback):
    """Submit ``calls`` {i: (fn, args)} and fill ``results[i]`` as they finish."""
    from distributed import as_completed

    opts = _submit_opts(client)
    futs = {client.submit(fn, *args, pure=False,
                          key=f"nonequil-shard-{i}-{os.getpid()}-{time.time_ns()}", **opts): i
            for i, (fn, args) in calls.items()}
    done = len(results) - len(calls)
    try:
        for fut in as_completed(list(futs)):
            i = futs[fut]
            results[i] = fut.result()
            done += 1
            if callback:
                callback({"done": done, "total": len(results), "shard": i,
                          "status": results[i]["status"], "seconds": results[i]["seconds"]})
    except BaseException:
        client.cancel(list(futs))
        raise
    return results


# ====================================================================== assembling
def _axis(name, per_sample=()):
    """The walker/sample axis of a dataset of a shard file, or None (copied as is)."""
    if name == "samples" or name in per_sample:
        return 0
    if name.endswith("/value") and name.split("/")[0] in ("particles", "observables"):
        return 1
    return None


def _virtual(dest, name, srcs, files, axis):
    """``dest[name]``: a virtual dataset joining ``name`` of every shard along ``axis``."""
    import h5py
    import numpy as np

    ds0 = srcs[0][name]
    shape = list(ds0.shape)
    shape[axis] = sum(s[name].shape[axis] for s in srcs)
    layout = h5py.VirtualLayout(shape=tuple(shape), dtype=ds0.dtype)
    lo = 0
    for s, fn in zip(srcs, files):
        d = s[name]
        other = [n for k, n in enumerate(d.shape) if k != axis]
        if other != [n for k, n in enumerate(ds0.shape) if k != axis] or d.dtype != ds0.dtype:
            raise RunError(f"shard file {fn}: /{name} has shape {d.shape} {d.dtype}, unlike "
                           f"{ds0.shape} {ds0.dtype} in {files[0]}; remove the shard files "
                           "and rerun")
        sel = (slice(None),) * axis + (slice(lo, lo + d.shape[axis]),)
        layout[sel] = h5py.VirtualSource(fn, name, shape=d.shape)
        lo += d.shape[axis]
    fill = np.nan if ds0.dtype.kind == "f" else 0
    dest.create_virtual_dataset(name, layout, fillvalue=fill)


def _copy_tree(first, f, srcs, files, per_sample=()):
    """Copy the first shard's groups and attributes; join the walker/sample datasets."""
    import numpy as np

    def visit(name, obj):
        if name.split("/")[0] in ("provenance", "shards"):
            return
        if not hasattr(obj, "shape"):
            g = f.require_group(name)
            for k, v in obj.attrs.items():
                g.attrs[k] = v
            return
        parent = f.require_group(os.path.dirname(name) or "/")
        axis = _axis(name, per_sample)
        if axis is None:
            if name.endswith("/step"):
                for s, fn in zip(srcs[1:], files[1:]):
                    if not np.array_equal(s[name][()], obj[()]):
                        raise RunError(f"shard file {fn} records other steps in /{name} than "
                                       f"{files[0]}; remove the shard files and rerun")
            first.copy(name, parent)
        else:
            _virtual(f, name, srcs, files, axis)
        for k, v in obj.attrs.items():
            f[name].attrs[k] = v
    for k, v in first.attrs.items():
        f.attrs[k] = v
    first.visititems(visit)


def assemble(out, paths, ranges, config, prov_extra=None, fix=None, prov_config=None,
             per_sample=()):
    """Write ``out`` (via ``out.partial``) from complete shard files ``paths``.

    Groups, attributes and every other dataset (``step``, ``time``, ...) are copied from the
    first shard (every shard must record the same steps).  Walker and sample datasets --
    ``/particles/*/value`` and ``/observables/*/value`` (axis 1), ``/samples`` (axis 0) --
    become virtual datasets over the shards, with relative file names.  ``/parameters``
    gets the whole ensemble's walkers and first_walker (or ``fix(file)`` adjusts the
    attributes of another kind of file); ``per_sample`` names more datasets joined along
    axis 0 (a dataset's labels); ``/provenance`` describes the whole run;
    ``/shards`` records file[K], first_walker[K], walkers[K].
    """
    import h5py
    import numpy as np

    from .store import provenance, write_attrs

    files = [os.path.basename(p) for p in paths]
    srcs = [h5py.File(p, "r") for p in paths]
    partial = out + ".partial"
    try:
        with h5py.File(partial, "w") as f:
            _copy_tree(srcs[0], f, srcs, files, per_sample)
            if fix is not None:
                fix(f)
            elif "parameters" in f:
                f["parameters"].attrs["walkers"] = sum(n for _, n in ranges)
                f["parameters"].attrs["first_walker"] = config.first_walker
            if prov_config is None:
                prov_config = (config.identity(), config.device, config.precision)
            write_attrs(f.create_group("provenance"), provenance(*prov_config, prov_extra))
            sh = f.create_group("shards")
            sh.attrs["description"] = ("each shard is a file (relative to this file's "
                                       "directory) holding walkers (or samples) "
                                       "first_walker..first_walker+walkers-1; the walker and "
                                       "sample datasets here are virtual datasets over them")
            sh.create_dataset("file", data=np.array(files, dtype="S"))
            sh.create_dataset("first_walker", data=np.array([lo for lo, _ in ranges], np.int64))
            sh.create_dataset("walkers", data=np.array([n for _, n in ranges], np.int64))
        os.replace(partial, out)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    finally:
        for s in srcs:
            s.close()
    return out


# ====================================================================== sharded sample
def run_verb(argv, path):
    """Dask task: run ``nonequil ARGV`` (which writes ``path``) in this worker; a finished
    ``path`` is kept.  Errors propagate (InputError, RunError) to the client."""
    from . import cli

    threads = task_threads()
    t0 = time.perf_counter()
    status = "kept"
    if not os.path.exists(path):
        raw = [str(t) for t in argv]        # recorded: a kept shard is checked on it as given
        argv = cli._fix_negative_values(list(argv))
        a = cli.build_parser().parse_args(argv)
        a.argv = argv
        a.shard_arguments = raw
        a.handler(a)
        status = "ran"
    return {"path": path, "status": status, "seconds": time.perf_counter() - t0,
            "threads": threads, "pid": os.getpid()}


def _sample_args(args, out):
    from .cli import CLIError, _fix_negative_values, build_parser

    args = [str(t) for t in args]
    if any(t == "--out" or t.startswith("--out=") for t in args):
        raise InputError("give the output as out=..., not --out in the sample arguments")
    try:
        a = build_parser().parse_args(_fix_negative_values(["sample"] + args + ["--out", out]))
    except CLIError as e:
        raise InputError(str(e)) from None
    if getattr(a, "log_weights", False):
        raise InputError("--log-weights is not supported with sharding (its summary "
                         "statistics span every sample); run it in one process")
    if any(s.replace(" ", "") in ("method=rk45",) for s in a.set):
        raise InputError("--set method=rk45 chooses its steps from the whole batch, so its "
                         "samples depend on the sharding; use the fixed-step ode (heun) or "
                         "run it in one process")
    return args, a


def _shard_config(path):
    from .store import open_h5

    with open_h5(path, "shard file") as f:
        p = f["provenance"].attrs
        return (json.loads(p["configuration"]), str(p["device"]), str(p["precision"]))


def _check_sample_shard(path, argv, a, n, lo):
    """Raise InputError unless the finished sample shard ``path`` was written by ``nonequil
    ARGV`` (every argument: model, sampler, steps, options, seed, ...) from the same model
    file and with the same Box-Muller version of the normals, so that a resumed run is bit
    for bit the one-process run."""
    from kernels.philox import NORMALS_VERSION

    got = _shard_config(path)[0]
    if (got.get("n"), got.get("first_sample"), got.get("seed")) != (n, lo, a.seed):
        raise InputError(f"shard file {path} holds other samples (n, first_sample, seed "
                         "differ); remove it")
    want = {"shard_arguments": [str(t) for t in argv], "model": os.path.abspath(a.model),
            "normals": NORMALS_VERSION}
    diff = [k for k in want if got.get(k) != want[k]]
    if diff:
        what = {"shard_arguments": "the sample arguments", "model": "the model file",
                "normals": "the normals' Box-Muller version"}
        raise InputError(f"shard file {path} was written by another run (it differs in "
                         f"{', '.join(what[k] for k in diff)}); remove it or rerun with the "
                         "original arguments")


def sample_sharded(args, out, client, *, shards=None, resume=False, callback=None,
                   extra=None):
    """``nonequil sample ARGS`` sharded by sample index over the workers of ``client``.

    Shard i runs the verb with ``--first-sample lo_i --n n_i`` into its own file next to
    ``out`` (sample i depends only on the model, the sampler, its options, the seed and i:
    ``nonequil.samplers``); ``out`` joins ``/samples`` and the reverse trajectories
    ``/particles/ensemble/position/value`` as virtual datasets, equal bit for bit to a
    one-process run.  ``args``: the verb's arguments without ``--out``.  With ``resume``,
    finished shard files (checked against the arguments) are kept.
    """
    from .store import OutputLock, check_out_path

    out = os.fspath(out)
    args, a = _sample_args(args, out)
    check_out_path(out, resume)
    if resume and os.path.exists(out):
        raise InputError(f"--out {out} is already complete; nothing to resume")
    K = min(shards or len(_workers(client)) or 1, a.n)
    ranges = shard_ranges(a.first_sample, a.n, K)
    paths = [shard_path(out, i, K) for i in range(K)]
    old = [p for p in paths if os.path.exists(p)]
    if old and not resume:
        raise InputError(f"shard file {old[0]} exists from an earlier run; give --resume to "
                         "keep the finished shards, or remove the shard files")
    argvs = [["sample"] + args + ["--n", str(n), "--first-sample", str(lo), "--out", p,
                                  "--quiet"] for (lo, n), p in zip(ranges, paths)]
    lock = OutputLock(out + ".partial.lock", out)
    try:
        for (lo, n), p, argv in zip(ranges, paths, argvs):
            if os.path.exists(p):
                _check_sample_shard(p, argv, a, n, lo)
        results = [{"path": p, "status": "kept", "seconds": 0.0} for p in paths]
        calls = {i: (run_verb, (argvs[i], paths[i])) for i, p in enumerate(paths)
                 if not os.path.exists(p)}
        _run_tasks(client, calls, results, callback)
        cfg, device, precision = _shard_config(paths[0])
        cfg.update(n=a.n, first_sample=a.first_sample)
        cfg.pop("shard_arguments", None)

        def fix(f):
            if "samples" in f:
                f["samples"].attrs["first_sample"] = a.first_sample
        prov = {"shards": K}
        prov.update(extra or {})
        assemble(out, paths, ranges, None, prov, fix=fix, prov_config=(cfg, device, precision))
    finally:
        lock.release(remove=True)
    return results


# ====================================================================== sharded dataset
PER_SAMPLE = ("labels", "t")       # per-sample datasets of the shardable generators


def run_dataset_shard(path, name, n, params, method, seed, first):
    """Dask task: write samples first..first+n-1 of dataset ``name`` into ``path`` (a
    finished ``path`` is kept; a partial file of a killed attempt is rewritten)."""
    from .datasets import write_dataset

    threads = task_threads()
    t0 = time.perf_counter()
    status = "kept"
    if not os.path.exists(path):
        write_dataset(path, name, n, params, method, seed, "cpu", None, first)
        status = "ran"
    return {"path": path, "status": status, "seconds": time.perf_counter() - t0,
            "threads": threads, "pid": os.getpid()}


def prepare_dataset(name, n, params, method, seed, device, out, *, shards=None,
                    workers=None, resume=False):
    """Every check of a sharded ``dataset`` run, before any work: returns (ranges, paths,
    configs), the configurations each shard file must hold."""
    from kernels.philox import NORMALS_VERSION

    from .datasets import NOT_SHARDABLE, check_first, resolve
    from .store import check_out_path

    gen, method, p = resolve(name, params, method, n, device)
    if not gen.shardable:
        raise InputError(f"dataset {name} cannot be sharded (--cluster/--scheduler): "
                         f"{NOT_SHARDABLE}")
    if device != "cpu":
        raise InputError("sharded datasets run on the workers' CPUs; use --device cpu")
    check_first(gen, n, 0)
    out = os.fspath(out)
    if resume and os.path.exists(out):
        raise InputError(f"--out {out} is already complete; nothing to resume")
    check_out_path(out, resume)
    K = shards or workers or 1
    if not isinstance(K, int) or K < 1:
        raise InputError(f"--shards must be a positive integer, got {K!r}")
    K = min(K, n)
    ranges = shard_ranges(0, n, K)
    paths = [shard_path(out, i, K) for i in range(K)]
    want = [{"dataset": name, "n": m, "method": method, "parameters": json.loads(
        json.dumps(p, sort_keys=True)), "seed": int(seed), "device": "cpu",
        "first_sample": lo, "normals": NORMALS_VERSION} for lo, m in ranges]
    for path, w in zip(paths, want):
        if not os.path.exists(path):
            continue
        if not resume:
            raise InputError(f"shard file {path} exists from an earlier run; give --resume to "
                             "keep the finished shards, or remove the shard files")
        got = _shard_config(path)[0]
        diff = sorted(k for k in set(w) | set(got) if w.get(k) != got.get(k))
        if diff:
            raise InputError(f"shard file {path} was written with other arguments (differing "
                             f"fields: {', '.join(diff)}); remove it or rerun with the "
                             "original arguments")
    return ranges, paths, want


def dataset_sharded(name, n, params, method, seed, out, client, *, shards=None,
                    resume=False, callback=None, extra=None):
    """``nonequil dataset NAME`` sharded by sample index over the workers of ``client``.

    Shard i writes samples lo_i..lo_i+n_i-1 (``datasets.write_dataset(..., first=lo_i)``)
    into its own file next to ``out``; ``out`` joins ``/samples`` and the per-sample
    datasets as virtual datasets, equal bit for bit to a one-process run, with the
    attributes of a one-process run (``n``, ``first_sample`` and the rejection sampler's
    counts recomputed over all shards).  Returns the list of shard results.
    """
    from .store import OutputLock

    out = os.fspath(out)
    ranges, paths, want = prepare_dataset(name, n, params, method, seed, "cpu", out,
                                          shards=shards, workers=len(_workers(client)),
                                          resume=resume)
    lock = OutputLock(out + ".partial.lock", out)
    try:
        results = [{"path": p, "status": "kept", "seconds": 0.0} for p in paths]
        calls = {i: (run_dataset_shard, (paths[i], name, m, params, method, seed, lo))
                 for i, ((lo, m), p) in enumerate(zip(ranges, paths)) if not os.path.exists(p)}
        _run_tasks(client, calls, results, callback)
        attrs = _dataset_totals(paths)
        cfg = dict(want[0], n=int(n), first_sample=0)

        def fix(f):
            for k, v in attrs.items():
                f["samples"].attrs[k] = v
        prov = {"shards": len(paths)}
        prov.update(extra or {})
        assemble(out, paths, ranges, None, prov, fix=fix, prov_config=(cfg, "cpu", "float64"),
                 per_sample=PER_SAMPLE)
    finally:
        lock.release(remove=True)
    return results


def _dataset_totals(paths):
    """The /samples attributes computed from the samples, over every shard."""
    import h5py

    n, attempts, rounds = 0, 0, 0
    for p in paths:
        with h5py.File(p, "r") as f:
            a = f["samples"].attrs
            n += int(a["n"])
            if "rejection_attempts" in a:
                attempts += int(a["rejection_attempts"])
                rounds = max(rounds, int(a["rejection_rounds"]))
    out = {"n": n, "first_sample": 0}
    if attempts:
        out.update(acceptance=n / attempts, rejection_rounds=rounds,
                   rejection_attempts=attempts)
    return out


def shard_lines(path):
    """Lines describing the shards of an assembled file (empty if it has none)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "shards" not in f or "file" not in f["shards"]:
            return []
        g = f["shards"]
        files = [x.decode() for x in g["file"][()]]
        lo, n = g["first_walker"][()], g["walkers"][()]
    d = os.path.dirname(os.path.abspath(path))
    lines = [f"shards: {len(files)} H5MD shard files joined by virtual datasets (paths "
             "relative to this file)"]
    missing = 0
    for i, fn in enumerate(files):
        ok = os.path.exists(os.path.join(d, fn))
        missing += not ok
        lines.append(f"  {i}: {fn}  walkers {lo[i]}..{lo[i] + n[i] - 1} ({n[i]})  "
                     + ("ok" if ok else "MISSING: its walkers read as NaN"))
    if missing:
        lines.append(f"warning: {missing} shard file(s) missing next to {path}")
    return lines
