"""Ising datasets at L = 64 approach Onsager's infinite-lattice values."""
import math

import numpy as np
import pytest

from nonequil import analytic, datasets


@pytest.mark.slow
@pytest.mark.parametrize("T", [2.0, 3.0])
def test_l64_energy_approaches_onsager(T):
    """Stochastic (seed 1, z = 5): L = 64 energy per spin against Kaufman (exact, L = 64) and
    Onsager (L = inf).  The samples are spaced >= 4 tau_int apart (recorded by the generator),
    so SE = std / sqrt(N).  At L = 64 Kaufman and Onsager differ by less than 1e-4, so the
    Monte-Carlo energy approaches Onsager's within the same bound."""
    d = datasets.generate("ising", 300, params={"L": 64, "T": T}, seed=1)
    e = np.asarray(d.extra["energy"], float)
    se = e.std(ddof=1) / math.sqrt(e.size)
    kauf = float(analytic.ising_kaufman(64, T).energy)
    ons = float(analytic.ising_energy(T))
    assert abs(kauf - ons) < 1e-4
    assert abs(e.mean() - kauf) < 5 * se, (e.mean(), kauf, se)
    assert abs(e.mean() - ons) < 5 * se + 1e-4
    m = np.abs(np.asarray(d.extra["magnetization"], float))
    if T < analytic.ISING_TC:
        m_ons = float(analytic.ising_magnetization(T))
        assert abs(m.mean() - m_ons) < 5 * m.std(ddof=1) / math.sqrt(m.size) + 0.01
