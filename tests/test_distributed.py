"""Sharded ensembles on Dask distributed (issue 10): a ``LocalCluster`` of 2 worker processes
on loopback.

- sharded equals unsharded, bit for bit, for 1, 2 and 3 shards (every dataset, dtype and
  parameter of the H5MD file), through HDF5 virtual datasets with relative source paths;
- the directory can be moved; ``inspect`` lists the shards and flags a missing one;
- resume per shard: a finished shard is kept, a partial one resumed, a missing one run;
- a worker killed mid-shard: Dask retries the task, which resumes the partial shard file,
  and the assembled file is still bitwise identical;
- bad input (``--cluster``, ``--shards``, no Dask) ends with one ``error:`` line and no file.
"""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("distributed")

from nonequil import cli  # noqa: E402
from nonequil import distributed as dist  # noqa: E402
from nonequil.errors import InputError  # noqa: E402
from nonequil.simulate import SimulationConfig, simulate  # noqa: E402

CLI = [sys.executable, "-m", "nonequil.cli"]

RUNS = {
    # every observable (energy, work, heat, first-passage time), a protocol, 2-D
    "dw-protocol-absorb": dict(process="langevin", potential="double-well",
                               params={"b": (0.0, 1.0), "k_perp": 2.0}, dt=2e-3,
                               x0=[-1.0, 0.3], absorb="x[0]>=1.2"),
    # velocities, Boltzmann-free start, initial velocities from the walker's own stream
    "underdamped-mb": dict(process="underdamped", potential="muller-brown", dt=1e-3,
                           x0=[-0.5, 1.4], params={"kT": 5.0}),
    # the lane kernel (walkers in lanes of 16), float32, exact Boltzmann start
    "ou-f32-boltzmann": dict(process="ou", method="em", params={"theta": 1.3}, dt=0.05,
                             precision="float32", x0="boltzmann"),
}


@pytest.fixture(scope="module")
def client():
    with dist.connect(cluster=2) as c:
        yield c


def _dump(path):
    """Every dataset (outside /shards) and every attribute of /parameters and the H5MD groups."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if name.startswith("shards") or name.startswith("provenance"):
                return
            if hasattr(obj, "shape"):
                out[name] = obj[()]
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = v
        f.visititems(visit)
    return out


def _assert_same(ref, got):
    assert sorted(got) == sorted(ref)
    for k in ref:
        a, b = np.asarray(ref[k]), np.asarray(got[k])
        assert a.dtype == b.dtype and a.shape == b.shape, k
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), k
        else:
            assert np.array_equal(a, b), k


@pytest.mark.parametrize("name", sorted(RUNS))
def test_sharded_equals_single_process_bitwise(client, tmp_path, name):
    cfg = SimulationConfig(**RUNS[name], walkers=37, first_walker=5, steps=60, seed=99,
                           record_every=7)
    simulate(cfg, out=tmp_path / "ref.h5")
    ref = _dump(tmp_path / "ref.h5")
    assert "particles/ensemble/position/value" in ref
    for K in (1, 2, 3):
        out = tmp_path / f"k{K}" / "out.h5"
        out.parent.mkdir()
        res = dist.simulate_sharded(cfg, out, client, shards=K, chunk={"max_chunk_steps": 13})
        assert [r["status"] for r in res] == ["ran"] * K
        assert sorted(os.listdir(out.parent)) == sorted(
            ["out.h5"] + [os.path.basename(dist.shard_path(out, i, K)) for i in range(K)])
        _assert_same(ref, _dump(out))
        with h5py.File(out, "r") as f:
            assert f["particles/ensemble/position/value"].is_virtual
            assert list(f["shards/walkers"][()]) == [n for _, n in dist.shard_ranges(5, 37, K)]
            for src in f["particles/ensemble/position/value"].virtual_sources():
                assert not os.path.isabs(src.file_name), src.file_name


def test_moved_directory_reads_and_inspect_lists_shards(client, tmp_path, capsys, monkeypatch):
    cfg = SimulationConfig(process="ou", walkers=23, steps=20, dt=0.1, seed=3)
    ref = simulate(cfg).frames["position"]
    (tmp_path / "a").mkdir()
    dist.simulate_sharded(cfg, tmp_path / "a" / "ens.h5", client, shards=2)
    shutil.move(tmp_path / "a", tmp_path / "b")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    moved = os.path.join("..", "b", "ens.h5")
    with h5py.File(moved, "r") as f:
        assert np.array_equal(f["particles/ensemble/position/value"][()], ref)
    assert cli.main(["inspect", moved]) == 0
    text = capsys.readouterr().out
    assert "shards: 2 H5MD shard files" in text
    assert "ens.shard000-of002.h5  walkers 0..10 (11)  ok" in text
    assert "ens.shard001-of002.h5  walkers 11..22 (12)  ok" in text
    os.remove(os.path.join("..", "b", "ens.shard001-of002.h5"))
    assert cli.main(["inspect", moved]) == 0
    text = capsys.readouterr().out
    assert "MISSING" in text and "1 shard file(s) missing" in text


def test_resume_per_shard(client, tmp_path):
    """Shard 0 finished (kept, not rewritten), shard 1 cut off (resumed), shard 2 missing."""
    cfg = SimulationConfig(**RUNS["dw-protocol-absorb"], walkers=30, steps=80, seed=4,
                           record_every=5)
    simulate(cfg, out=tmp_path / "ref.h5")
    out = tmp_path / "run" / "out.h5"
    out.parent.mkdir()
    (lo0, n0), (lo1, n1), _ = dist.shard_ranges(0, 30, 3)
    p0, p1 = dist.shard_path(out, 0, 3), dist.shard_path(out, 1, 3)
    simulate(dataclasses.replace(cfg, first_walker=lo0, walkers=n0), out=p0)
    mtime = os.stat(p0).st_mtime_ns

    def stop(info):
        if info["step"] >= 30:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        simulate(dataclasses.replace(cfg, first_walker=lo1, walkers=n1), out=p1,
                 max_chunk_steps=10, callback=stop)
    assert os.path.exists(p1 + ".partial.ckpt") and not os.path.exists(p1)

    with pytest.raises(InputError, match="give --resume"):
        dist.simulate_sharded(cfg, out, client, shards=3)
    res = dist.simulate_sharded(cfg, out, client, shards=3, resume=True)
    assert [r["status"] for r in res] == ["kept", "resumed", "ran"]
    assert os.stat(p0).st_mtime_ns == mtime
    _assert_same(_dump(tmp_path / "ref.h5"), _dump(out))
    with pytest.raises(InputError, match="already complete"):
        dist.simulate_sharded(cfg, out, client, shards=3, resume=True)

    # a finished shard written with other arguments is refused, naming the field
    os.remove(out)
    with pytest.raises(InputError, match=r"differing fields: seed"):
        dist.simulate_sharded(dataclasses.replace(cfg, seed=5), out, client, shards=3,
                              resume=True)
    assert not os.path.exists(out)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    assert cli.main(["dataset", "double-well", "--n", "400", "--out", str(d / "data.h5"),
                     "--quiet"]) == 0
    assert cli.main(["train", str(d / "data.h5"), "--steps", "40", "--set", "width=16",
                     "--set", "depth=2", "--batch", "32", "--threads", "1", "--out",
                     str(d / "model.h5"), "--quiet"]) == 0
    return d / "model.h5"


def test_sharded_sample_equals_single_process_bitwise(client, model, tmp_path):
    """Samples and reverse trajectories; then resume: finished shards kept, a missing one run."""
    args = [str(model), "--n", "45", "--steps", "20", "--sampler", "em", "--record-every",
            "5", "--seed", "3", "--first-sample", "7"]
    assert cli.main(["sample"] + args + ["--out", str(tmp_path / "ref.h5"), "--quiet"]) == 0
    ref = _dump(tmp_path / "ref.h5")
    assert ref["samples"].shape == (45,) and "particles/ensemble/position/value" in ref
    for K in (2, 3):
        out = tmp_path / f"s{K}.h5"
        res = dist.sample_sharded(args, out, client, shards=K)
        assert [r["status"] for r in res] == ["ran"] * K
        _assert_same(ref, _dump(out))
    os.remove(tmp_path / "s3.h5")
    os.remove(dist.shard_path(tmp_path / "s3.h5", 1, 3))
    with pytest.raises(InputError, match="give --resume"):
        dist.sample_sharded(args, tmp_path / "s3.h5", client, shards=3)
    res = dist.sample_sharded(args, tmp_path / "s3.h5", client, shards=3, resume=True)
    assert [r["status"] for r in res] == ["kept", "ran", "kept"]
    _assert_same(ref, _dump(tmp_path / "s3.h5"))
    # a kept shard is checked on every argument (here --steps), not only n and the seed
    os.remove(tmp_path / "s3.h5")
    os.remove(dist.shard_path(tmp_path / "s3.h5", 1, 3))
    other = [t if t != "20" else "21" for t in args]
    with pytest.raises(InputError, match="differs in the sample arguments"):
        dist.sample_sharded(other, tmp_path / "s3.h5", client, shards=3, resume=True)
    assert not os.path.exists(tmp_path / "s3.h5")
    with pytest.raises(InputError, match="--log-weights is not supported"):
        dist.sample_sharded(args + ["--log-weights"], tmp_path / "lw.h5", client)


def test_cli_sample_scheduler_equals_single_process(client, model, tmp_path, capsys):
    """``nonequil sample ... --scheduler ADDR --shards 2`` through the CLI: the sharding flags
    are stripped from the arguments each shard re-runs, and the file equals one process."""
    args = ["sample", str(model), "--n", "30", "--steps", "10", "--sampler", "em", "--seed",
            "4", "--quiet"]
    assert cli.main(args + ["--out", str(tmp_path / "ref.h5")]) == 0
    assert cli.main(args + ["--scheduler", client.scheduler.address, "--shards", "2",
                            "--out", str(tmp_path / "sh.h5")]) == 0
    _assert_same(_dump(tmp_path / "ref.h5"), _dump(tmp_path / "sh.h5"))
    assert cli.main(args + ["--shards", "2", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--shards needs --cluster" in _one_error_line(capsys.readouterr().err)
    assert cli.main(args + ["--resume", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--resume applies to sharded runs" in _one_error_line(capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "x.h5")


def test_cli_sample_second_writer_is_refused(model, tmp_path, capsys):
    """A second ``sample`` to the same --out while the first holds its lock gets one error
    line, and the first writer's partial file is left alone."""
    from nonequil.store import OutputLock

    out = tmp_path / "s.h5"
    held = OutputLock(str(out) + ".partial.lock", str(out))
    (tmp_path / "s.h5.partial").write_bytes(b"first writer's data")
    try:
        rc = cli.main(["sample", str(model), "--n", "5", "--steps", "5", "--out", str(out),
                       "--quiet"])
    finally:
        held.release()
    assert rc == 2
    assert "another process is writing" in _one_error_line(capsys.readouterr().err)
    assert (tmp_path / "s.h5.partial").read_bytes() == b"first writer's data"
    assert not out.exists()


# ------------------------------------------------------------------ command line
def _nonequil(*args, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def _one_error_line(stderr):
    assert "Traceback" not in stderr, stderr
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_cli_cluster_run_equals_single_process(tmp_path):
    args = ["simulate", "--process", "underdamped", "--potential", "double-well", "--x0",
            "-1,0.5", "--walkers", "41", "--steps", "50", "--dt", "0.01", "--seed", "8",
            "--record-every", "5", "--quiet"]
    r = _nonequil(*args, "--out", tmp_path / "ref.h5")
    assert r.returncode == 0, r.stderr
    r = _nonequil(*args, "--cluster", "local:2", "--shards", "3", "--out", tmp_path / "sh.h5")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    _assert_same(_dump(tmp_path / "ref.h5"), _dump(tmp_path / "sh.h5"))
    r = _nonequil("inspect", tmp_path / "sh.h5")
    assert r.returncode == 0, r.stderr
    assert "shards: 3 H5MD shard files" in r.stdout and "walkers 27..40 (14)  ok" in r.stdout


def test_cli_scheduler_address_runs_on_that_cluster(client, tmp_path):
    args = ["simulate", "--process", "ou", "--x0", "-0.5,1.5", "--walkers", "29", "--steps",
            "30", "--dt", "0.05", "--seed", "6", "--quiet"]
    assert cli.main(args + ["--out", str(tmp_path / "ref.h5")]) == 0
    assert cli.main(args + ["--scheduler", client.scheduler.address, "--shards", "3", "--out",
                            str(tmp_path / "sh.h5")]) == 0
    _assert_same(_dump(tmp_path / "ref.h5"), _dump(tmp_path / "sh.h5"))
    with h5py.File(tmp_path / "sh.h5", "r") as f:
        assert f["provenance"].attrs["cluster"] == client.scheduler.address
        assert f["provenance"].attrs["shards"] == 3


@pytest.mark.parametrize("extra,fragment", [
    (["--cluster", "local:0"], "expected local:N with N >= 1"),
    (["--cluster", "lokal:2"], "expected local:N with N >= 1"),
    (["--shards", "2"], "--shards needs --cluster local:N or --scheduler"),
    (["--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--cluster", "local:2", "--shards", "0"], "invalid shard count 0"),
    (["--cluster", "local:2", "--init", "missing.h5"], "--init is not supported"),
    (["--cluster", "local:2", "--set", "nope=1"], "unknown parameter 'nope'"),
])
def test_cli_bad_input_one_error_line_no_file(tmp_path, capsys, extra, fragment):
    out = tmp_path / "o.h5"
    rc = cli.main(["simulate", "--process", "ou", "--walkers", "5", "--steps", "5", "--dt",
                   "0.1", "--out", str(out), "--quiet"] + extra)
    assert rc == 2
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


def test_cli_without_dask_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None; from nonequil.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "simulate", "--walkers", "3", "--steps",
                        "5", "--dt", "0.1", "--cluster", "local:2", "--out",
                        str(tmp_path / "o.h5")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert "needs Dask distributed" in line and "pip install 'nonequil[dist]'" in line
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ sharded datasets
DATASETS = {     # every shardable generator, with the Langevin relaxation and rejection
    "double-well": ({}, None),
    "double-well-langevin": ({"relax": 0.5, "dt": 0.01}, "langevin"),
    "muller-brown": ({}, None),
    "gaussian-mixture": ({"dim": 3, "means": "-1,1", "sigmas": "0.5,0.3"}, None),
    "harmonic-chain": ({"particles": 5, "k0": 0.2}, None),
    "swiss-roll": ({}, None),
}


def _same_dataset(a, b):
    """/samples, every other dataset and every /samples attribute equal, bit for bit."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visit(lambda n: names.append(n) if isinstance(fa[n], h5py.Dataset)
                 and not n.startswith("provenance") else None)
        for n in names:
            assert n in fb, n
            x, y = fa[n][()], fb[n][()]
            assert x.dtype == y.dtype and np.array_equal(x, y), n
        ka, kb = dict(fa["samples"].attrs), dict(fb["samples"].attrs)
        assert set(ka) == set(kb)
        for k in ka:
            assert np.array_equal(ka[k], kb[k]), (k, ka[k], kb[k])


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_sharded_dataset_equals_single_process_bitwise(client, tmp_path, key):
    from nonequil.datasets import write_dataset

    name = key.replace("-langevin", "")
    params, method = DATASETS[key]
    write_dataset(tmp_path / "ref.h5", name, 37, params, method, 5)
    for K in (2, 3):
        out = tmp_path / f"sh{K}.h5"
        res = dist.dataset_sharded(name, 37, params, method, 5, out, client, shards=K)
        assert [r["status"] for r in res] == ["ran"] * K
        _same_dataset(tmp_path / "ref.h5", out)
        with h5py.File(out, "r") as f:
            assert f["samples"].is_virtual and f["shards/walkers"][()].sum() == 37


def test_sharded_dataset_resume_keeps_finished_shards(client, tmp_path):
    from nonequil.datasets import write_dataset

    write_dataset(tmp_path / "ref.h5", "swiss-roll", 20, {}, None, 9)
    out = tmp_path / "d.h5"
    dist.dataset_sharded("swiss-roll", 20, {}, None, 9, out, client, shards=3)
    os.remove(out)
    os.remove(dist.shard_path(out, 1, 3))
    before = os.stat(dist.shard_path(out, 0, 3)).st_mtime_ns
    with pytest.raises(InputError, match="give --resume"):
        dist.dataset_sharded("swiss-roll", 20, {}, None, 9, out, client, shards=3)
    res = dist.dataset_sharded("swiss-roll", 20, {}, None, 9, out, client, shards=3,
                               resume=True)
    assert [r["status"] for r in res] == ["kept", "ran", "kept"]
    assert os.stat(dist.shard_path(out, 0, 3)).st_mtime_ns == before
    _same_dataset(tmp_path / "ref.h5", out)
    with pytest.raises(InputError, match="differing fields: seed"):    # other arguments
        os.remove(out)
        dist.dataset_sharded("swiss-roll", 20, {}, None, 8, out, client, shards=3, resume=True)
    # a shard drawn with another Box-Muller version of the normals is not kept
    with h5py.File(dist.shard_path(out, 2, 3), "r+") as f:
        cfg = json.loads(f["provenance"].attrs["configuration"])
        f["provenance"].attrs["configuration"] = json.dumps(dict(cfg, normals=2))
    with pytest.raises(InputError, match="differing fields: normals"):
        dist.dataset_sharded("swiss-roll", 20, {}, None, 9, out, client, shards=3, resume=True)


def test_cli_dataset_cluster_equals_single_process(tmp_path):
    args = ["dataset", "gaussian-mixture", "--set", "dim=2", "--n", "23", "--seed", "4"]
    r = _nonequil(*args, "--quiet", "--out", tmp_path / "ref.h5")
    assert r.returncode == 0, r.stderr
    r = _nonequil(*args, "--cluster", "local:2", "--out", tmp_path / "sh.h5")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "in 2 shards" in r.stderr
    _same_dataset(tmp_path / "ref.h5", tmp_path / "sh.h5")


@pytest.mark.parametrize("extra,fragment", [
    (["ising", "--cluster", "local:2"], "dataset ising cannot be sharded"),
    (["phi4", "--scheduler", "tcp://127.0.0.1:1"], "replica Markov chains"),
    (["swiss-roll", "--shards", "2"], "--shards needs --cluster local:N or --scheduler"),
    (["swiss-roll", "--resume"], "--resume applies to sharded runs"),
    (["swiss-roll", "--cluster", "local:0"], "expected local:N with N >= 1"),
    (["swiss-roll", "--cluster", "local:2", "--shards", "0"], "invalid shard count 0"),
    (["swiss-roll", "--cluster", "local:2", "--set", "nope=1"], "unknown parameter 'nope'"),
    (["swiss-roll", "--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
])
def test_cli_dataset_bad_input_one_error_line_no_file(tmp_path, capsys, extra, fragment):
    rc = cli.main(["dataset", extra[0], "--n", "10", "--out", str(tmp_path / "o.h5"),
                   "--quiet"] + extra[1:])
    assert rc == 2
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


def test_cli_dataset_without_dask_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None; from nonequil.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "dataset", "swiss-roll", "--n", "5",
                        "--cluster", "local:2", "--out", str(tmp_path / "o.h5")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "pip install 'nonequil[dist]'" in _one_error_line(r.stderr)
    assert os.listdir(tmp_path) == []


def _kernel_cache_path():
    dist.task_threads()
    from kernels import streams

    return streams.normals.stats.cache_path


def test_worker_kernels_use_the_hash_keyed_cache(client):
    """A worker imports Numba before any task: its kernels must still come from the cache
    directory keyed on the kernel sources, not a stale kernels/__pycache__ (other bits)."""
    import kernels  # noqa: F401

    want = os.environ["NUMBA_CACHE_DIR"]
    assert "nonequil-numba" in want
    assert client.submit(_kernel_cache_path, pure=False).result().startswith(want + os.sep)


def test_bench_dask_quick_json_structure():
    r = subprocess.run([sys.executable, "-m", "experiments.bench_dask", "--quick", "--json",
                        "--walkers", "4000", "--steps", "5"], capture_output=True, text=True,
                       timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    doc = json.loads(r.stdout)
    assert set(doc["results"]) == {"in-process", "local:1", "local:2"}
    for res in doc["results"].values():
        assert res["status"] == "ok" and res["best_s"] > 0 and res["cpu_s"] > 0
        assert res["rate"] == pytest.approx(4000 * 5 / res["best_s"])
    assert doc["results"]["local:1"]["bitwise_equal_in_process"] is True
    assert doc["results"]["local:2"]["bitwise_equal_in_process"] is True
    assert len(doc["results"]["local:2"]["shard_seconds"]) == 2
    eff = doc["ratios"]["strong-scaling efficiency T1/(2 T2), local:1 -> local:2"]
    assert eff == pytest.approx(doc["results"]["local:1"]["best_s"]
                                / (2 * doc["results"]["local:2"]["best_s"]))
    assert doc["targets"] == [] and "ratios_per_cpu_s" in doc
    from experiments import bench_suite

    assert ("dask", "experiments.bench_dask") in [b[:2] for b in bench_suite.BENCHMARKS]


# ------------------------------------------------------------------ a killed worker (last:
# the cluster's nanny restarts the worker, but keep it after the other cluster tests)
def test_killed_worker_is_retried_and_result_is_bitwise_identical(client, tmp_path):
    cfg = SimulationConfig(process="langevin", potential="double-well", walkers=64,
                           steps=2000, dt=1e-3, x0=[-1.0], seed=11, record_every=20)
    simulate(cfg, out=tmp_path / "ref.h5")
    out = tmp_path / "run" / "out.h5"
    out.parent.mkdir()
    shard0 = dist.shard_path(out, 0, 2)
    pids = client.run(os.getpid)                # worker address -> pid
    got = {}

    def run():
        try:    # 200 chunks, each appended and checkpointed: the shard runs for seconds
            got["res"] = dist.simulate_sharded(cfg, out, client, shards=2,
                                               chunk={"max_chunk_steps": 10})
        except BaseException as e:  # noqa: BLE001
            got["err"] = e
    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and th.is_alive():
        if os.path.exists(shard0 + ".partial.ckpt.prev"):    # at least two commits
            for addr, keys in client.processing().items():
                if any("nonequil-shard-0-" in str(k) for k in keys):
                    victim = addr
        time.sleep(0.02)
    assert victim is not None, "shard 0 finished or never started before the kill"
    assert not os.path.exists(shard0)
    os.kill(pids[victim], signal.SIGKILL)
    th.join(300)
    assert "err" not in got, got.get("err")
    assert got["res"][0]["status"] == "resumed"
    assert got["res"][0]["pid"] != pids[victim]
    _assert_same(_dump(tmp_path / "ref.h5"), _dump(out))
