"""Smoke tests of the MLP benchmarks (experiments/bench_train.py, experiments/bench_sample.py):
they run, not how fast.

Each script runs in a subprocess (it pins the CPU affinity and sets Numba's thread count) in
``--quick --json`` mode at a tiny size; the tests check that stdout holds exactly one JSON
document with the expected keys, that every figure is positive and finite, that the
implementations trained / sampled something sane, and that the ratios and targets are
consistent with the figures.  No assertion is made on any speed.
"""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = ("benchmark", "config", "machine", "results", "ratios", "ratios_per_cpu_s", "targets")
FIGURE_KEYS = ("rate", "rate_median", "items", "best_s", "median_s", "times_s", "unit",
               "compile_s", "label", "group", "cpu_s", "rate_per_cpu_s", "sane")


def run_bench(module, *extra):
    cmd = [sys.executable, "-m", module, "--quick", "--json", "--reps", "2", *extra]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout)          # stdout holds only the JSON document


def check_figure(name, r):
    assert r["status"] == "ok", (name, r)
    for key in FIGURE_KEYS:
        assert key in r, (name, key)
    for key in ("rate", "rate_median", "rate_per_cpu_s", "best_s", "compile_s"):
        assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
    assert len(r["times_s"]) == 2 and r["median_s"] >= r["best_s"]
    assert r["sane"] is True, (name, r)


def check_ratios(doc, ours):
    res = doc["results"]
    for key, val in doc["ratios"].items():
        assert math.isfinite(val) and val > 0, (key, val)
    for o in ours:
        for p in ("torch_f32", "jax_f32"):
            if res.get(p, {}).get("status") == "ok":
                key = f"{o}/{p}"
                assert abs(doc["ratios"][key] - res[o]["rate"] / res[p]["rate"]) \
                    <= 1e-9 * doc["ratios"][key]
    for t in doc["targets"]:
        assert t["status"] in ("PASS", "FAIL", "REPORTED", "skipped"), t
        if t["status"] in ("PASS", "FAIL"):
            assert (t["status"] == "PASS") == (t["ratio"] >= t["need"])


def test_bench_train_quick():
    doc = run_bench("experiments.bench_train", "--steps", "6", "--batch", "64")
    for key in TOP:
        assert key in doc, key
    assert doc["benchmark"] == "dsm_training"
    c = doc["config"]
    assert (c["steps"], c["batch"], c["quick"], c["reps"]) == (6, 64, True, 2)
    assert c["sizes"] == [18, 128, 128, 128, 2]
    assert c["omp_wait_policy"].upper() == "PASSIVE" or "OMP_WAIT_POLICY" in os.environ
    res = doc["results"]
    for name in ("nonequil_f32", "nonequil_f64"):
        r = res[name]
        check_figure(name, r)
        assert r["unit"] == "steps/s" and r["items"] == 6
        assert r["engine"]["dtype"] == ("float32" if name.endswith("f32") else "float64")
        # the loss of a fresh eps-model starts near E|eps|^2 / D = 1 and stays finite
        assert 0.05 < r["loss_mean_last_rep"] < 5.0
    for name in ("torch_f32", "torch_f64", "jax_f32", "jax_f64", "numpy_f32", "numpy_f64"):
        if res[name]["status"] == "ok":
            check_figure(name, res[name])
            assert 0.05 < res[name]["loss_mean_last_rep"] < 5.0
        else:
            assert res[name]["status"] == "skipped" and res[name]["reason"]
    assert [t["key"] for t in doc["targets"]] == ["vs_torch_f32", "vs_jax_f32"]
    check_ratios(doc, ("nonequil_f32",))


def test_bench_sample_quick():
    doc = run_bench("experiments.bench_sample", "--n", "40", "--steps", "5")
    for key in TOP:
        assert key in doc, key
    assert doc["benchmark"] == "reverse_sampling"
    c = doc["config"]
    assert (c["n"], c["steps"], c["quick"], c["sampler"]) == (40, 5, True, "em")
    res = doc["results"]
    for name in ("nonequil_f32", "nonequil_fused_f32", "nonequil_blas_f32"):
        r = res[name]
        check_figure(name, r)
        assert r["items"] == 40 * r["stages"] and r["stages"] >= 5
    # the product figure is engine="auto", and says which engine that resolved to
    from nonequil import samplers
    assert res["nonequil_f32"]["engine"] == "auto"
    assert res["nonequil_f32"]["engine_resolved"] == samplers.AUTO_ENGINE["float32"]
    for name in ("torch_f32", "jax_f32"):
        if res[name]["status"] == "ok":
            check_figure(name, res[name])
    # every implementation ran the same chain (bench_sample.bench_model: an x0-model close to
    # that of data at 0, so each ends near 0); the nonequil engines use the same Philox
    # noise and agree to rounding
    ok = {k: v for k, v in res.items() if v.get("status") == "ok"}
    for name, v in ok.items():
        assert abs(v["final_mean"]) < 0.2 and v["final_std"] < 0.5, (name, v)
    for name in ("nonequil_fused_f32", "nonequil_blas_f32"):
        assert abs(ok["nonequil_f32"]["final_mean"] - ok[name]["final_mean"]) < 1e-5
    for key in ("auto/fused", "auto/blas", "fused/blas"):
        assert key in doc["ratios"] and key in doc["ratios_per_cpu_s"]
    assert doc["ratios"]["auto/fused"] == pytest.approx(
        res["nonequil_f32"]["rate"] / res["nonequil_fused_f32"]["rate"], rel=1e-9)
    check_ratios(doc, ("nonequil_f32", "nonequil_fused_f32", "nonequil_blas_f32"))
