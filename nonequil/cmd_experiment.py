"""``nonequil experiment NAME [--quick] [--out DIR] [--device cpu|cuda] [--seed S] [--quiet]``
and ``nonequil experiment --list``.

An experiment is a script in ``experiments/`` (also runnable as ``python -m
experiments.NAME``) that runs the whole chain: physics data (HDF5) -> simulation or training
-> the reversed chain -> comparison with analytic thermodynamics -> a report directory
``DIR/report.md``, ``DIR/results.json``, ``DIR/*.png`` and the HDF5 files it made.  The
shared machinery (argument checks, the ``DIR.partial`` -> ``DIR`` lifecycle, the report
writer) is ``experiments/_report.py``.

Light at import (argparse only): the experiment module is imported inside the handler.
"""
import contextlib
import os
import sys

# name -> (module, one-line summary); the order is the order of ``--list``
EXPERIMENTS = {
    "ou": ("experiments.ou", "forward OU from a bimodal start; the reverse VP chain with the "
           "exact and the learned score against the analytic marginals"),
    "double-well": ("experiments.double_well", "Boltzmann double well with a tilt: VP "
                    "diffusion model vs quadrature (W1, KS, populations, Delta F, NLL vs "
                    "entropy)"),
    "muller-brown": ("experiments.muller_brown", "2-D Mueller-Brown: basin populations and "
                     "the free-energy surface -kT log p from diffusion samples vs the exact "
                     "one"),
    "harmonic-chain": ("experiments.harmonic_chain", "64-particle harmonic chain: learned vs "
                       "exact score, NLL vs the exact entropy, normal-mode spectrum"),
    "kramers": ("experiments.kramers", "double-well escape: MFPT from simulated trajectories "
                "vs the exact integral and Kramers' formula over barrier heights"),
    "jarzynski": ("experiments.jarzynski", "dragged trap and stiffness change: work "
                  "histograms, Jarzynski and BAR Delta F vs exact, estimator bias vs n"),
    "gan-optimum": ("experiments.gan_optimum", "GAN theory: D trained alone vs D*, the value "
                    "vs 2 JS - 2 log 2, and the equilibrium D = 1/2, L = -2 log 2"),
    "ising": ("experiments.ising", "2-D Ising L=16 below, at and above Tc: MC vs Kaufman's "
              "exact energy; binomial diffusion vs GAN energy and |m| distributions"),
    "phi4": ("experiments.phi4", "lattice phi^4, broken and symmetric phase: magnetisation, "
             "action and two-point function of diffusion and GAN fields vs HMC"),
    "swiss-roll": ("experiments.swiss_roll", "Sohl-Dickstein 2015 swiss roll: forward and "
                   "reverse trajectories, the likelihood bound K - L_null in bits vs exact"),
}


def add(sub, base, run):
    p = sub.add_parser(
        "experiment", parents=[base, run], help="run an end-to-end physics experiment",
        description="Run an experiment of experiments/ end to end (data, training or "
        "simulation, the reversed chain, the comparison with analytic thermodynamics) and "
        "write the report directory --out DIR: report.md (the exact command, a table of "
        "results with error bars and a verdict per check), results.json (the same figures), "
        "PNG figures and the HDF5 files it made.  The directory is written as DIR.partial "
        "and renamed on success; an existing non-empty DIR is refused.  --quick runs small "
        "settings (at most ~60 s on 2 cores, for CI).  --list shows the experiments.")
    p.add_argument("name", nargs="?", metavar="NAME", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--quick", action="store_true", help="small settings (<= ~60 s)")
    for act in p._actions:          # --out names a directory here, not a file
        if act.dest == "out":
            act.metavar = "DIR"
            act.help = ("report directory (default runs/NAME, or runs/NAME-quick with "
                        "--quick); written as DIR.partial and renamed on success")
    g = p.add_argument_group("distributed (experiments that run a sweep: kramers; needs "
                             "Dask: pip install 'nonequil[dist]')").add_mutually_exclusive_group()
    g.add_argument("--cluster", metavar="local:N", help="run the experiment's sweep on a local "
                   "Dask cluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run the experiment's sweep on the "
                   "workers of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    p.set_defaults(handler=_cmd_experiment, needs_out=False)


def _listing():
    w = max(len(k) for k in EXPERIMENTS)
    return "\n".join(f"{k.ljust(w)}  {v[1]}" for k, v in EXPERIMENTS.items())


def import_experiment(name):
    """The module of experiment ``name`` (an InputError listing the valid names if unknown).

    ``experiments/`` lives beside the package in the source tree; when it is not importable
    from the current directory its parent is put on ``sys.path``.
    """
    import importlib

    from .errors import InputError

    if name not in EXPERIMENTS:
        raise InputError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)} "
                         "(nonequil experiment --list)")
    mod = EXPERIMENTS[name][0]
    try:
        return importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name not in ("experiments", mod):
            raise
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, mod.replace(".", os.sep) + ".py")):
        raise InputError(f"experiment {name!r}: its script {mod} is not found (the "
                         "experiments/ directory of the source tree is needed)")
    sys.path.insert(0, root)
    return importlib.import_module(mod)


def _cmd_experiment(a):
    from .errors import InputError

    if a.list:
        if a.name:
            raise InputError(f"give either --list or an experiment name, not both "
                             f"(got {a.name!r})")
        print(_listing())
        return
    if not a.name:
        raise InputError("nonequil experiment: give an experiment NAME or --list; valid "
                         f"names: {', '.join(EXPERIMENTS)}")
    mod = import_experiment(a.name)
    from experiments import _report

    target = getattr(mod, "dask_target", None)
    if (a.cluster or a.scheduler) and target is None:
        raise InputError(f"experiment {a.name} does not run on Dask: drop --cluster/--scheduler "
                         "(experiments that do: kramers)")
    dask = a.cluster or a.scheduler      # (else keep a target set around this call)
    with target(a.scheduler, a.cluster) if dask else contextlib.nullcontext():
        _report.run_module(mod, quick=a.quick, out=a.out, device=a.device, seed=a.seed,
                           quiet=a.quiet, argv=["nonequil", "experiment"] + _argv_tail(a))


def _argv_tail(a):
    """The command as given (for the report), rebuilt from the parsed arguments."""
    tail = [a.name]
    if a.quick:
        tail.append("--quick")
    if a.out:
        tail += ["--out", a.out]
    if a.device != "cpu":
        tail += ["--device", a.device]
    tail += ["--seed", str(a.seed)]
    for flag in ("cluster", "scheduler"):
        if getattr(a, flag):
            tail += [f"--{flag}", getattr(a, flag)]
    if a.quiet:
        tail.append("--quiet")
    return tail
