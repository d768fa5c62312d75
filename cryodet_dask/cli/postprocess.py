"""``cryodet-dask postprocess``: predicted maps -> instance labels and particle centres."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from ._common import (
    add_bool_flag,
    deprecated_alias,
    finite_nonneg_float,
    fraction,
    int_triplet,
    nonneg_float,
    nonneg_int,
    positive_float,
    show_progress,
)


def _formats(text: str) -> tuple[str, ...]:
    from ..exports import FORMATS

    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in FORMATS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"formats are a comma list of {', '.join(FORMATS)}; got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    from ..postprocessing import PostprocessParams

    d = PostprocessParams()
    p = sub.add_parser(
        "postprocess",
        help="turn predicted mask and centre maps into instance labels and particle centres",
        description="Read a prediction store (a Zarr group with arrays 'mask' and 'center'), find the "
        "particles block by block (exact: the result does not depend on the chunking) and write the "
        "instance label image (MRC, OME-Zarr) and the particle centres (TXT, CSV, RELION 5 STAR). "
        "Sizes and distances are in voxels.",
    )
    p.add_argument("predictions", metavar="PRED.zarr", help="Zarr group with arrays 'mask' and 'center'")
    p.add_argument("-o", "--out", dest="out", default=None, metavar="OUT_DIR", help="output directory (required)")
    deprecated_alias(p, "--output", "-o/--out", "out")
    p.add_argument("--name", default=None, help="base name of the outputs (default: the store's name)")
    g = p.add_argument_group("detection parameters (the seed's short flags are aliases)")
    g.add_argument("--mask-threshold", "-mt", type=fraction, default=d.mask_threshold, metavar="P",
                   help=f"foreground is mask > P, P in [0, 1] (default: {d.mask_threshold})")
    g.add_argument("--center-threshold", "-ct", type=fraction, default=d.center_threshold, metavar="P",
                   help=f"centre-map values below P count as 0, P in [0, 1] (default: {d.center_threshold})")
    g.add_argument("--remove-min-size", "-rs", type=nonneg_int, default=None, metavar="VOXELS",
                   help="remove foreground components smaller than this many voxels, before the check_center split "
                   f"(default: {d.remove_min_size}, or from --particle-diameter)")
    g.add_argument("--center-min-distance", type=finite_nonneg_float, default=None, metavar="VOXELS",
                   help="centre fusion: a centre-map maximum is a centre only if no voxel within this Euclidean "
                   "distance is larger (equal values: the first in raster order wins); below 2 only the 26 "
                   f"neighbours count (default: {d.center_min_distance:g}, or from --particle-diameter)")
    g.add_argument("--min-particle-size", type=nonneg_int, default=d.min_particle_size, metavar="VOXELS",
                   help="remove particles smaller than this many voxels after the check_center split, before the "
                   f"outlier filter (default: {d.min_particle_size})")
    g.add_argument("--min-score", type=finite_nonneg_float, default=d.min_score, metavar="SCORE",
                   help="remove particles whose score (the centre-map peak over the particle, 0-1) is below this, "
                   f"before the outlier filter (default: {d.min_score:g})")
    g.add_argument("--particle-diameter", type=positive_float, default=None, metavar="ANGSTROM",
                   help="particle diameter in Å: sets --center-min-distance to half of it and -rs to the volume of "
                   "a sphere of half of it (in voxels, from the voxel size) unless those are given")
    add_bool_flag(g, "check-center", d.check_center,
                  "split a component only by the centres inside it, and only when it holds 2 or more",
                  aliases=("-check_center",))
    add_bool_flag(g, "filter-outlier", d.filter_outlier,
                  "remove particles with fewer than --neighbor-number neighbours within --distance-threshold",
                  aliases=("-filter_outlier",))
    g.add_argument("--neighbor-number", "-nn", type=nonneg_int, default=d.neighbor_number, metavar="N",
                   help=f"outlier filter: minimum number of other particles nearby (default: {d.neighbor_number})")
    g.add_argument("--distance-threshold", "-dt", type=nonneg_float, default=d.distance_threshold,
                   metavar="VOXELS", help=f"outlier filter: neighbour radius in voxels (default: {d.distance_threshold:g})")
    g.add_argument("--connectivity", type=int, choices=(1, 2, 3), default=d.connectivity,
                   help="voxels touching by a face (1), face or edge (2), or any of 26 neighbours (3); "
                   f"used by every connected-component step (default: {d.connectivity})")
    o = p.add_argument_group("output")
    o.add_argument("--formats", type=_formats, default=("mrc", "txt", "csv", "star", "zarr"), metavar="LIST",
                   help="comma list of mrc, txt, csv, star, zarr (default: all)")
    o.add_argument("--voxel-size", "-vs", type=positive_float, default=None, metavar="ANGSTROM",
                   help="voxel size in Å (default: from the prediction store)")
    o.add_argument("--tomogram-name", dest="tomogram_name", default=None,
                   help="rlnTomoName in the STAR file (default: --name)")
    deprecated_alias(o, "--tomo-name", "--tomogram-name", "tomogram_name")
    o.add_argument("--label-dtype", choices=("auto", "uint16", "int16", "float32"), default="auto",
                   help="MRC label type: auto = uint16 when the particles fit (default), float32 like the seed")
    o.add_argument("--chunks", type=int_triplet, default=None, metavar="N|Z,Y,X",
                   help="block shape in voxels (default: the store's chunks)")
    o.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    from ..cluster import add_cluster_arguments

    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ParameterError
    from ..exports import export
    from ..io import load
    from ..postprocessing import PostprocessParams, postprocess
    from ..postprocessing import from_particle_diameter

    src = Path(args.predictions)
    chunks = args.chunks if args.chunks is None or len(args.chunks) == 3 else args.chunks * 3
    mask_t = load(src, chunks=chunks, array="mask")
    center_t = load(src, chunks=chunks, array="center")
    name = args.name or src.name.removesuffix(".zarr")
    voxel_size = args.voxel_size or mask_t.voxel_size
    given = {"remove_min_size": args.remove_min_size, "center_min_distance": args.center_min_distance}
    if args.particle_diameter is not None and any(v is None for v in given.values()):
        if not voxel_size:
            raise ParameterError(f"--particle-diameter needs the voxel size: {src} has none; give --voxel-size")
        derived = from_particle_diameter(args.particle_diameter, float(voxel_size))
        given = {k: derived[k] if v is None else v for k, v in given.items()}
    params = PostprocessParams(
        mask_threshold=args.mask_threshold, center_threshold=args.center_threshold,
        check_center=args.check_center, filter_outlier=args.filter_outlier, neighbor_number=args.neighbor_number,
        distance_threshold=args.distance_threshold, connectivity=args.connectivity,
        min_particle_size=args.min_particle_size, min_score=args.min_score,
        **{k: v for k, v in given.items() if v is not None},  # the others: PostprocessParams' defaults
    )
    if not args.out:
        raise ParameterError("postprocess needs the output folder: -o/--out OUT_DIR")
    out = Path(args.out)
    progress = show_progress(args)
    from ..cluster import cluster_from_args

    with contextlib.ExitStack() as stack:
        stack.enter_context(cluster_from_args(args))
        out.mkdir(parents=True, exist_ok=True)
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=".cryodet-pieces-", dir=out))
        det = postprocess(mask_t.data, center_t.data, params, scratch=scratch, progress=progress)
        written = export(det, out, name, voxel_size if voxel_size else None,
                         origin_zyx=mask_t.origin_zyx, formats=args.formats, tomo_name=args.tomogram_name,
                         label_dtype=args.label_dtype, overwrite=args.overwrite, progress=progress)
    if not args.quiet:
        print(f"{len(det.centers)} particles; wrote " + ", ".join(str(p) for p in written.values()))
    return 0
