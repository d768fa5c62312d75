"""Benchmark of distributed prediction (issue 5).

1. Chunk invariance: chunks 64³ and 96³ against one whole-volume forward pass
   (seed architecture, and the shipped weights), with the default halo and
   with smaller halos.
2. Overhead: throughput of ``predict`` on a LocalCluster (2 workers x 1
   thread) divided by a plain whole-volume torch forward pass with 2 threads,
   same volume and models.

    .venv/bin/python benchmarks/bench_predict.py [--shape 96,384,384] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cryodet_dask import models
from cryodet_dask.prediction import default_halo, predict, resolve_models
from cryodet_dask.testing import make_mrc

from _util import TreeMemory, table


def tomogram(shape, seed=0):
    try:
        from cryodet_dask.simulation import simulate_arrays

        arrays = simulate_arrays(shape=shape, seed=seed)
        vol = arrays["tomogram"] if isinstance(arrays, dict) else arrays.tomogram
        return np.asarray(vol, np.float32), "simulated tomogram"
    except Exception as exc:  # simulator unavailable: smooth noise with structure
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        return ndimage.gaussian_filter(rng.normal(size=shape), 2).astype(np.float32), f"smoothed noise ({exc})"


def whole_volume(ckpts, vol, threads):
    torch.set_num_threads(threads)
    outs = []
    t = time.perf_counter()
    for c in ckpts:
        outs.append(models.predict_array(models.load(c), vol))
    return np.concatenate(outs), time.perf_counter() - t


def invariance(ckpts, vol, tmp, label, halos=True):
    specs = resolve_models(ckpts if len(ckpts) > 1 else ckpts[0])
    heads = [h for s in specs for h in s.heads]
    ref, _ = whole_volume(ckpts, vol, 2)
    ref = {h: ref[i] for i, h in enumerate(heads)}
    rf = max(s.receptive_field for s in specs)
    pool = max(s.pool_factor for s in specs)
    halo0 = default_halo(max(s.halo for s in specs), pool)
    path = make_mrc(tmp / "inv.mrc", vol)
    rows = []
    for chunks in (64, 96):
        for halo in sorted({halo0, halo0 // 2, 8, 0} if halos and chunks == 64 else {halo0}, reverse=True):
            halo = int(np.ceil(halo / pool) * pool)
            pred = predict(path, ckpts if len(ckpts) > 1 else ckpts[0], chunks=chunks, halo=halo, device="cpu")
            dm = float(np.abs(pred.mask.compute() - ref["mask"]).max())
            dc = float(np.abs(pred.center.compute() - ref["center"]).max())
            rows.append([label, f"{chunks}³", halo, f"{dm:.1e}", f"{dc:.1e}",
                         "yes" if max(dm, dc) <= 1e-4 else "no"])
    return rows, rf, halo0


def overhead(ckpts, vol, tmp, chunks):
    from distributed import Client, LocalCluster

    _, t_whole = whole_volume(ckpts, vol, 2)
    path = make_mrc(tmp / "ovh.mrc", vol)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            Client(cl):
        # warm the workers' model cache and imports, as a long run amortizes them
        predict(path, ckpts if len(ckpts) > 1 else ckpts[0], chunks=chunks, device="cpu",
                out=tmp / "warm.zarr", overwrite=True)
        with TreeMemory() as mem:
            t = time.perf_counter()
            pred = predict(path, ckpts if len(ckpts) > 1 else ckpts[0], chunks=chunks, device="cpu",
                           out=tmp / f"ovh{chunks}.zarr", overwrite=True)
            t_dist = time.perf_counter() - t
    n = vol.size
    return dict(chunks=list(pred.plan.chunk_shape), halo=list(pred.plan.halo),
                halo_overhead=pred.plan.halo_overhead(), whole_s=t_whole, dist_s=t_dist,
                whole_mvox=n / t_whole / 1e6, dist_mvox=n / t_dist / 1e6, ratio=t_whole / t_dist,
                peak_worker_anon_mib=mem.peak_anon_per_child / 2**20)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="96,384,384", help="overhead volume (z,y,x voxels)")
    ap.add_argument("--inv-shape", default="64,128,128", help="invariance volume (z,y,x voxels)")
    ap.add_argument("--json", default=None, help="write results as JSON here")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    inv_shape = tuple(int(v) for v in args.inv_shape.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    w = models.default_weights()
    shipped = [w.twohead] if w.twohead else [w.segnet, w.centernet]
    torch.manual_seed(0)
    seg_seed = models.UNet3D(models.UNetConfig(heads=("mask",)))
    cen_seed = models.UNet3D(models.UNetConfig(heads=("center",)))
    with torch.no_grad():
        cen_seed.head.bias += 0.5  # a live centre map (not all zero after the ReLU) from random weights
    seed_pair = [models.save(seg_seed, tmp / "seg_seed.pt"), models.save(cen_seed, tmp / "cen_seed.pt")]

    vol, what = tomogram(inv_shape)
    print(f"invariance volume {inv_shape}: {what}")
    rows = []
    rf_info = {}
    for label, ck, halos in (("seed architecture (random init)", seed_pair, False), ("shipped weights", shipped, True)):
        r, rf, h0 = invariance(ck, vol, tmp, label, halos)
        rows += r
        rf_info[label] = (rf, h0)
    print(table(rows, ["models", "chunks", "halo (vox)", "max |Δ mask|", "max |Δ center|", "≤ 1e-4"]))
    for k, (rf, h0) in rf_info.items():
        print(f"{k}: receptive field {rf} voxels -> default halo {h0} voxels")

    vol, what = tomogram(shape, seed=1)
    print(f"\noverhead volume {shape}: {what}")
    res = []
    for chunks in ((96, 192, 192), 128):
        o = overhead(shipped, vol, tmp, chunks)
        res.append(o)
        print(json.dumps(o))
    print(table([[str(o["chunks"]), str(o["halo"]), f"{o['halo_overhead']:.2f}", f"{o['whole_mvox']:.2f}",
                  f"{o['dist_mvox']:.2f}", f"{o['ratio']:.2f}", f"{o['peak_worker_anon_mib']:.0f}"] for o in res],
                ["chunks", "halo", "computed/output voxels", "whole-volume Mvox/s (2 threads)",
                 "predict Mvox/s (2 workers x 1)", "ratio", "peak worker anon MiB"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"invariance": rows, "overhead": res}, indent=1))


if __name__ == "__main__":
    main()
