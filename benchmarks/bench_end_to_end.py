"""End to end on the CPU: each stage's wall time and its share, as a user runs ``cryodet-dask detect``.

    python benchmarks/bench_end_to_end.py [--shape 128,1024,1024] [--work DIR (default: a folder in the temporary directory)] [--workers 2] [--repeats 1]

A simulated 128 x 256 x 256 tomogram (random seed 77, 10 Å voxels) is laid out 4 x 4 in y and x, every copy
flipped differently (so no two neighbouring tiles repeat), into one MRC of ``--shape``.  Then
``cryodet-dask detect`` runs on it in a fresh process with the defaults on a local cluster of ``--workers``
workers (``--cluster local``), outputs in every format.  Reported: the command's wall time (interpreter,
imports and cluster start included), the stages ``run.json`` records (convert, predict, post-process,
export), and what is left (start-up, cluster start and shutdown, run record).  "Host-side" is everything but
``predict``; ``predict`` itself includes its tiles' reads, normalisation and writes, so the host-side share
is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np


def _tomogram(work: Path, shape: tuple[int, int, int]) -> Path:
    out = work / f"tomo_{'x'.join(map(str, shape))}.mrc"
    if out.exists():
        return out
    sim = work / "sim"
    if not (sim / "tomogram.mrc").exists():
        subprocess.run([sys.executable, "-m", "cryodet_dask", "-q", "simulate", str(sim), "--shape", "128,256,256",
                        "--seed", "77", "--overwrite"], check=True)
    with mrcfile.open(sim / "tomogram.mrc", permissive=True) as m:
        tile = np.asarray(m.data, dtype=np.float32)
        vs = float(m.voxel_size.x)
    z, y, x = shape
    if z != tile.shape[0] or y % tile.shape[1] or x % tile.shape[2]:
        raise SystemExit(f"--shape must be {tile.shape[0]} deep and a multiple of {tile.shape[1:]} in y and x")
    vol = np.lib.format.open_memmap(work / "tmp.npy", mode="w+", dtype=np.float32, shape=shape)
    ty, tx = tile.shape[1:]
    for i in range(y // ty):
        for j in range(x // tx):
            t = tile[:, ::-1] if (i + j) % 2 else tile
            t = t[:, :, ::-1] if i % 2 else t
            vol[:, i * ty:(i + 1) * ty, j * tx:(j + 1) * tx] = t
    with mrcfile.new(str(out) + ".part", overwrite=True) as m:
        m.set_data(np.asarray(vol))
        m.voxel_size = vs
    os.replace(str(out) + ".part", out)
    os.unlink(work / "tmp.npy")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,1024,1024")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cryodet-bench-e2e",
                    help="where the tomogram and the run go (kept: a second run reuses the tomogram)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    tomo = _tomogram(args.work, shape)  # type: ignore[arg-type]
    rows = []
    for r in range(args.repeats):
        out = args.work / "out"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cryodet_dask", "-q", "detect", str(tomo), "-o", str(out),
                        "--cluster", "local", "--workers", str(args.workers)], check=True)
        wall = time.perf_counter() - t
        stages = json.loads((out / "run.json").read_text())["timings_s"]
        rows.append({"wall_s": wall, **stages})
        print(f"run {r + 1}: wall {wall:.1f} s, stages {stages}", flush=True)
    best = min(rows, key=lambda row: row["wall_s"])
    wall = best["wall_s"]
    named = {k: v for k, v in best.items() if k != "wall_s"}
    other = wall - sum(named.values())
    nvox = int(np.prod(shape))
    print(f"\ncryodet-dask detect, {' x '.join(map(str, shape))} ({nvox / 1e6:.0f} M voxels), {args.workers} workers, "
          f"defaults; {os.cpu_count()} CPUs\n")
    print("| stage | wall (s) | share | M voxels/s |\n|---|---|---|---|")
    for k, v in [*named.items(), ("start-up, cluster start and shutdown, run record", other)]:
        print(f"| {k} | {v:.1f} | {100 * v / wall:.1f} % | {nvox / v / 1e6:.1f} |")
    print(f"| **total** | {wall:.1f} | 100 % | {nvox / wall / 1e6:.2f} |")
    host = wall - named.get("predict", 0.0)
    print(f"\nhost-side (everything but predict): {host:.1f} s, {100 * host / wall:.1f} % of the wall time")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "workers": args.workers, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
