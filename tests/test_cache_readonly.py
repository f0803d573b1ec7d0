"""Numba's on-disk cache from a read-only install, with no writable cache directory, and
with several processes compiling at once on a cold cache (issue 9 "Numba's cache").

Each case runs a small program in a fresh process (``PROGRAM``): it compiles two cached
kernels (the Philox block and a ``parallel=True`` fill of uniforms), checks the first
Random123 known-answer vector, and prints what ``kernels._cachedir`` decided plus the
dispatchers' cache hits and misses as JSON.  The kernels are small, so a cold compile takes
a few seconds.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600

PROGRAM = r"""
import json, os, sys, tempfile
if os.environ.get("TEST_NO_WRITABLE_TMP"):
    tempfile.tempdir = os.environ["TEST_NO_WRITABLE_TMP"]   # gettempdir() -> unwritable
import numpy as np
import kernels
from kernels import _cachedir, philox, streams
u = np.uint64
words = [int(w) for w in philox.philox4x32_10(u(0), u(0), u(0), u(0), u(0), u(0))]
assert words == [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8], [hex(w) for w in words]
out = np.empty((37, 5))
streams.uniforms(7, 3, 11, 2, out)
assert np.all((out > 0) & (out <= 1))
hits = sum(sum(f.stats.cache_hits.values()) for f in (philox.philox4x32_10, streams.uniforms))
miss = sum(sum(f.stats.cache_misses.values()) for f in (philox.philox4x32_10, streams.uniforms))
print(json.dumps({"note": _cachedir.NOTE, "kernels": os.path.dirname(kernels.__file__),
                  "cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
                  "disabled": bool(os.environ.get("NUMBA_DISABLE_CACHING")),
                  "hits": hits, "misses": miss, "sum": float(out.sum())}))
"""


def _env(root, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_CACHING", "NONEQUIL_NO_CACHE_CONFIG")}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _start(root, cwd, **extra):
    return subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=cwd, env=_env(root, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return json.loads(out.strip().splitlines()[-1])


def _install(tmp_path):
    """A copy of the packages (kernels, nonequil) without any caches."""
    inst = tmp_path / "inst"
    for pkg in ("kernels", "nonequil"):
        shutil.copytree(os.path.join(ROOT, pkg), inst / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return inst


def _make_read_only(inst):
    """Bind-mount the install read-only (root), else remove its write permissions."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(inst), str(inst)],
                          capture_output=True).returncode:
            pytest.skip("root without mount(8): cannot make a read-only install")
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(inst)], capture_output=True)
        if r.returncode:
            subprocess.run(["umount", str(inst)])
            pytest.skip("cannot remount read-only")
        return lambda: subprocess.run(["umount", "-l", str(inst)])
    for dirpath, dirnames, filenames in os.walk(inst):
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o444)
        os.chmod(dirpath, 0o555)
    return lambda: [os.chmod(d, 0o755) for d, _, _ in os.walk(inst)]


def _cache_files(path):
    return [os.path.join(d, n) for d, _, fs in os.walk(path) for n in fs
            if n.endswith((".nbi", ".nbc"))]


@pytest.fixture
def read_only_install(tmp_path):
    inst = _install(tmp_path)
    undo = _make_read_only(inst)
    try:
        probe = inst / "kernels" / "probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            pytest.skip("could not make the install read-only")
        yield inst
    finally:
        undo()


def test_read_only_install_caches_in_a_writable_directory(read_only_install, tmp_path):
    """The install is read-only; the keyed cache lands in $XDG_CACHE_HOME, a second process
    loads the kernels from it, and nothing is written into the install."""
    xdg = tmp_path / "xdg"
    first = _result(_start(read_only_install, tmp_path, XDG_CACHE_HOME=str(xdg)))
    assert first["kernels"].startswith(str(read_only_install))
    assert not first["disabled"] and first["cache_dir"].startswith(str(xdg)), first
    assert first["note"] == f"numba cache: {first['cache_dir']}"
    assert first["misses"] >= 1 and _cache_files(first["cache_dir"])
    second = _result(_start(read_only_install, tmp_path, XDG_CACHE_HOME=str(xdg)))
    assert second["hits"] >= 2 and second["misses"] == 0, second
    assert second["sum"] == first["sum"]
    assert not _cache_files(read_only_install)


def test_no_writable_cache_directory_disables_caching_with_a_note(read_only_install,
                                                                  tmp_path):
    """Read-only install, and neither $XDG_CACHE_HOME nor the temporary directory can be
    written (paths under /proc): caching is disabled, the note says so, and the kernels
    still compile and give the known answers."""
    nowhere = "/proc/nonequil-no-such-dir"
    r = _result(_start(read_only_install, tmp_path, XDG_CACHE_HOME=nowhere,
                       TEST_NO_WRITABLE_TMP=nowhere))
    assert r["disabled"] and r["cache_dir"] is None, r
    assert "no writable directory" in r["note"] and "compiled in every process" in r["note"]
    assert r["hits"] == 0
    assert not _cache_files(read_only_install)


def test_cli_says_when_caching_is_disabled(read_only_install, tmp_path):
    env = _env(read_only_install, XDG_CACHE_HOME="/proc/nonequil-no-such-dir")
    prog = ("import tempfile, sys; tempfile.tempdir = '/proc/nonequil-no-such-dir'; "
            "from nonequil.cli import main; sys.exit(main(sys.argv[1:]))")
    # a small verb: the exact Gaussian-mixture draw compiles one small kernel
    r = subprocess.run([sys.executable, "-c", prog, "dataset", "gaussian-mixture", "--n",
                        "10", "--out", str(tmp_path / "o.h5")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "numba cache" in r.stderr and "no writable directory" in r.stderr, r.stderr


def test_concurrent_cold_cache_starts_do_not_crash(tmp_path):
    """Three processes start at once on an empty cache directory: all succeed with the same
    results, and a fourth process then loads every kernel from the cache."""
    xdg = tmp_path / "xdg"
    procs = [_start(ROOT, tmp_path, XDG_CACHE_HOME=str(xdg)) for _ in range(3)]
    res = [_result(p) for p in procs]
    assert len({r["cache_dir"] for r in res}) == 1 and len({r["sum"] for r in res}) == 1
    assert any(r["misses"] for r in res)
    after = _result(_start(ROOT, tmp_path, XDG_CACHE_HOME=str(xdg)))
    assert after["misses"] == 0 and after["hits"] >= 2, after
    assert after["sum"] == res[0]["sum"]
