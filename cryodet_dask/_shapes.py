"""Small shape helpers shared by every package: one definition of each.

``triplet`` turns "one value or (z, y, x)" into three values (chunks, halos, patch and volume
shapes, voxel sizes); ``end_padding`` is the zero padding at the end of each axis up to a multiple
of the U-Net's pooling factor (the whole-volume reference and the chunked engine pad alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = ["triplet", "end_padding"]

T = TypeVar("T", int, float)


def triplet(value: T | Sequence[T] | np.ndarray) -> tuple[T, T, T]:
    """``v`` or ``(v,)`` -> ``(v, v, v)``; ``(z, y, x)`` unchanged; anything else is a ``ValueError``."""
    if isinstance(value, np.ndarray):
        values = tuple(value.ravel().tolist())
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
    else:
        values = (value,)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"expected one value or three (z, y, x), got {value!r}")
    return values


def end_padding(shape: Sequence[int], multiple: int) -> list[tuple[int, int]]:
    """``np.pad`` widths that extend each axis at its end to a multiple of ``multiple``."""
    return [(0, (-int(n)) % int(multiple)) for n in shape]
