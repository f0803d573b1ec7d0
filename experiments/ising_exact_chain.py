r"""The binomial chain's own error on a small Ising torus: the factorised reverse chain run
with the EXACT per-bit reverse probabilities (``nonequil.ising_exact.IsingExactDenoiser``,
enumeration of the 2^(L^2) states), against the exact mean energy per spin.

    python -m experiments.ising_exact_chain [--L 4] [--T 3.0] [--steps 25,100,400]
                                            [--n 100000] [--seed 1]

No network is involved, so what is left is the chain's: each reverse step draws the bits
independently given x_t (a product of Bernoullis), which drops their conditional
correlations and is exact only as the number of steps T -> infinity.  The generated
configurations come out too disordered by roughly 80 %/T at L = 4, T = 3.0 (measured with
this script: +3.49 %, +0.69 % and +0.29 % for T = 25, 100, 200 steps; 100 000 chains each,
SE 0.18 %).  A diagnostic script (not an experiment of ``nonequil experiment``).
"""
import argparse
import math
import sys
import time

import numpy as np


def chain_energy(L, T, steps, n, seed):
    """(mean, SE) of the energy per spin of n exact-marginal factorised-chain samples, and
    the exact mean (L x L torus at temperature T; a chain of ``steps`` steps)."""
    from nonequil.ising_exact import IsingExactDenoiser
    from nonequil.processes import BinomialChain
    from nonequil.samplers import sample

    chain = BinomialChain(1.0 / (steps - np.arange(1, steps + 1) + 1.0))
    den = IsingExactDenoiser(L, T, chain)
    s = sample(den, n, "binomial", seed=seed, batch=n).samples.astype(np.float64)
    e = -(s * (np.roll(s, 1, 1) + np.roll(s, 1, 2))).mean((1, 2))
    return float(e.mean()), float(e.std(ddof=1) / math.sqrt(n)), den.energy_per_spin


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--L", type=int, default=4)
    p.add_argument("--T", type=float, default=3.0)
    p.add_argument("--steps", default="25,100,400", help="comma list of chain lengths")
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    print(f"L = {a.L}, T = {a.T:g}, {a.n} chains: energy per spin of the exact-marginal "
          "factorised reverse chain")
    for steps in (int(v) for v in a.steps.split(",")):
        t0 = time.perf_counter()
        e, se, ex = chain_energy(a.L, a.T, steps, a.n, a.seed)
        print(f"  steps {steps:4d}: {e:.5f} +- {se:.5f}  exact {ex:.5f}  relative error "
              f"{100 * (e - ex) / abs(ex):+.2f} % +- {100 * se / abs(ex):.2f} %  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
