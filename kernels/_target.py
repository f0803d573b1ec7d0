"""One way to jit, for both targets.

* ``scalar`` marks a plain-Python scalar function (Philox, polynomial maths, potentials).
  It returns the CPU version (``numba.njit``) and records the Python source so that
  ``cuda_scalars()`` can compile the *same* function as a ``numba.cuda.jit(device=True)``
  function.  Calls between scalar functions are resolved per target by rebuilding each
  function over a copy of its module globals in which every registered scalar name points
  at that target's compiled version.
* ``cpu_kernel`` is the one set of options for CPU kernels: ``cache=True``,
  ``error_model="numpy"``, ``nogil=True``, no fastmath (it makes ``isnan`` lie and would
  let LLVM reassociate, which breaks bitwise reproducibility).
"""
import os
import types

from numba import njit

CACHE = not os.environ.get("NUMBA_DISABLE_CACHING")
_OPTS = dict(cache=CACHE, error_model="numpy", nogil=True, fastmath=False)

_REGISTRY = {}      # name -> plain Python function
_CUDA_NS = None     # name -> cuda device function (built lazily)


def scalar(fn=None, *, inline=True, cpu=None):
    """Register ``fn`` as a scalar device function and return its CPU (njit) version.

    Small functions are inlined at the Numba IR level (``inline="always"``): LLVM does not
    inline across separately compiled Numba functions reliably, and a call left in a lane
    loop stops it from vectorising.  Large per-walker bodies pass ``inline=False``.
    ``cpu`` optionally gives a CPU-only implementation with the same results (e.g. one that
    uses an LLVM intrinsic); ``fn`` itself is what the GPU compiles.
    """
    def register(f):
        name = f.__name__
        if name in _REGISTRY and _REGISTRY[name].__module__ != f.__module__:
            raise RuntimeError(f"scalar name {name!r} registered twice")
        _REGISTRY[name] = f
        return njit(inline="always" if inline else "never", **_OPTS)(cpu or f)
    return register if fn is None else register(fn)


def cpu_kernel(fn=None, *, parallel=False):
    """Decorator for CPU array kernels (optionally ``parallel=True`` for ``prange``)."""
    deco = njit(parallel=parallel, **_OPTS)
    return deco if fn is None else deco(fn)


def cpu_uncached(fn=None, *, parallel=False):
    """Like ``cpu_kernel`` but never cached: for kernels built around user functions."""
    opts = dict(_OPTS, cache=False)
    deco = njit(parallel=parallel, **opts)
    return deco if fn is None else deco(fn)


def retarget(fn, decorator, overrides):
    """Rebuild ``fn`` over a copy of its globals with ``overrides`` applied, then decorate."""
    g = dict(fn.__globals__)
    g.update(overrides)
    new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    return decorator(new), g


def cuda_scalars():
    """Dict name -> numba.cuda device function for every registered scalar function.

    Rebuilt whenever scalars were registered since the last call (modules register theirs
    at import, possibly after a first caller built the table).
    """
    global _CUDA_NS
    if _CUDA_NS is None or len(_CUDA_NS) != len(_REGISTRY):
        from numba import cuda

        ns = {}
        dicts = []
        for name, fn in _REGISTRY.items():
            dev, g = retarget(fn, cuda.jit(device=True), {})
            ns[name] = dev
            dicts.append(g)
        for g in dicts:          # resolve cross-calls to the device versions
            g.update(ns)
        _CUDA_NS = ns
    return _CUDA_NS
