"""The lanes kernels against per-walker references, bit for bit.

* ``mb_lanes`` (Muller-Brown) against ``langevin_run``: a faster schedule of the same
  arithmetic (same Philox normals, same floating-point expressions), so every output must agree
  bit for bit with the per-walker kernel, for unaligned walker offsets, partial lane blocks,
  chunked steps and blow-ups.
* ``ou_lanes`` (and its noise block ``ou_noise``) against a NumPy loop over the normal stream
  ``normal_j`` (through ``kernels.streams.normals``): unaligned walker offsets and chunk
  boundaries (j not a multiple of OU_GROUP), D = 1..3, recorded frames, per-step coefficients,
  float32, and stream elements whose pair index crosses 2**32.
"""
import numpy as np
import pytest

from kernels import langevin_cpu as K

DT, KT, GAMMA, SC = 1e-4, 1.0, 1.0, 0.1


def _arrays(M, R, seed=11):
    """Start points spread over the Muller-Brown region (a fixed grid, no RNG)."""
    t = np.arange(M)
    x = np.stack([-1.2 + 2.0 * ((t * 0.618034) % 1.0), -0.3 + 2.1 * ((t * 0.414214) % 1.0)],
                 axis=1)
    st = dict(x=x, work=np.zeros(M), heat=np.linspace(0.0, 1.0, M), fpt=np.full(M, np.nan),
              blow=np.full(M, -1, dtype=np.int64))
    rec = dict(rec_x=np.zeros((R, M, 2)), rec_e=np.zeros((R, M)), rec_w=np.zeros((R, M)),
               rec_q=np.zeros((R, M)), rec_f=np.zeros((R, M)))
    return st, rec


def _old(seed, fw, s0, n, dt, st, rec, steps, total):
    p = np.array([SC])
    K.langevin_run(0, 2, 2, np.uint64(seed), fw, s0, n, total, dt, KT, GAMMA, 1.0, p, p, False,
                   st["x"], np.zeros((1, 1)), st["work"], st["heat"], st["fpt"], -1, 1.0, 0.0,
                   steps, rec["rec_x"], np.empty((1, 1, 1)), rec["rec_e"], rec["rec_w"],
                   rec["rec_q"], rec["rec_f"], st["blow"])


def _new(seed, fw, s0, n, dt, st, rec, steps, total):
    K.mb_lanes(np.uint64(seed), fw, s0, n, dt, KT, GAMMA, SC, st["x"], st["work"], st["heat"],
               st["fpt"], steps, rec["rec_x"], rec["rec_e"], rec["rec_w"], rec["rec_q"],
               rec["rec_f"], st["blow"])


@pytest.mark.parametrize("fw, M", [(0, 64), (5, 41), (2**33 + 3, 7)])
def test_mb_lanes_equals_langevin_run_bitwise(fw, M):
    chunks = [(0, 13), (13, 1), (14, 37)]
    outs = []
    for fn in (_old, _new):
        st, _ = _arrays(M, 0)
        recs = []
        for s0, n in chunks:
            steps = np.arange(s0 + 1, s0 + n + 1, 4, dtype=np.int64)
            _, rec = _arrays(M, len(steps))
            fn(2024, fw, s0, n, DT, st, rec, steps, 51)
            recs.append(rec)
        outs.append((st, recs))
    (so, ro), (sn, rn) = outs
    for k in so:
        assert np.array_equal(so[k], sn[k], equal_nan=True), k
    for a, b in zip(ro, rn):
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=True), k
    # the walkers moved and the heat changed: the comparison is not vacuous
    assert not np.array_equal(sn["x"], _arrays(M, 0)[0]["x"])


def test_mb_lanes_reports_the_same_blow_up_step():
    M = 40
    res = []
    for fn in (_old, _new):
        st, rec = _arrays(M, 1)
        st["x"][3] = [3.0, 3.0]           # far out: U ~ exp(+), the step explodes
        st["x"][17] = [-2.5, 2.5]
        fn(7, 0, 0, 20, 5e-2, st, rec, np.array([20], dtype=np.int64), 20)
        res.append(st)
    assert np.array_equal(res[0]["blow"], res[1]["blow"])
    assert (res[1]["blow"] >= 0).sum() >= 1
    ok = res[1]["blow"] < 0
    assert np.array_equal(res[0]["x"][ok], res[1]["x"][ok])


def test_simulate_routes_muller_brown_em_to_lanes(monkeypatch):
    from nonequil.simulate import simulate

    ref = simulate(process="langevin", potential="muller-brown", walkers=37, steps=30,
                   record_every=7, seed=5, x0=[-0.5, 1.4], first_walker=3, dt=1e-3)

    def refuse(*a, **k):
        raise AssertionError("langevin_run used for Muller-Brown EM")
    monkeypatch.setattr(K, "langevin_run", refuse)
    r = simulate(process="langevin", potential="muller-brown", walkers=37, steps=30,
                 record_every=7, seed=5, x0=[-0.5, 1.4], first_walker=3, dt=1e-3)
    for k in ref.frames:
        assert np.array_equal(ref.frames[k], r.frames[k], equal_nan=True), k
    assert set(r.frames) >= {"position", "energy", "heat"}


def test_exp_poly_within_one_ulp_of_libm_and_same_in_python():
    """exp_poly (Muller-Brown's exp) against math.exp over the whole float64 range it is
    used on, special values, and the pure-Python body the CUDA build compiles (math.ldexp
    in place of the CPU's exponent-bit construction)."""
    import math

    from numba import njit

    from kernels import potentials as P
    from kernels._target import _REGISTRY

    @njit
    def ev(a, o):
        for i in range(a.shape[0]):
            o[i] = P.exp_poly(a[i])

    x = np.concatenate([np.linspace(-746.0, 710.0, 100_001), np.linspace(-40.0, 5.0, 100_001),
                        [0.0, -0.0, 709.78, 709.79, -708.3, -745.1, -745.2, 1e-300]])
    got = np.empty_like(x)
    ev(x, got)
    ref = np.array([math.exp(t) if t <= 709.782712893384 else math.inf for t in x])
    normal = np.isfinite(ref) & (ref >= 2.0 ** -1022)
    ulp = np.abs(got[normal] - ref[normal]) / np.spacing(ref[normal])
    assert ulp.max() <= 1.0, ulp.max()
    assert (ulp == 0).mean() > 0.8            # mostly correctly rounded
    sub = np.isfinite(ref) & ~normal
    assert np.all(np.abs(got[sub] - ref[sub]) <= 2.0 ** -1074)
    special = np.array([np.inf, -np.inf, np.nan, 800.0, -800.0])
    out = np.empty(5)
    ev(special, out)
    assert out[0] == np.inf and out[1] == 0.0 and np.isnan(out[2])
    assert out[3] == np.inf and out[4] == 0.0
    # the Python source (what numba.cuda and the simulator compile) gives the same bits
    py = P.exp_poly.py_func.__globals__.copy()
    py["pow2"] = _REGISTRY["pow2"]            # the math.ldexp body (what the GPU compiles)
    fn = type(P.exp_poly.py_func)(P.exp_poly.py_func.__code__, py)
    for i in range(0, x.size, 211):
        assert fn(float(x[i])) == got[i], x[i]


def test_muller_brown_version_is_recorded_and_an_old_checkpoint_refused(tmp_path):
    """The potentials version is in /parameters and in the checkpoint identity, so that a
    checkpoint written with libm exp (version 1) is not continued with exp_poly."""
    import h5py

    from kernels.potentials import POTENTIALS_VERSION
    from nonequil.errors import InputError
    from nonequil.simulate import SimulationConfig, simulate
    from nonequil.store import read_checkpoint, write_checkpoint

    kw = dict(process="langevin", potential="muller-brown", walkers=8, steps=20, dt=1e-3,
              x0=[-0.5, 1.4], record_every=5)
    assert SimulationConfig(**kw).identity()["potentials"] == POTENTIALS_VERSION
    assert "potentials" not in SimulationConfig(process="ou").identity()
    out = tmp_path / "mb.h5"
    simulate(**kw, out=out)
    with h5py.File(out) as f:
        assert f["parameters"].attrs["potentials_version"] == POTENTIALS_VERSION
    # an interrupted run of version 1: its checkpoint names potentials = 1
    out2 = tmp_path / "mb2.h5"
    calls = []

    def stop(info):
        calls.append(info)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        simulate(**kw, out=out2, callback=stop, max_chunk_steps=5)
    ckpt = str(out2) + ".partial.ckpt"
    meta, arrs = read_checkpoint(ckpt)
    meta["config"]["potentials"] = 1
    write_checkpoint(ckpt, meta, arrs)
    with pytest.raises(InputError, match="differing fields: potentials.*without --resume"):
        simulate(**kw, out=out2, resume=True)


# ---------------------------------------------------------------- ou_lanes
def _ou_reference(seed, fw, s0, n, A, B, C, x, rec_steps):
    """x_{m+1} = A x_m + B + C z_m in NumPy, z from ``streams.normals`` (element m D + d)."""
    from kernels import streams

    M, D = x.shape
    z = np.empty((M, n * D))
    streams.normals(np.uint64(seed), np.uint64(1), fw, s0 * D, z)
    z = z.reshape(M, n, D)
    x = x.copy()
    frames = []
    for m in range(n):
        k = m if A.shape[0] > 1 else 0
        x = (A[k] * x + B[k] + C[k] * z[:, m]).astype(x.dtype)
        if s0 + m + 1 in rec_steps:
            frames.append(x.copy())
    return x, frames


@pytest.mark.parametrize("fw, M, D, dtype, per_step", [
    (0, 5, 1, np.float64, False),
    (K.OU_LANES - 3, 9, 1, np.float64, True),     # a block boundary inside the ensemble
    (17, 26, 2, np.float64, False),
    (2**33 + 5, 7, 3, np.float32, True),          # walker counter word wraps (2**33 & MASK)
    (3, 11, 1, np.float32, False),
])
def test_ou_lanes_equals_numpy_reference_bitwise(fw, M, D, dtype, per_step):
    seed = 77
    x0 = (np.arange(M * D).reshape(M, D) * 0.37 - 1.0).astype(dtype)
    chunks = [(0, 3), (3, 1), (4, 11), (15, 10)]     # starts at j = 3 D, 4 D, 15 D: unaligned
    nall = 25
    if per_step:
        t = np.arange(nall)
        Aall, Ball, Call = 0.9 + 0.001 * t, 0.05 * np.sin(t), 0.3 + 0.01 * t
    else:
        Aall, Ball, Call = np.array([0.93]), np.array([0.07]), np.array([0.4])
    Aall, Ball, Call = (a.astype(dtype) for a in (Aall, Ball, Call))
    x = x0.copy()
    for s0, n in chunks:
        sl = slice(s0, s0 + n) if per_step else slice(0, 1)
        A, B, C = Aall[sl], Ball[sl], Call[sl]
        rec_steps = np.arange(s0 + 1, s0 + n + 1, 2, dtype=np.int64)
        rec_x = np.zeros((len(rec_steps), M, D), dtype=dtype)
        want, frames = _ou_reference(seed, fw, s0, n, A, B, C, x, set(rec_steps.tolist()))
        K.ou_lanes(np.uint64(seed), fw, s0, n, A, B, C, x, rec_steps, rec_x)
        assert x.dtype == dtype
        assert np.array_equal(x, want), (s0, n)
        assert len(frames) == len(rec_steps)
        for r, f in enumerate(frames):
            assert np.array_equal(rec_x[r], f), (s0, r)
    assert not np.array_equal(x, x0)                  # the walkers moved


def test_ou_lanes_pair_index_crossing_two_to_the_32():
    """Stream elements j around 2**33 (pair index q = j >> 1 around 2**32: the block word)."""
    M, D, n = 6, 1, 20
    s0 = 2**33 - 9                                    # j = s0 .. s0 + 19 crosses 2**33
    A, B, C = np.array([0.95]), np.array([0.01]), np.array([0.5])
    x = np.linspace(-1, 1, M).reshape(M, D)
    want, _ = _ou_reference(5, 40, s0, n, A, B, C, x, set())
    K.ou_lanes(np.uint64(5), 40, s0, n, A, B, C, x, np.empty(0, dtype=np.int64),
               np.empty((0, M, D)))
    assert np.array_equal(x, want)


def test_ou_noise_block_is_the_normal_stream():
    from kernels import streams

    base, q0 = 3 * K.OU_LANES, 2**32 - 2 * K.OU_PAIRS   # the last block before q wraps
    buf = np.empty((K.OU_GROUP, K.OU_LANES))
    K.ou_noise(np.uint64(2**40 + 9), base, np.uint64(q0), buf)
    want = np.empty((K.OU_LANES, K.OU_GROUP))
    streams.normals(np.uint64(2**40 + 9), np.uint64(1), base, 2 * q0, want)
    assert np.array_equal(buf, want.T)
