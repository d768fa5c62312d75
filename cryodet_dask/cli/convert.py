"""``cryodet-dask convert``: MRC -> chunked OME-Zarr."""

from __future__ import annotations

import argparse

from ..io import CODECS, DEFAULT_CODEC  # names only: no zarr or dask until a conversion runs
from ._common import int_triplet, positive_float, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="stream an MRC tomogram into a chunked, compressed OME-Zarr store",
        description="Stream an MRC tomogram into a chunked, compressed Zarr v3 store with OME-Zarr "
        "(NGFF 0.5) metadata, chunk by chunk, never holding the whole volume in memory.",
    )
    p.add_argument("source", help="input tomogram (.mrc/.rec/.map, MRC2014 modes 0,1,2,6,12) or Zarr store")
    p.add_argument("destination", help="output .zarr directory")
    p.add_argument("--chunks", type=int_triplet, default=(128,), metavar="N|Z,Y,X",
                   help="chunk shape in voxels (default: 128)")
    p.add_argument("--shards", type=int_triplet, default=None, metavar="N|Z,Y,X",
                   help="shard shape in voxels, a multiple of the chunks (default: no sharding)")
    p.add_argument("--levels", type=int, default=1, metavar="N",
                   help="resolution levels, each 2x downsampled (default: 1, full resolution only)")
    p.add_argument("--codec", choices=sorted(CODECS), default=DEFAULT_CODEC,
                   help=f"Blosc compressor (default: {DEFAULT_CODEC}; see README, codec table)")
    p.add_argument("--nan-policy", choices=("error", "zero"), default="error",
                   help="NaN/Inf voxels: refuse the file (error) or write 0 (zero); default: error")
    p.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="voxel size in Å (default: from the MRC header)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import convert, load

    out = convert(
        args.source,
        args.destination,
        chunks=args.chunks,
        shards=args.shards,
        levels=args.levels,
        codec=args.codec,
        nan_policy=args.nan_policy,
        voxel_size=args.voxel_size,
        overwrite=args.overwrite,
        progress=show_progress(args),
    )
    tomo = load(out)
    vs = f"{tomo.voxel_size:g} Å" if tomo.voxel_size else "unknown"
    if not args.quiet:
        print(f"wrote {out}: shape (z,y,x) {tomo.shape}, chunks {tomo.data.chunksize}, "
              f"dtype {tomo.data.dtype}, voxel size {vs}")
    return 0
