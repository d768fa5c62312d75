"""Benchmark of ``convert``.

1. A 2 GiB float32 MRC (512 x 1024 x 1024, tiled from a simulated tomogram) is
   converted to Zarr on a LocalCluster of 2 workers with a 512 MiB memory
   limit each; the peak memory of the whole process tree is sampled
   (anonymous memory, RssAnon, and RSS beside it), and the throughput is
   compared with ``cp`` of the same file (page cache warm for both).
2. Codec table: compression ratio, write and read speed of Blosc codecs on a
   simulated tomogram, float32 and int8.

3. ``--statistics MRC``: what a prediction's input costs before its first tile, one thread
   (Dask's synchronous scheduler): ``convert`` of MRC, which records the normalization statistics
   as it writes, and the statistics pass it saves (``global_stats`` over the store, what a
   prediction runs on an input without them), against ``cp`` of the MRC; ``--repeats`` rounds.

4. ``--label-mrc LABELS.zarr``: writing an MRC of a label OME-Zarr (what ``detect``'s export does
   after it has written the Zarr), one thread, ``--repeats`` rounds, against ``cp`` of the result.

    .venv/bin/python benchmarks/bench_convert.py [--size-gib 2] [--skip-big]
    .venv/bin/python benchmarks/bench_convert.py --statistics TOMO.mrc [--repeats 3]
    .venv/bin/python benchmarks/bench_convert.py --label-mrc OUT/NAME_labels.zarr [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import zarr

import cryodet_dask as cd
from cryodet_dask.io import CODECS, make_compressor

from _util import TreeMemory, mib, table


def simulated(shape=(128, 256, 256), seed=0):
    try:
        from cryodet_dask.simulation import simulate_arrays

        a = simulate_arrays(shape=shape, seed=seed)
        vol = a["tomogram"] if isinstance(a, dict) else a.tomogram
        return np.asarray(vol, np.float32), "simulated tomogram"
    except Exception as exc:
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        return ndimage.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32), f"smoothed noise ({exc})"


def big_mrc(path: Path, shape, tile):
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as m:
        m.voxel_size = 10.0
        tz, ty, tx = tile.shape
        for z in range(0, shape[0], tz):
            for y in range(0, shape[1], ty):
                for x in range(0, shape[2], tx):
                    sl = m.data[z:z + tz, y:y + ty, x:x + tx]
                    sl[...] = tile[: sl.shape[0], : sl.shape[1], : sl.shape[2]]
            m.flush()


def codec_table(vol: np.ndarray, tmp: Path) -> list[list[str]]:
    rows = []
    as_int8 = np.clip(np.round((vol - vol.mean()) / vol.std() * 25), -128, 127).astype(np.int8)
    for label, data in (("float32", vol), ("int8", as_int8)):
        for name in [c for c in CODECS if c != "auto"]:
            store = tmp / f"codec_{label}_{name}.zarr"
            comp = make_compressor(name, data.dtype)
            t = time.perf_counter()
            arr = zarr.create_array(str(store), shape=data.shape, chunks=(64, 128, 128), dtype=data.dtype,
                                    compressors=[comp] if comp else None, overwrite=True)
            arr[:] = data
            tw = time.perf_counter() - t
            size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
            t = time.perf_counter()
            for _ in range(3):
                back = zarr.open_array(str(store), mode="r")[:]
            tr = (time.perf_counter() - t) / 3
            assert np.array_equal(back, data)
            rows.append([label, name, f"{data.nbytes / size:.2f}", f"{data.nbytes / tw / 1e6:.0f}",
                         f"{data.nbytes / tr / 1e6:.0f}"])
            shutil.rmtree(store)
    return rows


def statistics_rounds(src: Path, tmp: Path, repeats: int) -> None:
    import dask

    from cryodet_dask.prediction import global_stats

    nbytes = src.stat().st_size
    rows = []
    with dask.config.set(scheduler="sync"):
        for r in range(repeats):
            shutil.rmtree(tmp / "s.zarr", ignore_errors=True)
            t = time.perf_counter()
            shutil.copyfile(src, tmp / "copy.mrc")
            t_cp = time.perf_counter() - t
            (tmp / "copy.mrc").unlink()
            t = time.perf_counter()
            cd.convert(src, tmp / "s.zarr")
            t_conv = time.perf_counter() - t
            tomo = cd.load(tmp / "s.zarr")
            t = time.perf_counter()
            mean, std = global_stats(tomo.data)
            t_stats = time.perf_counter() - t
            rec = tomo.metadata.get("statistics") or {}
            assert (rec.get("mean"), rec.get("std")) == (mean, std), "recorded statistics differ from the pass"
            rows.append([str(r + 1), f"{t_cp:.2f}", f"{t_conv:.2f}", f"{t_stats:.2f}", f"{t_conv / t_cp:.1f}"])
    print(f"{src.name}: {nbytes / 1e6:.0f} MB, one thread")
    print(table(rows, ["round", "cp (s)", "convert, statistics recorded (s)", "statistics pass saved (s)",
                       "convert / cp"]))
    shutil.rmtree(tmp / "s.zarr", ignore_errors=True)


def label_mrc_rounds(zarr_path: Path, tmp: Path, repeats: int) -> None:
    import dask
    import dask.array as da

    from cryodet_dask.exports import write_labels_mrc

    labels = da.from_zarr(str(zarr_path / "0"))
    n = int(zarr.open_group(str(zarr_path), mode="r").attrs["cryodet"]["n_labels"])
    rows = []
    with dask.config.set(scheduler="sync"):
        for r in range(repeats):
            t = time.perf_counter()
            write_labels_mrc(labels, tmp / "labels.mrc", n_labels=n, overwrite=True)
            t_mrc = time.perf_counter() - t
            t = time.perf_counter()
            shutil.copyfile(tmp / "labels.mrc", tmp / "copy.mrc")
            t_cp = time.perf_counter() - t
            rows.append([str(r + 1), f"{t_mrc:.2f}", f"{t_cp:.2f}"])
    size = (tmp / "labels.mrc").stat().st_size
    print(f"{zarr_path.name} -> MRC of {size / 1e6:.0f} MB, one thread")
    print(table(rows, ["round", "write_labels_mrc (s)", "cp of the MRC (s)"]))
    (tmp / "copy.mrc").unlink()
    (tmp / "labels.mrc").unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--statistics", metavar="MRC", default=None,
                    help="only time convert with its statistics against cp and the statistics pass")
    ap.add_argument("--label-mrc", metavar="LABELS_ZARR", default=None,
                    help="only time writing this label OME-Zarr as MRC")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench_convert_"))
    tmp.mkdir(parents=True, exist_ok=True)
    if args.statistics:
        statistics_rounds(Path(args.statistics), tmp, args.repeats)
        return
    if args.label_mrc:
        label_mrc_rounds(Path(args.label_mrc), tmp, args.repeats)
        return
    vol, what = simulated()
    print(f"codec data: {what}, shape {vol.shape}")
    print(table(codec_table(vol, tmp), ["dtype", "codec", "ratio", "write MB/s", "read MB/s"]))
    if args.skip_big:
        return
    n = int(round(args.size_gib * 2**30 / 4 / (1024 * 1024)))
    shape = (n, 1024, 1024)
    src = tmp / "big.mrc"
    big_mrc(src, shape, np.tile(vol, (1, 4, 4)))
    nbytes = src.stat().st_size
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    t = time.perf_counter()
    shutil.copyfile(src, tmp / "copy.mrc")
    t_cp = time.perf_counter() - t
    (tmp / "copy.mrc").unlink()
    from distributed import Client, LocalCluster

    with TreeMemory() as mem:
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="512MiB", processes=True,
                          dashboard_address=None) as cluster, Client(cluster):
            t = time.perf_counter()
            cd.convert(src, tmp / "big.zarr", overwrite=True)
            t_conv = time.perf_counter() - t
    out = cd.load(tmp / "big.zarr")
    zsize = sum(f.stat().st_size for f in (tmp / "big.zarr").rglob("*") if f.is_file())
    print(f"\n{shape} float32 = {nbytes / 2**30:.2f} GiB; Zarr {zsize / 2**30:.2f} GiB (ratio {nbytes / zsize:.2f})")
    print(table([[f"{nbytes / t_cp / 1e6:.0f}", f"{nbytes / t_conv / 1e6:.0f}", f"{t_cp / t_conv:.2f}",
                  mib(mem.peak_anon), mib(mem.peak_rss), mib(mem.peak_anon_per_child)]],
                ["cp MB/s", "convert MB/s", "convert/cp", "peak anon (tree)", "peak RSS (tree)",
                 "peak anon (one worker)"]))
    assert out.shape == shape
    shutil.rmtree(tmp / "big.zarr")
    src.unlink()


if __name__ == "__main__":
    main()
