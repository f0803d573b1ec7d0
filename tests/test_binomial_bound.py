"""The variational bound of the binomial (bit-flip) chain (``nonequil.likelihood.binomial_elbo``,
``nonequil likelihood --method elbo`` on a binomial-chain model).

Oracle: a tiny system of D = 3 or 4 bits with an arbitrary (correlated) law pi, and the
*optimal factorised* reverse kernel of the chain, ``p(x_{t-1,d} = 1 | x_t) = sum_{x_0}
q(x_{t-1,d} = 1 | x_t, x_0) q(x_0 | x_t)`` by enumeration over the 2^D states
(``EnumBinomial``).  Then, also by enumeration over all states and steps:

* the bound's expectation ``E_q[L](x_0)`` for every x_0 (``exact_bound``);
* the model's own law ``p_model(x_0)`` of the reverse chain that the sampler runs
  (``exact_log_p``: the uniform prior pushed through the T reverse kernels).

Stochastic tests (labelled in their docstrings) use fixed seeds and z = 5 standard errors.
"""
import json
import math
import re

import h5py
import numpy as np
import pytest
from scipy import stats

from nonequil import likelihood, processes, samplers
from nonequil.errors import InputError
from tests.test_likelihood import _cli, assert_error_lines
from tests.test_samplers import _mlp_model

Z = 5.0
LAW3 = np.random.default_rng(0).dirichlet(np.ones(8))      # a correlated law of 3 bits


def _states(D):
    """All 2^D bit vectors [2^D, D]; state k has bit d = (k >> d) & 1."""
    return ((np.arange(2 ** D)[:, None] >> np.arange(D)) & 1).astype(np.float64)


class EnumBinomial:
    """The optimal factorised reverse kernel of the binomial chain (T steps, the default
    betas 1/(T - t + 1)) for the law ``law [2^D]`` over the states of ``_states(D)``."""

    def __init__(self, law, D, T=100, encoding=None, shape=None):
        self.law = np.asarray(law, np.float64)
        self.dim = D
        self.states = _states(D)
        self.process = processes.BinomialChain(1.0 / (T - np.arange(1, T + 1) + 1.0))
        self.data_shape = shape or (D,)
        self.data_encoding = encoding

    def prob_prev(self, x, t):
        ch, S = self.process, self.states
        x = np.asarray(x, np.float64).reshape(-1, self.dim)
        m1 = ch.marginal_prob_one(S, t)                              # [x_0, d]
        lik = np.prod(np.where(x[:, None, :] == 1, m1[None], 1 - m1[None]), axis=2)
        w = lik * self.law
        w /= w.sum(axis=1, keepdims=True)                             # q(x_0 | x_t)
        post = ch.posterior_prob_one(x[:, None, :], S[None], t)       # [b, x_0, d]
        return np.einsum("bk,bkd->bd", w, post).reshape((-1,) + self.data_shape)


def exact_bound(m):
    """E_q[L](x_0) [2^D] by enumeration over x_t (all states) for every step t."""
    ch, S = m.process, m.states
    K = S.shape[0]
    L = np.sum(likelihood._bernoulli_kl(ch.marginal_prob_one(S, ch.T), 0.5), axis=1)
    for t in range(1, ch.T + 1):
        m1 = ch.marginal_prob_one(S, t)
        q_xt = np.prod(np.where(S[None] == 1, m1[:, None], 1 - m1[:, None]), axis=2)
        p = m.prob_prev(S, t).reshape(K, -1)                          # [x_t, d]
        post = ch.posterior_prob_one(S[None], S[:, None], t)          # [x_0, x_t, d]
        L += np.sum(q_xt * np.sum(likelihood._bernoulli_kl(post, p[None]), axis=2), axis=1)
    return L


def exact_log_p(m):
    """log p_model(x_0) [2^D] of the sampler's chain: Bernoulli(1/2)^D pushed through the
    reverse kernels t = T..1."""
    S = m.states
    K = S.shape[0]
    v = np.full(K, 1.0 / K)
    for t in range(m.process.T, 0, -1):
        p = m.prob_prev(S, t).reshape(K, -1)
        v = v @ np.prod(np.where(S[None] == 1, p[:, None], 1 - p[:, None]), axis=2)
    return np.log(v)


def _entropy(law):
    return float(-np.sum(law * np.log(law)))


def _ising_2x2(beta=0.6):
    """Spins of a 2 x 2 open square (4 bonds), law exp(beta sum s_i s_j) over _states(4)."""
    s = (2 * _states(4) - 1).reshape(16, 2, 2)
    e = (s[:, 0, 0] * s[:, 0, 1] + s[:, 1, 0] * s[:, 1, 1] + s[:, 0, 0] * s[:, 1, 0]
         + s[:, 0, 1] * s[:, 1, 1])
    law = np.exp(beta * e)
    return s.astype(np.int8), law / law.sum()


# ------------------------------------------------------------------------- oracles
def test_enumeration_oracle_is_a_bound_that_tightens():
    """Deterministic: for every x_0, E_q[L](x_0) >= -log p_model(x_0) (the bound holds per
    point in expectation over q), p_model sums to 1, and the mean gap E_pi[L] - H(pi)
    shrinks as T grows (T = 3, 10, 30, 100 on the 3-bit law)."""
    H = _entropy(LAW3)
    gaps = []
    for T in (3, 10, 30, 100):
        m = EnumBinomial(LAW3, 3, T)
        L, lp = exact_bound(m), exact_log_p(m)
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(L >= -lp - 1e-12), T
        assert LAW3 @ -lp >= H - 1e-12
        gaps.append(LAW3 @ L - H)
    assert all(g1 > g2 > 0 for g1, g2 in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 0.01                         # measured 0.0033 at T = 100


def test_sampler_draws_the_enumerated_model_law():
    """Stochastic: the binomial sampler run on EnumBinomial (T = 10) draws the law
    exp(exact_log_p): 8-state chi-square p > 1e-6.  So the bound below is the bound of the
    chain that ``sample`` runs."""
    m = EnumBinomial(LAW3, 3, T=10)
    x = samplers.sample(m, 4000, seed=6).samples.astype(np.int64)
    counts = np.bincount(x @ (1 << np.arange(3)), minlength=8)
    assert stats.chisquare(counts, np.exp(exact_log_p(m)) * 4000).pvalue > 1e-6


def test_monte_carlo_bound_matches_enumeration():
    """Stochastic: 400 evaluations of each of the 8 states of the 3-bit law (T = 10; distinct
    point indices, hence independent Philox draws) have means within 5 SE of the exact
    E_q[L](x_0) of the enumeration."""
    m = EnumBinomial(LAW3, 3, T=10)
    n = 400
    r = likelihood.binomial_elbo(m, np.repeat(m.states, n, axis=0), seed=1)
    v = r.nll.reshape(8, n)
    se = v.std(axis=1, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(v.mean(axis=1) - exact_bound(m)) <= Z * se), (v.mean(1), se)
    assert r.info["steps"] == 10 and r.terms["prior"] == 0.0        # r_T = 0
    assert r.nll_nats_per_dim == pytest.approx(r.nll_nats_per_sample / 3)


def test_mean_bound_on_spin_data_is_at_least_the_entropy():
    """Stochastic: 2000 draws of a 2 x 2 Ising law (spins, data_shape (2, 2)) under its
    optimal factorised chain (T = 100): the mean bound is >= H(pi) - 5 SE, and within 5 SE of
    the exact E_pi[L] (which is >= H by the enumeration)."""
    s, law = _ising_2x2()
    m = EnumBinomial(law, 4, T=100, encoding="spins", shape=(2, 2))
    x = s[np.random.default_rng(3).choice(16, 2000, p=law)]
    r = likelihood.elbo(m, x, seed=2)
    H = _entropy(law)
    exact = float(law @ exact_bound(m))
    assert exact >= H
    assert r.nll_nats_per_sample >= H - Z * r.se
    assert abs(r.nll_nats_per_sample - exact) <= Z * r.se, (r.nll_nats_per_sample, exact)


# ------------------------------------------------------------------------- the library
def test_bound_is_a_pure_function_of_the_point_index():
    """Deterministic: points 3..5 evaluated alone (first_sample = 3) equal the same points in
    a larger run in batches of 2; another seed changes them."""
    m = EnumBinomial(LAW3, 3, T=10)
    x = m.states[[0, 3, 5, 6, 7, 1]]
    full = likelihood.binomial_elbo(m, x, seed=4, batch=2)
    part = likelihood.binomial_elbo(m, x[3:], seed=4, first_sample=3)
    assert np.array_equal(full.nll[3:], part.nll)
    assert not np.array_equal(full.nll, likelihood.binomial_elbo(m, x, seed=5).nll)


def test_bound_input_checks_and_mlp_models():
    """A bits model refuses spins and a spins model refuses 0/1 bits (naming the data),
    non-binary values are named by row and column, --steps must be T, and method ode is
    refused; an MLP binomial model gets a finite bound through elbo and likelihood."""
    m = _mlp_model(dim=3, width=8, depth=1, process="binomial")
    bits = (np.random.default_rng(0).random((6, 3)) < 0.5).astype(np.float64)
    r = likelihood.elbo(m, bits)
    assert np.array_equal(r.nll, likelihood.binomial_elbo(m, bits).nll)
    assert np.all(np.isfinite(r.nll)) and r.info["process"] == "binomial"
    out = likelihood.likelihood(m, bits, method="elbo")
    assert out["nll_nats_per_sample"] == r.nll_nats_per_sample and out["steps"] == 100
    spins = _mlp_model(dim=3, width=8, depth=1, process="binomial", encoding="spins")
    bad = bits.copy()
    bad[2, 1] = 0.5
    cases = [(m, 2 * bits - 1, {}, "data hold -1/+1 spins"),
             (spins, bits, {}, "data hold 0/1 bits"),
             (m, bad, {}, "row 2 (0-based), column 1"),
             (m, bits, {"steps": 10}, "T = 100")]
    for model, x, kw, msg in cases:
        with pytest.raises(InputError, match=re.escape(msg)):
            likelihood.binomial_elbo(model, x, **kw)
    rs = likelihood.elbo(spins, 2 * bits - 1)       # the same bits given as spins
    assert np.all(np.isfinite(rs.nll)) and rs.nll.shape == (6,)
    with pytest.raises(InputError, match="no probability-flow ODE density"):
        likelihood.likelihood(m, bits, method="ode")


# ------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def ising_files(tmp_path_factory):
    """A binomial-chain model trained briefly (1500 steps) on 3000 spins of the 2 x 2 Ising
    law, and a data file of 600 fresh draws."""
    from nonequil.train import train

    tmp = tmp_path_factory.mktemp("binomial")
    s, law = _ising_2x2()
    rng = np.random.default_rng(3)
    m = train(s[rng.choice(16, 3000, p=law)], process="binomial", steps=1500, batch=256,
              width=32, depth=2, warmup=20, threads=1)
    mpath = tmp / "ising_model.h5"
    m.write(str(mpath))
    dpath = tmp / "ising.h5"
    with h5py.File(dpath, "w") as f:
        f["samples"] = s[rng.choice(16, 600, p=law)]
        f["bits"] = (f["samples"][()] + 1) // 2
    return m, mpath, dpath, law


def test_cli_elbo_on_a_trained_binomial_model(ising_files, capsys):
    """Stochastic: ``likelihood --method elbo --json`` on a binomial model prints the contract
    keys with the library's values; its mean bound over 600 draws is >= H(pi) - 5 SE and,
    after 1500 training steps, below the 4 ln 2 of a uniform model (measured 2.18 +- 0.06
    against H = 2.00 and 4 ln 2 = 2.77); the text output names the bound."""
    m, mpath, dpath, law = ising_files
    capsys.readouterr()
    assert _cli("likelihood", mpath, dpath, "--method", "elbo", "--json", "--quiet",
                "--seed", 3) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert cap.err == ""
    for k in ("method", "n", "nll_nats_per_sample", "nll_nats_per_dim", "se"):
        assert k in out
    assert out["method"] == "elbo" and out["n"] == 600 and out["dim"] == 4
    with h5py.File(dpath) as f:
        x = f["samples"][()]
    ref = likelihood.elbo(m, x, seed=3)
    assert out["nll_nats_per_sample"] == ref.nll_nats_per_sample and out["se"] == ref.se
    assert out["nll_nats_per_dim"] == pytest.approx(ref.nll_nats_per_sample / 4, rel=1e-12)
    H = _entropy(law)
    assert out["nll_nats_per_sample"] >= H - Z * out["se"]
    assert out["nll_nats_per_sample"] < 4 * math.log(2)
    assert _cli("likelihood", mpath, dpath, "--method", "elbo", "--n", 20, "--quiet") == 0
    assert "discrete bound (100 steps)" in capsys.readouterr().out


def test_cli_binomial_errors(ising_files, capsys):
    """--method ode (and the default ode) on a binomial model, bits given to a spin model and
    a wrong --steps end with one ``error:`` line, no traceback, nothing on stdout."""
    m, mpath, dpath, _ = ising_files
    cases = [((mpath, dpath, "--method", "ode"), "no probability-flow ODE density"),
             ((mpath, dpath), "use --method elbo"),
             ((mpath, dpath, "--method", "elbo", "--dataset", "/bits"),
              f"{dpath}:/bits: the model was trained on spins"),
             ((mpath, dpath, "--method", "elbo", "--steps", 5), "T = 100")]
    assert_error_lines(capsys, cases)
