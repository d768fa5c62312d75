"""Test-time augmentation: the flips a network's outputs are averaged over, named without PyTorch."""

from __future__ import annotations

from ..errors import ParameterError

__all__ = ["TTAS", "TTA_FLIPS", "check_tta"]

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
