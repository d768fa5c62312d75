"""A quick look at a volume: central XY and XZ slices and a label overlay, as a PNG.

Works on numpy arrays, memory maps and dask arrays alike: only the slices
shown are read.  Used by ``cryodet-dask simulate --preview`` and usable for
prediction overlays (any volume + any label volume).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError
from .io import atomic_output

__all__ = ["preview_png", "central_slices"]


def _take(volume: Any, index: tuple[Any, ...]) -> np.ndarray:
    part = volume[index]
    if hasattr(part, "compute"):
        part = part.compute()
    return np.asarray(part)


def central_slices(volume: Any, thickness: int = 1, *, reduce: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """The central XY slice (y, x) and central XZ slice (z, x) of a (z, y, x) volume.

    Parameters
    ----------
    volume : array-like
        numpy, memory-mapped or dask array, (z, y, x).
    thickness : int
        Number of slices averaged around the centre (1 = a single slice).
    reduce : {"mean", "max"}
        How the slices of a thick slab are combined (``"max"`` for labels).

    Returns
    -------
    xy, xz : numpy.ndarray
    """
    if len(volume.shape) != 3:
        raise ParameterError(f"a preview needs a 3D volume, got shape {tuple(volume.shape)}")
    nz, ny, _ = (int(s) for s in volume.shape)
    t = max(1, int(thickness))
    z0, y0 = max(0, nz // 2 - t // 2), max(0, ny // 2 - t // 2)
    xy = _take(volume, (slice(z0, min(nz, z0 + t)), slice(None), slice(None)))
    xz = _take(volume, (slice(None), slice(y0, min(ny, y0 + t)), slice(None)))
    if reduce == "max":
        return xy.max(axis=0), xz.max(axis=1)
    return xy.mean(axis=0, dtype=np.float64), xz.mean(axis=1, dtype=np.float64)


def _label_colors(labels: np.ndarray) -> np.ndarray:
    """RGBA image: each label a pseudo-random bright colour, background transparent."""
    ids = labels.astype(np.int64)
    rng_hue = (ids * 0.618033988749895) % 1.0
    from matplotlib.colors import hsv_to_rgb

    rgb = hsv_to_rgb(np.stack([rng_hue, np.full(ids.shape, 0.85), np.full(ids.shape, 1.0)], axis=-1))
    alpha = np.where(ids > 0, 0.45, 0.0)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def preview_png(
    volume: Any,
    path: str | os.PathLike[str],
    labels: Any | None = None,
    *,
    thickness: int = 1,
    voxel_size: float | None = None,
    title: str | None = None,
    overwrite: bool = True,
    dpi: int = 110,
) -> Path:
    """Write a PNG with the central XY slice, the central XZ slice and a label overlay.

    Parameters
    ----------
    volume : array-like
        (z, y, x) volume (numpy, memory map or dask); grey levels clipped to
        its 1st-99th percentiles, low values dark.
    path : path-like
        Output PNG.
    labels : array-like, optional
        (z, y, x) label volume of the same shape, 0 = background; drawn in
        colour over the XY and XZ slices in a third and fourth panel.
    thickness : int
        Slices averaged around the centre (a thicker slab shows more at low SNR).
    voxel_size : float, optional
        Å per voxel, to draw a 50 nm scale bar.
    title : str, optional
    overwrite : bool
        Replace an existing file.
    dpi : int

    Returns
    -------
    Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shape = tuple(int(s) for s in volume.shape)
    if labels is not None and tuple(int(s) for s in labels.shape) != shape:
        raise ParameterError(f"labels shape {tuple(labels.shape)} differs from the volume's {shape}")
    xy, xz = central_slices(volume, thickness)
    both = np.concatenate([xy.ravel(), xz.ravel()])
    vmin, vmax = (float(v) for v in np.percentile(both, [1, 99]))
    panels: list[tuple[str, np.ndarray, np.ndarray | None]] = [
        (f"XY, central slice z={shape[0] // 2}", xy, None),
        (f"XZ, central slice y={shape[1] // 2}", xz, None),
    ]
    if labels is not None:
        lxy, lxz = central_slices(labels, thickness, reduce="max")
        panels += [("XY + labels", xy, lxy), ("XZ + labels", xz, lxz)]
    nz, ny, nx = shape
    cols = 2 if labels is not None else 1
    col_width = 4.2 if labels is not None else 6.0
    fig = Figure(figsize=(col_width * cols, col_width * (ny + nz) / nx + (0.5 if title else 0.2)))
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, cols, height_ratios=[ny, nz])
    axes = [fig.add_subplot(gs[r, c]) for c in range(cols) for r in range(2)]
    for ax, (name, img, lab) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest", origin="upper")
        if lab is not None:
            ax.imshow(_label_colors(lab), interpolation="nearest", origin="upper")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if voxel_size and voxel_size > 0:
            bar = 500.0 / voxel_size  # 50 nm in voxels
            if bar < 0.5 * img.shape[1]:
                x0, y0 = 0.04 * img.shape[1], img.shape[0] - 0.06 * img.shape[0]
                ax.plot([x0, x0 + bar], [y0, y0], color="yellow", lw=2)
                ax.text(x0, y0 - 0.02 * img.shape[0], "50 nm", color="yellow", fontsize=7, va="bottom")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
