"""The flags more than one command takes, declared once.

``detect`` and ``postprocess`` add the post-processing flags from :data:`FLAGS` and :data:`BOOL_FLAGS`;
``detect`` and ``predict`` add the networks' flags from :data:`NETWORK_FLAGS` (same names, parsers, units
and help); ``detect``'s YAML config parses each key (the long flag's name) with the same parser.

Nothing here imports more than :class:`~cryodet_dask.postprocessing.PostprocessParams` (no torch, dask or
pandas): ``--help`` answers at once.  The networks' defaults are therefore stated in :data:`NETWORK_FLAGS`
(``Flag.default``), equal to :class:`~cryodet_dask.pipeline.DetectParams`' (a test checks).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ._common import (add_bool_flag, finite_nonneg_float, fraction, int_triplet, min_score_arg, nonneg_float,
                      nonneg_int, particle_diameter_arg, positive_int)

__all__ = ["FLAGS", "BOOL_FLAGS", "NETWORK_FLAGS", "Flag", "add_postprocess_flags", "add_network_flags",
           "connectivity", "choice", "nonempty_text"]


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting one of ``allowed`` (case-insensitive)."""
    def parse(text: str) -> str:
        t = str(text).strip().lower()
        if t not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return t
    return parse


def nonempty_text(text: str) -> str:
    """A path or a name: any non-empty text."""
    if not isinstance(text, str) or not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return text


def connectivity(text: str) -> int:
    """1, 2 or 3."""
    try:
        v = int(str(text))
    except ValueError:
        v = 0
    if v not in (1, 2, 3):
        raise argparse.ArgumentTypeError(f"expected 1, 2 or 3, got {text!r}")
    return v


@dataclass(frozen=True)
class Flag:
    """One post-processing parameter on the command line: ``name`` is the PostprocessParams/DetectParams
    field and the YAML key; ``help`` gets " (default: ...)" appended from PostprocessParams."""

    name: str
    short: str | None
    parse: Callable[[str], Any]
    metavar: str
    help: str
    from_diameter: bool = False  # None by default: derived from --particle-diameter when that is given
    default_help: str | None = None  # the "(default: ...)" text, when the default is not a plain value
    default: Any = None  # NETWORK_FLAGS only: DetectParams' default (PostprocessParams' are read from it)

    @property
    def long(self) -> str:
        return "--" + self.name.replace("_", "-")


FLAGS: tuple[Flag, ...] = (
    Flag("mask_threshold", "-mt", fraction, "[0-1]", "foreground = mask probability > this"),
    Flag("center_threshold", "-ct", fraction, "[0-1]", "centre-map values below this are ignored"),
    Flag("remove_min_size", "-rs", nonneg_int, "VOXELS",
         "remove connected components smaller than this many voxels, before the check_center split",
         from_diameter=True),
    Flag("center_min_distance", None, finite_nonneg_float, "VOXELS",
         "centre fusion: a centre-map maximum is a centre only if no voxel within this Euclidean distance is "
         "larger (equal values: the first in raster order wins); below 2 only the 26 neighbours count",
         from_diameter=True),
    Flag("min_particle_size", None, nonneg_int, "VOXELS",
         "remove particles smaller than this many voxels after the check_center split, before the outlier filter"),
    Flag("min_score", None, min_score_arg, "SCORE|NAME:SCORE,...",
         "remove particles whose score (the centre-map peak over the particle, 0-1) is below this, before the "
         "outlier filter; 0 removes none. Per species of a multi-species model (NAME:SCORE,...): each species "
         "named its own threshold, the others the default"),
    Flag("particle_diameter", None, particle_diameter_arg, "ANGSTROM|NAME:ANGSTROM,...",
         "particle diameter in Å: sets --center-min-distance to half of it and -rs to the volume of a sphere of "
         "half of it (in voxels, from the voxel size) unless those are given. Per species of a multi-species "
         "model (NAME:ANGSTROM,...; default: the diameters the model was trained with): each species' own "
         "fusion distance and minimum particle size; -rs the smallest species'"),
    Flag("neighbor_number", "-nn", nonneg_int, "N", "outlier filter: particles needed within the distance"),
    Flag("distance_threshold", "-dt", nonneg_float, "VOXELS", "outlier filter: neighbour distance in voxels"),
    Flag("connectivity", None, connectivity, "{1,2,3}",
         "voxel connectivity of every connected-component step: 1 faces, 2 +edges, 3 +corners"),
)

#: (name, seed spelling, help) of the on/off post-processing switches.
BOOL_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("check_center", "-check_center",
     "split a connected component only by the centres inside it, and only if it holds 2 or more; off: assign "
     "every foreground voxel to its nearest centre, wherever it is"),
    ("filter_outlier", "-filter_outlier",
     "remove particles with fewer than -nn other particles within -dt voxels"),
)


#: The networks' flags (``detect`` and ``predict``); their defaults are :class:`DetectParams`', stated here so
#: that ``--help`` need not import the pipeline (tests/test_cli_startup.py checks that they agree).
NETWORK_FLAGS: tuple[Flag, ...] = (
    Flag("segnet", "-m", nonempty_text, "CKPT", "SegNet checkpoint, or one two-head checkpoint",
         default_help="the shipped two-head network"),
    Flag("centernet", "-c", nonempty_text, "CKPT", "CenterNet checkpoint, with -m", default_help="none"),
    Flag("chunks", "-ps", int_triplet, "N|Z,Y,X",
         "storage chunk (patch) size in voxels, rounded up to the pooling factor: the maps' chunks and the "
         "post-processing's blocks", default_help="128", default=(128,)),
    Flag("halo", None, int_triplet, "N|Z,Y,X", "inference halo in voxels on each side",
         default_help="half the receptive field"),
    Flag("tile", None, int_triplet, "N|Z,Y,X",
         "core of one forward pass in voxels, rounded up to whole chunks; the maps are the same for any tile",
         default_help="on GPU workers, e.g. --cluster local-cuda, planned: the fewest computed voxels that fit "
         "the GPU's memory; elsewhere one chunk"),
    Flag("device", None, choice("auto", "cpu", "cuda"), "{auto,cpu,cuda}", "where the networks run",
         default_help="auto: cuda when a GPU is visible", default="auto"),
    Flag("batch_size", None, positive_int, "N", "tiles per forward call", default_help="1", default=1),
    Flag("polarity", None, choice("both", "as-is"), "{both,as-is}",
         "as-is: one forward pass; both: the maps are the mean of the networks' outputs on the tomogram and on "
         "its contrast-inverted copy, exactly the same whichever way the contrast was written (two forward "
         "passes, twice the inference time; the CSV then has no pick probability)", default_help="as-is",
         default="as-is"),
    Flag("tta", None, choice("none", "flips"), "{none,flips}",
         "test-time augmentation: flips makes each map the mean of the networks' outputs on the tomogram and "
         "on three mirror images of it, mirrored back (y and x, z, all three); four forward passes, four "
         "times the inference time; the maps stay the same for any chunking; the CSV then has no pick "
         "probability (its calibration was fitted without flips)",
         default_help="none", default="none"),
    Flag("engine", None, choice("auto", "torch", "openvino"), "{auto,torch,openvino}",
         "torch: PyTorch on --device; openvino: the networks run by OpenVINO's CPU plugin in fp32, 1.8x faster "
         "than torch in predict on a 2-core AVX2 CPU, maps within 1e-5 (CPU only; pip install "
         "'cryodet-dask[openvino]'); auto: openvino when it is installed and the networks run on the CPU, "
         "else torch (the run records which)",
         default_help="auto", default="auto"),
)


def add_network_flags(group: Any, *, suppress: bool = False) -> None:
    """Add the networks' flags to ``group`` (``suppress``: as for :func:`add_postprocess_flags`)."""
    d = SimpleNamespace(**{flag.name: flag.default for flag in NETWORK_FLAGS})
    for flag in NETWORK_FLAGS:
        _add(group, flag, d, suppress)


def _default_text(flag: Flag, value: Any) -> str:
    if flag.default_help is not None:
        return f" (default: {flag.default_help})"
    if flag.name == "particle_diameter":
        return ""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f" (default: {shown}" + (", or from --particle-diameter)" if flag.from_diameter else ")")


def add_postprocess_flags(group: Any, *, suppress: bool = False) -> None:
    """Add every post-processing flag to ``group``.

    ``suppress``: leave unset flags out of the namespace (``detect``, whose YAML config fills them);
    otherwise each flag defaults to its :class:`PostprocessParams` value (None for the ones
    ``--particle-diameter`` derives).
    """
    from ..postprocessing import PostprocessParams

    d = PostprocessParams()
    for flag in FLAGS[:7]:
        _add(group, flag, d, suppress)
    for name, seed, text in BOOL_FLAGS:
        add_bool_flag(group, name.replace("_", "-"), getattr(d, name), text, aliases=(seed,), suppress=suppress)
    for flag in FLAGS[7:]:
        _add(group, flag, d, suppress)


def _add(group: Any, flag: Flag, d: Any, suppress: bool) -> None:
    value = getattr(d, flag.name, None)
    default: Any = argparse.SUPPRESS if suppress else (None if flag.from_diameter else value)
    names = ([flag.short] if flag.short else []) + [flag.long]  # the seed's short flag first, as it names errors
    group.add_argument(*names, dest=flag.name, type=flag.parse, metavar=flag.metavar, default=default,
                       help=flag.help + _default_text(flag, value))
