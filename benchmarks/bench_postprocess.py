#!/usr/bin/env python
"""Benchmark of the distributed post-processing (issue 6).

Builds synthetic map pairs (ellipsoidal blobs with a smooth centre map), writes
them to Zarr, and on a ``distributed.LocalCluster(n_workers=2,
threads_per_worker=1)`` measures:

1. equality with the whole-volume reference (:func:`postprocess_reference`) for
   chunkings 48³, (64, 80, 96) and whole-volume, ``check_center`` both ways,
   ``connectivity`` 1 and 3;
2. throughput, Zarr maps -> labels in Zarr + centres CSV, on the large pair
   (default 128×512×512, ~2,000 particles), against the seed's 0.12 Mvox/s
   (``check_center=True``) and 0.21 Mvox/s (``check_center=False``);
3. the labelling step alone: :func:`cryodet_dask.postprocessing.label` against
   ``scipy.ndimage.label`` in memory and ``dask_image.ndmeasure.label``;
4. peak resident memory per worker; optionally (``--memory-test``) a map pair
   4x larger than the worker memory limit.

Usage::

    .venv/bin/python benchmarks/bench_postprocess.py [--quick] [--memory-test] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryodet_dask.exports import write_centers_csv, write_labels_zarr  # noqa: E402
from cryodet_dask.io import load  # noqa: E402
from cryodet_dask.io._zarr import make_compressor  # noqa: E402
from cryodet_dask.postprocessing import label, postprocess, postprocess_reference  # noqa: E402
from cryodet_dask.postprocessing._synthetic import random_particles, rasterize  # noqa: E402

SEED_MVOX_S = {True: 0.12, False: 0.21}  # the seed's post-processing on this machine (issue 6)


def write_maps(path: Path, shape, n_particles, chunks=128, seed=1, radius=(3.5, 6.0), elongation=1.5,
               slab=64) -> tuple[np.ndarray, np.ndarray]:
    """Write a prediction store (group with ``mask`` and ``center``) slab by slab."""
    pos, axes = random_particles(shape, n_particles, radius, elongation, seed)
    g = zarr.open_group(str(path), mode="w")
    comp = [make_compressor("zstd1-bitshuffle", np.dtype(np.float32))]
    ch = tuple(min(chunks, s) for s in shape)
    am = g.create_array("mask", shape=shape, dtype=np.float32, chunks=ch, compressors=comp, fill_value=0)
    ac = g.create_array("center", shape=shape, dtype=np.float32, chunks=ch, compressors=comp, fill_value=0)
    g.attrs["cryodet"] = {"voxel_size": 10.0}
    step = max(ch[0], slab - slab % ch[0])
    for z0 in range(0, shape[0], step):
        z1 = min(z0 + step, shape[0])
        m, c = rasterize(pos, axes, [(z0, z1), (0, shape[1]), (0, shape[2])])
        am[z0:z1] = m
        ac[z0:z1] = c
    return pos, axes


def _vm_hwm() -> float:
    """Peak resident memory of this process since it started (MiB); unlike ru_maxrss it is
    not inherited from the parent process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_worker_rss(client) -> list[float]:
    return sorted(round(v, 1) for v in client.run(_vm_hwm).values())


#: glibc's heap settings for the workers (see cryodet_dask.cluster.WORKER_ENV): distributed sets
#: MALLOC_TRIM_THRESHOLD_, so without them every block-sized temporary array is paid in fresh page faults.
try:
    from cryodet_dask.cluster import WORKER_ENV
except ImportError:  # the code before the package exported it
    WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}


def cluster(tuned: bool, **kw):
    import dask
    from distributed import LocalCluster

    env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()} if tuned else {}
    with dask.config.set(env):
        kw.setdefault("n_workers", 2)
        return LocalCluster(threads_per_worker=1, dashboard_address=None, **kw)


def _cpu() -> float:
    return time.process_time()


def worker_cpu(client) -> dict:
    return client.run(_cpu)


def run_pipeline(store: Path, out: Path, **params) -> tuple[float, object]:
    """Zarr maps -> labels in Zarr + centres CSV; returns wall seconds and the detections."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    mask = load(store, array="mask").data
    center = load(store, array="center").data
    det = postprocess(mask, center, scratch=out, **params)
    write_labels_zarr(det, out / "labels.zarr", voxel_size_zyx=10.0)
    write_centers_csv(det, out / "centers.csv", 10.0)
    return time.perf_counter() - t0, det


def equality_matrix(tmp: Path, shape, n_particles) -> list[dict]:
    store = tmp / "small.zarr"
    write_maps(store, shape, n_particles, chunks=64, seed=7, radius=(3.0, 6.0), elongation=2.0)
    m = zarr.open_group(str(store))["mask"][...]
    c = zarr.open_group(str(store))["center"][...]
    rows = []
    for conn in (1, 3):
        for cc in (True, False):
            ref = postprocess_reference(m, c, connectivity=conn, check_center=cc)
            for chunks in ((48, 48, 48), (64, 80, 96), shape):
                det = postprocess(da.from_zarr(str(store / "mask")).rechunk(chunks),
                                  da.from_zarr(str(store / "center")).rechunk(chunks),
                                  connectivity=conn, check_center=cc)
                lab = det.labels.compute()
                equal = bool(np.array_equal(lab, ref.labels) and np.array_equal(det.centers, ref.centers)
                             and np.array_equal(det.n_voxels, ref.n_voxels))
                rows.append({"connectivity": conn, "check_center": cc, "chunks": list(chunks),
                             "n_particles": len(ref.centers), "equal": equal})
                print(f"  conn={conn} check_center={cc!s:5} chunks={chunks}: N={len(ref.centers)} "
                      f"{'equal' if equal else 'DIFFERENT'}", flush=True)
    return rows


def throughput(client, store: Path, tmp: Path, nvox: int, repeats: int, tag: str,
               refs: dict | None, **params) -> dict:
    out = {}
    run_pipeline(store, tmp / f"out_{tag}_warmup", check_center=True, **params)  # untimed: imports in the workers
    for cc in (True, False):
        times, cpus = [], []
        for r in range(repeats):
            c0, d0 = worker_cpu(client), time.process_time()
            wall, det = run_pipeline(store, tmp / f"out_{tag}_{cc}", check_center=cc, **params)
            c1, d1 = worker_cpu(client), time.process_time()
            times.append(wall)
            cpus.append({"workers": sorted(round(c1[k] - c0[k], 3) for k in c0), "driver": round(d1 - d0, 3)})
            print(f"  [{tag}] check_center={cc}: run {r + 1}: {wall:.2f} s, {nvox / wall / 1e6:.1f} Mvox/s, "
                  f"N={len(det.centers)}; CPU s per worker {cpus[-1]['workers']}, driver {cpus[-1]['driver']}; "
                  f"load {os.getloadavg()[0]:.1f}; {det.stats['seconds']}", flush=True)
        med = statistics.median(times)
        row = {"seconds_median": med, "seconds_min": min(times), "mvox_s": nvox / med / 1e6,
               "ratio_to_seed": nvox / med / 1e6 / SEED_MVOX_S[cc], "n_particles": len(det.centers),
               "n_peaks": len(det.peaks), "cpu": cpus, "stats": det.stats,
               "cpu_bound_estimate_mvox_s": nvox / (max(max(c["workers"]) for c in cpus) + 0.0) / 1e6}
        if refs is not None:
            lab = zarr.open_array(str(tmp / f"out_{tag}_{cc}" / "labels.zarr" / "0"))[...]
            ref = refs[cc]
            row["equal_to_reference"] = bool(np.array_equal(lab, ref.labels) and np.array_equal(det.centers, ref.centers))
        print(f"  [{tag}] check_center={cc}: median {med:.2f} s = {nvox / med / 1e6:.1f} Mvox/s "
              f"({nvox / med / 1e6 / SEED_MVOX_S[cc]:.0f}x the seed's {SEED_MVOX_S[cc]} Mvox/s); "
              f"equal to reference: {row.get('equal_to_reference')}", flush=True)
        out[str(cc)] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128,512,512", help="large map shape z,y,x (default 128,512,512)")
    ap.add_argument("--particles", type=int, default=2000, help="particles in the large pair (default 2000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--memory-test", action="store_true",
                    help="also run a map pair 4x larger than the worker memory limit")
    ap.add_argument("--memory-limit", default="512MiB", help="worker memory limit of the memory test")
    ap.add_argument("--dask-image-shape", default="128,128,128",
                    help="volume for dask_image.ndmeasure.label (64³ chunks; it is slow)")
    ap.add_argument("--center-min-distance", type=float, default=None,
                    help="centre fusion distance D (voxels) for the throughput runs and their reference "
                         "(default: the library default)")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the throughput runs with tuned workers (and their equality with the reference)")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    ap.add_argument("--tmp", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args(argv)
    extra = {} if args.center_min_distance is None else {"center_min_distance": args.center_min_distance}

    from distributed import Client

    shape = tuple(int(v) for v in args.shape.split(","))
    n_particles = args.particles
    di_shape = tuple(int(v) for v in args.dask_image_shape.split(","))
    if args.quick:
        shape, n_particles, di_shape, args.repeats = (64, 128, 128), 120, (64, 64, 64), 1
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench_pp_"))
    tmp.mkdir(parents=True, exist_ok=True)
    nvox = int(np.prod(shape))
    results: dict = {"shape": shape, "particles_placed": n_particles, "cpus": os.cpu_count(),
                     "load_avg_start": os.getloadavg(), "worker_env_tuned": WORKER_ENV, "params": extra}
    print(f"# post-processing benchmark; work dir {tmp}; {os.cpu_count()} CPUs; load average {os.getloadavg()}",
          flush=True)

    # maps and the single-process reference (in memory)
    store = tmp / "pred.zarr"
    t = time.perf_counter()
    write_maps(store, shape, n_particles)
    print(f"## maps {shape} written in {time.perf_counter() - t:.1f} s", flush=True)
    m = zarr.open_group(str(store))["mask"][...]
    c = zarr.open_group(str(store))["center"][...]
    results["foreground_fraction"] = float((m > 0.1).mean())
    refs, ref_s = {}, {}
    for cc in (True, False):
        t = time.perf_counter()
        refs[cc] = postprocess_reference(m, c, check_center=cc, **extra)
        ref_s[str(cc)] = time.perf_counter() - t
    results["reference_seconds"] = ref_s
    print(f"## reference (whole volume, 1 process, in memory): {ref_s}", flush=True)

    with cluster(tuned=True) as cl, Client(cl) as client:
        # 1. equality
        if not args.throughput_only:
            print("## equality with the whole-volume reference", flush=True)
            eq_shape = (64, 96, 112) if args.quick else (96, 160, 192)
            results["equality_shape"] = eq_shape
            results["equality"] = equality_matrix(tmp, eq_shape, 60 if args.quick else 250)
        # 2. throughput, workers with the tuned malloc
        print(f"## throughput, Zarr maps -> labels Zarr + centres CSV, workers with {WORKER_ENV}, {extra}", flush=True)
        results["throughput"] = throughput(client, store, tmp, nvox, args.repeats, "tuned", refs, **extra)
        results["peak_worker_rss_mib"] = peak_worker_rss(client)
        if args.throughput_only:
            return _finish(results, args, tmp)
        # 3. labelling alone
        print("## labelling step alone (mask > 0.1, connectivity 1)", flush=True)
        from scipy import ndimage as ndi

        t = time.perf_counter()
        ref_lab, n_ref = ndi.label(m > 0.1)
        t_scipy = time.perf_counter() - t
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            lab_d, n = label(load(store, array="mask").data, 0.1, 1)
            int(lab_d.max().compute())
            ts.append(time.perf_counter() - t)
        t_ours = statistics.median(ts)
        lab_equal = bool(np.array_equal(lab_d.compute(), ref_lab))
        del ref_lab
        small = tmp / "di.zarr"
        write_maps(small, di_shape, max(1, int(n_particles * np.prod(di_shape) / nvox)), chunks=64, seed=3)
        sm = da.from_zarr(str(small / "mask"))
        import dask_image.ndmeasure as dim

        t = time.perf_counter()
        di_lab, di_n = dim.label(sm > 0.1)
        di_lab = di_lab.compute()
        t_di = time.perf_counter() - t
        t = time.perf_counter()
        ours_small, n_small = label(sm, 0.1, 1)
        ours_small = ours_small.compute()
        t_ours_small = time.perf_counter() - t
        sm_np = sm.compute()
        t = time.perf_counter()
        sc_small, _ = ndi.label(sm_np > 0.1)
        t_sc_small = time.perf_counter() - t
        results["labelling"] = {
            "large": {"shape": shape, "chunks": 128, "ours_s": t_ours, "scipy_in_memory_s": t_scipy,
                      "equal_to_scipy": lab_equal, "n": int(n_ref)},
            "small": {"shape": di_shape, "chunks": 64, "dask_image_s": t_di, "ours_s": t_ours_small,
                      "scipy_in_memory_s": t_sc_small, "n": int(n_small),
                      "ours_equal_to_scipy": bool(np.array_equal(ours_small, sc_small)),
                      "dask_image_same_count": bool(int(np.asarray(di_n)) == n_small)},
        }
        print(f"  {shape}, 128³ chunks: ours {t_ours:.2f} s (equal to scipy: {lab_equal}), "
              f"scipy in memory {t_scipy:.2f} s", flush=True)
        print(f"  {di_shape}, 64³ chunks: dask_image {t_di:.2f} s, ours {t_ours_small:.2f} s, "
              f"scipy in memory {t_sc_small:.3f} s", flush=True)
    del m, c, refs

    # 2b. the same with distributed's default worker environment
    with cluster(tuned=False) as cl, Client(cl) as client:
        print("## throughput, workers with distributed's default environment", flush=True)
        results["throughput_default_env"] = throughput(client, store, tmp, nvox, args.repeats, "default", None)

    # 4. larger than worker memory
    if args.memory_test:
        big_shape = (256, 1024, 1024) if not args.quick else (128, 256, 256)
        store = tmp / "big.zarr"
        t = time.perf_counter()
        write_maps(store, big_shape, int(n_particles * np.prod(big_shape) / nvox), seed=5, slab=128)
        print(f"## memory test: maps {big_shape} ({2 * 4 * np.prod(big_shape) / 2**30:.2f} GiB as float32 pair) "
              f"written in {time.perf_counter() - t:.0f} s; worker memory limit {args.memory_limit}", flush=True)
        with cluster(tuned=True, memory_limit=args.memory_limit) as cl, Client(cl) as client:
            wall, det = run_pipeline(store, tmp / "out_big")
            rss = peak_worker_rss(client)
            n_workers_alive = len(client.scheduler_info()["workers"])
        results["memory_test"] = {"shape": big_shape, "memory_limit": args.memory_limit,
                                  "pair_gib": 2 * 4 * float(np.prod(big_shape)) / 2**30, "seconds": wall,
                                  "mvox_s": float(np.prod(big_shape)) / wall / 1e6, "n_particles": len(det.centers),
                                  "peak_worker_rss_mib": rss, "workers_alive": n_workers_alive}
        print(f"  completed in {wall:.1f} s ({np.prod(big_shape) / wall / 1e6:.1f} Mvox/s), N={len(det.centers)}, "
              f"peak worker RSS {rss} MiB, workers alive {n_workers_alive}", flush=True)

    return _finish(results, args, tmp)


def _finish(results: dict, args, tmp: Path) -> int:
    """Print and save the results, remove the scratch folder; 0 if every run equalled the reference."""
    results["load_avg_end"] = os.getloadavg()
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if not args.tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = all(r["equal"] for r in results.get("equality", [])) and all(
        v.get("equal_to_reference", True) for v in results["throughput"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
