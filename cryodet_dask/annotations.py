"""Label maps from particle coordinate tables (any format of :mod:`cryodet_dask.particles`).

Most users have particle lists, not label maps; training needs an instance
label map (0 = background, particle ``i`` = ``i``).  This module reads a
coordinate table and paints one sphere of a given radius — or a template's
mask at the particle's orientation — per particle, block by block, so the map
of a tomogram larger than memory is written chunk by chunk.  Tables are read by
:func:`cryodet_dask.particles.read_particles` (:func:`read_coordinates` wraps it).

Coordinates are (z, y, x) in voxels inside the package; the x, y, z order of
TXT and STAR files is converted at the file boundary.
"""

from __future__ import annotations

import logging
import os

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from pathlib import Path

import dask.array as da
import numpy as np

from .errors import ParameterError

__all__ = ["ParticleTable", "read_coordinates", "paint_spheres", "paint_masks", "label_map", "write_label_map",
           "template_masks", "parse_class_names", "pick_species", "species_table_path", "write_species_table"]

log = logging.getLogger("cryodet_dask")


@dataclass(frozen=True, eq=False)
class ParticleTable:
    """Particle positions (and orientations) read from a file.

    Attributes
    ----------
    zyx : numpy.ndarray
        (n, 3) float64 centres in voxels, (z, y, x).
    angles : numpy.ndarray or None
        (n, 3) RELION ZYZ Euler angles (rot, tilt, psi) in degrees, if the file has them.
    classes : list of str or None
        Class name per particle, if the file has them.
    source : str
        The file.
    """

    zyx: np.ndarray
    angles: np.ndarray | None
    classes: list[str] | None
    source: str

    def __len__(self) -> int:
        return int(self.zyx.shape[0])


def read_coordinates(path: str | os.PathLike[str], *, voxel_size: float | None = None,
                     shape: Sequence[int] | None = None, tomogram_name: str | None = None,
                     tomogram: Any = None, binning: float | None = None, allow_empty: bool = False,
                     units: str | None = None) -> ParticleTable:
    """Read particle centres from any format :func:`cryodet_dask.particles.read_particles` reads.

    A thin wrapper kept for existing callers: the same reader (every format, units
    resolved or refused, never guessed) returning a :class:`ParticleTable`.

    Parameters
    ----------
    path : path-like
        STAR (RELION 3/4/5, STOPGAP, TomoMan), CSV/TSV (with or without header),
        TXT, copick JSON, IMOD ``.mod``, Dynamo ``.tbl``.
    voxel_size : float, optional
        Å per voxel, to convert coordinates given in Å.
    shape : sequence of int, optional
        Tomogram shape (z, y, x), for centred STAR coordinates (with ``voxel_size``).
    tomogram_name : str, optional
        Keep only rows of this tomogram (``rlnTomoName`` ...).
    tomogram, binning, allow_empty, units
        As for :func:`~cryodet_dask.particles.read_particles`.

    Returns
    -------
    ParticleTable
        Centres in (z, y, x) voxels.
    """
    from .particles import TomogramInfo, read_particles

    if tomogram is None and shape is not None:
        tomogram = TomogramInfo(shape=cast(tuple[int, int, int], tuple(int(v) for v in shape)),  # (z, y, x)
                                voxel_size=voxel_size)
    df = read_particles(path, voxel_size=voxel_size, tomogram=tomogram, tomogram_name=tomogram_name,
                        binning=binning, allow_empty=allow_empty, units=units)
    if tomogram_name is None and "tomo_name" in df.columns and df["tomo_name"].nunique() > 1:
        names = sorted(df["tomo_name"].astype(str).unique())
        log.warning("%s holds particles of %d tomograms (%s); all of them are used — choose one with "
                    "--tomogram-name", path, len(names), ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))
    zyx = df[["z", "y", "x"]].to_numpy(np.float64)
    angles = df[["rot", "tilt", "psi"]].to_numpy(np.float64) if {"rot", "tilt", "psi"} <= set(df.columns) else None
    classes = [str(v) for v in df["class"]] if "class" in df.columns else None
    return ParticleTable(zyx=zyx, angles=angles, classes=classes, source=str(path))


def paint_spheres(shape: Sequence[int], centres: np.ndarray, radius: float | np.ndarray,
                  offset: Sequence[int] | np.ndarray = (0, 0, 0), ids: np.ndarray | None = None) -> np.ndarray:
    """Instance label map of balls.

    Parameters
    ----------
    shape : sequence of int
        Output shape (z, y, x).
    centres : numpy.ndarray
        (n, 3) centres in voxels (z, y, x), in the coordinates of the whole
        volume.
    radius : float or numpy.ndarray
        Radius in voxels (scalar or one per particle).  A voxel belongs to a
        ball when its distance to the centre is <= radius.
    offset : sequence of int
        Index of this array's first voxel in the whole volume (for blocks).
    ids : numpy.ndarray, optional
        Label of each particle (default ``1..n``).

    Returns
    -------
    numpy.ndarray
        int32 labels; where balls overlap, the voxel goes to the nearest
        centre (ties: the smaller id), so the result does not depend on how
        the volume is cut into blocks.

    Examples
    --------
    >>> lab = paint_spheres((1, 1, 9), np.array([[0, 0, 2.0], [0, 0, 6.0]]), 2.0)
    >>> lab[0, 0].tolist()
    [1, 1, 1, 1, 1, 2, 2, 2, 2]
    """
    shape = tuple(int(s) for s in shape)
    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    n = centres.shape[0]
    r = np.broadcast_to(np.asarray(radius, np.float64), (n,))
    if np.any(r <= 0):
        raise ParameterError("sphere radius must be positive")
    ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)
    out = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf)
    off = np.asarray(offset, np.float64)
    for k in range(n):
        c = centres[k] - off
        lo = np.maximum(np.floor(c - r[k]).astype(int), 0)
        hi = np.minimum(np.ceil(c + r[k]).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d2 = (g[0] - c[0]) ** 2 + (g[1] - c[1]) ** 2 + (g[2] - c[2]) ** 2
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        take = (d2 <= r[k] ** 2 + 1e-9) & ((d2 < best[sl]) | ((d2 == best[sl]) & (ids[k] < out[sl])))
        out[sl][take] = ids[k]
        best[sl][take] = d2[take]
    return out


def paint_masks(shape: Sequence[int], corners: np.ndarray, masks: Sequence[np.ndarray],
                offset: Sequence[int] | np.ndarray = (0, 0, 0), ids: np.ndarray | None = None) -> np.ndarray:
    """Instance label map from per-particle boolean masks placed at ``corners`` (first id wins overlaps)."""
    shape = tuple(int(s) for s in shape)
    ids = np.arange(1, len(masks) + 1) if ids is None else np.asarray(ids)
    out = np.zeros(shape, np.int32)
    off = np.asarray(offset, np.int64)
    for k in range(len(masks) - 1, -1, -1):  # paint last first so that the smaller id wins
        m = masks[k]
        c = np.asarray(corners[k], np.int64) - off
        lo = np.maximum(c, 0)
        hi = np.minimum(c + np.asarray(m.shape), shape)
        if np.any(hi <= lo):
            continue
        sub = m[tuple(slice(a - cc, b - cc) for a, b, cc in zip(lo, hi, c))]
        out[tuple(slice(a, b) for a, b in zip(lo, hi))][sub] = ids[k]
    return out


def template_masks(template: str | os.PathLike[str], table: ParticleTable, voxel_size: float,
                   threshold: float = 0.1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Masks of a template rotated to each particle's orientation (``corners`` (n, 3), ``masks``).

    The template (a shipped name such as ``4v4r`` or an MRC path) is
    resampled to ``voxel_size``, thresholded at ``threshold`` × its maximum,
    and rotated by the particle's RELION ZYZ angles (identity when the table
    has none), exactly as the simulator renders particles.
    """
    from .templates import load_template, prepare_template, render_particle, rotation_from_euler

    density, vs, name = load_template(template)
    tpl = prepare_template(density, source_voxel_size=vs, voxel_size=voxel_size, fraction=threshold, name=name)
    angles = table.angles if table.angles is not None else np.zeros((len(table), 3))
    corners = np.zeros((len(table), 3), np.int64)
    masks = []
    for k in range(len(table)):
        rp = render_particle(tpl, table.zyx[k], rotation_from_euler(*angles[k]))
        corners[k] = rp.corner
        masks.append(rp.mask)
    return corners, masks


def label_map(shape: Sequence[int], table: ParticleTable, *, radius: float | np.ndarray | None = None,
              template: str | os.PathLike[str] | None = None, voxel_size: float | None = None,
              template_threshold: float = 0.1, chunks: int | Sequence[int] = 128) -> da.Array:
    """Lazy instance label map (int32 dask array) of a particle table, painted block by block.

    Parameters
    ----------
    shape : sequence of int
        Tomogram shape (z, y, x).
    table : ParticleTable
        Particle centres (and orientations).
    radius : float or numpy.ndarray, optional
        Sphere radius in voxels, one for all or one per particle (e.g. from
        each particle's species); give this or ``template``.
    template : str or path, optional
        Template name or MRC file; its mask is painted at each particle's
        orientation (needs ``voxel_size``).
    chunks : int or sequence of int
        Block shape.

    Returns
    -------
    dask.array.Array
        Particle ``i`` (row ``i - 1`` of the table) has label ``i``.  Each
        block paints only the particles whose extent reaches it, so memory
        per task is one block.
    """
    if (radius is None) == (template is None):
        raise ParameterError("give either a sphere radius or a template")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ParameterError(f"label map shape must be three positive integers, got {shape}")
    ids = np.arange(1, len(table) + 1)
    if len(table) > np.iinfo(np.int32).max:
        raise ParameterError("too many particles for int32 labels")
    outside = np.any((table.zyx < -0.5) | (table.zyx > np.asarray(shape) - 0.5), axis=1)
    if outside.any():
        log.warning("%d of %d particles lie outside the tomogram of shape %s", int(outside.sum()), len(table), shape)
    template_data = None
    if template is not None:
        if not voxel_size:
            raise ParameterError("painting a template needs the tomogram's voxel size")
        corners, masks = template_masks(template, table, float(voxel_size), template_threshold)
        lo = corners.astype(np.float64)
        hi = lo + np.array([m.shape for m in masks], np.float64).reshape(-1, 3)
        template_data = (corners, masks)
    else:
        given = np.asarray(radius, np.float64)
        if given.ndim and given.shape != (len(table),):
            raise ParameterError(f"one radius per particle: {given.shape} radii for {len(table)} particles")
        r = np.broadcast_to(given, (len(table),))
        if not np.all(r > 0):
            bad = radius if not given.ndim else r[~(r > 0)][0]
            raise ParameterError(f"sphere radius must be positive, got {bad}")
        lo = table.zyx - r[:, None]
        hi = table.zyx + r[:, None] + 1
    empty = da.zeros(shape, dtype=np.int32, chunks=chunks)

    def _block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        loc = block_info[None]["array-location"]  # type: ignore[index]
        b0 = np.array([a for a, _ in loc])
        b1 = np.array([b for _, b in loc])
        sel = np.nonzero(np.all((hi > b0) & (lo < b1), axis=1))[0]
        if template_data is None:
            return paint_spheres(block.shape, table.zyx[sel], r[sel], offset=b0, ids=ids[sel])
        corners_, masks_ = template_data
        return paint_masks(block.shape, corners_[sel], [masks_[i] for i in sel], offset=b0, ids=ids[sel])

    return empty.map_blocks(_block, dtype=np.int32)


def write_label_map(path: str | os.PathLike[str], shape: Sequence[int], table: ParticleTable, *,
                    radius: float | np.ndarray | None = None, template: str | os.PathLike[str] | None = None,
                    voxel_size: float | None = None, template_threshold: float = 0.1,
                    chunks: int | Sequence[int] = 128, overwrite: bool = False, progress: bool = False) -> Path:
    """Paint a label map (see :func:`label_map`) and write it to MRC (int16 if the ids fit, else float32)
    or, for a ``.zarr`` path, to a Zarr store, chunk by chunk."""
    from .io import write_mrc

    lab = label_map(shape, table, radius=radius, template=template, voxel_size=voxel_size,
                    template_threshold=template_threshold, chunks=chunks)
    path = Path(path)
    if path.suffix == ".zarr":
        from .errors import OutputExistsError

        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path}: exists (use overwrite)")
        lab.to_zarr(str(path), overwrite=True)
        return path
    if len(table) <= np.iinfo(np.int16).max:
        lab = lab.astype(np.int16)
    else:
        log.warning("%d particles do not fit MRC int16 labels; writing float32", len(table))
        lab = lab.astype(np.float32)
    return write_mrc(lab, path, voxel_size=voxel_size, overwrite=overwrite, progress=progress,
                     label=f"cryodet-dask labels from {Path(table.source).name}")


# ------------------------------------------------------------------------------------------- species of picks

def _class_key(value: object) -> str:
    """A class value as written (``1``, ``1.0`` and `` 1 `` are the same class number)."""
    text = str(value).strip()
    try:
        f = float(text)
    except ValueError:
        return text
    return str(int(f)) if f.is_integer() else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_class_names(text: str | None) -> dict[str, str]:
    """``"1=ribosome,2=proteasome"`` (``--class-names``) as ``{class: species name}``.

    The keys are the classes as the picks give them (a RELION ``rlnClassNumber``, a copick object, a CZII
    ``particle_type``, a CSV ``class``); the names must be copick-safe species names (letters, digits, ``-``).
    """
    from .species import check_species_name

    out: dict[str, str] = {}
    if text is None:
        return out
    for item in [t.strip() for t in str(text).split(",")]:
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise ParameterError(f"class name {item!r}: write CLASS=NAME,... (e.g. 1=ribosome,2=proteasome)")
        k = _class_key(key)
        if k in out:
            raise ParameterError(f"class {key.strip()!r} is named twice in {text!r}")
        out[k] = check_species_name(name.strip())
    return out


def pick_species(table: ParticleTable, class_names: dict[str, str] | None = None, *,
                 required: bool = False) -> list[str] | None:
    """The species name of each pick, from the picks' class column, renamed by ``class_names``.

    The class column is what :func:`~cryodet_dask.particles.read_particles` reads: RELION
    ``rlnClassNumber``, the copick ``pickable_object_name``, CZII ``particle_type``, a CSV ``class``,
    an IMOD object name.  Class numbers (RELION's) are not species names: they need ``class_names``
    (``--class-names 1=ribosome,...``).  Names must be copick-safe (letters, digits, ``-``).

    Parameters
    ----------
    table : ParticleTable
        The picks.
    class_names : dict, optional
        ``{class as written: species name}`` (:func:`parse_class_names`); classes not listed keep their
        name, and must then be names, not numbers.
    required : bool
        Every pick must get a species: a table without a class column, an unnamed class number or a
        name that is not copick-safe is a one-line :class:`ParameterError`.  When false, such a table
        gives ``None`` (with a warning for the last two), as for picks of one kind.

    Returns
    -------
    list of str or None
        One species name per pick (row order; pick ``i`` is label ``i + 1``), or ``None``.
    """
    from .species import check_species_name

    names = class_names or {}
    if table.classes is None:
        if required or names:
            raise ParameterError(f"{table.source}: the picks have no species column (RELION rlnClassNumber, a "
                                 "copick object, a CZII particle_type or a CSV class column); a multi-species "
                                 "training needs the species of every pick")
        return None
    keys = [_class_key(c) for c in table.classes]
    out = [names.get(k, k) for k in keys]
    numbers = sorted({k for k, n in zip(keys, out) if k == n and _is_number(k)}, key=float)
    if numbers:
        msg = (f"{table.source}: the picks' classes {', '.join(numbers[:6])} are numbers (e.g. RELION "
               f"rlnClassNumber), not species names; name them with --class-names "
               f"{','.join(f'{n}=NAME' for n in numbers[:3])}")
        if required or names:
            raise ParameterError(msg)
        log.warning("%s; no species table written", msg)
        return None
    unique = sorted(set(out))
    try:
        for n in unique:
            check_species_name(n)
    except ParameterError as exc:
        if required or names:
            raise ParameterError(f"{table.source}: {exc} (rename it with --class-names OLD=NEW)") from None
        log.warning("%s: %s; no species table written (rename it with --class-names OLD=NEW)", table.source, exc)
        return None
    return out


def species_table_path(labels: str | os.PathLike[str]) -> Path:
    """Where ``cryodet-dask labels`` writes the species of each label id: ``LABELS_species.csv`` beside
    the label map (``labels.mrc`` -> ``labels_species.csv``, ``labels.zarr`` -> ``labels_species.csv``)."""
    path = Path(labels)
    return path.with_name(f"{path.stem if path.suffix in ('.mrc', '.zarr', '.map', '.rec') else path.name}"
                          "_species.csv")


def write_species_table(path: str | os.PathLike[str], species: Sequence[str], *, overwrite: bool = False) -> Path:
    """Write the species of label id ``i + 1`` (pick ``i``) as a CSV with columns ``id`` and ``class``,
    which ``cryodet-dask train --particle-species`` reads; written under a temporary name and renamed."""
    from .errors import OutputExistsError

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (use --overwrite)")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("id,class\n")
        fh.writelines(f"{i},{name}\n" for i, name in enumerate(species, start=1))
    os.replace(tmp, path)
    return path

