"""Python API details: user potentials, and the README parameter table kept in sync."""
import os
import re

import numpy as np
from numba import njit

from nonequil.potentials import POTENTIALS
from nonequil.simulate import PROCESS_KEYS, simulate


@njit
def user_harmonic(x, p, g):
    y = x[0] - p[1]
    u = y * y
    g[0] = p[0] * y
    for d in range(1, x.shape[0]):
        u += x[d] * x[d]
        g[d] = p[0] * x[d]
    return 0.5 * p[0] * u


def test_user_potential_equals_builtin_harmonic():
    kw = dict(process="langevin", walkers=33, steps=50, dt=1e-2, seed=4, x0=[0.3, -0.2],
              record_every=10)
    a = simulate(potential="harmonic", params={"k": 2.0, "center": 0.5}, **kw)
    b = simulate(potential=user_harmonic, potential_params=[2.0, 0.5], **kw)
    for k in ("position", "energy", "heat"):
        assert np.array_equal(a.frames[k], b.frames[k]), k


def test_readme_parameter_table_matches_code():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| ([a-z-]+)(?: \(overdamped\))? \| (.*?) \|", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`([A-Za-z_]+)`", m.group(2)))
    for name, keys in PROCESS_KEYS.items():
        assert rows[name] == set(keys), name
    for name, pot in POTENTIALS.items():
        assert rows[name] == set(pot.keys), name


def test_python_dash_m_nonequil_is_the_cli():
    """``python -m nonequil`` runs the CLI: --version exits 0, bad input gives the one
    ``error:`` line and exit status 2, as the ``nonequil`` command does."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "nonequil", "--version"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "nonequil", "likelihood", "/no/such.h5",
                          "/no/such.h5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: model file /no/such.h5")
