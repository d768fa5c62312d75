"""What a post-processing can be asked to do: bounds on the blocks and the centre fusion distance.

:func:`~cryodet_dask.postprocessing.postprocess` builds, per block of the maps, a few tasks (the
boundary slabs, pass 1, pass 2, the face pairs), and each pass-1 task takes the slabs of every block
its core widened by the fusion halo ``h = max(1, floor(D))`` meets: ``(2 * ceil(h / c) + 1)**3 - 1``
blocks for a chunk ``c``.  A centre candidate is compared with every voxel of the ball of radius D
(:func:`~._centres.ball_offsets`: about ``4/3 * pi * D**3`` offsets, built from a ``(2D + 1)**3`` grid).
A chunking of one voxel on a 64 x 128 x 128 volume is a million blocks and three billion slab
references (the driver was killed at 24 GB); a distance of 1e9 voxels asks for a grid of 8e27
offsets.  :func:`check_plan` refuses such a request in one line that says what fits, before any work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError
from ._centres import halo_width

__all__ = ["MAX_BLOCKS", "MAX_HALO_LINKS", "MAX_CENTER_MIN_DISTANCE", "check_plan", "check_center_min_distance",
           "plan_size"]

#: At most this many blocks (each is about six Dask tasks; the driver holds a table row per block).
MAX_BLOCKS = 100_000
#: At most this many (block, neighbour whose boundary slab it reads) pairs over the whole volume.
MAX_HALO_LINKS = 2_000_000
#: Largest centre fusion distance, voxels: its ball holds 1.1 M offsets (a 129³ grid, 50 MB, to build).
MAX_CENTER_MIN_DISTANCE = 64.0


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(chunks, dtype=np.int64))])


def plan_size(shape: Sequence[int], chunks: Sequence[Sequence[int]], center_min_distance: float) -> tuple[int, int]:
    """(number of blocks, number of neighbour slabs the pass-1 tasks read), exactly as postprocess builds them.

    Per axis, block ``i`` meets the blocks overlapping ``[lo_i - h, hi_i + h)`` (clipped to the volume);
    the neighbours of a block are the product of the three axes' ranges, less the block itself.
    """
    h = halo_width(center_min_distance)
    n_blocks, total = 1, 1
    for n, c in zip(shape, chunks):
        b = _bounds(c)
        lo = np.maximum(b[:-1] - h, 0)
        hi = np.minimum(b[1:] + h, int(n))
        first = np.searchsorted(b, lo, side="right") - 1
        last = np.searchsorted(b, hi - 1, side="right")
        n_blocks *= len(c)
        total *= int((last - first).sum())
    return n_blocks, total - n_blocks


def _fits(shape: Sequence[int], c: int, d: float) -> bool:
    chunks = [[c] * (int(n) // c) + ([int(n) % c] if int(n) % c else []) for n in shape]
    n_blocks, links = plan_size(shape, chunks, d)
    return n_blocks <= MAX_BLOCKS and links <= MAX_HALO_LINKS


def check_center_min_distance(d: float, flag: str = "--center-min-distance", *, diameter: float | None = None,
                              voxel_size: float | None = None) -> None:
    """Refuse a centre fusion distance beyond :data:`MAX_CENTER_MIN_DISTANCE` in one line (``flag`` names the
    option it came from; with ``diameter`` and ``voxel_size`` the line says which particle diameter fits)."""
    if not (float(d) <= MAX_CENTER_MIN_DISTANCE):
        if diameter is not None and voxel_size:
            raise ParameterError(
                f"--particle-diameter {diameter:g} Å at {voxel_size:g} Å per voxel gives a centre fusion distance "
                f"of {float(d):g} voxels; at most {MAX_CENTER_MIN_DISTANCE:g} voxels fit (a particle diameter up "
                f"to {2 * MAX_CENTER_MIN_DISTANCE * voxel_size:g} Å), or bin the tomogram")
        raise ParameterError(
            f"{flag} {float(d):g} voxels is more than fits: at most {MAX_CENTER_MIN_DISTANCE:g} voxels (each "
            "candidate centre is compared with every voxel of a ball of that radius)")


def check_plan(shape: Sequence[int], chunks: Sequence[Sequence[int]], center_min_distance: float,
               chunks_flag: str = "--chunks") -> None:
    """Refuse, in one line that says what fits, a post-processing whose task graph cannot be held.

    ``chunks`` are the blocks (dask's chunks tuple, one sequence per axis).  The limits:
    :data:`MAX_CENTER_MIN_DISTANCE` on the fusion distance, :data:`MAX_BLOCKS` blocks and
    :data:`MAX_HALO_LINKS` neighbour slabs read (:func:`plan_size`).
    """
    check_center_min_distance(center_min_distance)
    n_blocks, links = plan_size(shape, chunks, center_min_distance)
    if n_blocks <= MAX_BLOCKS and links <= MAX_HALO_LINKS:
        return
    block = "x".join(str(max(c)) for c in chunks)
    vol = "x".join(str(int(n)) for n in shape)
    fit = next((c for c in range(1, max(int(n) for n in shape) + 1) if _fits(shape, c, center_min_distance)),
               max(int(n) for n in shape))
    h = halo_width(center_min_distance)
    if n_blocks > MAX_BLOCKS:
        why = f"{n_blocks:,} blocks (at most {MAX_BLOCKS:,} fit)"
    else:
        why = f"{links:,} reads of neighbour blocks (at most {MAX_HALO_LINKS:,} fit)"
    raise ParameterError(f"{chunks_flag} {block} on a {vol} volume makes {why}; use {chunks_flag} {fit} or more"
                         f" (the centre fusion halo is {h} voxel{'s' if h > 1 else ''})")
