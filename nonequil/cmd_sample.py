"""``nonequil sample MODEL.h5 [--n N] [--sampler NAME] [--steps K] [--seed S] [--device cpu|cuda]
[--record-every K] [--set NAME=VALUE ...] --out SAMPLES.h5 [--quiet]``.

Light at import (argparse only): numpy, numba and h5py are imported inside the handler.

Output file: ``/samples[n, *data_shape]`` in the data units of the model's training set
(float64; int8 for the binomial chain: +-1 spins or 0/1 bits), with attributes ``source``
(the model file), ``sampler``, ``steps``, ``seed``, ``options`` (JSON), ``engine``,
``device``, ``first_sample``, ``weights``, ``process``, ``model_step`` and ``units``; and
``/provenance``.  With ``--record-every K`` the reverse trajectory goes into the same file as
H5MD (``nonequil.store.H5MDWriter``): ``/particles/ensemble/position/{value[R][n][D],
step[R], time[R]}`` where step is the sampler step k (0 = the prior draw; every K-th step and
the last) and time the forward-process time t_k of that frame (decreasing from t_max to
t_eps; for the binomial chain the chain index T - k), positions in data units (flattened to D
numbers); ``/parameters`` names the sampler.  The final denoising step of em and pc is in
``/samples`` but not in the trajectory.

``--log-weights`` adds ``/log_proposal [n]`` (and ``/log_weights [n]`` when the model's
training data names its energy; ``nonequil.reweight``); it combines with ``--record-every``
(``nonequil.reweight.sample_with_log_density``): the samples and log-densities are bitwise
those of the same run without recording.  ODE (RK45) frames come from the solver's dense
output between its adaptive steps.

Checks before anything is created: the arguments, ``--out`` (must not exist), the model
file (exists, HDF5, has a /model group of a score model), the sampler and its options.  The
file is written as ``SAMPLES.h5.partial`` and renamed on success; on an error it is removed,
except after a blow-up (non-finite samples), when it is kept for inspection and named.
"""
import os

from .cli import int_at_least

_positive = int_at_least(1)
_nonneg = int_at_least(0, "index")


def add(sub, base, run):
    p = sub.add_parser(
        "sample", parents=[base, run], help="draw samples from a trained score model",
        description="Reverse the diffusion of a trained model (nonequil train) from the "
        "prior to data and write /samples[n, *data_shape] in data units.  Samplers: "
        "ode (probability-flow ODE, Heun; --set method=rk45 for adaptive RK45, rtol, atol, "
        "denoise), em (reverse SDE, Euler-Maruyama; denoise), ancestral (reverse DDPM "
        "chain with the posterior variance), pc (predictor-corrector; snr, n_corrector, "
        "predictor=em|ancestral, pilot, denoise), binomial (reverse bit-flip chain for "
        "binary data).  Defaults: ode with 500 Heun steps for vp/subvp/ve models, ancestral "
        "with T steps for ddpm, binomial with T steps for the binomial chain.  Sample i "
        "depends only on the model, the sampler, its steps and options, the seed and i.")
    p.add_argument("model", metavar="MODEL.h5", help="model file written by nonequil train "
                   "(or nonequil gan)")
    p.add_argument("--n", type=_positive, default=10000,
                   help="number of samples (default 10000)")
    p.add_argument("--sampler", metavar="NAME",
                   help="em | ancestral | ode | pc | binomial (default: from the process)")
    p.add_argument("--steps", type=_positive, metavar="K",
                   help="sampler steps (default: ode 500, em 1000, pc 500, ancestral 1000 "
                   "or T, binomial T)")
    p.add_argument("--record-every", type=_positive, metavar="K",
                   help="record the reverse trajectory every K steps under /particles")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="sampler option, e.g. snr=0.2, method=rk45 (repeatable)")
    p.add_argument("--first-sample", type=_nonneg, default=0, metavar="I",
                   help="absolute index of the first sample (default 0): samples I..I+n-1")
    p.add_argument("--batch", type=_positive, help="samples per batch (memory; default "
                   "32768); the samples do not depend on it")
    p.add_argument("--engine", default="auto", metavar="NAME",
                   help="CPU engine: auto (default), sharded, fused, blas, rows, python")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="network weights: the EMA (default) or the raw weights")
    # --- log-densities for reweighting (nonequil.reweight) ---
    p.add_argument("--log-weights", action="store_true",
                   help="also store each sample's log-density under the sampler in "
                   "/log_proposal (ode with --set method=rk45: the exact ODE density; em, "
                   "ancestral, pc with denoise=false, binomial: the log path ratio), and "
                   "/log_weights = -U/kT - log_proposal when the model's training data file "
                   "names its energy (see nonequil compare --reweight); combines with "
                   "--record-every; CPU only")
    # --- end log-densities ---
    g = p.add_argument_group("distributed (needs Dask: pip install 'nonequil[dist]')")
    g.add_argument("--cluster", metavar="local:N", help="start a local Dask cluster of N "
                   "worker processes and shard the samples over them")
    g.add_argument("--scheduler", metavar="ADDRESS", help="shard the samples over the "
                   "workers of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    g.add_argument("--shards", type=_positive, help="number of sample shards, each its own "
                   "file next to --out, joined by virtual datasets (default: one per worker)")
    g.add_argument("--resume", action="store_true", help="sharded runs: keep the finished "
                   "shard files of an interrupted run and run only the missing ones")
    p.set_defaults(handler=_cmd_sample, needs_out=True)


_SHARD_FLAGS = ("--out", "--cluster", "--scheduler", "--shards")


def _shard_argv(argv):
    """The verb's own arguments (after ``sample``) without --out and the sharding flags."""
    out, skip = [], False
    for t in argv[argv.index("sample") + 1:]:
        if skip:
            skip = False
        elif t in _SHARD_FLAGS:
            skip = True
        elif not (t == "--resume" or t.startswith(tuple(f + "=" for f in _SHARD_FLAGS))):
            out.append(t)
    return out


def _sample_sharded(a):
    from . import distributed as dist
    from .cli import Progress
    from .errors import InputError

    if a.shards and not (a.cluster or a.scheduler):
        raise InputError("nonequil sample: --shards needs --cluster local:N or --scheduler "
                       "ADDRESS")
    dist.check_target(a.scheduler, a.cluster)
    prog = Progress(a.quiet, "sample", lambda i: f"shard {i['shard']} {i['status']}; "
                    f"{i['done']}/{i['total']} shards done", lambda i: i["done"] >= i["total"])
    with dist.connect(a.scheduler, a.cluster) as client:
        res = dist.sample_sharded(_shard_argv(a.argv), a.out, client, shards=a.shards,
                                  resume=a.resume, callback=prog,
                                  extra={"cluster": a.cluster or a.scheduler})
    if not a.quiet:
        prog.note(f"wrote {a.out}: {len(res)} shards")


def _cmd_sample(a):
    """Dispatch (sharded, GAN, score model) under a lock on OUT: a second writer of the same
    --out is refused instead of clobbering the first one's partial file."""
    from .errors import InputError
    from .store import OutputLock, check_out_path

    if a.cluster or a.scheduler or a.shards:
        return _sample_sharded(a)
    if a.resume:
        raise InputError("--resume applies to sharded runs (--cluster or --scheduler); a "
                         "one-process sample run starts afresh")
    out = check_out_path(a.out)
    lock = OutputLock(out + ".partial.lock", out)
    try:
        return _sample_model(a)
    finally:
        lock.release()


def run_identity(a):
    """Configuration fields that tie a sample file to the exact bits of its run: the Box-Muller
    version of the normals and, for a shard of a sharded run, the shard's own arguments
    (``nonequil.distributed`` checks a kept shard on them before it resumes)."""
    from kernels.philox import NORMALS_VERSION

    out = {"normals": NORMALS_VERSION}
    if getattr(a, "shard_arguments", None):
        out["shard_arguments"] = list(a.shard_arguments)
    return out


def _parse_options(items):
    from .errors import InputError

    out = {}
    for item in items:
        name, eq, val = item.partition("=")
        name, val = name.strip(), val.strip()
        if not eq or not name or not val:
            raise InputError(f"--set {item!r}: expected name=value")
        low = val.lower()
        if low in ("true", "yes", "on"):
            out[name] = True
        elif low in ("false", "no", "off"):
            out[name] = False
        else:
            try:
                out[name] = int(val)
            except ValueError:
                try:
                    out[name] = float(val)
                except ValueError:
                    out[name] = val
    return out


def _sample_model(a):
    # --- GAN models (nonequil gan) are drawn by nonequil.cmd_gan.sample_gan ---
    from .gan import is_gan_file

    if is_gan_file(a.model):
        from .cmd_gan import sample_gan

        return sample_gan(a)
    # --- end of the GAN dispatch ---
    import json

    import numpy as np

    from . import models, samplers
    from .cli import Progress
    from .errors import InputError, RunError
    from .store import H5MDWriter, check_out_path, provenance, write_attrs

    out = check_out_path(a.out)
    opts = _parse_options(a.set)
    model = models.load(a.model)
    cfg = samplers.prepare(model, a.sampler, a.steps, a.seed, a.device, a.engine, a.weights,
                           **opts)
    if getattr(a, "log_weights", False):              # --- log-densities: check first
        from .reweight import check_log_density

        opts = check_log_density(cfg, opts)
        cfg = samplers.prepare(model, a.sampler, a.steps, a.seed, a.device, a.engine,
                               a.weights, **opts)
    if a.first_sample + a.n > 2**32:
        raise InputError(f"--first-sample {a.first_sample} + --n {a.n} must be at most 2**32")
    steps = cfg["steps"]
    fsteps = samplers.frame_steps_for(steps, a.record_every)
    D = int(model.dim)
    binary = cfg["sampler"] == "binomial"
    config = {"model": os.path.abspath(a.model), "n": a.n, "sampler": cfg["sampler"],
              "steps": steps, "seed": a.seed, "device": a.device, "options": cfg["opts"],
              "first_sample": a.first_sample, "batch": a.batch, "engine": cfg["engine"],
              "weights": a.weights, "record_every": a.record_every}
    config.update(run_identity(a))
    prov = provenance(config, a.device, getattr(model.config, "dtype", "float64"))
    prog = Progress(a.quiet, "sample")
    partial = out + ".partial"
    if os.path.exists(partial):
        os.remove(partial)          # a stale partial of an earlier failed run
    import h5py

    keep = False
    f = None
    try:
        if fsteps.size:
            grid = cfg["plan"].grid if cfg["plan"] is not None else None
            dt = float(abs(grid[0] - grid[1])) if grid is not None and grid.size > 1 else 1.0
            params = {"sampler": cfg["sampler"], "steps": steps, "seed": np.uint64(a.seed),
                      "process": samplers._process_name(model), "dt": dt,
                      "record_every": a.record_every,
                      "time": "forward-process time t_k of each frame (decreasing)"
                      if not binary else "chain index T - k",
                      "counter_layout": "Philox (seed, purpose 48.., sample index, ...): "
                      "see nonequil.samplers"}
            w = H5MDWriter.create(partial, a.n, D, dt, velocity=False, observables=(),
                                  dtype=np.int8 if binary else np.float64,
                                  parameters=params, prov=prov)
            f = w.f
            g = f["particles/ensemble/position"]
            R = fsteps.size
            for k in ("value", "step", "time"):
                g[k].resize(R, axis=0)
            g["step"][:] = fsteps
            if binary:
                g["time"][:] = (int(model.process.T) - fsteps).astype(np.float64)
            else:
                g["time"][:] = cfg["plan"].grid[fsteps]
            f.flush()

            def trajectory(start, frames):
                g["value"][:, start:start + frames.shape[1], :] = frames
                f.flush()
        else:
            f = h5py.File(partial, "w")
            write_attrs(f.create_group("provenance"), prov)
            trajectory = None
        if getattr(a, "log_weights", False):          # log-densities, with or without frames
            from .reweight import sample_with_log_density as draw
        else:
            draw = samplers.sample
        try:
            res = draw(model, a.n, cfg["sampler"], steps, a.seed, a.device, a.record_every,
                       prog, a.first_sample, a.batch, a.engine, a.weights,
                       trajectory=trajectory, **opts)
        except RunError as e:
            keep = True
            raise RunError(f"{e}; partial file kept: {partial}") from None
        ds = f.create_dataset("samples", data=res.samples, chunks=True)
        attrs = {"source": os.path.abspath(a.model), "source_kind": "mlp-score model",
                 "sampler": cfg["sampler"], "steps": steps, "seed": np.uint64(a.seed),
                 "options": json.dumps(cfg["opts"], sort_keys=True, default=str),
                 "engine": res.info["engine"], "device": a.device,
                 "first_sample": a.first_sample, "weights": a.weights,
                 "process": samplers._process_name(model),
                 "model_step": int(getattr(model, "step", 0)),
                 "units": "bits decoded as " + (getattr(model, "data_encoding", None) or "bits")
                 if binary else "data units of the model's training set"}
        write_attrs(ds, attrs)
        if res.log_proposal is not None:          # --- log-densities (nonequil.reweight)
            _write_log_weights(f, a, res, prog)
        f.flush()
        f.close()
        os.replace(partial, out)
    except BaseException:
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
        if not keep and os.path.exists(partial):
            os.remove(partial)
        raise
    if not a.quiet:
        prog.note(f"wrote {out}: {a.n} samples, sampler {cfg['sampler']}, {steps} steps "
                  f"({res.info['seconds']:.1f} s)")


# --- log-densities for reweighting (nonequil.reweight) ---
def _write_log_weights(f, a, res, prog):
    """/log_proposal [n] and, when the model's training data names its law, /log_weights."""
    import json

    from .errors import InputError
    from .reweight import law_of_model_file, log_weights
    from .store import write_attrs

    d = f.create_dataset("log_proposal", data=res.log_proposal)
    attrs = {"units": "nats; density per unit volume of data (normalisation Jacobian "
             "included)", "meaning": res.info.get("note", ""),
             "sampler": res.info["sampler"]}
    law = law_of_model_file(a.model)
    if law is not None:
        try:
            lw = log_weights(res.samples, res.log_proposal, *law)
        except InputError as e:
            prog.note(f"note: no /log_weights: the training law {law[0]} does not apply ({e})")
            law = None
    if law is not None:
        attrs.update({"law": law[0], "law_parameters": json.dumps(law[1], sort_keys=True)})
        w = f.create_dataset("log_weights", data=lw)
        write_attrs(w, {"law": law[0], "law_parameters": json.dumps(law[1], sort_keys=True),
                        "meaning": "log w = -U(x)/kT - log_proposal (unnormalised)"})
    elif not a.quiet:
        prog.note("note: the model's training data file names no known energy; stored "
                  "/log_proposal only (reweight with nonequil compare --reweight --analytic "
                  "NAME)")
    write_attrs(d, attrs)
# --- end log-densities ---
