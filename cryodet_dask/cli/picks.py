"""``cryodet-dask picks convert IN OUT``: particle lists from any supported format to any other."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import positive_float


def register(sub: argparse._SubParsersAction) -> None:
    from ..particles import READ_FORMATS, UNITS, WRITE_FORMATS

    p = sub.add_parser(
        "picks",
        help="particle lists: convert between STAR, copick, IMOD, Dynamo, CSV, TXT",
        description="Work on particle lists (picks) as other cryo-ET tools write them.",
    )
    psub = p.add_subparsers(dest="picks_command", metavar="ACTION")
    psub.required = True
    c = psub.add_parser(
        "convert",
        help="convert a particle list to another format",
        description="Read a particle list in any supported format and write it in another (chosen by the "
        "output's extension or --to). Reads: " + "; ".join(f"{k}: {v}" for k, v in READ_FORMATS.items())
        + ". Writes: " + ", ".join(WRITE_FORMATS) + ". Coordinates pass through voxels of the target "
        "tomogram; files in Å, unbinned pixels or centred Å need what converts them (--voxel-size, --binning, "
        "--tomogram), and an error says which when it is missing.",
    )
    c.add_argument("input", help="particle list to read (.star, .csv, .tsv, .txt, .json, .mod, .tbl)")
    c.add_argument("output", help="file to write")
    c.add_argument("--to", choices=sorted(WRITE_FORMATS), default=None,
                   help="output format (default: from the output's extension; czii and tardis are CSV layouts "
                   "that must be asked for)")
    c.add_argument("--from", dest="from_format", default=None, metavar="FORMAT",
                   help="input format (default: from the input's extension)")
    c.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="Å per voxel of the target tomogram (for files in Å, and for writing Å)")
    c.add_argument("--binning", type=positive_float, default=None, metavar="FACTOR",
                   help="file pixels per target voxel (the tomogram's binning): pixel coordinates are divided "
                   "by it (RELION 4 coordinates are unbinned tilt-series pixels)")
    c.add_argument("--tomogram", default=None, metavar="FILE",
                   help="the target tomogram (MRC/Zarr: voxel size and shape) or a RELION 5 tomograms.star")
    c.add_argument("--tomogram-name", default=None, metavar="NAME",
                   help="keep only this tomogram's particles (rlnTomoName, rlnMicrographName, tomo_name, "
                   "CZII experiment)")
    c.add_argument("--units", choices=UNITS, default=None,
                   help="override the unit the input's coordinates are in")
    c.add_argument("--object-name", default=None, metavar="NAME",
                   help="copick pickable_object_name / CZII particle_type when the input has no class")
    c.add_argument("--allow-empty", action="store_true", help="an input with no particle is not an error")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")
    c.set_defaults(func=run_convert)

    m = psub.add_parser(
        "merge",
        help="merge particle lists of several tomograms into one file (e.g. one RELION 5 STAR to import)",
        description="Read several particle lists (e.g. the NAME_centers.star of each folder of a detect batch) "
        "and write them as one file; every particle keeps its tomogram name (rlnTomoName), and a RELION 5 "
        "STAR output has rlnCenteredCoordinate*Angst for each tomogram when its shape is known.",
    )
    m.add_argument("output", help="file to write (.star for RELION 5's particle import)")
    m.add_argument("inputs", nargs="+", help="particle lists to merge")
    m.add_argument("--to", choices=sorted(WRITE_FORMATS), default=None, help="output format (default: extension)")
    m.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="Å per voxel (default: what each file says)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output")
    m.set_defaults(func=run_merge)


def run_convert(args: argparse.Namespace) -> int:
    from ..particles import format_from_path, read_particles, write_particles
    from ..particles import tomogram_info

    out_fmt = args.to
    if out_fmt is None:
        from ..particles import WRITE_FORMATS

        out_fmt = format_from_path(args.output, None, known=WRITE_FORMATS)
    df = read_particles(args.input, voxel_size=args.voxel_size, tomogram=args.tomogram,
                        tomogram_name=args.tomogram_name, binning=args.binning, allow_empty=args.allow_empty,
                        format=args.from_format, units=args.units)
    shape = None
    if args.tomogram and not str(args.tomogram).lower().endswith(".star"):
        info, _ = tomogram_info(args.tomogram)
        shape = info.shape if info is not None else None
    path = write_particles(df, args.output, out_fmt, voxel_size=args.voxel_size, shape=shape,
                           tomogram_name=args.tomogram_name, object_name=args.object_name,
                           overwrite=args.overwrite)
    if not args.quiet:
        vs = df.attrs.get("voxel_size")
        print(f"wrote {path}: {len(df)} particles ({df.attrs.get('format')} -> {out_fmt}"
              + (f", {vs:g} Å per voxel" if vs else "") + ")")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from ..errors import ParameterError
    from ..particles import WRITE_FORMATS, format_from_path, read_particles, write_particles

    out_fmt = args.to or format_from_path(args.output, None, known=WRITE_FORMATS)
    tables: list[pd.DataFrame] = []
    shapes: dict[str, Any] = {}
    sizes: set[float] = set()
    for path in args.inputs:
        df = read_particles(path, voxel_size=args.voxel_size)
        if "tomo_name" not in df.columns:  # named after its file: NAME_centers.csv -> NAME
            df = df.assign(tomo_name=Path(path).name.split(".")[0].removesuffix("_centers"))
        if df.attrs.get("voxel_size"):
            sizes.add(round(float(df.attrs["voxel_size"]), 6))
        shapes.update(df.attrs.get("shapes") or {})
        if df.attrs.get("shape") is not None:
            shapes.update({n: df.attrs["shape"] for n in df["tomo_name"].unique()})
        tables.append(df)
    if len(sizes) > 1:
        raise ParameterError(f"the inputs have different voxel sizes ({', '.join(map(str, sorted(sizes)))} Å); "
                             "convert them to one first")
    merged = pd.concat(tables, ignore_index=True)
    vs = args.voxel_size or (next(iter(sizes)) if sizes else None)
    names = merged["tomo_name"].astype(str).unique()
    path = write_particles(merged, args.output, out_fmt, voxel_size=vs,
                           shapes=shapes if shapes and set(names) <= set(shapes) else None,
                           overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {path}: {len(merged)} particles of {len(names)} tomogram(s)"
              + (f", {vs:g} Å per voxel" if vs else ""))
    return 0
