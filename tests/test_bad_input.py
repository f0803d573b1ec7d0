"""The bad-input table for every verb (issue 9 "Bad input"; DESIGN.md "Errors", "Files read
by a verb", "Files written by a verb").

Every row runs ``nonequil.cli.main`` in-process and asserts: a non-zero exit status, exactly
one line on stderr, starting ``error: ``, holding the row's needles (the file, dataset,
argument or value, and what would be right), no traceback, nothing on stdout, and no
``--out`` and no ``--out.partial`` left behind.  The rows cover, per verb, a missing file,
a file that is not HDF5, a truncated HDF5 file, a missing dataset path, a wrong rank or shape,
a wrong dtype, NaN and Inf rows (the first bad row named, 0-based), an empty dataset, zero or
negative counts and steps, an unknown ``--set`` key (valid ones listed), a non-numeric value,
unknown process / potential / sampler / law / generator names (valid ones listed), ``--device
cuda`` without a GPU (suggesting ``--device cpu``), and a model file given where a data
file is expected and the reverse.  ``simulate``'s own long table (dt, walkers, steps,
absorb, x0, init rows, unstable steps and the runtime blow-up naming step and walkers with no
NaN in the file) is tests/test_cli_simulate.py; this table adds its missing rows.
The later verbs have their rows too: ``likelihood MODEL.h5 DATA.h5`` (either file missing,
not HDF5, truncated, or of the other kind; the data's shape, dtype, NaN rows, emptiness;
unknown method and trace), ``gan DATA.h5``, ``experiment`` (unknown or no name), ``bench``
(an unknown ``--only`` benchmark) and ``sweep`` (a missing, invalid or grid-less SPEC.toml).

Hypothesis fuzzes the Python API: ``--set`` values of ``simulate`` and ``train``, and the
shapes, dtypes and non-finite entries of arrays given to the sample-set checks.  Every case
must either be accepted or raise ``InputError`` (never another exception), and an accepted
array must be valid.  The number of cases tried is printed (``pytest -s``).
"""
import math
import os

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from nonequil import cli  # noqa: E402
from nonequil.errors import InputError  # noqa: E402


def _gpu():
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


# ------------------------------------------------------------------ input files
@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A directory of good and bad input files, and a tiny trained model."""
    d = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(3)
    good = rng.normal(size=(40, 2))

    def h5(name, **datasets):
        with h5py.File(d / name, "w") as f:
            for k, v in datasets.items():
                f[k] = v

    h5("good.h5", samples=good)
    h5("good1d.h5", samples=good[:, 0])
    h5("good3.h5", samples=rng.normal(size=(40, 3)))
    nan = good.copy()
    nan[7, 1] = np.nan
    nan[9, 0] = np.nan
    h5("nan.h5", samples=nan)
    inf = good.copy()
    inf[3, 0] = -np.inf
    h5("inf.h5", samples=inf)
    h5("empty.h5", samples=np.empty((0, 2)))
    h5("scalar.h5", samples=np.float64(1.5))
    h5("strings.h5", samples=np.array([b"ab", b"cd", b"ef"]))
    h5("one.h5", samples=good[:1])
    h5("other.h5", data=good)
    with h5py.File(d / "group.h5", "w") as f:
        f.create_group("samples")
    (d / "text.h5").write_text("not an HDF5 file\n")
    big = rng.normal(size=(4000, 8))
    h5("big.h5", samples=big)
    blob = (d / "big.h5").read_bytes()
    (d / "truncated.h5").write_bytes(blob[: len(blob) // 2])
    (d / "bad.toml").write_text("this is = = not toml [\n")
    (d / "nogrid.toml").write_text('verb = "simulate"\nargs = ["--steps", "3"]\n')
    assert cli.main(["train", str(d / "good.h5"), "--steps", "2", "--set", "width=8",
                     "--set", "depth=1", "--batch", "8", "--out", str(d / "model.h5"),
                     "--quiet"]) == 0
    assert cli.main(["simulate", "--walkers", "3", "--steps", "4", "--dt", "0.1",
                     "--out", str(d / "traj.h5"), "--quiet"]) == 0
    return d


# ------------------------------------------------------------------ the table
# (id, argv, needles): "{d}" is the input directory.  Every row is bad input.
S = ["--steps", "3", "--dt", "0.1"]
TRAIN = ["--steps", "2", "--set", "width=8", "--batch", "8"]
ROWS = [
    # ---- inspect
    ("inspect-missing", ["inspect", "{d}/none.h5"], ["{d}/none.h5", "does not exist"]),
    ("inspect-not-hdf5", ["inspect", "{d}/text.h5"], ["{d}/text.h5", "not an HDF5 file"]),
    ("inspect-truncated", ["inspect", "{d}/truncated.h5"], ["{d}/truncated.h5", "truncated"]),
    # ---- simulate (rows that tests/test_cli_simulate.py does not have)
    ("simulate-init-group", ["simulate", "--init", "{d}/group.h5", *S],
     ["{d}/group.h5", "/samples", "not a dataset"]),
    ("simulate-init-model", ["simulate", "--init", "{d}/model.h5", *S],
     ["{d}/model.h5", "/samples"]),
    ("simulate-device-cuda", ["simulate", "--walkers", "2", *S, "--device", "cuda"],
     ["--device cuda", "--device cpu"]),
    ("simulate-set-non-numeric", ["simulate", "--walkers", "2", *S, "--set", "theta=fast"],
     ["fast", "number"]),
    ("simulate-steps-non-numeric", ["simulate", "--walkers", "2", "--steps", "many", "--dt",
                                    "0.1"], ["--steps", "many"]),
    ("simulate-dt-inf", ["simulate", "--walkers", "2", "--steps", "3", "--dt", "inf"],
     ["--dt", "> 0"]),
    # ---- dataset
    ("dataset-n-zero", ["dataset", "double-well", "--n", "0"], ["--n", "0"]),
    ("dataset-n-negative", ["dataset", "double-well", "--n", "-5"], ["--n", "-5"]),
    ("dataset-n-non-numeric", ["dataset", "double-well", "--n", "ten"], ["--n", "ten"]),
    ("dataset-unknown", ["dataset", "nope", "--n", "5"],
     ["nope", "double-well", "ising", "swiss-roll"]),
    ("dataset-unknown-set", ["dataset", "double-well", "--set", "c=1", "--n", "5"],
     ["c", "valid: a, b, kT"]),
    ("dataset-non-numeric", ["dataset", "double-well", "--set", "a=x", "--n", "5"],
     ["a", "x", "number"]),
    ("dataset-malformed-set", ["dataset", "double-well", "--set", "a", "--n", "5"],
     ["--set", "'a'", "NAME=VALUE"]),
    ("dataset-unknown-method", ["dataset", "ising", "--method", "heatbath", "--n", "5"],
     ["heatbath", "metropolis, wolff"]),
    ("dataset-device-cuda", ["dataset", "ising", "--n", "5", "--device", "cuda"],
     ["--device cuda", "--device cpu"]),
    ("dataset-out-dir-missing", ["dataset", "double-well", "--n", "5", "--out",
                                 "{d}/no/such/o.h5"], ["{d}/no/such", "does not exist"]),
    # ---- train: the data file
    ("train-missing", ["train", "{d}/none.h5", *TRAIN], ["{d}/none.h5", "does not exist"]),
    ("train-not-hdf5", ["train", "{d}/text.h5", *TRAIN], ["{d}/text.h5", "not an HDF5"]),
    ("train-truncated", ["train", "{d}/truncated.h5", *TRAIN], ["{d}/truncated.h5",
                                                                  "truncated"]),
    ("train-no-dataset", ["train", "{d}/other.h5", *TRAIN], ["{d}/other.h5", "/samples"]),
    ("train-dataset-path", ["train", "{d}/good.h5", "--dataset", "/x/y", *TRAIN],
     ["{d}/good.h5", "/x/y"]),
    ("train-group", ["train", "{d}/group.h5", *TRAIN], ["{d}/group.h5", "not a dataset"]),
    ("train-scalar", ["train", "{d}/scalar.h5", *TRAIN], ["{d}/scalar.h5", "shape"]),
    ("train-dtype", ["train", "{d}/strings.h5", *TRAIN], ["{d}/strings.h5", "dtype",
                                                           "float or int"]),
    ("train-nan", ["train", "{d}/nan.h5", *TRAIN], ["{d}/nan.h5", "row 7 (0-based)",
                                                     "column 1"]),
    ("train-inf", ["train", "{d}/inf.h5", *TRAIN], ["{d}/inf.h5", "row 3 (0-based)",
                                                     "column 0"]),
    ("train-empty", ["train", "{d}/empty.h5", *TRAIN], ["{d}/empty.h5", "empty"]),
    ("train-one-sample", ["train", "{d}/one.h5", *TRAIN], ["{d}/one.h5", "at least 2"]),
    ("train-model-as-data", ["train", "{d}/model.h5", *TRAIN], ["{d}/model.h5", "/samples"]),
    ("train-trajectory-as-data", ["train", "{d}/traj.h5", *TRAIN], ["{d}/traj.h5",
                                                                     "/samples"]),
    # ---- train: arguments
    ("train-steps-zero", ["train", "{d}/good.h5", "--steps", "0"], ["steps", "0"]),
    ("train-steps-negative", ["train", "{d}/good.h5", "--steps", "-4"], ["steps", "-4"]),
    ("train-batch-zero", ["train", "{d}/good.h5", "--steps", "2", "--batch", "0"],
     ["batch", "0"]),
    ("train-unknown-set", ["train", "{d}/good.h5", *TRAIN, "--set", "widht=3"],
     ["widht", "valid: "]),
    ("train-non-numeric", ["train", "{d}/good.h5", *TRAIN, "--set", "lr=fast"],
     ["lr", "fast"]),
    ("train-nan-value", ["train", "{d}/good.h5", *TRAIN, "--set", "lr=nan"], ["lr", "nan"]),
    ("train-unknown-process", ["train", "{d}/good.h5", *TRAIN, "--process", "vpp"],
     ["vpp", "vp", "subvp", "ddpm"]),
    ("train-device-cuda", ["train", "{d}/good.h5", *TRAIN, "--device", "cuda"],
     ["--device cuda", "--device cpu"]),
    ("train-checkpoint-every", ["train", "{d}/good.h5", *TRAIN, "--checkpoint-every", "0"],
     ["--checkpoint-every", "> 0"]),
    # ---- sample: the model file
    ("sample-missing", ["sample", "{d}/none.h5"], ["{d}/none.h5", "does not exist"]),
    ("sample-not-hdf5", ["sample", "{d}/text.h5"], ["{d}/text.h5", "not an HDF5"]),
    ("sample-truncated", ["sample", "{d}/truncated.h5"], ["{d}/truncated.h5", "truncated"]),
    ("sample-data-as-model", ["sample", "{d}/good.h5"], ["{d}/good.h5", "/model"]),
    ("sample-trajectory-as-model", ["sample", "{d}/traj.h5"], ["{d}/traj.h5", "/model"]),
    # ---- sample: arguments
    ("sample-n-zero", ["sample", "{d}/model.h5", "--n", "0"], ["0", ">= 1"]),
    ("sample-n-negative", ["sample", "{d}/model.h5", "--n", "-3"], ["-3", ">= 1"]),
    ("sample-steps-zero", ["sample", "{d}/model.h5", "--steps", "0"], ["0", ">= 1"]),
    ("sample-unknown-sampler", ["sample", "{d}/model.h5", "--sampler", "rk9"],
     ["rk9", "em", "ancestral", "ode", "pc"]),
    ("sample-unknown-set", ["sample", "{d}/model.h5", "--sampler", "pc", "--set", "snrr=1"],
     ["snrr", "snr"]),
    ("sample-non-numeric", ["sample", "{d}/model.h5", "--sampler", "pc", "--set",
                            "snr=high"], ["snr", "high"]),
    ("sample-device-cuda", ["sample", "{d}/model.h5", "--n", "4", "--device", "cuda"],
     ["cuda", "--device cpu"]),
    # ---- compare: the samples file
    ("compare-missing", ["compare", "{d}/none.h5", "--analytic", "harmonic"],
     ["{d}/none.h5", "does not exist"]),
    ("compare-not-hdf5", ["compare", "{d}/text.h5", "--analytic", "harmonic"],
     ["{d}/text.h5", "not an HDF5"]),
    ("compare-truncated", ["compare", "{d}/truncated.h5", "--analytic", "harmonic"],
     ["{d}/truncated.h5", "truncated"]),
    ("compare-no-dataset", ["compare", "{d}/other.h5", "--analytic", "harmonic"],
     ["{d}/other.h5", "/samples", "--dataset"]),
    ("compare-scalar", ["compare", "{d}/scalar.h5", "--analytic", "harmonic"],
     ["{d}/scalar.h5", "shape"]),
    ("compare-dtype", ["compare", "{d}/strings.h5", "--analytic", "harmonic"],
     ["{d}/strings.h5", "dtype"]),
    ("compare-nan", ["compare", "{d}/nan.h5", "--reference", "{d}/good.h5"],
     ["{d}/nan.h5", "row 7 (0-based)", "column 1"]),
    ("compare-inf-reference", ["compare", "{d}/good.h5", "--reference", "{d}/inf.h5"],
     ["reference", "{d}/inf.h5", "row 3 (0-based)"]),
    ("compare-empty", ["compare", "{d}/empty.h5", "--reference", "{d}/good.h5"],
     ["{d}/empty.h5", "empty"]),
    ("compare-shape-mismatch", ["compare", "{d}/good.h5", "--reference", "{d}/good3.h5"],
     ["{d}/good.h5", "{d}/good3.h5", "shape"]),
    ("compare-reference-missing", ["compare", "{d}/good.h5", "--reference", "{d}/none.h5"],
     ["reference", "{d}/none.h5", "does not exist"]),
    ("compare-model-as-samples", ["compare", "{d}/model.h5", "--reference", "{d}/good.h5"],
     ["{d}/model.h5", "/samples"]),
    # ---- compare: arguments
    ("compare-unknown-law", ["compare", "{d}/good1d.h5", "--analytic", "nope"],
     ["nope", "double-well", "harmonic"]),
    ("compare-unknown-set", ["compare", "{d}/good1d.h5", "--analytic", "harmonic", "--set",
                             "kk=1"], ["kk", "k"]),
    ("compare-non-numeric", ["compare", "{d}/good1d.h5", "--analytic", "harmonic", "--set",
                             "k=stiff"], ["k", "stiff"]),
    ("compare-neither", ["compare", "{d}/good.h5"], ["--reference", "--analytic"]),
    # ---- likelihood MODEL.h5 DATA.h5
    ("likelihood-model-missing", ["likelihood", "{d}/none.h5", "{d}/good.h5"],
     ["model file", "{d}/none.h5", "does not exist"]),
    ("likelihood-data-missing", ["likelihood", "{d}/model.h5", "{d}/none.h5"],
     ["{d}/none.h5", "does not exist"]),
    ("likelihood-model-not-hdf5", ["likelihood", "{d}/text.h5", "{d}/good.h5"],
     ["model file", "{d}/text.h5", "not an HDF5"]),
    ("likelihood-data-not-hdf5", ["likelihood", "{d}/model.h5", "{d}/text.h5"],
     ["{d}/text.h5", "not an HDF5"]),
    ("likelihood-data-truncated", ["likelihood", "{d}/model.h5", "{d}/truncated.h5"],
     ["{d}/truncated.h5", "truncated"]),
    ("likelihood-data-as-model", ["likelihood", "{d}/good.h5", "{d}/good.h5"],
     ["{d}/good.h5", "/model"]),
    ("likelihood-model-as-data", ["likelihood", "{d}/model.h5", "{d}/model.h5"],
     ["{d}/model.h5", "/samples"]),
    ("likelihood-no-dataset", ["likelihood", "{d}/model.h5", "{d}/other.h5"],
     ["{d}/other.h5", "/samples"]),
    ("likelihood-shape", ["likelihood", "{d}/model.h5", "{d}/good3.h5"],
     ["{d}/good3.h5", "(3,)", "[N, 2]"]),
    ("likelihood-dtype", ["likelihood", "{d}/model.h5", "{d}/strings.h5"],
     ["{d}/strings.h5", "dtype", "float"]),
    ("likelihood-nan", ["likelihood", "{d}/model.h5", "{d}/nan.h5"],
     ["{d}/nan.h5", "row 7 (0-based)"]),
    ("likelihood-empty", ["likelihood", "{d}/model.h5", "{d}/empty.h5"],
     ["{d}/empty.h5", "empty"]),
    ("likelihood-n-zero", ["likelihood", "{d}/model.h5", "{d}/good.h5", "--n", "0"],
     ["--n", "0", ">= 1"]),
    ("likelihood-unknown-method", ["likelihood", "{d}/model.h5", "{d}/good.h5", "--method",
                                   "nope"], ["nope", "ode", "elbo"]),
    ("likelihood-unknown-trace", ["likelihood", "{d}/model.h5", "{d}/good.h5", "--trace",
                                  "nope"], ["nope", "exact", "hutchinson"]),
    # ---- gan DATA.h5
    ("gan-missing", ["gan", "{d}/none.h5", *S[:2]], ["{d}/none.h5", "does not exist"]),
    ("gan-not-hdf5", ["gan", "{d}/text.h5", *S[:2]], ["{d}/text.h5", "not an HDF5"]),
    ("gan-truncated", ["gan", "{d}/truncated.h5", *S[:2]], ["{d}/truncated.h5", "truncated"]),
    ("gan-no-dataset", ["gan", "{d}/other.h5", *S[:2]], ["{d}/other.h5", "/samples"]),
    ("gan-model-as-data", ["gan", "{d}/model.h5", *S[:2]], ["{d}/model.h5", "/samples"]),
    ("gan-dtype", ["gan", "{d}/strings.h5", *S[:2]], ["{d}/strings.h5", "dtype", "float"]),
    ("gan-nan", ["gan", "{d}/nan.h5", *S[:2]], ["{d}/nan.h5", "row 7 (0-based)"]),
    ("gan-empty", ["gan", "{d}/empty.h5", *S[:2]], ["{d}/empty.h5", "empty"]),
    ("gan-steps-zero", ["gan", "{d}/good.h5", "--steps", "0"], ["steps", "0"]),
    ("gan-unknown-set", ["gan", "{d}/good.h5", *S[:2], "--set", "widht=3"],
     ["widht", "g_width", "lr_g"]),
    ("gan-non-numeric", ["gan", "{d}/good.h5", *S[:2], "--set", "lr_g=fast"],
     ["lr_g", "fast"]),
    ("gan-device-cuda", ["gan", "{d}/good.h5", *S[:2], "--device", "cuda"],
     ["--device cpu"]),
    ("gan-checkpoint-every", ["gan", "{d}/good.h5", *S[:2], "--checkpoint-every", "0"],
     ["--checkpoint-every", "0"]),
    # ---- experiment NAME
    ("experiment-unknown", ["experiment", "nope"], ["nope", "ou", "double-well", "--list"]),
    ("experiment-no-name", ["experiment"], ["NAME", "--list", "ou"]),
    # ---- bench --only
    ("bench-unknown-only", ["bench", "--only", "nope"], ["--only", "nope", "ou", "startup"]),
    ("bench-unknown-only-mixed", ["bench", "--only", "ou,nope"], ["nope", "valid"]),
    # ---- sweep SPEC.toml
    ("sweep-spec-missing", ["sweep", "{d}/none.toml", "--cluster", "local:1"],
     ["{d}/none.toml", "does not exist", "TOML"]),
    ("sweep-spec-not-toml", ["sweep", "{d}/bad.toml", "--cluster", "local:1"],
     ["{d}/bad.toml", "not valid TOML"]),
    ("sweep-spec-no-grid", ["sweep", "{d}/nogrid.toml", "--cluster", "local:1"],
     ["{d}/nogrid.toml", "[grid]"]),
    ("sweep-no-cluster", ["sweep", "{d}/nogrid.toml"], ["--cluster", "--scheduler"]),
]
VERBS_COVERED = {"simulate", "inspect", "dataset", "train", "sample", "compare", "likelihood",
                 "gan", "experiment", "bench", "sweep"}
NEEDS_OUT = {"simulate", "dataset", "train", "sample", "gan", "sweep"}


def _fill(items, d):
    return [str(a).replace("{d}", str(d)) for a in items]


def _row(r):
    return r.values if hasattr(r, "values") else r


@pytest.mark.parametrize("case,argv,needles", ROWS, ids=[_row(r)[0] for r in ROWS])
def test_bad_input_one_error_line(d, tmp_path, capsys, case, argv, needles):
    if "cuda" in case and _gpu():
        pytest.skip("a GPU is present: --device cuda is valid here")
    argv = _fill(argv, d)
    out = tmp_path / "out.h5"
    if argv[0] in NEEDS_OUT and "--out" not in argv:
        argv += ["--out", str(out)]
    before = set(os.listdir(d))
    capsys.readouterr()
    code = cli.main(argv)
    cap = capsys.readouterr()
    assert code != 0, f"{case}: exit status 0"
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {cap.err!r}"
    assert "Traceback" not in cap.err and "internal error" not in cap.err, cap.err
    for n in _fill(needles, d):
        assert n in lines[0], f"{case}: {n!r} not in {lines[0]!r}"
    assert cap.out == "", f"{case}: stdout {cap.out!r}"
    assert not out.exists() and not os.path.exists(f"{out}.partial"), case
    assert list(tmp_path.iterdir()) == [], f"{case}: left {list(tmp_path.iterdir())}"
    assert set(os.listdir(d)) == before, f"{case}: files appeared beside the inputs"


def test_the_table_covers_every_verb_and_row_kind():
    rows = [_row(r) for r in ROWS]
    assert {r[1][0] for r in rows} == VERBS_COVERED
    kinds = ("missing", "not-hdf5", "truncated", "nan", "empty", "dtype", "unknown-set",
             "non-numeric", "device-cuda")
    for k in kinds:
        assert any(k in r[0] for r in rows), k


@pytest.mark.parametrize("verb,argv", [
    ("inspect", ["inspect", "{d}/none.h5"]),
    ("dataset", ["dataset", "nope", "--n", "5", "--out", "{t}/o.h5"]),
    ("train", ["train", "{d}/nan.h5", *TRAIN, "--out", "{t}/o.h5"]),
    ("sample", ["sample", "{d}/good.h5", "--out", "{t}/o.h5"]),
    ("compare", ["compare", "{d}/empty.h5", "--analytic", "harmonic"])])
def test_debug_raises_the_exception(d, tmp_path, verb, argv):
    """With --debug the exception propagates (the traceback is shown)."""
    argv = [a.replace("{t}", str(tmp_path)) for a in _fill(argv, d)] + ["--debug"]
    with pytest.raises(InputError):
        cli.main(argv)


# ------------------------------------------------------------------ fuzzing (hypothesis)
COUNTS = {}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_SIM_KEYS = ["theta", "mu", "sigma", "kT", "gamma", "mass", "k", "center", "a", "b",
             "k_perp", "scale", "weights", "x", "", "kT "]
_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10**6, 10**6), st.sampled_from([0.0, -0.0, 1e-300, 1e300]))
# one-line texts: the CLI reads one argument per --set (a newline is joined by cli.main)
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=6)
_value = st.one_of(_number, st.tuples(_number, _number), st.lists(_number, max_size=4),
                   _text)


@FUZZ
@given(process=st.sampled_from(["ou", "langevin", "underdamped"]),
       potential=st.sampled_from(["harmonic", "double-well", "muller-brown",
                                  "gaussian-mixture", "nope"]),
       params=st.dictionaries(st.sampled_from(_SIM_KEYS), _value, max_size=4),
       dt=_number, walkers=st.one_of(st.integers(-3, 50), st.none()),
       steps=st.integers(-3, 100))
def test_fuzz_simulate_plan(process, potential, params, dt, walkers, steps):
    """A SimulationConfig with fuzzed --set values, dt, walkers and steps is either
    planned or refused with InputError; a planned one has finite positive dt and counts."""
    from nonequil.simulate import Plan, SimulationConfig

    COUNTS["simulate --set"] = COUNTS.get("simulate --set", 0) + 1
    cfg = SimulationConfig(process=process, potential=potential, params=params, dt=dt,
                           walkers=walkers, steps=steps)
    try:
        plan = Plan(cfg)
    except InputError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert math.isfinite(cfg.dt) and cfg.dt > 0 and plan.M >= 1 and cfg.steps >= 1


@FUZZ
@given(sets=st.dictionaries(st.sampled_from(["lr", "width", "depth", "ema", "beta_max",
                                             "weighting", "batch", "widht", "n_freq"]),
                            st.one_of(_text, _number.map(str)), max_size=4),
       process=st.sampled_from(["vp", "subvp", "ve", "ddpm", "binomial"]))
def test_fuzz_train_sets(sets, process):
    """Fuzzed ``train --set`` text values: a TrainConfig that validates, or InputError."""
    from nonequil.train import config_from_sets

    COUNTS["train --set"] = COUNTS.get("train --set", 0) + 1
    try:
        cfg = config_from_sets(dict(sets), process)
        cfg.validate()
    except InputError as e:
        assert "\n" not in str(e) and str(e)


_dtypes = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes(),
                    hnp.complex_number_dtypes(), hnp.byte_string_dtypes(max_len=3))


@FUZZ
@given(arr=hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                max_side=5)))
def test_fuzz_sample_set_checks(arr):
    """``check_array`` (checks 4-6) on fuzzed shapes, dtypes and non-finite entries: an
    accepted array is numeric, of rank >= 1, non-empty and finite; a refused one names the
    first non-finite row (0-based) exactly."""
    from nonequil.store import check_array

    COUNTS["sample-set arrays"] = COUNTS.get("sample-set arrays", 0) + 1
    try:
        check_array(arr, "f.h5", "/samples")
    except InputError as e:
        msg = str(e)
        assert msg.startswith("f.h5:/samples") and "\n" not in msg
        if arr.dtype.kind == "f" and arr.ndim >= 1 and arr.size:
            bad = np.argwhere(~np.isfinite(arr))
            if len(bad):
                assert f"row {bad[0][0]} (0-based)" in msg, msg
        return
    assert arr.dtype.kind in "fiub" and arr.ndim >= 1 and arr.size > 0
    if arr.dtype.kind == "f":
        assert np.all(np.isfinite(arr))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arr=hnp.arrays(st.one_of(hnp.floating_dtypes(sizes=(32, 64)), hnp.integer_dtypes()),
                      hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)))
def test_fuzz_read_samples_from_files(tmp_path_factory, arr):
    """``read_samples`` on fuzzed arrays written to HDF5: the array back, or InputError."""
    from nonequil.store import read_samples

    COUNTS["sample-set files"] = COUNTS.get("sample-set files", 0) + 1
    path = tmp_path_factory.mktemp("fuzz") / "f.h5"
    with h5py.File(path, "w") as f:
        f["samples"] = arr
    try:
        got = read_samples(str(path))
    except InputError as e:
        assert str(path) in str(e)
        return
    assert got.shape == arr.shape and np.array_equal(got, arr)


def test_fuzz_case_counts():
    """Prints how many fuzz cases ran (run with -s); each fuzz test ran its cases."""
    print("\nfuzz cases:", ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())),
          f"(total {sum(COUNTS.values())})")
    if len(COUNTS) == 4:
        assert sum(COUNTS.values()) >= 4 * 40
