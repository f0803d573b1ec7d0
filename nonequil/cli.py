"""The ``nonequil`` command.  Heavy modules are imported inside each verb's handler."""
import argparse
import re
import shlex
import sys
import time

from . import __version__, _context

NEG_NUMBER = re.compile(r"^-(\d|\.\d)")


class CLIError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CLIError(f"{self.prog}: {message}")


def _common():
    """Parent parsers: flags every verb takes, and flags of verbs that run something."""
    base = argparse.ArgumentParser(add_help=False)
    g = base.add_argument_group("common flags")
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    run = argparse.ArgumentParser(add_help=False)
    g = run.add_argument_group("run flags")
    g.add_argument("--seed", type=seed_type, default=0,
                   help="Philox seed, 0..2**64-1 (default 0)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the kernels run (default cpu)")
    g.add_argument("--out", metavar="FILE.h5", help="output file (written as FILE.h5.partial, "
                   "renamed on success)")
    return base, run


def seed_type(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer") from None
    if not 0 <= v < 2**64:
        raise argparse.ArgumentTypeError(f"seed {v} out of range 0..2**64-1")
    return v


def int_at_least(lo, what="count"):
    """An argparse type: an integer >= lo (messages name ``what``)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: expected an integer "
                                             f">= {lo}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"invalid {what} {v}: expected an integer >= {lo}")
        return v
    return parse


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise CLIError(f"{text!r} is not a number") from None


def parse_numbers(text):
    """'1.5' -> 1.5; '-0.5,1.5' -> [-0.5, 1.5]."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise CLIError(f"{text!r}: expected a number or a comma list of numbers")
    vals = [_number(p) for p in parts]
    return vals[0] if len(vals) == 1 and "," not in text else vals


def parse_sets(items, text_keys=()):
    """['k=1:3', 'b=0.5', 'weights=0.3,0.7'] -> {'k': (1.0, 3.0), 'b': 0.5, 'weights': [...]}
    (values of ``text_keys``, e.g. ``schedule=cosine``, are kept as stripped text)"""
    out = {}
    for item in items or ():
        name, eq, val = item.partition("=")
        name = name.strip()
        if not eq or not name or not val.strip():
            raise CLIError(f"--set {item!r}: expected name=value or name=start:end")
        if name in text_keys:
            out[name] = val.strip()
        elif ":" in val:
            a, _, b = val.partition(":")
            out[name] = (_number(a), _number(b))
        else:
            out[name] = parse_numbers(val)
    return out


def parse_set_strings(items, example="--set kT=0.5"):
    """['kT=0.5', 'ends=periodic'] -> {'kT': '0.5', 'ends': 'periodic'} (values kept as text
    for verbs that type them per key); a repeated key is an error."""
    from .errors import InputError

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not key or not val.strip():
            raise InputError(f"--set {item!r}: expected NAME=VALUE (e.g. {example})")
        if key in out:
            raise InputError(f"--set {key} is given twice")
        out[key] = val.strip()
    return out


def _fix_negative_values(argv):
    """Join ``--opt -0.5,1.5`` into ``--opt=-0.5,1.5`` (argparse reads it as a flag)."""
    out = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if (a.startswith("--") and "=" not in a and i + 1 < len(argv)
                and NEG_NUMBER.match(argv[i + 1])):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# ------------------------------------------------------------------ progress
_OPEN_LINE = [False]      # a progress line without its newline is on stderr


def _end_progress_line():
    if _OPEN_LINE[0]:
        sys.stderr.write("\n")
        _OPEN_LINE[0] = False


def _simulate_line(info):
    frac = info["step"] / info["steps"]
    rate = info.get("walker_steps_per_s", float("nan"))
    eta = info["elapsed"] * (1 - frac) / frac if frac > 0 else float("nan")
    return (f"step {info['step']}/{info['steps']} ({100 * frac:5.1f}%), {info['frames']} "
            f"frames, {rate:.3g} walker-steps/s, ETA {eta:5.1f} s")


def _step_done(info):
    return info["step"] >= info["steps"]


class Progress:
    """A throttled one-line progress report on stderr, shared by every verb.

    ``fmt(info) -> text`` and ``done(info) -> bool`` adapt it to a verb's callback dicts
    (the defaults read ``simulate``'s).  An open line is ended before any note, warning or
    ``error:`` line, so those always start a line of their own.
    """

    def __init__(self, quiet, label, fmt=_simulate_line, done=_step_done):
        self.quiet, self.label, self.fmt, self.done = quiet, label, fmt, done
        self.last = 0.0
        self.width = 0

    def __call__(self, info):
        if self.quiet:
            return
        now = time.perf_counter()
        done = self.done(info)
        if now - self.last < 0.5 and not done:
            return
        self.last = now
        text = f"{self.label}: {self.fmt(info)}"
        sys.stderr.write("\r" + text.ljust(self.width))
        self.width = len(text)
        sys.stderr.flush()
        _OPEN_LINE[0] = True
        if done:
            _end_progress_line()

    def end_line(self):
        _end_progress_line()

    def note(self, msg):
        if not self.quiet:
            _end_progress_line()
            sys.stderr.write(f"{msg}\n")

    def warn(self, msg):
        warn(msg)


def warn(msg):
    _end_progress_line()
    sys.stderr.write(f"warning: {msg}\n")


# ------------------------------------------------------------------ verbs
def _add_simulate(sub, base, run):
    p = sub.add_parser(
        "simulate", parents=[base, run], help="simulate OU / Langevin walkers into H5MD",
        description="Simulate an ensemble of OU, overdamped or underdamped Langevin walkers "
        "and stream the trajectory into an H5MD file.  Parameters: ou (theta, mu, sigma); "
        "langevin (kT, gamma + potential keys); underdamped (kT, gamma, mass + potential "
        "keys).  Potentials: harmonic (k, center), double-well (a, b, k_perp), muller-brown "
        "(scale), gaussian-mixture (weights, means, sigmas).  A protocol is "
        "--set name=start:end (linear over the run).  Forward chains of diffusion models "
        "(exact Gaussian steps, t = step * dt): vp and subvp (schedule=linear|cosine|loglinear "
        "and its keys beta_min, beta_max | s, alpha_bar_min | gamma_min, gamma_max), ve "
        "(sigma_min, sigma_max); noise a dataset with --init DATA.h5.")
    p.add_argument("--process", choices=("ou", "langevin", "underdamped", "vp", "subvp", "ve"),
                   default="ou")
    p.add_argument("--potential", default="harmonic",
                   help="harmonic | double-well | muller-brown | gaussian-mixture")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="parameter value, comma list, or protocol start:end (repeatable)")
    p.add_argument("--walkers", type=int, help="number of walkers (default: from --init)")
    p.add_argument("--first-walker", type=int, default=0,
                   help="absolute index of the first walker (default 0)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--dt", type=float, required=True)
    p.add_argument("--record-every", type=int, help="record every K-th step "
                   "(default: steps/100); frame 0 and the final step are always recorded")
    p.add_argument("--x0", help="initial position: a number, a comma list (one per "
                   "dimension), or 'boltzmann' (exact equilibrium draws)")
    p.add_argument("--init", metavar="FILE.h5", help="start from /samples or the last "
                   "frame of a trajectory")
    p.add_argument("--dim", type=int, help="dimension (default: from --x0/--init/potential)")
    p.add_argument("--absorb", metavar="COND", help="absorbing boundary, e.g. 'x>=1.5' or "
                   "'x[1]<=-2'")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64")
    p.add_argument("--method", choices=("exact", "em"),
                   help="ou, vp, subvp, ve: exact (default) or em; langevin: em (default) or "
                   "exact (harmonic only)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint "
                   "(sharded: finished shards are kept, partial ones resumed)")
    g = p.add_argument_group("distributed (needs Dask: pip install 'nonequil[dist]')")
    g.add_argument("--cluster", metavar="local:N", help="start a local Dask cluster of N "
                   "worker processes and shard the walkers over them")
    g.add_argument("--scheduler", metavar="ADDRESS", help="shard the walkers over the "
                   "workers of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    g.add_argument("--shards", type=int_at_least(1, "shard count"), help="number of walker "
                   "shards, each its own H5MD file next to --out (default: one per worker)")
    p.set_defaults(handler=_cmd_simulate, needs_out=True)


def _cmd_simulate(a):
    from .simulate import SimulationConfig, simulate

    x0 = None
    if a.x0 is not None:
        x0 = a.x0.strip() if a.x0.strip() == "boltzmann" else parse_numbers(a.x0)
        if isinstance(x0, float):
            x0 = [x0]
    cfg = SimulationConfig(process=a.process, potential=a.potential,
                           params=parse_sets(a.set, text_keys=("schedule",)),
                           walkers=a.walkers, steps=a.steps, dt=a.dt,
                           first_walker=a.first_walker, record_every=a.record_every, x0=x0,
                           init=a.init, absorb=a.absorb, seed=a.seed, device=a.device,
                           precision=a.precision, method=a.method, dim=a.dim)
    if a.cluster or a.scheduler or a.shards:
        return _simulate_sharded(a, cfg)
    prog = Progress(a.quiet, "simulate")
    simulate(cfg, out=a.out, resume=a.resume, callback=prog, warn=warn)
    if not a.quiet:
        prog.note(f"wrote {a.out}")


def _shard_line(info):
    return (f"shard {info['shard']} {info['status']} in {info['seconds']:.1f} s; "
            f"{info['done']}/{info['total']} shards done")


def _simulate_sharded(a, cfg):
    from . import distributed as dist

    if a.shards and not (a.cluster or a.scheduler):
        raise CLIError("nonequil simulate: --shards needs --cluster local:N or --scheduler "
                       "ADDRESS")
    n = dist.check_target(a.scheduler, a.cluster)
    dist.prepare_sharded(cfg, a.out, shards=a.shards, workers=n, resume=a.resume)
    prog = Progress(a.quiet, "simulate", _shard_line, lambda i: i["done"] >= i["total"])
    with dist.connect(a.scheduler, a.cluster) as client:
        res = dist.simulate_sharded(cfg, a.out, client, shards=a.shards, resume=a.resume,
                                    callback=prog, extra={"cluster": a.cluster or a.scheduler})
    if not a.quiet:
        kept = sum(r["status"] == "kept" for r in res)
        prog.note(f"wrote {a.out}: {len(res)} shards" + (f" ({kept} kept from before)"
                                                          if kept else ""))


def _add_inspect(sub, base, run):
    p = sub.add_parser("inspect", parents=[base], help="show what an HDF5 file holds",
                       description="Print the layout, parameters and provenance of a file.")
    p.add_argument("file", metavar="FILE.h5")
    p.set_defaults(handler=_cmd_inspect, needs_out=False)


def _cmd_inspect(a):
    from .store import describe

    print(describe(a.file))
    from .distributed import shard_lines

    for line in shard_lines(a.file):
        print(line)


VERBS = [_add_simulate, _add_inspect]
# Verbs defined in their own light modules: each has ``add(sub, base, run)`` and imports its
# heavy modules inside the handler only; a module not (yet) present is skipped.
VERB_MODULES = ["nonequil.cmd_dataset", "nonequil.cmd_compare", "nonequil.cmd_train",
                "nonequil.cmd_sample", "nonequil.cmd_likelihood", "nonequil.cmd_gan",
                "nonequil.cmd_experiment", "nonequil.cmd_bench", "nonequil.cmd_sweep"]


def _verb_adders():
    import importlib

    adders = list(VERBS)
    for name in VERB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        adders.append(mod.add)
    return adders


def build_parser():
    base, run = _common()
    p = _Parser(prog="nonequil", description="Langevin/OU diffusion chains on Numba CPU and "
                "CUDA kernels, checked against exact thermodynamics.")
    p.add_argument("--version", action="version", version=f"nonequil {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for add in _verb_adders():
        add(sub, base, run)
    return p


def _cache_note(a):
    """One ``note:`` line on stderr when Numba's on-disk cache had to be disabled (no writable
    cache directory), so that slow starts are explained; silent with ``--quiet``."""
    from kernels import _cachedir  # light: os, hashlib, tempfile

    if _cachedir.NOTE.startswith("numba cache: no writable") and not getattr(a, "quiet", False):
        sys.stderr.write(f"note: {_cachedir.NOTE}\n")


def main(argv=None):
    argv = _fix_negative_values(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in argv
    outer, _context.COMMAND_LINE = _context.COMMAND_LINE, shlex.join(["nonequil", *argv])
    try:
        return _main(argv, debug)
    finally:
        _context.COMMAND_LINE = outer


def _main(argv, debug):
    try:
        a = build_parser().parse_args(argv)
        a.argv = argv       # the verb's own arguments, for verbs that re-run them (sharding)
        if a.verb is None:
            build_parser().print_help()
            return 2
        if getattr(a, "needs_out", False) and not a.out:
            raise CLIError(f"nonequil {a.verb}: --out FILE.h5 is required")
        _cache_note(a)
        a.handler(a)
        return 0
    except KeyboardInterrupt:
        _end_progress_line()
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        from .errors import InputError, RunError

        if isinstance(e, (CLIError, InputError)):
            code = 2
        elif isinstance(e, RunError):
            code = 1
        elif isinstance(e, OSError):
            code = 1
            e = f"{e.strerror or e} ({e.filename})" if getattr(e, "filename", None) else e
        else:
            code = 1
            e = f"internal error {type(e).__name__}: {e} (rerun with --debug for details)"
        msg = str(e).replace("\n", " ")
        _end_progress_line()
        sys.stderr.write(f"error: {msg}\n")
        return code


if __name__ == "__main__":
    sys.exit(main())
