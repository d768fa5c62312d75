"""Helpers for tests and examples: tiny MRC files and volumes made on the fly."""

from __future__ import annotations

import os

import mrcfile
import numpy as np

__all__ = ["make_mrc"]


def make_mrc(
    path: str | os.PathLike[str],
    data: np.ndarray,
    voxel_size: float = 10.0,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> os.PathLike[str] | str:
    """Write ``data`` (z, y, x) to an MRC file with a voxel size (Å) and origin (Å, z, y, x)."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel_size
        m.header.origin.z, m.header.origin.y, m.header.origin.x = origin
    return path
