"""``nonequil dataset NAME [--set key=value ...] --n N [--method M] [--seed S] --out FILE.h5
[--cluster local:N | --scheduler ADDRESS] [--shards K] [--resume]``.

With --cluster/--scheduler the samples are sharded by index over Dask workers
(``nonequil.distributed.dataset_sharded``): bit for bit the one-process file's data, for
every generator but the replica chains (ising, phi4), which are refused.

Only argparse-level imports here: ``nonequil.datasets`` (numpy, numba, scipy, h5py) is
imported inside the handler, and by ``dataset --help`` to list the generators and keys.
"""
import argparse

from .cli import int_at_least


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
    g = p.add_argument_group("distributed (needs Dask: pip install 'nonequil[dist]'; not "
                             "for ising and phi4)")
    g.add_argument("--cluster", metavar="local:N", help="start a local Dask cluster of N "
                   "worker processes and shard the samples over them")
    g.add_argument("--scheduler", metavar="ADDRESS", help="shard the samples over the "
                   "workers of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    g.add_argument("--shards", type=int_at_least(1, "shard count"), help="number of sample "
                   "shards, each its own file next to --out, joined by virtual datasets "
                   "(default: one per worker)")
    g.add_argument("--resume", action="store_true", help="sharded runs: keep the finished "
                   "shard files of an interrupted run and run only the missing ones")
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


def _dataset_sharded(a, params):
    from . import distributed as dist
    from .cli import Progress
    from .errors import InputError

    if a.shards and not (a.cluster or a.scheduler):
        raise InputError("nonequil dataset: --shards needs --cluster local:N or --scheduler "
                       "ADDRESS")
    if a.resume and not (a.cluster or a.scheduler):
        raise InputError("nonequil dataset: --resume applies to sharded runs (--cluster or "
                       "--scheduler); a one-process dataset run starts afresh")
    dist.prepare_dataset(a.name, a.n, params, a.method, a.seed, a.device, a.out,
                         shards=a.shards, workers=dist.parse_cluster(a.cluster) if a.cluster
                         else None, resume=a.resume)        # every check before the cluster
    dist.check_target(a.scheduler, a.cluster)
    prog = Progress(a.quiet, f"dataset {a.name}", lambda i: f"shard {i['shard']} "
                    f"{i['status']}; {i['done']}/{i['total']} shards done",
                    lambda i: i["done"] >= i["total"])
    with dist.connect(a.scheduler, a.cluster) as client:
        res = dist.dataset_sharded(a.name, a.n, params, a.method, a.seed, a.out, client,
                                   shards=a.shards, resume=a.resume, callback=prog,
                                   extra={"cluster": a.cluster or a.scheduler})
    kept = sum(r["status"] == "kept" for r in res)
    prog.note(f"wrote {a.out}: {a.n} samples of {a.name} in {len(res)} shards"
              + (f" ({kept} kept from before)" if kept else ""))


def _cmd_dataset(a):
    from .datasets import resolve, write_dataset
    from .store import check_out_path

    params = _parse_sets(a.set)
    if a.cluster or a.scheduler or a.shards or a.resume:
        return _dataset_sharded(a, params)
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
