"""Clusters: an existing scheduler on loopback, and a real one-node SLURM through dask-jobqueue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from cryodet_dask.cluster import WORKER_ENV, ClusterConfig, local_cluster_size, open_client


def _slurm_up() -> str | None:
    import dask_jobqueue  # noqa: F401  (its config defaults must load before dask.config.set below)

    if shutil.which("sinfo") is None:
        return "SLURM is not installed (run .ci/start_slurm.sh)"
    for _ in range(30):  # a node may be 'comp'leting the jobs of the previous test
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
        if r.returncode == 0 and any(s in r.stdout for s in ("idle", "mix", "alloc")):
            return None
        time.sleep(1)
    return f"slurmctld is not running or has no usable node: {(r.stderr or r.stdout).strip()[:200]}"


def test_local_cluster_sized_to_machine():
    size = local_cluster_size()
    cores = len(os.sched_getaffinity(0))
    assert size["n_workers"] == cores and size["threads_per_worker"] == 1
    assert size["memory_limit"].endswith("MiB")


def test_threads_kind_gives_no_client():
    with open_client(ClusterConfig(kind="threads")) as client:
        assert client is None


def test_local_cuda_layout_on_a_pretend_gpu(monkeypatch):
    """--cluster local-cuda's workers as started (torch made to report one GPU, so this runs on the CPU):
    one worker with GPU_TASKS threads and GPU units seeing device 0, and CPU-only workers seeing none."""
    import torch

    from cryodet_dask.cluster import GPU_TASKS

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with open_client(ClusterConfig(kind="local-cuda", n_workers=1, memory_limit="512MiB", dashboard=False)) as client:
        client.wait_for_workers(2)
        info = client.scheduler_info()["workers"]
        by_name = {w["name"]: w for w in info.values()}
        assert sorted(by_name) == ["cpu-0", "gpu-0"]
        gpu, cpu = by_name["gpu-0"], by_name["cpu-0"]
        assert gpu["nthreads"] == GPU_TASKS and gpu["resources"] == {"GPU": GPU_TASKS}
        assert cpu["nthreads"] == 1 and not cpu.get("resources")
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert {info[a]["name"]: v for a, v in seen.items()} == {"gpu-0": "0", "cpu-0": ""}


@pytest.mark.scheduler
def test_existing_scheduler_on_loopback(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    bindir = os.path.dirname(sys.executable)
    sched = subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                              "--scheduler-file", str(sched_file), "--no-dashboard"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers = []
    try:
        for _ in range(100):
            if sched_file.exists():
                break
            time.sleep(0.1)
        for _ in range(2):
            workers.append(subprocess.Popen(
                [os.path.join(bindir, "dask"), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env))
        with open_client(ClusterConfig(scheduler_file=str(sched_file))) as client:
            client.wait_for_workers(2, timeout=60)
            import dask.array as da

            x = da.arange(1000, chunks=100)
            assert int(client.compute(x.sum()).result()) == 499500
            pids = client.run(os.getpid)
            assert len(pids) == 2 and os.getpid() not in pids.values()  # the work ran in the workers
    finally:
        for p in workers + [sched]:
            p.terminate()
        for p in workers + [sched]:
            p.wait(timeout=30)


@pytest.mark.slurm
def test_slurm_cluster_runs_worker_jobs_with_gpu_resource(tmp_path):
    why = _slurm_up()
    if why:
        pytest.skip(why)
    import dask

    with dask.config.set({"jobqueue.slurm.cores": 1, "jobqueue.slurm.memory": "2GiB",
                          "jobqueue.slurm.walltime": "00:10:00", "jobqueue.slurm.local-directory": str(tmp_path),
                          "jobqueue.slurm.log-directory": str(tmp_path)}):
        cfg = ClusterConfig(kind="slurm", jobs=2, gpus_per_job=1)
        os.environ["CRYODET_SLURM_NO_GRES"] = "1"  # the CI node has no GPU to give out
        try:
            with open_client(cfg) as client:
                client.wait_for_workers(2, timeout=120)
                info = client.scheduler_info()["workers"]
                assert len(info) == 2
                assert all(w["resources"].get("GPU") == 1 for w in info.values())
                import dask.array as da

                with dask.annotate(resources={"GPU": 1}):
                    x = da.ones((64, 64), chunks=16) * 2
                assert float(client.compute(x.sum()).result()) == 2 * 64 * 64
                envs = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENV})
                assert all(e == WORKER_ENV for e in envs.values()), envs  # the job script exported it
        finally:
            os.environ.pop("CRYODET_SLURM_NO_GRES", None)


@pytest.mark.slurm
def test_detect_end_to_end_through_slurm(tmp_path):
    """The whole detection on a small simulated tomogram, run by two SLURM worker jobs."""
    why = _slurm_up()
    if why:
        pytest.skip(why)
    import dask
    import torch

    from cryodet_dask import models
    from cryodet_dask.pipeline.detect import detect
    from cryodet_dask.simulation import simulate

    simulate(tmp_path / "sim", shape=(32, 64, 64), seed=11)
    torch.manual_seed(0)
    ckpt = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"))),
                       tmp_path / "net.pt")
    # every post-processing parameter explicit: the shipped defaults would filter a random network's blobs
    kwargs = dict(segnet=str(ckpt), chunks=(32,), device="cpu", mask_threshold=0.5, center_threshold=0.1,
                  remove_min_size=8, filter_outlier=False, check_center=True, center_min_distance=0.0,
                  min_particle_size=0, min_score=0.0)
    local = detect(tmp_path / "sim" / "tomogram.mrc", tmp_path / "local", **kwargs)
    with dask.config.set({"jobqueue.slurm.cores": 1, "jobqueue.slurm.memory": "3GiB",
                          "jobqueue.slurm.walltime": "00:20:00", "jobqueue.slurm.local-directory": str(tmp_path),
                          "jobqueue.slurm.log-directory": str(tmp_path)}):
        with open_client(ClusterConfig(kind="slurm", jobs=2)) as client:
            client.wait_for_workers(2, timeout=120)
            res = detect(tmp_path / "sim" / "tomogram.mrc", tmp_path / "slurm", client=client, **kwargs)
            assert len(client.scheduler_info()["workers"]) == 2
    assert len(res.particles) == len(local.particles) > 0
    np.testing.assert_array_equal(res.labels.compute(), local.labels.compute())


def test_local_workers_get_the_worker_environment():
    """The local workers start with WORKER_ENV (glibc's heap kept for block-sized arrays), and a block-sized
    allocation there does not page-fault anew each time (what the environment is for)."""

    def probe() -> tuple[dict, int]:
        import resource

        env = {k: os.environ.get(k) for k in WORKER_ENV}
        np.ones(2**21, np.float32)  # warm the heap once
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            a = np.ones(2**21, np.float32)  # 8 MiB, a 128^3 float32 block
            del a
        return env, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with open_client(ClusterConfig(kind="local", n_workers=1, dashboard=False)) as client:
        (env, faults), = client.run(probe).values()
    assert env == WORKER_ENV
    assert faults < 20 * 2**21 * 4 // 4096 // 4, faults  # fresh pages every time would be 40,960 faults


def test_local_workers_end_without_the_interpreter_teardown(tmp_path):
    """After a completed run a local worker process ends as soon as it has closed (QuickExit): an exit
    handler a task registered never runs, and the worker's scratch directory is still removed."""
    marker = tmp_path / "teardown-ran"

    def register_exit_handler(path: str) -> bool:
        import atexit
        import pathlib

        atexit.register(pathlib.Path(path).write_text, "ran")
        return True

    with open_client(ClusterConfig(kind="local", n_workers=1, dashboard=False)) as client:
        assert client.submit(register_exit_handler, str(marker)).result()
        workdirs = list(client.run(lambda dask_worker: dask_worker.local_directory).values())
    deadline = time.monotonic() + 30
    while any(os.path.exists(d) for d in workdirs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(d) for d in workdirs)
    assert not marker.exists()
