"""Computing Dask collections with a progress bar, on whatever scheduler is active.

When a :class:`distributed.Client` is the default scheduler, the work runs on
its cluster and :func:`distributed.progress` draws the bar; otherwise Dask's
local scheduler runs it under :class:`dask.diagnostics.ProgressBar`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.threaded

__all__ = ["compute", "compute_keys", "current_client"]

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


def compute_keys(graph: Mapping[Any, Any], keys: Sequence[Any], *, progress: bool = False,
                 desc: str = "", unit: str = "tasks") -> list[Any]:
    """Compute the tasks ``keys`` of ``graph`` and return their results, in order.

    With a :class:`distributed.Client` each result is fetched to this process as
    soon as its task finishes and is then released on the cluster, so many
    small results never pile up in one worker's memory (as they would under a
    single task gathering them) and the workers hold only what later tasks
    still need.  Otherwise Dask's local scheduler runs the graph.
    """
    keys = list(keys)
    client = current_client()
    if progress and desc:
        print(f"[cryodet-dask] {desc}", file=sys.stderr, flush=True)
    if client is None:
        from dask.base import get_scheduler

        get = get_scheduler() or dask.threaded.get
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr, minimum=1.0):
                return list(get(graph, keys))
        return list(get(graph, keys))
    from distributed import as_completed

    futures = client.get(graph, keys, sync=False)
    position = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    from tqdm import tqdm

    # tqdm on stderr, redrawn at most 4 times a second (progress is on only on a terminal unless asked)
    with tqdm(total=len(futures), unit=f" {unit}", disable=not progress, file=sys.stderr, mininterval=0.25,
              leave=True, dynamic_ncols=True) as bar:
        for fut in as_completed(futures):
            results[position[fut.key]] = fut.result()
            fut.release()
            bar.update(1)
    return results
