r"""Score models s(x, t) ~ grad_x log p_t(x) for a forward process.

Exact models (oracles for tests, references for experiments), usable wherever a learned one
is.  Each has ``score(x, t)`` for x [N, D] and a scalar t or one time per row, and
``eps(x, t) = -std(t) * score`` (the noise-prediction parametrisation).

* ``GaussianScore(mean, cov, sde)``: p_0 = N(mean, cov) -> p_t = N(m mean, m^2 cov + v I),
  score = -(m^2 cov + v I)^{-1} (x - m mean) (e.g. the harmonic chain).
* ``MixtureScore(weights, means, covs, sde)``: p_0 a Gaussian mixture -> p_t the mixture with
  means m mu_k and covariances m^2 C_k + v I (responsibility-weighted component scores).
* ``EmpiricalScore(data, sde)``: p_0 the empirical law of a finite training set, so
  p_t = (1/N) sum_i N(m x_i, v I): score = sum_i r_i (m x_i - x) / v with softmax
  responsibilities r_i; it memorises the training set (the optimum of DSM on that set).

Here m(t) = ``sde.mean_coeff(t)`` and v(t) = ``sde.variance(t)``.
"""
import numpy as np


def _mv(sde, t, n):
    t = np.asarray(t, float)
    m = np.broadcast_to(sde.mean_coeff(t), (n,)) if t.ndim else np.full(n, sde.mean_coeff(t))
    v = np.broadcast_to(sde.variance(t), (n,)) if t.ndim else np.full(n, sde.variance(t))
    return np.asarray(m, float), np.asarray(v, float)


class ExactScore:
    def eps(self, x, t):
        _, v = _mv(self.sde, t, np.shape(x)[0])
        return -np.sqrt(v)[:, None] * self.score(x, t)


class GaussianScore(ExactScore):
    def __init__(self, mean, cov, sde):
        self.mean = np.atleast_1d(np.asarray(mean, float))
        D = self.mean.size
        c = np.asarray(cov, float)
        self.cov = c * np.eye(D) if c.ndim == 0 else (np.diag(c) if c.ndim == 1 else c)
        self.sde = sde
        self.evals, self.evecs = np.linalg.eigh(self.cov)

    def score(self, x, t):
        x = np.asarray(x, float)
        m, v = _mv(self.sde, t, x.shape[0])
        y = (x - m[:, None] * self.mean) @ self.evecs        # eigenbasis of cov
        y /= (m[:, None] ** 2) * self.evals + v[:, None]
        return -(y @ self.evecs.T)

    def log_prob(self, x, t):
        x = np.asarray(x, float)
        m, v = _mv(self.sde, t, x.shape[0])
        lam = (m[:, None] ** 2) * self.evals + v[:, None]
        y = (x - m[:, None] * self.mean) @ self.evecs
        return -0.5 * np.sum(y * y / lam + np.log(2 * np.pi * lam), axis=1)


class MixtureScore(ExactScore):
    def __init__(self, weights, means, covs, sde):
        from .analytic import GaussianMixture

        self.base = GaussianMixture(weights, means, covs)
        self.sde = sde

    def _at(self, t):
        from .analytic import GaussianMixture

        m = float(self.sde.mean_coeff(t))
        v = float(self.sde.variance(t))
        b = self.base
        return GaussianMixture(b.weights, m * b.means, m * m * b.covs + v * np.eye(b.dim))

    def score(self, x, t):
        x = np.asarray(x, float)
        if np.ndim(t) == 0:
            return np.asarray(self._at(float(t)).score(x)).reshape(x.shape)
        out = np.empty_like(x)
        tt = np.asarray(t, float)
        for u in np.unique(tt):
            sel = tt == u
            out[sel] = np.asarray(self._at(u).score(x[sel])).reshape(x[sel].shape)
        return out

    def log_prob(self, x, t):
        return self._at(float(t)).log_prob(np.asarray(x, float))


class EmpiricalScore(ExactScore):
    def __init__(self, data, sde):
        self.data = np.asarray(data, float).reshape(len(data), -1)
        self.sde = sde

    def score(self, x, t, block=4096):
        x = np.asarray(x, float)
        m, v = _mv(self.sde, t, x.shape[0])
        out = np.empty_like(x)
        for s in range(0, x.shape[0], block):
            xs, ms, vs = x[s:s + block], m[s:s + block, None], v[s:s + block, None]
            c = ms[:, :, None] * self.data.T[None]                 # [b, D, N]
            d2 = np.sum((xs[:, :, None] - c) ** 2, axis=1)         # [b, N]
            lr = -0.5 * d2 / vs
            lr -= lr.max(axis=1, keepdims=True)
            r = np.exp(lr)
            r /= r.sum(axis=1, keepdims=True)
            out[s:s + block] = (np.einsum("bn,bdn->bd", r, c) - xs) / vs
        return out
