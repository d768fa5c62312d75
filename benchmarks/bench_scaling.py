"""Strong scaling of the end-to-end detection (issue 8): LocalCluster with 1 worker vs 2 workers.

Same tomogram, same chunks, shipped weights; each worker has one thread.

    .venv/bin/python benchmarks/bench_scaling.py [--shape 96,256,256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from cryodet_dask.pipeline.detect import detect
from cryodet_dask.simulation import simulate

from _util import table


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="96,256,256")
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    simulate(tmp / "sim", shape=shape, seed=77)
    rows, out = [], {}
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
                Client(cl) as client:
            detect(tmp / "sim" / "tomogram.mrc", tmp / f"warm{n}", chunks=(args.chunks,), client=client,
                   device="cpu")  # imports and model cache warm, as in a long run
            t = time.perf_counter()
            res = detect(tmp / "sim" / "tomogram.mrc", tmp / f"run{n}", chunks=(args.chunks,), client=client,
                         device="cpu", overwrite=True)
            out[n] = dict(total=time.perf_counter() - t, **res.timings, particles=len(res.particles))
    for n in (1, 2):
        o = out[n]
        rows.append([n, f"{o['total']:.1f}"] + [f"{o[k]:.1f}" for k in ("convert", "predict", "postprocess", "export")]
                    + [f"{out[1]['total'] / o['total']:.2f}", o["particles"]])
    print(f"end-to-end detect, {shape} voxels, chunks {args.chunks}³")
    print(table(rows, ["workers", "total s", "convert", "predict", "postprocess", "export", "speed-up", "particles"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
