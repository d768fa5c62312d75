"""Training targets from instance label maps: binary mask and a per-particle centre target.

Two centre targets: the seed's normalized distance to the particle boundary
(``"distance"``, :func:`center_target`) and a Gaussian around the particle's
centroid (``"gaussian"``, :func:`gaussian_center_target`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

__all__ = ["CENTER_TARGETS", "center_target", "gaussian_center_target", "make_center_target", "mask_target"]

#: The centre targets a network can be trained on (``TrainingConfig.center_target``).
CENTER_TARGETS: tuple[str, ...] = ("distance", "gaussian")


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
    for big, inside in _particles(lab, pad=1):
        target, _ = particle_center_target(inside)
        out[big][inside] = target[inside]
    return out


def _particles(lab: np.ndarray, pad: int = 0) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Each particle of a label map as (its bounding box grown by ``pad`` voxels and clipped to the
    array, the particle's voxels in that box): the per-particle loop of both centre targets."""
    if not lab.any():
        return
    objs = ndimage.find_objects(lab.astype(np.int64, copy=False) if lab.dtype.kind in "ub" else lab)
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, lab.shape))
        yield box, lab[box] == i


def gaussian_center_target(labels: np.ndarray) -> np.ndarray:
    """Per-particle Gaussian around the particle's centroid (an alternative CenterNet target).

    Parameters
    ----------
    labels : numpy.ndarray
        Instance label map (z, y, x), 0 = background, one integer id per particle.

    Returns
    -------
    numpy.ndarray
        float32, same shape: at each voxel ``x`` of particle ``i``,
        ``exp(-|x - c_i|^2 / (2 sigma_i^2))`` with ``c_i`` the mean voxel
        coordinate of label ``i`` and ``sigma_i = r_i / 2``, ``r_i`` the
        particle's equivalent radius (of a ball of its voxel count,
        ``(3 n_i / (4 pi))^(1/3)``); 0 in the background.  Values lie in
        (0, 1]; the maximum of a particle is at its voxel nearest the centroid
        (exactly 1 where the centroid is a voxel centre), and a ball's
        boundary is near ``exp(-2) ~ 0.135``.

    Notes
    -----
    Every voxel takes the value of its own label only, so touching or
    interpenetrating particles keep separate peaks.  Each particle is handled
    on its bounding box (cost scales with the particles, not the volume).  The
    centroid and voxel count are those of the label inside the array: a
    particle cut by the array border has its centroid shifted, so give the
    array a margin around the region of interest (as for
    :func:`center_target`).

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), int); lab[1:4, 1:4, 1:4] = 7
    >>> t = gaussian_center_target(lab)
    >>> float(t[2, 2, 2]), round(float(t[1, 2, 2]), 3), float(t[0, 2, 2])
    (1.0, 0.561, 0.0)
    """
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, np.float32)
    for sl, inside in _particles(lab):
        pts = np.argwhere(inside).astype(np.float64)
        n = pts.shape[0]
        centroid = pts.mean(axis=0)
        radius = (3.0 * n / (4.0 * np.pi)) ** (1.0 / 3.0)
        sigma2 = (radius / 2.0) ** 2
        d2 = ((pts - centroid) ** 2).sum(axis=1)
        out[sl][inside] = np.exp(-d2 / (2.0 * sigma2)).astype(np.float32)
    return out


def make_center_target(labels: np.ndarray, kind: str = "distance") -> np.ndarray:
    """The centre target ``kind`` (one of :data:`CENTER_TARGETS`) of an instance label map.

    ``"distance"``: :func:`center_target`; ``"gaussian"``: :func:`gaussian_center_target`.
    """
    if kind == "distance":
        return center_target(labels)
    if kind == "gaussian":
        return gaussian_center_target(labels)
    raise ValueError(f"unknown centre target {kind!r}; expected one of {list(CENTER_TARGETS)}")
