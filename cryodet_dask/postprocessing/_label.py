"""Chunk-aware connected-component labelling of a thresholded map (the labelling step alone).

Same numbering as :func:`scipy.ndimage.label` on the whole array (components
numbered by their first voxel in raster order), so the result is identical to
it, voxel for voxel, for any chunking.  Written because
``dask_image.ndmeasure.label`` recomputes the block labels many times over in
its graph (see ``docs/postprocessing.md`` for the measurement).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..errors import ParameterError
from ._components import block_faces, label_block, union_find

__all__ = ["label"]


def _first_index(lab: np.ndarray, n: int, offset: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    flat = lab.ravel()
    idx = np.flatnonzero(flat)
    first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, flat[idx], idx)
    has = first[1:] < np.iinfo(np.int64).max
    out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    if has.any():
        loc = np.unravel_index(first[1:][has], lab.shape)
        out[has] = np.ravel_multi_index(tuple(loc[a] + offset[a] for a in range(3)), shape)
    return out


def _label_pass(block: np.ndarray, *, threshold: float, connectivity: int, box: Any, index: int,
                shape: tuple[int, ...]) -> dict[str, Any]:
    lab, n = label_block(block, threshold, connectivity)
    return {"n": n, "first": _first_index(lab, n, tuple(b[0] for b in box), shape),
            "faces": block_faces(lab, index)}


def _relabel(block: np.ndarray, threshold: float, connectivity: int, table: np.ndarray) -> np.ndarray:
    lab, _ = label_block(block, threshold, connectivity)
    relabelled: np.ndarray = table[lab]
    return relabelled


def label(image: da.Array, threshold: float = 0.0, connectivity: int = 1, *,
          progress: bool = False) -> tuple[da.Array, int]:
    """Label the connected components of ``image > threshold``, block by block.

    Parameters
    ----------
    image : dask.array.Array (z, y, x)
        A map (or a boolean/0-1 image with ``threshold=0``).
    threshold : float
        Foreground is ``image > threshold``.
    connectivity : int
        1, 2 or 3 (:func:`scipy.ndimage.generate_binary_structure`).
    progress : bool
        Progress bar.

    Returns
    -------
    labels : dask.array.Array of int32
        Lazy label image, identical to ``scipy.ndimage.label`` on the whole array.
    n : int
        Number of components.
    """
    from .._progress import block_ref
    from ._core import _box, _compact, _grid, _pair_tasks, _run

    if connectivity not in (1, 2, 3):
        raise ParameterError(f"connectivity must be 1, 2 or 3, got {connectivity!r}")
    shape = tuple(int(s) for s in image.shape)
    bounds, grid = _grid(image.chunks)
    blocks = list(itertools.product(*(range(g) for g in grid)))
    bindex = {idx: k for k, idx in enumerate(blocks)}
    token = tokenize(image, threshold, connectivity)
    pass_n = f"cryodet-labelpass-{token}"
    dsk: dict[Any, Any] = {}
    res = {}
    for idx in blocks:
        res[idx] = (pass_n, *idx)
        dsk[res[idx]] = (functools.partial(_label_pass, threshold=threshold, connectivity=connectivity,
                                           box=_box(bounds, idx), index=bindex[idx], shape=shape),
                         block_ref(image, idx))
    pair_keys = _pair_tasks(dsk, f"cryodet-labelpairs-{token}", res, bounds, grid, connectivity)
    s, pairs = _run(f"cryodet-labelling-{token}", dsk, pair_keys, [image], progress, "labelling")
    ns = np.array([x["n"] for x in s], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(ns)[:-1]]).astype(np.int64)
    n_nodes = int(ns.sum())
    comp = union_find(n_nodes, _compact(pairs, off) if len(pairs) else pairs)
    first = np.concatenate([x["first"] for x in s]) if n_nodes else np.zeros(0, np.int64)
    n_comp = int(comp.max()) + 1 if n_nodes else 0
    cfirst = np.full(n_comp, np.iinfo(np.int64).max, dtype=np.int64)
    if n_nodes:
        np.minimum.at(cfirst, comp, first)
    rank = np.empty(n_comp, dtype=np.int32)
    rank[np.argsort(cfirst, kind="stable")] = np.arange(1, n_comp + 1, dtype=np.int32)
    node_label = rank[comp] if n_nodes else np.zeros(0, np.int32)
    name = "cryodet-label-" + token
    dsk = {}
    for idx in blocks:
        b = bindex[idx]
        table = np.concatenate([[0], node_label[off[b] : off[b] + ns[b]]]).astype(np.int32)
        dsk[(name, *idx)] = (_relabel, block_ref(image, idx), threshold, connectivity, table)
    # dask.array.Array does not match dask's own DaskCollection protocol (__dask_scheduler__ staticmethod)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[image])  # type: ignore[list-item]
    return da.Array(graph, name, chunks=image.chunks, dtype=np.int32,
                    meta=np.empty((0, 0, 0), np.int32)), n_comp
