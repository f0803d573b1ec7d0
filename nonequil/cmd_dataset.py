"""``nonequil dataset NAME [--set key=value ...] --n N [--method M] [--seed S] --out FILE.h5``.

Only argparse-level imports here: ``nonequil.datasets`` (numpy, numba, scipy, h5py) is
imported inside the handler, and by ``dataset --help`` to list the generators and keys.
"""
import argparse


def add(sub, base, run):
    p = sub.add_parser(
        "dataset", parents=[base, run], help="generate a physics dataset into HDF5",
        description="Draw N samples of a physics dataset (exact where possible, else Markov\n"
        "chain Monte Carlo spaced by measured autocorrelation times) and write them as\n"
        "/samples with their source, parameters, units, method and provenance (attributes),\n"
        "plus reference observables.  The same arguments give the same file, bit for bit.\n"
        "Lists are comma lists: --set weights=0.3,0.7 --set means=-1,1.5.\n"
        "Example: nonequil dataset ising --set L=32 --set T=2.0 --n 10000 --out ising.h5")
    p.add_argument("name", metavar="NAME", help="double-well | muller-brown | "
                   "gaussian-mixture | harmonic-chain | ising | phi4 | swiss-roll")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="a parameter: number, comma list or choice (repeatable)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--method", help="sampling method (default: the generator's first; "
                   "see the list below)")
    p.set_defaults(handler=_cmd_dataset, needs_out=True)
    plain = p.format_help

    def format_help():               # the generator table needs the registry: built lazily
        from .datasets import describe

        p.epilog = describe()
        return plain()
    p.format_help = format_help
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def _parse_sets(items):
    from .cli import parse_set_strings

    return parse_set_strings(items, "--set kT=0.5")


def _dataset_line(info):
    return f"{info['stage']} {info['done']}/{info['total']}"


def _dataset_done(info):
    return info["done"] >= info["total"]


def _cmd_dataset(a):
    from .datasets import resolve, write_dataset
    from .store import check_out_path

    params = _parse_sets(a.set)
    check_out_path(a.out)
    resolve(a.name, params, a.method, a.n, a.device)     # every check before any work
    from .cli import Progress

    prog = Progress(a.quiet, f"dataset {a.name}", _dataset_line, _dataset_done)
    try:
        ds = write_dataset(a.out, a.name, a.n, params, a.method, a.seed, a.device, prog)
    except BaseException:
        prog.end_line()                 # the CLI's `error:` line starts on a line of its own
        raise
    prog.note(f"wrote {a.out}: {a.n} samples of {a.name} ({ds.attrs['method']}) "
              f"{tuple(ds.samples.shape)} in {ds.elapsed:.2f} s")
