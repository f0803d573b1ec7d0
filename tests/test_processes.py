"""Forward diffusion processes and schedules against their defining equations."""
import itertools
import math

import numpy as np
import pytest

from nonequil import processes, schedules

SDES = [processes.make("vp"), processes.make("vp", "cosine"), processes.make("vp", "loglinear"),
        processes.make("subvp"), processes.make("subvp", "cosine"), processes.make("ve")]


@pytest.mark.parametrize("sch", [schedules.make("linear"), schedules.make("cosine"),
                                 schedules.make("loglinear", gamma_min=-10, gamma_max=6)])
def test_schedule_beta_is_minus_dlog_alpha_bar(sch):
    t = np.linspace(0.01, 0.98 * sch.t_max, 50)
    h = 1e-6
    fd = -(sch.log_alpha_bar(t + h) - sch.log_alpha_bar(t - h)) / (2 * h)
    assert np.allclose(fd, sch.beta(t), rtol=1e-6)
    assert abs(sch.log_alpha_bar(0.0)) < 1e-12 or sch.name == "loglinear"
    lsnr = sch.log_snr(t)
    ab = sch.alpha_bar(t)
    assert np.allclose(lsnr, np.log(ab / (1 - ab)), rtol=1e-9, atol=1e-9)
    assert np.all(np.diff(lsnr) < 0)          # SNR decreases monotonically


def test_cosine_t_max_and_loglinear_endpoints():
    c = schedules.make("cosine")
    assert math.isclose(c.alpha_bar(c.t_max), 1e-5, rel_tol=1e-9)
    v = schedules.make("loglinear", gamma_min=-13.3, gamma_max=5.0)
    assert math.isclose(v.log_snr(0.0), 13.3) and math.isclose(v.log_snr(1.0), -5.0)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{s.name}-{s.params().get('schedule', '')}")
def test_marginal_moments_solve_the_sde(sde):
    """m' = k(t) m and v' = 2 k(t) v + g(t)^2 for the linear SDE dx = k x dt + g dW."""
    t = np.linspace(0.02, 0.95 * sde.t_max, 40)
    h = 1e-6
    m = sde.mean_coeff
    v = sde.variance
    dm = (m(t + h) - m(t - h)) / (2 * h)
    dv = (v(t + h) - v(t - h)) / (2 * h)
    k = sde.drift_coeff(t)
    g2 = sde.diffusion(t) ** 2
    assert np.allclose(dm, k * m(t), rtol=1e-5, atol=1e-9)
    assert np.allclose(dv, 2 * k * v(t) + g2, rtol=1e-5, atol=1e-7)
    # transitions compose (Chapman-Kolmogorov for the affine Gaussian kernels)
    s, u, w = 0.1 * sde.t_max, 0.4 * sde.t_max, 0.8 * sde.t_max
    a1, c1 = sde.transition(s, u)
    a2, c2 = sde.transition(u, w)
    a, c = sde.transition(s, w)
    assert math.isclose(a1 * a2, a, rel_tol=1e-12)
    assert math.isclose(a2 * a2 * c1 * c1 + c2 * c2, c * c, rel_tol=1e-10)
    mean, std = sde.marginal(np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([0.3, 0.6]))
    assert mean.shape == (2, 2) and std.shape == (2, 1)


def test_ddpm_posterior_is_gaussian_conditioning():
    ch = processes.DiscreteChain()
    x0 = 0.7
    for t in (1, 2, 10, 500, 1000):
        ab_p = float(ch.ab(t - 1))
        a, c = ch.step(t)
        # joint of (x_{t-1}, x_t) | x0: x_{t-1} = sqrt(ab_p) x0 + s1 e1, x_t = a x_{t-1} + c e2
        m1, v1 = math.sqrt(ab_p) * x0, 1 - ab_p
        m2, v2 = a * m1, a * a * v1 + c * c
        cov = a * v1
        for xt in (-1.0, 0.3, 2.0):
            mean_ref = m1 + cov / v2 * (xt - m2)
            var_ref = v1 - cov * cov / v2
            mean, std = ch.posterior(xt, x0, t)
            assert math.isclose(mean, mean_ref, rel_tol=1e-10, abs_tol=1e-12)
            assert math.isclose(std * std, var_ref, rel_tol=1e-9, abs_tol=1e-15)


def test_binomial_marginal_and_posterior_by_enumeration():
    ch = processes.BinomialChain(betas=np.array([0.1, 0.3, 0.25, 0.5]))
    for x0, t in itertools.product((0, 1), range(1, 5)):
        # forward by enumeration of the chain
        p = np.array([1.0 - x0, float(x0)])                  # law of x_0
        laws = [p]
        for s in range(1, t + 1):
            p1 = p[0] * ch.step_prob_one(0, s) + p[1] * ch.step_prob_one(1, s)
            p = np.array([1 - p1, p1])
            laws.append(p)
        assert math.isclose(ch.marginal_prob_one(x0, t), laws[t][1], rel_tol=1e-12)
        for xt in (0, 1):
            q1 = ch.step_prob_one(1, t)
            q0 = ch.step_prob_one(0, t)
            lik = lambda xp: (q1 if xp else q0) if xt == 1 else (1 - (q1 if xp else q0))
            num = laws[t - 1][1] * lik(1)
            den = num + laws[t - 1][0] * lik(0)
            assert math.isclose(ch.posterior_prob_one(np.array(xt), x0, t), num / den,
                                rel_tol=1e-12)
    assert processes.BinomialChain().keep(100) == 0.0    # the default chain ends uniform
