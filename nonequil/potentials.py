"""Built-in potentials: names, ``--set`` keys, defaults, formulas and parameter packing.

The formulas are evaluated by ``kernels.potentials.energy_grad`` (shared by CPU and GPU);
this module validates parameters and packs them into the float64 vector the kernels read.
Energies are in units of kT (kT itself is a process parameter).

========================  =====================================================  ============
name                      U(x)                                                   keys
========================  =====================================================  ============
harmonic                  k/2 [(x_0 - center)^2 + sum_{d>0} x_d^2]               k, center
double-well               a (x_0^2 - 1)^2 + b x_0 + k_perp/2 sum_{d>0} x_d^2    a, b, k_perp
muller-brown              scale * sum_{i=1..4} A_i exp(a_i X^2 + b_i X Y +       scale
                          c_i Y^2), X = x-x0_i, Y = y-y0_i  (D = 2)
gaussian-mixture          -kT log sum_c w_c N(x; m_c, s_c^2 I)                   weights,
                                                                                 means, sigmas
========================  =====================================================  ============

Müller–Brown uses the standard parameters (Müller & Brown 1979): A = (-200, -100, -170, 15),
a = (-1, -1, -6.5, 0.7), b = (0, 0, 11, 0.6), c = (-10, -10, -6.5, 0.7),
x0 = (1, 0, -0.5, -1), y0 = (0, 0.5, 1.5, 1).  The unscaled Hessian reaches about 4100, so
the default ``scale = 0.1`` keeps Euler-Maruyama stable at dt = 1e-4 with gamma = 1.

Gaussian mixture: ``weights`` (K values, normalised), ``sigmas`` (K isotropic standard
deviations) and ``means`` (K values placed on the first coordinate, or K*D values row-major).

Scalar keys may follow a linear protocol ``start:end`` over the run; list keys may not.

A user potential: pass ``potential=my_energy_grad`` to ``nonequil.simulate`` with a
``numba.njit`` function ``my_energy_grad(x, p, g) -> U`` that writes grad U into ``g`` and
returns U; ``p`` is the float64 vector given as ``potential_params``.  It runs on the CPU.
"""
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Potential:
    name: str
    pid: int
    keys: tuple
    defaults: dict
    formula: str
    dim: int = 0                  # required dimension (0: any)
    list_keys: tuple = field(default_factory=tuple)


POTENTIALS = {
    "harmonic": Potential("harmonic", 0, ("k", "center"), {"k": 1.0, "center": 0.0},
                          "k/2 [(x_0 - center)^2 + sum_{d>0} x_d^2]"),
    "double-well": Potential("double-well", 1, ("a", "b", "k_perp"),
                             {"a": 1.0, "b": 0.0, "k_perp": 1.0},
                             "a (x_0^2 - 1)^2 + b x_0 + k_perp/2 sum_{d>0} x_d^2"),
    "muller-brown": Potential("muller-brown", 2, ("scale",), {"scale": 0.1},
                              "scale * sum_i A_i exp(a_i X^2 + b_i X Y + c_i Y^2)", dim=2),
    "gaussian-mixture": Potential("gaussian-mixture", 3, ("weights", "means", "sigmas"),
                                  {"weights": (0.5, 0.5), "means": (-1.0, 1.0),
                                   "sigmas": (0.5, 0.5)},
                                  "-kT log sum_c w_c N(x; m_c, s_c^2 I)",
                                  list_keys=("weights", "means", "sigmas")),
}


def get(name):
    try:
        return POTENTIALS[name]
    except KeyError:
        raise InputError(f"unknown potential {name!r}; valid: {', '.join(POTENTIALS)}") from None


def _as_list(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return [float(t) for t in v]
    return [float(v)]


def pack(name, values, D, kT):
    """Packed (p_start, p_end) float64 vectors for potential ``name`` in dimension D.

    ``values`` maps keys to a number, a (start, end) protocol pair, or (list keys) a list.
    """
    pot = get(name)
    if pot.dim and D != pot.dim:
        raise InputError(f"potential {name!r} is {pot.dim}-dimensional, got dimension {D}; "
                         f"give --x0 with {pot.dim} values")
    if pot.name == "gaussian-mixture":
        w = np.array(_as_list(values["weights"]))
        s = np.array(_as_list(values["sigmas"]))
        m = np.array(_as_list(values["means"]))
        K = len(w)
        if len(s) != K:
            raise InputError(f"gaussian-mixture: {K} weights but {len(s)} sigmas")
        if np.any(w <= 0) or np.any(s <= 0):
            raise InputError("gaussian-mixture: weights and sigmas must be > 0")
        if len(m) == K:
            mm = np.zeros((K, D))
            mm[:, 0] = m
        elif len(m) == K * D:
            mm = m.reshape(K, D)
        else:
            raise InputError(f"gaussian-mixture: means needs {K} (first coordinate) or "
                             f"{K * D} (K x D) values, got {len(m)}")
        p = np.concatenate([[kT, K], w / w.sum(), mm.ravel(), s]).astype(np.float64)
        return p, p.copy()
    p0 = np.empty(len(pot.keys))
    p1 = np.empty(len(pot.keys))
    for j, k in enumerate(pot.keys):
        v = values[k]
        if isinstance(v, tuple):
            p0[j], p1[j] = v
        else:
            p0[j] = p1[j] = v
    return p0, p1


def numpy_energy(name, values, x, kT=1.0):
    """U(x) for x[..., D] evaluated in NumPy (for tests, quadrature and Boltzmann draws)."""
    from kernels import potentials as kp

    pot = get(name)
    x = np.asarray(x, dtype=np.float64)
    v = {k: (values[k][0] if isinstance(values[k], tuple) else values[k]) for k in pot.keys}
    if pot.name == "harmonic":
        y = x.copy()
        y[..., 0] -= v["center"]
        return 0.5 * v["k"] * np.sum(y * y, axis=-1)
    if pot.name == "double-well":
        x0 = x[..., 0]
        return (v["a"] * (x0 * x0 - 1.0) ** 2 + v["b"] * x0
                + 0.5 * v["k_perp"] * np.sum(x[..., 1:] ** 2, axis=-1))
    if pot.name == "muller-brown":
        X = x[..., 0, None] - kp.MB_X0
        Y = x[..., 1, None] - kp.MB_Y0
        e = kp.MB_A * np.exp(kp.MB_a * X * X + kp.MB_b * X * Y + kp.MB_c * Y * Y)
        return v["scale"] * e.sum(axis=-1)
    D = x.shape[-1]
    p, _ = pack(name, values, D, kT)
    K = int(p[1])
    w = p[2:2 + K]
    m = p[2 + K:2 + K + K * D].reshape(K, D)
    s = p[2 + K + K * D:]
    r2 = np.sum((x[..., None, :] - m) ** 2, axis=-1)
    lc = np.log(w) - 0.5 * r2 / s**2 - D * (np.log(s) + 0.5 * np.log(2 * np.pi))
    from scipy.special import logsumexp

    return -kT * logsumexp(lc, axis=-1)
