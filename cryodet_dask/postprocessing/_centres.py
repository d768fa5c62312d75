"""Particle centres: strict local maxima of the thresholded centre map, block by block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["assemble_halo", "block_shell", "strict_maxima"]

_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                     if (a, b, c) != (0, 0, 0)], dtype=np.int64)


def strict_maxima(padded: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels of the core strictly greater than all 26 neighbours.

    Parameters
    ----------
    padded : ndarray, shape (Z+2, Y+2, X+2)
        Centre map of a block with one voxel of halo on every side.
    threshold : float
        Values below it count as 0 (``c = center if center >= threshold else 0``).

    Returns
    -------
    ndarray of int64, shape (K, 3)
        Core coordinates (z, y, x) of the maxima, in raster order.

    Notes
    -----
    Since ``c >= 0``, a maximum has ``c > 0``, i.e. ``center >= threshold`` and
    ``center > 0``: only those voxels are candidates.  A neighbour value ``v``
    counts as ``c = 0`` when ``not v >= threshold`` (NaN too), so the strict test is
    ``v < value or not v >= threshold``.  The test runs on flat indices of the
    candidates, face neighbours first, dropping a candidate at its first
    failure, so the cost is proportional to the thresholded voxels, not the block.
    """
    core = padded[1:-1, 1:-1, 1:-1]
    above = (core >= threshold) & (core > 0)
    f = np.flatnonzero(above)
    if len(f) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    Z, Y, X = core.shape
    PY, PX = Y + 2, X + 2
    z, r = np.divmod(f, Y * X)
    y, x = np.divmod(r, X)
    q = ((z + 1) * PY + (y + 1)) * PX + (x + 1)  # flat index in the padded block
    flat = padded.ravel()
    vals = flat[q]
    # the 6 face neighbours first (they discard most candidates), then the other 20
    steps = sorted({int((dz * PY + dy) * PX + dx) for dz, dy, dx in _OFFSETS},
                   key=lambda s: (abs(s) not in (1, PX, PX * PY), s))
    for s_ in steps:
        v = flat[q + s_]
        ok = (v < vals) | ~(v >= threshold)  # below threshold (or NaN) counts as 0
        if not ok.all():
            q, vals, z, y, x = q[ok], vals[ok], z[ok], y[ok], x[ok]
            if len(q) == 0:
                return np.zeros((0, 3), dtype=np.int64)
    return np.stack([z, y, x], axis=1).astype(np.int64)


def block_shell(block: np.ndarray) -> tuple[np.ndarray, ...]:
    """The six boundary planes of a block: (lo_z, hi_z, lo_y, hi_y, lo_x, hi_x), copies."""
    out = []
    for axis in range(3):
        for end in (0, -1):
            sl: list[Any] = [slice(None)] * 3
            sl[axis] = end
            out.append(np.ascontiguousarray(block[tuple(sl)]))
    return tuple(out)


def assemble_halo(core: np.ndarray, shells: dict[tuple[int, int, int], tuple[np.ndarray, ...]],
                  border: Sequence[tuple[bool, bool]], volume_shape: Sequence[int]) -> np.ndarray:
    """The block with one voxel of halo: neighbours' boundary planes, mirror at the volume border.

    Parameters
    ----------
    core : ndarray (Z, Y, X)
        The block.
    shells : dict
        ``{offset: block_shell(neighbour)}`` for the existing neighbours, ``offset``
        in {-1, 0, 1}³.
    border : sequence of (bool, bool)
        Per axis, whether the low / high side of the block is the volume border.
    volume_shape : sequence of int
        Shape of the whole volume (a length-1 axis mirrors onto itself).

    Returns
    -------
    ndarray (Z+2, Y+2, X+2)
        Equal to ``np.pad(volume, 1, mode='reflect')`` (``scipy.ndimage`` mirror
        mode) cut to the block and its halo.
    """
    P = np.empty(tuple(s + 2 for s in core.shape), dtype=core.dtype)
    P[1:-1, 1:-1, 1:-1] = core
    for off, shell in shells.items():
        a = next(i for i in range(3) if off[i] != 0)
        plane = shell[2 * a + (1 if off[a] < 0 else 0)]  # neighbour's face towards this block
        src: list[Any] = []
        for b in range(3):
            if b == a:
                continue
            src.append(-1 if off[b] < 0 else 0 if off[b] > 0 else slice(None))
        dst = tuple(0 if o < 0 else -1 if o > 0 else slice(1, -1) for o in off)
        P[dst] = plane[tuple(src)]
    for a in range(3):
        lo, hi = border[a]
        def at(i: int) -> tuple[Any, ...]:
            sl: list[Any] = [slice(None)] * 3
            sl[a] = i
            return tuple(sl)
        if volume_shape[a] == 1:
            P[at(0)] = P[at(1)]
            P[at(-1)] = P[at(1)]
            continue
        if lo:
            P[at(0)] = P[at(2)]
        if hi:
            P[at(-1)] = P[at(-3)]
    return P
