"""Synthetic map pairs for tests and benchmarks (not a simulation of tomograms).

Particles are axis-aligned ellipsoids with random radii; the mask map is a soft
indicator (1 inside, falling to 0 at 1.5 radii), the centre map a Gaussian
bump at each particle centre (maximum over particles), so touching particles
give components with several centres.  Maps can be rasterized region by region
(:func:`rasterize`) to build volumes larger than memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["blob_maps", "random_particles", "rasterize"]


def random_particles(shape: Sequence[int], n_particles: int, radius: tuple[float, float] = (3.0, 6.0),
                     elongation: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random particle centres (n, 3) and semi-axes (n, 3), z, y, x in voxels."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 1, size=(n_particles, 3)) * np.asarray(shape, dtype=np.float64)
    r = rng.uniform(*radius, size=n_particles)
    stretch = rng.uniform(1.0, max(elongation, 1.0), size=n_particles)
    axes = np.stack([r * stretch, r, r / np.sqrt(stretch)], axis=1)
    axes = rng.permuted(axes, axis=1)
    return pos, axes


def rasterize(pos: np.ndarray, axes: np.ndarray, region: Sequence[tuple[int, int]],
              dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Mask and centre maps of the particles inside ``region`` ((z0, z1), (y0, y1), (x0, x1))."""
    lo_r = np.array([r[0] for r in region])
    hi_r = np.array([r[1] for r in region])
    shape = tuple(int(v) for v in hi_r - lo_r)
    mask = np.zeros(shape, dtype=np.float32)
    center = np.zeros(shape, dtype=np.float32)
    ext = np.ceil(axes.max(axis=1) * 1.5 + 1).astype(int)
    base = np.floor(pos).astype(int)
    lo_all = np.maximum(base - ext[:, None], lo_r)
    hi_all = np.minimum(base + ext[:, None] + 1, hi_r)
    for i in np.flatnonzero(np.all(hi_all > lo_all, axis=1)):
        lo, hi, p, a = lo_all[i], hi_all[i], pos[i], axes[i]
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        q = ((zz - p[0]) / a[0]) ** 2 + ((yy - p[1]) / a[1]) ** 2 + ((xx - p[2]) / a[2]) ** 2
        sl = tuple(slice(int(l - o), int(h - o)) for l, h, o in zip(lo, hi, lo_r))
        np.maximum(mask[sl], np.clip(1.5 - np.sqrt(q), 0.0, 1.0).astype(np.float32), out=mask[sl])
        np.maximum(center[sl], np.exp(-2.0 * q).astype(np.float32), out=center[sl])
    return mask.astype(dtype, copy=False), center.astype(dtype, copy=False)


def blob_maps(shape: tuple[int, int, int], n_particles: int, radius: tuple[float, float] = (3.0, 6.0),
              elongation: float = 1.0, seed: int = 0, noise: float = 0.0,
              dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask-probability and centre maps with ``n_particles`` ellipsoidal blobs.

    Parameters
    ----------
    shape : tuple of int
        (Z, Y, X) in voxels.
    n_particles : int
        Number of blobs (placed uniformly at random; they may touch or overlap).
    radius : (float, float)
        Range of the blob radii in voxels.
    elongation : float
        Maximum ratio of the longest to the middle axis (1: spheres).
    seed : int
        Random seed.
    noise : float
        Amplitude of uniform noise added to both maps (clipped to [0, 1]).

    Returns
    -------
    mask, center : ndarray
        Maps in [0, 1].
    positions : ndarray, shape (n, 3)
        True centres (z, y, x), float.
    """
    pos, axes = random_particles(shape, n_particles, radius, elongation, seed)
    mask, center = rasterize(pos, axes, [(0, s) for s in shape])
    if noise:
        rng = np.random.default_rng(seed + 1)
        mask = np.clip(mask + rng.uniform(-noise, noise, shape).astype(np.float32), 0, 1)
        center = np.clip(center + rng.uniform(-noise, noise, shape).astype(np.float32), 0, 1)
    return mask.astype(dtype), center.astype(dtype), pos
