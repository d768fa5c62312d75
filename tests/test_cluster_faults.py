"""Fault table, continued (issue 15, items 2, 7 and 9): the cluster and the input, where a run used to hang,
print a traceback or give a quietly wrong answer.

- cluster: an unreachable scheduler, a cluster with no worker, workers killed on one task, a memory
  limit below what one prediction task needs, relative paths sent to workers in another folder;
- input: NaN in a Zarr store (``--nan-policy``), an anisotropic voxel size, an image stack (ispg 0);
- runs: one record per tomogram with the command, date, host and weights; ``convert`` run twice.

Each case checks the exit status, that an error is one line, and that the outputs are complete and equal
to an undisturbed run, or absent.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dask
import distributed  # noqa: F401  (its config defaults must load before the dask.config.set below)
import mrcfile
import numpy as np
import pytest
import torch
import zarr

from cryodet_dask import cluster as cluster_mod
from cryodet_dask import convert, detect, load
from cryodet_dask.cli import main
from cryodet_dask.pipeline import (DetectParams, check_worker_memory, inference_halo, memory_refusal,
                                   prediction_memory, read_run, run_record_path)
from cryodet_dask.errors import ClusterError, InputError, OutputExistsError, ParameterError
from cryodet_dask.prediction._tiling import task_memory_bytes
from cryodet_dask.testing import make_mrc

from test_faults import FLAGS, one_line_error, same_outputs

torch.set_num_threads(1)

#: the post-processing flags of test_faults without its `--cluster threads`
PP = [f for f in FLAGS if f not in ("--cluster", "threads")]


def _volume(seed: int = 1, shape=(16, 40, 40)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ the cluster


def test_unreachable_scheduler_is_one_line_exit_69(net, tmp_path, capsys):
    make_mrc(tmp_path / "t.mrc", _volume())
    t0 = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(["-q", "detect", str(tmp_path / "t.mrc"), "-m", str(net), "-o", str(tmp_path / "o"), *PP,
                     "--scheduler-address", "tcp://127.0.0.1:1"])
    assert code == 69
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in one_line_error(capsys)
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "o" / "run.json").exists()


def test_missing_scheduler_file_is_one_line(net, tmp_path, capsys):
    make_mrc(tmp_path / "t.mrc", _volume())
    code = main(["-q", "detect", str(tmp_path / "t.mrc"), "-m", str(net), "-o", str(tmp_path / "o"), *PP,
                 "--scheduler-file", str(tmp_path / "nope.json")])
    assert code == 69
    assert "nope.json does not exist" in one_line_error(capsys)


def test_cluster_without_workers_ends_with_one_line(net, tmp_path, capsys):
    """A scheduler whose workers are all gone (or never came): exit 69 after --worker-timeout, not a hang."""
    from distributed import LocalCluster

    make_mrc(tmp_path / "t.mrc", _volume())
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cl:
        t0 = time.monotonic()
        code = main(["-q", "detect", str(tmp_path / "t.mrc"), "-m", str(net), "-o", str(tmp_path / "o"), *PP,
                     "--scheduler-address", cl.scheduler_address, "--worker-timeout", "2"])
        elapsed = time.monotonic() - t0
    assert code == 69
    assert "has had no worker for 2 s" in one_line_error(capsys)
    assert elapsed < 40
    assert not (tmp_path / "o" / "run.json").exists() and not (tmp_path / "o" / "t_labels.mrc").exists()


class _FakeClient:
    """What the watchdog reads of a client: its status and the scheduler's workers."""

    def __init__(self, status: str = "running", workers: dict | None = None, fail: bool = False):
        self.status, self.workers, self.fail, self.closed = status, workers or {}, fail, False

    def scheduler_info(self, n_workers: int = -1) -> dict:
        if self.fail:
            raise OSError("scheduler gone")
        return {"workers": self.workers}

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("client, reason", [
    (_FakeClient(), "has had no worker for 0 s"),
    (_FakeClient(status="connecting"), "lost the connection to the Dask scheduler"),
    (_FakeClient(fail=True), "lost the connection to the Dask scheduler"),
])
def test_watchdog_closes_a_client_that_cannot_finish(client, reason):
    dog = cluster_mod._Watchdog(client, wait=0.3, where="tcp://x:1", poll=0.05, lost_after=0.3)
    dog.start()
    dog.join(timeout=10)
    assert not dog.is_alive()
    assert dog.reason is not None and reason in dog.reason
    assert client.closed


def test_watchdog_leaves_a_working_cluster_alone():
    client = _FakeClient(workers={"tcp://w:1": {}})
    dog = cluster_mod._Watchdog(client, wait=0.2, where="x", poll=0.05, lost_after=0.2)
    dog.start()
    time.sleep(0.6)
    dog.stop()
    dog.join(timeout=5)
    assert dog.reason is None and not client.closed


def test_killed_workers_become_one_line_about_memory():
    from distributed import Client, LocalCluster
    from distributed.scheduler import KilledWorker

    cfg = cluster_mod.ClusterConfig(kind="local", memory_limit="1GiB")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cl, Client(cl) as client:
        with pytest.raises(ClusterError, match=r"raise --memory-limit or lower -ps/--chunks") as info:
            with cluster_mod._guarded(client, cfg, "the local cluster"):
                raise KilledWorker("predict-xyz", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    assert info.value.exit_code == 69
    assert "(--memory-limit 1GiB)" in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_workers": 0}, "n_workers must be a whole number >= 1"),
    ({"n_workers": -2}, "n_workers must be a whole number >= 1"),
    ({"threads_per_worker": 0}, "threads_per_worker must be"),
    ({"memory_limit": "banana"}, "must be a size such as 4GiB"),
    ({"memory_limit": "10MiB"}, "below 64 MiB"),
    ({"worker_timeout": 0.0}, "worker_timeout must be a positive number"),
    ({"kind": "kubernetes"}, "unknown cluster kind"),
])
def test_cluster_config_refuses_what_would_hang(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        cluster_mod.ClusterConfig(**kwargs)


def test_default_local_cluster_starts_fewer_workers_when_a_task_needs_more(monkeypatch):
    import psutil

    monkeypatch.setattr(cluster_mod, "_cores", lambda: 8)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=10 * 2**30))
    assert cluster_mod.local_cluster_size()["n_workers"] == 8
    size = cluster_mod.local_cluster_size(task_memory=3 * 2**30)
    assert size["n_workers"] == 2 and size["memory_limit"] == "4096MiB"
    # what the user asked for is kept
    assert cluster_mod.local_cluster_size(n_workers=8, task_memory=3 * 2**30)["n_workers"] == 8


def test_task_memory_estimate_covers_the_measured_peaks():
    """The fit lies above every measured peak (ru_maxrss, bytes per voxel) it was made from."""
    from cryodet_dask.prediction._tiling import RUNTIME_BYTES

    measured = {(144, 8): 321, (144, 16): 448, (144, 32): 796, (96, 16): 518, (216, 16): 438}
    for (n, width), per_voxel in measured.items():
        assert task_memory_bytes((n, n, n), width) - RUNTIME_BYTES >= per_voxel * n**3


class _Workers:
    def __init__(self, *limits: int, gpu: bool = False):
        self.info = {"workers": {f"tcp://w:{i}": {"memory_limit": m, "resources": {"GPU": 1} if gpu else {}}
                                 for i, m in enumerate(limits)}}

    def scheduler_info(self, n_workers: int = -1) -> dict:
        return self.info


def test_worker_memory_below_one_prediction_task_is_refused(net):
    p = DetectParams(segnet=str(net), chunks=(128,))
    shape = (256, 512, 512)
    need, tile = prediction_memory(p, shape)
    assert tile == tuple(128 + 2 * h for h in inference_halo(p)) and need > task_memory_bytes(tile, 4)
    side = tile[0]
    with pytest.raises(ParameterError, match=rf"one prediction task needs about .* \(a {side}x{side}x{side} tile") as info:
        check_worker_memory(_Workers(need // 2, need // 2), p, shape)
    assert "-ps 64 fits" in str(info.value) or "-ps 96 fits" in str(info.value)
    assert check_worker_memory(_Workers(need + 1), p, shape) == need
    assert check_worker_memory(_Workers(0), p, shape) is None  # no limit
    assert check_worker_memory(_Workers(1, gpu=True), p, shape) is None  # networks on the GPU
    assert memory_refusal(p, (16, 40, 40), 2**40) is None


# ------------------------------------------------------------------ paths sent to workers


def test_relative_paths_reach_workers_that_run_in_another_folder(net, tmp_path, monkeypatch):
    """Workers started in one folder, the command run with relative paths from another: the same outputs."""
    from distributed import Client, LocalCluster

    a, b = tmp_path / "workers_here", tmp_path / "user_here"
    a.mkdir()
    b.mkdir()
    make_mrc(b / "t.mrc", _volume())
    reference = detect(b / "t.mrc", tmp_path / "ref", segnet=str(net), **_pp())
    monkeypatch.chdir(a)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit="2GiB") as cl, Client(cl):
        monkeypatch.chdir(b)
        code = main(["-q", "detect", "t.mrc", "-m", str(net), "-o", "out", *PP,
                     "--scheduler-address", cl.scheduler_address])
    assert code == 0
    assert not any(a.iterdir())  # nothing landed where the workers run
    same_outputs(tmp_path / "ref", b / "out", name="t")
    assert len(reference.particles) > 0


def _pp() -> dict:
    return dict(chunks=(32,), halo=(16,), mask_threshold=0.5, center_threshold=0.1, remove_min_size=2,
                filter_outlier=False, check_center=True, center_min_distance=0.0, min_particle_size=0,
                min_score=0.0, connectivity=1, device="cpu")


# ------------------------------------------------------------------ the input


def _store_with(tmp_path: Path, name: str, data: np.ndarray) -> Path:
    return convert(data, tmp_path / f"{name}.zarr", chunks=16, voxel_size=10.0)


def test_nan_policy_zero_on_a_zarr_store_equals_the_store_with_zeros(net, tmp_path, capsys):
    data = _volume(5)
    clean = data.copy()
    clean[3, 4:9, 7] = 0.0
    _store_with(tmp_path, "clean", clean)
    store = _store_with(tmp_path, "nan", data)
    arr = zarr.open_array(str(store / "0"), mode="r+")
    block = arr[...]
    block[3, 4:9, 7] = np.nan
    block[3, 8, 7] = np.inf
    arr[...] = block

    code = main(["-q", "detect", str(store), "-m", str(net), "-o", str(tmp_path / "refused"), *FLAGS])
    assert code == 2
    assert "give `detect --nan-policy zero`" in one_line_error(capsys)

    assert main(["-q", "detect", str(tmp_path / "clean.zarr"), "-m", str(net), "-o", str(tmp_path / "a"),
                 *FLAGS]) == 0
    assert main(["-q", "detect", str(store), "-m", str(net), "-o", str(tmp_path / "b"), *FLAGS,
                 "--nan-policy", "zero"]) == 0
    same_outputs(tmp_path / "a", tmp_path / "b", name="clean", name_b="nan")
    assert np.isnan(zarr.open_array(str(store / "0"), mode="r")[3, 4, 7])  # the input is untouched


def test_anisotropic_voxel_size_is_kept_in_every_output(net, tmp_path):
    path = tmp_path / "aniso.mrc"
    with mrcfile.new(path) as m:
        m.set_data(_volume(2, (24, 40, 40)))
        m.voxel_size = (10.0, 10.0, 12.0)  # x, y, z
    with pytest.warns(UserWarning, match=r"anisotropic voxel size \(z, y, x\) = \(12, 10, 10\) Å"):
        res = detect(path, tmp_path / "o", segnet=str(net), **_pp())
    df = res.particles
    assert len(df) > 0
    assert np.allclose(df["z_angst"], df["z"] * 12.0) and np.allclose(df["x_angst"], df["x"] * 10.0)
    with mrcfile.open(tmp_path / "o" / "aniso_labels.mrc") as m:
        assert tuple(float(v) for v in (m.voxel_size.x, m.voxel_size.y, m.voxel_size.z)) == (10.0, 10.0, 12.0)
    ome = json.loads((tmp_path / "o" / "aniso_labels.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [12.0, 10.0, 10.0]
    assert read_run(tmp_path / "o", "aniso")["voxel_size_zyx_angst"] == [12.0, 10.0, 10.0]
    # -vs: one size on every axis, as asked
    res2 = detect(path, tmp_path / "o2", segnet=str(net), voxel_size=11.0, **_pp())
    assert np.allclose(res2.particles["z_angst"], res2.particles["z"] * 11.0)


def test_image_stack_gets_one_warning(tmp_path, recwarn):
    path = make_mrc(tmp_path / "stack.mrc", _volume())
    with mrcfile.open(path, mode="r+") as m:
        m.header.ispg = 0
    load(path)
    load(path)
    msgs = [str(w.message) for w in recwarn if "space group is 0" in str(w.message)]
    assert len(msgs) == 1 and "stack of images" in msgs[0]


# ------------------------------------------------------------------ runs


def test_one_run_record_per_tomogram_with_provenance(net, tmp_path):
    make_mrc(tmp_path / "a.mrc", _volume(1))
    make_mrc(tmp_path / "b.mrc", _volume(2))
    out = tmp_path / "o"
    assert main(["-q", "detect", str(tmp_path / "a.mrc"), "-m", str(net), "-o", str(out), *FLAGS]) == 0
    first = {p.name: p.read_bytes() for p in out.glob("a_*") if p.is_file() and p.name != "a_run.json"}
    assert main(["-q", "detect", str(tmp_path / "b.mrc"), "-m", str(net), "-o", str(out), *FLAGS]) == 0
    a, b = read_run(out, "a"), read_run(out, "b")
    assert a["name"] == "a" and b["name"] == "b"
    assert json.loads((out / "run.json").read_text())["name"] == "b"  # the folder's last run
    assert run_record_path(out, "a") == out / "a_run.json"
    for rec in (a, b):
        assert rec["command"].startswith("cryodet-dask ") or "detect" in rec["command"]
        assert rec["host"] and rec["date_utc"].endswith("+00:00")
        assert Path(rec["working_directory"]).is_absolute()
        assert rec["weights"] == [{"path": str(Path(net).resolve()),
                                   "sha256": hashlib.sha256(Path(net).read_bytes()).hexdigest()}]
        assert Path(rec["tomogram"]).is_absolute()
    # b's run left a's files and record alone; a again: nothing predicted, the same bytes
    assert {p.name: p.read_bytes() for p in out.glob("a_*") if p.is_file() and p.name != "a_run.json"} == first
    assert main(["-q", "detect", str(tmp_path / "a.mrc"), "-m", str(net), "-o", str(out), *FLAGS]) == 0
    again = read_run(out, "a")
    assert again["chunks_computed"] == 0 and again["chunks_skipped"] > 0
    assert {p.name: p.read_bytes() for p in out.glob("a_*") if p.is_file() and p.name != "a_run.json"} == first


def test_convert_twice_is_idempotent(tmp_path):
    src = make_mrc(tmp_path / "t.mrc", _volume())
    dst = convert(src, tmp_path / "t.zarr", chunks=16)
    before = {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()}
    assert convert(src, tmp_path / "t.zarr", chunks=16) == dst  # the same command again: nothing to do
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()} == before
    with pytest.raises(OutputExistsError):  # other settings: the user's store is not replaced silently
        convert(src, tmp_path / "t.zarr", chunks=8)
    assert main(["-q", "convert", str(src), str(tmp_path / "t.zarr"), "--chunks", "16"]) == 0


def test_run_in_a_thread_is_not_interrupted_by_the_watchdog(net, tmp_path):
    """The watchdog closes its own client only: a healthy threaded run in another thread is unaffected."""
    make_mrc(tmp_path / "t.mrc", _volume())
    errors: list[BaseException] = []

    def work() -> None:
        try:
            detect(tmp_path / "t.mrc", tmp_path / "o", segnet=str(net), **_pp())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=work)
    th.start()
    th.join(timeout=120)
    assert not errors and (tmp_path / "o" / "t_run.json").exists()


def test_missing_input_stays_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load(tmp_path / "nope.mrc")


def test_unknown_voxel_size_is_never_guessed(net, tmp_path, capsys):
    """No voxel size in the header and no -vs (issue 27, item 12): outputs in Å (TXT, STAR; the default
    formats) are refused in one line naming -vs and --formats mrc,zarr,csv, before any work; those
    formats run, with empty Å columns, and the run record says the voxel size is unknown; the weights'
    voxel size is reported, never compared with a guess; --rescale is refused.  Before: 14.08 Å was
    assumed with a warning and written into the STAR file."""
    path = tmp_path / "novs.mrc"
    with mrcfile.new(path) as m:
        m.set_data(_volume())  # no voxel size in the header
    from cryodet_dask import models

    torch.manual_seed(0)
    net10 = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"),
                                                        voxel_size=10.0)), tmp_path / "net10.pt")
    for fmt in ("txt", "star"):
        with pytest.raises(ParameterError, match=r"no voxel size in its header.*-vs/--voxel-size.*"
                                                 r"--formats mrc,zarr,csv"):
            detect(path, tmp_path / "o", segnet=str(net10), formats=("csv", fmt), **_pp())
    assert not (tmp_path / "o").exists()
    argv = ["detect", str(path), "-m", str(net10), "-o", str(tmp_path / "cli"), *FLAGS]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "-vs/--voxel-size" in line and "--formats mrc,zarr,csv" in line and "txt, star" in line
    assert not (tmp_path / "cli").exists()
    assert main([*argv, "--formats", "csv", "--rescale"]) == 2
    assert "--rescale needs it" in one_line_error(capsys)

    with pytest.warns(UserWarning, match="trained at 10 Å per voxel and the tomogram's voxel size is unknown"):
        res = detect(path, tmp_path / "o", segnet=str(net10), formats=("mrc", "zarr", "csv"), **_pp())
    assert res.voxel_size is None
    assert len(res.particles) > 0 and res.particles["x_angst"].isna().all()
    import pandas as pd

    csv = pd.read_csv(tmp_path / "o" / "novs_centers.csv")
    assert len(csv) == len(res.particles) and csv["x_angst"].isna().all() and csv["x"].notna().all()
    with mrcfile.open(tmp_path / "o" / "novs_labels.mrc") as m:
        assert float(m.voxel_size.x) in (0.0, 1.0)  # no physical size claimed
    record = json.loads((tmp_path / "o" / "novs_run.json").read_text())
    assert record["voxel_size_angst"] is None and record["voxel_size_source"] == "unknown"
    assert not (tmp_path / "o" / "novs_centers.star").exists() and not (tmp_path / "o" / "novs_centers.txt").exists()
    # with -vs the Å outputs go ahead, and the record names where the size came from
    res = detect(path, tmp_path / "vs", segnet=str(net10), voxel_size=10.0, **_pp())
    assert json.loads((tmp_path / "vs" / "novs_run.json").read_text())["voxel_size_source"] == "-vs/--voxel-size"
    assert np.allclose(res.particles["x_angst"], res.particles["x"] * 10.0)
