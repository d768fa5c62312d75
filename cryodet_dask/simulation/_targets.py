"""Training targets of one particle: the CenterNet distance target.

The CenterNet target of a particle is the Euclidean distance of each of its
voxels to the particle's own boundary, normalised to [0, 1]:

* the *boundary* of a mask is the set of its voxels with at least one of the
  6 face neighbours outside the mask (Euclidean distance transform = 1);
* ``target = (edt - 1) / (max(edt) - 1)`` inside the mask, 0 outside, so
  boundary voxels are 0 and the deepest voxels 1;
* exactly one voxel is 1.0: among the deepest voxels the one closest to the
  mask centroid (first in (z, y, x) raster order on exact ties); the other
  deepest voxels get the largest float32 below 1.

The transform is computed on the particle's own box (padded by one
background voxel), never across touching particles.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["center_target", "BELOW_ONE"]

#: Value of the deepest voxels that are not the particle's single peak.
BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


def center_target(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Normalised distance-to-boundary target of one particle mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask of a single particle (its bounding box).

    Returns
    -------
    target : numpy.ndarray
        float32 array of ``mask.shape``: 0 outside the mask and on its
        boundary, exactly 1.0 at one voxel.
    peak : tuple of int
        (z, y, x) index of the voxel that is 1.0.

    Examples
    --------
    >>> m = np.zeros((5, 5, 5), bool); m[1:4, 1:4, 1:4] = True
    >>> t, peak = center_target(m)
    >>> peak, float(t[2, 2, 2]), float(t[1, 2, 2])
    ((2, 2, 2), 1.0, 0.0)
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("center_target needs a non-empty mask")
    padded = np.pad(mask, 1)
    edt = ndimage.distance_transform_edt(padded)[1:-1, 1:-1, 1:-1]
    dmax = float(edt.max())
    target = np.zeros(mask.shape, dtype=np.float32)
    if dmax > 1.0:
        target[mask] = ((edt[mask] - 1.0) / (dmax - 1.0)).astype(np.float32)
    deepest = np.argwhere(edt == dmax)
    centroid = np.argwhere(mask).mean(axis=0)
    dist2 = ((deepest - centroid) ** 2).sum(axis=1)
    # argmin returns the first minimum; argwhere is in raster order
    peak = tuple(int(v) for v in deepest[int(np.argmin(dist2))])
    target[tuple(deepest.T)] = BELOW_ONE if dmax > 1.0 else 0.0
    target[peak] = 1.0
    return target, peak  # type: ignore[return-value]
