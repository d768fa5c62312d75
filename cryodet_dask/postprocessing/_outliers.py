"""Outlier filter on the table of particle centroids (driver side)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["outlier_keep"]


def outlier_keep(centroids: np.ndarray, neighbor_number: int, distance_threshold: float) -> np.ndarray:
    """Which particles have enough neighbours.

    Parameters
    ----------
    centroids : ndarray, shape (N, 3)
        Particle centroids (z, y, x) in voxels.
    neighbor_number : int
        Minimum number of *other* centroids within ``distance_threshold``.
    distance_threshold : float
        Radius in voxels; a neighbour at exactly this distance counts.

    Returns
    -------
    ndarray of bool, shape (N,)
        ``True`` for particles that are kept.  With fewer than
        ``neighbor_number + 1`` particles none is kept (none can have enough
        neighbours); ``neighbor_number == 0`` keeps all.
    """
    centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 3)
    n = len(centroids)
    if neighbor_number <= 0:
        return np.ones(n, dtype=bool)
    if n == 0:
        return np.zeros(0, dtype=bool)
    tree = cKDTree(centroids)
    counts = tree.query_ball_point(centroids, r=float(distance_threshold), return_length=True)
    return (np.asarray(counts) - 1) >= neighbor_number
