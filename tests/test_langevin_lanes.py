"""The Muller-Brown lanes kernel (``kernels.langevin_cpu.mb_lanes``) against ``langevin_run``.

The lanes kernel is a faster schedule of the same arithmetic (same Philox normals, same
floating-point expressions), so every output must agree bit for bit with the per-walker
kernel, for unaligned walker offsets, partial lane blocks, chunked steps and blow-ups.
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
