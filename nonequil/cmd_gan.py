"""``nonequil gan DATA.h5 [--dataset /samples] [--set NAME=VALUE ...] [--steps N] [--batch B]
[--seed S] --out GAN.h5 [--resume] [--quiet]``, and the GAN branch of ``nonequil sample``.

Light at import (argparse only): numpy, numba and h5py are imported inside the handlers.
"""
import os
import time


def add(sub, base, run):
    p = sub.add_parser(
        "gan", parents=[base, run], help="train a GAN baseline on a sample set",
        description="Train a GAN (Goodfellow et al. 2014) on /samples[N, ...] of DATA.h5 and "
        "write GAN.h5: generator and discriminator weights, Adam states, the generator EMA, "
        "the data normalisation and, per generator step, D on real and generated samples, "
        "the value L(G, D) and the JS estimate (L + log 4)/2.  Binary data (0/1 or -1/+1) "
        "are relaxed with a tanh output and signed at sampling.  A checkpoint is kept beside "
        "GAN.h5.partial every ~10 s; --resume continues a killed run bit for bit.  Defaults: "
        "normal latent of dimension 4, generator 4-64-64-D and discriminator D-64-64-1 "
        "(SiLU), non-saturating loss, k=1, batch 256, 4000 steps, Adam lr 1e-3 with betas "
        "(0.5, 0.999) decayed linearly to 1e-4 over the second half, generator EMA 0.999, "
        "no label smoothing, no instance noise.  Settings: --set "
        "key=value, e.g. --set k=2 --set loss=minimax --set label_smoothing=0.1 --set "
        "instance_noise=0.5 --set latent=uniform (an unknown key lists the valid ones).  "
        "Sample with: nonequil sample GAN.h5 --n N --out SAMPLES.h5.")
    p.add_argument("data", metavar="DATA.h5", help="HDF5 file holding the samples [N] or [N, ...]")
    p.add_argument("--dataset", default="/samples", help="dataset path inside DATA.h5 "
                   "(default /samples)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="a GAN setting (repeatable)")
    p.add_argument("--steps", type=int, help="generator steps (default 4000)")
    p.add_argument("--batch", type=int, help="mini-batch size (default 256; shrinks to N "
                   "with a note if the data are fewer)")
    p.add_argument("--threads", type=int, help="BLAS threads (default 1)")
    p.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between checkpoints (default 10)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.set_defaults(handler=_cmd_gan, needs_out=True)


def _gan_line(info):
    return (f"step {info['step']}/{info['steps']} ({100.0 * info['step'] / info['steps']:5.1f}%), "
            f"D real {info['d_real']:.3f}, D fake {info['d_fake']:.3f}, "
            f"L {info['value']:.4f}, JS~{info['js']:.4f}, {info['steps_per_s']:.3g} steps/s, "
            f"ETA {info['eta']:6.1f} s")


def _cmd_gan(a):
    from .cli import Progress, parse_set_strings
    from .errors import InputError
    from .gan import config_from_sets
    from .gan_train import train_gan

    if a.device != "cpu":
        raise InputError(f"--device {a.device}: GAN training runs on the CPU only; use "
                         "--device cpu")
    if not a.checkpoint_every > 0:
        raise InputError(f"--checkpoint-every must be > 0 seconds, got {a.checkpoint_every}")
    fields = {"seed": a.seed}
    if a.steps is not None:
        fields["steps"] = a.steps
    if a.batch is not None:
        fields["batch"] = a.batch
    cfg = config_from_sets(parse_set_strings(a.set, "--set lr_d=2e-4"), **fields)
    prog = Progress(a.quiet, "gan", _gan_line)
    t0 = time.perf_counter()
    model = train_gan(a.data, cfg, out=a.out, resume=a.resume, callback=prog, warn=prog.warn,
                      note=lambda m: prog.note(f"note: {m}"), dataset=a.dataset,
                      threads=a.threads, checkpoint_seconds=a.checkpoint_every)
    n = min(200, model.step)
    lg = model.logs
    sl = slice(model.step - n, model.step)
    prog.note(f"wrote {a.out}: {model.step} steps in {time.perf_counter() - t0:.1f} s; mean of "
              f"the last {n} steps: D real {lg['d_real'][sl].mean():.3f}, D fake "
              f"{lg['d_fake'][sl].mean():.3f}, L {lg['value'][sl].mean():.4f} "
              f"(-2 log 2 = -1.3863)")


# ----------------------------------------------------------------------------- sample
_NOT_FOR_GAN = (("sampler", None), ("steps", None), ("record_every", None), ("set", []),
                ("engine", "auto"))


def sample_gan(a):
    """``nonequil sample GAN.h5 --n N --out S.h5``: /samples[n, *data_shape] from a GAN
    (data units; int8 for binary data), sample i a function of (model, seed, i) only."""
    import json

    import numpy as np

    from .cli import Progress
    from .errors import InputError, RunError
    from .gan import load
    from .cmd_sample import run_identity
    from .store import check_out_path, provenance, write_samples

    out = check_out_path(a.out)
    for name, default in _NOT_FOR_GAN:
        if getattr(a, name, default) != default:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} does not apply to a GAN model ({a.model}): a GAN draws "
                             "each sample in one generator pass; leave it out")
    if a.device != "cpu":
        raise InputError(f"--device {a.device}: GAN sampling runs on the CPU only; use "
                         "--device cpu")
    if a.first_sample + a.n > 2**32:
        raise InputError(f"--first-sample {a.first_sample} + --n {a.n} must be at most 2**32")
    model = load(a.model)
    t0 = time.perf_counter()
    x = model.sample(a.n, seed=a.seed, first=a.first_sample, weights=a.weights,
                     batch=a.batch or 65536)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise RunError(f"GAN model {a.model} produced non-finite samples; nothing was "
                       f"written to {out}; retrain the model (e.g. with a lower lr_g)")
    config = {"model": os.path.abspath(a.model), "n": a.n, "seed": a.seed,
              "first_sample": a.first_sample, "weights": a.weights, "batch": a.batch}
    config.update(run_identity(a))
    attrs = {"source": os.path.abspath(a.model), "source_kind": "gan model",
             "sampler": "gan", "steps": 1, "seed": np.uint64(a.seed),
             "options": json.dumps({}), "device": "cpu", "first_sample": a.first_sample,
             "weights": a.weights, "model_step": int(model.step),
             "latent": model.config.latent, "latent_dim": model.config.latent_dim,
             "units": ("spins/bits decoded as " + model.data_encoding + " (sign of the tanh "
                       "relaxation)") if model.binary else "data units of the model's "
             "training set"}
    write_samples(out, x, attrs=attrs, prov=provenance(config, "cpu", "float64"))
    if not a.quiet:
        Progress(a.quiet, "sample").note(
            f"wrote {out}: {a.n} samples from the GAN ({time.perf_counter() - t0:.1f} s)")
