"""Distributed post-processing: the Dask orchestration of the block kernels.

Algorithm (blocks = the chunks of the mask map; every block has a *core*; only
the centre map needs a *halo*, ``max(1, floor(center_min_distance))`` voxels wide,
which each block assembles from the boundary slabs of the blocks around it -- one
small task per block extracts its six slabs -- with the one-voxel ring mirrored
only on the true volume border)

Pass 1, one task per block
    threshold + connected components of the core (``cc3d``) -> block components,
    minus the specks below ``remove_min_size`` that touch no face (whole in the
    block, so dropped exactly on the spot); their voxel counts; the six face
    planes (sparse); the strict local maxima of the
    thresholded centre map on the core that no voxel of the volume within
    ``center_min_distance`` exceeds (centre fusion, tested on those candidates
    only), each with the block label under it.
    One task per block then pairs its upper faces with the blocks beyond and
    returns them with the block's summary (everything but the face planes).
Results stream to the driver as each task finishes (:func:`compute_keys`);
no task gathers them on one worker.
Reduction 1, on the driver (tables of block labels and centres only)
    union-find over face pairs -> global components; global sizes -> size
    filter; centres sorted in raster order (their ids); per component the
    centres inside it.  Per block: label -> component, and the centres each
    label may take (``check_center``: those of its own component when it has
    2 or more; otherwise all centres that can be nearest to a voxel of the
    block, :func:`candidate_centres`).
Pass 2, one task per block
    block components again (same input, same labels), exact nearest-centre
    assignment, instance pieces (connected regions of equal centre), per-piece
    count, coordinate sums, first raster index, mask sum, centre-map maximum,
    face planes; face pairing as in pass 1.
Reduction 2
    union-find over face pairs of pieces with the same centre -> instances;
    centroids = coordinate sums / counts; centre scores = max over pieces;
    instances below ``min_particle_size`` removed; outlier filter on the rest; labels 1..N by first
    voxel in raster order; per block the map piece -> final label.
Pass 3 (lazy, the returned ``labels``)
    pieces again, mapped through the block's table.

Ownership rule: every voxel belongs to exactly one block core; statistics are
summed over cores only, so nothing is counted twice; a component or instance
cut by block borders is the union of its pieces, joined by face pairs.  The
result is exact and independent of the chunking because every global decision
(sizes, centroids, nearest centres, tie-breaks, numbering) is made on exact
per-label integer summaries or on the complete centre table.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .._progress import block_ref, compute_keys
from ..errors import ParameterError
from ._assign import candidate_centres
from ._centres import (assemble_padded, ball_maxima, ball_offsets, block_slabs, grouped_ball_maxima, halo_width,
                       strict_maxima)
from ._detections import Detections
from ._components import LOCAL_MASK, SHIFT, block_faces, face_pairs, union_find
from ._outliers import outlier_keep
from ._params import PostprocessParams
from ._plan import check_plan
from ._relabel import BlockTables, block_components, block_stats, instance_block
from ._species import (SpeciesParams, instance_species, peak_species, piece_sums, score_keep,
                       species_size_keep)

if TYPE_CHECKING:
    from zarr.codecs import BloscCodec

__all__ = ["Detections", "postprocess"]


DEFAULT_CHUNKS = 128
log = logging.getLogger("cryodet_dask")
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


# --------------------------------------------------------------------------- block tasks


def _pass1_block(mask: np.ndarray, center: np.ndarray, neighbours: list[tuple[Box, tuple[np.ndarray, ...]]],
                 box: Box, shape: tuple[int, int, int], index: int, p: PostprocessParams,
                 species: np.ndarray | None = None, distances: tuple[float, ...] = ()) -> dict[str, Any]:
    comp = block_components(mask, p.mask_threshold, p.connectivity, p.remove_min_size)
    h = halo_width(_fusion_reach(p, distances))
    padded = assemble_padded(np.asarray(center), box, neighbours, shape, h)
    peaks = strict_maxima(padded, p.center_threshold, h)
    origin = np.array([b[0] for b in box], dtype=np.int64)
    if species is not None and distances:  # each centre fused within its own species' distance
        peaks = grouped_ball_maxima(padded, peaks, peak_species(np.asarray(species), peaks), distances,
                                    p.center_threshold, origin, shape, h)
    else:
        peaks = ball_maxima(padded, peaks, p.center_threshold, ball_offsets(p.center_min_distance), origin, shape, h)
    del padded
    peak_lab = comp.at(comp.raw[tuple(peaks.T)]).astype(np.int64) if len(peaks) else np.zeros(0, np.int64)
    if p.check_center:  # a centre outside the mask never takes a voxel: only split components use centres
        peaks, peak_lab = peaks[peak_lab > 0], peak_lab[peak_lab > 0]
    peaks = peaks + origin
    return {"n": comp.n, "sizes": comp.sizes, "peaks": peaks, "peak_lab": peak_lab,
            "faces": block_faces(comp.raw, index, comp.drop)}


def _pass2_block(mask: np.ndarray, center: np.ndarray, box: Box, index: int, shape: tuple[int, int, int],
                 p: PostprocessParams, tables: BlockTables, scratch: str | None,
                 species: np.ndarray | None = None) -> dict[str, Any]:
    offset = tuple(b[0] for b in box)
    pieces, piece_centre, fg = instance_block(mask, offset, p.mask_threshold, p.connectivity,  # type: ignore[arg-type]
                                              p.remove_min_size, tables)
    if scratch is not None:
        from ..io import open_for_write

        open_for_write(scratch)[tuple(slice(a, b) for a, b in box)] = pieces  # no all-zero test per chunk
    n2 = len(piece_centre) - 1
    out: dict[str, Any] = block_stats(pieces, n2, mask, offset, shape, center, fg)  # type: ignore[arg-type]
    if species is not None:  # integer sums of the quantized probabilities per piece (exact block sums)
        labs = pieces.ravel()[fg]
        out["species_sum"] = piece_sums(np.asarray(species), fg[labs > 0], labs[labs > 0], n2)
    out.update(n=n2, centre=piece_centre, faces=block_faces(pieces, index))
    return out


def _pass2_species(mask: np.ndarray, center: np.ndarray, species: np.ndarray, **kw: Any) -> dict[str, Any]:
    """:func:`_pass2_block` with the block of the species map (a task passes it by position)."""
    return _pass2_block(mask, center, species=species, **kw)


def _relabel_block(mask: np.ndarray, box: Box, p: PostprocessParams, tables: BlockTables,
                   final: np.ndarray) -> np.ndarray:
    offset = tuple(b[0] for b in box)
    pieces, _, _ = instance_block(mask, offset, p.mask_threshold, p.connectivity, p.remove_min_size,  # type: ignore[arg-type]
                                  tables)
    relabelled: np.ndarray = final[pieces]
    return relabelled


def _relabel_cached(box: Box, scratch: str, final: np.ndarray) -> np.ndarray:
    # a region of slices reads back as an ndarray (zarr's annotation also allows scalars)
    pieces = cast(np.ndarray, zarr.open_array(scratch, mode="r")[tuple(slice(a, b) for a, b in box)])
    relabelled: np.ndarray = final[pieces]
    return relabelled


def _pass1_task(mask: np.ndarray, center: np.ndarray, slab_list: list[tuple[np.ndarray, ...]], *,
                nboxes: tuple[Box, ...], **kw: Any) -> dict[str, Any]:
    """:func:`_pass1_block` with the neighbours' slabs as a list (task arguments carry keys in lists)."""
    return _pass1_block(mask, center, list(zip(nboxes, slab_list)), **kw)


def _pass1_species_task(mask: np.ndarray, center: np.ndarray, species: np.ndarray,
                        slab_list: list[tuple[np.ndarray, ...]], *, nboxes: tuple[Box, ...], **kw: Any) -> dict[str, Any]:
    """:func:`_pass1_task` with the block of the species map (per-species fusion distances)."""
    return _pass1_block(mask, center, list(zip(nboxes, slab_list)), species=species, **kw)


def _fusion_reach(p: PostprocessParams, distances: tuple[float, ...]) -> float:
    """The largest centre-fusion distance in use (it sets the halo of the centre test)."""
    return max(distances) if distances else p.center_min_distance


def _pairs_task(own: dict[str, Any], others: list[dict[str, Any]], *, box: Box,
                axes_boxes: tuple[tuple[int, Box], ...], connectivity: int) -> tuple[dict[str, Any], np.ndarray]:
    """The block's summary (:func:`_summary`) and its face pairs (:func:`_block_pairs`, with the neighbours'
    results as a list): one result per block for the driver, so the summaries need no tasks of their own."""
    return _summary(own), _block_pairs(own, box, [(a, r, b) for (a, b), r in zip(axes_boxes, others)], connectivity)


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    """Everything but the face planes (those stay on the workers)."""
    return {k: v for k, v in res.items() if k != "faces"}


_FACE = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3, (2, 0): 4, (2, 1): 5}  # (axis, hi?) -> position


def _block_pairs(own: dict[str, Any], box: Box, neighbours: list[tuple[int, dict[str, Any], Box]],
                 connectivity: int) -> np.ndarray:
    """Face pairs of one block with the blocks beyond its three upper faces."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    for axis in range(3):
        beyond = [(res["faces"][_FACE[axis, 0]].provisional(), nbox) for ax, res, nbox in neighbours if ax == axis]
        if beyond:
            found.append(face_pairs(own["faces"][_FACE[axis, 1]].provisional(), box, axis, beyond, connectivity))
    return np.concatenate(found)


# --------------------------------------------------------------------------- helpers


def _as_dask(x: Any, chunks: Any = None) -> da.Array:
    if isinstance(x, da.Array):
        return x
    arr = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
    lazy: da.Array = da.from_array(arr, chunks=chunks or DEFAULT_CHUNKS)
    return lazy


def _grid(chunks: tuple[tuple[int, ...], ...]) -> tuple[list[np.ndarray], tuple[int, ...]]:
    bounds = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in chunks]
    return bounds, tuple(len(c) for c in chunks)


def _box(bounds: list[np.ndarray], idx: tuple[int, ...]) -> Box:
    return tuple((int(bounds[a][i]), int(bounds[a][i + 1])) for a, i in enumerate(idx))  # type: ignore[return-value]


def _neighbour_offsets(connectivity: int) -> list[tuple[int, tuple[int, ...]]]:
    """Offsets of the blocks beyond the upper faces that can hold an adjacent voxel."""
    out = []
    for axis in range(3):
        for d in itertools.product((-1, 0, 1), repeat=2):
            if 1 + abs(d[0]) + abs(d[1]) > connectivity:
                continue
            off = [0, 0, 0]
            off[axis] = 1
            others = [a for a in range(3) if a != axis]
            off[others[0]], off[others[1]] = d
            out.append((axis, tuple(off)))
    return out


def _pair_tasks(dsk: dict[Any, Any], name: str, results: dict[tuple[int, ...], Any], bounds: list[np.ndarray],
                grid: tuple[int, ...], connectivity: int) -> list[Any]:
    """Add one task per block to ``dsk`` (its summary and face pairs, :func:`_pairs_task`); return their keys
    in the order of ``results``."""
    keys = []
    offsets = _neighbour_offsets(connectivity)
    for idx, res in results.items():
        nbs, axes_boxes = [], []
        for axis, off in offsets:
            j = tuple(i + o for i, o in zip(idx, off))
            if all(0 <= j[a] < grid[a] for a in range(3)):
                nbs.append(results[j])
                axes_boxes.append((axis, _box(bounds, j)))
        key = (name, *idx)
        dsk[key] = (functools.partial(_pairs_task, box=_box(bounds, idx), axes_boxes=tuple(axes_boxes),
                                      connectivity=connectivity), res, nbs)
        keys.append(key)
    return keys


def _run(name: str, dsk: dict[Any, Any], keys: list[Any], dependencies: list[Any],
         progress: bool, desc: str) -> tuple[list[Any], np.ndarray]:
    """Compute the per-block tasks ``keys`` of ``dsk`` (:func:`_pairs_task`); their results stream to this
    process.  Returns the blocks' summaries, in order, and all their face pairs."""
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    out = compute_keys(graph, keys, progress=progress, desc=desc, unit="blocks")
    return [o[0] for o in out], np.concatenate([np.zeros((0, 2), np.int64), *(o[1] for o in out)])


def _regular(chunks: tuple[tuple[int, ...], ...]) -> bool:
    return all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in chunks)


def _scratch_array(scratch: str | os.PathLike[str], mask: da.Array) -> str | None:
    """Create the scratch Zarr array for the block pieces; returns its path (None: chunks irregular)."""
    from ..io import make_compressor

    if not _regular(mask.chunks):
        log.info("mask chunks are irregular; labels will recompute the pieces instead of caching them")
        return None
    path = Path(scratch).absolute() / "pieces.zarr"
    zarr.create_array(str(path), shape=mask.shape, dtype=np.int32, chunks=tuple(c[0] for c in mask.chunks),
                      # "lz4-shuffle" names a Blosc codec: make_compressor returns None only for "auto"/"none"
                      compressors=[cast("BloscCodec", make_compressor("lz4-shuffle", np.dtype(np.int32)))], fill_value=0,
                      overwrite=True)
    return str(path)


def _compact(gids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Provisional ids ``block << 32 | local`` -> compact node index ``offsets[block] + local - 1``."""
    gids = np.asarray(gids, dtype=np.int64)
    compact: np.ndarray = offsets[gids >> SHIFT] + (gids & LOCAL_MASK) - 1
    return compact


# --------------------------------------------------------------------------- reductions


def _tables_from_components(s1: list[dict[str, Any]], pairs: np.ndarray, boxes: list[Box],
                            p: PostprocessParams) -> tuple[list[BlockTables], np.ndarray, dict[str, Any]]:
    ns = np.array([s["n"] for s in s1], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(ns)[:-1]]).astype(np.int64)
    n_nodes = int(ns.sum())
    sizes = np.concatenate([s["sizes"][1:] for s in s1]) if n_nodes else np.zeros(0, np.int64)
    comp = union_find(n_nodes, _compact(pairs, off) if len(pairs) else np.zeros((0, 2), np.int64))
    n_comp = int(comp.max()) + 1 if n_nodes else 0
    comp_size = np.bincount(comp, weights=sizes, minlength=n_comp).astype(np.int64)
    node_comp = np.where(comp_size[comp] >= p.remove_min_size, comp, -1) if n_nodes else comp
    # centres, in global raster order
    peaks = np.concatenate([s["peaks"] for s in s1]) if s1 else np.zeros((0, 3), np.int64)
    peak_node = np.concatenate([
        np.where(s["peak_lab"] > 0, off[b] + s["peak_lab"] - 1, -1) for b, s in enumerate(s1)
    ]).astype(np.int64) if s1 else np.zeros(0, np.int64)
    shape = tuple(int(boxes[-1][a][1]) for a in range(3)) if boxes else (0, 0, 0)
    order: np.ndarray | list[int] = np.argsort(np.ravel_multi_index(tuple(peaks.T), shape), kind="stable") if len(peaks) else []
    peaks = peaks[order].reshape(-1, 3)
    peak_node = peak_node[order]
    peak_comp = np.where(peak_node >= 0, node_comp[np.maximum(peak_node, 0)] if n_nodes else -1, -1)
    if p.check_center:  # only centres on kept components can take voxels
        peaks, peak_comp = peaks[peak_comp >= 0], peak_comp[peak_comp >= 0]
    # per component, its centres (ids ascending) as CSR
    if p.check_center:
        inside = np.flatnonzero(peak_comp >= 0)
        by_comp = inside[np.argsort(peak_comp[inside], kind="stable")]
        ccount = np.bincount(peak_comp[inside], minlength=max(n_comp, 1))  # never empty: lookups of -1 -> 0
        cstart = np.concatenate([[0], np.cumsum(ccount)[:-1]]).astype(np.int64)
        multi = ccount >= 2
    tables = []
    for b, s in enumerate(s1):
        lab2comp = np.concatenate([[-1], node_comp[off[b] : off[b] + ns[b]]]).astype(np.int64)
        seg_start = np.zeros(ns[b] + 1, dtype=np.int64)
        seg_len = np.zeros(ns[b] + 1, dtype=np.int64)
        if len(peaks) == 0:
            cc_ids = np.zeros(0, np.int64)
        elif p.check_center:
            g = lab2comp
            am = (g >= 0) & multi[np.maximum(g, 0)]
            ug = np.unique(g[am])
            lens = ccount[ug]
            new_start = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
            rows = np.repeat(cstart[ug] - new_start, lens) + np.arange(int(lens.sum()))
            cc_ids = by_comp[rows] if len(rows) else np.zeros(0, np.int64)
            pos = np.searchsorted(ug, g[am])
            seg_start[am] = new_start[pos]
            seg_len[am] = lens[pos]
        else:
            cc_ids = candidate_centres(boxes[b], peaks)
            seg_len[lab2comp >= 0] = len(cc_ids)
        kept = np.flatnonzero(lab2comp >= 0)
        tables.append(BlockTables(n_labels=int(ns[b]), kept=kept.astype(np.int32), seg_start=seg_start[kept],
                                  seg_len=seg_len[kept], centres=peaks[cc_ids].astype(np.int64),
                                  centre_ids=cc_ids.astype(np.int64)))
    info = {"n_block_components": n_nodes, "n_components": int((comp_size >= p.remove_min_size).sum()),
            "n_peaks": len(peaks)}
    return tables, peaks, info


def _instances(s2: list[dict[str, Any]], pairs: np.ndarray, p: PostprocessParams,
               sp: SpeciesParams | None = None) -> dict[str, Any]:
    ns = np.array([s["n"] for s in s2], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(ns)[:-1]]).astype(np.int64)
    n_nodes = int(ns.sum())
    # None when there are no nodes; the arrays are indexed only when n_nodes (hence n_inst) > 0
    cat: dict[str, Any] = {k: np.concatenate([s[k][1:] for s in s2]) if n_nodes else None
           for k in ("count", "sum", "first", "mask_sum", "center_max", "centre", "species_sum")
           if sp is not None or k != "species_sum"}
    if n_nodes:
        pr = _compact(pairs, off) if len(pairs) else np.zeros((0, 2), np.int64)
        pr = pr[cat["centre"][pr[:, 0]] == cat["centre"][pr[:, 1]]]
        inst = union_find(n_nodes, pr)
        valid = cat["count"] > 0
        _, inst_v = np.unique(inst[valid], return_inverse=True)
        n_inst = int(inst_v.max()) + 1 if valid.any() else 0
    else:
        valid = np.zeros(0, bool)
        inst_v = np.zeros(0, np.int64)
        n_inst = 0
    count = np.bincount(inst_v, weights=cat["count"][valid], minlength=n_inst).astype(np.int64) if n_inst else np.zeros(0, np.int64)
    sums = (np.stack([np.bincount(inst_v, weights=cat["sum"][valid, a], minlength=n_inst) for a in range(3)], axis=1)
            if n_inst else np.zeros((0, 3)))
    msum = np.bincount(inst_v, weights=cat["mask_sum"][valid], minlength=n_inst) if n_inst else np.zeros(0)
    first = np.full(n_inst, np.iinfo(np.int64).max, dtype=np.int64)
    cmax = np.full(n_inst, -np.inf, dtype=np.float64)
    if n_inst:
        np.minimum.at(first, inst_v, cat["first"][valid])
        np.fmax.at(cmax, inst_v, cat["center_max"][valid])
    centroids = sums / np.maximum(count, 1)[:, None]
    size_ok = count >= p.min_particle_size
    min_score: float | np.ndarray = p.min_score
    if sp is not None:  # integer sums per instance, then the species and its own minimum size
        k = int(s2[0]["species_sum"].shape[1]) if s2 else 0
        ssum = np.zeros((n_inst, k), np.int64)
        if n_inst:
            np.add.at(ssum, inst_v, cat["species_sum"][valid])
        species, class_score = instance_species(ssum, count)
        size_ok = species_size_keep(species, count, sp, p.min_particle_size)
        if sp.min_score:  # each species' own score threshold
            min_score = np.asarray(sp.min_score, dtype=np.float64)[species]
    # fragments and low-scoring particles go before the outlier filter: they are nobody's neighbour
    kept = size_ok & score_keep(cmax, min_score)
    if p.filter_outlier:
        big = np.flatnonzero(kept)
        kept[big] = outlier_keep(centroids[big], p.neighbor_number, p.distance_threshold)
    order = np.flatnonzero(kept)[np.argsort(first[kept], kind="stable")]
    final_of_inst = np.zeros(n_inst, dtype=np.uint32)
    final_of_inst[order] = np.arange(1, len(order) + 1, dtype=np.uint32)
    node_final = np.zeros(n_nodes, dtype=np.uint32)
    node_final[np.flatnonzero(valid)] = final_of_inst[inst_v]
    maps = [np.concatenate([[0], node_final[off[b] : off[b] + ns[b]]]).astype(np.uint32) for b in range(len(s2))]
    extra = {} if sp is None else {"species": species[order], "class_scores": class_score[order]}
    return {
        **extra,
        "maps": maps,
        "centers": centroids[order],
        "n_voxels": count[order],
        "scores": msum[order] / np.maximum(count[order], 1),
        "center_scores": np.where(np.isneginf(cmax[order]), np.nan, cmax[order]),
        "n_instances": n_inst,
    }


# --------------------------------------------------------------------------- public


def postprocess(mask: Any, center: Any, params: PostprocessParams | None = None, *,
                species: Any = None, species_names: Sequence[str] = (), species_params: SpeciesParams | None = None,
                scratch: str | os.PathLike[str] | None = None, progress: bool = False,
                **kwargs: Any) -> Detections:
    """Instance labels and particle centres from the predicted maps, block by block on Dask.

    Parameters
    ----------
    mask : dask.array.Array, shape (Z, Y, X)
        Mask probability map.  Its chunks are the blocks of the computation
        (numpy or Zarr arrays are wrapped with 128³ chunks).
    center : dask.array.Array, shape (Z, Y, X)
        Centre map; rechunked to ``mask``'s chunks if they differ.
    params : PostprocessParams, optional
        All parameters; keyword arguments (``mask_threshold=0.2``, ...) override fields.
    species : dask.array.Array of uint8, shape (K, Z, Y, X), optional
        Quantized species probabilities (:func:`~._species.quantize_species`) of a multi-species
        network; each particle then gets the species of highest mean probability (exact, see ``_species``).
    species_names : sequence of str
        The K species' names (default ``species0``, ``species1``, ...).
    species_params : SpeciesParams, optional
        Per-species minimum sizes and the species to keep.
    scratch : path-like, optional
        A directory where the second pass stores the block instance pieces
        (int32 Zarr, ``pieces.zarr``), so that computing ``labels`` reads them
        instead of recomputing them (faster; the directory must stay until
        ``labels`` has been computed, then it may be deleted).  Without it
        ``labels`` recomputes the pieces from ``mask`` (pure, no side files).
    progress : bool
        Progress bars on stderr.

    Returns
    -------
    Detections
        ``labels`` (lazy uint32, same shape and chunks as ``mask``), ``centers``
        (N, 3) float64 centroids (z, y, x, voxels; row i = label i + 1),
        ``n_voxels``, ``scores`` (mean mask probability), ``center_scores``
        (centre-map peak over the particle, the ranking score).

    Notes
    -----
    Runs two passes over the maps now (computing the tables) and a third one,
    lazily, when ``labels`` is computed; see the module docstring for the
    algorithm and why it is exact.  The work runs on the active
    :class:`distributed.Client` if there is one.  The driver holds per-label and
    per-centre tables only.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> m = np.zeros((20, 20, 20), np.float32); m[5:10, 5:10, 5:10] = 1
    >>> c = np.zeros_like(m); c[7, 7, 7] = 1
    >>> det = postprocess(da.from_array(m, chunks=8), da.from_array(c, chunks=8),
    ...                   remove_min_size=1, filter_outlier=False)
    >>> det.centers
    array([[7., 7., 7.]])
    >>> int(det.labels.max().compute())
    1
    """
    p = PostprocessParams.from_kwargs(params, **kwargs)
    clock = [time.perf_counter()]
    mask = _as_dask(mask)
    center = _as_dask(center, mask.chunks)
    if mask.ndim != 3 or mask.shape != center.shape:
        raise ParameterError(f"mask and center maps must be 3D of the same shape, got {mask.shape} and {center.shape}")
    if center.chunks != mask.chunks:
        center = center.rechunk(mask.chunks)
    sp: SpeciesParams | None = None
    if species is not None:
        species = _as_dask(species, ((int(species.shape[0]),), *mask.chunks))
        if species.ndim != 4 or species.shape[1:] != mask.shape or species.dtype != np.uint8:
            raise ParameterError(f"the species map must be uint8 (K, {', '.join(map(str, mask.shape))}), "
                                 f"got {species.dtype} {species.shape}")
        species = species.rechunk(((int(species.shape[0]),), *mask.chunks))
        sp = species_params or SpeciesParams()
        sp.check(int(species.shape[0]))
        species_names = tuple(species_names) or tuple(f"species{i}" for i in range(int(species.shape[0])))
        if len(species_names) != species.shape[0]:
            raise ParameterError(f"{len(species_names)} species names for {species.shape[0]} species channels")
    shape = cast(tuple[int, int, int], tuple(int(s) for s in mask.shape))  # 3D: checked above
    distances = sp.center_min_distance if sp is not None else ()
    check_plan(shape, mask.chunks, _fusion_reach(p, distances))  # a graph that cannot be held: one line, before any work
    bounds, grid = _grid(mask.chunks)
    blocks = list(itertools.product(*(range(g) for g in grid)))
    boxes = [_box(bounds, idx) for idx in blocks]
    bindex = {idx: k for k, idx in enumerate(blocks)}
    token = tokenize(mask, center, p, species, sp)

    # pass 1: the centre map's halo comes from the neighbours' boundary slabs (width h)
    h = halo_width(_fusion_reach(p, distances))
    shell_n, p1_n = (f"cryodet-{step}-{token}" for step in ("shell", "pass1"))
    dsk: dict[Any, Any] = {}
    for idx in blocks:
        dsk[(shell_n, *idx)] = (functools.partial(block_slabs, width=h), block_ref(center, idx))
    p1 = {}
    for idx in blocks:
        box = boxes[bindex[idx]]
        # blocks meeting the box widened by h (the 26 around it, more when chunks are thinner than h)
        ranges = []
        for a in range(3):
            lo_v, hi_v = max(0, box[a][0] - h), min(shape[a], box[a][1] + h)
            ranges.append(range(int(np.searchsorted(bounds[a], lo_v, side="right")) - 1,
                                int(np.searchsorted(bounds[a], hi_v - 1, side="right"))))
        nboxes, slab_keys = [], []
        for j in itertools.product(*ranges):
            if j != idx:
                nboxes.append(boxes[bindex[j]])
                slab_keys.append((shell_n, *j))
        p1[idx] = (p1_n, *idx)
        if distances:  # per-species fusion: the centres' species come from the species map's block
            dsk[p1[idx]] = (functools.partial(_pass1_species_task, nboxes=tuple(nboxes), box=box, shape=shape,
                                              index=bindex[idx], p=p, distances=distances),
                            block_ref(mask, idx), block_ref(center, idx), (species.name, 0, *idx), slab_keys)
        else:
            dsk[p1[idx]] = (functools.partial(_pass1_task, nboxes=tuple(nboxes), box=box, shape=shape,
                                              index=bindex[idx], p=p),
                            block_ref(mask, idx), block_ref(center, idx), slab_keys)
    pair_keys = _pair_tasks(dsk, f"cryodet-pairs1-{token}", p1, bounds, grid, p.connectivity)
    s1, pairs1 = _run(f"cryodet-pp1-{token}", dsk, pair_keys, [mask, center] + ([species] if distances else []),
                      progress, "post-processing: components and centres")
    clock.append(time.perf_counter())
    tables, peaks, info = _tables_from_components(list(s1), pairs1, boxes, p)
    clock.append(time.perf_counter())

    # pass 2
    scratch_path = _scratch_array(scratch, mask) if scratch is not None else None
    token2 = tokenize(token, [t.kept for t in tables], scratch_path)
    p2_n = f"cryodet-pass2-{token2}"
    dsk = {}
    p2 = {}
    for idx in blocks:
        b = bindex[idx]
        p2[idx] = (p2_n, *idx)
        dsk[p2[idx]] = (functools.partial(_pass2_block if species is None else _pass2_species, box=boxes[b],
                                          index=b, shape=shape, p=p, tables=tables[b], scratch=scratch_path),
                        block_ref(mask, idx), block_ref(center, idx), *([] if species is None else [(species.name, 0, *idx)]))
    pair_keys = _pair_tasks(dsk, f"cryodet-pairs2-{token2}", p2, bounds, grid, p.connectivity)
    deps = [mask, center] + ([] if species is None else [species])
    s2, pairs2 = _run(f"cryodet-pp2-{token2}", dsk, pair_keys, deps, progress, "post-processing: instances")
    clock.append(time.perf_counter())
    res = _instances(list(s2), pairs2, p, sp)
    info["n_instances"] = res["n_instances"]
    clock.append(time.perf_counter())
    info["seconds"] = dict(zip(("pass1", "reduce1", "pass2", "reduce2"), np.diff(clock).round(3).tolist()))

    # pass 3 (lazy)
    name = "cryodet-labels-" + tokenize(mask, p, [(t.kept, t.seg_len) for t in tables], res["maps"], scratch_path)
    dsk = {}
    for idx in blocks:
        b = bindex[idx]
        if scratch_path is None:
            dsk[(name, *idx)] = (_relabel_block, block_ref(mask, idx), boxes[b], p, tables[b], res["maps"][b])
        else:
            dsk[(name, *idx)] = (_relabel_cached, boxes[b], scratch_path, res["maps"][b])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[mask] if scratch_path is None else [])
    labels = da.Array(graph, name, chunks=mask.chunks, dtype=np.uint32, meta=np.empty((0, 0, 0), np.uint32))
    return Detections(labels=labels, centers=res["centers"].astype(np.float64), n_voxels=res["n_voxels"],
                      scores=res["scores"].astype(np.float64), peaks=peaks, params=p, stats=info,
                      center_scores=res["center_scores"].astype(np.float64),
                      species=res.get("species"), class_scores=res.get("class_scores"),
                      species_names=tuple(species_names) if sp is not None else ())
