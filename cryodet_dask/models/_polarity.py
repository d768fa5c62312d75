"""The contrast polarity a network meets a tomogram with: a name, checked without PyTorch."""

from __future__ import annotations

from ..errors import ParameterError

__all__ = ["POLARITIES", "check_polarity"]

#: How a network meets the tomogram's contrast polarity.  ``"both"``: the mean of its outputs on the
#: normalized tomogram ``x`` and on ``-x`` (the same tomogram with inverted contrast), so the maps are
#: exactly the same whichever way the reconstruction software wrote the contrast (two forward passes);
#: ``"as-is"`` (the default): one pass on ``x``.  On validation data ``"both"`` gained 0.007 F1, less
#: than the noise of that set, for twice the inference time, so it is an option (README, Results).
POLARITIES = ("as-is", "both")


def check_polarity(polarity: str) -> str:
    if polarity not in POLARITIES:
        raise ParameterError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    return polarity
