"""Reliability table (issue 9): faults injected, runs resumed, malformed inputs tried, and their outcomes.

Every disturbed run is compared with one undisturbed run of the same command:
MRC, TXT, CSV and STAR byte for byte, the Zarr label image voxel for voxel
with its attributes.  Malformed MRC files are random header corruptions (the
fields of ``tests/test_fuzz_mrc.py``) plus truncations; each must load or give
a one-line CryodetError, within a time limit.

    .venv/bin/python benchmarks/bench_reliability.py [--kills 3] [--fuzz 2000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import zarr  # noqa: E402

from _util import table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEM = "tomogram"
FINAL = (f"{STEM}_labels.mrc", f"{STEM}_centers.txt", f"{STEM}_centers.csv", f"{STEM}_centers.star")
PP = dict(mask_threshold=0.5, center_threshold=0.1, remove_min_size=8, filter_outlier=False, halo=(32,))
FLAGS = ["-mt", "0.5", "-ct", "0.1", "-rs", "8", "--no-filter-outlier", "--device", "cpu", "-ps", "32", "--halo", "32"]
N_CHUNKS = 16


def same(a: Path, b: Path) -> bool:
    if any(not (a / n).exists() or (a / n).read_bytes() != (b / n).read_bytes() for n in FINAL):
        return False
    za = zarr.open_group(str(a / f"{STEM}_labels.zarr"), mode="r")
    zb = zarr.open_group(str(b / f"{STEM}_labels.zarr"), mode="r")
    return dict(za.attrs) == dict(zb.attrs) and np.array_equal(za["0"][...], zb["0"][...])


def finals_absent(out: Path) -> bool:
    names = set(os.listdir(out)) if out.exists() else set()
    return not names & {*FINAL, f"{STEM}_labels.zarr", "run.json", f"{STEM}_prediction.zarr"}


def done(out: Path) -> int:
    try:
        return len(os.listdir(out / f".{STEM}_prediction.zarr.partial" / ".done"))
    except OSError:
        return 0


def wait(pred, timeout=300.0, step=0.01) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError
        time.sleep(step)


def cli(sim: Path, net: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cryodet_dask", "detect", str(sim / "tomogram.mrc"), "-m", str(net), "-o",
            str(out), *FLAGS, *extra]


def spawn(argv: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def resume_rows(sim, net, ref, work, kills: int) -> list[list]:
    """SIGKILL of the process tree (LocalCluster) and SIGINT (threads) at several points; then the same command."""
    rows = []
    points = [1, 6, 11][:kills]
    for sig, cluster in ((signal.SIGKILL, ["--cluster", "local", "--workers", "2"]), (signal.SIGINT, ["--cluster", "threads"])):
        ok = identical = clean = 0
        skipped = []
        for k, at in enumerate(points):
            out = work / f"resume-{sig.name}-{k}"
            p = spawn(cli(sim, net, out, *cluster), start_new_session=True)
            wait(lambda: done(out) >= at or p.poll() is not None)
            if sig == signal.SIGKILL:
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=120)
            clean += finals_absent(out) and (sig == signal.SIGKILL or
                                             (p.returncode == 130 and "run the same command again" in err))
            time.sleep(0.5)
            r = spawn(cli(sim, net, out, "--cluster", "threads"))
            r.communicate(timeout=600)
            ok += r.returncode == 0
            run = json.loads((out / "run.json").read_text())
            skipped.append(run["chunks_skipped"])
            identical += same(out, ref) and run["chunks_computed"] + run["chunks_skipped"] == N_CHUNKS
        rows.append([f"detect {sig.name} mid-prediction ({' '.join(cluster[1:2])}), run again", len(points),
                     f"{clean}/{len(points)} no final output; {ok} resumed, {identical} identical; chunks skipped "
                     f"{skipped} of {N_CHUNKS}"])
    return rows


def worker_rows(sim, net, ref, work, kills: int) -> list[list]:
    import distributed

    from cryodet_dask.pipeline.detect import detect

    identical = completed = landed = 0
    n_kills = 0
    for k in range(kills):
        out = work / f"worker-{k}"
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                      silence_logs=40) as cluster, distributed.Client(cluster) as client:
            pids = sorted(client.run(os.getpid).values())
            box: dict = {}

            def run():
                try:
                    box["res"] = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(32,), device="cpu",
                                        client=client, **PP)
                except BaseException as exc:  # noqa: BLE001
                    box["err"] = exc

            th = threading.Thread(target=run)
            th.start()
            wait(lambda: done(out) >= 1 + 4 * k or not th.is_alive())
            if th.is_alive():
                os.kill(pids[k % 2], signal.SIGKILL)
                n_kills += 1
                landed += 1

            def pieces():
                return not th.is_alive() or any(n.startswith(".cryodet-pieces-") and os.listdir(out / n)
                                                for n in os.listdir(out))

            wait(pieces, step=0.005)
            if th.is_alive():
                alive = sorted(set(client.run(os.getpid).values()) - set(pids[k % 2: k % 2 + 1]))
                os.kill(alive[0], signal.SIGKILL)
                n_kills += 1
            th.join()
            completed += "res" in box
            identical += "res" in box and same(out, ref)
    return [["worker SIGKILL mid-inference and mid-post-processing (LocalCluster, 2 processes)", n_kills,
             f"{completed}/{kills} runs completed, {identical}/{kills} identical ({landed} kills during inference)"]]


def stage_rows(sim, net, ref, work) -> list[list]:
    from cryodet_dask.pipeline.detect import detect

    out = work / "stages"
    detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(32,), device="cpu", **PP)
    res = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(32,), device="cpu", **{**PP, "mask_threshold": 0.6})
    st = json.loads((out / "run.json").read_text())["stages"]
    a = f"convert ran={st['convert']['ran']}, chunks computed {res.prediction.chunks_computed}"
    res = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(64,), device="cpu", **PP)
    st = json.loads((out / "run.json").read_text())["stages"]
    b = f"convert ran={st['convert']['ran']}, chunks computed {res.prediction.chunks_computed}"
    return [["changed -mt (post-processing only)", 1, a + "; outputs replaced"],
            ["changed -ps (chunks)", 1, b]]


def bad_input_rows(sim, net, work) -> list[list]:
    from cryodet_dask import models

    other = work / "other.pt"
    payload = torch.load(net, weights_only=True)
    payload["config"]["channels"] = [4, 6, 16]
    torch.save(payload, other)
    coarse = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"),
                                                         voxel_size=20.0)), work / "coarse.pt")
    cases = [
        ("weights for another architecture", ["-m", str(other)]),
        ("threshold outside [0, 1] (-mt 1.5)", ["-mt", "1.5"]),
        ("threshold outside [0, 1] (-ct -0.1)", ["-ct", "-0.1"]),
        ("negative size (-rs -1)", ["-rs", "-1"]),
        ("negative distance (-dt -2)", ["-dt", "-2"]),
        ("negative neighbour count (-nn -1)", ["-nn", "-1"]),
        ("chunk smaller than the halo (-ps 16)", ["-ps", "16"]),
    ]
    rows = []
    for what, extra in cases:
        out = work / "bad"
        shutil.rmtree(out, ignore_errors=True)
        argv = cli(sim, net, out, "--cluster", "threads", *extra)
        r = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                           timeout=120)
        err = r.stderr.strip().splitlines()
        nothing = not out.exists() or not os.listdir(out)
        rows.append([what, 1, f"exit {r.returncode}, {len(err)} line, nothing written: {nothing}: "
                              f"'{err[-1][:90] if err else ''}...'"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = work / "vs"
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run(cli(sim, coarse, out, "--cluster", "threads"), env=env, capture_output=True, text=True,
                       timeout=300)
    warned = "factor 0.50" in r.stderr and "--rescale" in r.stderr
    rows.append(["weights trained at 20 Å, tomogram 10 Å", 1,
                 f"warning with the factor and --rescale offered: {warned}; run completes (exit {r.returncode})"])
    r = subprocess.run(cli(sim, coarse, out, "--cluster", "threads", "--rescale"), env=env, capture_output=True,
                       text=True, timeout=300)
    run = json.loads((out / "run.json").read_text()) if r.returncode == 0 else {}
    resc = run.get("rescale") or {}
    rows.append(["same with --rescale", 1, f"exit {r.returncode}; predicted on {resc.get('predicted_shape_zyx')} "
                 f"(factor {resc.get('factor')}), labels on {run.get('shape_zyx')}"])
    return rows


def disk_rows(sim, net, work) -> list[list]:
    rows = []
    for size, what in (("512k", "disk too small (512 KiB tmpfs): pre-flight"), ("3m", "disk fills up during the run (3 MiB tmpfs)")):
        mnt = work / f"tmpfs-{size}"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode:
            rows.append([what, 0, "skipped (cannot mount a tmpfs)"])
            continue
        try:
            out = mnt / "o"
            code = ("import shutil, sys; from cryodet_dask.cli import main; r = shutil.disk_usage; "
                    "shutil.disk_usage = lambda p: r(p)._replace(free=1 << 40); " if size == "3m" else
                    "import sys; from cryodet_dask.cli import main; ")
            code += "sys.exit(main(sys.argv[1:]))"
            argv = [sys.executable, "-c", code, "-q", *cli(sim, net, out, "--cluster", "threads")[3:]]
            r = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                               timeout=300)
            err = r.stderr.strip().splitlines()
            rows.append([what, 1, f"exit {r.returncode}, {len(err)} line, no final output: {finals_absent(out)}: "
                                  f"'{err[-1][:100] if err else ''}...'"])
        finally:
            subprocess.run(["umount", "-l", str(mnt)])
    return rows


INT_FIELDS = {"nx": 0, "ny": 4, "nz": 8, "mode": 12, "mx": 28, "my": 32, "mz": 36, "mapc": 64, "mapr": 68,
              "maps": 72, "ispg": 88, "nsymbt": 92, "nversion": 108, "nlabl": 220}


def fuzz_rows(work: Path, n: int) -> list[list]:
    from cryodet_dask import load
    from cryodet_dask.errors import CryodetError
    from cryodet_dask.testing import make_mrc

    valid = Path(make_mrc(work / "v.mrc", np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)))
    good = valid.read_bytes()
    load(valid).data.compute(scheduler="synchronous")  # warm up (imports) before timing
    rng = random.Random(0)
    counts: dict[str, int] = {}
    worst = 0.0
    for i in range(n):
        buf = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.7:
                off = INT_FIELDS[rng.choice(sorted(INT_FIELDS))]
                v = rng.choice([rng.randint(-3, 16), rng.randint(-(2**31), 2**31 - 1),
                                rng.choice([0, 1, 2, 3, 4, 6, 12, 101, 401, 2**31 - 1, -(2**31)])])
                struct.pack_into("<i", buf, off, v)
            elif kind < 0.85:
                struct.pack_into("<f", buf, rng.choice([40, 44, 48, 196, 200, 204]),
                                 rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30, rng.uniform(-1e3, 1e3)]))
            else:
                off = rng.choice([208, 212, 104])
                buf[off : off + 4] = bytes(rng.randrange(256) for _ in range(4))
        if rng.random() < 0.3:
            cut = rng.randint(-len(buf), 4096)
            buf = buf[: len(buf) + cut] if cut < 0 else buf + bytes(cut)
        path = work / "f.mrc"
        path.write_bytes(bytes(buf))
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tomo = load(path)
                tomo.data.compute(scheduler="synchronous")
            outcome = "loads and reads"
        except CryodetError as exc:
            outcome = "clean one-line error" if "\n" not in str(exc) else "multi-line error"
        except Exception as exc:  # noqa: BLE001
            outcome = f"CRASH {type(exc).__name__}"
        worst = max(worst, time.perf_counter() - t)
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return [["malformed MRC headers (random fields, truncation, extension)", n,
             f"{summary}; slowest {worst * 1000:.0f} ms"]]


def main() -> None:
    from cryodet_dask import models
    from cryodet_dask.pipeline.detect import detect
    from cryodet_dask.simulation import simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=3, help="kill points per fault kind")
    ap.add_argument("--fuzz", type=int, default=2000, help="malformed MRC files")
    ap.add_argument("--quick", action="store_true", help="1 kill point per kind, 300 malformed files")
    ap.add_argument("--only-fuzz", action="store_true", help="just the malformed MRC files")
    args = ap.parse_args()
    if args.quick:
        args.kills, args.fuzz = 1, 300
    torch.set_num_threads(1)
    if args.only_fuzz:
        with tempfile.TemporaryDirectory(prefix="bench-reliability-") as d:
            print(table(fuzz_rows(Path(d), args.fuzz), ["fault / input", "tried", "outcome"]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as d:
        work = Path(d)
        sim = work / "sim"
        simulate(sim, shape=(32, 128, 128), seed=5, overwrite=True)
        torch.manual_seed(3)
        net = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"))),
                          work / "two.pt")
        ref = work / "reference"
        res = detect(sim / "tomogram.mrc", ref, segnet=str(net), chunks=(32,), device="cpu", **PP)
        print(f"reference: {len(res.particles)} particles, {N_CHUNKS} prediction chunks", file=sys.stderr)
        rows = []
        for part in (lambda: worker_rows(sim, net, ref, work, args.kills),
                     lambda: resume_rows(sim, net, ref, work, args.kills),
                     lambda: stage_rows(sim, net, ref, work),
                     lambda: bad_input_rows(sim, net, work),
                     lambda: disk_rows(sim, net, work),
                     lambda: fuzz_rows(work, args.fuzz)):
            t = time.perf_counter()
            new = part()
            rows += new
            print(f"  {new[0][0][:50]}... {time.perf_counter() - t:.0f} s", file=sys.stderr)
        print(table(rows, ["fault / input", "tried", "outcome"]))


if __name__ == "__main__":
    main()
