"""``nonequil compare SAMPLES.h5 (--reference DATA.h5 | --analytic NAME [--set ...]) [--json]``.

Light at import (argparse only): numpy, scipy and h5py are imported inside the handler.
The metrics and their JSON keys are documented in :mod:`nonequil.compare`.
"""
import sys

from .cli import int_at_least, seed_type

LAWS = ("double-well", "harmonic", "muller-brown", "gaussian-mixture", "harmonic-chain", "ising")


_count = int_at_least(0)


def add(sub, base, run):
    p = sub.add_parser(
        "compare", parents=[base], help="compare samples with reference samples or an exact law",
        description="Compare a sample set (/samples[N] or [N, ...]) with reference samples "
        "(--reference: Wasserstein-1, sliced W1, energy distance, MMD^2 with a Gaussian "
        "kernel at the median-heuristic bandwidth, KS and histogram JS per coordinate, "
        "moments) or with an exact law (--analytic NAME: W1 and KS to the exact CDF, "
        "histogram JS/KL, log-likelihood, moments, basin populations and free-energy "
        "differences, Ising energy against Kaufman's exact finite-lattice value).  Laws and "
        "their --set keys: double-well (a, b, kT, k_perp), harmonic (k, center, kT), "
        "muller-brown (scale, kT), gaussian-mixture (weights, means, sigmas), harmonic-chain "
        "(particles, k, k0, ends=fixed|periodic, kT), ising (L, T).  Prints a table of "
        "metric, value and standard error; --json prints a flat JSON object of metric -> "
        "{value, se} instead (keys documented in nonequil.compare; only ever added).")
    p.add_argument("samples", metavar="SAMPLES.h5", help="the sample set to check")
    g = p.add_argument_group("what to compare with (exactly one)")
    g.add_argument("--reference", metavar="DATA.h5", help="reference sample set")
    g.add_argument("--analytic", metavar="NAME", help="exact law: " + ", ".join(LAWS))
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="parameter of the --analytic law (repeatable; comma lists for "
                   "weights, means, sigmas)")
    p.add_argument("--dataset", default="/samples", metavar="PATH",
                   help="dataset in SAMPLES.h5 (default /samples)")
    p.add_argument("--reference-dataset", metavar="PATH",
                   help="dataset in DATA.h5 (default: the same as --dataset)")
    p.add_argument("--json", action="store_true", help="print only a JSON object on stdout")
    p.add_argument("--seed", type=seed_type, default=0,
                   help="seed of the sliced-W1 directions, the MMD bandwidth subsample and "
                   "the pairwise subsample (default 0)")
    p.add_argument("--max-coordinates", type=_count, default=16, metavar="K",
                   help="per-coordinate metrics for the first K coordinates (default 16)")
    p.add_argument("--reweight", action="store_true",
                   help="also importance-weight the samples to the exact law (from "
                   "--analytic, else the law the --reference data file names, else the one "
                   "nonequil sample --log-weights recorded) with /log_proposal of SAMPLES.h5: "
                   "reweighted free energy -kT log mean(w), effective sample size, "
                   "self-normalised observables, each against its exact value with bootstrap "
                   "SEs (keys reweight_*; nonequil.reweight)")
    p.add_argument("--log-density-dataset", default="/log_proposal", metavar="PATH",
                   help="--reweight: the per-sample log-densities in SAMPLES.h5 (default "
                   "/log_proposal)")
    p.set_defaults(handler=_cmd_compare, needs_out=False)


def _parse_set(items):
    """``--set`` items -> dict; ``ends`` keeps its text, the rest via ``cli.parse_sets``."""
    from .compare import _STRING_KEYS
    from .errors import InputError

    from .cli import CLIError, parse_sets  # the same module object raises what we catch

    out = {}
    for item in items:
        name, eq, val = item.partition("=")
        if eq and name.strip() in _STRING_KEYS and val.strip():
            out[name.strip()] = val.strip()
            continue
        try:
            out.update(parse_sets([item]))
        except CLIError as e:
            msg = str(e)
            raise InputError(msg if msg.startswith("--set") else f"--set {item}: {msg}") from None
    return out


def _read(path, dataset, what):
    from .errors import InputError
    from .store import open_h5, read_samples

    with open_h5(path, what):  # checks 1-2, naming which file
        pass
    try:
        arr = read_samples(path, dataset)  # checks 3-6
    except InputError as e:
        raise InputError(f"{what} {e}; choose the dataset with "
                         f"{'--dataset' if what.startswith('samples') else '--reference-dataset'}"
                         if "has no dataset" in str(e) else f"{what} {e}") from None
    if arr.shape[0] < 2:
        raise InputError(f"{path}:{dataset} holds {arr.shape[0]} sample; compare needs at "
                         "least 2")
    return arr


def _fmt(v):
    return "undefined" if v is None else f"{v:.6g}"


def table(result, header=()):
    """A readable aligned table: metric, value, +- se."""
    w = max([len("metric")] + [len(k) for k in result])
    rows = [*header, f"{'metric':<{w}}  {'value':>14}  {'se':<12}"]
    for k, e in result.items():
        se = "" if e["se"] is None else f"± {e['se']:.3g}"
        rows.append(f"{k:<{w}}  {_fmt(e['value']):>14}  {se}")
    return "\n".join(rows)


def _cmd_compare(a):
    from .errors import InputError

    if a.reference is None and a.analytic is None and a.reweight:
        res, header = _reweight(a, None, [])
        _print(a, res, header)
        return
    if (a.reference is None) == (a.analytic is None):
        raise InputError("give exactly one of --reference DATA.h5 (a sample set) or "
                         f"--analytic NAME (one of {', '.join(LAWS)})")
    from . import compare as C

    params = None
    if a.reference is not None:
        if a.set:
            raise InputError(f"--set {a.set[0]}: parameters apply to --analytic laws only, "
                             "not to --reference samples")
    else:
        if a.analytic not in C.ANALYTIC_LAWS:
            raise InputError(f"--analytic {a.analytic}: unknown law; valid: "
                             f"{', '.join(C.ANALYTIC_LAWS)}")
        params = _parse_set(a.set)
        C._resolve(a.analytic, params)  # unknown keys / bad values before reading any file

    x = _read(a.samples, a.dataset, "samples file")
    if a.reweight:
        _log_density(a, x)          # checked before any work
    header = [f"samples:   {a.samples}:{a.dataset}  shape {x.shape}  dtype {x.dtype}"]
    if a.reference is not None:
        rds = a.reference_dataset or a.dataset
        y = _read(a.reference, rds, "reference file")
        if not C._same_shape(x.shape, y.shape):
            raise InputError(f"{a.samples}:{a.dataset} has shape {x.shape} but "
                             f"{a.reference}:{rds} has shape {y.shape}; the per-sample shapes "
                             "(all but the first axis) must match")
        header.append(f"reference: {a.reference}:{rds}  shape {y.shape}  dtype {y.dtype}")
        res = C.compare_samples(x, reference=y, seed=a.seed, max_coordinates=a.max_coordinates)
        if res["pairwise_n_samples"]["value"] < len(x) or \
                res["pairwise_n_reference"]["value"] < len(y):
            msg = (f"energy distance and MMD use {res['pairwise_n_samples']['value']:.0f} of "
                   f"{len(x)} samples and {res['pairwise_n_reference']['value']:.0f} of "
                   f"{len(y)} reference samples (random subsets, --seed {a.seed})")
            header.append(f"note: {msg}")
            if not a.quiet and a.json:
                sys.stderr.write(f"note: {msg}\n")
        header.append("MMD^2 kernel: Gaussian exp(-|x-y|^2 / (2 h^2)), h = "
                      f"{res['mmd2_rbf_bandwidth']['value']:.6g} (median pooled pairwise "
                      "distance)")
    else:
        try:
            res = C.compare_samples(x, analytic=a.analytic, params=params, seed=a.seed,
                                    max_coordinates=a.max_coordinates)
        except InputError as e:
            raise InputError(f"{a.samples}:{a.dataset}: {e}") from None
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        header.append(f"analytic:  {a.analytic} ({shown})")
    header.append("se: standard error (independent samples assumed; Ising observables use "
                  "tau_int); *_exact: exact values")
    if a.reweight:
        extra, header = _reweight(a, params, header, x)
        res.update(extra)
    _print(a, res, header)


def _print(a, res, header):
    import json

    if a.json:
        sys.stdout.write(json.dumps(res, indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(table(res, header + [""]) + "\n")


def _reweight(a, params, header, x=None):
    """The reweight_* keys (nonequil.reweight.reweight_to_analytic) and the header lines."""
    import json

    import h5py

    from .cli import warn
    from .errors import InputError
    from .reweight import law_of_data_file, reweight_to_analytic

    if x is None:
        x = _read(a.samples, a.dataset, "samples file")
    lq = _log_density(a, x)
    with h5py.File(a.samples, "r") as f:
        at = {k: (v.decode() if isinstance(v, bytes) else v)
              for k, v in f[a.log_density_dataset].attrs.items()}
    if a.analytic is not None:
        law, how = (a.analytic, params), "--analytic"
    elif a.reference is not None:
        law, how = law_of_data_file(a.reference, a.reference_dataset or a.dataset), a.reference
        if law is None:
            raise InputError(f"--reweight: {a.reference} names no exact law (no generator "
                             "attribute nonequil compare knows); give --analytic NAME "
                             "[--set ...]")
    else:
        name = at.get("law")
        if not name:
            raise InputError(f"--reweight: {a.samples} records no exact law; give --analytic "
                             f"NAME [--set ...] (one of {', '.join(LAWS)})")
        law = (str(name), json.loads(at["law_parameters"]))
        how = f"{a.samples} (the law of the model's training data)"
    try:
        out = reweight_to_analytic(x, lq, law[0], law[1], seed=a.seed)
    except InputError as e:
        raise InputError(f"{a.samples}:{a.dataset}: {e}") from None
    if "Hutchinson" in str(at.get("meaning", "")):
        warn("the log-densities use Hutchinson's trace estimator: exponentiated, they give "
             "biased weights (E[exp(noisy log q)] != q)")
    if out["reweight_low_ess"]["value"]:
        warn(f"effective sample size {out['reweight_ess']['value']:.3g} is below 1 % of the "
             f"{x.shape[0]} samples: the reweighted estimates and their error bars are "
             "unreliable")
    shown = ", ".join(f"{k}={v}" for k, v in (law[1] or {}).items()) or "defaults"
    header = list(header) + [f"reweighted to {law[0]} ({shown}) from {how}, log-densities "
                             f"{a.samples}:{a.log_density_dataset}; se: bootstrap"]
    return out, header


def _log_density(a, x):
    """The per-sample log-densities of SAMPLES.h5 (checked: present, finite, one per sample)."""
    import h5py

    from .errors import InputError
    from .store import read_samples

    with h5py.File(a.samples, "r") as f:
        present = a.log_density_dataset in f
    if not present:
        raise InputError(f"--reweight: {a.samples} has no {a.log_density_dataset}; write it "
                         "with nonequil sample --log-weights (or name the dataset with "
                         "--log-density-dataset)")
    lq = read_samples(a.samples, a.log_density_dataset)
    if lq.ndim != 1 or lq.shape[0] != x.shape[0]:
        raise InputError(f"{a.samples}:{a.log_density_dataset} has shape {lq.shape}; expected "
                         f"one log-density per sample, shape [{x.shape[0]}]")
    return lq
