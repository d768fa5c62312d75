"""Writing a (lazy) volume to an MRC file, block by block.

The header is written first with the final dimensions, the data region is
allocated sparse, and each Dask task memory-maps only its own block of the
file to write it (no msync per block: the pages stay in the page cache, as with any
write, and an open and close of the file afterwards gives network file systems their
close-to-open consistency).  Statistics for the header (min, max, mean, rms) are
reduced from per-block summaries.  The header holds no time stamp, so the
same volume always gives the same bytes.  The file is written under a temporary
name and renamed when complete (:mod:`._atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import dask.array as da
import mrcfile
import numpy as np

from .._progress import compute
from ._atomic import atomic_output
from ._moments import block_moments, combine_moments
from ._mrc import HEADER_BYTES, mrc_mode_for_dtype
from ._readers import lazy_array

__all__ = ["write_mrc", "pending_mrc", "PendingMRC"]


def _write_block(block: np.ndarray, path: str, shape: tuple[int, ...], file_dtype: str,
                 block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Write one block into its place in the MRC file; return its minimum, maximum and
    :func:`~cryodet_dask.io._moments.block_moments` (for the header)."""
    assert block_info is not None
    loc = block_info[0]["array-location"]
    region = tuple(slice(a, b) for a, b in loc)
    mm = np.memmap(path, dtype=np.dtype(file_dtype), mode="r+", offset=HEADER_BYTES, shape=shape)
    try:
        mm[region] = block
    finally:
        del mm  # unmapped: the written pages are the file's dirty pages in the page cache
    # Close-to-open consistency, as for every file written with write(): an open and close of the file
    # after the unmap makes a network file system (NFS) write the pages back, so that a process on
    # another node that opens the file later reads them.  Unlike a per-block msync it does not wait
    # for a local disk: a local file system keeps them in the page cache, as it does for any write.
    os.close(os.open(path, os.O_RDWR))
    stats = np.array([block.min(), block.max(), *block_moments(block)], dtype=np.float64)
    return stats.reshape(1, 1, 1, 5)


def write_mrc(
    volume: da.Array | np.ndarray,
    path: str | os.PathLike[str],
    *,
    voxel_size: float | Sequence[float] | None = None,
    origin_zyx: tuple[float, float, float] = (0.0, 0.0, 0.0),
    overwrite: bool = False,
    progress: bool = False,
    label: str | None = None,
) -> Path:
    """Write a 3D volume (z, y, x) to an MRC2014 file without a whole-volume array.

    Parameters
    ----------
    volume : dask.array.Array or numpy.ndarray
        The volume; int8, int16, uint16, float16 or float32.
    path : path-like
        Output file.
    voxel_size : float, optional
        Voxel size in Å written to the header (cell dimensions).
    origin_zyx : tuple of float
        Origin in Å.
    overwrite : bool
        Replace an existing file.
    progress : bool
        Show a progress bar.
    label : str, optional
        A text label stored in the header.

    Returns
    -------
    Path
        The written file.
    """
    with pending_mrc(volume, path, voxel_size=voxel_size, origin_zyx=origin_zyx, overwrite=overwrite,
                     label=label) as pending:
        (stats,) = compute(pending.writes, progress=progress, desc=f"writing {Path(path).name}")
        pending.finish(stats)
    return Path(path)


class PendingMRC:
    """An MRC being written: its header is in place under the temporary name; :attr:`writes` are the lazy
    per-block writes (compute them, with other work if you like), and :meth:`finish` puts their statistics
    into the header."""

    def __init__(self, path: Path, writes: da.Array) -> None:
        self.path = path
        self.writes = writes
        self.finished = False

    def finish(self, stats: np.ndarray) -> None:
        s = np.asarray(stats).reshape(-1, 5)
        _, mean, rms = combine_moments(map(tuple, s[:, 2:]))
        with mrcfile.mmap(self.path, mode="r+") as mrc:  # memory-mapped: the data are not read
            mrc.header.dmin = float(s[:, 0].min())
            mrc.header.dmax = float(s[:, 1].max())
            mrc.header.dmean = float(mean)
            mrc.header.rms = rms
        self.finished = True


@contextmanager
def pending_mrc(volume: da.Array | np.ndarray, path: str | os.PathLike[str], *,
                voxel_size: float | Sequence[float] | None = None,
                origin_zyx: tuple[float, float, float] = (0.0, 0.0, 0.0), overwrite: bool = False,
                label: str | None = None) -> Iterator[PendingMRC]:
    """:func:`write_mrc` in two halves, so that the blocks can be written in the same computation as
    another output of the same volume (each block computed once): yields a :class:`PendingMRC`; the file
    gets its name when the context ends after :meth:`PendingMRC.finish`, and is removed on an error."""
    path = Path(path)
    if not isinstance(volume, da.Array):
        volume = lazy_array(volume, chunks=128)
    if volume.ndim != 3:
        raise ValueError(f"write_mrc needs a 3D volume, got {volume.ndim}D")
    dtype = np.dtype(volume.dtype)
    mrc_mode_for_dtype(dtype)  # raises for unsupported types
    shape = tuple(int(s) for s in volume.shape)
    with atomic_output(path, overwrite=overwrite) as tmp:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=mrc_mode_for_dtype(dtype), overwrite=True) as mrc:
            # mrcfile's "Created by mrcfile.py <time>" label would make reruns differ byte for byte
            mrc.header.label[:] = b""
            mrc.header.nlabl = 0
            if voxel_size is not None and np.ndim(voxel_size) == 1:
                # np.ndim == 1: a sequence of three sizes (mypy cannot narrow on np.ndim)
                vz, vy, vx = (float(v) for v in cast(Sequence[float], voxel_size))  # mrcfile takes (x, y, z)
                mrc.voxel_size = (vx, vy, vz)
            elif voxel_size:
                mrc.voxel_size = float(cast(float, voxel_size))
            mrc.header.origin.z, mrc.header.origin.y, mrc.header.origin.x = origin_zyx
            if label:
                mrc.add_label(label[:80])
            file_dtype = mrc.data.dtype.str  # little-endian as written by mrcfile
        writes = da.map_blocks(
            _write_block,
            volume,
            path=str(tmp),
            shape=shape,
            file_dtype=file_dtype,
            dtype=np.float64,
            chunks=tuple((1,) * len(c) for c in volume.chunks) + ((5,),),
            new_axis=3,
            meta=np.empty((0, 0, 0, 0), np.float64),
        )
        pending = PendingMRC(tmp, writes)
        yield pending
        if not pending.finished:
            raise RuntimeError(f"{path}: the MRC's blocks were not written (PendingMRC.finish was not called)")
