"""Computed voxels per output voxel of the tile planner on the seed-size tomogram (README, GPU).

    python benchmarks/bench_tiles.py [--shape 464,928,928] [--chunks 128]

Pure arithmetic (no network runs): :func:`cryodet_dask.prediction.plan_tiles` for the memory one
prediction task may use, with the per-voxel estimate of ``cryodet_dask.prediction._tiling``.
"""

from __future__ import annotations

import argparse

from cryodet_dask.prediction import plan_chunks, plan_tiles
from cryodet_dask.prediction._tiling import (ACTIVATION_BYTES_PER_VOXEL, ACTIVATION_BYTES_PER_VOXEL_CHANNEL,
                                             GPU_CONTEXT_BYTES, RUNTIME_BYTES)

GIB = 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="464,928,928")
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--halo", type=int, default=44, help="the shipped network's (voxels)")
    ap.add_argument("--width", type=int, default=16, help="the network's channels at full resolution")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    plan = plan_chunks(shape, args.chunks, args.halo, pool_factor=4)
    per_voxel = ACTIVATION_BYTES_PER_VOXEL + ACTIVATION_BYTES_PER_VOXEL_CHANNEL * args.width
    cases = [  # name, budget of one task, fixed bytes, tasks at once
        ("CPU worker, 2 GiB", 2 * GIB * 0.95, RUNTIME_BYTES, 1),
        ("CPU worker, 8 GiB", 8 * GIB * 0.95, RUNTIME_BYTES, 1),
        ("CPU worker, 16 GiB", 16 * GIB * 0.95, RUNTIME_BYTES, 1),
        ("80 GiB GPU, 4 tasks in flight", 80 * GIB * 0.85 / 4, GPU_CONTEXT_BYTES, 4),
        ("80 GiB GPU, 1 task in flight", 80 * GIB * 0.85, GPU_CONTEXT_BYTES, 1),
        ("141 GiB H200, 4 tasks in flight", 143771 * 2**20 * 0.85 / 4, GPU_CONTEXT_BYTES, 4),
    ]
    print(f"{shape} voxels, chunks {args.chunks}, halo {args.halo}; one chunk per tile: "
          f"{plan.halo_overhead():.2f} computed voxels per output voxel")
    print("| memory for one task | tile (chunks) | tile input | computed / output |\n|---|---|---|---|")
    for name, budget, fixed, slots in cases:
        q = plan_tiles(plan, int(budget), per_voxel, fixed, slots)
        print(f"| {name} | {' x '.join(map(str, q.tile))} | {' x '.join(map(str, q.tile_input_shape()))} | "
              f"{q.halo_overhead():.2f} |")


if __name__ == "__main__":
    main()
