"""Scheduler overhead at scale (issue 8): tasks per chunk and graph build time, without running anything.

Builds the task graphs of prediction and of the first post-processing pass
for a 1000 x 4000 x 4000 tomogram (16 G voxels) at the default 128³ chunking,
on an empty Zarr store (metadata only), and counts the tasks.

    .venv/bin/python benchmarks/bench_graph.py [--shape 1000,4000,4000] [--chunks 128]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import dask
import torch
import zarr

from cryodet_dask import models
from cryodet_dask.prediction import predict
from cryodet_dask.postprocessing import _core

from _util import table


class _Built(Exception):
    def __init__(self, collections):
        self.collections = collections


def _capture(*collections, **_):
    raise _Built(collections)


def n_tasks(collections) -> int:
    """Distinct task keys over (nested lists of) dask collections."""
    keys = set()
    stack = list(collections)
    while stack:
        c = stack.pop()
        if isinstance(c, list | tuple):
            stack.extend(c)
        elif dask.is_dask_collection(c):
            keys.update(dict(c.__dask_graph__()).keys())
    return len(keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1000,4000,4000")
    ap.add_argument("--chunks", type=int, default=128)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench_graph_"))
    store = zarr.open_group(str(tmp / "maps.zarr"), mode="w")
    for name in ("tomogram", "mask", "center"):
        store.create_array(name, shape=shape, chunks=(args.chunks,) * 3, dtype="float32", fill_value=0)
    n_chunks = math.prod(math.ceil(s / args.chunks) for s in shape)
    torch.manual_seed(0)
    ckpt = models.save(models.UNet3D(models.UNetConfig(heads=("mask", "center"))), tmp / "net.pt")
    rows = []

    from cryodet_dask.io import load

    tomo = load(tmp / "maps.zarr", array="tomogram")
    t = time.perf_counter()
    pred = predict(tomo, ckpt, chunks=args.chunks, stats=(0.0, 1.0), device="cpu")
    dt = time.perf_counter() - t
    n = len(dict(pred.mask.__dask_graph__()))
    rows.append(["predict (both maps)", n, f"{n / n_chunks:.2f}", f"{dt:.1f}"])

    mask = load(tmp / "maps.zarr", array="mask").data
    center = load(tmp / "maps.zarr", array="center").data
    real = _core.compute
    _core.compute = _capture
    t = time.perf_counter()
    try:
        _core.postprocess(mask, center)
    except _Built as built:
        dt = time.perf_counter() - t
        n = n_tasks(built.collections)
    finally:
        _core.compute = real
    rows.append(["postprocess pass 1 (components, centres, face pairs)", n, f"{n / n_chunks:.2f}", f"{dt:.1f}"])
    # pass 3 (relabel) is one task per chunk by construction, plus the chunk read
    print(f"tomogram {shape} = {math.prod(shape) / 1e9:.1f} G voxels, chunks {args.chunks}³ -> {n_chunks} chunks")
    print(table(rows, ["stage", "tasks", "tasks per chunk", "graph build (s)"]))


if __name__ == "__main__":
    main()
