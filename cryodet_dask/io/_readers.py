"""Wrapping in-memory or memory-mapped arrays as lazy dask arrays without copying them."""

from __future__ import annotations

import uuid
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["ArrayReader", "lazy_array"]


class ArrayReader:
    """Read-only array-like view handing out only the slices asked for.

    :func:`dask.array.from_array` copies any array with a ``copy`` method when
    it wraps it (a whole extra volume in memory); wrapping this proxy instead
    reads each chunk on demand, from memory or a memory map.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(int(v) for v in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(self.array[index])


def lazy_array(array: Any, chunks: Any = 128, name: str | None = None) -> da.Array:
    """A dask array over ``array`` (numpy, memmap, zarr...) that never copies it whole."""
    if isinstance(array, da.Array):
        return array.rechunk(chunks) if chunks is not None else array
    reader = ArrayReader(array)
    lazy: da.Array = da.from_array(reader, chunks=chunks, name=name or f"array-{uuid.uuid4().hex}", asarray=True,
                                   fancy=False, meta=np.empty((0,) * reader.ndim, reader.dtype))
    return lazy
