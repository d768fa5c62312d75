"""Predict throughput per inference engine against a plain whole-volume forward pass (issue 17).

For each engine (``--engine torch|openvino``) and tile plan, ``predict`` writes the maps of a
simulated tomogram to a Zarr store as ``detect`` does, on a LocalCluster of ``--workers`` workers x 1
thread, after a warm-up run that loads (and for OpenVINO converts and compiles) the network on every
worker.  The baseline is a plain whole-volume forward pass of the same network with PyTorch and as
many threads as there are workers (what the issue names), and with OpenVINO.  Reported: Mvox/s,
computed voxels per output voxel, the ratio to the PyTorch whole-volume pass, and the largest
difference of the maps from it; and whether the detected particles are the same.

    .venv/bin/python benchmarks/bench_engine.py [--shape 128,512,512] [--tiles 128 128,256,256]

The default shape is 4 chunks of 128 wide in y and x, the smallest that the issue's "at least 4
tiles wide" allows; its whole-volume PyTorch pass needs about 12 GiB.
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
from cryodet_dask.prediction import OpenVinoNet, predict
from cryodet_dask.testing import make_mrc

from _util import TreeMemory, table


def whole_volume_torch(model, vol, threads):
    torch.set_num_threads(threads)
    t = time.perf_counter()
    y = models.predict_array(model, vol)
    return y, time.perf_counter() - t


def whole_volume_openvino(model, vol, threads):
    net = OpenVinoNet(model, threads)
    m, s = models.zscore_stats(vol)
    x = ((vol - np.float32(m)) / np.float32(s)).astype(np.float32)
    p = model.config.pool_factor
    pad = [(0, -n % p) for n in x.shape]
    t = time.perf_counter()
    y = net(np.pad(x, pad)[None, None])[0]
    dt = time.perf_counter() - t
    return y[:, :vol.shape[0], :vol.shape[1], :vol.shape[2]], dt


def particles(mask, center):
    from cryodet_dask.postprocessing import postprocess_reference

    det = postprocess_reference(mask, center)
    return det.labels, np.asarray(det.centers)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128,512,512", help="tomogram shape z,y,x (voxels)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers, 1 thread each")
    ap.add_argument("--engines", nargs="+", default=["torch", "openvino"])
    ap.add_argument("--tiles", nargs="+", default=["none"],
                    help="tile cores to run (voxels, N or Z,Y,X; 'none': one 128^3 chunk per task, the CPU default)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache", default=None,
                    help="folder keeping the whole-volume PyTorch baseline (maps and seconds) between runs")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    from cryodet_dask.simulation import simulate_arrays

    shape = tuple(int(v) for v in args.shape.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    weights = models.default_weights().twohead
    model = models.load(weights).eval()
    t = time.perf_counter()
    vol = np.asarray(simulate_arrays(shape=shape, seed=5).tomogram, np.float32)
    print(f"simulated {shape} in {time.perf_counter() - t:.0f} s", flush=True)
    path = make_mrc(tmp / "t.mrc", vol, voxel_size=10.0)
    small = make_mrc(tmp / "warm.mrc", vol[:64, :128, :128], voxel_size=10.0)
    n = vol.size

    cache = Path(args.cache) / f"whole_torch_{'x'.join(map(str, shape))}_{args.workers}.npz" if args.cache else None
    if cache is not None and cache.exists():  # the baseline of an earlier run on this machine (same seed)
        with np.load(cache) as z:
            ref, t_ref = z["maps"], float(z["seconds"])
    else:
        ref, t_ref = whole_volume_torch(model, vol, args.workers)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, maps=ref, seconds=t_ref)
    print(f"whole-volume torch, {args.workers} threads: {t_ref:.1f} s ({n / t_ref / 1e6:.2f} Mvox/s)", flush=True)
    ref_labels, ref_centers = particles(ref[0], ref[1])
    rows = [["torch", "whole volume", "1.00", f"{n / t_ref / 1e6:.2f}", "1.00", "0", str(len(ref_centers)), "—"]]
    results = [dict(engine="torch", tile="whole", seconds=t_ref, mvox_s=n / t_ref / 1e6)]
    if "openvino" in args.engines:
        y, t_ov = whole_volume_openvino(model, vol, args.workers)
        d = float(np.abs(y - ref).max())
        print(f"whole-volume openvino: {t_ov:.1f} s, max |diff| {d:.1e}", flush=True)
        rows.append(["openvino", "whole volume", "1.00", f"{n / t_ov / 1e6:.2f}", f"{t_ref / t_ov:.2f}",
                     f"{d:.1e}", "", ""])
        results.append(dict(engine="openvino", tile="whole", seconds=t_ov, mvox_s=n / t_ov / 1e6, max_diff=d))
        del y
    torch.set_num_threads(1)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            Client(cl):
        for tile_s in args.tiles:
            tile = None if tile_s == "none" else tuple(int(v) for v in tile_s.split(","))
            tile = tile[0] if tile is not None and len(tile) == 1 else tile
            for engine in args.engines:
                predict(small, weights, out=tmp / "warm.zarr", device="cpu", engine=engine, overwrite=True)
                with TreeMemory() as mem:
                    t = time.perf_counter()
                    pred = predict(path, weights, out=tmp / "p.zarr", device="cpu", engine=engine, tile=tile,
                                   overwrite=True)
                    dt = time.perf_counter() - t
                mask, center = pred.mask.compute(), pred.center.compute()
                d = float(max(np.abs(mask - ref[0]).max(), np.abs(center - ref[1]).max()))
                labels, centers = particles(mask, center)
                same = bool(np.array_equal(labels, ref_labels))
                print(f"{engine} tile {tile_s}: {dt:.1f} s, {n / dt / 1e6:.2f} Mvox/s, ratio {t_ref / dt:.2f}, "
                      f"max |diff| {d:.1e}, same labels {same}, peak worker {mem.peak_anon_per_child / 2**20:.0f} MiB",
                      flush=True)
                rows.append([engine, tile_s if tile else "one chunk (128³)", f"{pred.plan.halo_overhead():.2f}",
                             f"{n / dt / 1e6:.2f}", f"{t_ref / dt:.2f}", f"{d:.1e}", str(len(centers)),
                             "yes" if same else "no"])
                results.append(dict(engine=engine, tile=tile_s, seconds=dt, mvox_s=n / dt / 1e6, ratio=t_ref / dt,
                                    max_diff=d, particles=len(centers), same_labels=same,
                                    computed_per_output=pred.plan.halo_overhead(),
                                    peak_worker_anon_mib=mem.peak_anon_per_child / 2**20))
    print()
    print(table(rows, ["engine", "tile", "computed / output voxels", "Mvox/s",
                       "against whole-volume PyTorch", "max |Δ| maps", "particles", "same label image"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
