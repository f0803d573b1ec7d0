r"""Training of ``nonequil.gan.GANModel``: alternating discriminator and generator updates.

``train_gan(data, config=None, *, out=None, resume=False, callback=None, ...)`` fits a GAN to
a sample set (an HDF5 path holding ``/samples[N, ...]``, or an array) and returns the model;
with ``out`` it writes the model file through ``OUT.partial`` and a checkpoint beside it
(DESIGN.md "Files written by a verb"), exactly like ``nonequil.train.train``.
``train_discriminator(data, model, ...)`` trains the discriminator alone against the model's
fixed generator (the optimal-discriminator check of ``nonequil.gan_theory``).

Objective (Goodfellow et al. 2014), in logits a = D's output, D = sigmoid(a)
--------------------------------------------------------------------------------
The value ``L(G, D) = E_r[log D(x)] + E_g[log(1 - D(G(h)))]
= -E_r[softplus(-a)] - E_g[softplus(a)]``.

* Discriminator (ascends L): minimises the binary cross-entropy
  ``E_r[t softplus(-a) + (1 - t) softplus(a)] + E_g[softplus(a)]`` with the real label
  ``t = 1 - label_smoothing`` (one-sided smoothing, Salimans et al. 2016; 0 by default, when
  the loss is -L).  d loss / d a = sigmoid(a) - t (real), sigmoid(a) (generated), per row / B.
* Generator: ``loss = "nonsaturating"`` (default) minimises ``-E_g[log D(G(h))]
  = E_g[softplus(-a)]``; ``"minimax"`` minimises ``E_g[log(1 - D(G(h)))] = -E_g[softplus(a)]``.
  The gradient reaches G through the discriminator's input gradient (``mlp_backward``'s dX)
  and, for binary data, through the tanh relaxation.
* ``k`` discriminator updates precede each generator update; ``steps`` counts generator
  updates.  Update counter: generator step s (0-based) makes updates u = s (k+1) + j,
  j = 0..k-1 for the discriminator (its r-th update, r = s k + j, reads the real rows
  ``r B .. r B + B - 1`` of the Philox data order) and j = k for the generator.
* Instance noise (Sonderby et al. 2016; Arjovsky & Bottou 2017): N(0, sigma_s^2) is added to
  every discriminator input (real and generated, in normalised units) with
  ``sigma_s = instance_noise * max(0, 1 - s / (instance_noise_end * steps))`` (linear
  annealing to 0; off by default).
* Adam (Kingma & Ba 2015) with the GAN betas (0.5, 0.999) (Radford et al. 2016), one
  optimiser per network, learning rates ``lr_g`` and ``lr_d`` constant until generator step
  ``decay_start * steps`` and then decayed linearly to ``lr_final`` times their value at the
  last step (both networks by the generator step s; this settles the end-of-training
  oscillation of the two players); optional global
  gradient-norm clipping ``clip`` (inf, i.e. none, by default); an EMA of the generator
  weights with decay ``min(ema, (1 + s) / (10 + s))``, used for sampling.

Diagnostics per generator step (``model.logs``, and the callback)
-----------------------------------------------------------------
From the last discriminator update of step s (its forward pass, before the update):
``d_real`` and ``d_fake``, the mean of D on the real and generated batch; ``value`` the
mini-batch estimate of L(G, D); ``js = (value + log 4) / 2``, the Jensen-Shannon estimate
(exact when D is optimal, Goodfellow et al. 2014 Theorem 1); ``d_loss``; and ``g_loss``, the
generator loss of step s.  With ``label_smoothing`` and instance noise these describe the
smoothed, noisy problem that is actually trained.

Determinism and files are those of ``nonequil.train`` (same Philox data order, same
checkpoint format and lifecycle, one BLAS thread by default): a run is a pure function of
(data, config, seed) on a machine, and ``resume`` continues a killed run bit for bit.  A
non-finite loss, gradient or weight stops the run with a ``RunError`` naming the step and the
kept checkpoint (the last good state).
"""
import dataclasses
import math
import os
import time

import numpy as np

from .errors import InputError, RunError
from .gan import LOG_KEYS, PURPOSE_GAN, GANConfig, GANModel, binary_encoding
from .train import _fingerprint, _load_data, _NonFinite, _Trainer, run_file

FORMAT = 1
LOG4 = math.log(4.0)


def _softplus(z):
    with np.errstate(invalid="ignore"):          # NaN logits are caught by the caller
        return np.logaddexp(0.0, z)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class _GANTrainer:
    """Training state and the update steps (one instance per run)."""

    # the Philox data order and sample-keyed fills of score training (nonequil.train), on
    # this object's seed, P0 (= PURPOSE_GAN, so the order is purpose 65), N and caches
    _fill = _Trainer._fill
    _perm = _Trainer._perm
    _rows = _Trainer._rows

    def __init__(self, cfg, data, batch, threads, model=None, train_g=True):
        from kernels import mlp_cpu, streams

        from .models import MLPScoreModel

        self.cfg = cfg
        self.B = int(batch)
        self.threads = int(threads)
        self.N = data.shape[0]
        self.data_shape = data.shape[1:]
        self.seed = np.uint64(cfg.seed)
        self.P0 = PURPOSE_GAN
        self.streams = streams
        self.train_g = train_g
        x = np.asarray(data, np.float64).reshape(self.N, -1)
        enc = binary_encoding(x) if cfg.binary == "auto" else None
        if model is None:
            if enc is not None:
                mean, std, wh, uw = np.zeros(x.shape[1]), np.ones(x.shape[1]), None, None
            else:
                mean, std, wh, uw = MLPScoreModel.fit_normalisation(x, cfg.normalize)
            gs, ds = GANModel.layer_sizes(cfg, x.shape[1])
            zg = np.empty((1, mlp_cpu.n_params(mlp_cpu.mlp_layout(gs))))
            zd = np.empty((1, mlp_cpu.n_params(mlp_cpu.mlp_layout(ds))))
            streams.normals(self.seed, np.uint64(self.P0), 0, 0, zg)
            streams.normals(self.seed, np.uint64(self.P0), 1, 0, zd)
            model = GANModel.create(cfg, self.data_shape, mean, std, zg[0], zd[0],
                                    data_encoding=enc, whiten=wh, unwhiten=uw)
        self.model = model
        self.Y0 = np.ascontiguousarray(model.normalise(x))
        self.D = self.Y0.shape[1]
        model.logs = {k: np.zeros(cfg.steps) for k in LOG_KEYS}
        self._perms = {}
        self._perm_keys = None
        m, B, D = model, self.B, self.D
        self.Z = np.empty((B, cfg.latent_dim))
        self.g_cache = np.empty(mlp_cpu.cache_size(m.g_offsets, B))
        self.g_out = np.empty((B, D))
        self.g_grad = np.empty_like(m.g_theta)
        self.g_dX = np.empty((B, cfg.latent_dim))
        self.X2 = np.empty((2 * B, D))
        self.d_cache2 = np.empty(mlp_cpu.cache_size(m.d_offsets, 2 * B))
        self.d_cache1 = np.empty(mlp_cpu.cache_size(m.d_offsets, B))
        self.a2 = np.empty((2 * B, 1))
        self.a1 = np.empty((B, 1))
        self.dA2 = np.empty((2 * B, 1))
        self.dA1 = np.empty((B, 1))
        self.d_grad = np.empty_like(m.d_theta)
        self.dX2 = np.empty((2 * B, D))
        self.dX1 = np.empty((B, D))
        self.Xg = np.empty((B, D))
        self._blocks = {}

    # ------------------------------------------------------------- random inputs
    def _draw(self, purpose, g0, n, cols):
        """Rows g0 .. g0+n-1 [n, cols] of a sample-keyed Philox stream (normals for purposes
        2, 4, 5; uniforms for 3), drawn ahead in blocks of ~2^16 numbers: one multithreaded
        fill per block rather than per update (values do not depend on the blocking)."""
        blk = self._blocks.get(purpose)
        if blk is None or not (blk[0] <= g0 and g0 + n <= blk[0] + blk[1].shape[0]):
            rows = max(n, (1 << 16) // cols)
            arr = np.empty((rows, cols))
            fn = self.streams.uniforms if purpose == 3 else self.streams.normals
            self._fill(fn, purpose, g0, arr, cols)
            blk = self._blocks[purpose] = (g0, arr)
        return blk[1][g0 - blk[0]:g0 - blk[0] + n]

    def _latent(self, u):
        """Latent points of update u into self.Z (rows are samples u B + i)."""
        c = self.cfg
        if c.latent == "normal":
            self.Z[...] = self._draw(2, u * self.B, self.B, c.latent_dim)
        else:
            self.Z[...] = self._draw(3, u * self.B, self.B, c.latent_dim)
            self.Z *= 2.0
            self.Z -= 1.0
        return self.Z

    def lr_factor(self, s):
        """lr multiplier at generator step s: 1 until decay_start * steps, then linear to
        lr_final at the last step."""
        c = self.cfg
        s0 = c.decay_start * c.steps
        if s <= s0 or c.lr_final == 1.0:
            return 1.0
        return 1.0 - (1.0 - c.lr_final) * (s - s0) / max(c.steps - 1 - s0, 1e-300)

    def noise_std(self, s):
        c = self.cfg
        if c.instance_noise == 0.0:
            return 0.0
        return c.instance_noise * max(0.0, 1.0 - s / (c.instance_noise_end * c.steps))

    def _add_noise(self, X, purpose, g0, sigma):
        if sigma > 0.0:
            X += sigma * self._draw(purpose, g0, self.B, self.D)

    def _generate(self, u, cache):
        """G(h) of update u (relaxed for binary data) into self.g_out; keeps the cache."""
        from kernels import mlp_cpu

        m = self.model
        self._latent(u)
        if cache:
            mlp_cpu.mlp_forward_cache_into(m.g_theta, m.g_offsets, m.act, self.Z,
                                           self.g_cache, self.g_out)
        else:
            mlp_cpu.mlp_forward_into(m.g_theta, m.g_offsets, m.act, self.Z, self.g_out)
        if m.binary:
            np.tanh(self.g_out, out=self.g_out)
        return self.g_out

    # ------------------------------------------------------------- updates
    def d_update(self, s, j):
        """Discriminator update j of generator step s; returns the diagnostics dict."""
        from kernels import mlp_cpu

        c, m, B = self.cfg, self.model, self.B
        r = s * c.k + j
        u = s * (c.k + 1) + j
        X = self.X2
        X[:B] = self.Y0[self._rows(r * B, B)]
        X[B:] = self._generate(u, cache=False)
        sigma = self.noise_std(s)
        self._add_noise(X[:B], 4, r * B, sigma)
        self._add_noise(X[B:], 5, u * B, sigma)
        mlp_cpu.mlp_forward_cache_into(m.d_theta, m.d_offsets, m.act, X, self.d_cache2, self.a2)
        ar, af = self.a2[:B, 0], self.a2[B:, 0]
        t = 1.0 - c.label_smoothing
        sp_r_neg, sp_r, sp_f = _softplus(-ar), _softplus(ar), _softplus(af)
        loss = float(np.mean(t * sp_r_neg + (1.0 - t) * sp_r) + np.mean(sp_f))
        if not math.isfinite(loss):
            raise _NonFinite(s + 1, "discriminator loss", loss)
        self.dA2[:B, 0] = (_sigmoid(ar) - t) / B
        self.dA2[B:, 0] = _sigmoid(af) / B
        mlp_cpu.mlp_backward_into(m.d_theta, m.d_offsets, m.act, self.d_cache2, self.dA2,
                                  self.d_grad, self.dX2)
        norm = mlp_cpu.clip_grad_norm(self.d_grad, float(c.clip))
        if not math.isfinite(norm):
            raise _NonFinite(s + 1, "discriminator gradient norm", norm)
        mlp_cpu.adam_step(m.d_theta, self.d_grad, m.d_m, m.d_v, r + 1,
                          c.lr_d * self.lr_factor(s), c.beta1, c.beta2, c.adam_eps, 0.0)
        value = -float(np.mean(sp_r_neg) + np.mean(sp_f))
        return {"d_real": float(np.mean(_sigmoid(ar))), "d_fake": float(np.mean(_sigmoid(af))),
                "value": value, "js": 0.5 * (value + LOG4), "d_loss": loss}

    def g_update(self, s):
        """Generator update of step s; returns its loss."""
        from kernels import mlp_cpu

        c, m, B = self.cfg, self.model, self.B
        u = s * (c.k + 1) + c.k
        y = self._generate(u, cache=True)
        X = self.Xg
        X[...] = y
        self._add_noise(X, 5, u * B, self.noise_std(s))
        mlp_cpu.mlp_forward_cache_into(m.d_theta, m.d_offsets, m.act, X, self.d_cache1, self.a1)
        af = self.a1[:, 0]
        if c.loss == "nonsaturating":
            loss = float(np.mean(_softplus(-af)))
            self.dA1[:, 0] = (_sigmoid(af) - 1.0) / B
        else:
            loss = -float(np.mean(_softplus(af)))
            self.dA1[:, 0] = -_sigmoid(af) / B
        if not math.isfinite(loss):
            raise _NonFinite(s + 1, "generator loss", loss)
        mlp_cpu.mlp_backward_into(m.d_theta, m.d_offsets, m.act, self.d_cache1, self.dA1,
                                  self.d_grad, self.dX1)
        dO = self.dX1
        if m.binary:
            dO *= 1.0 - y * y
        mlp_cpu.mlp_backward_into(m.g_theta, m.g_offsets, m.act, self.g_cache, dO,
                                  self.g_grad, self.g_dX)
        norm = mlp_cpu.clip_grad_norm(self.g_grad, float(c.clip))
        if not math.isfinite(norm):
            raise _NonFinite(s + 1, "generator gradient norm", norm)
        mlp_cpu.adam_step(m.g_theta, self.g_grad, m.g_m, m.g_v, s + 1,
                          c.lr_g * self.lr_factor(s), c.beta1, c.beta2, c.adam_eps, 0.0)
        mlp_cpu.ema_update(m.g_ema, m.g_theta, min(c.ema, (1.0 + s) / (10.0 + s)))
        return loss

    def step(self, s):
        """Generator step s (0-based): k discriminator updates, then the generator's."""
        for j in range(self.cfg.k):
            info = self.d_update(s, j)
        info["g_loss"] = self.g_update(s) if self.train_g else float("nan")
        m = self.model
        if not (np.isfinite(m.d_theta).all() and np.isfinite(m.g_theta).all()):
            raise _NonFinite(s + 1, "weights", "inf or nan")
        for k in LOG_KEYS:
            m.logs[k][s] = info[k]
        m.step = s + 1
        return info


# ----------------------------------------------------------------------------- drivers
def _config(config, overrides):
    if config is None:
        config = GANConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    config.validate()
    return config


def train_gan(data, config=None, *, out=None, resume=False, callback=None, warn=None,
              note=None, dataset="/samples", checkpoint_seconds=10.0, checkpoint_steps=None,
              threads=None, **overrides):
    """Train a GAN on ``data`` (HDF5 path or array [N, ...]); see the module docstring.

    ``config`` is a ``GANConfig`` (or give its fields as keyword arguments).  ``out``: model
    file (OUT.partial + checkpoint, renamed on success; an existing file is refused unless
    ``resume``).  ``callback(info)`` gets ``{"step", "steps", "d_real", "d_fake", "value",
    "js", "d_loss", "g_loss", "elapsed", "steps_per_s", "eta"}`` after every generator step.
    ``warn`` / ``note`` receive warnings and notes; ``checkpoint_steps`` adds a checkpoint
    every that many steps (tests); ``threads``: BLAS threads (default 1).  Returns the model.
    """
    from .models import DEFAULT_BLAS_THREADS
    from .store import check_out_path

    warn = warn or (lambda msg: None)
    note = note or warn
    config = _config(config, overrides)
    threads = DEFAULT_BLAS_THREADS if threads is None else int(threads)
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if out is not None:
        out = os.fspath(out)
        if resume and os.path.exists(out):
            raise InputError(f"--out {out} is already complete; nothing to resume")
        check_out_path(out, resume)
    arr, batch, source = _load_data(data, dataset, config.batch, note)
    if batch * config.steps * (config.k + 1) >= 2**52:
        raise InputError(f"steps x (k + 1) x batch = {batch * config.steps * (config.k + 1)} "
                         "exceeds the Philox sample counter (2**52); use fewer steps")
    tr = _GANTrainer(config, arr, batch, threads)
    return _run(tr, config, out, resume, callback, warn, _fingerprint(tr.Y0), source,
                checkpoint_seconds, checkpoint_steps)


def train_discriminator(data, model, config=None, *, callback=None, dataset="/samples",
                        threads=None, **overrides):
    """Train ``model``'s discriminator alone against its fixed generator (in place).

    The discriminator restarts from the Philox initial weights of ``config.seed`` with fresh
    Adam moments; the generator is not touched.  ``data`` are real samples in data units.
    Returns the model (its ``logs`` hold the diagnostics of every step).
    """
    from kernels import mlp_cpu

    from .models import DEFAULT_BLAS_THREADS

    config = _config(config if config is not None else model.config, overrides)
    arr, batch, _ = _load_data(data, dataset, config.batch, lambda m: None)
    z = np.empty((1, mlp_cpu.n_params(model.d_offsets)))
    model.d_theta[...] = mlp_cpu.init_params(model.d_sizes, _first_row(
        z, config.seed), act=config.activation)
    model.d_m[...] = 0.0
    model.d_v[...] = 0.0
    tr = _GANTrainer(config, arr, batch, DEFAULT_BLAS_THREADS if threads is None else threads,
                     model=model, train_g=False)
    return _run(tr, config, None, False, callback, None, None, None, 0.0, None)


def _first_row(z, seed):
    from kernels import streams

    streams.normals(np.uint64(seed), np.uint64(PURPOSE_GAN), 1, 0, z)
    return z[0]


def _loop(tr, start, callback, on_step):
    S = tr.cfg.steps
    t0 = time.perf_counter()
    for s in range(start, S):
        info = tr.step(s)
        if on_step is not None:
            on_step(s + 1)
        if callback is not None:
            el = time.perf_counter() - t0
            rate = (s + 1 - start) / el if el > 0 else float("nan")
            callback(dict(info, step=s + 1, steps=S, elapsed=el, steps_per_s=rate,
                          eta=(S - s - 1) / rate if rate > 0 else float("nan")))


def _blowup(e, cfg, where=""):
    return RunError(f"GAN training: {e.what} became non-finite ({e.value}) at generator step "
                    f"{e.step} of {cfg.steps}; reduce lr_d / lr_g (now {cfg.lr_d:g} / "
                    f"{cfg.lr_g:g}) or set clip{where}")


def _run(tr, cfg, out, resume, callback, warn, fp, source, checkpoint_seconds,
         checkpoint_steps):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=tr.threads, user_api="blas"):
        if out is None:
            try:
                _loop(tr, 0, callback, None)
            except _NonFinite as e:
                raise _blowup(e, cfg) from None
            return tr.model
        return _run_file(tr, cfg, out, resume, callback, warn, fp, source,
                         checkpoint_seconds, checkpoint_steps)


_STATE = ("g_theta", "g_ema", "g_m", "g_v", "d_theta", "d_m", "d_v")


def _run_file(tr, cfg, out, resume, callback, warn, fp, source, checkpoint_seconds,
              checkpoint_steps):
    """``nonequil.train.run_file`` (the training-file lifecycle) for the GAN's state."""
    m = tr.model

    def arrays(k):
        a = {name: getattr(m, name) for name in _STATE}
        a.update({"log_" + n: m.logs[n][:k] for n in LOG_KEYS})
        return a

    def restore(arrs, start):
        for name in _STATE:
            getattr(m, name)[...] = arrs[name]
        for k in LOG_KEYS:
            m.logs[k][:start] = arrs["log_" + k][:start]

    return run_file(tr, cfg, out, resume, warn, fp, source, checkpoint_seconds,
                    checkpoint_steps, precision="float64", kind="gan", arrays=arrays,
                    restore=restore, loop=lambda start, on_step: _loop(tr, start, callback,
                                                                       on_step),
                    blowup=lambda e, kept: _blowup(e, cfg, kept))
