"""Zarr v3 stores: codecs, OME-Zarr (NGFF 0.5) multiscale metadata, per-block writes.

Layout written by cryodet-dask for an image (tomogram, label image)::

    OUT.zarr/            group; attributes "ome" (NGFF 0.5 multiscales) and "cryodet"
        0/               full-resolution array, dimension names (z, y, x)
        1/, 2/, ...      2x, 4x, ... downsampled levels (``levels > 1``)

The ``cryodet`` attributes hold the voxel size in Å, the origin in Å, and the
source file's header fields.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from ._codecs import CODECS, DEFAULT_CODEC
from ._integrity import WRITE_CONFIG, checksum_codecs, open_for_write
from ._moments import block_moments

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "make_compressor",
    "stored_codecs",
    "normalize_chunks",
    "create_image_group",
    "ome_multiscales",
    "write_blocks",
]



def make_compressor(name: str, dtype: np.dtype[Any]) -> BloscCodec | None:
    """Blosc compressor named in :data:`CODECS`, configured for ``dtype``."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    if name == "auto":
        name = "zstd5-shuffle" if np.dtype(dtype).itemsize == 1 else "lz4-bitshuffle"
    spec = CODECS[name]
    if spec is None:
        return None
    return BloscCodec(
        cname=spec["cname"],
        clevel=spec["clevel"],
        shuffle=BloscShuffle[spec["shuffle"]],
        typesize=np.dtype(dtype).itemsize,
    )


def stored_codecs(name: str, dtype: np.dtype[Any]) -> list[Any]:
    """Bytes-to-bytes codecs of an array this project writes: the compressor, then a ``crc32c`` checksum.

    The checksum comes last, so it covers the compressed bytes as stored: a
    chunk damaged on disk fails to decode instead of decoding to wrong values.
    """
    compressor = make_compressor(name, dtype)
    return ([compressor] if compressor is not None else []) + checksum_codecs()


def normalize_chunks(chunks: int | Sequence[int] | str, shape: Sequence[int]) -> tuple[int, int, int]:
    """Chunk shape (z, y, x) from one integer, three integers or ``"64,256,256"``.

    Each chunk edge is clipped to the volume so a small volume gets one chunk.
    """
    if isinstance(chunks, str):
        parts = [p for p in chunks.replace("x", ",").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"chunks must be integers, got {chunks!r}") from None
    elif isinstance(chunks, int | np.integer):
        values = [int(chunks)]
    else:
        values = [int(c) for c in chunks]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"chunks need 1 or 3 values (z,y,x), got {len(values)}")
    if min(values) < 1:
        raise ValueError(f"chunk sizes must be positive, got {values}")
    return tuple(min(v, max(int(s), 1)) for v, s in zip(values, shape))  # type: ignore[return-value]


def ome_multiscales(
    name: str,
    n_levels: int,
    voxel_size_zyx: Sequence[float],
    origin_zyx: Sequence[float] = (0.0, 0.0, 0.0),
    method: str = "mean",
) -> dict[str, Any]:
    """OME-NGFF 0.5 ``multiscales`` metadata for a (z, y, x) image in Å.

    ``method`` is the pyramid's downscaling ``type``: ``"mean"`` (2x2x2 averages) for intensities,
    ``"nearest"`` for label images, whose values must never be averaged.
    """
    vs = [float(v) if v and v > 0 else 1.0 for v in voxel_size_zyx]
    datasets = []
    for level in range(n_levels):
        f = 2**level
        scale = [v * f for v in vs]
        # pixel centres of a 2x-averaged level sit half a fine voxel further in
        trans = [float(o) + (f - 1) / 2 * v for o, v in zip(origin_zyx, vs)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if any(trans):
            transforms.append({"type": "translation", "translation": trans})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": ax, "type": "space", "unit": "angstrom"} for ax in "zyx"],
                "datasets": datasets,
                "type": method,
            }
        ],
    }


def create_image_group(
    path: str | os.PathLike[str],
    *,
    shape: Sequence[int],
    dtype: np.dtype[Any] | str,
    chunks: Sequence[int],
    shards: Sequence[int] | None = None,
    codec: str = DEFAULT_CODEC,
    n_levels: int = 1,
    name: str = "image",
    voxel_size_zyx: Sequence[float] = (1.0, 1.0, 1.0),
    origin_zyx: Sequence[float] = (0.0, 0.0, 0.0),
    attributes: dict[str, Any] | None = None,
    fill_value: Any = 0,
    method: str = "mean",
) -> zarr.Group:
    """Create an OME-Zarr image group with empty arrays for every level."""
    group = zarr.open_group(str(path), mode="w")
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    for level in range(n_levels):
        lshape = tuple(max(s // 2**level, 1) for s in shape)
        lchunks = tuple(min(c, s) for c, s in zip(chunks, lshape))
        lshards = None
        if shards is not None:
            lshards = tuple(
                max(c, min(math.ceil(s / c) * c, (sh // c) * c)) for c, s, sh in zip(lchunks, lshape, shards)
            )
        group.create_array(
            str(level),
            shape=lshape,
            dtype=dtype,
            chunks=lchunks,
            shards=lshards,
            compressors=stored_codecs(codec, dtype) or None,
            fill_value=fill_value,
            dimension_names=("z", "y", "x"),
            config=WRITE_CONFIG,
        )
    attrs: dict[str, Any] = {"ome": ome_multiscales(name, n_levels, voxel_size_zyx, origin_zyx, method)}
    attrs["cryodet"] = dict(attributes or {})
    group.attrs.update(attrs)
    return group


def _store_block(block: np.ndarray, path: str, nan_to_zero: bool, moments: bool = False,
                 block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Write ``block`` into the Zarr array at ``path``; return its count of NaN/Inf voxels, followed
    with ``moments`` by the :func:`~cryodet_dask.io._moments.block_moments` of what was written."""
    assert block_info is not None
    loc = block_info[0]["array-location"]
    n_bad = 0
    if np.issubdtype(block.dtype, np.floating):
        bad = ~np.isfinite(block)
        n_bad = int(bad.sum())
        if n_bad and nan_to_zero:
            block = np.where(bad, 0, block).astype(block.dtype)
    arr = open_for_write(path)  # every chunk written, even all zeros: a missing chunk is damage
    arr[tuple(slice(a, b) for a, b in loc)] = block
    if not moments:
        return np.full((1,) * block.ndim, n_bad, dtype=np.int64)
    return np.array([n_bad, *block_moments(block)], dtype=np.float64).reshape((1,) * block.ndim + (4,))


def write_blocks(volume: da.Array, array_path: str | os.PathLike[str], nan_to_zero: bool = False,
                 moments: bool = False) -> da.Array:
    """Lazy write of ``volume`` into the existing Zarr array at ``array_path``.

    ``volume`` must be chunked so that each of its blocks covers whole write
    units of the target (chunks, or shards when sharded): two tasks then never
    write to the same stored object.  Returns a small lazy array holding the
    number of NaN/Inf voxels per block (set to 0 when ``nan_to_zero``); with
    ``moments``, one row per block instead (shape ``(1, 1, 1, 4)`` per block, float64): that count,
    then the block's voxel count, sum and sum of squared deviations as written, so that the
    normalization statistics need no second read (:func:`~cryodet_dask.io._moments.combine_moments`).
    """
    ndim = volume.ndim
    out: da.Array = da.map_blocks(
        _store_block,
        volume,
        path=str(array_path),
        nan_to_zero=nan_to_zero,
        moments=moments,
        dtype=np.float64 if moments else np.int64,
        chunks=tuple((1,) * len(c) for c in volume.chunks) + (((4,),) if moments else ()),
        new_axis=[ndim] if moments else None,
        meta=np.empty((0,) * (ndim + moments), np.float64 if moments else np.int64),
    )
    return out


def write_unit_chunks(array_path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The block shape in which ``array_path`` must be written (shard or chunk shape)."""
    arr = zarr.open_array(str(array_path), mode="r")
    shards = getattr(arr, "shards", None)
    return tuple(shards if shards is not None else arr.chunks)


def downsample2(volume: da.Array) -> da.Array:
    """2x2x2 mean downsampling (odd trailing planes dropped), same dtype."""
    trimmed = volume[tuple(slice(0, max((s // 2) * 2, 2)) for s in volume.shape)]
    # make every chunk even so block-local averaging equals global averaging
    chunks = tuple(max(2, (c // 2) * 2) for c in (cs[0] for cs in trimmed.chunks))
    trimmed = trimmed.rechunk(chunks)
    out = da.coarsen(np.mean, trimmed.astype(np.float32), {0: 2, 1: 2, 2: 2}, trim_excess=True)
    if np.issubdtype(volume.dtype, np.integer):
        info = np.iinfo(volume.dtype)
        out = da.clip(da.round(out), info.min, info.max)
    downsampled: da.Array = out.astype(volume.dtype)
    return downsampled
