"""``nonequil sweep`` (issue 10): a grid of runs of a verb as Dask tasks, one HDF5 file per
point, a summary table (CSV and JSON) of observables, finished points skipped on a rerun, and
a failing point reported without stopping the others.

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
from nonequil.cmd_sweep import run_sweep  # noqa: E402

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
        "--steps", "6000", "--dt", "1e-3", "--x0", "-1", "--record-every", "500"]
observables = ["mean_x", "mean_energy"]
[grid]
b = [0.0, 0.5, 1.0]
"--seed" = [1, 2]
""")
    out = tmp_path / "sw"
    argv = CLI + ["sweep", str(spec), "--cluster", "local:1", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (glob.glob(str(out / "p000-*.h5")) and glob.glob(str(out / "p*.partial.ckpt"))) \
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
        ref = simulate(process="langevin", potential="double-well", walkers=500, steps=6000,
                       dt=1e-3, x0=[-1.0], record_every=500, seed=p["seed"],
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
