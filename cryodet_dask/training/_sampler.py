"""Patches for training, read lazily from chunked tomograms (only the patch is computed)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage

from .._progress import block_summaries
from ..errors import InputError, ParameterError
from ..species import SpeciesTable
from ._species import read_particle_species, species_codes, species_target
from ._targets import CENTER_TARGETS, make_center_target, mask_target

__all__ = ["TrainingVolume", "open_training_volume", "particle_table", "read_patch", "sample_origins",
           "split_region"]

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _block_stats(block: np.ndarray, offset: tuple[int, int, int]) -> dict[str, np.ndarray]:
    block = np.asarray(block)
    ids = np.unique(block)
    ids = ids[ids > 0]
    if ids.size == 0:
        e = np.zeros((0, 3))
        return {"ids": ids.astype(np.int64), "count": np.zeros(0), "sum": e, "lo": e, "hi": e}
    count = np.asarray(ndimage.sum_labels(np.ones(block.shape, np.float64), block, ids))
    com = np.asarray(ndimage.center_of_mass(np.ones(block.shape, np.float64), block, ids)).reshape(-1, 3)
    lo = np.zeros((ids.size, 3))
    hi = np.zeros((ids.size, 3))
    objs = ndimage.find_objects(block.astype(np.int64, copy=False) if block.dtype.kind == "u" else block)
    for j, i in enumerate(ids):
        sl = objs[int(i) - 1]
        lo[j] = [s.start for s in sl]
        hi[j] = [s.stop for s in sl]
    off = np.asarray(offset, np.float64)
    return {"ids": ids.astype(np.int64), "count": count, "sum": (com + off) * count[:, None], "lo": lo + off,
            "hi": hi + off}


def particle_table(labels: da.Array) -> dict[str, np.ndarray]:
    """Centroids and bounding boxes of the particles of an instance label map, chunk by chunk.

    Parameters
    ----------
    labels : dask.array.Array
        Instance labels (z, y, x), 0 = background.

    Returns
    -------
    dict
        ``ids`` (n,), ``centroid`` (n, 3) in voxels (z, y, x), ``lo``/``hi``
        (n, 3) bounding box (``hi`` exclusive), ``count`` (n,) voxels.

    Notes
    -----
    Each chunk reports, per id it contains, its voxel count, coordinate sum
    and bounding box; the summaries are combined, so a particle spanning
    chunks is counted once and the whole map is never in memory.
    """
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in labels.chunks]
    parts = block_summaries(_block_stats, [labels],
                            extra=lambda idx: tuple(int(offsets[a][i]) for a, i in enumerate(idx)))
    ids = np.concatenate([p["ids"] for p in parts]) if parts else np.zeros(0, np.int64)
    if ids.size == 0:
        z = np.zeros((0, 3))
        return {"ids": ids, "centroid": z, "lo": z, "hi": z, "count": np.zeros(0)}
    uniq, inv = np.unique(ids, return_inverse=True)
    count = np.zeros(uniq.size)
    csum = np.zeros((uniq.size, 3))
    lo = np.full((uniq.size, 3), np.inf)
    hi = np.full((uniq.size, 3), -np.inf)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("count", "sum", "lo", "hi")}
    np.add.at(count, inv, cat["count"])
    np.add.at(csum, inv, cat["sum"])
    np.minimum.at(lo, inv, cat["lo"])
    np.maximum.at(hi, inv, cat["hi"])
    return {"ids": uniq, "centroid": csum / count[:, None], "lo": lo, "hi": hi, "count": count}


@dataclass(frozen=True)
class TrainingVolume:
    """One (tomogram, labels) pair ready for patch sampling.

    Attributes
    ----------
    image, labels : dask.array.Array
        Tomogram and instance labels, (z, y, x), same shape.
    center : dask.array.Array or None
        Precomputed centre target, if given (else made from ``labels``).
    mean, std : float
        Global statistics of the whole tomogram (z-score normalization).
    particles : dict
        :func:`particle_table` of ``labels``.
    voxel_size : float or None
        Å.
    name : str
        Where it came from (for the training description).
    margin : int
        Extra voxels of labels read around a patch so the per-particle
        distance of particles cut by the patch border is right.
    species : (ids, codes) or None
        For a multi-species network: the label map's particle ids (sorted) and
        their species codes (``k + 1`` for species ``k``), :func:`~._species.species_codes`.
    """

    image: da.Array
    labels: da.Array
    center: da.Array | None
    mean: float
    std: float
    particles: dict[str, np.ndarray] = field(repr=False)
    voxel_size: float | None
    name: str
    margin: int
    species: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]


def _as_dask(obj: Any, what: str) -> tuple[da.Array, float | None, str]:
    from ..io import load

    if isinstance(obj, (str, os.PathLike)):
        t = load(Path(obj))
        return t.data, t.voxel_size, str(obj)
    if isinstance(obj, da.Array):
        return obj, None, f"<{what} dask array>"
    if isinstance(obj, np.ndarray):
        return da.from_array(obj, chunks=64), None, f"<{what} array>"
    raise ParameterError(f"{what}: expected a file path or an array, got {type(obj).__name__}")


def open_training_volume(tomogram: Any, labels: Any, center: Any | None = None,
                         max_margin: int = 32, *, species_of: Any = None,
                         species: SpeciesTable | None = None) -> TrainingVolume:
    """Open a (tomogram, labels[, centre target]) triple lazily and compute its summaries.

    With ``species`` (a multi-species network), ``species_of`` gives each particle id's species
    name: a mapping or a CSV with ``id`` and ``class`` columns (:func:`~._species.read_particle_species`).

    The tomogram's mean and standard deviation and the label map's particle
    table are computed chunk-wise once; nothing else is read.
    """
    img, vs, name = _as_dask(tomogram, "tomogram")
    lab, _, lname = _as_dask(labels, "labels")
    if img.ndim != 3:
        raise InputError(f"{name}: training tomograms must be 3D, got shape {img.shape}")
    if lab.shape != img.shape:
        raise InputError(f"{lname}: label map shape {lab.shape} differs from tomogram shape {img.shape}")
    if lab.dtype.kind not in "iub":
        raise InputError(f"{lname}: label map must hold integer particle ids, got {lab.dtype}")
    cen = None
    if center is not None:
        cen, _, cname = _as_dask(center, "center")
        if cen.shape != img.shape:
            raise InputError(f"{cname}: centre target shape {cen.shape} differs from tomogram shape {img.shape}")
    from ..prediction import global_stats  # the one definition of the global z-score (NaN refused)

    mean, std = global_stats(img)
    table = particle_table(lab)
    if table["ids"].size == 0:
        raise InputError(f"{lname}: the label map contains no particles (all zero)")
    extent = float(np.max(table["hi"] - table["lo"])) if table["ids"].size else 0.0
    margin = int(min(max_margin, np.ceil(extent) + 1))
    codes = None
    if species is not None:
        if species_of is None:
            raise InputError(f"{lname}: a multi-species training needs the species of each particle "
                             f"(a table with 'id' and 'class' columns)")
        codes = species_codes(table["ids"], read_particle_species(species_of), species, lname)
    return TrainingVolume(img, lab, cen, float(mean), std, table, vs, name, margin, codes)


def split_region(shape: tuple[int, int, int], fraction: float, min_size: int) -> tuple[Region, Region | None]:
    """Split a volume into a training and a validation slab along its longest in-plane axis (y or x).

    The validation slab is the last ``fraction`` of that axis (at least
    ``min_size`` voxels); patches are taken entirely inside one slab, so the
    validation input voxels are never seen in training.
    """
    full: Region = ((0, shape[0]), (0, shape[1]), (0, shape[2]))
    if fraction <= 0:
        return full, None
    axis = 1 if shape[1] >= shape[2] else 2
    n = shape[axis]
    nval = max(int(round(fraction * n)), min_size)
    if n - nval < min_size:
        raise ParameterError(
            f"volume of shape {shape} is too small to split off a validation part of {nval} voxels "
            f"with patches of {min_size}; give validation tomograms or a smaller patch size")
    train = list(full)
    val = list(full)
    train[axis] = (0, n - nval)
    val[axis] = (n - nval, n)
    return tuple(train), tuple(val)  # type: ignore[return-value]


def sample_origins(vol: TrainingVolume, region: Region, patch: tuple[int, int, int], n: int,
                   rng: np.random.Generator, jitter: int, background_fraction: float) -> np.ndarray:
    """Patch origins (n, 3): centred on random particles of ``region`` ± ``jitter``, or random positions.

    Origins are clamped so the patch stays inside ``region`` (along an axis
    shorter than the patch it starts at the region start and is zero-padded).
    """
    lo = np.array([r[0] for r in region])
    hi = np.array([r[1] for r in region])
    p = np.asarray(patch)
    c = vol.particles["centroid"]
    inside = np.all((c >= lo) & (c < hi), axis=1)
    cand = c[inside]
    out = np.zeros((n, 3), np.int64)
    for k in range(n):
        if cand.shape[0] == 0 or rng.random() < background_fraction:
            centre = lo + rng.random(3) * (hi - lo)
        else:
            centre = cand[rng.integers(cand.shape[0])] + rng.integers(-jitter, jitter + 1, size=3)
        start = np.round(centre - p / 2).astype(np.int64)
        start = np.minimum(np.maximum(start, lo), np.maximum(hi - p, lo))
        out[k] = start
    return out


def _read(arr: da.Array, start: np.ndarray, size: np.ndarray, fill: float = 0) -> np.ndarray:
    """``arr[start:start+size]`` with out-of-array parts filled with ``fill`` (only that window is computed)."""
    shape = np.asarray(arr.shape)
    a = np.maximum(start, 0)
    b = np.minimum(start + size, shape)
    out = np.full(tuple(int(s) for s in size), fill, dtype=arr.dtype)
    if np.all(b > a):
        win = arr[a[0]:b[0], a[1]:b[1], a[2]:b[2]].compute(scheduler="synchronous")
        o = a - start
        out[o[0]:o[0] + win.shape[0], o[1]:o[1] + win.shape[1], o[2]:o[2] + win.shape[2]] = win
    return out


def read_patch(vol: TrainingVolume, start: np.ndarray, patch: tuple[int, int, int],
               heads: tuple[str, ...], center_target: str = "distance") -> tuple[np.ndarray, np.ndarray]:
    """Normalized input patch and its targets.

    Parameters
    ----------
    vol : TrainingVolume
    start : numpy.ndarray
        Patch origin (z, y, x); parts outside the volume are zero-padded.
    patch : tuple of int
        Patch size.
    heads : tuple of str
        Targets to make, in order (``"mask"``, ``"center"``, ``"species"``: the species
        code of each voxel, 0 for background, from ``vol.species``).
    center_target : {"distance", "gaussian"}
        The centre target (:func:`~cryodet_dask.training.make_center_target`).
        ``"distance"`` uses the volume's precomputed centre target if it has
        one; ``"gaussian"`` is always computed from the labels.  A target
        computed from the labels is computed on the patch plus ``vol.margin``
        voxels, so a particle cut by the patch border gets the values of the
        whole particle.

    Returns
    -------
    x : numpy.ndarray
        float32 (Z, Y, X): ``(tomogram - mean) / std`` with the whole
        tomogram's statistics; zero outside the tomogram.
    y : numpy.ndarray
        float32 (len(heads), Z, Y, X): binary mask and/or centre target.
    """
    size = np.asarray(patch)
    start = np.asarray(start)
    raw = _read(vol.image, start, size, fill=np.nan if vol.image.dtype.kind == "f" else 0).astype(np.float32)
    x = (raw - np.float32(vol.mean)) / np.float32(vol.std)
    x[~np.isfinite(x)] = 0.0
    targets = []
    if center_target not in CENTER_TARGETS:
        raise ParameterError(f"center_target must be one of {list(CENTER_TARGETS)}, got {center_target!r}")
    precomputed = vol.center if center_target == "distance" else None  # the gaussian is made from the labels
    m = vol.margin if ("center" in heads and precomputed is None) else 0
    lab = _read(vol.labels, start - m, size + 2 * m)
    core = tuple(slice(m, m + int(s)) for s in size)
    for h in heads:
        if h == "mask":
            targets.append(mask_target(lab[core]))
        elif h == "center":
            if precomputed is not None:
                targets.append(_read(precomputed, start, size).astype(np.float32))
            else:
                targets.append(make_center_target(lab, center_target)[core])
        elif h == "species":
            if vol.species is None:
                raise ParameterError(f"{vol.name}: a species target needs the species of its particles")
            targets.append(species_target(lab[core], *vol.species))
    return x, np.stack(targets)
