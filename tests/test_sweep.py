"""``nonequil sweep`` (issue 10): a grid of runs of a verb as Dask tasks, one HDF5 file per
point, a summary table (CSV and JSON) of observables, finished points skipped on a rerun, and
a failing point reported without stopping the others.  Zipped axes (``[zip]``: keys that vary
together), the in-process runner (``client=None``), and an experiment that uses a sweep:
``kramers`` runs its barrier heights as sweep points, bitwise the same in-process and on Dask.

The observables are checked against exact oracles: the moments of the Euler-Maruyama OU
chain x_{n+1} = a x_n + theta mu dt + sigma sqrt(dt) xi with a = 1 - theta dt, started at x0:
mean mu + (x0 - mu) a^n and variance sigma^2 dt (1 - a^{2n}) / (1 - a^2).
"""
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("distributed")

from nonequil import cli  # noqa: E402
from nonequil import distributed as dist  # noqa: E402
from nonequil.cmd_sweep import EXAMPLE, Spec, run_sweep, write_spec  # noqa: E402

CLI = [sys.executable, "-m", "nonequil.cli"]
Z = 5.0          # stochastic tolerance: |estimate - exact| <= Z * SE


@pytest.fixture(scope="module")
def client():
    with dist.connect(cluster=2) as c:
        yield c


def _spec(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _one_error_line(stderr):
    assert "Traceback" not in stderr, stderr
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


GOOD = """verb = "simulate"
args = ["--process", "ou", "--walkers", "10", "--steps", "5", "--dt", "0.1"]
[grid]
theta = [1.0, 2.0]
"""


@pytest.mark.parametrize("text,fragment", [
    (None, "does not exist"),
    ("verb = \n", "is not valid TOML"),
    (GOOD.replace('"simulate"', '"inspect"'), "verb 'inspect' cannot be swept; valid: "),
    (GOOD.replace('"simulate"', '"simulat"'), "valid: dataset"),
    (GOOD.replace("theta = [1.0, 2.0]", "theta = []"), "grid key 'theta' needs a non-empty"),
    (GOOD.replace("[grid]\ntheta = [1.0, 2.0]\n", ""), "needs a [grid] table"),
    ("observables = [\"nope\"]\n" + GOOD, "unknown observable(s) nope; valid: "),
    (GOOD.replace('"0.1"]', '"0.1", "--out", "x.h5"]'), "must not hold --out"),
    (GOOD.replace('"0.1"]', '"0.1", "--bogus"]'), "point 0 {'theta': 1.0}"),
    ("extra = 1\n" + GOOD, "unknown key(s) extra"),
    (GOOD + "bad = 1\n", "grid key 'bad' needs a non-empty list"),
    (GOOD + "[zip]\nsigma = [1.0, 2.0]\n\"--steps\" = [5, 6, 7]\n",
     "the keys of [zip] vary together and need lists of one length; got sigma (2 values), "
     "--steps (3 values)"),
    (GOOD + "[[zip]]\nsigma = [1.0]\n[[zip]]\nmu = [0.0, 1.0]\nkT = [1.0]\n",
     "the keys of [[zip]] group 1 vary together and need lists of one length; got mu (2 "
     "values), kT (1 values)"),
    (GOOD + "[zip]\ntheta = [3.0]\n", "key 'theta' appears more than once in [grid] and "
     "[zip]"),
    (GOOD + "[zip]\nsigma = []\n", "zip key 'sigma' needs a non-empty list"),
    ("zip = 3\n" + GOOD, "zip must be a [zip] table of key = [values]"),
    (GOOD.replace("[grid]\ntheta = [1.0, 2.0]\n", "[zip]\ntheta = [1.0, 2.0]\n"
                  "\"--steps\" = [5, \"x\"]\n"), "point 1 {'theta': 2.0, '--steps': 'x'}"),
])
def test_bad_spec_one_error_line_and_no_output(tmp_path, capsys, text, fragment):
    spec = tmp_path / "spec.toml" if text is None else _spec(tmp_path, text)
    out = tmp_path / "sweep"
    rc = cli.main(["sweep", str(spec), "--cluster", "local:2", "--out", str(out)])
    assert rc == 2
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_sweep_needs_a_cluster_flag(tmp_path, capsys):
    rc = cli.main(["sweep", str(_spec(tmp_path, GOOD)), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "one of the arguments --cluster --scheduler is required" in \
        _one_error_line(capsys.readouterr().err)


def _em_moments(theta, mu, sigma, dt, n, x0):
    a = 1.0 - theta * dt
    return mu + (x0 - mu) * a ** n, sigma ** 2 * dt * (1 - a ** (2 * n)) / (1 - a * a)


def test_sweep_observables_failing_point_and_rerun(client, tmp_path):
    """Stochastic (fixed seeds): each point's mean_x and var_x lie within Z SE of the exact
    moments of the EM chain; theta=50 (theta*dt = 2.5) fails alone; a rerun skips the rest."""
    spec = _spec(tmp_path, """verb = "simulate"
args = ["--process", "ou", "--method", "em", "--walkers", "3000", "--steps", "40",
        "--dt", "0.05", "--x0", "-1", "--set", "mu=0.5"]
observables = ["mean_x", "var_x", "mean_work"]
[grid]
theta = [0.5, 2.0, 50.0]
sigma = [0.7]
"--seed" = [1, 2]
""")
    out = tmp_path / "sw"
    rows = run_sweep(str(spec), str(out), client)
    assert [r["status"] for r in rows] == ["ran"] * 4 + ["failed"] * 2
    for r in rows[4:]:
        assert "unstable step: Euler-Maruyama OU needs theta*dt < 2" in r["error"]
        assert not os.path.exists(out / r["file"])
    for r in rows[:4]:
        m, v = _em_moments(r["theta"], 0.5, r["sigma"], 0.05, 40, -1.0)
        assert abs(r["mean_x"] - m) <= Z * r["mean_x_se"], r
        assert abs(r["var_x"] - v) <= Z * r["var_x_se"], r
        assert np.isnan(r["mean_work"]) and "no /observables/work" in r["error"]
        with h5py.File(out / r["file"], "r") as f:
            assert f["parameters"].attrs["theta"] == r["theta"]
            assert f["parameters"].attrs["seed"] == str(r["seed"])
    assert rows[0]["mean_x"] != rows[1]["mean_x"]           # the seeds differ
    doc = json.loads((out / "summary.json").read_text())
    assert [p["status"] for p in doc["points"]] == [r["status"] for r in rows]
    assert doc["points"][0]["var_x"] == rows[0]["var_x"]
    with open(out / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [float(t["mean_x"]) for t in table[:4]] == [r["mean_x"] for r in rows[:4]]
    assert table[0]["seed"] == "1" and table[0]["theta"] == "0.5"

    mtimes = [os.stat(out / r["file"]).st_mtime_ns for r in rows[:4]]
    again = run_sweep(str(spec), str(out), client)
    assert [r["status"] for r in again] == ["skipped"] * 4 + ["failed"] * 2
    assert [os.stat(out / r["file"]).st_mtime_ns for r in rows[:4]] == mtimes
    assert [r["mean_x"] for r in again] [:4] == [r["mean_x"] for r in rows[:4]]


def test_sweep_of_dataset_verb_ising_across_tc(client, tmp_path):
    """Any verb: Ising samples below and above Tc = 2.269 (L = 8)."""
    spec = _spec(tmp_path, """verb = "dataset"
args = ["ising", "--set", "L=8", "--n", "200"]
observables = ["abs_magnetization", "mean_x"]
[grid]
T = [1.5, 3.5]
""")
    rows = run_sweep(str(spec), str(tmp_path / "sw"), client)
    assert [r["status"] for r in rows] == ["ran", "ran"], rows
    cold, hot = rows
    assert cold["abs_magnetization"] > 0.9 > 0.5 > hot["abs_magnetization"]
    with h5py.File(tmp_path / "sw" / cold["file"], "r") as f:
        assert f["samples"].shape == (200, 8, 8) and f["samples"].attrs["T"] == 1.5


def test_cli_sweep_of_six_points_resumes_after_interruption(tmp_path):
    """SIGINT after the first point: finished points are skipped on the rerun, the point that
    was cut off resumes from its checkpoint, and every file equals a one-process run."""
    spec = _spec(tmp_path, """verb = "simulate"
args = ["--process", "langevin", "--potential", "double-well", "--walkers", "500",
        "--steps", "60000", "--dt", "1e-3", "--x0", "-1", "--record-every", "5000"]
observables = ["mean_x", "mean_energy"]
[grid]
b = [0.0, 0.5, 1.0]
"--seed" = [1, 2]
""")
    # points long enough (~1 s each) that the interrupt lands inside one: with 6000 steps a
    # point took ~0.05 s, and on a cold Numba cache the poll could first see a checkpoint of
    # the last point, whose SIGINT then arrived after the sweep had finished (exit 0)
    out = tmp_path / "sw"
    argv = CLI + ["sweep", str(spec), "--cluster", "local:1", "--out", str(out), "--quiet"]
    # SIGINT's default action in the child: an earlier test in the same pytest process may
    # leave SIGINT ignored (Dask clusters), a disposition that children inherit, and Python
    # then keeps it ignored (the sweep ran to the end and exited 0 in the full suite)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not (glob.glob(str(out / "p000-*.h5")) and glob.glob(str(out / "p*.partial.ckpt"))
               and len(glob.glob(str(out / "p*.h5"))) <= 4) \
            and time.monotonic() < deadline:     # point 0 done, a later point under way
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "error: interrupted" in err
    done = sorted(glob.glob(str(out / "p*.h5")))
    assert 1 <= len(done) < 6, done
    cut = glob.glob(str(out / "p*.h5.partial.ckpt"))
    assert cut, "no point was cut off mid-run"
    mtimes = {p: os.stat(p).st_mtime_ns for p in done}

    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "summary.json").read_text())["points"]
    status = {str(out / p["file"]): p["status"] for p in rows}
    assert all(status[p] == "skipped" for p in done)
    assert {p[:-len(".partial.ckpt")] for p in cut} <= {p for p, s in status.items()
                                                        if s == "resumed"}
    assert sorted(set(status.values()) - {"skipped", "ran", "resumed"}) == []
    assert {p: os.stat(p).st_mtime_ns for p in done} == mtimes
    assert len(glob.glob(str(out / "p*.h5"))) == 6
    assert all(np.isfinite(p["mean_x"]) and np.isfinite(p["mean_energy"]) for p in rows)

    from nonequil.simulate import simulate
    for p in rows:                  # every point equals the same run in this process
        ref = simulate(process="langevin", potential="double-well", walkers=500, steps=60000,
                       dt=1e-3, x0=[-1.0], record_every=5000, seed=p["seed"],
                       params={"b": p["b"]}).frames["position"]
        with h5py.File(out / p["file"], "r") as f:
            assert np.array_equal(f["particles/ensemble/position/value"][()], ref), p


def test_cli_sweep_on_scheduler_reports_failing_point(client, tmp_path, capsys):
    """The verb exits 1 with one error line after the summary when a point failed; the
    other points are done, and the failing point's warning names its error."""
    spec = _spec(tmp_path, """verb = "simulate"
args = ["--process", "ou", "--walkers", "50", "--steps", "10", "--dt", "0.1"]
observables = ["var_x"]
[grid]
sigma = [1.0, -1.0, 2.0]
""")
    out = tmp_path / "sw"
    rc = cli.main(["sweep", str(spec), "--scheduler", client.scheduler.address, "--out",
                   str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.rstrip("\n").split("\n")
    assert lines[-1].startswith("error: 1 of 3 sweep points failed")
    assert "warning: point 1" in err and "theta and sigma must be finite and >= 0" in err
    rows = json.loads((out / "summary.json").read_text())["points"]
    assert [r["status"] for r in rows] == ["ran", "failed", "ran"]
    assert rows[1]["var_x"] is None and rows[2]["var_x"] > rows[0]["var_x"]


# ====================================================================== zipped axes
ZIPPED = """verb = "simulate"
args = ["--process", "ou", "--method", "em", "--walkers", "64", "--dt", "0.05", "--x0", "1"]
observables = ["mean_x"]
[grid]
"--seed" = [1, 2]
[zip]
theta = [0.5, 1.0, 2.0]
"--steps" = [4, 8, 12]
"""


def test_zip_spec_expansion(tmp_path):
    """[zip] keys take their j-th values together; the [grid] keys and the zip groups are
    crossed in order, the last axis fastest; [[zip]] groups cross each other; write_spec
    round-trips; the --help example is a valid spec with the documented 6 points."""
    spec = Spec(str(_spec(tmp_path, ZIPPED)))
    assert spec.points() == [{"--seed": s, "theta": t, "--steps": n}
                             for s in (1, 2) for t, n in ((0.5, 4), (1.0, 8), (2.0, 12))]
    av = spec.argv(spec.points()[4], "o.h5")
    assert av[-9:] == ["--seed", "2", "--set", "theta=1.0", "--steps", "8", "--out", "o.h5",
                       "--quiet"]
    two = Spec(str(_spec(tmp_path, ZIPPED.replace("[zip]", "[[zip]]") + "[[zip]]\nsigma = "
                         "[0.5, 1.5]\nmu = [0.0, 1.0]\n", "two.toml")))
    pts = two.points()
    assert len(pts) == 2 * 3 * 2
    assert pts[:3] == [{"--seed": 1, "theta": 0.5, "--steps": 4, "sigma": 0.5, "mu": 0.0},
                       {"--seed": 1, "theta": 0.5, "--steps": 4, "sigma": 1.5, "mu": 1.0},
                       {"--seed": 1, "theta": 1.0, "--steps": 8, "sigma": 0.5, "mu": 0.0}]
    path = str(tmp_path / "written.toml")
    write_spec(path, two.verb, two.args, two.grid, two.zips, two.observables)
    back = Spec(path)
    assert (back.verb, back.args, back.grid, back.zips, back.observables) == \
        (two.verb, two.args, two.grid, two.zips, two.observables)
    assert back.points() == pts
    ex = Spec(str(_spec(tmp_path, EXAMPLE, "example.toml")))
    assert [(p["--seed"], p["a"], p["--steps"]) for p in ex.points()] == \
        [(s, a, n) for s in (1, 2) for a, n in ((1.0, 5000), (2.0, 20000), (3.0, 60000))]


def test_zipped_sweep_in_process_equals_dask(client, tmp_path):
    """A zipped sweep run in this process (client=None) writes the same files, bit for bit,
    as on the Dask cluster; each file holds its point's zipped theta and step count."""
    spec = str(_spec(tmp_path, ZIPPED))
    here = run_sweep(spec, str(tmp_path / "here"))
    there = run_sweep(spec, str(tmp_path / "there"), client)
    assert [r["status"] for r in here] == ["ran"] * 6 == [r["status"] for r in there]
    assert [r["file"] for r in here] == [r["file"] for r in there]
    assert [r["mean_x"] for r in here] == [r["mean_x"] for r in there]
    for r in here:
        with h5py.File(tmp_path / "here" / r["file"], "r") as f, \
                h5py.File(tmp_path / "there" / r["file"], "r") as g:
            assert f["parameters"].attrs["theta"] == r["theta"]
            assert f["particles/ensemble/position/step"][-1] == r["steps"]
            assert np.array_equal(f["particles/ensemble/position/value"][()],
                                  g["particles/ensemble/position/value"][()]), r
    doc = json.loads((tmp_path / "here" / "summary.json").read_text())
    assert doc["zip"] == [{"theta": [0.5, 1.0, 2.0], "--steps": [4, 8, 12]}]
    assert doc["grid"] == {"--seed": [1, 2]}


def test_in_process_sweep_failing_point_and_rerun(tmp_path):
    """client=None: a failing point is reported and does not stop the others; a rerun skips
    the finished points and leaves their files untouched."""
    spec = str(_spec(tmp_path, """verb = "simulate"
args = ["--process", "ou", "--walkers", "20", "--steps", "5", "--dt", "0.1"]
[zip]
sigma = [1.0, -1.0, 2.0]
"--seed" = [3, 4, 5]
"""))
    out = tmp_path / "sw"
    seen = []
    rows = run_sweep(spec, str(out), callback=seen.append)
    assert [r["status"] for r in rows] == ["ran", "failed", "ran"]
    assert "theta and sigma must be finite and >= 0" in rows[1]["error"]
    assert [i["done"] for i in seen] == [1, 2, 3] and [i["point"] for i in seen] == [0, 1, 2]
    mtimes = [os.stat(out / r["file"]).st_mtime_ns for r in rows[::2]]
    again = run_sweep(spec, str(out))
    assert [r["status"] for r in again] == ["skipped", "failed", "skipped"]
    assert [os.stat(out / r["file"]).st_mtime_ns for r in rows[::2]] == mtimes


# ====================================================================== kramers on a sweep
def _kramers():
    from nonequil.cmd_experiment import import_experiment

    return import_experiment("kramers")


def _mfpts(out):
    res = json.loads((out / "results.json").read_text())
    return res, [row[1] for row in res["tables"][0]["rows"]]


def test_kramers_bad_dask_flag_one_error_line(tmp_path, capsys):
    out = tmp_path / "k"
    for bad, fragment in ((["--cluster", "local:x"], "expected local:N"),
                          (["--cluster", "local:2", "--scheduler", "tcp://h:1"],
                           "not allowed with argument")):
        assert _kramers().main(["--quick", "--out", str(out), *bad]) == 2
        assert fragment in _one_error_line(capsys.readouterr().err)
        assert not out.exists() and not os.path.exists(str(out) + ".partial")


@pytest.mark.slow
def test_kramers_quick_sweep_in_process_and_on_local_cluster(tmp_path):
    """kramers --quick runs its barrier heights as sweep points (sweep.toml, summary.csv/json
    in the report directory); on --cluster local:2 every MFPT equals the in-process run's bit
    for bit, and equals the plain ``simulate`` run with the same seed (seed + i for barrier
    i), so the sweep changed no figure of the earlier in-process loop."""
    from nonequil import cli
    from nonequil.simulate import simulate

    kr = _kramers()
    here, there = tmp_path / "here", tmp_path / "there"
    assert cli.main(["experiment", "kramers", "--quick", "--out", str(here), "--quiet",
                     "--seed", "7"]) == 0
    assert kr.main(["--quick", "--out", str(there), "--quiet", "--seed", "7",
                    "--cluster", "local:2"]) == 0
    res_h, tau_h = _mfpts(here)
    res_t, tau_t = _mfpts(there)
    assert len(tau_h) == len(kr.QUICK["barriers"]) and all(np.isfinite(tau_h))
    assert tau_t == tau_h
    assert {k: c["value"] for k, c in res_t["checks"].items()} == \
        {k: c["value"] for k, c in res_h["checks"].items()}
    assert res_h["settings"]["sweep"] == "in-process"
    assert res_t["settings"]["sweep"] == "Dask --cluster local:2"
    assert res_t["command"].endswith("--cluster local:2")
    assert res_t["steps"][0]["command"].startswith(f"nonequil sweep {there}/sweep.toml "
                                                   "--cluster local:2")
    for out, res, tau in ((here, res_h, tau_h), (there, res_t, tau_t)):
        doc = json.loads((out / "summary.json").read_text())
        assert doc["spec"] == "sweep.toml" and (out / "sweep.toml").is_file()
        assert (out / "summary.csv").is_file() and not (out / "sweep.lock").exists()
        pts = doc["points"]
        assert [p["a"] for p in pts] == list(kr.QUICK["barriers"])
        assert [p["seed"] for p in pts] == [7, 8, 9]
        assert [p["status"] for p in pts] == ["ran"] * 3
        assert [p["mfpt_exponential_tail"] for p in pts] == tau     # the same estimator
        assert all((out / f["file"]).is_file() for f in res["files"])
    p0 = json.loads((here / "summary.json").read_text())["points"][0]
    fpt = simulate(process="langevin", potential="double-well", walkers=1000,
                   steps=p0["steps"], dt=kr.QUICK["dt"], x0=[-1.0], absorb="x>=1",
                   record_every=p0["steps"], seed=7,
                   params={"a": 1.5, "b": 0.0, "kT": 1.0, "gamma": 1.0}
                   ).frames["first_passage_time"][-1]
    assert kr._mfpt(fpt, p0["steps"] * kr.QUICK["dt"])[0] == tau_h[0]
