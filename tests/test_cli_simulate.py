"""The ``nonequil`` command line for ``simulate`` and ``inspect`` (DESIGN.md "The command
line", "Files written by a verb", "Files read by a verb"; issue 2 "CLI parsing", issue 9
"Bad input").

Every bad input ends with exactly one ``error: ...`` line on stderr that names the problem,
a non-zero exit status, no traceback (unless ``--debug``) and no output file.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

CLI = [sys.executable, "-m", "nonequil.cli"]
TIMEOUT = 600        # a cold Numba cache on a loaded machine compiles for a while


def _nonequil(*args, timeout=TIMEOUT):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def _outputs(out):
    p = str(out) + ".partial"
    return [str(out), p, p + ".ckpt", p + ".ckpt.prev", p + ".lock"]


def _the_error_line(stderr):
    """stderr holds exactly one line, and it starts with 'error: '."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {stderr!r}"
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("process", ["langevin", "ou", "underdamped"])
def test_x0_negative_comma_list_parses(tmp_path, capsys, process):
    from nonequil import cli

    out = tmp_path / "x0.h5"
    rc = cli.main(["simulate", "--process", process, "--x0", "-0.5,1.5", "--walkers", "7",
                   "--steps", "10", "--dt", "1e-3", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as f:
        pos = f["particles/ensemble/position/value"]
        assert pos.shape[1:] == (7, 2)
        assert np.array_equal(pos[0], np.tile([-0.5, 1.5], (7, 1)))
        assert f["particles/ensemble/position/step"][0] == 0


@pytest.mark.parametrize("argv,x0", [
    (["--x0", "-2"], [-2.0]),
    (["--x0", "-.5"], [-0.5]),
    (["--x0=-0.5,1.5"], [-0.5, 1.5]),
    (["--x0", "-1e-1,-2"], [-0.1, -2.0]),
])
def test_negative_numbers_parse(argv, x0):
    from nonequil import cli

    args = cli._fix_negative_values(["simulate", *argv, "--steps", "1", "--dt", "-1e-3",
                                     "--seed", "0", "--set", "center=-1:-2"])
    a = cli.build_parser().parse_args(args)
    val = cli.parse_numbers(a.x0)
    assert np.atleast_1d(val).tolist() == x0
    assert a.dt == -1e-3
    assert cli.parse_sets(a.set) == {"center": (-1.0, -2.0)}


def _verbs():
    from nonequil import cli

    p = cli.build_parser()
    sub = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub) == 1
    return sub[0].choices


def test_verbs_include_simulate_and_inspect():
    assert {"simulate", "inspect"} <= set(_verbs())


@pytest.mark.parametrize("verb", sorted(_verbs()))
def test_every_verb_help_lists_common_flags(verb, capsys):
    from nonequil import cli

    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert {"--help", "--quiet", "--debug"} <= flags, text
    runs = _verbs()[verb].get_default("needs_out") or verb == "simulate"
    if runs:
        assert {"--seed", "--device", "--out"} <= flags, text
        assert "cpu" in text and "cuda" in text


def test_top_level_help_lists_verbs(capsys):
    from nonequil import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for verb in _verbs():
        assert verb in text


HEAVY = ("numba", "scipy", "h5py", "llvmlite")


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom nonequil import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (HEAVY,))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_console_script_help_imports_nothing_heavy():
    exe = os.path.join(os.path.dirname(sys.executable), "nonequil")
    if not os.path.exists(exe) or b"python" not in open(exe, "rb").readline():
        pytest.skip("no nonequil console script beside this Python")
    r = subprocess.run([sys.executable, "-X", "importtime", exe, "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "simulate" in r.stdout
    mods = [ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines()
            if ln.startswith("import time:") and "|" in ln]
    assert "nonequil.cli" in mods
    assert not [m for m in mods if m.split(".")[0] in HEAVY]


@pytest.mark.parametrize("argv", [["--help"], ["simulate", "--help"], ["inspect", "--help"]])
def test_help_importtime_has_no_heavy_modules(argv):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nonequil.cli", *argv],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout
    mods = [ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines()
            if ln.startswith("import time:") and "|" in ln]
    assert mods, r.stderr[:500]
    heavy = [m for m in mods if m.split(".")[0] in HEAVY]
    assert not heavy, heavy


# ------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    with h5py.File(d / "good.h5", "w") as f:
        f["samples"] = rng.standard_normal((50, 2))
    with h5py.File(d / "nosamples.h5", "w") as f:
        f["data"] = rng.standard_normal((50, 2))
    a = rng.standard_normal((50, 2))
    a[7, 1] = np.nan
    a[9, 0] = np.nan
    with h5py.File(d / "nan.h5", "w") as f:
        f["samples"] = a
    b = rng.standard_normal(40)
    b[3] = np.inf
    with h5py.File(d / "inf.h5", "w") as f:
        f["samples"] = b
    with h5py.File(d / "empty.h5", "w") as f:
        f["samples"] = np.zeros((0, 2))
    with h5py.File(d / "strings.h5", "w") as f:
        f["samples"] = np.array([b"a", b"b"])
    with h5py.File(d / "scalar.h5", "w") as f:
        f["samples"] = 1.5
    (d / "text.h5").write_text("this is not an HDF5 file\n" * 20)
    with h5py.File(d / "big.h5", "w") as f:
        f["samples"] = rng.standard_normal((20000, 2))
    blob = (d / "big.h5").read_bytes()
    (d / "truncated.h5").write_bytes(blob[:len(blob) // 2])
    return d


OK = ["--walkers", "5", "--steps", "10", "--dt", "1e-3"]
DW = ["--process", "langevin", "--potential", "double-well"]

# (id, argv, substrings the error line must contain); {d} is the inputs directory
BAD = [
    ("negative-dt", ["--walkers", "5", "--steps", "10", "--dt", "-0.1"], ["--dt", "-0.1", "> 0"]),
    ("zero-dt", ["--walkers", "5", "--steps", "10", "--dt", "0"], ["--dt", "> 0"]),
    ("nan-dt", ["--walkers", "5", "--steps", "10", "--dt", "nan"], ["--dt"]),
    ("zero-steps", ["--walkers", "5", "--steps", "0", "--dt", "1e-3"], ["--steps", "0"]),
    ("negative-steps", ["--walkers", "5", "--steps", "-3", "--dt", "1e-3"], ["--steps", "-3"]),
    ("zero-walkers", ["--walkers", "0", "--steps", "10", "--dt", "1e-3"], ["--walkers", "0"]),
    ("negative-walkers", ["--walkers", "-4", "--steps", "10", "--dt", "1e-3"],
     ["--walkers", "-4"]),
    ("no-walkers", ["--steps", "10", "--dt", "1e-3"], ["--walkers"]),
    ("non-integer-steps", ["--walkers", "5", "--steps", "1.5", "--dt", "1e-3"], ["--steps"]),
    ("unknown-set-ou", [*OK, "--set", "foo=1"], ["'foo'", "theta", "mu", "sigma"]),
    ("unknown-set-dw", [*DW, *OK, "--set", "k=2"],
     ["'k'", "kT", "gamma", "a", "b", "k_perp"]),
    ("non-numeric-set", [*DW, *OK, "--set", "a=abc"], ["abc", "number"]),
    ("malformed-set", [*OK, "--set", "theta"], ["--set", "theta"]),
    ("unknown-potential", ["--process", "langevin", "--potential", "nope", *OK],
     ["nope", "harmonic", "double-well", "muller-brown", "gaussian-mixture"]),
    ("unknown-process", ["--process", "nope", *OK], ["nope", "ou", "langevin", "underdamped"]),
    ("unknown-method", ["--method", "rk4", *OK], ["rk4", "exact", "em"]),
    ("absorb-malformed", [*DW, *OK, "--absorb", "x=>1"], ["--absorb", "x=>1"]),
    ("absorb-garbage", [*DW, *OK, "--absorb", "y>=1"], ["--absorb", "y>=1"]),
    ("absorb-coordinate", [*DW, *OK, "--absorb", "x[3]>=1"], ["--absorb", "coordinate 3"]),
    ("x0-count-mb", ["--process", "langevin", "--potential", "muller-brown", "--x0", "1,2,3",
                     "--walkers", "5", "--steps", "10", "--dt", "1e-4"], ["muller-brown", "2"]),
    ("x0-count-dim", [*OK, "--dim", "2", "--x0", "1,2,3"], ["--x0", "3", "--dim", "2"]),
    ("x0-not-number", [*OK, "--x0", "1,abc"], ["abc"]),
    ("x0-and-init", ["--init", "{d}/good.h5", "--x0", "1", "--steps", "10", "--dt", "1e-3"],
     ["--x0", "--init"]),
    ("init-missing", ["--init", "{d}/missing.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/missing.h5", "does not exist"]),
    ("init-not-hdf5", ["--init", "{d}/text.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/text.h5", "not an HDF5 file"]),
    ("init-truncated", ["--init", "{d}/truncated.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/truncated.h5", "truncated"]),
    ("init-no-samples", ["--init", "{d}/nosamples.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/nosamples.h5", "/samples"]),
    ("init-nan", ["--init", "{d}/nan.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/nan.h5", "row 7", "0-based", "column 1"]),
    ("init-inf", ["--init", "{d}/inf.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/inf.h5", "row 3", "0-based"]),
    ("init-empty", ["--init", "{d}/empty.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/empty.h5", "empty"]),
    ("init-dtype", ["--init", "{d}/strings.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/strings.h5", "dtype"]),
    ("init-scalar", ["--init", "{d}/scalar.h5", "--steps", "10", "--dt", "1e-3"],
     ["{d}/scalar.h5", "shape"]),
    ("walkers-mismatch", ["--init", "{d}/good.h5", "--walkers", "10", "--steps", "10",
                          "--dt", "1e-3"], ["--walkers 10", "50", "{d}/good.h5"]),
    ("unstable-em-harmonic", ["--process", "langevin", "--set", "k=30", "--walkers", "5",
                              "--steps", "10", "--dt", "0.1"], ["unstable step", "--dt"]),
    ("unstable-em-bound", ["--process", "langevin", "--set", "k=20", "--walkers", "5",
                           "--steps", "10", "--dt", "0.1"], ["unstable step", "--dt"]),
    ("unstable-em-ou", ["--method", "em", "--set", "theta=30", "--walkers", "5", "--steps",
                        "10", "--dt", "0.1"], ["unstable step", "--dt"]),
    ("unstable-baoab", ["--process", "underdamped", "--set", "k=400", "--walkers", "5",
                        "--steps", "10", "--dt", "0.1"], ["unstable step", "--dt"]),
    ("exact-not-harmonic", [*DW, *OK, "--method", "exact"], ["--method exact", "harmonic"]),
    ("protocol-on-process-key", [*DW, *OK, "--set", "kT=1:2"], ["kT", "protocol"]),
    ("seed-negative", [*OK, "--seed", "-1"], ["seed", "-1"]),
    ("seed-not-integer", [*OK, "--seed", "abc"], ["seed", "abc"]),
    ("device-unknown", [*OK, "--device", "tpu"], ["tpu", "cpu", "cuda"]),
    ("precision-unknown", [*OK, "--precision", "float16"], ["float16", "float64"]),
    ("missing-dt", ["--walkers", "5", "--steps", "10"], ["--dt"]),
    ("out-dir-missing", [*OK, "--out", "{d}/no/such/dir/o.h5"], ["{d}/no/such/dir"]),
]


@pytest.mark.parametrize("case,argv,needles", BAD, ids=[c[0] for c in BAD])
def test_bad_input_one_error_line(inputs, tmp_path, case, argv, needles):
    out = tmp_path / "out.h5"
    argv = [a.replace("{d}", str(inputs)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    before = sorted(os.listdir(inputs))
    r = _nonequil("simulate", *argv)
    assert r.returncode != 0
    assert r.stdout == ""
    line = _the_error_line(r.stderr)
    for n in needles:
        assert n.replace("{d}", str(inputs)) in line, f"{n!r} not in {line!r}"
    for p in _outputs(out):
        assert not os.path.exists(p), f"{p} created by a refused run"
    assert sorted(os.listdir(inputs)) == before, "a refused run created files"


def test_missing_out_is_an_error(tmp_path):
    r = _nonequil("simulate", *OK)
    assert r.returncode != 0
    assert "--out" in _the_error_line(r.stderr)


def test_debug_shows_a_traceback(tmp_path):
    out = tmp_path / "out.h5"
    r = _nonequil("simulate", "--walkers", "5", "--steps", "10", "--dt", "-0.1",
                  "--out", out, "--debug")
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr
    assert "InputError" in r.stderr and "--dt" in r.stderr
    for p in _outputs(out):
        assert not os.path.exists(p)


def test_debug_traceback_for_missing_init(tmp_path):
    out = tmp_path / "out.h5"
    r = _nonequil("simulate", "--init", tmp_path / "missing.h5", "--steps", "10", "--dt",
                  "1e-3", "--out", out, "--debug")
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr and "does not exist" in r.stderr


# ------------------------------------------------------------------ runtime blow-up
# Both pass the static stability check (double well: curvature 8a at the minima) but
# start at x = 3, where the curvature is 104: the state overflows within a few steps.
BLOWUPS = {
    "langevin-em": ["--process", "langevin", "--potential", "double-well", "--x0", "3",
                    "--dt", "0.2", "--steps", "100", "--walkers", "5", "--first-walker", "10"],
    "underdamped-baoab": ["--process", "underdamped", "--potential", "double-well", "--x0",
                          "3", "--dt", "0.5", "--steps", "100", "--walkers", "5",
                          "--first-walker", "10"],
}


@pytest.mark.parametrize("name", sorted(BLOWUPS))
def test_runtime_blowup(tmp_path, name):
    out = tmp_path / "out.h5"
    r = _nonequil("simulate", *BLOWUPS[name], "--out", out, "--quiet")
    assert r.returncode != 0
    line = _the_error_line(r.stderr)
    m = re.search(r"step (\d+)", line)
    assert m, line
    step = int(m.group(1))
    assert 1 <= step <= 100
    assert re.search(r"walker\(?s?\)? 10, 11, 12, 13, 14", line), line  # absolute indices
    assert "dt=0.5" in line or "dt=0.2" in line, line
    partial = str(out) + ".partial"
    ckpt = partial + ".ckpt"
    assert partial in line and ckpt in line, line
    assert not os.path.exists(out)
    assert os.path.exists(partial) and os.path.exists(ckpt)
    assert not os.path.exists(partial + ".lock")
    with h5py.File(partial, "r") as f:             # reopens, no NaN written as data
        for grp in ("particles", "observables"):
            def check(n, o, grp=grp):
                if isinstance(o, h5py.Dataset) and o.dtype.kind == "f":
                    assert np.all(np.isfinite(o[()])), f"non-finite data in {grp}/{n}"
            f[grp].visititems(check)
        steps = f["particles/ensemble/position/step"][()]
        assert steps[0] == 0 and steps[-1] < step
    # the kept checkpoint is readable and consistent with the partial file
    from nonequil.store import read_checkpoint

    meta, arr = read_checkpoint(ckpt)
    assert meta["step"] < step and np.all(np.isfinite(arr["x"]))


class ErrorNotOnItsOwnLine(AssertionError):
    pass


def test_runtime_blowup_error_line_with_progress(tmp_path):
    out = tmp_path / "out.h5"
    r = _nonequil("simulate", *BLOWUPS["langevin-em"], "--out", out)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errs = [ln for ln in r.stderr.split("\n") if "error:" in ln]
    assert len(errs) == 1, r.stderr
    assert "non-finite" in errs[0]
    assert not os.path.exists(out)
    last = r.stderr.rstrip("\n").split("\n")[-1]
    if not last.startswith("error: "):
        raise ErrorNotOnItsOwnLine(f"the error line does not start a line: {last!r}")


# ------------------------------------------------------------------ inspect
def test_inspect_prints_parameters_and_provenance(tmp_path):
    out = tmp_path / "run.h5"
    r = _nonequil("simulate", "--process", "langevin", "--potential", "double-well", "--set",
                  "b=0:1", "--x0", "-1", "--walkers", "5", "--steps", "20", "--dt", "1e-3",
                  "--seed", "7", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    r = _nonequil("inspect", out)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "trajectory" in text
    assert "parameters:" in text and "provenance:" in text
    for needle in ("process = langevin", "potential = double-well", "dt = 0.001",
                   "seed = 7", "walkers = 5", "steps = 20", "b_start = 0.0", "b_end = 1.0",
                   "nonequil_version", "numba", "h5py", "command_line", "position",
                   "work"):
        assert needle in text, f"{needle!r} missing from inspect output"


def test_inspect_missing_file_is_one_error_line(tmp_path):
    r = _nonequil("inspect", tmp_path / "missing.h5")
    assert r.returncode != 0
    assert str(tmp_path / "missing.h5") in _the_error_line(r.stderr)


def test_inspect_not_hdf5_is_one_error_line(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("nope")
    r = _nonequil("inspect", p)
    assert r.returncode != 0
    assert "not an HDF5 file" in _the_error_line(r.stderr)


# ------------------------------------------------------------------ second writer
@pytest.mark.parametrize("resume", [False, True])
def test_second_writer_is_refused(tmp_path, resume):
    out = tmp_path / "run.h5"
    partial = str(out) + ".partial"
    ckpt = partial + ".ckpt"
    args = ["simulate", "--process", "langevin", "--potential", "double-well", "--x0", "-1",
            "--walkers", "201", "--steps", "20000000", "--dt", "1e-3", "--quiet",
            "--out", str(out)]
    first = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        t_end = time.monotonic() + TIMEOUT
        while not os.path.exists(ckpt):
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < t_end
            time.sleep(0.02)
        r = _nonequil(*args, *(["--resume"] if resume else []))
        assert r.returncode != 0
        line = _the_error_line(r.stderr)
        assert "another process" in line and str(out) in line, line
        assert first.poll() is None, "the first writer died"
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert not os.path.exists(out)
    with h5py.File(partial, "r") as f:
        n = f["particles/ensemble/position/value"].shape[0]
        assert n == f["particles/ensemble/position/step"].shape[0] >= 1


def test_in_process_provenance_records_the_verbs_own_command_line(tmp_path):
    """``cli.main(argv)`` called in-process (tests, sweeps, experiments, Dask workers) records
    its own argv as the command line, not the host program's ``sys.argv`` (pytest here)."""
    from nonequil import _context, cli

    out = tmp_path / "run.h5"
    argv = ["simulate", "--process", "ou", "--walkers", "4", "--steps", "3", "--dt", "0.01",
            "--seed", "11", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    with h5py.File(out, "r") as f:
        line = str(f["provenance"].attrs["command_line"])
    assert line.startswith("nonequil simulate --process ou "), line
    assert line == "nonequil " + " ".join(argv), line      # not sys.argv (pytest's)
    assert _context.COMMAND_LINE is None        # restored after the call
