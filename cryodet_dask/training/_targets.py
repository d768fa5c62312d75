"""Training targets from instance label maps: binary mask and per-particle normalized distance."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mask_target", "center_target"]


def mask_target(labels: np.ndarray) -> np.ndarray:
    """Binary particle mask (float32 0/1) of an instance label map (0 = background)."""
    return (np.asarray(labels) > 0).astype(np.float32)


def center_target(labels: np.ndarray) -> np.ndarray:
    """Per-particle normalized distance to the particle boundary (the CenterNet target).

    Parameters
    ----------
    labels : numpy.ndarray
        Instance label map (z, y, x), 0 = background, one integer id per particle.

    Returns
    -------
    numpy.ndarray
        float32, same shape: inside particle ``i``, with ``d`` the Euclidean
        distance to the nearest voxel not in particle ``i``,
        ``(d - 1) / (max_i(d) - 1)`` — 0 on the particle's boundary voxels, 1
        at its single deepest voxel nearest its centroid (the other deepest
        voxels just below 1) — and 0 in the background.  This is
        :func:`cryodet_dask.simulation.center_target` applied per particle,
        the simulator's ``center.mrc`` definition: one definition for both.

    Notes
    -----
    Each particle is handled on its own bounding box padded by one voxel, so
    touching particles are separated and the cost scales with the particles,
    not the volume.  A particle cut by the array border sees the border as
    boundary: give the array a margin around the region of interest.

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), int); lab[1:4, 1:4, 1:4] = 7
    >>> t = center_target(lab)
    >>> float(t[2, 2, 2]), float(t[1, 2, 2]), float(t[0, 2, 2])
    (1.0, 0.0, 0.0)
    """
    from ..simulation import center_target as particle_center_target

    lab = np.asarray(labels)
    out = np.zeros(lab.shape, np.float32)
    if not lab.any():
        return out
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        big = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, lab.shape))
        inside = lab[big] == i
        target, _ = particle_center_target(inside)
        out[big][inside] = target[inside]
    return out
