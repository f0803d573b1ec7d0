"""Smoke test of the OU benchmark script (experiments/bench_ou.py): it runs, not how fast.

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
