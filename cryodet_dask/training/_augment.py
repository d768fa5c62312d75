"""Data augmentation of training patches (numpy, in place of nothing: returns new arrays)."""

from __future__ import annotations

import numpy as np

__all__ = ["augment"]


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, rotate: bool = True, flip: bool = True,
            intensity: float = 0.1, invert: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Randomly rotate, flip and jitter the intensity of one patch and its targets.

    Parameters
    ----------
    x : numpy.ndarray
        Normalized input patch (Z, Y, X).
    y : numpy.ndarray
        Targets (C, Z, Y, X), transformed geometrically like ``x``.
    rng : numpy.random.Generator
        Source of randomness.
    rotate : bool
        Rotate by a random multiple of 90° about the tilt axis (y), i.e. in
        the (z, x) plane, as in the seed; only 0°/180° when Z != X.
    flip : bool
        Flip each axis with probability 1/2.
    intensity : float
        Intensity jitter: ``x * (1 + a) + b`` with ``a, b ~ U(-intensity, intensity)``
        (in normalized units), plus Gaussian noise of standard deviation
        ``U(0, intensity)``.
    invert : float
        Probability of negating the patch: the contrast polarity of real
        tomograms depends on the reconstruction software, and a network that
        sees both finds particles in either.  Applied before the intensity
        jitter; the targets do not change.

    Returns
    -------
    x, y : numpy.ndarray
        Augmented copies (contiguous float32).
    """
    if rotate:
        k = int(rng.integers(4)) if x.shape[0] == x.shape[2] else 2 * int(rng.integers(2))
        if k:
            x = np.rot90(x, k, axes=(0, 2))
            y = np.rot90(y, k, axes=(1, 3))
    if flip:
        for ax in range(3):
            if rng.random() < 0.5:
                x = np.flip(x, ax)
                y = np.flip(y, ax + 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if invert > 0 and rng.random() < invert:
        x = -x
    if intensity > 0:
        a, b = rng.uniform(-intensity, intensity, size=2)
        sigma = rng.uniform(0, intensity)
        x = x * np.float32(1 + a) + np.float32(b)
        if sigma > 0:
            x = x + rng.normal(0, sigma, size=x.shape).astype(np.float32)
    return x.astype(np.float32, copy=False), y
