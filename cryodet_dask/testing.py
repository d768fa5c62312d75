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


def tiny_two_head_checkpoint(path: str | os.PathLike[str], seed: int = 3) -> os.PathLike[str] | str:
    """A small random-weight two-head U-Net (channels 4, 6, 8) saved as a checkpoint, for fast tests."""
    import torch

    from . import models

    torch.manual_seed(seed)
    net = models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center")))
    return models.save(net, path)
