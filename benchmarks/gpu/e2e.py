"""End-to-end ``cryodet-dask detect`` on a simulated tomogram under several cluster layouts, with GPU
utilization sampled during the prediction stage.

Usage (from the repository root, PYTHONPATH holding the repo and the carried packages):

    python e2e.py --out E2E.json --work DIR [--shape 256,512,512] [--budget 220] [--device cuda]

Tomogram: ``cryodet-dask simulate`` at half the size on each axis (128 x 256 x 256 for the default),
tiled 2 x 2 x 2 into one MRC (the simulator would take minutes at full size; tiling keeps the
content realistic for the networks, the compression and the post-processing).  ``--synthetic``
uses smoothed noise instead (dry runs).

Layouts, in this order (A, G, F, B, C, D, E; each skipped when the budget left is below its estimate):

  A  threads      --cluster threads (Dask's threaded scheduler in the CLI process: one thread per
                  core, no GPU resource, so several chunks are on the GPU at once), -ps 128
  B  gpu1         a scheduler + one worker, 1 thread, resources GPU=1 (what --cluster local-cuda
                  starts on a one-GPU machine: one chunk at a time), -ps 128
  C  gpu4         the same worker with 4 threads and GPU=4: 4 chunks in flight, so one chunk's
                  read/normalize/write overlaps another's forward pass (no code change), -ps 128
  D  gpu1-256     as B with -ps 256 (halo overhead 1.37 instead of 3.09 on this volume)
  E  gpu4+cpu     as C plus CPU-only workers (1 thread each) for convert/post-processing, -ps 128
  F  local-cuda   --cluster local-cuda (needs dask_cuda importable), -ps 128
  G  local        --cluster local, the CLI's default: one single-threaded worker process per core, none
                  with the GPU resource, so every worker runs chunks on the GPU (one CUDA context each)

Workers are started (and CUDA initialized in them) before the timed command, so the prediction
stage excludes process start and CUDA context creation -- except F and G, whose clusters the CLI
starts itself (their predict stage includes CUDA initialization in the workers).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def log(*a):
    print("[e2e]", *a, flush=True)


# ------------------------------------------------------------------ GPU sampling


class Sampler(threading.Thread):
    """Samples GPU utilization and memory every `period` s (pynvml, else nvidia-smi)."""

    def __init__(self, period=0.1):
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, float, float, float]] = []  # t, util %, mem-bw util %, MiB used
        self.stop_ev = threading.Event()
        self.kind = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.nvml = pynvml
            self.kind = "pynvml"
        except Exception:
            self.nvml = None
            if shutil.which("nvidia-smi"):
                self.kind = "nvidia-smi"

    def run(self):
        while not self.stop_ev.is_set():
            t = time.time()
            try:
                if self.kind == "pynvml":
                    u = self.nvml.nvmlDeviceGetUtilizationRates(self.h)
                    m = self.nvml.nvmlDeviceGetMemoryInfo(self.h)
                    self.samples.append((t, float(u.gpu), float(u.memory), m.used / 2**20))
                elif self.kind == "nvidia-smi":
                    o = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,utilization.memory,memory.used",
                                        "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                    g, mm, used = (float(v) for v in o.stdout.strip().splitlines()[0].split(","))
                    self.samples.append((t, g, mm, used))
                else:
                    return
            except Exception:
                pass
            self.stop_ev.wait(max(0.0, self.period - (time.time() - t)))

    def window(self, t0, t1):
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return {}
        util = sorted(x[1] for x in s)
        return {"n": len(s), "util_mean": sum(util) / len(util), "util_median": util[len(util) // 2],
                "util_busy_frac": sum(1 for u in util if u >= 5) / len(util),
                "mem_bw_util_mean": sum(x[2] for x in s) / len(s), "mem_used_max_mib": max(x[3] for x in s)}


# ------------------------------------------------------------------ tomogram


def make_tomogram(work: Path, shape, synthetic: bool) -> Path:
    import numpy as np
    import mrcfile

    path = work / "tomo.mrc"
    if path.exists():
        return path
    half = tuple(max(s // 2, 16) for s in shape)
    t = time.perf_counter()
    if synthetic:
        from scipy import ndimage as ndi

        rng = np.random.default_rng(0)
        tile = ndi.gaussian_filter(rng.normal(size=half), 1.5).astype(np.float32)
        what = "smoothed noise"
    else:
        sim = work / "sim"
        subprocess.run([PY, "-m", "cryodet_dask", "-q", "simulate", "--shape", ",".join(map(str, half)),
                        "--seed", "4242", str(sim)], check=True)
        with mrcfile.open(sim / "tomogram.mrc", permissive=True) as m:
            tile = np.asarray(m.data, dtype=np.float32)
        what = f"simulated {half}, tiled"
    reps = tuple(-(-s // h) for s, h in zip(shape, tile.shape))
    vol = np.tile(tile, reps)[: shape[0], : shape[1], : shape[2]]
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(vol, dtype=np.float32))
        m.voxel_size = 10.0
    log(f"tomogram {shape} ({what}) in {time.perf_counter() - t:.1f} s -> {path}")
    return path


# ------------------------------------------------------------------ clusters


def _env(extra=None):
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    from cryodet_dask.cluster import WORKER_ENV

    env.update(WORKER_ENV)  # what the package sets for its LocalCluster workers
    if extra:
        env.update(extra)
    return env


class Cluster:
    """A scheduler plus workers started as processes (the deploy/ way), torn down on exit."""

    def __init__(self, work: Path, gpu_threads: int, gpu_slots: int, cpu_workers: int, device: str):
        self.procs = []
        self.sched_file = work / f"sched-{time.time_ns()}.json"
        self.procs.append(subprocess.Popen(
            [PY, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(self.sched_file),
             "--port", "0", "--no-dashboard"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        for _ in range(200):
            if self.sched_file.exists():
                break
            time.sleep(0.1)
        self.procs.append(subprocess.Popen(
            [PY, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(self.sched_file), "--nthreads",
             str(gpu_threads), "--nworkers", "1", "--resources", f"GPU={gpu_slots}", "--memory-limit", "0",
             "--no-dashboard", "--name", "gpu0"], env=_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))
        self.n_workers = 1
        if cpu_workers:
            self.procs.append(subprocess.Popen(
                [PY, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(self.sched_file), "--nthreads",
                 "1", "--nworkers", str(cpu_workers), "--memory-limit", "4GiB", "--no-dashboard"],
                env=_env({"CUDA_VISIBLE_DEVICES": ""}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
            self.n_workers += cpu_workers
        from distributed import Client

        self.client = Client(scheduler_file=str(self.sched_file), timeout=60)
        self.client.wait_for_workers(self.n_workers, timeout=120)
        # CUDA context + cuDNN in the GPU worker, before the timed command
        gpu_addr = [a for a, w in self.client.scheduler_info()["workers"].items() if w.get("resources", {}).get("GPU")]
        t = time.perf_counter()
        self.client.run(_preinit_cuda, device, workers=gpu_addr)
        log(f"cluster up: {self.n_workers} workers; CUDA initialized in the GPU worker in {time.perf_counter() - t:.1f} s")

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except Exception:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except Exception:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except Exception:
                    pass


def _preinit_cuda(device):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        x = torch.randn(1, 1, 16, 16, 16, device="cuda")
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            torch.nn.functional.conv3d(x, torch.randn(4, 1, 3, 3, 3, device="cuda"), padding=1)
        torch.cuda.synchronize()
    return True


# ------------------------------------------------------------------ runs


def run_detect(name, tomo: Path, work: Path, sampler: Sampler, args_extra, env_extra=None, timeout=300):
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    stamps = work / f"stamps-{name}.json"
    cmd = [PY, str(HERE / "detect_wrapper.py"), str(stamps), str(tomo), "-o", str(out), *args_extra]
    log(f"{name}: {' '.join(cmd[2:])}")
    t0 = time.time()
    p = subprocess.run(cmd, env=_env(env_extra), capture_output=True, text=True, timeout=timeout)
    t1 = time.time()
    res = {"name": name, "args": args_extra, "rc": p.returncode, "wall_s": t1 - t0}
    if p.returncode != 0:
        res["stderr_tail"] = p.stderr[-1500:]
        log(f"{name}: FAILED rc={p.returncode}: {p.stderr[-600:]}")
        return res
    run = json.loads((out / "run.json").read_text())
    st = json.loads(stamps.read_text()) if stamps.exists() else {}
    res.update({"timings_s": run.get("timings_s"), "chunks": run.get("chunks"), "halo": run.get("halo"),
                "tile_chunks": run.get("tile_chunks"), "computed_per_output_voxel": run.get("computed_per_output_voxel"),
                "chunks_computed": run.get("chunks_computed"), "particles": run.get("particles"),
                "peak_memory_mib": run.get("peak_memory_mib"), "shape": run.get("shape_zyx"), "stamps": st})
    if "predict_start" in st:
        res["gpu_during_predict"] = sampler.window(st["predict_start"], st["predict_end"])
    res["gpu_whole_run"] = sampler.window(t0, t1)
    tm = run.get("timings_s", {})
    nvox = 1
    for s in run.get("shape_zyx", [0]):
        nvox *= s
    if tm.get("predict"):
        res["predict_mvox_s"] = nvox / tm["predict"] / 1e6
    log(f"{name}: wall {res['wall_s']:.1f} s, stages {tm}, tiles of {res['tile_chunks']} chunks "
        f"({res['computed_per_output_voxel']} computed/output voxel), particles {res['particles']}, "
        f"GPU util during predict {res.get('gpu_during_predict', {}).get('util_mean', float('nan')):.0f} %")
    shutil.rmtree(out, ignore_errors=True)  # keep the disk small; run.json is in the result
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--shape", default="256,512,512")
    ap.add_argument("--budget", type=float, default=220.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated layout names to run")
    ap.add_argument("--cpu-workers", type=int, default=max(1, (os.cpu_count() or 2) - 4))
    ap.add_argument("--prepare", action="store_true", help="only write the tomogram (WORK/tomo.mrc)")
    args = ap.parse_args()
    t_start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(v) for v in args.shape.split(","))
    tomo = make_tomogram(work, shape, args.synthetic)
    if args.prepare:
        return 0
    sampler = Sampler()
    sampler.start()
    dev = ["--device", args.device]
    layouts = [  # name, cluster kwargs (None: the CLI makes it), CLI args, estimated seconds
        ("A threads", None, ["--cluster", "threads", "-ps", "128", *dev], 35),
        ("G local", None, ["--cluster", "local", "-ps", "128", *dev], 45),
        ("F local-cuda", None, ["--cluster", "local-cuda", "-ps", "128", *dev], 40),
        ("H local-cuda-256", None, ["--cluster", "local-cuda", "-ps", "256", *dev], 40),
        ("T local-cuda-tile128", None, ["--cluster", "local-cuda", "-ps", "128", "--tile", "128", *dev], 40),
        ("B gpu1", dict(gpu_threads=1, gpu_slots=1, cpu_workers=0), ["-ps", "128", *dev], 40),
        ("C gpu4", dict(gpu_threads=4, gpu_slots=4, cpu_workers=0), ["-ps", "128", *dev], 35),
        ("D gpu1-256", dict(gpu_threads=1, gpu_slots=1, cpu_workers=0), ["-ps", "256", *dev], 35),
        ("E gpu4+cpu", dict(gpu_threads=4, gpu_slots=4, cpu_workers=args.cpu_workers), ["-ps", "128", *dev], 40),
    ]
    if args.only:
        keep = set(args.only.split(","))
        layouts = [l for l in layouts if l[0].split()[0] in keep]
    results = {"shape": shape, "tomogram": str(tomo), "sampler": sampler.kind, "runs": [], "skipped": []}
    for name, ckw, cli, est in layouts:
        left = args.budget - (time.time() - t_start)
        if left < est:
            results["skipped"].append(f"{name}: {left:.0f} s left, needs ~{est} s")
            log(f"skip {name}: budget")
            continue
        if name.startswith("B") and any(r.get("name", "").startswith("F") and r.get("rc") == 0
                                        for r in results["runs"]) and not args.only:
            results["skipped"].append(f"{name}: F (local-cuda) ran, which is the same layout")
            continue
        cluster = None
        try:
            if ckw is not None:
                cluster = Cluster(work, device=args.device, **ckw)
                cli = [*cli, "--scheduler-file", str(cluster.sched_file)]
                env_extra = None
            else:
                env_extra = {"CRYODET_PREINIT_CUDA": "1" if name.startswith("A") else "0"}
            results["runs"].append(run_detect(name.replace(" ", "_"), tomo, work, sampler, cli, env_extra,
                                              timeout=max(30, int(left))))
        except Exception as exc:
            results["runs"].append({"name": name, "rc": -1, "error": repr(exc)[:1000]})
            log(f"{name}: ERROR {exc!r}")
        finally:
            if cluster is not None:
                cluster.close()
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    sampler.stop_ev.set()
    results["seconds"] = time.time() - t_start
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"done in {results['seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
