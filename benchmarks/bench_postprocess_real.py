"""Post-processing on maps the shipped network really produces (issue 17): distributed against the
single-process whole-volume reference, on the same machine and load.

    python benchmarks/bench_postprocess_real.py --maps A.npz B.npz C.npz D.npz [--repeats 3]

Each ``.npz`` holds ``mask`` and ``center`` maps of one tomogram (``benchmarks/bench_quality.py`` caches
them as ``maps_<tag>.npz`` for its held-out tomograms); four of equal shape are laid out 2 x 2 in y and x
(no repeated content), so 96 x 256 x 256 maps give one 96 x 512 x 512 pair with the speckles, plateaus and
fragments of real predictions.  A second pair has many small components: smoothed noise thresholded to
about 20 % foreground.  Timed: `postprocess` on a LocalCluster of 2 workers x 1 thread from Zarr maps in
128^3 chunks (written with predict's codec) to labels in Zarr + centres CSV (detect's defaults; median after a warm-up), against
`postprocess_reference` on the whole arrays in this process (the same parameters).  With ``--threaded``,
each distributed run alternates with the same run on Dask's threaded scheduler (2 threads, in this
process, the workers idle), and the ratio of their median wall times is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_postprocess import cluster, run_pipeline  # noqa: E402

try:
    from cryodet_dask.pipeline import DetectParams  # noqa: E402
except ImportError:  # the code before the pipeline package exported it
    from cryodet_dask.detection import DetectParams  # noqa: E402
from cryodet_dask.postprocessing import postprocess_reference  # noqa: E402


def _store(path: Path, mask: np.ndarray, center: np.ndarray) -> Path:
    """The maps as ``predict`` writes them: float32, 128^3 chunks, its codec for maps."""
    from cryodet_dask.io._zarr import stored_codecs
    try:
        from cryodet_dask.prediction._store import MAPS_CODEC
    except ImportError:
        try:  # the code before the store had a module of its own
            from cryodet_dask.prediction._predict import MAPS_CODEC
        except ImportError:  # the code before the maps were stored uncompressed: it wrote them with "auto"
            MAPS_CODEC = "auto"
    codecs = {"compressors": stored_codecs(MAPS_CODEC, np.dtype(np.float32)) or None}
    g = zarr.open_group(str(path), mode="w")
    for name, a in (("mask", mask), ("center", center)):
        g.create_array(name, data=a.astype(np.float32), chunks=(128, 128, 128), **codecs)
    return path


def _speckles(shape: tuple[int, int, int], seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.0)
    mask = (noise > np.quantile(noise, 0.8)).astype(np.float32) * 0.9 + 0.05
    center = ndi.gaussian_filter(rng.random(shape).astype(np.float32), 1.5)
    return mask, (center - center.min()) / (center.max() - center.min())


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) so far of this process (with LocalCluster: the client, the scheduler and
    the driver-side reductions) and of its child processes (the workers)."""
    me = psutil.Process()
    t = me.cpu_times()
    kids = 0.0
    for ch in me.children(recursive=True):
        try:
            c = ch.cpu_times()
            kids += c.user + c.system
        except psutil.Error:
            pass
    return t.user + t.system, kids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", nargs=4, required=True, metavar="NPZ")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--network-maps-only", action="store_true", help="skip the many-small-components pair")
    ap.add_argument("--threaded", action="store_true",
                    help="alternate each run with one on the threaded scheduler (2 threads) and print the ratio")
    args = ap.parse_args()
    maps = [np.load(p) for p in args.maps]
    mask = np.concatenate([np.concatenate([maps[0]["mask"], maps[1]["mask"]], 2),
                           np.concatenate([maps[2]["mask"], maps[3]["mask"]], 2)], 1)
    center = np.concatenate([np.concatenate([maps[0]["center"], maps[1]["center"]], 2),
                             np.concatenate([maps[2]["center"], maps[3]["center"]], 2)], 1)
    params = DetectParams().postprocess_kwargs()
    cases = {"network maps": (mask, center)}
    if not args.network_maps_only:
        cases["many small components"] = _speckles(mask.shape)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cryodet-ppreal-") as tmp, cluster(True) as cl:
        import dask
        from distributed import Client

        with Client(cl, set_as_default=False) as client:
            for name, (m, c) in cases.items():
                store = _store(Path(tmp) / f"{name[:4]}.zarr", m, c)
                nvox = m.size
                t = time.perf_counter()
                ref = postprocess_reference(m, c, **params)
                t_ref = time.perf_counter() - t
                with client.as_current():
                    run_pipeline(store, Path(tmp) / "warm", **params)
                times, cpu_driver, cpu_workers, threaded = [], [], [], []
                for _ in range(args.repeats):
                    d0, w0 = _cpu_seconds()
                    with client.as_current():
                        wall, det = run_pipeline(store, Path(tmp) / "out", **params)
                    d1, w1 = _cpu_seconds()
                    times.append(wall)
                    cpu_driver.append(d1 - d0)
                    cpu_workers.append(w1 - w0)
                    if args.threaded:
                        with dask.config.set(scheduler="threads", num_workers=2):
                            wall_t, det_t = run_pipeline(store, Path(tmp) / "out", **params)
                        threaded.append(wall_t)
                        assert np.array_equal(det_t.centers, det.centers)
                med = statistics.median(times)
                if threaded:
                    med_t = statistics.median(threaded)
                    print(f"{name}: threaded scheduler (2 threads, alternated) median {med_t:.2f} s "
                          f"({nvox / med_t / 1e6:.1f} Mvox/s) of {[round(x, 2) for x in threaded]}; "
                          f"distributed / threaded {med / med_t:.2f}", flush=True)
                print(f"{name}: CPU seconds per run: this process (client, scheduler, driver-side reductions) "
                      f"{statistics.median(cpu_driver):.2f}, the workers {statistics.median(cpu_workers):.2f}, "
                      f"wall {med:.2f} on {psutil.cpu_count()} cores", flush=True)
                same = np.array_equal(det.centers, ref.centers)
                print(f"{name}: {m.shape}, {len(ref.centers)} particles; reference {t_ref:.2f} s "
                      f"({nvox / t_ref / 1e6:.1f} Mvox/s); distributed median {med:.2f} s ({nvox / med / 1e6:.1f} "
                      f"Mvox/s) of {[round(x, 2) for x in times]}; same centres: {same}", flush=True)
                rows.append((name, m.shape, len(ref.centers), nvox / t_ref / 1e6, nvox / med / 1e6, t_ref / med, same))
    print("\n| maps | shape | particles | reference, 1 process (Mvox/s) | distributed, 2 workers (Mvox/s) | "
          "ratio | same centres |\n|---|---|---|---|---|---|---|")
    for name, shape, n, r, d, ratio, same in rows:
        print(f"| {name} | {' x '.join(map(str, shape))} | {n} | {r:.1f} | {d:.1f} | {ratio:.2f} | {same} |")


if __name__ == "__main__":
    main()
