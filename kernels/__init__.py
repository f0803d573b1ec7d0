"""Pure compute for nonequil: Numba CPU kernels, numba.cuda kernels and the Philox RNG.

Nothing here does I/O, prints, keeps global mutable state or calls ``np.random``.

Numba's on-disk cache does not notice edits to a function that lives in another file
(the cached kernel inlines it).  Before Numba is imported we therefore point
``NUMBA_CACHE_DIR`` at a directory keyed on a hash of every kernel source file, unless
the user has set it.  If no writable location exists (a read-only install and a
read-only home), caching is disabled instead of failing; ``kernels._target.CACHE_NOTE``
says which case applies so that the CLI can report it.
"""
import os as _os

from ._cachedir import configure_cache as _configure_cache

_configure_cache()
# Numba's threading layer, chosen explicitly (DESIGN.md, "Threads"): OpenMP first (the layer
# every measurement in this repository used), then the always-available workqueue.  BLAS
# threads are limited separately with threadpoolctl where BLAS runs (nonequil.train).
_os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", "omp tbb workqueue")
