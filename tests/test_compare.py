"""``nonequil.compare`` and ``nonequil compare``: metrics at chance level for one law, a known
shift detected and measured, exact laws recovered from exact samples, the ``--json`` and
table outputs, and the input errors of DESIGN.md.

Stochastic tests use fixed seeds (numpy ``default_rng``) and z = 5 bounds: a statistic "at
chance level" is within 5 of its standard errors of its null value, and a recovered
quantity is within 5 SE of the exact one.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from nonequil import analytic as A
from nonequil.compare import ANALYTIC_LAWS, compare_samples
from nonequil.errors import InputError

Z = 5.0
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "nonequil.cli", "compare"]


def rng(seed):
    return np.random.default_rng(seed)


def within(entry, target, z=Z):
    return abs(entry["value"] - target) <= z * entry["se"]


def write(path, data, name="samples"):
    with h5py.File(path, "w") as f:
        f[name] = data
    return str(path)


def dw_samples(seed, n, a=2.0, b=0.5, kT=1.0):
    """Exact double-well draws: the quadrature inverse CDF on uniforms."""
    return A.double_well_boltzmann(a=a, b=b, kT=kT).inverse_cdf(rng(seed).random(n))


# ------------------------------------------------------------------ two sample sets
def test_same_law_1d_is_at_chance_level():
    """Stochastic (seeds 10, 11): two samples of one law (N(0,1), n = 2000, m = 3000):
    w1_excess, energy distance, MMD^2 and the histogram JS are within 5 SE of 0, the raw W1
    is below 5 SE, KS does not reject at 1e-3, and the mean difference is within 5 SE."""
    x, y = rng(10).normal(size=2000), rng(11).normal(size=3000)
    r = compare_samples(x, reference=y)
    for k in ("w1_excess", "energy_distance", "mmd2_rbf", "js_histogram_x0", "mean_x0_diff",
              "var_x0_diff"):
        assert within(r[k], 0.0), (k, r[k])
    assert 0 < r["w1"]["value"] < Z * r["w1"]["se"]
    assert r["ks_pvalue_x0"]["value"] > 1e-3
    assert r["w1_x0"] == r["w1"]
    assert (r["n_samples"]["value"], r["n_reference"]["value"], r["dim"]["value"]) == (2000, 3000, 1)
    assert r["pairwise_n_samples"]["value"] == 2000 and r["mmd2_rbf_bandwidth"]["value"] > 0


def test_same_law_2d_is_at_chance_level():
    """Stochastic (seeds 12, 13): one 2-D law (correlated Gaussian, n = m = 1500): sliced W1
    excess, energy distance and MMD^2 within 5 SE of 0."""
    C = np.array([[1.0, 0.6], [0.6, 2.0]])
    x = rng(12).multivariate_normal([0, 1], C, size=1500)
    y = rng(13).multivariate_normal([0, 1], C, size=1500)
    r = compare_samples(x, reference=y)
    for k in ("sliced_w1_excess", "energy_distance", "mmd2_rbf", "mean_x1_diff"):
        assert within(r[k], 0.0), (k, r[k])
    assert "w1" not in r and r["sliced_w1_projections"]["value"] == 64


def test_known_shift_is_detected_and_measured():
    """Stochastic (seeds 14, 15): y = N(0.5, 1): W1 = 0.5 within 5 SE; W1, energy distance
    and MMD^2 exceed 5 SE; the mean difference is -0.5 within 5 SE."""
    x, y = rng(14).normal(size=2000), rng(15).normal(0.5, 1.0, size=3000)
    r = compare_samples(x, reference=y)
    assert within(r["w1"], 0.5)
    for k in ("w1", "w1_excess", "energy_distance", "mmd2_rbf"):
        assert r[k]["value"] > Z * r[k]["se"], (k, r[k])
    assert within(r["mean_x0_diff"], -0.5)
    assert r["ks_pvalue_x0"]["value"] < 1e-6


def test_known_2d_shift_sliced_w1():
    """Stochastic (seeds 16, 17): a pure translation by d in 2-D: sliced W1 equals the mean
    over its fixed directions of |theta . d| within 5 SE, and is detected (> 5 SE)."""
    d = np.array([0.4, -0.2])
    x = rng(16).normal(size=(1500, 2))
    y = rng(17).normal(size=(1500, 2)) + d
    r = compare_samples(x, reference=y, seed=3)
    th = rng(3).standard_normal((64, 2))  # the directions of metrics.sliced_wasserstein
    th /= np.linalg.norm(th, axis=1, keepdims=True)
    assert within(r["sliced_w1"], float(np.mean(np.abs(th @ d))))
    assert r["sliced_w1"]["value"] > Z * r["sliced_w1"]["se"]
    assert r["energy_distance"]["value"] > Z * r["energy_distance"]["se"]


def test_ising_like_reference_observables():
    """Spin arrays [N, L, L] of +-1 get energy and |m| per spin; identical sets differ by 0."""
    s = np.where(rng(18).random((300, 6, 6)) < 0.5, 1, -1).astype(np.int8)
    r = compare_samples(s, reference=s.copy())
    assert r["energy_per_spin_diff"]["value"] == 0.0
    assert r["dim"]["value"] == 36 and "ks_statistic_x15" in r and "ks_statistic_x16" not in r


def test_shape_mismatch_is_an_error():
    with pytest.raises(InputError, match=r"\(10, 2\).*\(10, 3\)"):
        compare_samples(np.zeros((10, 2)), reference=np.zeros((10, 3)))
    compare_samples(rng(1).normal(size=10), reference=rng(2).normal(size=(12, 1)))  # [N] ~ [N, 1]


# ------------------------------------------------------------------ exact laws
def test_double_well_exact_samples_match_the_law():
    """Stochastic (seed 20): 20000 exact double-well draws (a=2, b=0.5): both basin
    populations, Delta F, log-likelihood, <U>, mean and variance within 5 SE of exact; the
    W1 excess within 5 SE of 0; KS does not reject at 1e-3."""
    x = dw_samples(20, 20_000)
    r = compare_samples(x, analytic="double-well", params={"a": 2.0, "b": 0.5})
    for j in (0, 1):
        assert within(r[f"pop_basin_{j}"], r[f"pop_basin_{j}_exact"]["value"])
        assert r[f"pop_basin_{j}_exact"]["se"] is None
    exact = A.double_well_boltzmann(a=2.0, b=0.5).populations(
        [A.double_well_stationary_points(2.0, 0.5)[1]])
    assert r["pop_basin_1_exact"]["value"] == pytest.approx(exact[1], rel=1e-12)
    assert r["delta_f_basin_0_1_exact"]["value"] == pytest.approx(-math.log(exact[1] / exact[0]), rel=1e-12)
    for k in ("delta_f_basin_0_1", "log_likelihood", "mean_energy", "mean_x0", "var_x0"):
        assert within(r[k], r[f"{k}_exact"]["value"]), (k, r[k], r[f"{k}_exact"])
    assert within(r["w1_excess"], 0.0)
    assert r["ks_pvalue_x0"]["value"] > 1e-3 and r["chi2_pvalue_x0"]["value"] > 1e-3
    assert within(r["js_histogram_x0"], 0.0) and within(r["kl_histogram_x0"], 0.0)
    assert r["pop_max_abs_diff"]["value"] < 0.02


def test_double_well_shift_is_detected():
    """Stochastic (seed 21): exact draws shifted by 0.1: W1 to the law = 0.1 within 5 SE,
    and the excess over chance exceeds 5 SE."""
    r = compare_samples(dw_samples(21, 20_000) + 0.1, analytic="double-well",
                        params={"a": 2.0, "b": 0.5})
    assert within(r["w1"], 0.1)
    assert r["w1_excess"]["value"] > Z * r["w1_excess"]["se"]


def test_other_laws_recovered():
    """Stochastic (seeds 22-25): exact draws of harmonic (3-D), a 1-D Gaussian mixture, and
    a periodic harmonic chain (P = 16): log-likelihood, moments and <U> within 5 SE."""
    h = rng(22).normal(0.0, 0.5, size=(4000, 3))
    h[:, 0] += 1.0
    r = compare_samples(h, analytic="harmonic", params={"k": 4.0, "center": 1.0})
    for k in ("log_likelihood", "mean_energy", "mean_x0", "var_x2"):
        assert within(r[k], r[f"{k}_exact"]["value"]), k
    G = A.GaussianMixture([0.3, 0.7], [-1.0, 2.0], [0.25, 0.49])
    r = compare_samples(G.sample(rng(23), 5000), analytic="gaussian-mixture",
                        params={"weights": [0.3, 0.7], "means": [-1, 2], "sigmas": [0.5, 0.7]})
    assert abs(r["log_likelihood"]["value"] - r["log_likelihood_exact"]["value"]) <= Z * math.hypot(
        r["log_likelihood"]["se"], r["log_likelihood_exact"]["se"])
    assert within(r["w1_excess"], 0.0) and within(r["var_x0"], 0.3 * 0.25 + 0.7 * 0.49 + 0.21 * 9)
    C = A.HarmonicChain(16, k=1.0, k0=0.1, ends="periodic")
    r = compare_samples(C.sample(rng(24), 3000), analytic="harmonic-chain",
                        params={"k0": 0.1, "ends": "periodic"})
    for k in ("log_likelihood", "mean_energy", "var_x3"):
        assert within(r[k], r[f"{k}_exact"]["value"]), k


def test_ising_against_kaufman_by_enumeration():
    """Stochastic (seed 26): exact Boltzmann draws of the 4 x 4 periodic Ising model at
    T = 2.5 (all 2^16 states enumerated): energy per spin, specific heat and log-likelihood
    within 5 SE of Kaufman's exact values."""
    L, T = 4, 2.5
    states = ((np.arange(2 ** 16)[:, None] >> np.arange(16)) & 1).astype(np.int8) * 2 - 1
    s = states.reshape(-1, L, L)
    E = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).sum((1, 2)).astype(float)
    w = np.exp(-(E - E.min()) / T)
    pick = rng(26).choice(len(s), 20_000, p=w / w.sum())
    r = compare_samples(s[pick], analytic="ising", params={"T": T})
    for k in ("energy_per_spin", "specific_heat_per_spin", "log_likelihood"):
        assert within(r[k], r[f"{k}_exact"]["value"]), (k, r[k], r[f"{k}_exact"])
    assert r["energy_per_spin_exact"]["value"] == pytest.approx(A.ising_kaufman(L, T).energy)


def test_muller_brown_populations():
    """Stochastic (seed 27): draws from the quadrature grid (cell by mass, uniform inside
    the 0.005-wide cell): the three basin populations and Delta F within 5 SE of exact."""
    B = A.muller_brown_boltzmann()
    g = rng(27)
    mass = B.density.ravel() / B.density.sum()
    i, j = np.unravel_index(g.choice(mass.size, 20_000, p=mass), B.density.shape)
    h = B.x[1] - B.x[0]
    xy = np.stack([B.x[i], B.y[j]], 1) + h * (g.random((i.size, 2)) - 0.5)
    r = compare_samples(xy, analytic="muller-brown")
    for k in ("pop_basin_0", "pop_basin_1", "pop_basin_2", "delta_f_basin_0_1", "mean_energy"):
        assert within(r[k], r[f"{k}_exact"]["value"]), (k, r[k], r[f"{k}_exact"])


def test_parameter_errors_name_the_valid_keys():
    with pytest.raises(InputError, match="valid: a, b, kT, k_perp"):
        compare_samples(np.zeros(5), analytic="double-well", params={"c": 1.0})
    with pytest.raises(InputError, match="valid: " + ", ".join(ANALYTIC_LAWS)):
        compare_samples(np.zeros(5), analytic="quartic")
    with pytest.raises(InputError, match="T=VALUE"):
        compare_samples(np.ones((5, 4, 4)), analytic="ising")
    with pytest.raises(InputError, match=r"\[N, 2\]"):
        compare_samples(np.zeros((5, 3)), analytic="muller-brown")
    with pytest.raises(InputError, match="exactly one"):
        compare_samples(np.zeros(5))


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    x = rng(30).normal(size=(200, 2))
    x[37, 1] = np.nan
    (d / "text.h5").write_text("not hdf5\n")
    return {
        "dw": write(d / "dw.h5", dw_samples(31, 1000)),
        "dw2": write(d / "dw2.h5", dw_samples(32, 800)),
        "g2": write(d / "g2.h5", rng(33).normal(size=(500, 2))),
        "nan": write(d / "nan.h5", x),
        "other": write(d / "other.h5", np.zeros(5), name="data"),
        "text": str(d / "text.h5"),
        "missing": str(d / "missing.h5"),
    }


def run(*args):
    return subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_json_output_is_a_flat_object_of_value_se(files):
    p = run(files["dw"], "--analytic", "double-well", "--set", "a=2", "--set", "b=0.5", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # stdout holds only the JSON document
    assert isinstance(doc, dict) and doc
    for k, v in doc.items():
        assert k == k.lower() and " " not in k
        assert isinstance(v, dict) and set(v) == {"value", "se"}, (k, v)
        assert v["value"] is None or isinstance(v["value"], float)
        assert v["se"] is None or isinstance(v["se"], float)
    assert within(doc["pop_basin_0"], doc["pop_basin_0_exact"]["value"])
    p = run(files["dw"], "--reference", files["dw2"], "--json", "--quiet")
    assert p.returncode == 0 and p.stderr == ""
    doc = json.loads(p.stdout)
    assert {"w1", "w1_excess", "energy_distance", "mmd2_rbf", "mmd2_rbf_bandwidth",
            "ks_statistic_x0", "ks_pvalue_x0", "js_histogram_x0", "mean_x0_diff"} <= set(doc)
    assert all(set(v) == {"value", "se"} for v in doc.values())


def test_table_output_is_readable(files):
    p = run(files["dw"], "--reference", files["dw2"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("metric"))
    assert any("MMD^2 kernel: Gaussian" in l and "h = " in l for l in lines[:head])
    rows = lines[head + 1:]
    assert rows[0].split()[:2] == ["n_samples", "1000"]
    w1 = next(l for l in rows if l.split()[0] == "w1")
    assert "±" in w1
    col = {len(l.split("±")[0].rstrip()) for l in rows}  # values right-aligned in one column
    assert len(col) == 1, col


def test_help_lists_common_flags():
    p = subprocess.run(CLI + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    for flag in ("--help", "--quiet", "--debug", "--seed", "--reference", "--analytic",
                 "--set", "--json", "--dataset"):
        assert flag in p.stdout, flag


def test_verb_module_import_is_light():
    code = ("import sys, nonequil.cmd_compare; "
            "print(sorted(m for m in ('numpy', 'scipy', 'h5py', 'numba') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


ERRORS = {
    "missing file": (["{missing}", "--analytic", "harmonic"], [r"{missing}", "does not exist"]),
    "not hdf5": (["{text}", "--analytic", "harmonic"], [r"{text}", "not an HDF5 file"]),
    "missing dataset": (["{other}", "--analytic", "harmonic"], [r"{other}", "no dataset /samples"]),
    "missing reference dataset": (["{dw}", "--reference", "{other}"],
                                  ["reference file", "{other}", "--reference-dataset"]),
    "nan row": (["{nan}", "--analytic", "harmonic"], ["row 37 (0-based)", "column 1"]),
    "both": (["{dw}", "--reference", "{dw2}", "--analytic", "harmonic"], ["exactly one of"]),
    "neither": (["{dw}"], ["exactly one of", "--reference", "--analytic"]),
    "unknown law": (["{dw}", "--analytic", "quartic"], ["quartic"] + list(ANALYTIC_LAWS)),
    "unknown key": (["{dw}", "--analytic", "harmonic", "--set", "q=1"], ["'q'", "k, center, kT"]),
    "bad value": (["{dw}", "--analytic", "harmonic", "--set", "kT=-1"], ["kT", "> 0"]),
    "shape mismatch": (["{dw}", "--reference", "{g2}"], ["(1000,)", "(500, 2)"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_line(files, case):
    args, needles = ERRORS[case]
    p = run(*[a.format(**files) for a in args])
    assert p.returncode != 0
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n.format(**files) in lines[0], (n, lines[0])
