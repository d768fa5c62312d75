"""Resampling a volume to another voxel size, lazily, block by block (``detect --rescale``).

Networks are trained at one voxel size; a tomogram at another is resampled
to the weights' grid for prediction, and the predicted maps are resampled
back to the tomogram's grid for post-processing.  Every output block reads
only the input region it needs, so nothing holds the whole volume and the
result does not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["resample"]


def _resample_block(_block: np.ndarray, *, source: Any, in_shape: tuple[int, ...], factor: float, order: int,
                    block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """One output block of :func:`resample`: read the input region it needs, smooth if shrinking, interpolate."""
    from scipy import ndimage

    assert block_info is not None
    loc = block_info[None]["array-location"]
    # output voxel i (cell centre) sits at input coordinate (i + 0.5) / factor - 0.5
    axes = [(np.arange(a, b) + 0.5) / factor - 0.5 for a, b in loc]
    sigma = 0.5 / factor if factor < 1 and order > 0 else 0.0  # anti-aliasing before shrinking
    margin = int(np.ceil(4 * sigma)) + 2
    lo = [max(int(np.floor(ax[0])) - margin, 0) for ax in axes]
    hi = [min(int(np.ceil(ax[-1])) + margin + 1, n) for ax, n in zip(axes, in_shape)]
    region = np.asarray(source[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
    if sigma:
        region = ndimage.gaussian_filter(region, sigma, mode="nearest")
    grids = np.meshgrid(*[np.clip(ax, 0, n - 1) - a for ax, n, a in zip(axes, in_shape, lo)], indexing="ij")
    return ndimage.map_coordinates(region, grids, order=order, mode="nearest").astype(np.float32)


def resample(source: Any, shape: Sequence[int], factor: float, chunks: Sequence[int], *,
             order: int = 1) -> da.Array:
    """Resample a volume to ``shape`` = ``round(source.shape * factor)``, lazily, block by block.

    Parameters
    ----------
    source : array-like
        Picklable, sliceable volume (z, y, x): a Zarr array or a
        :attr:`Tomogram.reader`; each task reads only the region it needs.
    shape : tuple of int
        Output shape.
    factor : float
        Output voxels per input voxel (0.5 halves every axis).
    chunks : tuple of int
        Output chunk shape.
    order : int
        Spline order: 1 linear (default), 0 nearest neighbour.

    Returns
    -------
    dask.array.Array
        float32, (z, y, x).

    Notes
    -----
    Cell centres are aligned: output voxel ``i`` samples input coordinate
    ``(i + 0.5) / factor - 0.5`` (clamped to the volume).  When shrinking
    (``factor < 1``) the input is first smoothed with a Gaussian of
    ``sigma = 0.5 / factor`` input voxels against aliasing.  Every output
    block reads its input region plus a margin, so the result does not depend
    on the chunk shape.
    """
    in_shape = tuple(int(v) for v in source.shape)
    out = da.empty(tuple(int(v) for v in shape), chunks=tuple(chunks), dtype=np.float32)
    return out.map_blocks(_resample_block, source=source, in_shape=in_shape, factor=float(factor),
                          order=order, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
