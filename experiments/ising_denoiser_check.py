r"""A trained binomial-chain Ising model's reverse step against the exact one, per noise level.

    python -m experiments.ising_denoiser_check MODEL.h5 DATA.h5 --T 3.0 [--times 1,5,20,50,80]
                                               [--configs 16] [--replicas 16] [--sweeps 200]

For the bit-flip chain the exact reverse step needs only the posterior magnetisation
``m_i = E[s_0,i | s_t]`` of the Ising model in the field ``h_t s_t`` (``h_t = atanh r_t``;
see ``nonequil.ising_exact``).  At L = 16 it is estimated by checkerboard heat-bath sweeps
of that conditioned model, started from the clean data configuration s_0 itself (an exact
draw of the posterior, so no burn-in is needed), in ``replicas`` chains of ``sweeps``
sweeps each.  The model's magnetisation is read off its output by inverting
``p(x_{t-1} = 1 | x_t) = q0 + (1 + m_i)/2 (q1 - q0)`` (q1, q0 the chain's posterior bit
probabilities given x_0,i = 1, 0).  Per t it prints the mean of ``m_i s_t,i`` (how strongly
the denoiser trusts the noisy spin), of ``m_i m_j`` on nearest neighbours (the correlation
the reverse step passes on), the RMS difference and the regression slope of the model's m
on the exact one (< 1: under-confident, too disordered).  Uniforms from Philox
(``kernels.streams.uniforms``, purpose ``PURPOSE_SAMPLE + 15``).  A diagnostic script, not
an experiment of ``nonequil experiment``.
"""
import argparse
import math
import sys

import numpy as np

PURPOSE = 63            # PURPOSE_SAMPLE + 15: this script's uniforms


def _uniforms(seed, walker0, step, shape):
    from kernels import streams

    u = np.empty((shape[0], int(np.prod(shape[1:]))))
    streams.uniforms(np.uint64(seed), np.uint64(PURPOSE), walker0, step, u)
    return u.reshape(shape)


def exact_magnetisation(s0, st, h, K, replicas, sweeps, seed):
    """Heat-bath estimate of E[s_0 | s_t] [B, L, L] for the posterior exp(K sum s s + h s_t s)
    (started at s0); returns (m, se) with se from the spread over replicas."""
    B, L, _ = s0.shape
    s = np.repeat(s0[:, None].astype(np.float64), replicas, 1)        # [B, R, L, L]
    field = h * st[:, None].astype(np.float64)
    ii, jj = np.indices((L, L))
    colour = [((ii + jj) % 2 == c) for c in (0, 1)]
    acc = np.zeros_like(s)
    for k in range(sweeps):
        u = _uniforms(seed, 0, k, (B * replicas, 2, L, L)).reshape(B, replicas, 2, L, L)
        for c in (0, 1):
            nb = (np.roll(s, 1, 2) + np.roll(s, -1, 2) + np.roll(s, 1, 3) + np.roll(s, -1, 3))
            p_up = 0.5 * (1.0 + np.tanh(K * nb + field))
            new = np.where(u[:, :, c] <= p_up, 1.0, -1.0)
            s = np.where(colour[c], new, s)
        acc += s
    per_rep = acc / sweeps
    return per_rep.mean(1), per_rep.std(1, ddof=1) / math.sqrt(replicas)


def model_magnetisation(model, st, t):
    """The model's E[s_0 | s_t] [B, L, L] from its reverse bit probabilities."""
    xt = (st > 0).astype(np.float64)
    p = np.asarray(model.prob_prev(xt, t), np.float64).reshape(xt.shape)
    q1 = model.process.posterior_prob_one(xt, 1.0, t)
    q0 = model.process.posterior_prob_one(xt, 0.0, t)
    return 2.0 * (p - q0) / (q1 - q0) - 1.0


def _nn(m):
    return 0.5 * (m * (np.roll(m, 1, 1) + np.roll(m, 1, 2))).mean()


def main(argv=None):
    import h5py

    from nonequil.models import load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--T", type=float, required=True, help="temperature of the data (J/kB)")
    p.add_argument("--times", default="1,3,10,20,35,50,70,90")
    p.add_argument("--configs", type=int, default=16)
    p.add_argument("--replicas", type=int, default=16)
    p.add_argument("--sweeps", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    model = load(a.model)
    with h5py.File(a.data, "r") as f:
        s0 = np.asarray(f["samples"][:a.configs], np.float64)
    x0 = (s0 > 0).astype(np.float64)
    print(f"{a.model}: {a.configs} configurations, {a.replicas} x {a.sweeps} heat-bath sweeps")
    print("   t    r_t  <m s_t> exact  model   <m_i m_j>_nn exact  model   RMS(dm)  slope"
          "   SE(m)")
    for t in (int(v) for v in a.times.split(",")):
        r = float(model.process.keep(t))
        u = _uniforms(a.seed + 1, 0, 10**6 + t, s0.shape)
        xt = (u <= model.process.marginal_prob_one(x0, t)).astype(np.float64)
        st = 2.0 * xt - 1.0
        me, se = exact_magnetisation(s0, st, math.atanh(r), 1.0 / a.T, a.replicas, a.sweeps,
                                     a.seed + 2 + t)
        mm = model_magnetisation(model, st, t)
        d = (me - me.mean()).ravel()
        slope = float(d @ (mm - mm.mean()).ravel() / (d @ d))
        print(f"{t:4d}  {r:5.2f}  {np.mean(me * st):8.4f}  {np.mean(mm * st):8.4f}   "
              f"{_nn(me):12.4f}  {_nn(mm):8.4f}   {np.sqrt(np.mean((mm - me) ** 2)):.4f}  "
              f"{slope:6.3f}   {np.sqrt(np.mean(se ** 2)):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
