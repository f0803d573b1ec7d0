r"""Numerical checks of GAN theory (Goodfellow et al. 2014) and mode-coverage diagnostics.

* For a fixed generator with density p_g, the discriminator that maximises the value
  ``L(G, D) = E_r[log D] + E_g[log(1 - D)]`` is ``D*(x) = p_r(x) / (p_r(x) + p_g(x))``
  (Proposition 1), and ``L(G, D*) = 2 JS(p_r || p_g) - 2 log 2`` (Theorem 1), so
  ``JS = (L + log 4) / 2`` at the optimal D.  ``optimal_discriminator``, ``js_divergence``
  (quadrature) and ``optimal_value`` give the oracles; ``value_estimate`` measures L of a
  trained discriminator on fresh samples with a standard error.
* At the global optimum p_g = p_r: D* = 1/2 everywhere and L = -2 log 2 = -log 4.
  ``equilibrium_report`` measures how close a trained GAN is (mean D on real and generated
  samples, L, JS estimate, each with an error bar).
* ``mode_coverage`` counts the modes of a mixture that a sample set captures and the fraction
  of samples within 3 sigma of a mode.  ``ring_centers`` places K ring modes at angles
  2 pi k / K, k = 0 .. K-1 (``linspace(0, 2 pi, K)`` would repeat the first angle and give
  K - 1 distinct modes).

Every function here works in data units and uses natural logarithms (nats).
"""
import math

import numpy as np

LOG4 = math.log(4.0)


def optimal_discriminator(p_r, p_g):
    """D*(x) = p_r / (p_r + p_g) from the two densities at the same points (arrays)."""
    p_r, p_g = np.asarray(p_r, np.float64), np.asarray(p_g, np.float64)
    return p_r / (p_r + p_g)


def js_divergence(pdf_r, pdf_g, lo, hi, points=None):
    """JS(p_r || p_g) in nats for 1-D densities (callables) by adaptive quadrature on [lo, hi]:
    ``JS = 1/2 KL(p_r || m) + 1/2 KL(p_g || m)``, m = (p_r + p_g) / 2; mass outside [lo, hi]
    is ignored (choose the interval wide enough)."""
    from scipy.integrate import quad

    def f(x):
        a, b = float(pdf_r(x)), float(pdf_g(x))
        m = 0.5 * (a + b)
        s = 0.0
        if a > 0.0:
            s += 0.5 * a * math.log(a / m)
        if b > 0.0:
            s += 0.5 * b * math.log(b / m)
        return s

    val, _ = quad(f, lo, hi, points=points, limit=500, epsabs=1e-12, epsrel=1e-10)
    return val


def optimal_value(pdf_r, pdf_g, lo, hi, points=None):
    """L(G, D*) = 2 JS(p_r || p_g) - 2 log 2 (nats)."""
    return 2.0 * js_divergence(pdf_r, pdf_g, lo, hi, points) - LOG4


def value_estimate(model, real, fake):
    """(L, SE) of the model's discriminator on real and generated samples (data units):
    ``L = mean log D(real) + mean log(1 - D(fake))`` (stable, from logits); the SE is that of
    the sum of two independent sample means."""
    lr = -np.logaddexp(0.0, -model.d_logit(real))
    lf = -np.logaddexp(0.0, model.d_logit(fake))
    se = math.sqrt(lr.var(ddof=1) / lr.size + lf.var(ddof=1) / lf.size)
    return float(lr.mean() + lf.mean()), se


def equilibrium_report(model, real, n=20000, seed=1):
    """How close a trained GAN is to the equilibrium D = 1/2, L = -log 4.

    ``real`` are held-out real samples (data units); ``n`` generated samples are drawn with
    ``seed``.  Returns a dict of ``{"value", "se"}`` entries: ``d_real``, ``d_fake`` (mean D
    on each set), ``value`` (L), ``value_minus_opt`` (L + log 4) and ``js``
    ((L + log 4) / 2, a JS estimate valid if D is optimal).
    """
    fake = model.sample(n, seed=seed)
    dr = model.discriminator(real)
    df = model.discriminator(fake)
    L, se = value_estimate(model, real, fake)

    def m(a):
        return {"value": float(a.mean()), "se": float(a.std(ddof=1) / math.sqrt(a.size))}
    return {"d_real": m(dr), "d_fake": m(df), "value": {"value": L, "se": se},
            "value_minus_opt": {"value": L + LOG4, "se": se},
            "js": {"value": 0.5 * (L + LOG4), "se": 0.5 * se}}


def ring_centers(K, radius=1.0):
    """[K, 2] centres at angles 2 pi k / K (k = 0 .. K-1) on a circle of ``radius``."""
    ang = 2.0 * np.pi * np.arange(K) / K
    return radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)


def mode_coverage(samples, centers, sigmas, weights=None, min_share=0.25):
    """Mode coverage of ``samples`` [n] or [n, D] against mixture modes ``centers`` [K, D]
    (or [K] in 1-D) with isotropic standard deviations ``sigmas`` [K] (or one number).

    A sample belongs to the nearest mode (in units of that mode's sigma) if it lies within
    3 sigma of it.  A mode is *captured* if it holds at least ``min_share`` of its expected
    number of samples ``n w_k`` (``weights`` default uniform).  Returns a dict: ``modes`` (K),
    ``captured`` (count), ``within_3sigma`` (fraction of all samples within 3 sigma of a
    mode), ``fractions`` [K] (fraction of samples assigned to each mode) and ``weights``.
    """
    x = np.asarray(samples, np.float64)
    c = np.asarray(centers, np.float64)
    if c.ndim == 1:
        c = c[:, None]
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dimensions, centers {c.shape[1]}")
    K = c.shape[0]
    sig = np.broadcast_to(np.asarray(sigmas, np.float64), (K,))
    w = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, np.float64) / np.sum(
        weights)
    dist = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)) / sig[None, :]   # [n, K]
    near = np.argmin(dist, axis=1)
    inside = dist[np.arange(x.shape[0]), near] <= 3.0
    frac = np.array([np.mean(inside & (near == k)) for k in range(K)])
    captured = int(np.sum(frac >= min_share * w))
    return {"modes": K, "captured": captured, "within_3sigma": float(inside.mean()),
            "fractions": frac, "weights": w}
