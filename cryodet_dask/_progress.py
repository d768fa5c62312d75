"""Computing Dask collections with a progress bar, on whatever scheduler is active.

When a :class:`distributed.Client` is the default scheduler, the work runs on
its cluster and :func:`distributed.progress` draws the bar; otherwise Dask's
local scheduler runs it under :class:`dask.diagnostics.ProgressBar`.
"""

from __future__ import annotations

import logging
import sys
import time
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
    bar = _Bar(len(futures), unit) if progress else None
    for fut in as_completed(futures):
        results[position[fut.key]] = fut.result()
        fut.release()
        if bar is not None:
            bar.step()
    if bar is not None:
        bar.close()
    return results


class _Bar:
    """A one-line text progress bar on stderr (redrawn at most 4 times a second)."""

    def __init__(self, total: int, unit: str) -> None:
        self.total, self.unit, self.done = total, unit, 0
        self.start = self.last = time.perf_counter()
        self._draw()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= 0.25 or self.done == self.total:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        frac = self.done / self.total if self.total else 1.0
        fill = int(round(40 * frac))
        print(f"\r[{'#' * fill}{' ' * (40 - fill)}] {100 * frac:3.0f}% {self.done}/{self.total} {self.unit} "
              f"| {time.perf_counter() - self.start:5.1f}s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr, flush=True)
