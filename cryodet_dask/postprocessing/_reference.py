"""Whole-volume, single-process implementation of the post-processing semantics.

This is the ground truth the chunked implementation is tested against: it
holds whole arrays in memory and follows the definitions literally, with
:func:`scipy.ndimage.label`, :func:`scipy.ndimage.maximum_filter` (mirror mode)
and :func:`skimage.measure.label`.  Use it for small volumes and tests only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ._outliers import outlier_keep
from ._params import PostprocessParams
from ._species import SpeciesParams

__all__ = ["ReferenceResult", "postprocess_reference", "nearest_centre_bruteforce"]


@dataclass(frozen=True)
class ReferenceResult:
    """Output of :func:`postprocess_reference` (same meaning as :class:`Detections`)."""

    labels: np.ndarray  # uint32 (z, y, x), 0 = background, 1..N
    centers: np.ndarray  # (N, 3) float64 centroids, z, y, x in voxels
    n_voxels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float64 mean mask probability
    peaks: np.ndarray  # (K, 3) int64 centre voxels (local maxima, after fusion), raster order
    center_scores: np.ndarray = None  # type: ignore[assignment]  # (N,) float64 centre-map peak (ranking score)
    species: np.ndarray | None = None  # (N,) int64 species index, with a species map
    class_scores: np.ndarray | None = None  # (N,) float64 mean probability of that species

    def __iter__(self) -> Iterator[np.ndarray]:  # labels, centers, n_voxels, scores
        return iter((self.labels, self.centers, self.n_voxels, self.scores))


def nearest_centre_bruteforce(points: np.ndarray, centres: np.ndarray, batch: int = 1 << 16) -> np.ndarray:
    """Index of the nearest centre for every point; ties go to the lowest index.

    Exact: squared distances in int64.
    """
    points = np.asarray(points, dtype=np.int64)
    centres = np.asarray(centres, dtype=np.int64)
    out = np.empty(len(points), dtype=np.int64)
    step = max(1, batch // max(len(centres), 1))
    for s in range(0, len(points), step):
        p = points[s : s + step]
        d = ((p[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        out[s : s + step] = np.argmin(d, axis=1)  # first minimum = lowest index
    return out


def _nearest_all(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest centre (lowest index on ties), KD-tree with a brute-force fallback on ties."""
    if len(centres) <= 32 or len(points) * len(centres) < 1 << 22:
        return nearest_centre_bruteforce(points, centres)
    k = min(8, len(centres))
    tree = cKDTree(centres.astype(np.float64))
    _, idx = tree.query(points.astype(np.float64), k=k)
    d2 = ((points[:, None, :].astype(np.int64) - centres[idx].astype(np.int64)) ** 2).sum(-1)
    best = d2.min(axis=1)
    cand = np.where(d2 == best[:, None], idx, np.iinfo(np.int64).max)
    out: np.ndarray = cand.min(axis=1)
    unsure = d2[:, -1] == best  # all k candidates tie: there may be more
    if unsure.any():
        out[unsure] = nearest_centre_bruteforce(points[unsure], centres)
    return out


def fused_peaks(c: np.ndarray, peaks: np.ndarray, min_distance: float | np.ndarray) -> np.ndarray:
    """Centre fusion, literally: the peaks ``p`` such that every voxel ``q`` of the volume with
    ``0 < |q - p| <= min_distance`` has ``c[q] < c[p]``, or ``c[q] == c[p]`` and ``q`` after ``p``
    in raster order.  ``c`` is the thresholded centre map; one peak at a time, on the cube around it.
    ``min_distance``: one for all peaks, or one per peak."""
    if len(peaks) == 0:
        return peaks
    dist = np.broadcast_to(np.asarray(min_distance, dtype=np.float64), (len(peaks),))
    shape = np.array(c.shape)
    keep = np.ones(len(peaks), dtype=bool)
    for k, pk in enumerate(peaks):
        min_distance = float(dist[k])
        r = int(np.floor(min_distance))
        lo = np.maximum(pk - r, 0)
        hi = np.minimum(pk + r + 1, shape)
        cube = c[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        grids = np.meshgrid(*[np.arange(lo[a], hi[a]) for a in range(3)], indexing="ij")
        d2 = sum((grids[a] - pk[a]) ** 2 for a in range(3))
        ball = (d2 <= min_distance ** 2) & (d2 > 0)
        lin = np.ravel_multi_index(tuple(grids), c.shape)
        me = np.ravel_multi_index(tuple(pk), c.shape)
        v = c[tuple(pk)]
        beaten = ball & ((cube > v) | ((cube == v) & (lin < me)))
        keep[k] = not beaten.any()
    return peaks[keep]


def postprocess_reference(mask: np.ndarray, center: np.ndarray,
                          params: PostprocessParams | None = None, *, species: np.ndarray | None = None,
                          species_params: SpeciesParams | None = None, **kwargs: Any) -> ReferenceResult:
    """Post-process whole in-memory maps (the definition; see the module notes).

    Parameters
    ----------
    mask, center : ndarray, shape (Z, Y, X)
        Mask-probability and centre maps.
    params : PostprocessParams, optional
        Parameters; keyword arguments override single fields.
    species : ndarray of uint8, shape (K, Z, Y, X), optional
        Quantized species probabilities: each particle's species is the most frequent
        per-voxel argmax over its voxels (ties to the lower index), its ``class_score``
        the mean probability of that species; per-species minimum sizes and the species
        selection of ``species_params`` apply with ``min_particle_size``, and its per-species
        fusion distances by the species at each centre voxel (its argmax).

    Returns
    -------
    ReferenceResult
        ``labels`` (uint32), ``centers`` (N, 3), ``n_voxels``, ``scores`` (mean mask
        probability per particle), ``center_scores`` (largest centre-map value over
        each particle, NaN ignored) and the centre voxels ``peaks``.
    """
    try:  # imported here: heavy, and only the reference needs it (an independent labeller)
        from skimage.measure import label as sk_label
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError("postprocess_reference needs scikit-image: pip install 'cryodet-dask[test]'") from exc

    p = PostprocessParams.from_kwargs(params, **kwargs)
    mask = np.asarray(mask)
    center = np.asarray(center)
    struct = ndi.generate_binary_structure(3, p.connectivity)
    # 1. foreground components, small ones removed (global sizes)
    comp, _ = ndi.label(mask > p.mask_threshold, structure=struct)
    sizes = np.bincount(comp.ravel())
    keep = sizes >= p.remove_min_size
    keep[0] = False
    comp = np.where(keep[comp], comp, 0)
    # 2. centres: strict local maxima of the thresholded centre map, mirror border
    c = np.where(center >= p.center_threshold, center, 0).astype(center.dtype)
    fp = np.ones((3, 3, 3), dtype=bool)
    fp[1, 1, 1] = False
    peaks = np.argwhere(c > ndi.maximum_filter(c, footprint=fp, mode="mirror")).astype(np.int64)
    # 2b. centre fusion: no larger (or equal and raster-earlier) value within the ball of radius D
    sp_params = species_params or SpeciesParams()
    if species is not None and sp_params.center_min_distance:  # each centre by its voxel's species
        at = species[(slice(None), *peaks.T)]
        peaks = fused_peaks(c, peaks, np.asarray(sp_params.center_min_distance)[np.argmax(at, axis=0)])
    else:
        peaks = fused_peaks(c, peaks, p.center_min_distance)
    # 3. nearest-centre assignment (-1: the component stays whole)
    fg_idx = np.flatnonzero(comp)
    fg_pts = np.stack(np.unravel_index(fg_idx, comp.shape), axis=1).astype(np.int64)
    fg_comp = comp.ravel()[fg_idx]
    assign = np.full(len(fg_idx), -1, dtype=np.int64)
    if len(peaks):
        if not p.check_center:
            assign = _nearest_all(fg_pts, peaks)
        else:
            peak_comp = comp[tuple(peaks.T)]
            for cid in np.unique(peak_comp[peak_comp > 0]):
                mine = np.flatnonzero(peak_comp == cid)
                if len(mine) < 2:
                    continue
                sel = fg_comp == cid
                assign[sel] = mine[nearest_centre_bruteforce(fg_pts[sel], peaks[mine])]
    # 4. instances: connected regions sharing (component, centre)
    key = np.zeros(comp.size, dtype=np.int64)
    key[fg_idx] = fg_comp * (len(peaks) + 1) + (assign + 1)
    inst = sk_label(key.reshape(comp.shape), background=0, connectivity=p.connectivity)
    flat = inst.ravel()
    idx = np.flatnonzero(flat)
    labs = flat[idx]
    n = int(flat.max()) if flat.size else 0
    counts = np.bincount(labs, minlength=n + 1)
    zyx = np.stack(np.unravel_index(idx, comp.shape), axis=1).astype(np.float64)
    centroids: np.ndarray = np.stack([np.bincount(labs, weights=zyx[:, a], minlength=n + 1) for a in range(3)], axis=1)
    centroids = centroids[1:] / np.maximum(counts[1:, None], 1)
    msum = np.bincount(labs, weights=mask.ravel()[idx].astype(np.float64), minlength=n + 1)[1:]
    cmax = np.full(n + 1, -np.inf)
    np.fmax.at(cmax, labs, center.ravel()[idx].astype(np.float64))
    cmax = np.where(np.isneginf(cmax[1:]), np.nan, cmax[1:])
    first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, labs, idx)
    first = first[1:]
    counts = counts[1:]
    # 5a. species: the largest sum of quantized probabilities over the instance (lowest index on ties)
    size_ok = counts >= p.min_particle_size
    min_score: Any = p.min_score
    if species is not None:
        k = species.shape[0]
        q = species.reshape(k, -1)[:, idx]
        qsum = np.stack([np.bincount(labs, weights=q[s].astype(np.float64), minlength=n + 1)
                         for s in range(k)], axis=1)[1:]
        sp = np.argmax(qsum, axis=1)
        cls_score = qsum[np.arange(n), sp] / (255.0 * np.maximum(counts, 1))
        size_ok = counts >= (np.asarray(sp_params.min_particle_size)[sp] if sp_params.min_particle_size
                             else p.min_particle_size)
        if sp_params.keep:
            size_ok &= np.isin(sp, sp_params.keep)
        if sp_params.min_score:  # each species' own score threshold
            min_score = np.asarray(sp_params.min_score, dtype=np.float64)[sp]
    # 5b. instances smaller than min_particle_size or scoring below min_score are removed (before the
    #     outlier filter); a NaN score (all-NaN centre map over the particle) does not remove it, and
    #     min_score 0 is no score filter (a negative centre-map peak stays too); with species, each
    #     instance is judged by its own species' threshold when per-species ones are given
    kept = size_ok & ~((cmax < min_score) & (np.asarray(min_score) > 0))
    # 6. outlier filter on the centroids of the remaining instances
    if p.filter_outlier:
        big = np.flatnonzero(kept)
        kept[big] = outlier_keep(centroids[big], p.neighbor_number, p.distance_threshold)
    # 7. numbering by first voxel in raster order
    order = np.flatnonzero(kept)[np.argsort(first[kept], kind="stable")]
    new = np.zeros(n + 1, dtype=np.uint32)
    new[order + 1] = np.arange(1, len(order) + 1, dtype=np.uint32)
    labels = new[inst]
    return ReferenceResult(
        labels=labels,
        centers=centroids[order],
        n_voxels=counts[order].astype(np.int64),
        scores=msum[order] / counts[order] if len(order) else np.zeros(0),
        peaks=peaks,
        center_scores=cmax[order],
        species=None if species is None else sp[order].astype(np.int64),
        class_scores=None if species is None else cls_score[order],
    )
