"""Test-time augmentation: the flips a network's outputs are averaged over, named without PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ParameterError

__all__ = ["TTAS", "TTA_FLIPS", "check_tta", "mean_over_flips"]

T = TypeVar("T", bound=Any)

#: Test-time augmentations.  ``"none"`` (the default): one pass.  ``"flips"``: the mean of the outputs on
#: the tomogram and on three mirror images of it, each mirrored back: flipped in y and x (a 180° turn
#: about the beam axis), in z, and in all three axes.  These keep the missing wedge where it is, and a
#: flip of a tile is a flip of every voxel's neighbourhood, so chunked prediction stays exact (to float
#: rounding).  Four passes, four times the inference time.
TTAS = ("none", "flips")

#: The flips of ``"flips"``, as the axes (z, y, x) = (0, 1, 2) each pass mirrors.
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {"none": ((),), "flips": ((), (1, 2), (0,), (0, 1, 2))}


def check_tta(tta: str) -> str:
    if tta not in TTAS:
        raise ParameterError(f"tta must be one of {', '.join(TTAS)}, got {tta!r}")
    return tta


def mean_over_flips(run: Callable[[T], T], x: T, tta: str, flip: Callable[[T, tuple[int, ...]], T]) -> T:
    """The mean over the flips of ``tta`` of ``flip(run(flip(x, dims)), dims)``, for a batch ``x`` of
    shape (batch, channel, z, y, x); ``flip`` is ``torch.flip`` or ``numpy.flip`` (one loop for every
    engine).  With ``tta="none"``, ``run(x)`` itself."""
    flips = TTA_FLIPS[check_tta(tta)]
    total: Any = None
    for axes in flips:
        dims = tuple(a + 2 for a in axes)
        y = flip(run(flip(x, dims)), dims) if dims else run(x)
        total = y if total is None else total + y
    return total if len(flips) == 1 else total / len(flips)
