"""The compressors' names, without zarr: the command line's ``--codec`` choices read them here
(:func:`cryodet_dask.io.make_compressor` makes them)."""

from __future__ import annotations

from typing import Any

__all__ = ["CODECS", "DEFAULT_CODEC"]

#: Compressors selectable by name (``--codec``).  See the README's codec table
#: for the measurement behind the default, ``auto``: noisy tomograms barely
#: compress (about 1.1x for float32 whatever the codec), so speed decides:
#: LZ4 with bit-shuffle for multi-byte types (1.11x, ~2x the speed of Zstd),
#: Zstd level 5 for 1-byte types where shuffling has nothing to reorder.
CODECS: dict[str, dict[str, Any] | None] = {
    "auto": None,
    "zstd3-bitshuffle": dict(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "zstd5-shuffle": dict(cname="zstd", clevel=5, shuffle="shuffle"),
    "zstd1-bitshuffle": dict(cname="zstd", clevel=1, shuffle="bitshuffle"),
    "lz4-shuffle": dict(cname="lz4", clevel=5, shuffle="shuffle"),
    "lz4-bitshuffle": dict(cname="lz4", clevel=5, shuffle="bitshuffle"),
    "none": None,
}
DEFAULT_CODEC = "auto"
