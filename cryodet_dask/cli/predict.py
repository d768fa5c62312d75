"""``cryodet-dask predict``: SegNet + CenterNet per chunk with halos, into a Zarr store."""

from __future__ import annotations

import argparse

from ._common import show_progress
from ._flags import add_network_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="apply the networks chunk by chunk (with halos) and write mask and centre maps to Zarr",
        description="Apply SegNet (particle mask) and CenterNet (normalized distance to the particle "
        "boundary) to a tomogram chunk by chunk with halos, on the Dask scheduler, and write a Zarr "
        "group OUT.zarr holding the arrays 'mask' and 'center'. Resumable: run the same command again "
        "after an interruption and finished chunks are skipped.",
    )
    p.add_argument("tomogram", help="input tomogram: MRC file or Zarr store")
    p.add_argument("-o", "--out", required=True, help="output Zarr store (group with 'mask' and 'center')")
    add_network_flags(p.add_argument_group("networks"))
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage type of the maps (default: float32, exact local maxima)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    from ..cluster import add_cluster_arguments

    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cluster import cluster_from_args
    from ..prediction import predict

    model = None
    if args.segnet or args.centernet:
        model = [m for m in (args.segnet, args.centernet) if m]
        model = model[0] if len(model) == 1 else model
    with cluster_from_args(args):
        pred = predict(
            args.tomogram,
            model,
            out=args.out,
            chunks=args.chunks,
            halo=args.halo,
            tile=args.tile,
            device=args.device,
            batch_size=args.batch_size,
            dtype=args.dtype,
            polarity=args.polarity,
            tta=args.tta,
            engine=args.engine,
            overwrite=args.overwrite,
            progress=show_progress(args),
        )
    if not args.quiet:
        print(f"wrote {pred.path}: mask and center {pred.plan.shape}, chunks {pred.plan.chunk_shape}, "
              f"halo {pred.plan.halo}, tiles of {pred.plan.tile} chunks; {pred.chunks_computed} chunks computed, {pred.chunks_skipped} skipped")
    return 0
