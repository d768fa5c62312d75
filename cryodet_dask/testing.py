"""Helpers for tests and examples: tiny MRC files and volumes made on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def tiny_species_setup(tmp: str | os.PathLike[str], species: Any, seed: int = 1) -> tuple[Any, Any]:
    """A small random-weight multi-species network (channels 4, 8; 10 Å) saved as ``tmp/sp.pt`` and a
    24 x 32 x 32 noise tomogram ``tmp/t.mrc`` at 10 Å, for fast end-to-end tests.

    ``species``: a :class:`~cryodet_dask.species.SpeciesTable` or what ``SpeciesTable.of`` takes.
    Returns (checkpoint path, tomogram path).
    """
    import torch

    from . import models
    from .species import SpeciesTable

    torch.manual_seed(seed)
    table = species if isinstance(species, SpeciesTable) else SpeciesTable.of(species)
    cfg = models.UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center", "species"),
                            species=table, voxel_size=10.0)
    ckpt = models.save(models.UNet3D(cfg), Path(tmp) / "sp.pt")
    tomo = make_mrc(Path(tmp) / "t.mrc", np.random.default_rng(0).normal(size=(24, 32, 32)).astype(np.float32))
    return ckpt, tomo
