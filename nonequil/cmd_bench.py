"""``nonequil bench [--quick] [--device cpu|cuda] [--json] [--only NAMES] [--no-scaling]``.

Runs the benchmark suite of ``experiments/bench_suite.py`` (issue 8): every benchmark module
in a fresh process, one table of figures, ratios against baselines run in the same session,
and PASS/FAIL against each target.  The suite lives in the source tree beside the package
(``experiments/``), so the verb needs a source checkout (an editable install).  Only
argparse-level imports here; the suite is imported inside the handler.
"""
import os

ONLY = "ou,mb,ising,train,sample,memory,startup"


def add(sub, base, run):
    p = sub.add_parser(
        "bench", parents=[base], help="run the benchmark suite (speed, memory, start-up)",
        description="Measure, in one session on this machine: the OU ensemble "
        "(walker-steps/s, EM and exact, float64/float32, against numpy, torch and jax, and "
        "the fraction of raw Philox normal throughput), overdamped Langevin in the "
        "Muller-Brown potential, Ising checkerboard Metropolis, DSM training and reverse "
        "sampling (when their benchmark modules are present), each at 2-3 sizes; the peak "
        "memory of a streamed 10^7-walker OU run at two step counts; and start-up times "
        "(nonequil --help, the first simulated step cold and warm).  Prints one table with "
        "ratios and PASS/FAIL against the targets of issue 8.  The full run takes tens of "
        "minutes; --quick uses tiny sizes (about a minute) and checks that it runs, not speed.")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no cold start-up, one "
                   "scaling point (about a minute)")
    p.add_argument("--json", action="store_true", help="print only the JSON document on "
                   "stdout (progress on stderr)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default), or cuda to add the GPU figures (numba.cuda kernels "
                   "against torch CUDA) where a module has them")
    p.add_argument("--only", metavar="NAMES", help=f"comma list of benchmarks to run, out of "
                   f"{ONLY} (default: all)")
    p.add_argument("--no-scaling", action="store_true", help="skip the runs at other sizes")
    p.set_defaults(handler=_cmd_bench, needs_out=False)


def _suite():
    """Import ``experiments.bench_suite`` from the source tree beside the package."""
    import sys

    from .errors import InputError

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "experiments", "bench_suite.py")):
        raise InputError(f"nonequil bench needs the source tree: {root}/experiments/"
                         "bench_suite.py is missing; run it from a checkout installed with "
                         "pip install -e .")
    if root not in sys.path:
        sys.path.insert(0, root)
    from experiments import bench_suite

    return bench_suite


def _cmd_bench(a):
    import json
    import sys

    from .errors import InputError

    suite = _suite()
    try:
        only = suite.parse_only(a.only)
    except ValueError as e:
        raise InputError(str(e)) from None
    doc = suite.run_suite(quick=a.quick, device=a.device, only=only, scaling=not a.no_scaling,
                          say=suite.Reporter(a.quiet))
    if a.json:
        print(json.dumps(doc, indent=1))
    else:
        print(suite.fmt_table(doc))
    sys.stdout.flush()
    if doc["summary"]["errors"]:
        from .errors import RunError

        raise RunError("benchmark module(s) failed: " + ", ".join(
            f"{k} ({doc['benchmarks'][k]['reason']})" for k in doc["summary"]["errors"]))
