"""``cryodet-dask labels``: an instance label map from a particle coordinate table."""

from __future__ import annotations

import argparse

from .._shapes import triplet
from ._common import int_triplet, positive_float, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "labels",
        help="make a label map for training from a particle list (any format `picks convert` reads)",
        description="Paint one sphere (or a template's shape at the particle's orientation) per particle of a "
        "coordinate table into an instance label map (particle i = label i), block by block, for "
        "`cryodet-dask train`. The particle list may be RELION 3/4/5, STOPGAP or TomoMan STAR, copick JSON, "
        "an IMOD model, a Dynamo table, CSV (voxel or Å columns, with or without header) or the seed's TXT; "
        "coordinates in Å, unbinned pixels or centred Å are converted with --voxel-size, --binning and the "
        "tomogram, or refused with an error that names the missing option. A list with no particle is an "
        "error unless --allow-empty. Species: when the picks carry one (a RELION rlnClassNumber, a copick "
        "object, a CZII particle_type, a CSV class column), the species of each label id is also written "
        "beside the map as LABELS_species.csv (labels.mrc -> labels_species.csv), columns id (the label value "
        "of the pick) and class (its species name), which `cryodet-dask train --particle-species` reads. "
        "Species names are copick-safe (letters, digits and '-'); class numbers such as rlnClassNumber need "
        "names: --class-names 1=ribosome,2=proteasome.",
    )
    p.add_argument("coordinates", help="particle list (.star, .csv, .tsv, .txt, .json, .mod, .tbl)")
    p.add_argument("output", help="label map to write (.mrc, or .zarr)")
    p.add_argument("--tomogram", metavar="FILE",
                   help="the tomogram the particles belong to: gives the shape and voxel size")
    p.add_argument("--shape", type=int_triplet, default=None, metavar="Z,Y,X",
                   help="shape of the label map in voxels (default: that of --tomogram)")
    p.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="voxel size in Å (default: from --tomogram)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--radius", type=positive_float, metavar="VOXELS", help="paint a sphere of this radius (voxels)")
    g.add_argument("--radius-angstrom", type=positive_float, metavar="ANGSTROM", help="sphere radius in Å")
    g.add_argument("--species", type=_species, default=None, metavar="NAME:DIAMETER_A,...",
                   help="paint each pick as a sphere of its species' diameter in Å (e.g. ribosome:280,"
                        "proteasome:190); every pick needs one of these species")
    g.add_argument("--template", metavar="NAME|FILE",
                   help="paint this template's mask (a shipped name such as 4v4r, or an MRC file) rotated to each "
                        "particle's orientation")
    p.add_argument("--template-threshold", type=float, default=0.1, metavar="F",
                   help="template mask threshold as a fraction of its maximum density (default: 0.1)")
    p.add_argument("--tomogram-name", default=None, metavar="NAME",
                   help="use only rows whose rlnTomoName / tomogram column equals NAME")
    p.add_argument("--binning", type=positive_float, default=None, metavar="FACTOR",
                   help="file pixels per tomogram voxel, i.e. its binning (RELION 4 coordinates are unbinned "
                   "tilt-series pixels)")
    p.add_argument("--tomograms-star", default=None, metavar="FILE",
                   help="RELION 5 tomograms.star for centred Å coordinates (default: the tomogram's shape, or "
                   "the one the optimisation set beside the particles names)")
    p.add_argument("--class-names", default=None, metavar="CLASS=NAME,...",
                   help="species names for the picks' classes, e.g. 1=ribosome,2=proteasome for RELION "
                        "rlnClassNumber (needed for class numbers), or to rename a class that is not copick-safe "
                        "(ribosome_70S=ribosome-70S); a class left out keeps its name")
    p.add_argument("--allow-empty", action="store_true", help="an empty particle list paints an empty map")
    p.add_argument("--chunks", type=int_triplet, default=(128,), metavar="N|Z,Y,X",
                   help="block shape for painting and writing (default: 128)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def _species(text: str) -> object:
    from ..errors import ParameterError
    from ..species import parse_species

    try:
        table = parse_species(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    missing = [s.name for s in table if s.diameter is None]
    if missing:
        raise argparse.ArgumentTypeError(f"species {missing[0]!r} needs a diameter in Å to paint it: "
                                         f"{missing[0]}:DIAMETER")
    return table


def run(args: argparse.Namespace) -> int:
    from ..annotations import (parse_class_names, pick_species, read_coordinates, species_table_path,
                               write_label_map, write_species_table)
    from ..errors import OutputExistsError, ParameterError

    class_names = parse_class_names(args.class_names)

    shape = args.shape
    voxel_size = args.voxel_size
    if args.tomogram:
        from ..io import load

        tomo = load(args.tomogram)
        shape = shape or tomo.shape
        voxel_size = voxel_size or tomo.voxel_size
    if shape is None:
        raise ParameterError("give --tomogram or --shape for the size of the label map")
    if len(shape) == 1:
        shape = shape * 3
    from ..particles import TomogramInfo

    tomogram = args.tomograms_star or TomogramInfo(shape=tuple(shape), voxel_size=voxel_size)
    table = read_coordinates(args.coordinates, voxel_size=voxel_size, tomogram=tomogram,
                             tomogram_name=args.tomogram_name, binning=args.binning, allow_empty=args.allow_empty)
    species = pick_species(table, class_names, required=args.species is not None or bool(class_names))
    radius = args.radius
    if args.radius_angstrom is not None:
        if not voxel_size:
            raise ParameterError("--radius-angstrom needs the voxel size (--voxel-size or --tomogram)")
        radius = args.radius_angstrom / voxel_size
    if args.species is not None:
        if not voxel_size:
            raise ParameterError("--species paints spheres of diameters in Å: it needs the voxel size "
                                 "(--voxel-size or --tomogram)")
        from ..training import species_radii

        radius = species_radii(species or [], args.species, voxel_size, str(args.coordinates))
    table_path = species_table_path(args.output) if species is not None else None
    if table_path is not None and table_path.exists() and not args.overwrite:
        raise OutputExistsError(f"{table_path}: exists (the species table of {args.output}; use --overwrite)")
    chunks = triplet(args.chunks)
    out = write_label_map(args.output, shape, table, radius=radius, template=args.template, voxel_size=voxel_size,
                          template_threshold=args.template_threshold, chunks=chunks, overwrite=args.overwrite,
                          progress=show_progress(args))
    if table_path is not None and species is not None:
        write_species_table(table_path, species, overwrite=args.overwrite)
    if not args.quiet:
        kinds = f", species table {table_path} ({', '.join(sorted(set(species)))})" if table_path and species else ""
        print(f"wrote {out}: {len(table)} particles, shape (z,y,x) {tuple(shape)}{kinds}")
    return 0
