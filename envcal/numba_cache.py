"""Where numba keeps its compiled kernels: chosen once by the entry point, never at import.

:func:`configure` is called by the command line (:mod:`envcal.cli`), the test setup
(``tests/conftest.py``) and the benchmarks before anything imports numba; importing
:mod:`envcal.kernels` changes no environment variable and reads no file. Without it numba
uses its own default (``__pycache__`` next to the module), which is correct but may be
read-only in an installed package.

The directory has one sub-directory per content hash of the kernel modules: numba's own
invalidation looks at the jitted function's file time stamp only, and a cache compiled
against an edited callee in the same file has crashed before (a stale gufunc).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

KERNEL_FILES = ("kernels.py", "codes.py", "data_quality.py", "alerts", "protocols/hj212.py")


def _tag() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha1(usedforsecurity=False)
    for name in KERNEL_FILES:
        p = here / name
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def configure(directory: str | os.PathLike[str] | None = None) -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to an explicit, writable directory (an existing value wins).

    Parameters
    ----------
    directory : path, optional
        Root of the cache (default: ``~/.cache/envcal/numba``, else the temp directory).

    Returns
    -------
    str or None
        The directory in use; None when no candidate is writable (numba's default stays).

    Notes
    -----
    Must run before numba is imported (numba reads the variable once); when numba was
    imported already, ``numba.config.CACHE_DIR`` is set as well, which applies to kernels
    compiled from then on.
    """
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current:
        return current
    uid = os.getuid() if hasattr(os, "getuid") else 0
    tag = _tag()
    roots = [Path(directory)] if directory is not None else [
        Path.home() / ".cache" / "envcal" / "numba", Path(tempfile.gettempdir()) / f"envcal-numba-{uid}"]
    for root in roots:
        cand = root / tag
        try:
            cand.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(cand, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(cand)
            numba = sys.modules.get("numba")
            if numba is not None:
                numba.config.CACHE_DIR = str(cand)
            return str(cand)
    return None
