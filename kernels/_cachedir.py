"""Numba cache directory keyed on the kernels' source (see kernels/__init__.py).

This must run before ``numba`` is first imported, so it imports nothing heavy.
"""
import hashlib
import os
import tempfile

NOTE = ""


def source_hash():
    """sha256 (first 16 hex digits) over every kernels/*.py file, in name order."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            h.update(name.encode())
            with open(os.path.join(here, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def _writable(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
        return True
    except OSError:
        return False


def configure_cache():
    """Set NUMBA_CACHE_DIR to <cache root>/nonequil-numba/<hash>, or disable caching."""
    global NOTE
    if os.environ.get("NUMBA_CACHE_DIR") or os.environ.get("NONEQUIL_NO_CACHE_CONFIG"):
        NOTE = "numba cache: NUMBA_CACHE_DIR set by the user"
        return
    key = source_hash()
    roots = []
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    roots.append(xdg)
    roots.append(tempfile.gettempdir())
    for root in roots:
        path = os.path.join(root, "nonequil-numba", key)
        if _writable(path):
            os.environ["NUMBA_CACHE_DIR"] = path
            NOTE = f"numba cache: {path}"
            return
    os.environ["NUMBA_DISABLE_CACHING"] = "1"  # honoured by our jit wrappers (kernels._target)
    NOTE = "numba cache: no writable directory found; kernels are compiled in every process"
