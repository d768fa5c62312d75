"""SegNet, CenterNet and the shared two-head network: 3D U-Nets, checkpoints, shipped weights.

SegNet predicts the particle mask (sigmoid), CenterNet the per-particle
normalized distance to the particle boundary (ReLU, 1 at the centre).  Both
are :class:`UNet3D` with the seed's architecture by default
(:class:`UNetConfig`); ``heads=("mask", "center")`` gives one network with a
shared encoder/decoder and two 1³ output heads, half the inference cost of
the pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._archive import FORMAT, FORMAT_VERSION, TensorRecord
    from ._checkpoint import load, read_checkpoint, save
    from ._config import HEAD_ACTIVATIONS, UNetConfig, receptive_extent, receptive_field
    from ._inference import forward, predict_array, zscore_stats
    from ._inspect import inspect_checkpoint
    from ._polarity import POLARITIES, check_polarity
    from ._tta import TTA_FLIPS, TTAS, check_tta, mean_over_flips
    from ._unet import UNet3D
    from ._widen import check_widening, widen

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "HEAD_ACTIVATIONS",
    "DefaultWeights",
    "UNet3D",
    "UNetConfig",
    "check_widening",
    "default_weights",
    "load",
    "predict_array",
    "forward",
    "POLARITIES",
    "check_polarity",
    "TTAS",
    "TTA_FLIPS",
    "check_tta",
    "mean_over_flips",
    "inspect_checkpoint",
    "TensorRecord",
    "read_checkpoint",
    "receptive_extent",
    "receptive_field",
    "save",
    "widen",
    "zscore_stats",
]

if not TYPE_CHECKING:  # PyTorch is imported with the first name that needs it, never for the others
    __getattr__, __dir__ = lazy_attributes(__name__, {
        "._archive": ("FORMAT", "FORMAT_VERSION", "TensorRecord"),
        "._inspect": ("inspect_checkpoint",),
        "._checkpoint": ("load", "read_checkpoint", "save"),
        "._config": ("HEAD_ACTIVATIONS", "UNetConfig", "receptive_extent", "receptive_field"),
        "._inference": ("forward", "predict_array", "zscore_stats"),
        "._polarity": ("POLARITIES", "check_polarity"),
        "._tta": ("TTAS", "TTA_FLIPS", "check_tta", "mean_over_flips"),
        "._unet": ("UNet3D",),
        "._widen": ("check_widening", "widen"),
    })

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "data" / "weights"


class DefaultWeights(NamedTuple):
    """Paths of the demo checkpoints shipped inside the package (``None`` where not shipped)."""

    segnet: Path | None
    centernet: Path | None
    twohead: Path | None


def default_weights() -> DefaultWeights:
    """Paths of the shipped demo checkpoints.

    Returns
    -------
    DefaultWeights
        ``segnet`` (mask), ``centernet`` (centre map) and ``twohead`` (both,
        shared network) checkpoint paths; a field is ``None`` when that file is
        not shipped.  Trained on simulated tomograms at 10 Å by
        ``cryodet-dask train`` (see ``docs/models.md`` for the command).

    Examples
    --------
    >>> w = default_weights()
    >>> net = load(w.segnet, expect_heads=("mask",))  # doctest: +SKIP
    """

    def _p(name: str) -> Path | None:
        p = WEIGHTS_DIR / name
        return p if p.is_file() else None

    return DefaultWeights(_p("segnet.pt"), _p("centernet.pt"), _p("twohead.pt"))
