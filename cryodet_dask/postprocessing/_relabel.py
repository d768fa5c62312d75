"""Per-block instance pieces, their statistics, and the final relabel.

An *instance piece* is a connected region, inside one block, of foreground
voxels sharing component and assigned centre.  Voxels of components that stay
whole keep their block component label (a connected region of the component
inside the block); voxels that were assigned a centre are split into the
connected regions of equal centre (one :func:`label_binary` per centre,
on the bounding box of that centre's voxels).  Pieces are joined across blocks
by face pairs whose two pieces have the same centre (two adjacent foreground
voxels always share the component), then renumbered once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._assign import nearest_among, nearest_in_segments
from ._components import foreground, label_binary, small_interior_lut

__all__ = ["BlockTables", "block_components", "instance_block", "block_stats"]



@dataclass(frozen=True)
class Components:
    """A block's components (:func:`block_components`), kept as labels before the specks' drop.

    Attributes
    ----------
    raw : ndarray of int32
        :func:`label_block` labels, before the drop.
    fg : ndarray of int64
        Flat indices of the foreground voxels (``raw > 0``), ascending (raster order).
    fg_raw : ndarray of int32
        ``raw`` at ``fg``.
    drop : ndarray of int32 or None
        ``drop[raw]`` are the components, 1..n (0: dropped speck); None: nothing dropped.
    n : int
        Number of components.
    sizes : ndarray of int64, shape (n + 1,)
        Their voxel counts (index 0: background, not counted).
    """

    raw: np.ndarray
    fg: np.ndarray
    fg_raw: np.ndarray
    drop: np.ndarray | None
    n: int
    sizes: np.ndarray

    def at(self, raw_labels: np.ndarray) -> np.ndarray:
        """Component labels of voxels whose raw labels are ``raw_labels``."""
        return raw_labels if self.drop is None else self.drop[raw_labels]


@dataclass(frozen=True)
class BlockTables:
    """What one block needs from the first global reduction, for its kept components only.

    Attributes
    ----------
    n_labels : int
        Number of block components (labels ``1..n_labels`` of
        :func:`block_components`).
    kept : ndarray of int32, shape (k,)
        The block labels whose global component passed the size filter, ascending.
    seg_start, seg_len : ndarray of int64, shape (k,)
        Centres each kept label may take: ``centres[seg_start : seg_start + seg_len]``;
        ``seg_len == 0`` keeps the component whole.
    centres : ndarray of int64, shape (m, 3)
        Global voxel coordinates of the centres this block may need.
    centre_ids : ndarray of int64, shape (m,)
        Their global ids (raster order), ascending within each segment.

    Only kept labels are listed, so the tables (which travel in the task
    graph) grow with the particles, not with the specks of a noisy mask.
    """

    n_labels: int
    kept: np.ndarray
    seg_start: np.ndarray
    seg_len: np.ndarray
    centres: np.ndarray
    centre_ids: np.ndarray

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(kept, seg_start, seg_len)`` indexed by block label (length ``n_labels + 1``)."""
        n = self.n_labels + 1
        kept = np.zeros(n, dtype=bool)
        kept[self.kept] = True
        start = np.zeros(n, dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        start[self.kept] = self.seg_start
        length[self.kept] = self.seg_len
        return kept, start, length


def block_components(mask: np.ndarray, threshold: float, connectivity: int, min_size: int) -> Components:
    """The block components every pass works on: :func:`label_block`, then the
    renumbering of :func:`~._components.drop_small_interior` (specks wholly inside the
    block and below ``min_size`` removed on the spot), as a lookup table.

    The lookup is applied only where a pass needs it (a plane, the foreground voxels,
    or composed with the next lookup), never to the whole block on its own; the sizes
    are counted on the foreground voxels alone (the masks are mostly background).
    """
    binary = foreground(mask, threshold)
    raw, n = label_binary(binary, connectivity)  # label_block's labels, keeping the foreground
    fg = np.flatnonzero(binary)  # 3-4x faster on booleans than on the int32 labels
    fg_raw = raw.ravel()[fg]
    drop, n_kept, sizes = small_interior_lut(raw, n, min_size, np.bincount(fg_raw, minlength=n + 1))
    return Components(raw=raw, fg=fg, fg_raw=fg_raw, drop=drop, n=n_kept, sizes=sizes)


def instance_block(mask: np.ndarray, offset: tuple[int, int, int], threshold: float, connectivity: int,
                   min_size: int, tables: BlockTables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance pieces of one block.

    Parameters
    ----------
    mask : ndarray (z, y, x)
        The block of the mask-probability map.
    offset : tuple of int
        Global coordinates of the block's first voxel.
    threshold : float
        ``mask_threshold``.
    connectivity : int
        1, 2 or 3.
    min_size : int
        ``remove_min_size`` (for :func:`block_components`).
    tables : BlockTables
        From the first reduction.

    Returns
    -------
    pieces : ndarray of int32
        0 = background or removed, 1..n2 piece labels (some numbers unused).
    piece_centre : ndarray of int64, shape (n2 + 1,)
        Global centre id of each piece; -1 for whole-component pieces.
    fg : ndarray of int64
        Flat indices of the block's foreground voxels, ascending: every voxel of a
        piece is among them (for :func:`block_stats`).
    """
    comp = block_components(mask, threshold, connectivity, min_size)
    n1 = comp.n
    if tables.n_labels != n1:  # pragma: no cover - would mean a non-deterministic read
        raise RuntimeError("block labelling differs between passes (the input changed?)")
    kept, seg_start, seg_len = tables.dense()
    assign = kept & (seg_len > 0)
    # one lookup: whole-component voxels keep their block label, assigned ones get -1 for now
    lut = np.where(assign, -1, np.where(kept, np.arange(n1 + 1), 0)).astype(np.int32)
    fg_piece = lut[comp.at(comp.fg_raw)]
    pieces = np.zeros(comp.raw.shape, dtype=np.int32)
    pieces.ravel()[comp.fg] = fg_piece
    piece_centre = [np.full(n1 + 1, -1, dtype=np.int64)]
    if assign.any():
        sel = fg_piece < 0
        idx = comp.fg[sel]
        lab = comp.at(comp.fg_raw[sel])
        loc = np.stack(np.unravel_index(idx, comp.raw.shape), axis=1)
        pts = loc + np.asarray(offset, dtype=np.int64)
        m = len(tables.centres)
        if m > 16 and np.all(seg_start[assign] == 0) and np.all(seg_len[assign] == m):
            ci = nearest_among(pts, tables.centres)  # one shared list (check_center=False): KD-tree
        else:
            ci = nearest_in_segments(pts, seg_start[lab], seg_len[lab], tables.centres)
        key = np.zeros(comp.raw.shape, dtype=np.int32)
        key.ravel()[idx] = (ci + 1).astype(np.int32)
        # bounding box of each centre's voxels, from the point list (no scan of the block)
        lo = np.full((m, 3), np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full((m, 3), -1, dtype=np.int64)
        for a in range(3):
            np.minimum.at(lo[:, a], ci, loc[:, a])
            np.maximum.at(hi[:, a], ci, loc[:, a])
        base = n1
        for k in np.flatnonzero(hi[:, 0] >= 0):
            bb = tuple(slice(int(lo[k, a]), int(hi[k, a]) + 1) for a in range(3))
            sub = key[bb] == k + 1
            lab_k, nk = label_binary(sub, connectivity)
            view = pieces[bb]
            view[sub] = lab_k[sub] + base
            base += nk
            piece_centre.append(np.full(nk, tables.centre_ids[k], dtype=np.int64))
    return pieces, np.concatenate(piece_centre), comp.fg


def block_stats(pieces: np.ndarray, n2: int, mask: np.ndarray, offset: tuple[int, int, int],
                shape: tuple[int, int, int], center: np.ndarray | None = None,
                fg: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-piece voxel count, coordinate sums, first raster index, mask sum and centre-map maximum.

    ``fg`` (ascending flat indices that include every voxel of a piece, e.g. the foreground
    of :func:`instance_block`) spares the scan of the whole block.

    Returns
    -------
    dict of ndarray, each of length ``n2 + 1`` (index = piece label)
        ``count`` (int64), ``sum`` (float64, (n2 + 1, 3), global z, y, x; exact
        integers), ``first`` (int64 global linear index ``z*Y*X + y*X + x`` of the
        first voxel in raster order; int64 max where empty), ``mask_sum`` (float64),
        ``center_max`` (float64, the largest centre-map value, NaN ignored; -inf where
        empty or all NaN; only when ``center`` is given).
    """
    flat = pieces.ravel()
    if fg is None:
        idx = np.flatnonzero(flat)
        labs = flat[idx]
    else:
        labs = flat[fg]
        inside = labs > 0
        idx, labs = fg[inside], labs[inside]
    count = np.bincount(labs, minlength=n2 + 1).astype(np.int64)
    loc = np.unravel_index(idx, pieces.shape)
    sums = np.stack([np.bincount(labs, weights=loc[a], minlength=n2 + 1) for a in range(3)], axis=1).astype(np.float64)
    sums += count[:, None] * np.asarray(offset, dtype=np.float64)[None, :]
    first_local = np.full(n2 + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_local, labs, idx)
    first = np.full(n2 + 1, np.iinfo(np.int64).max, dtype=np.int64)
    has = count > 0
    if has.any():
        fz, fy, fx = np.unravel_index(first_local[has], pieces.shape)
        first[has] = np.ravel_multi_index(
            (fz + offset[0], fy + offset[1], fx + offset[2]), shape
        )
    mask_sum = np.bincount(labs, weights=np.asarray(mask).ravel()[idx].astype(np.float64), minlength=n2 + 1)
    out = {"count": count, "sum": sums, "first": first, "mask_sum": mask_sum}
    if center is not None:
        cmax = np.full(n2 + 1, -np.inf, dtype=np.float64)
        np.fmax.at(cmax, labs, np.asarray(center).ravel()[idx].astype(np.float64))
        out["center_max"] = cmax
    return out
