r"""Reweighting generated samples to exact Boltzmann statistics.

A sampler is a proposal; where the data came from a known energy U (double well,
Müller-Brown, harmonic chain, Ising, ...), sample i gets the importance weight
``w_i = exp(-U(x_i)/kT) / q_i`` where ``q_i = exp(log_proposal_i)`` is computed while
sampling (``sample(..., log_density=True)``, ``nonequil sample --log-weights``):

* ``ode`` samples (method ``rk45`` only): ``log_proposal = log p_model(x)``, the log-density
  of the sample under the model, from the *same* adaptive integration that produced it: the
  state and ``log p`` are integrated together, ``d log p / dt = -div F`` (exact Jacobian
  trace up to ``EXACT_TRACE_MAX_DIM`` dimensions; use tight tolerances, e.g. rtol = atol =
  1e-7).  Above that dimension the trace is Hutchinson's: **the weights are then biased**
  (E[exp(noisy log q)] != q), and the result says so.
* ``em``, ``ancestral``, ``pc`` samples: the path weight of Sohl-Dickstein et al. (2015) /
  annealed importance sampling (Neal 2001; Jarzynski): the target is extended to the whole
  path by backward kernels B, the proposal is the sampler's chain P,
  ``log_proposal = log p_T(y_K) + sum_k [log P(y_{k+1} | y_k) - log B(y_k | y_{k+1})]
  - log |det dy/dx|``.  B is the exact forward transition of the diffusion,
  ``q(y_t | y_s) = N(a y_s, c^2)``, ``a = m_t/m_s``, ``c^2 = v_t - a^2 v_s``, for a predictor
  step from t to s < t, and, for a Langevin corrector step at t, the same corrector kernel
  run from the new state (unadjusted-Langevin AIS).  Every stage must be noisy: ``denoise``
  must be off (it is turned off by default when log-densities are asked for; an explicit
  ``denoise=true`` is an error).  Then ``E[w] = Z`` exactly for any score; a good score makes
  the weights nearly equal.
* ``binomial`` samples (Ising): the same path weight with bit-flip kernels, the forward
  kernel ``q(x_t | x_{t-1})`` as B and the model's ``p(x_{t-1} | x_t)`` as P; prior 2^-D.

Recording: ``sample_with_log_density`` (used by ``nonequil sample --log-weights``) also
records the reverse trajectory (``record_every``) without changing the samples or the
log-proposals by a bit: the em / ancestral / pc frames are those of the Python engine, the
binomial frames the decoded states, and the ode (RK45) frames the solver's dense output
between its adaptive steps (exact at t_max and t_eps).  Log-densities are computed on the
CPU only.

Estimators (``reweight``): ``log w = -U/kT - log_proposal``;
``Z_hat = mean(w)``, the free energy ``F = -kT log Z_hat`` (biased by O(1/N); consistent);
the effective sample size ``ESS = (sum w)^2 / sum w^2``; self-normalised observables
``<O> = sum w O / sum w`` (consistent, not unbiased).  Standard errors are bootstrap
standard deviations over ``n_boot`` resamples of the samples with replacement (indices from
Philox purpose 55: resample b draws index i from the uniform of counter (b, 0, i // 2),
word pair i % 2).  ESS/N below 1 % sets
``low_ess`` (the CLI warns): the estimates and their error bars are then unreliable.

Randomness: purpose 55 (``PURPOSE_SAMPLE + 7``), bootstrap resampling only; the sampling
itself uses the samplers' purposes (48-51).
"""
import math
import time

import numpy as np

from .errors import InputError, RunError

PURPOSE_BOOTSTRAP = 55          # kernels.philox.PURPOSE_SAMPLE + 7
LOW_ESS_FRACTION = 0.01
LOG_2PI = math.log(2 * math.pi)
HUTCHINSON_NOTE = ("Hutchinson trace: log-densities are unbiased but the weights "
                   "exp(-U/kT - log q) are biased")


# ====================================================================== sampling
def check_log_density(cfg, options):
    """Validate a ``prepare`` result for log-densities; returns the (possibly changed)
    sampler options.  Raises InputError naming what to change."""
    name = cfg["sampler"]
    if cfg["device"] != "cpu":
        raise InputError("log-densities (--log-weights) are computed on the CPU only (the "
                         "CUDA kernels do not accumulate path weights or ODE densities); "
                         "use --device cpu")
    if name == "ode":
        if cfg["opts"]["method"] != "rk45":
            raise InputError("log-densities of ode samples come from the adaptive RK45 "
                             "integration: add --set method=rk45 (with tight tolerances, "
                             "e.g. --set rtol=1e-7 --set atol=1e-7)")
        if cfg["opts"]["denoise"]:
            raise InputError("ode with denoise=true has no tractable density; use "
                             "denoise=false")
        return options
    if name in ("em", "pc"):
        if options.get("denoise") is True:
            raise InputError(f"sampler {name} with denoise=true ends with a deterministic "
                             "Tweedie step, which has no path weight; use denoise=false "
                             "(the default with log-densities)")
        return dict(options, denoise=False)
    if name == "ancestral":
        if cfg["tm"].name == "ddpm":
            raise InputError("the ddpm chain's ancestral sampler ends with the noise-free "
                             "posterior mean at t = 0, which has no path weight; "
                             "log-densities need a continuous-time model (vp, subvp, ve)")
        return options
    return options


def _log_normal(r, c):
    """log N(r; 0, c^2 I) per row of r [B, D]."""
    D = r.shape[1]
    return -0.5 * np.sum(r * r, axis=1) / (c * c) - D * math.log(c) - 0.5 * D * LOG_2PI


def path_batch(cfg, y, first, rec_stage=None, rec=None):
    """Run the stage plan of em / ancestral / pc on one batch (in place on y [B, D], the
    prior draw) with the Python engine and return ``sum_k [log P - log B]`` per row.
    ``rec[r] = y`` (normalised units) after ``rec_stage[r]`` stages, for the frames after
    stage 0 (the caller stores the prior draw): the frames of ``samplers.sample``."""
    from kernels.reverse_cpu import apply_stage

    from .samplers import PURPOSE_CHAIN, _Eval

    plan, tm, seed = cfg["plan"], cfg["tm"], cfg["seed"]
    ev = _Eval(cfg["model"], cfg["parts"], plan)
    corr = {s for s, _, _ in (plan.pilot or [])}
    u = np.zeros_like(y)
    d = np.zeros_like(y)
    acc = np.zeros(y.shape[0])
    k = 0
    if rec_stage is None:
        rec_stage = np.zeros(0, np.int64)
    r = int(np.searchsorted(rec_stage, 0, side="right"))
    for s in range(plan.S):
        c = plan.coef[s]
        if plan.kinds[s] != 0 or plan.noise[s] < 0 or not c[2] > 0:
            raise InputError(f"sampler {cfg['sampler']}: stage {s} is deterministic, so the "
                             "path has no weight; use denoise=false")
        y_old = y.copy()
        o = np.ascontiguousarray(ev(y, s))
        apply_stage(0, c[0], c[1], c[2], c[3], int(plan.noise[s]), seed, PURPOSE_CHAIN, first,
                    y, u, d, o)
        acc += _log_normal(y - (c[0] * y_old + c[1] * np.asarray(o, np.float64)), c[2])
        if s in corr:            # Langevin corrector at t: B = the same kernel from y
            o2 = np.asarray(ev(y, s), np.float64)
            acc -= _log_normal(y_old - (c[0] * y + c[1] * o2), c[2])
        else:                    # predictor from grid[k] to grid[k + 1]
            t, s_ = plan.grid[k], plan.grid[k + 1]
            mt, vt = (float(q) for q in tm.m_v(t))
            ms, vs = (float(q) for q in tm.m_v(s_))
            a = mt / ms
            cc = math.sqrt(max(vt - a * a * vs, 0.0))
            if not cc > 0:
                raise InputError(f"the forward transition from t = {s_:g} to {t:g} has no "
                                 "noise; the path weight is undefined")
            acc -= _log_normal(y_old - a * y, cc)
            k += 1
        while r < rec_stage.size and rec_stage[r] == s + 1:
            rec[r] = y
            r += 1
    return acc


def ode_batch(cfg, y, trace="auto", frame_times=None, rec=None):
    """Integrate the probability-flow ODE with RK45 from y [B, D] at t_max to t_eps together
    with ``log p`` (in place on y); returns ``(int_{t_eps}^{t_max} div F dt [B], trace,
    evaluations)``.

    SciPy's ``RK45`` is stepped here as ``solve_ivp`` steps it (the same steps and bits).
    ``rec[r]`` (normalised units) gets the state at ``frame_times[r]`` (decreasing, after
    t_max; the caller stores the prior draw at t_max): the solver's own state where a step
    ends there (always at t_eps), else its 4th-order dense output within the step, as
    ``solve_ivp(t_eval=...)`` gives it."""
    from scipy.integrate import RK45

    from .likelihood import _Div
    from .samplers import EXACT_TRACE_MAX_DIM, PURPOSE_PROBE

    model, plan, tm, o = cfg["model"], cfg["plan"], cfg["tm"], cfg["opts"]
    B, D = y.shape
    if trace == "auto":
        trace = "exact" if D <= EXACT_TRACE_MAX_DIM else "hutchinson"
    v = None
    if trace == "hutchinson":
        from kernels import streams

        uu = np.empty((B, D))
        streams.uniforms(cfg["seed"], PURPOSE_PROBE, cfg["first"], 0, uu)
        v = np.where(uu <= 0.5, -1.0, 1.0)
    div = _Div(model, cfg["parts"], tm, trace, v)

    def fun(t, zz):
        dy, dl = div(zz[:B * D].reshape(B, D), t)
        return np.concatenate([dy.ravel(), dl])

    times = np.zeros(0) if frame_times is None else np.asarray(frame_times, np.float64)
    solver = RK45(fun, float(plan.grid[0]), np.concatenate([y.ravel(), np.zeros(B)]),
                  float(plan.grid[-1]), rtol=float(o["rtol"]), atol=float(o["atol"]))
    r = int(np.searchsorted(-times, -float(plan.grid[0]), side="right"))
    while solver.status == "running":
        message = solver.step()
        if solver.status == "failed":
            raise RunError(f"ode rk45 with log-density failed: {message}")
        while r < times.size and times[r] >= solver.t:
            zr = solver.y if times[r] == solver.t else solver.dense_output()(times[r])
            rec[r] = zr[:B * D].reshape(B, D)
            r += 1
    zz = solver.y
    y[:] = zz[:B * D].reshape(B, D)
    return -zz[B * D:], trace, div.nfev


def sample_log_density(cfg, n, first_sample, bs, callback=None, fsteps=None,
                       trajectory=None):
    """Samples [n, *data_shape] (data units) and ``log_proposal [n]`` for a ``prepare``
    result (Gaussian samplers; see the module docstring).  Returns (samples, log_q, info).
    With ``fsteps`` (recorded steps, ``samplers.frame_steps_for``), each batch's frames
    ``[R, b, D]`` (data units) go to ``trajectory(start, frames)``; recording does not
    change the samples or log-densities."""
    from threadpoolctl import threadpool_limits

    from .likelihood import normalised_points
    from .samplers import _prior, _threads

    model, seed, plan = cfg["model"], cfg["seed"], cfg["plan"]
    D = int(model.dim)
    ps = float(model.prior_std)
    _, log_scale = normalised_points(model, np.zeros((1, D)))
    samples = np.empty((n,) + tuple(model.data_shape))
    logq = np.empty(n)
    t0 = time.perf_counter()
    info = {"trace": None, "network_evaluations": 0}
    fsteps = np.zeros(0, np.int64) if fsteps is None else fsteps
    R = fsteps.size
    rec_stage = plan.step_end[fsteps] if R else None
    with threadpool_limits(limits=_threads(model), user_api="blas"):
        for a in range(0, n, bs):
            b = min(n, a + bs)
            y = _prior(model, seed, first_sample + a, b - a)
            rec = np.empty((R, b - a, D))
            rec[fsteps == 0] = y
            lp = -0.5 * np.sum(y * y, axis=1) / ps**2 - 0.5 * D * math.log(2 * math.pi * ps**2)
            if cfg["sampler"] == "ode":
                cfg["first"] = first_sample + a
                ell, info["trace"], ne = ode_batch(cfg, y, frame_times=plan.grid[fsteps],
                                                   rec=rec)
                info["network_evaluations"] += ne
                lq = lp + ell
            else:
                lq = lp + path_batch(cfg, y, first_sample + a, rec_stage, rec)
            if not (np.all(np.isfinite(y)) and np.all(np.isfinite(lq))):
                raise RunError(f"sampler {cfg['sampler']} produced a non-finite sample or "
                               "log-density; the score model or the step count is unusable")
            samples[a:b] = model.to_data(y).reshape((b - a,) + samples.shape[1:])
            logq[a:b] = lq - log_scale
            if R:
                trajectory(a, model.to_data(rec.reshape(R * (b - a), D)).reshape(R, b - a, D))
            if callback is not None:
                el = time.perf_counter() - t0
                callback({"step": b, "steps": n, "samples": b, "n": n, "frames": 0,
                          "elapsed": el, "walker_steps_per_s": b * cfg["steps"] / el
                          if el > 0 else float("nan")})
    info["note"] = ("log_proposal = log-density of the ODE map (data units)"
                    if cfg["sampler"] == "ode" else "log_proposal = log path ratio "
                    "P(path)/B(path | x) (data units)")
    if info["trace"] == "hutchinson":
        info["note"] += "; " + HUTCHINSON_NOTE
    return samples, logq, info


def sample_with_log_density(model, n, sampler=None, steps=None, seed=0, device="cpu",
                            record_every=None, callback=None, first_sample=0, batch=None,
                            engine="auto", weights="ema", t_eps=None, trajectory=None,
                            **options):
    """``samplers.sample(..., log_density=True)`` that may also record the reverse trajectory
    (``record_every``, ``trajectory`` as there): a ``SampleResult`` with ``log_proposal``
    and, when recorded, ``frames [R, n, D]`` (data units), ``frame_steps``, ``frame_times``.

    The samples and log-proposals are bitwise those of the same call without recording: the
    batches are the same (``batch``, default ``samplers.DEFAULT_BATCH``; the frames of one
    batch, R x batch x D numbers, are held in memory).  The frames of em, ancestral and pc
    are those of ``samplers.sample(..., engine="python", denoise=False)``; the binomial
    chain's are its decoded states; ode (RK45) frames are interpolated within a step by the
    solver's dense output, with the exact state at t_max and t_eps."""
    from . import samplers as S

    n = S._validate_int("n", n, 1, 2**32)
    first_sample = S._validate_int("first_sample", first_sample, 0, 2**32 - 1)
    if first_sample + n > 2**32:
        raise InputError("first_sample + n must be at most 2**32 (walker indices are 32-bit)")
    cfg = S.prepare(model, sampler, steps, seed, device, engine, weights, t_eps, **options)
    opts = check_log_density(cfg, options)
    if opts != options:
        cfg = S.prepare(model, sampler, steps, seed, device, engine, weights, t_eps, **opts)
    if record_every is not None:
        record_every = S._validate_int("record_every", record_every, 1)
    bs = min(n, S._validate_int("batch", batch, 1) if batch is not None else S.DEFAULT_BATCH)
    model, plan, steps = cfg["model"], cfg["plan"], cfg["steps"]
    fsteps = S.frame_steps_for(steps, record_every)
    R, D = fsteps.size, int(model.dim)
    if R and trajectory is None and 8 * R * n * D > 4 * S.FRAME_BYTES:
        raise InputError(f"recording {R} frames of {n} samples x {D} numbers needs "
                         f"{8 * R * n * D / 2**30:.1f} GiB in memory; record fewer frames "
                         "(a larger --record-every) or write them to a file")
    t0 = time.perf_counter()
    frames = (np.empty((R, n, D), np.int8 if cfg["sampler"] == "binomial" else np.float64)
              if R and trajectory is None else None)

    def keep(a, fr):
        frames[:, a:a + fr.shape[1]] = fr

    sink = trajectory if trajectory is not None else keep
    if cfg["sampler"] == "binomial":
        res = S._sample_binomial(cfg, n, first_sample, bs, fsteps, callback, sink, t0, True)
        res.frames = frames
        return res
    if plan.pilot:
        S._pilot(model, cfg["parts"], plan, cfg["tm"], cfg["seed"], int(cfg["opts"]["pilot"]),
                 float(cfg["opts"]["snr"]))
    xs, lq, extra = sample_log_density(cfg, n, first_sample, bs, callback, fsteps, sink)
    info = dict(sampler=cfg["sampler"], steps=steps, seed=cfg["seed"], options=cfg["opts"],
                engine="python" if cfg["sampler"] != "ode" else "rk45", device="cpu",
                first_sample=first_sample, t_eps=float(plan.grid[-1]),
                t_max=float(plan.grid[0]), weights=cfg["weights"],
                seconds=time.perf_counter() - t0, **extra)
    return S.SampleResult(xs, frames, fsteps if R else None,
                          plan.grid[fsteps] if R else None, info, lq)


def binomial_log_ratio(process, x_old, x_new, p, t):
    """``log P(x_new | x_old) - log q(x_old | x_new)`` per row for one reverse bit-flip step
    from t to t - 1 (bits in {0, 1}; ``p = P(x_new = 1 | x_old)``)."""
    with np.errstate(divide="ignore"):
        lp = np.where(x_new == 1, np.log(p), np.log1p(-p))
        q1 = process.step_prob_one(x_new, t)                  # q(x_t = 1 | x_{t-1} = x_new)
        lb = np.where(x_old == 1, np.log(q1), np.log1p(-q1))
    return np.sum(lp, axis=1) - np.sum(lb, axis=1)


# ====================================================================== estimators
def _bootstrap_indices(n, b0, b1, seed):
    """Resample indices [b1 - b0, n]: resample b draws index i from the uniform of counter
    (walker b, step 0, block i // 2), word pair i % 2 (Philox purpose 55)."""
    from kernels import streams

    u = np.empty((b1 - b0, n))
    streams.uniforms(seed, PURPOSE_BOOTSTRAP, b0, 0, u)
    return np.minimum((u * n).astype(np.int64), n - 1)


def _stats(logw, obs):
    lmax = float(np.max(logw))
    w = np.exp(logw - lmax)
    sw = float(np.sum(w))
    log_mean = lmax + math.log(sw / logw.size)
    ess = sw * sw / float(np.sum(w * w))
    return log_mean, ess, {k: float(np.sum(w * o) / sw) for k, o in obs.items()}


def reweight(log_proposal, energy, kT=1.0, observables=None, n_boot=400, seed=0):
    """Importance-weight samples to ``exp(-U/kT)``.

    ``log_proposal [N]`` (nats), ``energy [N]`` (U, units of kT), ``observables``: name ->
    values [N].  Returns a dict: ``log_z`` (log of the mean weight, an estimate of
    ``log int exp(-U/kT) dx``), ``free_energy`` (``-kT log_z``), ``ess``, ``ess_fraction``,
    ``low_ess`` (bool), and ``<name>`` for each observable, each a ``(value, se)`` pair with
    bootstrap SEs (``n_boot`` resamples, Philox purpose 55 with ``seed``)."""
    lq = np.asarray(log_proposal, np.float64).ravel()
    U = np.asarray(energy, np.float64).ravel()
    if lq.size != U.size or lq.size < 2:
        raise InputError(f"reweighting needs at least 2 samples and one log-density per "
                         f"sample; got {lq.size} log-densities for {U.size} samples")
    if not (np.all(np.isfinite(lq)) and np.all(np.isfinite(U))):
        raise InputError("reweighting needs finite log-densities and energies")
    obs = {k: np.asarray(v, np.float64).ravel() for k, v in (observables or {}).items()}
    logw = -U / kT - lq
    log_mean, ess, means = _stats(logw, obs)
    N = lq.size
    boot_lz, boot_obs = [], {k: [] for k in obs}
    chunk = max(1, min(int(n_boot), 4_000_000 // N))
    for b0 in range(0, int(n_boot), chunk):
        idxs = _bootstrap_indices(N, b0, min(int(n_boot), b0 + chunk), seed)
        for idx in idxs:
            lz, _, mo = _stats(logw[idx], {k: o[idx] for k, o in obs.items()})
            boot_lz.append(lz)
            for k in obs:
                boot_obs[k].append(mo[k])
    se_lz = float(np.std(boot_lz, ddof=1)) if n_boot > 1 else float("nan")
    out = {"n": N, "log_z": (log_mean, se_lz), "free_energy": (-kT * log_mean, kT * se_lz),
           "ess": (ess, None), "ess_fraction": (ess / N, None),
           "low_ess": ess / N < LOW_ESS_FRACTION,
           "log_weight_max_minus_mean": (float(np.max(logw) - np.mean(logw)), None)}
    for k in obs:
        out[k] = (means[k], float(np.std(boot_obs[k], ddof=1)) if n_boot > 1 else None)
    return out


# ====================================================================== against exact laws
def _law_energy(name, p, x):
    """(U [N] in units of kT, kT, exact log Z, exact observables {name: value},
    observables {name: values [N]}) of samples x under the exact law ``name``."""
    from . import analytic as A
    from . import compare as C

    xa = np.asarray(x)
    if name == "ising":
        s = np.asarray(xa, np.float64)
        if s.ndim != 3 or s.shape[1] != s.shape[2] or not np.all(np.abs(s) == 1):
            raise InputError(f"reweighting to ising needs spins +-1 of shape [N, L, L], got "
                             f"shape {xa.shape}")
        if p["T"] is None:
            raise InputError("reweighting to ising needs the temperature: --set T=VALUE")
        L = s.shape[1]
        ex = A.ising_kaufman(L, p["T"])
        e, m = C._ising_series(s)
        obs = {"energy_per_spin": e, "abs_magnetization_per_spin": np.abs(m)}
        return L * L * e, float(p["T"]), float(ex.log_z), {"energy_per_spin": ex.energy}, obs
    shape = xa.shape[1:]
    shape = () if shape == (1,) else shape
    X = C._rows(xa)
    law = C._build_law(name, p, shape)
    kT = float(law.kT)
    if law.energy is None:                     # a mixture: U = -kT log p, Z = 1
        U = -kT * law.log_prob(X)
        log_z = 0.0
    else:
        U = law.energy(X)
        log_z = float(-(law.log_prob(X[:1])[0] + U[0] / kT))
    obs = {"mean_energy": U}
    exact = {"mean_energy": law.mean_energy} if law.mean_energy is not None else {}
    for i in range(min(X.shape[1], 4)):
        obs[f"mean_x{i}"] = X[:, i]
        exact[f"mean_x{i}"] = law.marginals[i].mean
    if law.populations is not None:
        lab = law.labels(X)
        for j in range(len(law.populations)):
            obs[f"pop_basin_{j}"] = (lab == j).astype(np.float64)
            exact[f"pop_basin_{j}"] = float(law.populations[j])
    return U, kT, log_z, exact, obs


def reweight_to_analytic(x, log_proposal, name, params=None, *, seed=0, n_boot=400):
    """Reweight samples ``x [N, ...]`` with their ``log_proposal [N]`` to the exact law
    ``name`` (parameters as for ``nonequil.compare``) and compare with its exact values.

    Returns a flat dict ``key -> {"value", "se"}`` (the ``compare --json`` convention):
    ``reweight_log_z`` and ``_exact`` (log Z in data units), ``reweight_free_energy`` and
    ``_exact`` (``-kT log Z``, units of kT), ``reweight_free_energy_diff`` (estimate minus
    exact, with the estimate's SE), ``reweight_ess``, ``reweight_ess_fraction``,
    ``reweight_low_ess`` (1 when ESS/N < 1 %), and ``reweight_<obs>`` / ``_exact`` for the
    self-normalised observables: ``mean_energy``, ``mean_x{i}`` (first 4 coordinates),
    ``pop_basin_{j}`` (double-well, Müller-Brown); Ising: ``energy_per_spin`` (exact:
    Kaufman) and ``abs_magnetization_per_spin``.  SEs: bootstrap (module docstring)."""
    from . import compare as C

    p = C._resolve(name, params)
    x = np.asarray(x)
    lq = np.asarray(log_proposal, np.float64).ravel()
    if x.ndim == 0 or len(x) != lq.size:
        raise InputError(f"reweighting needs one log-density per sample: {lq.size} "
                         f"log-densities for samples of shape {x.shape}")
    U, kT, log_z, exact, obs = _law_energy(name, p, x)
    r = reweight(lq, U, kT, obs, n_boot=n_boot, seed=seed)
    out = {}
    put = C._put
    put(out, "reweight_n_samples", r["n"])
    put(out, "reweight_log_z", *r["log_z"])
    put(out, "reweight_log_z_exact", log_z)
    put(out, "reweight_free_energy", *r["free_energy"])
    put(out, "reweight_free_energy_exact", -kT * log_z)
    put(out, "reweight_free_energy_diff", r["free_energy"][0] + kT * log_z, r["free_energy"][1])
    put(out, "reweight_ess", r["ess"][0])
    put(out, "reweight_ess_fraction", r["ess_fraction"][0])
    put(out, "reweight_low_ess", float(r["low_ess"]))
    for k in obs:
        put(out, f"reweight_{k}", *r[k])
        if k in exact:
            put(out, f"reweight_{k}_exact", exact[k])
    return out


# ====================================================================== laws named by files
def law_of_data_file(path, dataset="/samples"):
    """``(name, params)`` of the exact law a dataset file names (``nonequil dataset`` writes
    ``generator`` and ``parameters`` on ``/samples``), or None when it names none that
    ``nonequil.compare`` knows (or the file is not readable)."""
    import json

    import h5py

    from .compare import ANALYTIC_LAWS

    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f[dataset].attrs)
    except (OSError, KeyError, TypeError):
        return None

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    gen = text(attrs.get("generator", ""))
    if gen not in ANALYTIC_LAWS or "parameters" not in attrs:
        return None
    try:
        params = json.loads(text(attrs["parameters"]))
    except ValueError:
        return None
    if params.get("covs") is not None:          # compare's mixture law is isotropic only
        return None
    return gen, {k: v for k, v in params.items() if k in ANALYTIC_LAWS[gen] and v is not None}


def law_of_model_file(path):
    """The exact law of the data a model was trained on: the data file named in the model
    file's ``/provenance`` (``configuration["data"] = "PATH:DATASET"``), if it still exists
    and names its generator; else None."""
    import json

    import h5py

    try:
        with h5py.File(path, "r") as f:
            conf = json.loads(f["provenance"].attrs["configuration"])
    except (OSError, KeyError, ValueError, TypeError):
        return None
    src = str(conf.get("data", ""))
    data, sep, ds = src.rpartition(":")
    return law_of_data_file(data, ds) if sep and data else None


def log_weights(x, log_proposal, name, params):
    """``log w = -U(x)/kT - log_proposal`` [N] under the exact law (name, params)."""
    from . import compare as C

    U, kT, _, _, _ = _law_energy(name, C._resolve(name, params), np.asarray(x))
    return -U / kT - np.asarray(log_proposal, np.float64)
