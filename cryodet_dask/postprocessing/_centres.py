"""Particle centres: local maxima of the thresholded centre map, block by block.

A centre is a voxel strictly greater than its 26 neighbours (mirror border)
and, with a fusion distance D (``center_min_distance``), not exceeded by any
voxel of the volume within the Euclidean ball of radius D (equal values: the
first voxel in raster order wins).  Each block tests its core on a copy of the
centre map with a halo of :func:`halo_width` voxels, assembled from the
boundary slabs of the blocks around it (:func:`block_slabs`,
:func:`assemble_padded`), mirrored only on the one-voxel ring at the volume
border (the 26-neighbour test; the ball test only looks inside the volume).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._components import paste_overlap

__all__ = ["halo_width", "ball_offsets", "block_slabs", "assemble_padded", "strict_maxima", "ball_maxima",
           "grouped_ball_maxima"]

_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                     if (a, b, c) != (0, 0, 0)], dtype=np.int64)

Box = Sequence[tuple[int, int]]


def halo_width(min_distance: float) -> int:
    """Halo (voxels) the centre test needs: 1 for the 26 neighbours, ``floor(D)`` for the ball.

    No integer offset in the ball of radius D has a coordinate above ``floor(D)``.
    """
    return max(1, int(math.floor(float(min_distance))))


@functools.lru_cache(maxsize=8)
def ball_offsets(min_distance: float) -> np.ndarray:
    """Integer offsets ``o`` with ``|o|^2 <= D^2`` outside the 3x3x3 cube, nearest first.

    The offsets inside the cube are the 26 neighbours, already tested strictly.
    Returns int64 (M, 3), read-only (cached); M = 0 for D < 2.
    """
    r = int(math.floor(float(min_distance)))
    if r < 2:
        out: np.ndarray = np.zeros((0, 3), dtype=np.int64)
        out.flags.writeable = False
        return out
    g = np.arange(-r, r + 1, dtype=np.int64)
    o = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    d2 = (o ** 2).sum(axis=1)
    sel = (d2 <= float(min_distance) ** 2) & (np.abs(o).max(axis=1) >= 2)
    o, d2 = o[sel], d2[sel]
    out = o[np.argsort(d2, kind="stable")]
    out.flags.writeable = False
    return out


def block_slabs(block: np.ndarray, width: int = 1) -> tuple[np.ndarray, ...]:
    """The six boundary slabs of a block, ``min(width, size)`` thick: (lo_z, hi_z, lo_y, hi_y, lo_x, hi_x), copies."""
    out = []
    for axis in range(3):
        w = min(int(width), block.shape[axis])
        for lo in (True, False):
            sl: list[Any] = [slice(None)] * 3
            sl[axis] = slice(0, w) if lo else slice(block.shape[axis] - w, block.shape[axis])
            out.append(np.ascontiguousarray(block[tuple(sl)]))
    return tuple(out)


def assemble_padded(core: np.ndarray, box: Box, neighbours: Sequence[tuple[Box, tuple[np.ndarray, ...]]],
                    volume_shape: Sequence[int], width: int = 1) -> np.ndarray:
    """The block with ``width`` voxels of halo, from the neighbours' boundary slabs.

    Parameters
    ----------
    core : ndarray (Z, Y, X)
        The block.
    box : sequence of (start, stop)
        Its extent in the volume.
    neighbours : sequence of (box, slabs)
        Every other block whose box meets the block's box widened by ``width``,
        with its :func:`block_slabs` of the same ``width``.
    volume_shape : sequence of int
        Shape of the whole volume.
    width : int
        Halo width (>= 1).

    Returns
    -------
    ndarray (Z+2w, Y+2w, X+2w), C-contiguous
        Inside the volume: the volume's values.  On the one-voxel ring just
        outside the volume border: its mirror (``np.pad(..., mode='reflect')``,
        scipy's ``mirror``).  Further out: unspecified (0 or copies; never read
        by the centre tests).
    """
    h = int(width)
    P = np.zeros(tuple(s + 2 * h for s in core.shape), dtype=core.dtype)
    P[h:-h, h:-h, h:-h] = core
    lo = [box[a][0] - h for a in range(3)]
    for nbox, slabs in neighbours:
        a = next(i for i in range(3) if tuple(nbox[i]) != tuple(box[i]))
        above = nbox[a][0] >= box[a][1]
        slab = slabs[2 * a + (0 if above else 1)]
        slab_lo = [nbox[i][0] for i in range(3)]
        if not above:  # the neighbour's far slab ends where the neighbour ends
            slab_lo[a] = nbox[a][1] - slab.shape[a]
        paste_overlap(P, lo, slab, slab_lo)
    n = core.shape
    for a in range(3):
        def at(i: int) -> tuple[Any, ...]:
            sl: list[Any] = [slice(None)] * 3
            sl[a] = i
            return tuple(sl)
        if volume_shape[a] == 1:
            P[at(h - 1)] = P[at(h)]
            P[at(h + n[a])] = P[at(h)]
            continue
        if box[a][0] == 0:
            P[at(h - 1)] = P[at(h + 1)]
        if box[a][1] == volume_shape[a]:
            P[at(h + n[a])] = P[at(h + n[a] - 2)]
    return P


def strict_maxima(padded: np.ndarray, threshold: float, halo: int = 1) -> np.ndarray:
    """Voxels of the core strictly greater than all 26 neighbours.

    Parameters
    ----------
    padded : ndarray, shape (Z+2h, Y+2h, X+2h)
        Centre map of a block with ``halo`` voxels of halo on every side (the
        one-voxel ring around the core mirrored at the volume border).
    threshold : float
        Values below it count as 0 (``c = center if center >= threshold else 0``).
    halo : int
        h, the halo width (>= 1).

    Returns
    -------
    ndarray of int64, shape (K, 3)
        Core coordinates (z, y, x) of the maxima, in raster order.

    Notes
    -----
    A maximum has ``c > 0``, i.e. ``center >= threshold`` and ``center > 0``.
    The test runs on ``c+ = center if (center >= threshold and center > 0) else 0``
    (NaN too): a positive value beats a neighbour's ``c`` iff it beats its ``c+``.
    The two neighbours along x are compared on the whole block by slicing
    (contiguous, cheap; on the networks' maps it leaves about 7 % of the
    thresholded voxels), then the other 24 on the flat indices of the
    survivors, the face neighbours first, dropping a candidate at its first
    failure.
    """
    h = int(halo)
    ring = padded[h - 1 : padded.shape[0] - h + 1, h - 1 : padded.shape[1] - h + 1, h - 1 : padded.shape[2] - h + 1]
    cp = np.where((ring >= threshold) & (ring > 0), ring, 0).astype(padded.dtype, copy=False)  # C-contiguous
    core = cp[1:-1, 1:-1, 1:-1]
    cand = (core > cp[1:-1, 1:-1, :-2]) & (core > cp[1:-1, 1:-1, 2:])  # beats both x neighbours (so > 0)
    f = np.flatnonzero(cand)
    if len(f) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    Z, Y, X = core.shape
    PY, PX = Y + 2, X + 2
    z, r = np.divmod(f, Y * X)
    y, x = np.divmod(r, X)
    q = ((z + 1) * PY + (y + 1)) * PX + (x + 1)  # flat index in the one-voxel ring
    flat = cp.ravel()
    vals = flat[q]
    # the 4 other face neighbours first (they discard most candidates), then the other 20
    steps = sorted({int((dz * PY + dy) * PX + dx) for dz, dy, dx in _OFFSETS if (dz, dy) != (0, 0)},
                   key=lambda s: (abs(s) not in (PX, PX * PY), s))
    for s_ in steps:
        ok = flat[q + s_] < vals
        if not ok.all():
            q, vals, z, y, x = q[ok], vals[ok], z[ok], y[ok], x[ok]
            if len(q) == 0:
                return np.zeros((0, 3), dtype=np.int64)
    return np.stack([z, y, x], axis=1).astype(np.int64)


def ball_maxima(padded: np.ndarray, peaks: np.ndarray, threshold: float, offsets: np.ndarray,
                origin: Sequence[int] | np.ndarray, volume_shape: Sequence[int], halo: int) -> np.ndarray:
    """The peaks that no voxel of the volume within the ball exceeds (centre fusion).

    Parameters
    ----------
    padded : ndarray
        Centre map of the block with ``halo`` voxels of halo (:func:`assemble_padded`).
    peaks : ndarray of int64, shape (K, 3)
        Core coordinates of the 26-neighbour maxima (:func:`strict_maxima`), raster order.
    threshold : float
        ``center_threshold``: values below it (and NaN) count as 0.
    offsets : ndarray of int64, shape (M, 3)
        :func:`ball_offsets` of the fusion distance; every coordinate <= ``halo``.
    origin : sequence of int
        Global coordinates of the core's first voxel.
    volume_shape : sequence of int
        Shape of the volume (offsets leaving it are not tested).
    halo : int
        Halo width of ``padded``.

    Returns
    -------
    ndarray of int64, shape (K', 3)
        The peaks ``p`` with, for every offset ``o`` whose ``q = p + o`` lies in the
        volume, ``c[q] < c[p]``, or ``c[q] == c[p]`` and ``o`` lexicographically
        positive (``q`` after ``p`` in raster order).  Only the candidates are
        tested (cost K x M, not the block).
    """
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1, 3)
    out: np.ndarray = peaks[_ball_keep(padded, peaks, threshold, offsets, origin, volume_shape, halo)]
    return out


def _ball_keep(padded: np.ndarray, peaks: np.ndarray, threshold: float, offsets: np.ndarray,
               origin: Sequence[int] | np.ndarray, volume_shape: Sequence[int], halo: int) -> np.ndarray:
    """:func:`ball_maxima` as a mask over ``peaks`` (int64, (K, 3))."""
    keep = np.ones(len(peaks), dtype=bool)
    if len(peaks) == 0 or len(offsets) == 0:
        return keep
    h = int(halo)
    padded = np.ascontiguousarray(padded)
    _, PY, PX = padded.shape
    flat = padded.ravel()
    q = ((peaks[:, 0] + h) * PY + (peaks[:, 1] + h)) * PX + (peaks[:, 2] + h)
    vals = flat[q]
    g = peaks + np.asarray(origin, dtype=np.int64)
    shape = np.asarray(volume_shape, dtype=np.int64)
    steps = (offsets[:, 0] * PY + offsets[:, 1]) * PX + offsets[:, 2]
    later = (offsets[:, 0] > 0) | ((offsets[:, 0] == 0) & ((offsets[:, 1] > 0) | ((offsets[:, 1] == 0) & (offsets[:, 2] > 0))))
    batch = max(8, (1 << 16) // len(peaks))
    for s in range(0, len(offsets), batch):  # nearest offsets first: most losers drop in the first batch
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            break
        o = offsets[s : s + batch]
        gq = g[idx, None, :] + o[None, :, :]
        inside = ((gq >= 0) & (gq < shape)).all(axis=2)
        v = flat[q[idx, None] + steps[None, s : s + batch]]
        val = vals[idx, None]
        ok = ~inside | (v < val) | ~(v >= threshold) | ((v == val) & later[None, s : s + batch])
        keep[idx] = ok.all(axis=1)
    return keep


def grouped_ball_maxima(padded: np.ndarray, peaks: np.ndarray, groups: np.ndarray, distances: Sequence[float],
                        threshold: float, origin: Sequence[int] | np.ndarray, volume_shape: Sequence[int],
                        halo: int) -> np.ndarray:
    """:func:`ball_maxima` with a fusion distance per peak: ``distances[groups[i]]`` for peak ``i``.

    Each peak is tested on its own ball (every ``floor(distance) <= halo``); the survivors keep
    the raster order of ``peaks``.
    """
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1, 3)
    keep = np.zeros(len(peaks), dtype=bool)
    for g, d in enumerate(distances):
        sel = np.flatnonzero(np.asarray(groups) == g)
        if len(sel) == 0:
            continue
        offsets = ball_offsets(float(d))
        if len(offsets) and int(np.abs(offsets).max()) > int(halo):
            raise ValueError(f"fusion distance {d} needs a halo wider than {halo}")
        keep[sel] = _ball_keep(padded, peaks[sel], threshold, offsets, origin, volume_shape, halo)
    return peaks[keep]
