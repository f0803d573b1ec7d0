"""``nonequil train DATA.h5 [--dataset /samples] [--process vp|subvp|ve|ddpm|binomial]
[--set name=value ...] [--steps N] [--batch B] [--seed S] --out MODEL.h5 [--resume] [--quiet]``.

Only argparse-level imports here: ``nonequil.train`` (numpy, numba, h5py) is imported inside
the handler.
"""
import time

PROCESSES = ("vp", "subvp", "ve", "ddpm", "binomial")


def add(sub, base, run):
    p = sub.add_parser(
        "train", parents=[base, run], help="learn a score model from a sample set",
        description="Fit an MLP score model to DATA.h5:/samples by denoising score matching "
        "(Philox-driven batches, times and noises: the result is a function of the data, the "
        "settings and --seed only) and write it to --out with its configuration, data "
        "normalisation, weights, EMA, Adam state, loss history and provenance.  A checkpoint "
        "is kept beside OUT.partial every ~10 s; --resume continues a killed run bit for "
        "bit.  Defaults: VP-SDE (linear beta 0.1..20), 3 x 128 SiLU, eps-parametrisation, "
        "simple loss, batch 512, 20000 steps, Adam lr 2e-3 with warm-up and cosine decay, "
        "EMA 0.999.  Settings: --set key=value, e.g. --set width=64 --set lr=1e-3 "
        "--set weighting=likelihood --set beta_max=15 (an unknown key lists the valid ones).")
    p.add_argument("data", metavar="DATA.h5", help="HDF5 file holding the samples [N] or [N, ...]")
    p.add_argument("--dataset", default="/samples", help="dataset path inside DATA.h5 "
                   "(default /samples)")
    p.add_argument("--process", choices=PROCESSES, default="vp",
                   help="forward process (default vp); binomial needs binary data (0/1 or "
                   "-1/+1)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="a training or process setting (repeatable)")
    p.add_argument("--steps", type=int, help="optimisation steps (default 20000)")
    p.add_argument("--batch", type=int, help="mini-batch size (default 512; shrinks to N "
                   "with a note if the data are fewer)")
    p.add_argument("--threads", type=int, help="BLAS threads (default 1: faster than 2 on a "
                   "busy 2-core machine; the last bits of the result may depend on it)")
    p.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between checkpoints (default 10)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.set_defaults(handler=_cmd_train, needs_out=True)


def _parse_sets(items):
    from .cli import parse_set_strings

    return parse_set_strings(items, "--set lr=1e-3")


def _train_line(info):
    return (f"step {info['step']}/{info['steps']} ({100.0 * info['step'] / info['steps']:5.1f}%), "
            f"loss {info['loss_avg']:.4g}, {info['steps_per_s']:.3g} steps/s, "
            f"ETA {info['eta']:6.1f} s")


def _cmd_train(a):
    from .train import config_from_sets, train

    fields = {"seed": a.seed}
    if a.steps is not None:
        fields["steps"] = a.steps
    if a.batch is not None:
        fields["batch"] = a.batch
    if a.device != "cpu":
        from .errors import InputError

        raise InputError(f"--device {a.device}: training runs on the CPU only; use --device cpu")
    if not a.checkpoint_every > 0:
        from .errors import InputError

        raise InputError(f"--checkpoint-every must be > 0 seconds, got {a.checkpoint_every}")
    cfg = config_from_sets(_parse_sets(a.set), a.process, **fields)
    from .cli import Progress

    prog = Progress(a.quiet, "train", _train_line)
    t0 = time.perf_counter()
    model = train(a.data, cfg, out=a.out, resume=a.resume, callback=prog, warn=prog.warn,
                  note=lambda m: prog.note(f"note: {m}"), dataset=a.dataset,
                  threads=a.threads, checkpoint_seconds=a.checkpoint_every)
    n = 200 if model.step >= 200 else model.step
    tail = float(model.loss[model.step - n:model.step].mean()) if n else float("nan")
    prog.note(f"wrote {a.out}: {model.step} steps in {time.perf_counter() - t0:.1f} s, "
              f"final loss {tail:.4g} (mean of the last {n} steps)")
