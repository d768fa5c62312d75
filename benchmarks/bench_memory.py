"""Memory safety of ``detect`` (issue 9): a tomogram 4x larger than the total worker memory limit.

A float32 MRC of ``--shape`` is written slab by slab (smoothed noise; never
a whole-volume array), then ``detect`` runs end to end on
a LocalCluster of ``--workers`` processes, each with ``--memory-limit``
(Dask's nanny restarts a worker that passes 95 % of it, so a run that holds
more than its share fails).  A tiny random-weight network keeps the CPU time
low; the memory a task needs depends on the chunk, not on the network depth.

The random network's maps are grey everywhere, so the post-processing
thresholds are calibrated on one sample block to give the density of a
crowded cellular tomogram: ``--foreground`` of the voxels on the mask
(default 10 %) and one centre-map maximum per ``--voxels-per-centre`` voxels
(default 20,000; the simulated 144x512x512 tomogram of the Results section
has one particle per 24,500 voxels).

    .venv/bin/python benchmarks/bench_memory.py [--shape 256,2048,2048] [--workers 1] [--memory-limit 1GiB] [--chunks 96] [--halo 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mrcfile  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from _util import TreeMemory  # noqa: E402


def write_tomogram(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as m:
        m.voxel_size = 10.0
        for z0 in range(0, shape[0], 16):
            z1 = min(z0 + 16, shape[0])
            slab = rng.standard_normal((z1 - z0, *shape[1:]), dtype=np.float32)
            m.data[z0:z1] = ndimage.uniform_filter(slab, 3)


def calibrate(tomo: Path, net_path: Path, block: int, foreground: float, voxels_per_centre: float) -> dict[str, float]:
    """Thresholds giving ``foreground`` mask fraction and one maximum per ``voxels_per_centre`` on a sample block."""
    from cryodet_dask import models
    from cryodet_dask.postprocessing._centres import strict_maxima

    net = models.load(net_path).eval()
    with mrcfile.mmap(tomo, mode="r") as m:
        z0, y0, x0 = (s // 2 - block // 2 for s in m.data.shape)
        x = np.array(m.data[z0:z0 + block, y0:y0 + block, x0:x0 + block], dtype=np.float32)
    x = (x - x.mean()) / x.std()
    with torch.no_grad():
        out = net(torch.from_numpy(x)[None, None])[0].numpy()
    mask, center = out[0], out[1]
    maxima = strict_maxima(np.pad(center, 1, mode="reflect"), -np.inf)
    values = np.sort(center[tuple(maxima.T)])[::-1]
    k = max(1, int(round(mask.size / voxels_per_centre)))
    return {"mask_threshold": float(np.quantile(mask, 1 - foreground)),
            "center_threshold": float(values[min(k, len(values) - 1)])}


def main() -> None:
    import dask
    import distributed

    from cryodet_dask import models
    from cryodet_dask.pipeline.detect import detect

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256,2048,2048")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--memory-limit", default="1GiB")
    ap.add_argument("--chunks", type=int, default=96)
    ap.add_argument("--halo", type=int, default=None, help="inference halo (default: the network's)")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--foreground", type=float, default=0.10, help="mask fraction (calibrated, default 0.10)")
    ap.add_argument("--voxels-per-centre", type=float, default=20000.0,
                    help="voxels per centre-map maximum (calibrated, default 20000)")
    ap.add_argument("--logs", action="store_true", help="show Dask warnings (worker memory, restarts)")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    limit = dask.utils.parse_bytes(args.memory_limit)
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        tomo = work / "big.mrc"
        t = time.perf_counter()
        write_tomogram(tomo, shape)
        nbytes = int(np.prod(shape)) * 4
        print(f"tomogram {shape} float32 = {nbytes / 2**30:.2f} GiB written in {time.perf_counter() - t:.0f} s; "
              f"workers {args.workers} x {args.memory_limit} = {args.workers * limit / 2**30:.2f} GiB "
              f"(ratio {nbytes / (args.workers * limit):.1f}x)")
        torch.manual_seed(0)
        net = models.save(models.UNet3D(models.UNetConfig(channels=(2, 2, 2), heads=("mask", "center"))),
                          work / "tiny.pt")
        thresholds = calibrate(tomo, net, 96, args.foreground, args.voxels_per_centre)
        print(f"calibrated on a 96^3 sample: {thresholds}")
        with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=limit,
                                      dashboard_address=None, silence_logs=30 if args.logs else 40) as cluster, \
                distributed.Client(cluster) as client, TreeMemory() as mem:
            t = time.perf_counter()
            res = detect(tomo, work / "out", segnet=str(net), chunks=(args.chunks,), device="cpu", client=client,
                         halo=(args.halo,) if args.halo is not None else None,
                         **thresholds)
            wall = time.perf_counter() - t
        run = json.loads((work / "out" / "run.json").read_text())
        print(json.dumps({"shape": shape, "tomogram_gib": round(nbytes / 2**30, 2),
                          "total_worker_limit_gib": round(args.workers * limit / 2**30, 2),
                          "ratio": round(nbytes / (args.workers * limit), 2), "wall_s": round(wall, 1),
                          "thresholds": thresholds, "particles": len(res.particles),
                          "timings_s": run["timings_s"],
                          "peak_memory_mib": run["peak_memory_mib"],
                          "process_tree_peak_rss_mib": round(mem.peak_rss / 2**20, 1),
                          "process_tree_peak_anon_mib": round(mem.peak_anon / 2**20, 1)}, indent=2))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
