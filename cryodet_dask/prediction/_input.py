"""What a prediction reads: the tomogram from any accepted input (a path, a :class:`~cryodet_dask.io.Tomogram`,
an array), with the identity its stored prediction is recognized by, and its global normalization statistics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from .._progress import compute
from ..errors import InputError, ParameterError
from ..io import (MOMENTS_FIELDS, ArrayReader, CheckedArray, Tomogram, combine_moments, content_identity, lazy_array,
                  load, moments_array, normalize_chunks, stored_statistics)

__all__ = ["read_source", "global_stats"]


def read_source(volume: Any, chunks: Any) -> tuple[Any, da.Array, float | None, str, tuple[float, float] | None]:
    """(reader, lazy array, voxel size, identity, statistics) for any accepted input; the statistics are
    the ``(mean, std)`` its conversion recorded for this very content, else None (to be computed)."""
    if isinstance(volume, str | os.PathLike):
        volume = load(volume, chunks=chunks)
    if isinstance(volume, Tomogram):
        content = None
        if isinstance(volume.reader, CheckedArray) and volume.reader.require_all_chunks:
            # a store cryodet-dask wrote: identified by its content (chunk checksums), so a conversion
            # rebuilt with the same voxels keeps its prediction, and one changed in place does not
            content = content_identity(volume.reader.array)
        if content is not None:
            ident = content
        elif volume.path is not None:
            st = Path(volume.path).stat()
            ident = f"{Path(volume.path).resolve()}:{st.st_mtime_ns}:{st.st_size}"
        else:
            ident = tokenize(volume.data)
        if volume.reader is not None:
            stats = stored_statistics(volume, content)
            return volume.reader, volume.data, volume.voxel_size, ident, None if stats is None else _usable(*stats)
        volume = volume.data
    if isinstance(volume, np.ndarray):
        data = lazy_array(volume, normalize_chunks(chunks or 128, volume.shape))
        return ArrayReader(volume), data, None, tokenize(volume), None
    if isinstance(volume, da.Array):
        return None, volume, None, volume.name, None
    raise ParameterError(f"predict takes a path, a Tomogram, a numpy or a dask array, not {type(volume).__name__}")


def global_stats(volume: da.Array, *, progress: bool = False) -> tuple[float, float]:
    """Mean and standard deviation of the whole tomogram: one Dask pass, float64 moments per block.

    The same per-block moments a conversion records as it writes (:func:`cryodet_dask.io.block_moments`,
    joined by :func:`~cryodet_dask.io.combine_moments`), so a converted store and this pass over it with
    the same blocks agree to the last bit.  A constant volume gets ``std = 1`` so that normalization
    never divides by zero; NaN or Inf anywhere raises :class:`~cryodet_dask.errors.InputError`
    (every entry point passes here).
    """
    moments = da.map_blocks(moments_array, volume, dtype=np.float64, new_axis=[volume.ndim],
                            chunks=tuple((1,) * len(c) for c in volume.chunks) + ((MOMENTS_FIELDS,),),
                            meta=np.empty((0,) * (volume.ndim + 1), np.float64))
    (rows,) = compute(moments, progress=progress, desc="normalization statistics (one pass)")
    _, mean, std = combine_moments(map(tuple, np.asarray(rows).reshape(-1, MOMENTS_FIELDS)))
    if not (np.isfinite(mean) and np.isfinite(std)):
        # NaN or Inf anywhere (a Zarr store or an array skips the MRC conversion's check): never a
        # silently empty result
        raise InputError(f"the tomogram holds NaN or infinite values (mean {mean}, std {std}); give "
                         "`detect --nan-policy zero` to read them as 0 (or write a clean copy with "
                         "`cryodet-dask convert TOMO OUT.zarr --nan-policy zero`)")
    return _usable(mean, std)


def _usable(mean: float, std: float) -> tuple[float, float]:
    """The statistics a prediction normalizes with: a constant volume's ``std`` of 0 becomes 1."""
    return mean, (std if std > 0 else 1.0)
