"""Peak memory of ``cryodet-dask evaluate --pred-labels --true-labels`` on label images larger than memory
(issue 14): the overlap counts run block by block, so the process should hold a few blocks, never an image.

Writes two OME-Zarr label images (uint32, default 512 x 1024 x 1024 = 2 GiB each, 128³ chunks): the
truth is a grid of 12³ cubes with ids 1..N, the prediction the same grid shifted by 2 voxels along x
with every 7th cube missing. The particle tables hold the cube centres. Runs ``evaluate`` in a child
process and reads its peak resident memory (``ru_maxrss`` of the children), and checks the overlap
scores it prints against the values the construction implies (recall 6/7 of the cubes ... see the
assertions). The label images are ``4 x`` a worker memory limit of 512 MiB each.

    .venv/bin/python benchmarks/bench_evaluate_memory.py [--shape 512,1024,1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd

from _util import report

CUBE, PITCH = 12, 32


def _grid_labels(block: np.ndarray, block_info=None, shift: int = 0, drop_every: int = 0) -> np.ndarray:
    (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    shape = block_info[None]["shape"]
    z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
    xs = x - shift
    inside = ((z % PITCH) < CUBE) & ((y % PITCH) < CUBE) & ((xs % PITCH) < CUBE) & (xs >= 0)
    nz, ny, nx = (-(-s // PITCH) for s in shape)
    ids = (z // PITCH) * (ny * nx) + (y // PITCH) * nx + (xs // PITCH) + 1
    out = np.where(inside, ids, 0).astype(np.uint32)
    if drop_every:
        out[(out % drop_every) == 0] = 0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="512,1024,1024")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))

    from cryodet_dask.exports import write_labels_zarr

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        base = da.zeros(shape, chunks=128, dtype=np.uint32)
        t0 = time.perf_counter()
        truth = base.map_blocks(_grid_labels, dtype=np.uint32)
        pred = base.map_blocks(_grid_labels, shift=2, drop_every=7, dtype=np.uint32)
        write_labels_zarr(truth, t / "truth.zarr", voxel_size_zyx=10.0, n_labels=2**31, dtype="uint32")
        write_labels_zarr(pred, t / "pred.zarr", voxel_size_zyx=10.0, n_labels=2**31, dtype="uint32")
        made = time.perf_counter() - t0
        # cube centres: every cube whose 12 voxels lie inside the volume
        zc, yc, xc = (np.arange(0, s - CUBE + 1, PITCH) + (CUBE - 1) / 2 for s in shape)
        zz, yy, xx = np.meshgrid(zc, yc, xc, indexing="ij")
        centres = pd.DataFrame({"x": xx.ravel(), "y": yy.ravel(), "z": zz.ravel()})
        centres.to_csv(t / "truth.csv", index=False)
        centres.assign(x=centres["x"] + 2).to_csv(t / "pred.csv", index=False)

        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "cryodet_dask", "evaluate", str(t / "pred.csv"), str(t / "truth.csv"),
               "--pred-labels", str(t / "pred.zarr"), "--true-labels", str(t / "truth.zarr"), "--voxel-size", "10",
               "--json", str(t / "scores.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        scores = json.loads((t / "scores.json").read_text())
    image_gib = np.prod(shape) * 4 / 2**30
    ov = scores["overlap"]
    # by construction: a shifted cube keeps 10/12 of its voxels with its truth cube; every 7th id is gone
    n = len(centres)
    assert abs(ov["recall"] - (n - n // 7) / n) < 0.02, ov
    results = {"shape_zyx": list(shape), "label_image_gib": round(float(image_gib), 2),
               "images_written_s": round(made, 1), "evaluate_s": round(wall, 1),
               "evaluate_peak_rss_mib": round(max(peak, before) / 1024, 1),
               "ratio_image_to_peak": round(float(image_gib) * 1024 / (max(peak, before) / 1024), 1),
               "overlap": ov, "particles": n}
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
