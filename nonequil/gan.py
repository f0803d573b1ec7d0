r"""GAN baseline (Goodfellow et al. 2014): configuration, the two networks, storage, sampling.

Training lives in ``nonequil.gan_train`` and the numerical checks of the theory in
``nonequil.gan_theory``; both run on the CPU MLP engine ``kernels.mlp_cpu``.

Networks
--------
* Generator ``G(h)``: an MLP ``[latent_dim] + [g_width] * g_depth + [D]`` (activation
  ``activation``; ``g_depth = 0`` gives an affine map) on latent noise h of ``latent_dim``
  numbers, ``h ~ N(0, I)`` (``latent = "normal"``, default) or ``h ~ U(-1, 1]^latent_dim``
  (``latent = "uniform"``).  Its output is a sample in *normalised units* y (below).
* Discriminator ``D(x) = sigmoid(a(x))``: an MLP ``[D] + [d_width] * d_depth + [1]`` giving
  the logit a.  Every loss is written in logits with ``softplus(z) = log(1 + e^z)``
  (``log D = -softplus(-a)``, ``log(1 - D) = -softplus(a)``), so nothing overflows or takes
  log 0 however confident D becomes.

Units and data
--------------
Continuous data are normalised as for score models (``normalize``: ``diag`` (default)
``y = (x - mu) / s`` per dimension, ``pca`` whitening, or ``none``; the statistics are
``nonequil.models.MLPScoreModel.fit_normalisation``'s) and the normalisation is stored with
the model; samples are returned in data units ``x = mu + s y`` (or ``mu + W^{-1} y``).

Binary data (every value in {0, 1}, or every value in {-1, +1}, e.g. Ising spins) are
relaxed (``binary = "auto"``, default; ``"off"`` treats them as continuous): the data are
mapped to spins s in {-1, +1}, the generator's output passes through ``tanh`` so that
training sees a continuous relaxation in (-1, 1), and sampling returns ``sign(tanh(o))``
(+1 at o = 0), decoded back to the data's encoding (int8).  The choice is recorded in the
file (``relaxation``, ``data_encoding``).

Defaults (the product contract, DESIGN.md) are ``GANConfig``'s; see ``DEFAULTS_RATIONALE``.

Randomness (Philox, ``kernels.streams``; purposes ``PURPOSE_GAN + i``, 64..79)
-----------------------------------------------------------------------------
i = 0 initial weights (walker 0: generator, 1: discriminator); 1 the data order (the scheme
of ``nonequil.train``: epoch permutations from sorted uniforms); 2 / 3 latent normals /
uniforms of training update u (row i of the batch is sample ``g = u B + i``: walker
``g mod 2^32``); 4 / 5 instance noise on real / generated inputs; 6 / 7 latent normals /
uniforms of sampling (walker = the absolute sample index, so sample i depends only on the
model, the seed and i).

File layout
-----------
::

    /model                 attrs kind = "gan", format, config (JSON), step, data_shape, dim,
                           latent, latent_dim, relaxation, data_encoding, layer sizes
    /model/generator/{weights, ema, adam_m, adam_v, offsets}
    /model/discriminator/{weights, adam_m, adam_v, offsets}
    /model/norm_mean, norm_std [D]; norm_whiten, norm_unwhiten [D, D] (pca only)
    /model/log/{d_real, d_fake, value, js, d_loss, g_loss} [step]   one row per generator
                           step (see nonequil.gan_train)
    /parameters            attrs: the configuration, readable by ``nonequil inspect``
    /provenance
"""
import dataclasses
import json
import math
import os

import numpy as np

from .errors import InputError

KIND = "gan"
FORMAT = 1
PURPOSE_GAN = 64          # = kernels.philox.PURPOSE_GAN (64..79); kept here: gan.py stays light
LATENTS = ("normal", "uniform")
LOSSES = ("nonsaturating", "minimax")
BINARY = ("auto", "off")
NORMALIZE = ("diag", "pca", "none")
LOG_KEYS = ("d_real", "d_fake", "value", "js", "d_loss", "g_loss")
RELAXATION = ("tanh output during training (a continuous relaxation in (-1, 1) of spins "
              "-1/+1); sign at sampling (+1 at 0), decoded to the data's encoding")


@dataclasses.dataclass
class GANConfig:
    """Every setting of a GAN run; the defaults are the product contract (see
    ``DEFAULTS_RATIONALE``).  ``steps`` counts generator updates; each is preceded by
    ``k`` discriminator updates."""
    latent: str = "normal"
    latent_dim: int = 4
    g_width: int = 64
    g_depth: int = 2
    d_width: int = 64
    d_depth: int = 2
    activation: str = "silu"
    normalize: str = "diag"
    binary: str = "auto"
    loss: str = "nonsaturating"
    k: int = 1
    steps: int = 4000
    batch: int = 256
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    lr_final: float = 0.1
    decay_start: float = 0.5
    beta1: float = 0.5
    beta2: float = 0.999
    adam_eps: float = 1e-8
    clip: float = math.inf
    ema: float = 0.999
    label_smoothing: float = 0.0
    instance_noise: float = 0.0
    instance_noise_end: float = 0.5
    seed: int = 0

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["clip"] = str(self.clip) if not math.isfinite(self.clip) else self.clip
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("clip"), str):
            kw["clip"] = float(kw["clip"])
        return cls(**kw)

    def identity(self):
        return json.loads(json.dumps(self.to_dict(), sort_keys=True))

    def validate(self):
        from kernels.mlp_cpu import activation_code

        from .train import MAX_STEPS, MAX_U32, _int_in, _num_in

        _choice("latent", self.latent, LATENTS)
        _choice("loss", self.loss, LOSSES)
        _choice("binary", self.binary, BINARY)
        _choice("normalize", self.normalize, NORMALIZE)
        _int_in("latent_dim", self.latent_dim, 1, 4096)
        _int_in("g_width", self.g_width, 1, 1 << 14)
        _int_in("d_width", self.d_width, 1, 1 << 14)
        _int_in("g_depth", self.g_depth, 0, 64)
        _int_in("d_depth", self.d_depth, 0, 64)
        _int_in("k", self.k, 1, 1000)
        _int_in("steps", self.steps, 1, MAX_STEPS)
        _int_in("batch", self.batch, 1, MAX_U32 // 2)
        _int_in("seed", self.seed, 0, 2**64 - 1)
        _num_in("lr_g", self.lr_g, 0.0, math.inf)
        _num_in("lr_d", self.lr_d, 0.0, math.inf, lo_open=True)
        _num_in("lr_final", self.lr_final, 0.0, 1.0)
        _num_in("decay_start", self.decay_start, 0.0, 1.0, hi_open=True)
        _num_in("beta1", self.beta1, 0.0, 1.0, hi_open=True)
        _num_in("beta2", self.beta2, 0.0, 1.0, hi_open=True)
        _num_in("adam_eps", self.adam_eps, 0.0, math.inf, lo_open=True)
        _num_in("ema", self.ema, 0.0, 1.0, hi_open=True)
        _num_in("label_smoothing", self.label_smoothing, 0.0, 0.5)
        _num_in("instance_noise", self.instance_noise, 0.0, math.inf)
        _num_in("instance_noise_end", self.instance_noise_end, 0.0, 1.0, lo_open=True)
        if not (isinstance(self.clip, (int, float)) and not isinstance(self.clip, bool)
                and self.clip > 0):
            raise InputError(f"clip must be > 0 (inf: no clipping), got {self.clip!r}")
        try:
            activation_code(self.activation)
        except ValueError as e:
            raise InputError(f"activation: {e}") from None


DEFAULTS_RATIONALE = """\
The defaults (GANConfig) are chosen so that `gan` with no options, followed by `sample`,
recovers a shifted, scaled 1-D Gaussian (DESIGN.md): data normalised to mean 0 and std 1 per
dimension (so location and scale do not matter), a generator 4 -> 64 -> 64 -> D and a
discriminator D -> 64 -> 64 -> 1 (SiLU), normal latent noise of dimension 4, the
non-saturating generator loss, k = 1 discriminator step per generator step, batch 256,
4000 generator steps, Adam with the GAN betas (0.5, 0.999) at lr 1e-3 for both networks,
constant for the first half and then decayed linearly to 1e-4 (without the decay the final
discriminator was measured 0.014 away from D = 1/2 and the std 1.6 % off; with it 0.001-0.002
and 0.5 %), no label smoothing, no instance noise, and an EMA of the generator weights (0.999,
used for sampling).  About 7-8 CPU-seconds on one core.  Measured (tests/test_gan_theory.py,
20 000 data samples, 50 000 generated): N(-40, 7^2) mean off by 0.001 sd, std by -0.6 %;
N(25, 0.3^2) 0.001 sd and -0.5 %; D on real / generated 0.499 / 0.499 and 0.502 / 0.501,
L + log 4 = -1e-4 +- 8e-5 and 4e-5 +- 1e-4."""


def _choice(name, v, valid):
    if v not in valid:
        raise InputError(f"{name} {v!r}; valid: {', '.join(valid)}")


# ----------------------------------------------------------------------------- --set keys
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(GANConfig)}
SET_FIELDS = tuple(k for k in _FIELD_TYPES if k not in ("seed", "steps"))


def config_from_sets(sets, **fields):
    """A ``GANConfig`` from ``--set`` strings ``{key: text}`` plus explicit fields; an unknown
    key is an ``InputError`` listing the valid ones."""
    from .train import _BOOL, _parse_value

    bad = sorted(set(sets) - set(SET_FIELDS))
    if bad:
        raise InputError(f"unknown --set key(s) {', '.join(bad)} for gan; valid: "
                         f"{', '.join(SET_FIELDS)}")
    kw = dict(fields)
    for k, text in sets.items():
        text = str(text).strip()
        typ = _FIELD_TYPES[k]
        if typ in (int, "int"):
            kw[k] = _parse_value(k, text, int)
        elif typ in (float, "float"):
            if k == "clip" and text.lower() in ("inf", "infinity"):
                kw[k] = math.inf
            else:
                kw[k] = _parse_value(k, text, float)
        elif typ in (bool, "bool"):
            if text.lower() not in _BOOL:
                raise InputError(f"--set {k}={text}: expected true or false")
            kw[k] = _BOOL[text.lower()]
        else:
            kw[k] = text
    return GANConfig(**kw)


# ----------------------------------------------------------------------------- data
def binary_encoding(x):
    """'spins' if every value is -1 or +1, 'bits' if every value is 0 or 1, else None."""
    a = np.asarray(x)
    if np.all((a == -1) | (a == 1)):
        return "spins"
    if np.all((a == 0) | (a == 1)):
        return "bits"
    return None


# ----------------------------------------------------------------------------- the model
class GANModel:
    """Generator, discriminator, normalisation and training logs of a GAN.

    Build one with ``GANModel.create(config, data_shape, mean, std, g_normals, d_normals)``
    (training does this) or ``GANModel.load(path)``.
    """

    def __init__(self, config, data_shape, mean, std, g_theta, d_theta, *, g_ema=None,
                 g_m=None, g_v=None, d_m=None, d_v=None, step=0, logs=None,
                 data_encoding=None, whiten=None, unwhiten=None):
        from kernels import mlp_cpu

        config.validate()
        self.config = config
        self.data_shape = tuple(int(n) for n in data_shape)
        self.dim = int(np.prod(self.data_shape)) if self.data_shape else 1
        self.mean = np.asarray(mean, np.float64).reshape(self.dim)
        self.std = np.asarray(std, np.float64).reshape(self.dim)
        self.whiten = self.unwhiten = None
        if whiten is not None:
            self.whiten = np.asarray(whiten, np.float64).reshape(self.dim, self.dim)
            self.unwhiten = np.asarray(unwhiten, np.float64).reshape(self.dim, self.dim)
        self.data_encoding = data_encoding
        self.act = mlp_cpu.activation_code(config.activation)
        self.g_sizes, self.d_sizes = self.layer_sizes(config, self.dim)
        self.g_offsets = mlp_cpu.mlp_layout(self.g_sizes)
        self.d_offsets = mlp_cpu.mlp_layout(self.d_sizes)

        def vec(a, offsets, fill=None):
            P = mlp_cpu.n_params(offsets)
            if a is None:
                return np.zeros(P) if fill is None else fill.copy()
            a = np.ascontiguousarray(a, dtype=np.float64)
            if a.shape != (P,):
                raise InputError(f"weight vector has shape {a.shape}, the network needs ({P},)")
            return a
        self.g_theta = vec(g_theta, self.g_offsets)
        self.g_ema = vec(g_ema, self.g_offsets, self.g_theta)
        self.g_m, self.g_v = vec(g_m, self.g_offsets), vec(g_v, self.g_offsets)
        self.d_theta = vec(d_theta, self.d_offsets)
        self.d_m, self.d_v = vec(d_m, self.d_offsets), vec(d_v, self.d_offsets)
        self.step = int(step)
        self.logs = {k: np.asarray((logs or {}).get(k, np.zeros(0)), np.float64)
                     for k in LOG_KEYS}

    @property
    def binary(self):
        return self.data_encoding is not None

    @staticmethod
    def layer_sizes(config, dim):
        """(generator sizes, discriminator sizes) for data of ``dim`` numbers."""
        return ([config.latent_dim] + [config.g_width] * config.g_depth + [dim],
                [dim] + [config.d_width] * config.d_depth + [1])

    @classmethod
    def create(cls, config, data_shape, mean, std, g_normals, d_normals, **kw):
        """A fresh model; ``g_normals`` / ``d_normals`` are standard normals, one per weight."""
        from kernels import mlp_cpu

        config.validate()
        dim = int(np.prod(data_shape)) if len(data_shape) else 1
        gs, ds = cls.layer_sizes(config, dim)
        g = mlp_cpu.init_params(gs, g_normals, act=config.activation)
        d = mlp_cpu.init_params(ds, d_normals, act=config.activation)
        return cls(config, data_shape, mean, std, g, d, **kw)

    # ------------------------------------------------------------------ units
    def normalise(self, x):
        """Data units [N, D] -> normalised units [N, D] (spins for binary data)."""
        x = np.asarray(x, np.float64).reshape(-1, self.dim)
        if self.binary:
            return 2.0 * x - 1.0 if self.data_encoding == "bits" else x
        if self.whiten is not None:
            return (x - self.mean) @ self.whiten.T
        return (x - self.mean) / self.std

    def to_data(self, y):
        """Normalised units [N, D] -> data units [N, *data_shape] (float64; int8 for binary,
        from the signs of y)."""
        y = np.asarray(y, np.float64).reshape(-1, self.dim)
        if self.binary:
            s = np.where(y >= 0.0, 1, -1).astype(np.int8)
            x = (s + 1) // 2 if self.data_encoding == "bits" else s
            return x.astype(np.int8).reshape((-1,) + self.data_shape)
        x = self.mean + (y @ self.unwhiten.T if self.unwhiten is not None else y * self.std)
        return x.reshape((-1,) + self.data_shape)

    # ------------------------------------------------------------------ networks
    def generator_output(self, h, weights="ema"):
        """G(h) in normalised units [N, D] for latent points h [N, latent_dim] (tanh applied
        for binary data: the relaxed spins).  Evaluated row by row (``mlp_forward_rows``, no
        BLAS), so a row's result does not depend on the other rows, bit for bit."""
        from kernels import mlp_cpu

        th = self.g_ema if weights == "ema" else self.g_theta
        h = np.ascontiguousarray(np.asarray(h, np.float64).reshape(-1, self.config.latent_dim))
        y = mlp_cpu.mlp_forward_rows(th, self.g_offsets, self.act, h)
        return np.tanh(y) if self.binary else y

    def d_logit(self, x, normalised=False):
        """Discriminator logits a [N] at x (data units, or normalised with ``normalised``)."""
        from kernels import mlp_cpu

        y = np.asarray(x, np.float64).reshape(-1, self.dim) if normalised else self.normalise(x)
        return mlp_cpu.mlp_forward(self.d_theta, self.d_offsets, self.act,
                                   np.ascontiguousarray(y))[:, 0]

    def discriminator(self, x, normalised=False):
        """D(x) = sigmoid(a(x)) [N], evaluated without overflow."""
        a = self.d_logit(x, normalised)
        return 0.5 * (1.0 + np.tanh(0.5 * a))

    def latent_points(self, n, seed, first=0, purpose_offset=6):
        """Latent points [n, latent_dim] of samples first .. first+n-1 (Philox; sampling
        streams by default, see the module docstring)."""
        from kernels import streams

        c = self.config
        z = np.empty((n, c.latent_dim))
        if c.latent == "normal":
            streams.normals(np.uint64(seed), np.uint64(PURPOSE_GAN + purpose_offset), first, 0, z)
        else:
            streams.uniforms(np.uint64(seed), np.uint64(PURPOSE_GAN + purpose_offset + 1),
                             first, 0, z)
            z = 2.0 * z - 1.0
        return z

    def sample(self, n, seed=0, first=0, weights="ema", batch=65536):
        """n samples [n, *data_shape] in data units; sample i uses only (model, seed, first+i)."""
        from threadpoolctl import threadpool_limits

        from .models import DEFAULT_BLAS_THREADS

        n = int(n)
        if first < 0 or first + n > 2**32:
            raise InputError(f"samples {first}..{first + n - 1} must lie in 0..2**32-1")
        if weights not in ("ema", "raw"):
            raise InputError(f"weights {weights!r}; valid: ema, raw")
        parts = []
        with threadpool_limits(limits=DEFAULT_BLAS_THREADS, user_api="blas"):
            for s in range(0, n, batch):
                m = min(batch, n - s)
                h = self.latent_points(m, seed, first + s)
                parts.append(self.to_data(self.generator_output(h, weights)))
        return np.concatenate(parts) if parts else self.to_data(np.zeros((0, self.dim)))

    # ------------------------------------------------------------------ storage
    def attrs(self):
        c = self.config
        return {"kind": KIND, "format": FORMAT, "config": json.dumps(c.to_dict(), sort_keys=True),
                "step": np.int64(self.step), "data_shape": np.asarray(self.data_shape, np.int64),
                "dim": np.int64(self.dim), "latent": c.latent, "latent_dim": c.latent_dim,
                "loss": c.loss, "data_encoding": self.data_encoding or "",
                "relaxation": RELAXATION if self.binary else "none (continuous data)",
                "generator_sizes": np.asarray(self.g_sizes, np.int64),
                "discriminator_sizes": np.asarray(self.d_sizes, np.int64),
                "units": "networks in normalised units: y = (x - norm_mean) / norm_std"
                + (" (pca: y = norm_whiten (x - norm_mean))" if self.whiten is not None else "")
                + "; D(x) = sigmoid(discriminator output)"}

    def save(self, group, name="model"):
        """Write the ``model`` subgroup (and ``parameters`` for inspect) into an open file."""
        g = group.create_group(name)
        for k, v in self.attrs().items():
            g.attrs[k] = v
        gen = g.create_group("generator")
        for k, a in (("weights", self.g_theta), ("ema", self.g_ema), ("adam_m", self.g_m),
                     ("adam_v", self.g_v), ("offsets", self.g_offsets)):
            gen.create_dataset(k, data=a)
        dis = g.create_group("discriminator")
        for k, a in (("weights", self.d_theta), ("adam_m", self.d_m), ("adam_v", self.d_v),
                     ("offsets", self.d_offsets)):
            dis.create_dataset(k, data=a)
        g.create_dataset("norm_mean", data=self.mean)
        g.create_dataset("norm_std", data=self.std)
        if self.whiten is not None:
            g.create_dataset("norm_whiten", data=self.whiten)
            g.create_dataset("norm_unwhiten", data=self.unwhiten)
        log = g.create_group("log")
        for k in LOG_KEYS:
            log.create_dataset(k, data=self.logs[k])
        if "parameters" not in group:
            p = group.create_group("parameters")
            p.attrs["model"] = "gan"
            for k, v in self.config.to_dict().items():
                p.attrs[k] = v
            p.attrs["step"] = np.int64(self.step)
            p.attrs["data_encoding"] = self.data_encoding or "continuous"
        return g

    @classmethod
    def load(cls, path):
        """Read a GAN model file (checks: exists, HDF5, /model of kind 'gan', complete)."""
        from .store import open_h5

        path = os.fspath(path)
        with open_h5(path, "model file") as f:
            if not _is_gan_group(f):
                raise InputError(f"model file {path} has no /model group of kind 'gan'; is it "
                                 "a model written by nonequil gan?")
            g = f["model"]
            try:
                cfg = GANConfig.from_dict(json.loads(_s(g.attrs["config"])))
                shape = tuple(int(n) for n in g.attrs["data_shape"])
                kw = dict(g_ema=g["generator/ema"][()], g_m=g["generator/adam_m"][()],
                          g_v=g["generator/adam_v"][()], d_m=g["discriminator/adam_m"][()],
                          d_v=g["discriminator/adam_v"][()], step=int(g.attrs["step"]),
                          logs={k: g["log"][k][()] for k in LOG_KEYS},
                          data_encoding=_s(g.attrs.get("data_encoding", "")) or None)
                if "norm_whiten" in g:
                    kw.update(whiten=g["norm_whiten"][()], unwhiten=g["norm_unwhiten"][()])
                args = (g["norm_mean"][()], g["norm_std"][()], g["generator/weights"][()],
                        g["discriminator/weights"][()])
            except (KeyError, ValueError, OSError, TypeError) as e:
                raise InputError(f"model file {path}: /model is incomplete or corrupt ({e})") \
                    from None
        return cls(cfg, shape, *args, **kw)

    def __repr__(self):
        return (f"GANModel(dim={self.dim}, G={self.g_sizes}, D={self.d_sizes}, "
                f"latent={self.config.latent}, step={self.step})")


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _is_gan_group(f):
    if "model" not in f or not hasattr(f["model"], "keys"):
        return False
    return _s(f["model"].attrs.get("kind", b"")) == KIND


def is_gan_file(path):
    """True if ``path`` is an HDF5 file whose /model group is a GAN (False on any doubt:
    the caller's own checks then report what is wrong)."""
    import h5py

    try:
        if not (os.path.exists(path) and h5py.is_hdf5(path)):
            return False
        with h5py.File(path, "r") as f:
            return _is_gan_group(f)
    except OSError:
        return False


def load(path):
    """``GANModel.load(path)``."""
    return GANModel.load(path)
