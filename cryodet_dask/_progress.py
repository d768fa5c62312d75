"""Computing Dask collections with a progress bar, on whatever scheduler is active.

When a :class:`distributed.Client` is the default scheduler, the work runs on
its cluster and :func:`distributed.progress` draws the bar; otherwise Dask's
local scheduler runs it under :class:`dask.diagnostics.ProgressBar`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import dask

__all__ = ["compute", "current_client"]

log = logging.getLogger("cryodet_dask")


def current_client() -> Any | None:
    """The default :class:`distributed.Client`, or ``None`` when there is none."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def compute(*collections: Any, progress: bool = False, desc: str = "") -> tuple[Any, ...]:
    """Compute ``collections`` and return their results as a tuple.

    Parameters
    ----------
    *collections
        Dask collections (arrays, delayed objects).
    progress : bool
        Draw a progress bar on stderr.
    desc : str
        What is being computed, printed before the bar.
    """
    client = current_client()
    if progress and desc:
        print(f"[cryodet-dask] {desc}", file=sys.stderr, flush=True)
    if client is not None:
        futures = client.compute(list(collections))
        if progress:
            from distributed import progress as dprogress

            dprogress(futures, notebook=False)
            print(file=sys.stderr, flush=True)
        return tuple(client.gather(futures))
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr, minimum=1.0):
            return tuple(dask.compute(*collections))
    return tuple(dask.compute(*collections))
