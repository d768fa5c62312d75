"""``cryodet-dask postprocess``: predicted maps -> instance labels and particle centres."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from ._common import deprecated_alias, format_list, int_triplet, positive_float, show_progress
from ._flags import add_postprocess_flags


def register(sub: argparse._SubParsersAction) -> None:
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
    g = p.add_argument_group("detection parameters (sizes and distances in voxels; the seed's short flags are aliases)")
    add_postprocess_flags(g)
    o = p.add_argument_group("output")
    o.add_argument("--formats", type=format_list, default=("mrc", "txt", "csv", "star", "zarr"), metavar="LIST",
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
    from ..pipeline.params import check_known_voxel_size
    from ..postprocessing import PostprocessParams, postprocess
    from ..postprocessing import from_particle_diameter
    from ..postprocessing import check_center_min_distance, check_plan

    src = Path(args.predictions)
    chunks = args.chunks if args.chunks is None or len(args.chunks) == 3 else args.chunks * 3
    mask_t = load(src, array="mask")  # in the store's chunks: a --chunks too fine is refused before it is made
    name = args.name or src.name.removesuffix(".zarr")
    voxel_size = args.voxel_size or mask_t.voxel_size
    check_known_voxel_size(voxel_size or None, args.formats, str(src))  # Å outputs need it: never a guess
    if isinstance(args.particle_diameter, dict):
        raise ParameterError("postprocess works on the mask and centre maps alone: give one --particle-diameter in Å "
                             "(per-species diameters are for detect with a multi-species model)")
    if isinstance(args.min_score, dict):
        raise ParameterError("postprocess works on the mask and centre maps alone: give one --min-score "
                             "(per-species scores are for detect with a multi-species model)")
    given = {"remove_min_size": args.remove_min_size, "center_min_distance": args.center_min_distance}
    if args.particle_diameter is not None and any(v is None for v in given.values()):
        if not voxel_size:
            raise ParameterError(f"--particle-diameter needs the voxel size: {src} has none; give --voxel-size")
        derived = from_particle_diameter(args.particle_diameter, float(voxel_size))
        if given["center_min_distance"] is None:  # a diameter whose fusion ball cannot be built: say which fits
            check_center_min_distance(derived["center_min_distance"], diameter=args.particle_diameter,
                                      voxel_size=float(voxel_size))
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
    # blocks and fusion distance that the task graph cannot hold: one line saying what fits, before any work
    from dask.array.core import normalize_chunks

    blocks = mask_t.data.chunks if chunks is None else \
        normalize_chunks(tuple(min(int(c), int(n)) for c, n in zip(chunks, mask_t.shape)), tuple(mask_t.shape))
    check_plan(mask_t.shape, blocks, params.center_min_distance)
    if chunks is not None:
        mask_t = load(src, chunks=chunks, array="mask")
    center_t = load(src, chunks=chunks, array="center")
    out = Path(args.out)
    progress = show_progress(args)
    from ..cluster import cluster_from_args
    from ..pipeline import output_lock
    from ..pipeline.rundir import clean_pieces

    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(out))  # one run per folder: the scratch of a killed one can go
        clean_pieces(out)
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
