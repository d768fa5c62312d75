"""Benchmarks of the networks: receptive field, CPU forward throughput, detection accuracy.

Usage::

    python benchmarks/bench_models.py throughput [--threads 2] [--shape 64,128,128]
    python benchmarks/bench_models.py accuracy SIM_DIR [--segnet P --centernet P --twohead P] [--radius 6]

``throughput`` times ``UNet3D.forward`` (no gradient, float32, batch 1) of
SegNet, CenterNet and the two-head network at the seed's width and at the
width of the shipped weights, after one warm-up pass, and prints voxels/s.
``accuracy`` runs whole-volume inference (:func:`~cryodet_dask.models.predict_array`)
on a simulated tomogram, post-processes the maps with
:func:`~cryodet_dask.postprocessing.postprocess_reference` (default
parameters), matches the predicted centres to ``particles.csv`` one-to-one
within ``--radius`` voxels and prints precision, recall and F1 for the
SegNet + CenterNet pair and for the two-head network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cryodet_dask.models import UNet3D, UNetConfig, default_weights, load, predict_array

SEED = (32, 48, 64)
SHIPPED = (16, 24, 32)


def _time_forward(net: UNet3D, shape: tuple[int, int, int], repeats: int) -> float:
    x = torch.randn(1, 1, *shape)
    net.eval()
    with torch.no_grad():
        net(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return float(np.prod(shape)) / float(np.median(times))


def throughput(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for width in (SEED, SHIPPED):
        for name, heads in (("SegNet", ("mask",)), ("CenterNet", ("center",)), ("two-head", ("mask", "center"))):
            cfg = UNetConfig(channels=width, heads=heads)
            net = UNet3D(cfg)
            vps = _time_forward(net, args.shape, args.repeats)
            rows.append({"network": name, "channels": list(width),
                         "parameters": sum(p.numel() for p in net.parameters()),
                         "receptive_field": cfg.receptive_field, "halo": cfg.halo,
                         "input": list(args.shape), "threads": args.threads, "voxels_per_s": vps})
            print(f"{name:10s} channels {str(width):13s} params {rows[-1]['parameters']:>8d}  RF {cfg.receptive_field}"
                  f"  {vps / 1e6:6.3f} Mvoxel/s", flush=True)
    for width in (SEED, SHIPPED):
        seg = next(r for r in rows if r["network"] == "SegNet" and r["channels"] == list(width))["voxels_per_s"]
        cen = next(r for r in rows if r["network"] == "CenterNet" and r["channels"] == list(width))["voxels_per_s"]
        two = next(r for r in rows if r["network"] == "two-head" and r["channels"] == list(width))["voxels_per_s"]
        pair = 1.0 / (1.0 / seg + 1.0 / cen)
        print(f"channels {width}: SegNet+CenterNet pair {pair / 1e6:.3f} Mvoxel/s, two-head {two / 1e6:.3f} "
              f"Mvoxel/s ({two / pair:.2f}x)")
    return rows


def _detect(mask: np.ndarray, center: np.ndarray) -> np.ndarray:
    from cryodet_dask.postprocessing import postprocess_reference

    return np.asarray(postprocess_reference(mask, center).centers, dtype=np.float64).reshape(-1, 3)


def accuracy(args: argparse.Namespace) -> dict:
    import pandas as pd

    from cryodet_dask.evaluation import match_centres
    from cryodet_dask.io import load as load_tomogram

    torch.set_num_threads(args.threads)
    sim = Path(args.sim_dir)
    vol = np.asarray(load_tomogram(sim / "tomogram.mrc").data.compute(), dtype=np.float32)
    truth = pd.read_csv(sim / "particles.csv")
    true_zyx = truth[["z", "y", "x"]].to_numpy(np.float64)
    dw = default_weights()
    seg = args.segnet or dw.segnet
    cen = args.centernet or dw.centernet
    two = args.twohead or dw.twohead
    results: dict = {"tomogram": str(sim / "tomogram.mrc"), "shape": list(vol.shape), "particles": len(truth),
                     "radius": args.radius}
    runs = {}
    if seg and cen:
        t0 = time.perf_counter()
        m = predict_array(load(seg, expect_heads=("mask",)), vol)[0]
        c = predict_array(load(cen, expect_heads=("center",)), vol)[0]
        runs["SegNet + CenterNet"] = (m, c, time.perf_counter() - t0)
    if two:
        t0 = time.perf_counter()
        net = load(two, expect_heads=("mask", "center"))
        out = predict_array(net, vol)
        runs["two-head"] = (out[net.head_index("mask")], out[net.head_index("center")], time.perf_counter() - t0)
    for name, (m, c, secs) in runs.items():
        pred = _detect(m, c)
        for radius in args.radius:
            scores, _ = match_centres(pred, true_zyx, radius, true_classes=truth["class"].astype(str).tolist())
            d = scores.as_dict()
            results[f"{name} @ {radius:g} vox"] = {k: d[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")} | {
                "per_class_recall": d.get("per_class"), "inference_s": secs}
            print(f"{name:20s} r={radius:g}: {len(pred)} detected, {len(true_zyx)} true: precision "
                  f"{d['precision']:.3f} recall {d['recall']:.3f} F1 {d['f1']:.3f}  (inference {secs:.1f} s)",
                  flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--shape", type=lambda s: tuple(int(v) for v in s.split(",")), default=(64, 128, 128))
    t.add_argument("--repeats", type=int, default=3)
    a = sub.add_parser("accuracy")
    a.add_argument("sim_dir")
    a.add_argument("--segnet")
    a.add_argument("--centernet")
    a.add_argument("--twohead")
    a.add_argument("--radius", type=float, nargs="+", default=[6.0, 10.0])
    a.add_argument("--threads", type=int, default=2)
    for s in (t, a):
        s.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    res = throughput(args) if args.what == "throughput" else accuracy(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
