"""``nonequil likelihood MODEL.h5 DATA.h5 [--dataset /samples] [--method ode|elbo] [--n N]
[--seed S] [--json] [--quiet]``.

Light at import (argparse only): numpy, numba, scipy and h5py are imported in the handler.
The quantities, their units and the randomness are documented in :mod:`nonequil.likelihood`.
``--json`` prints one JSON object on stdout with at least ``method``, ``n``,
``nll_nats_per_sample``, ``nll_nats_per_dim`` and ``se`` (keys are only ever added).  Inputs
are checked before any work: the model file (``nonequil.models.load``), then the data file
(``nonequil.store.read_samples``: exists, HDF5, dataset, rank/dtype, non-empty, finite), its
per-sample shape against the model's, and the options.  A binomial-chain model takes
``--method elbo`` only (bits have no ODE density); its data must be 0/1 bits, or -1/+1 spins
for a model trained on spins.
"""
import sys

from .cli import int_at_least, seed_type

_positive = int_at_least(1)


def _positive_float(text):
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid tolerance {text!r}: expected a number "
                                         "> 0") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"invalid tolerance {v}: expected a number > 0")
    return v


def add(sub, base, run):
    p = sub.add_parser(
        "likelihood", parents=[base], help="log-likelihood of data under a trained model",
        description="Negative log-likelihood of a sample set under a trained score model "
        "(nonequil train), in nats per sample and per dimension, in the data's own units "
        "(the normalisation's Jacobian included), with standard errors over the points.  "
        "--method ode (default): exact, by the probability-flow ODE (RK45) and the "
        "instantaneous change of variables; exact Jacobian trace up to 64 dimensions, "
        "Hutchinson's estimator (with its noise in the error bar) above.  --method elbo: "
        "the variational bounds, the discrete-chain (Sohl-Dickstein / DDPM) bound on "
        "--steps steps and the continuous-time VDM bound, with the decoder "
        "N(x; z_0/alpha_0, sigma_0^2/alpha_0^2); for a binomial-chain model (bits or spins) "
        "the bound of the reverse bit-flip chain that nonequil sample runs, over its T "
        "steps, in nats per sample and per bit (--method ode does not apply to bits).")
    p.add_argument("model", metavar="MODEL.h5", help="model file written by nonequil train")
    p.add_argument("data", metavar="DATA.h5", help="HDF5 file with the points /samples[N, ...]")
    p.add_argument("--dataset", default="/samples", metavar="PATH",
                   help="dataset in DATA.h5 (default /samples)")
    p.add_argument("--method", default="ode", metavar="NAME",
                   help="ode (exact, default) or elbo (variational bounds)")
    p.add_argument("--n", type=_positive, metavar="N",
                   help="use the first N points (default: all)")
    p.add_argument("--seed", type=seed_type, default=0,
                   help="Philox seed of the Hutchinson probes and the ELBO noise (default 0)")
    p.add_argument("--steps", type=_positive, metavar="K",
                   help="elbo: steps of the discrete bound (default 1000; T - 1 for ddpm; "
                   "the binomial chain always uses its T)")
    p.add_argument("--grid", default="t", metavar="NAME",
                   help="elbo: times of the discrete bound, t (uniform in t, default) or "
                   "logsnr (uniform in log SNR: no step carries the steep fall of SNR near "
                   "t_eps; vp, subvp, ve only)")
    p.add_argument("--time-samples", type=_positive, default=64, metavar="M",
                   help="elbo: stratified log-SNR values per point for the VDM bound "
                   "(default 64)")
    p.add_argument("--trace", default="auto", metavar="NAME",
                   help="ode: auto (exact up to 64 dimensions, default), exact, hutchinson")
    p.add_argument("--rtol", type=_positive_float, default=1e-6, help="ode: RK45 relative "
                   "tolerance (default 1e-6)")
    p.add_argument("--atol", type=_positive_float, default=1e-6, help="ode: RK45 absolute "
                   "tolerance (default 1e-6)")
    p.add_argument("--batch", type=_positive, default=4096, metavar="B",
                   help="points per batch (memory; default 4096)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="network weights: the EMA (default) or the raw weights")
    p.add_argument("--json", action="store_true", help="print only a JSON object on stdout")
    p.set_defaults(handler=_cmd_likelihood, needs_out=False)


def _line(info):
    frac = info["step"] / max(1, info["steps"])
    return f"{info.get('stage', 'ode')}: {100 * frac:5.1f}%"


def _check(a, model):
    from .errors import InputError
    from .likelihood import BINOMIAL_ODE_ERROR, METHODS
    from .samplers import CONTINUOUS, _process_name

    if a.method not in METHODS:
        raise InputError(f"--method {a.method}: unknown; valid: {', '.join(METHODS)}")
    if a.trace not in ("auto", "exact", "hutchinson"):
        raise InputError(f"--trace {a.trace}: unknown; valid: auto, exact, hutchinson")
    proc = _process_name(model)
    if proc == "binomial" and a.method == "ode":
        raise InputError(f"{a.model}: {BINOMIAL_ODE_ERROR}")
    ok = CONTINUOUS if a.method == "ode" else CONTINUOUS + ("ddpm", "binomial")
    if proc not in ok:
        raise InputError(f"--method {a.method} needs a model of process {', '.join(ok)}; "
                         f"{a.model} is a {proc} model"
                         + ("; use --method elbo" if proc == "ddpm" else ""))


def _cmd_likelihood(a):
    import json

    import numpy as np

    from . import models
    from .cli import Progress
    from .errors import InputError
    from .likelihood import likelihood
    from .samplers import _process_name
    from .store import read_samples

    model = models.load(a.model)
    _check(a, model)
    x = read_samples(a.data, a.dataset)
    shape = tuple(model.data_shape)
    if tuple(x.shape[1:]) != shape and not (x.ndim == 1 and shape == (1,)):
        raise InputError(f"{a.data}:{a.dataset} has per-sample shape {tuple(x.shape[1:])} "
                         f"but {a.model} models shape {shape}; give data of shape "
                         f"[N, {', '.join(map(str, shape))}]")
    prog = Progress(a.quiet, "likelihood", _line)
    if a.n is not None and a.n > x.shape[0]:
        prog.note(f"note: --n {a.n} is larger than the {x.shape[0]} points of "
                  f"{a.data}:{a.dataset}; using {x.shape[0]}")
    x = np.asarray(x[:a.n] if a.n is not None else x, np.float64)
    if x.shape[0] < 2:
        raise InputError(f"{a.data}:{a.dataset} holds {x.shape[0]} point; a standard error "
                         "needs at least 2")
    res = likelihood(model, x, method=a.method, seed=a.seed, weights=a.weights,
                     steps=a.steps, n_time=a.time_samples, rtol=a.rtol, atol=a.atol,
                     trace=a.trace, batch=a.batch, callback=prog,
                     source=f"{a.data}:{a.dataset}", grid=a.grid)
    prog.end_line()
    res.update({"model": a.model, "data": f"{a.data}:{a.dataset}", "units": "nats, data "
                "units (normalisation Jacobian included)"})
    if _process_name(model) == "binomial":
        res["units"] = "nats; a probability mass of the bits (no Jacobian), per sample and per bit"
    if res.get("hutchinson") and not a.quiet:
        prog.note("note: Hutchinson trace estimator (dimension > 64): the per-point "
                  "log-likelihoods are unbiased and their noise is in the standard error")
    if a.json:
        sys.stdout.write(json.dumps(res, indent=2, allow_nan=False) + "\n")
        return
    dims = f"{res['dim']} dimension" + ("s" if res["dim"] != 1 else "")
    rows = [f"model: {a.model}", f"data:  {a.data}:{a.dataset}  ({res['n']} points, {dims})",
            f"method: {res['method']}"]
    rows.append(f"NLL  {res['nll_nats_per_sample']:.6g} ± {res['se']:.3g} nats per sample,"
                f"  {res['nll_nats_per_dim']:.6g} ± {res['se_per_dim']:.3g} nats per dim")
    if res["method"] == "elbo":
        grid = f", uniform in {res['grid']}" if res.get("grid") in ("t", "logsnr") else ""
        rows[-1] = f"discrete bound ({res['steps']} steps{grid}): " + rows[-1].lstrip()
        if "vdm_nll_nats_per_sample" in res:
            rows.append(f"continuous VDM bound: NLL {res['vdm_nll_nats_per_sample']:.6g} ± "
                        f"{res['vdm_se']:.3g} nats per sample, "
                        f"{res['vdm_nll_nats_per_dim']:.6g} per dim")
    sys.stdout.write("\n".join(rows) + "\n")
