"""What a detection run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da

__all__ = ["DetectionResult"]


@dataclass
class DetectionResult:
    """What :func:`detect` found.

    Attributes
    ----------
    labels : dask.array.Array
        Instance label image (uint32, z, y, x), lazy.
    particles : pandas.DataFrame
        One row per particle: ``id, x, y, z`` (voxels), ``x_angst, y_angst,
        z_angst`` (Å), ``n_voxels``, ``score`` (centre-map peak over the particle: the
        ranking score), ``mask_score`` (mean mask probability); with a multi-species model also
        ``class`` (the species) and ``class_score`` (its mean probability over the particle).
    voxel_size : float or None
        Å per voxel used for the Å columns; None when unknown (no header, no ``-vs``: the Å columns are NaN).
    files : dict
        Output files by kind.
    timings : dict
        Seconds per stage.
    """

    labels: da.Array
    particles: Any
    voxel_size: float | None
    detections: Any = None
    prediction: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    _tmp: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.particles)
