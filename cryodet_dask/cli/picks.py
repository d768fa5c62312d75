"""``cryodet-dask picks convert IN OUT``: particle lists from any supported format to any other."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from ._common import positive_float

log = logging.getLogger("cryodet_dask")

#: Formats whose file holds the picks of one tomogram (no tomogram column): a table of several tomograms
#: goes to one file per tomogram, ``OUTSTEM_TOMONAME.EXT`` beside ``OUT`` (copick: ``run_name`` = TOMONAME).
ONE_TOMOGRAM_FORMATS = ("copick", "txt", "tardis", "imod")

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COPICK_NAME = re.compile(r"[A-Za-z0-9_-]+")

_SPLIT_HELP = (
    "A table with particles of several tomograms (rlnTomoName, tomo_name, CZII experiment, copick run_name, ...) "
    "written as " + ", ".join(ONE_TOMOGRAM_FORMATS) + " (formats that hold one tomogram) gives one file per "
    "tomogram beside OUT, named OUT's stem, '_', the tomogram's name and OUT's extension (picks.json -> "
    "picks_TS_01.json, picks_TS_02.json; copick: one run each, run_name = the tomogram's name; a name that "
    "cannot be a file or copick run name is refused); STAR, CSV and CZII keep every row's tomogram in one file; "
    "Dynamo numbers the tomograms (names that are not numbers become 1, 2, ... in sorted order, with a warning)."
)


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
        "--tomogram), and an error says which when it is missing. " + _SPLIT_HELP + " Coordinates more "
        "than 1e7 Å (1 mm) or 1e7 voxels from the origin are refused.",
    )
    c.add_argument("input", help="particle list to read (.star, .csv, .tsv, .txt, .json, .mod, .tbl)")
    c.add_argument("output", help="file to write (several tomograms into a one-tomogram format: one "
                   "OUTSTEM_TOMONAME.EXT per tomogram, see above)")
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
        "STAR output has rlnCenteredCoordinate*Angst for each tomogram when its shape is known. " + _SPLIT_HELP,
    )
    m.add_argument("output", help="file to write (.star for RELION 5's particle import)")
    m.add_argument("inputs", nargs="+", help="particle lists to merge")
    m.add_argument("--to", choices=sorted(WRITE_FORMATS), default=None, help="output format (default: extension)")
    m.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="Å per voxel (default: what each file says)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output")
    m.set_defaults(func=run_merge)


def run_convert(args: argparse.Namespace) -> int:
    from ..particles import format_from_path, read_particles
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
    written = write_tables(df, args.output, out_fmt, overwrite=args.overwrite, voxel_size=args.voxel_size,
                           shape=shape, tomogram_name=args.tomogram_name, object_name=args.object_name)
    if not args.quiet:
        vs = df.attrs.get("voxel_size")
        print(f"wrote {_describe(written)} ({df.attrs.get('format')} -> {out_fmt}"
              + (f", {vs:g} Å per voxel" if vs else "") + ")")
    return 0


def _describe(written: list[tuple[Path, int, str | None]]) -> str:
    if len(written) == 1:
        return f"{written[0][0]}: {written[0][1]} particles"
    return (f"{len(written)} files, one per tomogram: "
            + ", ".join(f"{p} ({n} particles of {name})" for p, n, name in written))


def tomogram_names(df: Any) -> list[str]:
    """The tomograms of a particle table, in the order of their first row (none without a name column)."""
    if "tomo_name" not in df.columns:
        return []
    return list(dict.fromkeys(df["tomo_name"].astype(str)))


def per_tomogram_paths(output: str | Path, names: list[str], fmt: str) -> dict[str, Path]:
    """``OUTSTEM_NAME.EXT`` beside ``output`` for each tomogram name; a name that cannot be one is refused."""
    from ..errors import ParameterError

    out = Path(output)
    pattern, what = ((_COPICK_NAME, "a copick run name (letters, digits, '-', '_')") if fmt == "copick" else
                     (_FILE_NAME, "part of a file name (letters, digits, '.', '-', '_')"))
    for name in names:
        if not pattern.fullmatch(name) or name in (".", ".."):
            raise ParameterError(f"tomogram name {name!r} cannot be {what}, and {fmt} holds one tomogram per file; "
                                 "choose one tomogram with --tomogram-name, or write STAR or CSV")
    folded: dict[str, str] = {}
    for name in names:  # one file on a case-insensitive file system (macOS, Windows): one would replace the other
        if name.casefold() in folded:
            raise ParameterError(f"tomogram names {folded[name.casefold()]!r} and {name!r} differ only in case: "
                                 "their files would be one on many file systems; rename one, or write STAR or CSV")
        folded[name.casefold()] = name
    return {name: out.with_name(f"{out.stem}_{name}{out.suffix}") for name in names}


def write_tables(df: Any, output: str, fmt: str, *, overwrite: bool, tomogram_name: str | None = None,
                 **kw: Any) -> list[tuple[Path, int, str | None]]:
    """Write ``df`` as ``fmt``: one file, or one per tomogram for :data:`ONE_TOMOGRAM_FORMATS`.

    Returns (path, particles, tomogram name or None) per file.  Several files are written under temporary
    names and renamed when all are complete; an existing one is refused before any is written (unless
    ``overwrite``), and a failure removes what this call wrote.
    """
    import os

    from ..errors import OutputExistsError
    from ..io import remove_path
    from ..particles import write_particles

    names = [] if tomogram_name else tomogram_names(df)
    if fmt == "dynamo" and len(names) > 1 and not all(n.lstrip("-").isdigit() for n in names):
        order = {n: k + 1 for k, n in enumerate(sorted(names))}
        shown = ", ".join(f"{n}={k}" for n, k in list(order.items())[:8]) + (", ..." if len(order) > 8 else "")
        log.warning("Dynamo tables number their tomograms: %s (the names are not kept in the table)", shown)
    if fmt not in ONE_TOMOGRAM_FORMATS or len(names) <= 1:
        path = write_particles(df, output, fmt, tomogram_name=tomogram_name, overwrite=overwrite, **kw)
        return [(path, len(df), tomogram_name or (names[0] if len(names) == 1 else None))]
    paths = per_tomogram_paths(output, names, fmt)
    for p in paths.values():
        if p.exists() and not overwrite:
            raise OutputExistsError(f"output {p} already exists (use --overwrite to replace it)")
    column = df["tomo_name"].astype(str).to_numpy()
    temps: dict[str, Path] = {}
    try:
        for name, final in paths.items():
            part = df[column == name].reset_index(drop=True)
            part.attrs = dict(df.attrs)
            temps[name] = final.with_name(f".{final.name}.split-partial")
            remove_path(temps[name])
            write_particles(part, temps[name], fmt, tomogram_name=name, overwrite=True, **kw)
        for name, final in paths.items():
            os.replace(temps.pop(name), final)
    finally:
        for tmp in temps.values():  # a failure before every file was complete: none of them is left
            remove_path(tmp)
    return [(paths[n], int((column == n).sum()), n) for n in names]


def run_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from ..errors import ParameterError
    from ..particles import WRITE_FORMATS, format_from_path, read_particles

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
    written = write_tables(merged, args.output, out_fmt, voxel_size=vs,
                           shapes=shapes if shapes and set(names) <= set(shapes) else None,
                           overwrite=args.overwrite)
    if not args.quiet:
        where = _describe(written) if len(written) > 1 else f"{written[0][0]}: {len(merged)} particles"
        print(f"wrote {where} of {len(names)} tomogram(s)" + (f", {vs:g} Å per voxel" if vs else ""))
    return 0
