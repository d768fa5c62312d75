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

__all__ = ["compute", "compute_keys", "current_client", "block_ref", "block_summaries"]

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


_READS = frozenset({"getter", "getter_nofancy", "getter_inline"})


def block_ref(arr: Any, idx: tuple[int, ...]) -> Any:
    """What a task is given for block ``idx`` of ``arr``: the read itself when that block is a plain read of
    stored data (``from_array``/``from_zarr``: a getter of an array object held in the graph), else its key.

    Inlined, the read runs inside the task that uses the block, on its worker.  As separate tasks, the
    post-processing's mask block read on one worker and the centre block on the other made the scheduler
    send one of them across: 19 of 32 blocks per pass, 120 MB per run on 2 workers for a 96 x 512 x 512
    pair.  A block that costs more than a read (a rechunk, a resampling) stays a task of its own, computed
    once.  Dask before its task specification (2024.12) gets the key."""
    key = (arr.name, *idx)
    try:
        from dask._task_spec import Task
    except ImportError:  # pragma: no cover - older dask
        return key
    graph = arr.__dask_graph__()
    task = graph.get(key)
    if isinstance(task, Task) and getattr(task.func, "__name__", "") in _READS \
            and all(_is_data(graph.get(d)) for d in task.dependencies):
        return task
    return key


def _is_data(node: Any) -> bool:
    """A graph value that is data (the array object a read reads from), not a computation."""
    from dask._task_spec import DataNode, GraphNode
    from dask.core import istask

    return node is not None and (isinstance(node, DataNode) or not (isinstance(node, GraphNode) or istask(node)))


def block_summaries(func: Any, arrays: Sequence[Any], *, extra: Any = None, progress: bool = False,
                    desc: str = "") -> list[Any]:
    """``func(block_a, block_b, ...[, extra(index)])`` for every block index of the equally chunked dask
    ``arrays``, as a list in ``np.ndindex`` order: the one way this package collects small per-block
    summaries (tables, counts) on the driver.

    One task per block, reading only that block of each array; the results come back through
    :func:`compute_keys`, so each is released on the cluster as soon as it has arrived.
    """
    import functools

    import numpy as np
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    first = arrays[0]
    if any(a.chunks != first.chunks for a in arrays[1:]):
        raise ValueError("block_summaries needs arrays with the same chunks")
    name = "summary-" + tokenize(func, extra, *[a.name for a in arrays])
    tasks: dict[Any, Any] = {}
    for idx in np.ndindex(*first.numblocks):
        args = [block_ref(a, idx) for a in arrays]
        f = func if extra is None else functools.partial(_with_extra, func, extra(idx))
        tasks[(name, *idx)] = (f, *args)
    graph = HighLevelGraph.from_collections(name, tasks, dependencies=list(arrays))
    keys = [(name, *idx) for idx in np.ndindex(*first.numblocks)]
    return compute_keys(graph, keys, progress=progress, desc=desc, unit="blocks")


def _with_extra(func: Any, extra: Any, *blocks: Any) -> Any:
    return func(*blocks, extra)
