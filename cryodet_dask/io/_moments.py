"""A tomogram's mean and standard deviation from per-block moments: pure functions, one pass.

Every block gives its voxel count, its sum and the sum of squared deviations from its own mean
(float64); :func:`combine_moments` joins them exactly as the whole-volume formulas would, up to
float64 rounding (Chan, Golub and LeVeque's pairwise update, with correctly rounded sums).  The
conversion computes the moments of each block as it writes it, so the normalization needs no second
read of the tomogram; a stats pass over any other input uses the same two functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

__all__ = ["Moments", "block_moments", "combine_moments", "moments_array", "MOMENTS_FIELDS"]

MOMENTS_FIELDS = 3  # count, sum, sum of squared deviations


class Moments(NamedTuple):
    """Voxel count, sum and sum of squared deviations from the mean (float64)."""

    voxels: float
    total: float
    m2: float


def block_moments(block: np.ndarray) -> Moments:
    """The :class:`Moments` of one block, in float64 (NaN or Inf voxels make them NaN or Inf)."""
    n = block.size
    if n == 0:
        return Moments(0.0, 0.0, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or Inf voxels: reported by the caller
        total = float(block.sum(dtype=np.float64))
    if not math.isfinite(total):
        return Moments(float(n), total, math.nan)
    d = np.subtract(block, total / n, dtype=np.float64).ravel()
    return Moments(float(n), total, float(d @ d))


def moments_array(block: np.ndarray) -> np.ndarray:
    """:func:`block_moments` as a float64 array of shape ``(1,) * block.ndim + (3,)`` (a Dask block)."""
    return np.asarray(block_moments(block), dtype=np.float64).reshape((1,) * block.ndim + (MOMENTS_FIELDS,))


def combine_moments(parts: Iterable[Moments | tuple[float, float, float]]) -> tuple[float, float, float]:
    """``(count, mean, standard deviation)`` of the union of blocks given their moments.

    ``M2 = sum_i M2_i + sum_i n_i (mean_i - mean)^2`` with ``mean = sum_i S_i / n``; the sums are
    :func:`math.fsum` (correctly rounded, so the result does not depend on the blocks' order).
    The standard deviation is the population one (``ddof=0``), as NumPy's and Dask's ``std()``.
    """
    items = [Moments(*map(float, p)) for p in parts]
    if not all(math.isfinite(v) for p in items for v in p):
        return math.fsum(p.voxels for p in items if math.isfinite(p.voxels)), math.nan, math.nan
    n = math.fsum(p.voxels for p in items)
    if n == 0:
        return 0.0, math.nan, math.nan
    mean = math.fsum(p.total for p in items) / n
    m2 = math.fsum(p.m2 for p in items) + math.fsum(
        p.voxels * (p.total / p.voxels - mean) ** 2 for p in items if p.voxels)
    return n, mean, math.sqrt(m2 / n) if m2 >= 0 else math.nan
