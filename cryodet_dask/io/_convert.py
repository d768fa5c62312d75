"""MRC (or Zarr) -> chunked, compressed OME-Zarr v3, streamed chunk by chunk."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import dask.array as da
import numpy as np

from .._progress import compute
from ..errors import CryodetError, ParameterError, TomogramFormatError
from ._atomic import atomic_output
from ._integrity import INTEGRITY_ATTRS, content_identity, source_identity, verify_array
from ._load import Tomogram, load
from ._moments import combine_moments
from ._zarr import DEFAULT_CODEC, create_image_group, downsample2, normalize_chunks, write_blocks

__all__ = ["convert", "conversion_reusable", "STATISTICS_KEY", "stored_statistics"]

#: where a conversion records its tomogram's mean and standard deviation (in the ``cryodet`` attributes)
STATISTICS_KEY = "statistics"

log = logging.getLogger("cryodet_dask")


def _identity(path: str | os.PathLike[str]) -> str:
    """Content identity of the source file (:func:`~cryodet_dask.io._integrity.source_identity`).

    A digest of the whole file below 256 MiB, of its header and sampled blocks
    above; not its path or modification time, so a rewritten file of the same
    size is recognized and a copied or touched one is not converted again.
    """
    return source_identity(path)


def stored_statistics(tomo: Tomogram, identity: str | None) -> tuple[float, float] | None:
    """``(mean, std)`` a conversion recorded for ``tomo``, if they belong to its content as it is now
    (``identity``: :func:`~cryodet_dask.io._integrity.content_identity` of its array); else None."""
    rec = tomo.metadata.get(STATISTICS_KEY)
    if identity is None or not isinstance(rec, dict) or rec.get("content_identity") != identity:
        return None
    try:
        mean, std = float(rec["mean"]), float(rec["std"])
    except (KeyError, TypeError, ValueError):
        return None
    return (mean, std) if np.isfinite(mean) and np.isfinite(std) else None


def _same_conversion(destination: Path, tomo: Tomogram, attrs: dict[str, Any]) -> bool:
    """True if ``destination`` holds, intact, what converting ``tomo`` with ``attrs``' settings would write."""
    if tomo.path is None or Path(tomo.path).is_dir():
        return False
    try:
        meta = load(destination).metadata
    except CryodetError:
        return False
    same = all(meta.get(k) == attrs[k] for k in ("settings", "voxel_size_zyx", "origin_angst_zyx"))
    return same and conversion_reusable(destination, tomo.path)


def conversion_reusable(destination: str | os.PathLike[str], source: str | os.PathLike[str] | None) -> bool:
    """True if ``destination`` is a complete, intact conversion of the file ``source`` as it is now.

    Checks, in this order: the store opens (metadata readable, every chunk
    file present), it was written with checksums, its recorded source
    identity equals the source's content identity now, and every chunk of
    every level decodes with a matching checksum.  A store that exists but
    fails is reported with a warning (it will be converted again); one from
    another source with an info line.
    """
    destination = Path(destination)
    if source is None or not destination.exists():
        return False
    try:
        tomo = load(destination)
    except CryodetError as exc:
        log.warning("%s is damaged (%s): converting again", destination.name, exc)
        return False
    meta = tomo.metadata
    if meta.get("source_identity") != _identity(source):
        log.info("%s was converted from another file or version of %s: converting again", destination.name,
                 Path(source).name)
        return False
    if not isinstance(meta.get("integrity"), dict):
        log.warning("%s was written without checksums (by an older cryodet-dask): converting again",
                    destination.name)
        return False
    import zarr

    try:
        group = zarr.open_group(str(destination), mode="r")
        group_attrs: dict[str, Any] = dict(group.attrs)
        levels = [ds["path"] for ds in group_attrs["ome"]["multiscales"][0]["datasets"]]
        # the OME multiscales datasets this project writes are arrays, never groups
        arrays = [(lv, cast("zarr.Array[Any]", group[lv])) for lv in levels]
    except Exception as exc:  # noqa: BLE001 - any unreadable metadata is damage
        log.warning("%s is damaged (%s): converting again", destination.name, str(exc).splitlines()[0][:200])
        return False
    for level, arr in arrays:
        bad = verify_array(arr, threads=True)
        if bad:
            first = next(iter(bad.items()))
            log.warning("%s: %d chunk(s) of level %s failed verification (first: chunk %s, %s): converting again",
                        destination.name, len(bad), level, ".".join(map(str, first[0])), first[1])
            return False
    return True


def _record_statistics(store: Path, moments: np.ndarray) -> None:
    """Record the level-0 array's mean and standard deviation, from the moments its blocks gave as they
    were written, with the content identity they belong to (:data:`STATISTICS_KEY`)."""
    import zarr

    ident = content_identity(zarr.open_array(str(store / "0"), mode="r"))
    if ident is None:  # sharded: no identity to tie the figures to; a prediction computes its own
        return
    count, mean, std = combine_moments(map(tuple, moments))
    group = zarr.open_group(str(store), mode="r+")
    meta = dict(cast("dict[str, Any]", group.attrs["cryodet"]))
    meta[STATISTICS_KEY] = {"mean": mean, "std": std, "voxels": int(count), "content_identity": ident}
    group.attrs["cryodet"] = meta


def convert(
    source: str | os.PathLike[str] | Tomogram | np.ndarray | da.Array,
    destination: str | os.PathLike[str],
    *,
    chunks: int | Sequence[int] | str = 128,
    shards: int | Sequence[int] | str | None = None,
    levels: int = 1,
    codec: str = DEFAULT_CODEC,
    nan_policy: Literal["error", "zero"] = "error",
    voxel_size: float | None = None,
    overwrite: bool = False,
    reuse: bool = False,
    progress: bool = False,
) -> Path:
    """Stream a tomogram into a chunked, compressed OME-Zarr v3 image.

    The volume is read and written block by block by Dask tasks (on the
    active ``distributed.Client`` if there is one), so memory stays bounded by
    a few chunks whatever the tomogram's size.  The output is written to a
    temporary name and renamed when complete.

    Parameters
    ----------
    source : path-like, Tomogram, numpy or dask array
        MRC file (modes 0, 1, 2, 6, 12), Zarr store, or a volume (z, y, x).
    destination : path-like
        Output ``.zarr`` directory.
    chunks : int, tuple or str
        Chunk shape in voxels (z, y, x); one integer for a cube.  Default 128.
    shards : int, tuple or str, optional
        Shard shape in voxels (a multiple of ``chunks``); many chunks are then
        stored in one file, which helps file systems with many small files.
    levels : int
        Number of resolution levels (1 = full resolution only); each further
        level halves every axis by 2x2x2 averaging.
    codec : str
        Compressor, one of :data:`cryodet_dask.io.CODECS`.
    nan_policy : {"error", "zero"}
        What to do with NaN/Inf voxels: refuse the file, or write 0 in their place.
    voxel_size : float, optional
        Voxel size in Å, overriding the source header.
    overwrite : bool
        Replace an existing destination.
    reuse : bool
        If ``destination`` is already a complete conversion of this source file
        (same content identity) and every chunk verifies, return it without
        converting; otherwise (re)convert, replacing it (a damaged store is
        reported with a warning).  Makes ``convert`` idempotent.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        The destination.
    """
    destination = Path(destination).absolute()  # tasks write here: workers may run in another folder
    if reuse:
        src_file = source.path if isinstance(source, Tomogram) else (
            None if isinstance(source, np.ndarray | da.Array) else source)
        if src_file is not None and not Path(src_file).is_dir() and conversion_reusable(destination, src_file):
            log.info("%s is a complete conversion of %s: reused", destination.name, Path(src_file).name)
            return destination
        overwrite = True
    if nan_policy not in ("error", "zero"):
        raise ParameterError(f"nan_policy must be 'error' or 'zero', got {nan_policy!r}")
    if levels < 1:
        raise ParameterError(f"levels must be at least 1, got {levels}")
    if voxel_size is not None and not voxel_size > 0:
        raise ParameterError(f"voxel size must be positive (Å), got {voxel_size}")
    if isinstance(source, Tomogram):
        tomo = source
    elif isinstance(source, np.ndarray | da.Array):
        tomo = Tomogram(data=da.asarray(source), voxel_size=voxel_size)
    else:
        tomo = load(source)
    if tomo.data.ndim != 3:
        raise TomogramFormatError(f"a tomogram needs 3 dimensions, got shape {tomo.data.shape}")
    if not (np.issubdtype(tomo.data.dtype, np.floating) or np.issubdtype(tomo.data.dtype, np.integer)):
        raise TomogramFormatError(f"unsupported data type {tomo.data.dtype}")
    source_name = Path(str(tomo.path)).stem if tomo.path is not None else destination.stem
    shape = tomo.shape
    if min(shape) < 2 ** (levels - 1):
        raise ParameterError(f"{levels} levels need every axis >= {2 ** (levels - 1)} voxels, shape is {shape}")
    try:
        chunk_shape = normalize_chunks(chunks, shape)
        shard_shape: tuple[int, ...] | None = None if shards is None else normalize_chunks(shards, shape)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    if shard_shape is not None:
        shard_shape = tuple(max(c, (s // c) * c) for c, s in zip(chunk_shape, shard_shape))
    unit = shard_shape or chunk_shape

    vs_zyx = tomo.voxel_size_zyx if voxel_size is None else (voxel_size,) * 3
    attrs = {
        "voxel_size": (voxel_size or tomo.voxel_size),
        "voxel_size_zyx": list(vs_zyx),
        "origin_angst_zyx": list(tomo.origin_zyx),
        "source": str(Path(tomo.path).resolve()) if tomo.path is not None else None,
        "source_identity": _identity(tomo.path) if tomo.path is not None else None,
        "source_header": tomo.metadata,
        "integrity": dict(INTEGRITY_ATTRS),
        "settings": {"chunks": list(chunk_shape), "shards": None if shard_shape is None else list(shard_shape),
                     "levels": int(levels), "codec": codec, "nan_policy": nan_policy},
    }
    if not overwrite and destination.exists() and _same_conversion(destination, tomo, attrs):
        # the same command again: nothing to do (as predict resumes), rather than an error
        log.info("%s is already a complete conversion of %s with these settings: nothing to do",
                 destination.name, Path(str(tomo.path)).name)
        return destination
    volume = tomo.data.rechunk(unit)

    with atomic_output(destination, overwrite=overwrite) as tmp:
        create_image_group(
            tmp,
            shape=shape,
            dtype=volume.dtype,
            chunks=chunk_shape,
            shards=shard_shape,
            codec=codec,
            n_levels=levels,
            name=source_name,
            voxel_size_zyx=vs_zyx,
            origin_zyx=tomo.origin_zyx,
            attributes=attrs,
        )
        written = write_blocks(volume, tmp / "0", nan_to_zero=nan_policy == "zero", moments=True)
        (rows,) = compute(written, progress=progress, desc=f"converting {source_name} -> {destination.name}")
        rows = np.asarray(rows).reshape(-1, 4)
        n_bad = int(rows[:, 0].sum())
        if n_bad and nan_policy == "error":
            raise TomogramFormatError(
                f"{tomo.path or 'the tomogram'}: {n_bad} voxels are NaN or Inf; use --nan-policy zero to write 0 in their place"
            )
        _record_statistics(tmp, rows[:, 1:])
        previous = da.from_zarr(str(tmp / "0"))
        for level in range(1, levels):
            down = downsample2(previous).rechunk(chunk_shape)
            compute(write_blocks(down, tmp / str(level)).sum(), progress=progress, desc=f"level {level}")
            previous = da.from_zarr(str(tmp / str(level)))
    return destination
