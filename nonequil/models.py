r"""Learned score models: an MLP on the CPU engine (``kernels.mlp_cpu``), its configuration,
data normalisation, parametrisations and HDF5 storage.

The network
-----------
``MLPScoreModel`` holds one MLP with ``depth`` hidden layers of ``width`` units (activation
``activation``, SiLU by default) and a linear output layer.  For a state of D numbers (the
sample shape ``data_shape`` flattened) its input row is::

    [ y_1 .. y_D,  sin(2 pi f_1 tau) .. sin(2 pi f_F tau),  cos(2 pi f_1 tau) .. cos(2 pi f_F tau) ]

* ``y`` is the state in *normalised units* (``normalize``):
  - ``"diag"`` (default): ``y = (x - mu) / s`` with ``mu`` and ``s`` the per-dimension mean
    and standard deviation (ddof 0) of the training data (a constant column gets s = 1);
  - ``"pca"``: PCA whitening ``y = W (x - mu)`` with ``W = Lambda^{-1/2} V^T`` from the
    eigen-decomposition ``C = V Lambda V^T`` of the training covariance (ddof 0; eigenvalues
    below 1e-12 of the largest are raised to it), so the normalised data have covariance I;
  - ``"none"``: mu = 0, s = 1.
  The normalisation is stored with the model.
* ``tau`` in [0, 1] is the *noise-level feature* of the time t (``time_input``):
  - ``"logsnr"`` (default): ``tau = (l_hi - logSNR(t)) / (l_hi - l_lo)`` with
    ``logSNR = log(m(t)^2 / sigma(t)^2)``, ``l_hi = logSNR(t_eps)``, ``l_lo = logSNR(t_max)``
    (for DDPM: t = 1 and t = T).  It spreads the small-noise end, where the score changes
    fastest, over the whole input range;
  - ``"t"``: ``tau = t / t_max`` (DDPM and the binomial chain: ``t / T``).
* ``f_k`` are ``n_freq`` geometric frequencies from ``f_min`` to ``f_max``
  (``kernels.mlp_cpu.fourier_frequencies``); with f_min = 1/4 the lowest feature is monotone.

The output o (D numbers) is turned into the noise prediction ``eps_hat`` by the
parametrisation.

Processes and units
-------------------
The forward process runs in normalised units: ``y_t = m(t) y_0 + sigma(t) eps``, eps ~ N(0, I),
with ``m = process.mean_coeff(t)`` and ``sigma^2 = process.variance(t)`` (VP / sub-VP / VE
SDEs, or the DDPM chain with m^2 = alpha_bar_t, integer t).  In data units this is
``x_t = mu + m (x_0 - mu) + sigma U eps`` with ``U = diag(s)`` (``diag``) or ``W^{-1}``
(``pca``), and the scores are related by ``score_data(x, t) = W^T score_norm(W (x - mu), t)``
(``W = diag(1/s)`` for ``diag``: ``score_norm / s``).  The reverse drift in data units
therefore carries the metric ``U U^T`` (``noise_metric()``): the probability-flow ODE is
``dx/dt = f(t) (x - mu) - g(t)^2 / 2 U U^T score_data(x, t)``.  ``score(x, t)`` and
``eps(x, t)`` take x in data units; ``score_normalised(y, t)`` and ``eps_normalised(y, t)``
take y.  A sampler draws y_T from the prior N(0, prior_std^2 I), reverses in normalised
units (where the process is the plain one of ``nonequil.processes``) and returns
``to_data(y_0) = mu + U y_0``.

Parametrisations (o is the network output; everything in normalised units, per row)::

    eps    eps_hat = o
    x0     x0_hat = o,       eps_hat = (y_t - m o) / sigma
    score  score_hat = o,    eps_hat = -sigma o
    v      v_hat = o,        eps_hat = sigma y_t + m o           (VP and DDPM only:
           v = m eps - sigma x0 (Salimans & Ho 2022) needs m^2 + sigma^2 = 1; then
           x0_hat = m y_t - sigma o)

With ``gaussian_term=True`` (needs ``normalize="pca"``) the exact noise prediction of
whitened Gaussian data, ``sigma y_t / (m^2 + sigma^2)`` (p_0 = N(0, I) gives p_t =
N(0, (m^2 + sigma^2) I)), replaces the parametrisation's own ``a(t) y_t`` below: ``eps_hat =
sigma y_t / (m^2 + sigma^2) + J(t) o``, so the network learns only the non-Gaussian
correction, in its parametrisation's units, for every parametrisation (its output layer
starts 10x smaller; model files record ``gaussian_term_form = 2``, see
``GAUSSIAN_TERM_FORM``).  For near-Gaussian data such as harmonic
chains this removes most of the error.

In every case ``eps_hat = a(t) y_t + J(t) o`` with per-time scalars ``a`` and ``J``
(``affine(t)``), and the score is ``-eps_hat / sigma``.

The binomial chain (Sohl-Dickstein et al. 2015) uses the same network with inputs
``s = 2 x_t - 1`` (bits in {0, 1}, no normalisation) and outputs the logits of
``p(x_{t-1} = 1 | x_t)`` per bit (``prob_prev``); it has no eps or score.  The logit is
``stay_logit(t) s + o`` (``logit_skip``, see ``BinomialChain.stay_logit``).  With
``patch = k`` (odd, >= 3; spins on a 2-D periodic lattice [L1, L2]) the network is local:
one MLP, shared by all sites, maps the k x k periodic neighbourhood of a site (row-major,
centred on it), the configuration's mean spin and the time features to that site's o -- a
convolution with a k x k receptive field per reverse step, as for images in Sohl-Dickstein
et al., plus the order parameter.  Its input rows are ``[patch_1 .. patch_{k^2}, mean(s),
time features]`` and its output layer has one unit.  A dense
MLP narrower than D cannot represent the local correlations of a 16 x 16 Ising lattice.

Storage
-------
``save(group)`` writes a ``model`` subgroup (a file is recognised as a model by it)::

    /model                       attrs: kind = "mlp-score", format = 1, config (JSON),
                                 train_config (JSON), step, data_shape, weight_norm,
                                 data_encoding (binomial)
    /model/weights  [P]          raw weights (layout of kernels.mlp_cpu.mlp_layout)
    /model/ema      [P]          EMA of the weights (used by default for evaluation)
    /model/adam_m, adam_v [P]    Adam moments
    /model/offsets  [L, 4]       the layout (redundant; for readers without nonequil)
    /model/freqs    [F]          Fourier frequencies
    /model/norm_mean, norm_std [D]          (norm_std is 1 for pca and none)
    /model/norm_whiten, norm_unwhiten [D, D]   W and W^{-1} (pca only)
    /model/loss     [step]       the training loss at every step (float64)

``load(path)`` reads it back (with the DESIGN checks: exists, HDF5, has /model).
"""
import dataclasses
import json
import math
import os

import numpy as np

from .errors import InputError

FORMAT = 1
KIND = "mlp-score"
# how gaussian_term enters eps_hat (``affine``): 2 = the Gaussian eps replaces the
# parametrisation's a(t) (files without the attribute are form 1, where it was added to it;
# the two agree for eps and score, and form-1 x0 / v models are refused on load)
GAUSSIAN_TERM_FORM = 2
PARAMETRISATIONS = ("eps", "x0", "score", "v")
TIME_INPUTS = ("logsnr", "t")
DTYPES = ("float64", "float32")
NORMALIZE = ("diag", "pca", "none")
# BLAS threads of training and evaluation unless told otherwise.  One: at these matrix sizes
# (batch 512 x width 128) two OpenBLAS threads were measured 7-23x SLOWER than one on a
# 2-core machine with other processes running (every product waits until both threads are
# scheduled): 3.2 s against 22-75 s for 1000 default training steps at load 1-3.  Pass
# ``threads`` (``--threads``) to use more on an idle machine.
DEFAULT_BLAS_THREADS = 1
# rows per shard of a training batch (``ShardedNet``): fixed, so results do not depend on the
# thread count; 256 rows keep the products large enough for BLAS to run near its peak
SHARD_ROWS = 256
CONTINUOUS = ("vp", "subvp", "ve")
PROCESS_NAMES = ("vp", "subvp", "ve", "ddpm", "binomial")

# process parameters accepted per process (schedule keys for vp / subvp)
SCHEDULE_KEYS = {"linear": ("beta_min", "beta_max"), "cosine": ("s", "alpha_bar_min"),
                 "loglinear": ("gamma_min", "gamma_max")}
PROCESS_KEYS = {"ve": ("sigma_min", "sigma_max"), "ddpm": ("T", "beta_1", "beta_T"),
                "binomial": ("T",)}
INT_KEYS = ("T",)
# smallest training time (t_eps) of each continuous process.  VP and sub-VP: 1e-3, where the
# linear schedule has sigma ~ 0.01 (the score grows like 1/sigma below it and samplers stop
# there, as in Song et al. 2021); VE: 1e-5 as in Song et al. 2021.
T_EPS = {"vp": 1e-3, "subvp": 1e-3, "ve": 1e-5}


def process_keys(process, schedule="linear"):
    """The ``--set`` parameter names of a forward process (and schedule)."""
    if process in ("vp", "subvp"):
        if schedule not in SCHEDULE_KEYS:
            raise InputError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULE_KEYS)}")
        return SCHEDULE_KEYS[schedule]
    if process not in PROCESS_KEYS:
        raise InputError(f"unknown process {process!r}; valid: {', '.join(PROCESS_NAMES)}")
    return PROCESS_KEYS[process]


def make_process(process, schedule="linear", params=None):
    """Build the forward process object of ``nonequil.processes`` from names and parameters."""
    from . import processes

    params = dict(params or {})
    valid = process_keys(process, schedule)
    bad = sorted(set(params) - set(valid))
    if bad:
        raise InputError(f"unknown parameter(s) {', '.join(bad)} for process {process}"
                         + (f" (schedule {schedule})" if process in ("vp", "subvp") else "")
                         + f"; valid: {', '.join(valid)}")
    try:
        if process in ("vp", "subvp"):
            return processes.make(process, schedule, **{k: float(v) for k, v in params.items()})
        if process == "ve":
            return processes.VESDE(**{k: float(v) for k, v in params.items()})
        T = params.get("T", 1000 if process == "ddpm" else 100)
        if T != int(T) or int(T) < 1:
            raise InputError(f"T must be a positive integer, got {T!r}")
        T = int(T)
        if process == "ddpm":
            b1 = float(params.get("beta_1", 1e-4 * 1000 / T if T != 1000 else 1e-4))
            bT = float(params.get("beta_T", min(0.02 * 1000 / T, 0.999)))
            if not 0 < b1 <= bT < 1:
                raise InputError(f"ddpm needs 0 < beta_1 <= beta_T < 1, got {b1}, {bT}")
            return processes.DiscreteChain(np.linspace(b1, bT, T))
        return processes.BinomialChain(1.0 / (T - np.arange(1, T + 1) + 1.0))
    except (TypeError, ValueError) as e:
        raise InputError(f"bad parameters for process {process}: {e}") from None


@dataclasses.dataclass
class ModelConfig:
    """Everything that defines the model function (not how it was trained)."""
    process: str = "vp"
    schedule: str = "linear"
    process_params: dict = dataclasses.field(default_factory=dict)
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    n_freq: int = 8
    f_min: float = 0.25
    f_max: float = 8.0
    time_input: str = "logsnr"
    parametrisation: str = "eps"
    dtype: str = "float64"
    normalize: str = "diag"
    gaussian_term: bool = False
    t_eps: float = None          # None: T_EPS[process] (continuous processes only)
    logit_skip: bool = None      # binomial: the per-bit skip logit; None = on for binomial
    patch: int = 0               # binomial on a 2-D lattice: k x k local network; 0 = dense

    def validate(self):
        from kernels.mlp_cpu import activation_code

        if self.process not in PROCESS_NAMES:
            raise InputError(f"unknown process {self.process!r}; valid: {', '.join(PROCESS_NAMES)}")
        process_keys(self.process, self.schedule)
        for k in ("width", "depth", "n_freq"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise InputError(f"{k} must be a positive integer, got {v!r}")
        if self.width > 1 << 14 or self.depth > 64 or self.n_freq > 1024:
            raise InputError(f"width {self.width}, depth {self.depth} or n_freq {self.n_freq} "
                             "is unreasonably large (limits 16384, 64, 1024)")
        try:
            activation_code(self.activation)
        except ValueError as e:
            raise InputError(f"activation: {e}") from None
        if not (0 < self.f_min <= self.f_max and math.isfinite(self.f_max)):
            raise InputError(f"need 0 < f_min <= f_max, got f_min={self.f_min}, f_max={self.f_max}")
        if self.time_input not in TIME_INPUTS:
            raise InputError(f"time_input {self.time_input!r}; valid: {', '.join(TIME_INPUTS)}")
        if self.parametrisation not in PARAMETRISATIONS:
            raise InputError(f"parametrisation {self.parametrisation!r}; valid: "
                             f"{', '.join(PARAMETRISATIONS)}")
        if self.parametrisation == "v" and self.process not in ("vp", "ddpm"):
            raise InputError(f"parametrisation v needs m^2 + sigma^2 = 1 (process vp or ddpm), "
                             f"not {self.process}; use eps, x0 or score")
        if self.normalize not in NORMALIZE:
            raise InputError(f"normalize {self.normalize!r}; valid: {', '.join(NORMALIZE)}")
        if self.gaussian_term and (self.normalize != "pca" or self.process == "binomial"):
            raise InputError("gaussian_term needs normalize=pca (the Gaussian term assumes "
                             "whitened data) and a Gaussian process")
        if self.logit_skip not in (None, True, False):
            raise InputError(f"logit_skip must be true or false, got {self.logit_skip!r}")
        if not isinstance(self.patch, (int, np.integer)) or isinstance(self.patch, bool) or \
                not (self.patch == 0 or (3 <= self.patch <= 15 and self.patch % 2 == 1)):
            raise InputError(f"patch must be 0 (a dense network) or an odd size 3..15 of the "
                             f"local neighbourhood, got {self.patch!r}")
        if self.patch and self.process != "binomial":
            raise InputError(f"patch (a local network on a spin lattice) applies to the "
                             f"binomial chain only, not {self.process}")
        if self.logit_skip and self.process != "binomial":
            raise InputError(f"logit_skip applies to the binomial chain only, not {self.process}")
        if self.process == "binomial" and self.normalize != "diag":
            raise InputError("the binomial chain uses its bits as they are: normalize does "
                             "not apply (leave the default)")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.process not in ("vp", "subvp") and self.schedule != "linear":
            raise InputError(f"schedule applies to the vp and subvp processes only, not "
                             f"{self.process}")
        if self.process not in CONTINUOUS and self.t_eps is not None:
            raise InputError(f"t_eps applies to the continuous processes (vp, subvp, ve), "
                             f"not {self.process}")
        if self.process in CONTINUOUS:
            te = self.t_eps_value
            if not (isinstance(te, (int, float)) and 0 < te < 0.5):
                raise InputError(f"t_eps must lie in (0, 0.5), got {te!r}")
        make_process(self.process, self.schedule, self.process_params)

    @property
    def t_eps_value(self):
        if self.process not in CONTINUOUS:
            return None
        return float(T_EPS[self.process] if self.t_eps is None else self.t_eps)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["process_params"] = {k: (int(v) if k in INT_KEYS else float(v))
                               for k, v in self.process_params.items()}
        return d

    @property
    def skip(self):
        """Whether the reverse logits carry the per-bit skip (``BinomialChain.stay_logit``)."""
        return self.process == "binomial" and self.logit_skip is not False

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        d.setdefault("logit_skip", False)      # files written before the skip existed
        return cls(**{k: v for k, v in d.items() if k in names})


def _chunks(n, size=65536):
    for s in range(0, n, size):
        yield s, min(n, s + size)


class MLPScoreModel:
    """An MLP score model; see the module docstring for the maths and the file layout.

    Build one with ``MLPScoreModel.create(config, data_shape, mean, std, init_normals)``
    (training does this) or ``MLPScoreModel.load(path)``.
    """

    def __init__(self, config, data_shape, mean, std, theta, ema=None, adam_m=None,
                 adam_v=None, step=0, loss=None, train_config=None, weight_norm=1.0,
                 data_encoding=None, whiten=None, unwhiten=None):
        from kernels import mlp_cpu

        self.config = config
        config.validate()
        self.process = make_process(config.process, config.schedule, config.process_params)
        self.data_shape = tuple(int(n) for n in data_shape)
        self.dim = int(np.prod(self.data_shape)) if self.data_shape else 1
        self.mean = np.asarray(mean, np.float64).reshape(self.dim)
        self.std = np.asarray(std, np.float64).reshape(self.dim)
        self.whiten = self.unwhiten = None
        if whiten is not None:
            self.whiten = np.asarray(whiten, np.float64).reshape(self.dim, self.dim)
            self.unwhiten = np.asarray(unwhiten, np.float64).reshape(self.dim, self.dim)
        self.np_dtype = np.dtype(config.dtype)
        self.act = mlp_cpu.activation_code(config.activation)
        if config.patch and (len(self.data_shape) != 2
                             or min(self.data_shape) < config.patch):
            raise InputError(f"patch={config.patch} needs spins on a 2-D lattice of at least "
                             f"{config.patch} x {config.patch} sites, got data shape "
                             f"{list(self.data_shape)}; use patch=0 (a dense network)")
        self.sizes = self.layer_sizes(config, self.dim)
        self.n_in = self.sizes[0] - 2 * config.n_freq     # state columns of an input row
        self.offsets = mlp_cpu.mlp_layout(self.sizes)
        self.n_params = mlp_cpu.n_params(self.offsets)
        self.freqs = mlp_cpu.fourier_frequencies(config.n_freq, config.f_min, config.f_max)
        P = self.n_params

        def vec(a, fill=None):
            if a is None:
                return np.zeros(P, self.np_dtype) if fill is None else fill.copy()
            a = np.ascontiguousarray(a, dtype=self.np_dtype)
            if a.shape != (P,):
                raise InputError(f"weight vector has shape {a.shape}, the network needs ({P},)")
            return a
        self.theta = vec(theta)
        self.ema = vec(ema, self.theta)
        self.adam_m = vec(adam_m)
        self.adam_v = vec(adam_v)
        self.step = int(step)
        self.loss = np.zeros(0) if loss is None else np.asarray(loss, np.float64)
        self.train_config = dict(train_config or {})
        self.weight_norm = float(weight_norm)
        self.data_encoding = data_encoding
        self.threads = None          # BLAS threads of evaluations (None: DEFAULT_BLAS_THREADS)
        self._tau_range = self._noise_feature_range()

    # ------------------------------------------------------------------ construction
    @staticmethod
    def layer_sizes(config, dim):
        if config.patch:       # local: a site's neighbourhood and the mean spin -> its logit
            return ([config.patch ** 2 + 1 + 2 * config.n_freq] + [config.width] * config.depth
                    + [1])
        return [dim + 2 * config.n_freq] + [config.width] * config.depth + [dim]

    @classmethod
    def create(cls, config, data_shape, mean, std, init_normals, **kw):
        """A fresh model; ``init_normals`` are standard normals, one per parameter."""
        from kernels import mlp_cpu

        config.validate()
        dim = int(np.prod(data_shape)) if len(data_shape) else 1
        sizes = cls.layer_sizes(config, dim)
        theta = mlp_cpu.init_params(sizes, init_normals, act=config.activation,
                                    dtype=np.dtype(config.dtype),
                                    out_scale=0.1 if config.gaussian_term else 1.0)
        return cls(config, data_shape, mean, std, theta, **kw)

    @staticmethod
    def fit_normalisation(x, mode):
        """(mean, std, whiten, unwhiten) of data x [N, D] for ``normalize=mode``."""
        x = np.asarray(x, np.float64)
        D = x.shape[1]
        if mode == "none":
            return np.zeros(D), np.ones(D), None, None
        mean = x.mean(axis=0)
        if mode == "diag":
            std = x.std(axis=0)
            return mean, np.where(std > 0, std, 1.0), None, None
        xc = x - mean
        C = xc.T @ xc / x.shape[0]
        lam, V = np.linalg.eigh(C)
        top = float(lam.max()) if lam.max() > 0 else 1.0
        lam = np.maximum(lam, 1e-12 * top)
        W = (V / np.sqrt(lam)).T                     # Lambda^{-1/2} V^T
        Winv = V * np.sqrt(lam)                      # V Lambda^{1/2}
        return mean, np.ones(D), W, Winv

    # ------------------------------------------------------------------ time
    @property
    def discrete(self):
        return self.config.process in ("ddpm", "binomial")

    @property
    def t_eps(self):
        """Smallest time the model was trained at (continuous); 1 for the chains."""
        return 1 if self.discrete else self.config.t_eps_value

    @property
    def t_max(self):
        return self.process.T if self.discrete else float(self.process.t_max)

    @property
    def prior_std(self):
        return float(getattr(self.process, "prior_std", 1.0))

    def m_sigma(self, t):
        """(m(t), sigma(t)) as float64 arrays shaped like t (normalised units)."""
        t = np.asarray(t)
        if self.config.process == "ddpm":
            ti = self._int_times(t)
            ab = np.asarray(self.process.ab(ti), np.float64)
            return np.sqrt(ab), np.sqrt(-np.expm1(np.log(ab)))
        if self.config.process == "binomial":
            raise InputError("the binomial chain has no Gaussian marginal (m, sigma)")
        t = np.asarray(t, np.float64)
        return (np.asarray(self.process.mean_coeff(t), np.float64),
                np.sqrt(np.asarray(self.process.variance(t), np.float64)))

    def _int_times(self, t):
        ti = np.asarray(np.rint(t), np.int64)
        if np.any(ti != np.asarray(t)) or np.any(ti < 1) or np.any(ti > self.process.T):
            raise InputError(f"times of the {self.config.process} chain are integers in "
                             f"1..{self.process.T}")
        return ti

    def log_snr(self, t):
        m, s = self.m_sigma(t)
        return 2.0 * np.log(m) - 2.0 * np.log(s)

    def _noise_feature_range(self):
        if self.config.time_input != "logsnr" or self.config.process == "binomial":
            return None
        lo_t, hi_t = (1, self.process.T) if self.discrete else (self.t_eps, self.t_max)
        l_hi = float(self.log_snr(np.array([lo_t]))[0])
        l_lo = float(self.log_snr(np.array([hi_t]))[0])
        if not (math.isfinite(l_hi) and math.isfinite(l_lo) and l_hi > l_lo):
            raise InputError(f"log-SNR of process {self.config.process} is not decreasing "
                             f"on [{lo_t}, {hi_t}] ({l_hi}, {l_lo}); use time_input=t")
        return l_hi, l_lo

    def noise_feature(self, t):
        """tau(t) in [0, 1] (see the module docstring), float64 array shaped like t."""
        t = np.asarray(t, np.float64)
        if self._tau_range is None:
            return t / float(self.t_max)
        l_hi, l_lo = self._tau_range
        return (l_hi - self.log_snr(t)) / (l_hi - l_lo)

    # ------------------------------------------------------------------ network
    def net_input(self, y, t, out=None):
        """The input rows [y, sin(2 pi f tau), cos(2 pi f tau)] (model dtype)."""
        from kernels import mlp_cpu

        y = np.asarray(y)
        B = y.shape[0]
        X = out if out is not None else np.empty((B, self.sizes[0]), self.np_dtype)
        X[:, :self.n_in] = y
        tau = np.ascontiguousarray(np.broadcast_to(self.noise_feature(t), (B,)), np.float64)
        if X.dtype == np.float64:
            mlp_cpu.fourier_embed_into(tau, self.freqs, X, self.n_in)
        else:
            E = np.empty((B, 2 * self.freqs.size))
            mlp_cpu.fourier_embed_into(tau, self.freqs, E, 0)
            X[:, self.n_in:] = E
        return X

    def net(self, y, t, weights="ema"):
        """Raw network output o [B, D] at normalised states y and times t (a local binomial
        model: y are neighbourhood rows [B, patch^2] and o is [B, 1])."""
        from kernels import mlp_cpu
        from threadpoolctl import threadpool_limits

        theta = self._weights(weights)
        y = np.asarray(y, np.float64).reshape(-1, self.n_in)
        B = y.shape[0]
        t = np.broadcast_to(np.asarray(t, np.float64), (B,))
        out = np.empty((B, self.sizes[-1]), self.np_dtype)
        with threadpool_limits(limits=self.threads or DEFAULT_BLAS_THREADS, user_api="blas"):
            for a, b in _chunks(B):
                X = self.net_input(y[a:b], t[a:b])
                mlp_cpu.mlp_forward_into(theta, self.offsets, self.act, X, out[a:b])
        return out.astype(np.float64)

    def _weights(self, which):
        if which == "ema":
            return self.ema
        if which in ("raw", "weights", "theta"):
            return self.theta
        raise ValueError(f"weights must be 'ema' or 'raw', got {which!r}")

    def affine(self, t):
        """(a, J, sigma) with eps_hat = a y_t + J o (per time; see the module docstring).

        Samplers that evaluate the network themselves must use this (it includes the
        Gaussian term of ``gaussian_term=True``)."""
        m, s = self.m_sigma(t)
        p = self.config.parametrisation
        if p == "eps":
            a, J = np.zeros_like(s), np.ones_like(s)
        elif p == "x0":
            a, J = 1.0 / s, -m / s
        elif p == "score":
            a, J = np.zeros_like(s), -s
        else:                                                        # v
            a, J = s, m
        if self.config.gaussian_term:
            # the exact eps of p_0 = N(0, I) replaces the parametrisation's own a(t) y_t, so
            # o is the non-Gaussian correction in the parametrisation's units for every
            # parametrisation (with a + s / (m^2 + s^2), an x0 / v network had to output
            # y/m or -s y/m for Gaussian data: unbounded as m -> 0)
            a = s / (m * m + s * s)
        return a, J, s

    # ------------------------------------------------------------------ predictions
    _affine = affine

    def normalise(self, x):
        """y = (x - mu) / s (or W (x - mu)) for x [B, ...] in data units -> [B, D]."""
        x = np.asarray(x, np.float64).reshape(-1, self.dim)
        if self.whiten is not None:
            return (x - self.mean) @ self.whiten.T
        return (x - self.mean) / self.std

    def to_data(self, y):
        """x = mu + s y (or mu + W^{-1} y), reshaped to [B, *data_shape].  For the binomial
        chain y are bits, returned as they are, or as spins 2 y - 1 when the training data
        were spins (``data_encoding``)."""
        y = np.asarray(y, np.float64).reshape(-1, self.dim)
        if self.config.process == "binomial":
            x = 2.0 * y - 1.0 if self.data_encoding == "spins" else y
            return x.reshape((-1,) + self.data_shape)
        x = self.mean + (y @ self.unwhiten.T if self.whiten is not None else self.std * y)
        return x.reshape((-1,) + self.data_shape)

    def score_to_data(self, s_y):
        """A normalised-units score [B, D] in data units: W^T s_y (``s_y / s`` for diag)."""
        if self.whiten is not None:
            return s_y @ self.whiten
        return s_y / self.std

    def noise_metric(self):
        """U U^T [D, D] of the data-unit process (``diag(s^2)`` or ``W^{-1} W^{-T}``)."""
        if self.whiten is not None:
            return self.unwhiten @ self.unwhiten.T
        return np.diag(self.std ** 2)

    def _check_gaussian(self):
        if self.config.process == "binomial":
            raise InputError("the binomial-chain model predicts bit probabilities "
                             "(prob_prev), not eps or a score")

    def eps_normalised(self, y, t, weights="ema"):
        """eps_hat [B, D] at normalised y [B, D] and times t (scalar or [B])."""
        self._check_gaussian()
        y = np.asarray(y, np.float64).reshape(-1, self.dim)
        t = np.broadcast_to(np.asarray(t, np.float64), (y.shape[0],))
        a, J, _ = self.affine(t)
        return a[:, None] * y + J[:, None] * self.net(y, t, weights)

    def score_normalised(self, y, t, weights="ema"):
        """grad_y log p_t(y) in normalised units: -eps_hat / sigma(t)."""
        y = np.asarray(y, np.float64).reshape(-1, self.dim)
        t = np.broadcast_to(np.asarray(t, np.float64), (y.shape[0],))
        _, s = self.m_sigma(t)
        return -self.eps_normalised(y, t, weights) / s[:, None]

    def eps(self, x, t, weights="ema"):
        """Predicted (normalised, dimensionless) noise at x [B, ...] in data units."""
        e = self.eps_normalised(self.normalise(x), t, weights)
        return e.reshape((-1,) + self.data_shape)

    def score(self, x, t, weights="ema"):
        """grad_x log p_t(x) in data units: W^T score_normalised(W (x - mu), t)."""
        sc = self.score_to_data(self.score_normalised(self.normalise(x), t, weights))
        return sc.reshape((-1,) + self.data_shape)

    def prob_prev(self, x, t, weights="ema"):
        """Binomial chain: p(x_{t-1} = 1 | x_t = x) per bit, x in {0, 1} [B, ...]."""
        if self.config.process != "binomial":
            raise InputError("prob_prev is defined for the binomial chain only")
        x = np.asarray(x, np.float64).reshape(-1, self.dim)
        ti = self._int_times(np.broadcast_to(np.asarray(t), (x.shape[0],)))
        if self.config.patch:
            o = self._local_net(2.0 * x - 1.0, ti, weights)
        else:
            o = self.net(2.0 * x - 1.0, t, weights)
        if self.config.skip:
            o = o + self.process.stay_logit(ti)[:, None] * (2.0 * x - 1.0)
        return (0.5 * (1.0 + np.tanh(0.5 * o))).reshape((-1,) + self.data_shape)

    def _local_net(self, s, t, weights="ema"):
        """o [B, D] of a local model (``patch``) at spins s [B, D] and times t [B]: the
        network on every site's neighbourhood, the time features computed once per sample;
        in groups of samples of about 65536 site rows."""
        from kernels import mlp_cpu
        from threadpoolctl import threadpool_limits

        theta = self._weights(weights)
        B, D, k2 = s.shape[0], self.dim, self.n_in
        tau = np.ascontiguousarray(self.noise_feature(t), np.float64)
        E = np.empty((B, 2 * self.freqs.size))
        mlp_cpu.fourier_embed_into(tau, self.freqs, E, 0)
        o = np.empty((B * D, 1), self.np_dtype)
        G = max(1, 65536 // D)
        X = np.empty((min(B, G) * D, self.sizes[0]), self.np_dtype)
        with threadpool_limits(limits=self.threads or DEFAULT_BLAS_THREADS, user_api="blas"):
            for a in range(0, B, G):
                b = min(B, a + G)
                Xg = X[:(b - a) * D]
                Xg[:, :k2] = self.site_patches(s[a:b])
                Xg[:, k2:] = np.repeat(E[a:b], D, axis=0)
                mlp_cpu.mlp_forward_into(theta, self.offsets, self.act, Xg, o[a * D:b * D])
        return o.astype(np.float64).reshape(B, D)

    def site_patches(self, s):
        """The state columns of a local model's rows (``patch = k``) for states s [B, D]
        (D = L1 L2, row-major): rows [B D, k^2 + 1], sample-major then site; each row is the
        site's k x k periodic neighbourhood in row-major order centred on it, then the mean
        of s over the whole configuration (the order parameter: without it a local network
        cannot pick one sign of the magnetisation in the ordered phase, and makes domains)."""
        k, (L1, L2) = self.config.patch, self.data_shape
        s = np.asarray(s).reshape(-1, L1, L2)
        B, h = s.shape[0], k // 2
        P = np.empty((B * L1 * L2, k * k + 1), self.np_dtype)
        V = P.reshape(B, L1, L2, k * k + 1)       # a view: P is contiguous
        for i in range(k):
            for j in range(k):
                V[..., i * k + j] = np.roll(s, (h - i, h - j), axis=(1, 2))
        V[..., k * k] = s.mean(axis=(1, 2))[:, None, None]
        return P

    # ------------------------------------------------------------------ storage
    def attrs(self):
        return {"kind": KIND, "format": FORMAT,
                "config": json.dumps(self.config.to_dict(), sort_keys=True),
                "train_config": json.dumps(self.train_config, sort_keys=True, default=str),
                "step": np.int64(self.step), "data_shape": np.asarray(self.data_shape, np.int64),
                "dim": np.int64(self.dim), "weight_norm": self.weight_norm,
                "data_encoding": self.data_encoding or "",
                "layer_sizes": np.asarray(self.sizes, np.int64),
                "inputs": "[ y, sin(2 pi freqs tau), "
                          "cos(2 pi freqs tau) ]; tau = " + (
                              "(logSNR(t_eps) - logSNR(t)) / (logSNR(t_eps) - logSNR(t_max))"
                              if self._tau_range is not None else "t / t_max")
                          + ("; y = norm_whiten (x - norm_mean)" if self.whiten is not None
                             else "; y = (x - norm_mean) / norm_std"),
                "t_eps": float(self.t_eps), "t_max": float(self.t_max),
                "gaussian_term_form": GAUSSIAN_TERM_FORM}

    def save(self, group, name="model"):
        """Write the ``model`` subgroup into an open h5py File or Group."""
        g = group.create_group(name)
        for k, v in self.attrs().items():
            g.attrs[k] = v
        for k, a in (("weights", self.theta), ("ema", self.ema), ("adam_m", self.adam_m),
                     ("adam_v", self.adam_v), ("offsets", self.offsets),
                     ("freqs", self.freqs), ("norm_mean", self.mean), ("norm_std", self.std),
                     ("loss", self.loss)):
            g.create_dataset(k, data=a)
        if self.whiten is not None:
            g.create_dataset("norm_whiten", data=self.whiten)
            g.create_dataset("norm_unwhiten", data=self.unwhiten)
        return g

    def write(self, path, prov=None):
        """Write a model file at ``path`` via ``path.partial`` + rename (refuses to overwrite)."""
        import h5py

        from .store import check_out_path, write_attrs

        path = check_out_path(path)
        partial = path + ".partial"
        try:
            with h5py.File(partial, "w") as f:
                self.save(f)
                if prov:
                    write_attrs(f.create_group("provenance"), prov)
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Read a model file (or any HDF5 file with a ``/model`` group of this layout)."""
        from .store import open_h5

        path = os.fspath(path)
        with open_h5(path, "model file") as f:
            if "model" not in f or not hasattr(f["model"], "keys"):
                raise InputError(f"model file {path} has no /model group; is it a model "
                                 "written by nonequil train?")
            g = f["model"]
            kind = g.attrs.get("kind", b"")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind != KIND:
                raise InputError(f"model file {path}: /model is of kind {kind!r}, expected "
                                 f"{KIND!r}")
            try:
                cfg = ModelConfig.from_dict(json.loads(_s(g.attrs["config"])))
                tcfg = json.loads(_s(g.attrs.get("train_config", "{}")))
                arr = {k: g[k][()] for k in ("weights", "ema", "adam_m", "adam_v",
                                              "norm_mean", "norm_std", "loss")}
                shape = tuple(int(n) for n in g.attrs["data_shape"])
                step = int(g.attrs["step"])
                wn = float(g.attrs.get("weight_norm", 1.0))
                enc = _s(g.attrs.get("data_encoding", "")) or None
                wh = (g["norm_whiten"][()], g["norm_unwhiten"][()]) if "norm_whiten" in g \
                    else (None, None)
                form = int(g.attrs.get("gaussian_term_form", 1))
            except (KeyError, ValueError, OSError) as e:
                raise InputError(f"model file {path}: /model is incomplete or corrupt ({e})") \
                    from None
        if cfg.gaussian_term and cfg.parametrisation in ("x0", "v") and \
                form != GAUSSIAN_TERM_FORM:
            raise InputError(f"model file {path} was trained with gaussian_term and the "
                             f"{cfg.parametrisation} parametrisation before the Gaussian "
                             "term's fix (its network learned y/m, not the correction); "
                             "retrain it with this version")
        return cls(cfg, shape, arr["norm_mean"], arr["norm_std"], arr["weights"],
                   ema=arr["ema"], adam_m=arr["adam_m"], adam_v=arr["adam_v"], step=step,
                   loss=arr["loss"], train_config=tcfg, weight_norm=wn, data_encoding=enc,
                   whiten=wh[0], unwhiten=wh[1])

    def __repr__(self):
        c = self.config
        return (f"MLPScoreModel(process={c.process}, dim={self.dim}, sizes={self.sizes}, "
                f"act={c.activation}, param={c.parametrisation}, dtype={c.dtype}, "
                f"step={self.step})")


class ShardedNet:
    """Forward-with-cache and backward passes of a batch split into fixed row shards.

    A batch of B rows is cut into ``ceil(B / SHARD_ROWS)`` shards of consecutive rows (the
    cut depends on B only).  Each shard runs ``kernels.mlp_cpu.mlp_forward_cache_into`` /
    ``mlp_backward_into`` with single-threaded BLAS; ``threads`` Python threads run the shards
    concurrently (the kernels release the GIL), and the shard gradients are summed in shard
    order.  So the result does not depend on ``threads`` (bit for bit), and the two cores
    work through whole shards -- activations included -- with two synchronisations per
    training step instead of one per matrix product (OpenBLAS's own threads were measured
    7-23x slower than one thread on a loaded 2-core machine; see ``DEFAULT_BLAS_THREADS``).
    One shard (B <= SHARD_ROWS) is exactly the unsharded computation.

    ``X``, ``out``, ``dY`` and ``dX`` are the caller's full-batch arrays [B, .]; ``grad`` the
    flat gradient.  The caller limits the BLAS to one thread (``blas_threads``).
    """

    def __init__(self, model, batch, threads):
        from kernels import mlp_cpu

        self.model = model
        self.B = int(batch)
        n = max(1, -(-self.B // SHARD_ROWS))
        edges = [self.B * i // n for i in range(n + 1)]
        self.bounds = [(edges[i], edges[i + 1]) for i in range(n)]
        dt = model.np_dtype
        self.caches = [np.empty(mlp_cpu.cache_size(model.offsets, b - a), dt)
                       for a, b in self.bounds]
        self.grads = [None] + [np.empty(model.n_params, dt) for _ in self.bounds[1:]]
        self.threads = max(1, min(int(threads), n))
        self.pool = None
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nonequil-shard")

    @property
    def blas_threads(self):
        """BLAS threads to use around the passes: 1 when sharded, else ``threads``."""
        return 1 if len(self.bounds) > 1 else self.threads

    def _map(self, fn):
        if self.pool is None:
            for i in range(len(self.bounds)):
                fn(i)
        else:
            list(self.pool.map(fn, range(len(self.bounds))))

    def forward_cache(self, X, out):
        from kernels import mlp_cpu

        m = self.model

        def one(i):
            a, b = self.bounds[i]
            mlp_cpu.mlp_forward_cache_into(m.theta, m.offsets, m.act, X[a:b], self.caches[i],
                                           out[a:b])
        self._map(one)

    def backward(self, dY, grad, dX):
        from kernels import mlp_cpu

        m = self.model

        def one(i):
            a, b = self.bounds[i]
            g = grad if i == 0 else self.grads[i]
            mlp_cpu.mlp_backward_into(m.theta, m.offsets, m.act, self.caches[i], dY[a:b], g,
                                      dX[a:b])
        self._map(one)
        for g in self.grads[1:]:
            grad += g

    def forward_backward(self, X, out, dY, grad, dX, shard_loss):
        """Forward, then ``part = shard_loss(a, b)`` (which must fill dY[a:b] from out[a:b]),
        then backward, each shard in one task: one synchronisation instead of two.  Returns
        the list of parts in shard order; grad is the shard gradients summed in order."""
        from kernels import mlp_cpu

        m = self.model
        parts = [0.0] * len(self.bounds)

        def one(i):
            a, b = self.bounds[i]
            mlp_cpu.mlp_forward_cache_into(m.theta, m.offsets, m.act, X[a:b], self.caches[i],
                                           out[a:b])
            parts[i] = shard_loss(a, b)
            mlp_cpu.mlp_backward_into(m.theta, m.offsets, m.act, self.caches[i], dY[a:b],
                                      grad if i == 0 else self.grads[i], dX[a:b])
        self._map(one)
        for g in self.grads[1:]:
            grad += g
        return parts

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def cpu_threads():
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load(path):
    """``MLPScoreModel.load(path)``."""
    return MLPScoreModel.load(path)
