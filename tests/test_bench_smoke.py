"""Smoke test of the OU benchmark script (experiments/bench_ou.py): it runs, not how fast.
At the end, unit tests of the machinery the benchmark scripts share (experiments/_bench.py).

The script runs in a subprocess at a tiny size; the test checks that ``--json`` puts exactly
one JSON document on stdout, with the expected keys, positive rates, and final ensembles whose
mean and variance match the exact law of the chain.  No assertion is made on any speed.
"""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("ou_exact_f64", "ou_em_f64", "ou_exact_f32", "philox_raw")
PEERS = ("numpy", "numpy_tuned", "torch", "jax")
GPU = ("cuda_ou_exact_f64", "cuda_philox_raw", "torch_cuda")
TOP = ("benchmark", "config", "machine", "results", "ratios", "ratios_per_cpu_s", "targets")


def run_bench(*extra):
    cmd = [sys.executable, "-m", "experiments.bench_ou", "--quick", "--json",
           "--walkers", "20000", "--steps", "20", *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    doc = json.loads(p.stdout)          # stdout holds only the JSON document
    return doc, p.stderr


def check_ok(name, r):
    assert r["status"] == "ok", (name, r)
    for key in ("rate", "rate_median", "items", "best_s", "median_s", "times_s", "unit",
                "compile_s", "label", "group"):
        assert key in r, (name, key)
    assert math.isfinite(r["rate"]) and r["rate"] > 0, (name, r["rate"])
    assert r["rate_median"] > 0 and r["best_s"] > 0 and r["median_s"] >= r["best_s"]
    assert len(r["times_s"]) == 3
    assert r["sane"] is True, (name, r)


def check_common(doc):
    for key in TOP:
        assert key in doc, key
    c = doc["config"]
    assert (c["walkers"], c["steps"], c["quick"], c["reps"]) == (20000, 20, True, 3)
    m = doc["machine"]
    assert m["threads"] >= 1 and m["numba_threads"] == m["threads"]
    res = doc["results"]
    for name in OURS:
        check_ok(name, res[name])
    assert res["philox_raw"]["unit"] == "normals/s"
    assert res["ou_exact_f64"]["unit"] == "walker-steps/s"
    for name in ("ou_exact_f64", "ou_em_f64", "ou_exact_f32"):
        ratio = doc["ratios"][f"{name}/philox_raw"]
        assert ratio > 0
    for t in doc["targets"]:
        # REPORTED: a ratio printed next to a target (against numpy_tuned), neither PASS nor FAIL
        assert t["status"] in ("PASS", "FAIL", "skipped", "REPORTED"), t
        if t["status"] == "REPORTED":
            assert t["ratio"] > 0
        elif t["status"] != "skipped":
            assert t["ratio"] > 0 and (t["status"] == "PASS") == (t["ratio"] >= t["need"])
    return res


def test_bench_ou_json_no_peers():
    doc, _ = run_bench("--no-peers")
    res = check_common(doc)
    for name in PEERS:
        assert res[name] == {"status": "skipped", "reason": "--no-peers"}
    keys = {t["key"]: t for t in doc["targets"]}
    assert keys["vs_raw_philox"]["status"] in ("PASS", "FAIL")
    for k in ("vs_jax", "vs_numpy", "vs_numpy_tuned", "vs_best_peer", "vs_best_peer_tuned"):
        assert keys[k]["status"] == "skipped"


def test_bench_ou_json_peers_and_device_flag():
    """Peers run where importable (numpy always) or are reported as skipped; so is the GPU."""
    doc, _ = run_bench("--device", "cuda")
    res = check_common(doc)
    check_ok("numpy", res["numpy"])
    check_ok("numpy_tuned", res["numpy_tuned"])
    for name in PEERS + GPU:
        r = res[name]
        if r["status"] == "ok":
            check_ok(name, r)
            if name in PEERS:
                assert doc["ratios"][f"ou_exact_f64/{name}"] > 0
        else:
            assert r["status"] == "skipped" and r["reason"], (name, r)
    keys = {t["key"]: t for t in doc["targets"]}
    assert keys["vs_numpy"]["status"] in ("PASS", "FAIL")
    assert keys["vs_best_peer"]["status"] in ("PASS", "FAIL")
    assert keys["vs_numpy_tuned"]["status"] == "REPORTED"
    assert keys["vs_numpy"]["against"] == "numpy"


# ---------------------------------------------------------------- experiments/_bench.py
# The machinery every benchmark script shares, in-process; no clock is read by these tests
# (the fake figures return fixed "times").
sys.path.insert(0, ROOT)
from experiments import _bench  # noqa: E402


class FakeFigure(_bench.Bench):
    """A figure whose repetitions 'take' the given times; counts reset() calls."""
    unit = "items/s"

    def __init__(self, name, times, skip_setup=False):
        super().__init__()
        self.name, self.label, self.skip_setup = name, f"fake {name}", skip_setup
        self.fixed = list(times)
        self.resets = 0

    def items(self):
        return 100

    def setup(self):
        if self.skip_setup:
            raise _bench.Skipped("no backend")
        self.first_call(lambda: None)

    def reset(self):
        self.resets += 1

    def timed(self):
        return self.fixed[len(self.times)]

    def check(self):
        return {"sane": True}


def never_built():
    raise _bench.Skipped("not importable")


def test_lineup_order_skips_and_results():
    line = _bench.Lineup()
    a = FakeFigure("a", [0.5, 0.25, 1.0])
    line.add(lambda: a, "a")
    line.skip(("p", "q"), "--no-peers")
    line.add(never_built, "torch")
    line.add(lambda: FakeFigure("b", [2.0] * 3, skip_setup=True), "b")
    res = line.run(3)
    # the figures in the order added (a skipped-at-setup one in its place), then the others
    assert list(res) == ["a", "b", "p", "q", "torch"]
    assert res["p"] == {"status": "skipped", "reason": "--no-peers"}
    assert res["torch"] == {"status": "skipped", "reason": "not importable"}
    assert res["b"] == {"status": "skipped", "reason": "no backend"}
    r = res["a"]
    assert a.resets == 3 and r["times_s"] == [0.5, 0.25, 1.0] and len(r["cpu_s"]) == 3
    assert r["rate"] == 100 / 0.25 and r["rate_median"] == 100 / 0.5
    assert (r["best_s"], r["median_s"], r["items"]) == (0.25, 0.5, 100)
    assert r["status"] == "ok" and r["sane"] is True and r["label"] == "fake a"
    assert r["compile_s"] is not None and r["compile_s"] >= 0


def test_table_lines_and_json_output(capsys):
    doc = {"ratios": {"x/y": 2.0, "x/z": 0.5}, "ratios_per_cpu_s": {"x/y": 1.5}}
    assert _bench.ratio_lines(doc, 10) == [
        "", "ratios" + " " * 11 + "wall  per cpu-s",          # 12 + 1 + 8 wide, then 10
        "  x/y" + " " * 11 + "2.00x" + " " * 6 + "1.50x", "  x/z" + " " * 11 + "0.50x "]
    targets = [{"status": "skipped", "target": "T0"},
               {"status": "PASS", "target": "T1", "ours": "x", "against": "y", "ratio": 2.0,
                "need": 1.5, "ratio_per_cpu_s": 1.25},
               {"status": "FAIL", "target": "T2", "ours": "x", "against": "z", "ratio": 0.5,
                "need": 1.0}]
    assert _bench.target_lines(targets, lambda t: f"need {t['need']:g}x") == [
        "  [SKIP] T0", "  [PASS] T1: x / y = 2.00x (need 1.5x); per cpu-s 1.25x",
        "  [FAIL] T2: x / z = 0.50x (need 1x)"]
    assert _bench.print_doc({"a": [1]}, True, lambda d: "table") == 0
    assert json.loads(capsys.readouterr().out) == {"a": [1]}
    _bench.print_doc({"a": [1]}, False, lambda d: f"table {d['a']}")
    assert capsys.readouterr().out == "table [1]\n"


def test_torch_without_cuda_is_skipped():
    try:
        import torch
    except Exception:           # noqa: BLE001 - then import_torch itself must skip
        torch = None
    if torch is not None and torch.cuda.is_available():
        return                  # a CUDA build: nothing to skip here
    try:
        _bench.import_torch(1, device="cuda")
    except _bench.Skipped as e:
        assert "CUDA" in str(e) or "not importable" in str(e)
    else:
        raise AssertionError("import_torch(device='cuda') did not skip without CUDA")


def test_numpy_mb_peer_runs_with_fewer_walkers_than_its_warm_up():
    """bench_mb's numpy peer warms up on min(256, M) walkers: with M = 100 its buffers hold
    100 rows (it raised a broadcast error before), and the timed run ends finite."""
    import numpy as np

    from experiments.bench_mb import NumpyMB

    b = NumpyMB(100, 3)
    b.setup()
    assert b.timed() > 0
    assert b.final.shape == (100, 2) and np.isfinite(b.final).all()
