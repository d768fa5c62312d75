"""Where the post-processing's time goes: a per-kernel table on the shipped network's own maps.

The maps: the shipped two-head network (whole-volume forward pass) on simulated tomograms of
``--tile`` voxels (default 128 x 256 x 256, random seeds 21, 22, ...), laid side by side in y and x to
``--shape`` (default 128 x 512 x 512; no repeated content), and cached in ``--cache``.  Then
``postprocess`` with the default parameters and 128³ blocks runs once on Dask's synchronous scheduler
(one thread, so each kernel's wall time is the worker's CPU time) with every block kernel and both
driver reductions wrapped in timers, and the labels are computed (the relabel pass).  Printed: per
kernel, the calls, seconds and M voxels/s (the volume over the seconds), and the whole run.

    python benchmarks/profile_postprocess.py [--shape 128,512,512] [--cache maps.npz]

The kernels are nested in places (``instance_block`` calls ``block_components``): the table says which
row includes which.  Where Dask schedules nothing the sum is the wall time; the rest ("other") is the
graph, the tasks' plumbing and the slabs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import dask
import dask.array as da
import numpy as np

import cryodet_dask.postprocessing._core as core
import cryodet_dask.postprocessing._relabel as relabel

#: (module, name, what the row means)
KERNELS = (
    (relabel, "block_components", "threshold + connected components + specks' drop (passes 1, 2, relabel)"),
    (core, "block_components", ""),  # pass 1 calls it through _core: the same row
    (core, "assemble_padded", "centre map with its halo from the neighbours' slabs (pass 1)"),
    (core, "strict_maxima", "strict local maxima of the thresholded centre map (pass 1)"),
    (core, "ball_maxima", "centre fusion on the candidates (pass 1)"),
    (core, "block_faces", "the six face planes, sparse (passes 1, 2)"),
    (core, "face_pairs", "label pairs across faces (passes 1, 2)"),
    (core, "_tables_from_components", "driver: union-find, sizes, centres per component (reduction 1)"),
    (relabel, "nearest_in_segments", "exact nearest-centre assignment (pass 2, in instance_block)"),
    (core, "instance_block", "instance pieces, includes block_components and the assignment (pass 2, relabel)"),
    (core, "block_stats", "per-piece counts, sums, first voxel, mask sum, centre max (pass 2)"),
    (core, "_instances", "driver: union-find of pieces, filters, numbering (reduction 2)"),
)


def _timed(fn: Callable[..., Any], acc: dict[str, list[float]], name: str) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[name].append(time.perf_counter() - t)
    return wrapper


def _maps(shape: tuple[int, int, int], tile: tuple[int, int, int], cache: Path | None) -> tuple[np.ndarray, ...]:
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return z["mask"], z["center"]
    import torch

    from cryodet_dask import models
    from cryodet_dask.simulation import simulate_arrays

    torch.set_num_threads(2)
    net = models.load(models.default_weights().twohead)
    mask = np.zeros(shape, np.float32)
    center = np.zeros(shape, np.float32)
    seed = 21
    for y in range(0, shape[1], tile[1]):
        for x in range(0, shape[2], tile[2]):
            sim = simulate_arrays(shape=tile, seed=seed)
            seed += 1
            out = models.predict_array(net, np.asarray(sim.tomogram, dtype=np.float32))
            sl = (slice(0, tile[0]), slice(y, y + tile[1]), slice(x, x + tile[2]))
            mask[sl] = out[net.head_index("mask")]
            center[sl] = out[net.head_index("center")]
    if cache is not None:
        np.savez(cache, mask=mask, center=center)
    return mask, center


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128,512,512")
    ap.add_argument("--tile", default="128,256,256")
    ap.add_argument("--cache", type=Path, default=None)
    a = ap.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(","))
    tile = tuple(int(v) for v in a.tile.split(","))
    mask, center = _maps(shape, tile, a.cache)  # type: ignore[arg-type]
    acc: dict[str, list[float]] = defaultdict(list)
    saved = []
    for mod, name, _ in KERNELS:
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, _timed(getattr(mod, name), acc, name))
    try:
        with dask.config.set(scheduler="synchronous"):
            t0 = time.perf_counter()
            det = core.postprocess(da.from_array(mask, chunks=128), da.from_array(center, chunks=128))
            t1 = time.perf_counter()
            det.labels.compute()
            t2 = time.perf_counter()
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    n = float(np.prod(shape))
    print(f"post-processing {shape} ({n / 1e6:.1f} M voxels), 128^3 blocks, default parameters, "
          f"{len(det.centers)} particles, synchronous scheduler (one thread)")
    print(f"{'kernel':<26}{'calls':>7}{'seconds':>9}{'M vox/s':>9}  what")
    for _, name, what in KERNELS:
        if not what:
            continue
        s = sum(acc[name])
        print(f"{name:<26}{len(acc[name]):>7}{s:>9.2f}{(n / s / 1e6 if s else float('inf')):>9.1f}  {what}")
    print(f"{'tables (passes 1, 2)':<26}{'':>7}{t1 - t0:>9.2f}{n / (t1 - t0) / 1e6:>9.1f}  "
          f"postprocess() until its tables: {det.stats.get('seconds')}")
    print(f"{'labels (relabel pass)':<26}{'':>7}{t2 - t1:>9.2f}{n / (t2 - t1) / 1e6:>9.1f}  computing det.labels")
    print(f"{'total':<26}{'':>7}{t2 - t0:>9.2f}{n / (t2 - t0) / 1e6:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
