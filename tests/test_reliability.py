"""Reliability of ``detect``: worker faults, interrupted runs, atomic outputs, bad input, a full disk.

Every run here uses a small simulated tomogram and a tiny random-weight
two-head network; "identical" means the final files are equal byte for byte
(MRC, TXT, CSV, STAR) and the Zarr label image has equal voxels and attributes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cryodet_dask import models
from cryodet_dask.cli import main
from cryodet_dask.pipeline import DetectParams
from cryodet_dask.pipeline.detect import detect
from cryodet_dask.errors import DiskSpaceError, ParameterError
from cryodet_dask.simulation import simulate

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
STEM = "tomogram"
FINAL = (f"{STEM}_labels.mrc", f"{STEM}_centers.txt", f"{STEM}_centers.csv", f"{STEM}_centers.star",
         f"{STEM}_labels.zarr")
CHUNK = 32  # = the halo given below: the smallest chunk the CLI accepts
#: post-processing settings that give particles with a random-weight network; an explicit halo keeps
#: the chunk grid independent of how the default halo is derived from the network
#: every post-processing parameter is explicit, so the cases do not depend on the shipped defaults
PP = dict(mask_threshold=0.5, center_threshold=0.1, remove_min_size=8, filter_outlier=False, halo=(CHUNK,),
          check_center=True, center_min_distance=0.0, min_particle_size=0, min_score=0.0, connectivity=1)
PP_FLAGS = ["-mt", "0.5", "-ct", "0.1", "-rs", "8", "--no-filter-outlier", "--device", "cpu", "--halo", str(CHUNK),
            "--check-center", "--center-min-distance", "0", "--min-particle-size", "0", "--min-score", "0",
            "--connectivity", "1"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    simulate(d, shape=(32, 128, 128), seed=5, overwrite=True)
    return d


@pytest.fixture(scope="module")
def reference(sim, net, tmp_path_factory):
    """An undisturbed run: the outputs every disturbed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    res = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu", **PP)
    assert len(res.particles) > 0
    return out


def _cli(sim, net, out, *extra):
    return ["detect", str(sim / "tomogram.mrc"), "-m", str(net), "-o", str(out), "-ps", str(CHUNK), *PP_FLAGS,
            *extra]


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in FINAL[:4]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    za, zb = zarr.open_group(str(a / FINAL[4]), mode="r"), zarr.open_group(str(b / FINAL[4]), mode="r")
    assert dict(za.attrs) == dict(zb.attrs)
    assert np.array_equal(za["0"][...], zb["0"][...])
    assert za["0"].dtype == zb["0"].dtype


def _done(out: Path) -> int:
    d = out / f".{STEM}_prediction.zarr.partial" / ".done"
    try:  # finished markers only: a marker being written is ".<key>.tmp", and a rerun does not count it
        return len([n for n in os.listdir(d) if not n.startswith(".")])
    except OSError:
        return 0


def _wait(pred, timeout=120.0, step=0.01):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(step)


def _spawn(argv, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "cryodet_dask", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _no_final_outputs(out: Path) -> None:
    names = set(os.listdir(out)) if out.exists() else set()
    assert not names & {*FINAL, "run.json", f"{STEM}_prediction.zarr"}, names


# ------------------------------------------------------------------ interrupted runs


def test_sigkill_of_the_process_tree_then_resume(sim, net, reference, tmp_path):
    """SIGKILL of detect and its LocalCluster workers mid-prediction; the rerun skips the done chunks."""
    out = tmp_path / "o"
    proc = _spawn(["-q", *_cli(sim, net, out, "--cluster", "local", "--workers", "2")], start_new_session=True)
    try:
        _wait(lambda: _done(out) >= 2 or proc.poll() is not None)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = _done(out)
    assert 2 <= done_at_kill < 16  # 1 x 4 x 4 chunks: the kill landed mid-prediction
    _no_final_outputs(out)
    time.sleep(1)  # let the orphaned worker processes of the killed group die

    rerun = _spawn(_cli(sim, net, out, "--cluster", "threads"))
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    run = json.loads((out / "run.json").read_text())
    assert run["chunks_skipped"] >= done_at_kill and run["chunks_computed"] == 16 - run["chunks_skipped"]
    assert f"skipped {run['chunks_skipped']}" in stdout
    assert_same_outputs(out, reference)
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # temporaries gone


@pytest.mark.parametrize("sig, code, line", [
    (signal.SIGINT, 130, "cryodet-dask: interrupted; run the same command again to resume"),
    # SLURM and PBS send SIGTERM at the walltime: the same kind of line, exit 143, resumable state
    (signal.SIGTERM, 143, "cryodet-dask: terminated (SIGTERM); run the same command again to resume"),
], ids=["sigint", "sigterm"])
def test_interrupt_mid_prediction_exits_with_one_line_and_resumes(sig, code, line, sim, net, reference, tmp_path,
                                                                  capsys):
    out = tmp_path / "o"
    proc = _spawn(_cli(sim, net, out, "--cluster", "threads"))
    _wait(lambda: _done(out) >= 1 or proc.poll() is not None)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == line
    done_at_stop = _done(out)
    _no_final_outputs(out)
    assert main(_cli(sim, net, out, "--cluster", "threads")) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["chunks_skipped"] == done_at_stop > 0
    assert f"skipped {done_at_stop}" in capsys.readouterr().out
    assert_same_outputs(out, reference)


def test_changed_parameters_rerun_only_the_stages_they_affect(sim, net, reference, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(reference, out)  # a finished run, as if made here
    for inter in (f"{STEM}.zarr",):  # the converted store records its source file; reconvert here once
        shutil.rmtree(out / inter)
    shutil.rmtree(out / f"{STEM}_prediction.zarr")
    first = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu", **PP)
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["convert"]["ran"] and first.prediction.chunks_computed == 16

    same = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu", **PP)
    s2 = json.loads((out / "run.json").read_text())["stages"]
    assert not s2["convert"]["ran"] and same.prediction.chunks_computed == 0
    assert same.prediction.chunks_skipped == 16
    assert_same_outputs(out, reference)

    # a post-processing parameter: prediction reused, outputs replaced
    changed = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu",
                     **{**PP, "mask_threshold": 0.6})
    s3 = json.loads((out / "run.json").read_text())["stages"]
    assert not s3["convert"]["ran"] and changed.prediction.chunks_computed == 0
    assert s3["predict"]["fingerprint"] == s2["predict"]["fingerprint"]
    assert s3["export"]["fingerprint"] != s2["export"]["fingerprint"]
    assert (out / FINAL[0]).read_bytes() != (reference / FINAL[0]).read_bytes()

    # the chunk shape: prediction recomputed (the store is replaced), the conversion reused
    rechunked = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(64,), device="cpu", **PP)
    s4 = json.loads((out / "run.json").read_text())["stages"]
    assert not s4["convert"]["ran"] and rechunked.prediction.chunks_computed == 4
    assert s4["predict"]["fingerprint"] != s2["predict"]["fingerprint"]


# ------------------------------------------------------------------ worker faults


def test_killed_workers_do_not_change_the_result(sim, net, reference, tmp_path):
    """SIGKILL one worker mid-inference and one mid-post-processing; Dask retries, the result is identical."""
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "o"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        pids_before = set(client.run(os.getpid).values())
        result: dict = {}

        def run():
            try:
                result["res"] = detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu",
                                       client=client, **PP)
            except BaseException as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

        th = threading.Thread(target=run)
        th.start()
        _wait(lambda: _done(out) >= 2 or not th.is_alive())
        killed = []
        if th.is_alive():
            pid = sorted(pids_before)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(("inference", _done(out), pid))

        def in_postprocess():
            return any(n.startswith(".cryodet-pieces-") and os.listdir(out / n)
                       for n in os.listdir(out)) or not th.is_alive()

        _wait(in_postprocess, step=0.005)
        if th.is_alive():
            alive = set(client.run(os.getpid).values()) - {k[2] for k in killed}
            pid = sorted(alive)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(("postprocess", None, pid))
        th.join(300)
        assert "error" not in result, result.get("error")
        _wait(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=60)
        pids_after = set(client.run(os.getpid).values())
    assert killed and killed[0][0] == "inference" and killed[0][1] < 16
    assert {k[2] for k in killed} <= pids_before and not {k[2] for k in killed} & pids_after  # restarted by nannies
    assert_same_outputs(out, reference)
    run = json.loads((out / "run.json").read_text())
    peak = run["peak_memory_mib"]
    assert peak["driver"] > 0 and len(peak["workers"]) == 2 and peak["workers_max"] > 0


# ------------------------------------------------------------------ atomic outputs


def test_stale_temporaries_are_removed(sim, net, reference, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / f".{STEM}_labels.mrc.partial").write_bytes(b"half a file")
    (out / f".{STEM}_centers.csv.partial").write_text("id,x\n1,")
    (out / f".{STEM}_labels.zarr.partial").mkdir()
    (out / ".cryodet-pieces-abc123").mkdir()
    (out / ".cryodet-pieces-abc123" / "0.0.0.npy").write_bytes(b"x")
    detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu", **PP)
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    assert_same_outputs(out, reference)


def test_failure_during_export_leaves_no_mixed_outputs(sim, net, reference, tmp_path, monkeypatch):
    """Outputs of an older run with other parameters are retired before new ones are written."""
    from cryodet_dask.exports import _export

    out = tmp_path / "o"
    shutil.copytree(reference, out)

    def broken(*a, **k):
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(_export, "write_centers_star", broken)
    with pytest.raises(OSError):
        detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu",
               **{**PP, "mask_threshold": 0.6})
    names = set(os.listdir(out))
    assert "run.json" not in names and f"{STEM}_centers.star" not in names
    assert (out / FINAL[0]).read_bytes() != (reference / FINAL[0]).read_bytes()  # the new labels, not the old
    assert not [n for n in names if n.endswith(".partial") and "prediction" not in n]
    monkeypatch.undo()
    detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(CHUNK,), device="cpu", **PP)
    assert_same_outputs(out, reference)


# ------------------------------------------------------------------ bad input


def _one_line_error(capsys, code, expected_code=2, *words):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.count("\n") == 1 and err.startswith("cryodet-dask"), err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def coarse_net(tmp_path_factory):
    """Weights 'trained' at 20 Å per voxel; the simulated tomogram has 10 Å."""
    torch.manual_seed(3)
    m = models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"), voxel_size=20.0))
    return models.save(m, tmp_path_factory.mktemp("coarse") / "coarse.pt")


def test_voxel_size_mismatch_warns_with_the_factor_and_offers_rescale(sim, coarse_net, tmp_path):
    with pytest.warns(UserWarning, match=r"factor 0\.50.*--rescale"):
        detect(sim / "tomogram.mrc", tmp_path / "o", segnet=str(coarse_net), chunks=(CHUNK,), device="cpu",
               formats=("csv",), **PP)


def test_rescale_predicts_on_the_weights_grid(sim, coarse_net, tmp_path, recwarn):
    out = tmp_path / "o"
    res = detect(sim / "tomogram.mrc", out, segnet=str(coarse_net), chunks=(CHUNK,), device="cpu", rescale=True,
                 **{**PP, "remove_min_size": 1})
    assert not [w for w in recwarn if "--rescale" in str(w.message)]
    run = json.loads((out / "run.json").read_text())
    assert run["rescale"]["factor"] == pytest.approx(0.5)
    assert run["rescale"]["predicted_shape_zyx"] == [16, 64, 64]  # the network saw 20 Å voxels
    assert res.labels.shape == (32, 128, 128)  # labels and centres on the tomogram's grid
    from cryodet_dask.io import load

    assert load(out / f"{STEM}_rescaled.zarr").voxel_size == pytest.approx(20.0)
    assert load(out / FINAL[0]).data.shape == (32, 128, 128) and load(out / FINAL[0]).voxel_size == pytest.approx(10.0)
    if len(res.particles):
        assert res.particles[["z", "y", "x"]].max().lt([32, 128, 128]).all()
    first = {n: (out / n).read_bytes() for n in FINAL[:4]}
    again = detect(sim / "tomogram.mrc", out, segnet=str(coarse_net), chunks=(CHUNK,), device="cpu", rescale=True,
                   **{**PP, "remove_min_size": 1})
    assert again.prediction.chunks_computed == 0  # the rescaled tomogram and its prediction are reused
    assert first == {n: (out / n).read_bytes() for n in FINAL[:4]}


def test_magnify_predicts_on_a_finer_grid_and_keeps_the_tomograms(sim, coarse_net, tmp_path, recwarn):
    """--magnify M is --rescale to a grid M times finer: with the weights at 20 Å, --rescale --magnify 1.5
    is --rescale with the same weights recorded at 20 / 1.5 Å, byte for byte."""
    fine = models.load(coarse_net)
    fine.config = fine.config.replace(voxel_size=20.0 / 1.5)
    fine_net = models.save(fine, tmp_path / "fine.pt")
    kw = dict(chunks=(CHUNK,), device="cpu", rescale=True, **{**PP, "remove_min_size": 1})
    a = detect(sim / "tomogram.mrc", tmp_path / "a", segnet=str(coarse_net), magnify=1.5, **kw)
    b = detect(sim / "tomogram.mrc", tmp_path / "b", segnet=str(fine_net), **kw)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["rescale"]["factor"] == pytest.approx(0.75) and run["parameters"]["magnify"] == 1.5
    assert run["rescale"]["network_voxel_size_angst"] == pytest.approx(20.0 / 1.5)
    assert a.labels.shape == (32, 128, 128)  # labels and centres on the tomogram's grid
    for name in FINAL[:4]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # without --rescale the magnification is relative to the tomogram's own grid
    c = detect(sim / "tomogram.mrc", tmp_path / "c", segnet=str(coarse_net), magnify=2.0, formats=("csv",),
               **{k: v for k, v in kw.items() if k != "rescale"})
    assert json.loads((tmp_path / "c" / "run.json").read_text())["rescale"]["factor"] == pytest.approx(2.0)
    assert c.labels.shape == (32, 128, 128)


def test_a_magnification_out_of_range_is_one_line(sim, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # refused by the parser: one line, exit status 2
        main(["detect", str(sim / "tomogram.mrc"), "-o", str(tmp_path / "d"), "--magnify", "5"])
    _one_line_error(capsys, exc.value.code, 2, "--magnify")
    assert not (tmp_path / "d").exists()
    with pytest.raises(ParameterError, match="magnify must be a number from 0.25 to 4"):
        DetectParams(magnify=0.1)


@pytest.mark.parametrize("factor", [0.5, 2.0, 0.7])
def test_resample_is_exact_on_linear_ramps_and_chunk_independent(factor):
    from cryodet_dask.resampling import resample

    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in (12, 20, 28)], indexing="ij")
    vol = 0.5 * z - 0.25 * y + 0.125 * x
    shape = tuple(int(round(n * factor)) for n in vol.shape)
    a = resample(vol, shape, factor, (5, 7, 9)).compute()
    b = resample(vol, shape, factor, shape).compute()
    np.testing.assert_array_equal(a, b)
    c = [(np.arange(n) + 0.5) / factor - 0.5 for n in shape]
    zz, yy, xx = np.meshgrid(*c, indexing="ij")
    expected = 0.5 * zz - 0.25 * yy + 0.125 * xx
    inner = tuple(slice(int(np.ceil(2 * factor + 3)), -int(np.ceil(2 * factor + 3))) for _ in shape)
    np.testing.assert_allclose(a[inner], expected[inner], atol=1e-4)


def test_weights_for_another_architecture(sim, net, tmp_path, capsys):
    payload = torch.load(net, weights_only=True)
    payload["config"]["channels"] = [4, 6, 16]
    bad = tmp_path / "other.pt"
    torch.save(payload, bad)
    out = tmp_path / "o"
    code = main(["detect", str(sim / "tomogram.mrc"), "-m", str(bad), "-o", str(out), "--cluster", "threads"])
    _one_line_error(capsys, code, 2, "weights do not match the architecture")
    assert not out.exists()


def test_pickled_code_in_a_checkpoint_is_not_run(sim, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "cryodet-dask-unet", "config": Evil()}, bad)
    out = tmp_path / "o"
    code = main(["detect", str(sim / "tomogram.mrc"), "-m", str(bad), "-o", str(out), "--cluster", "threads"])
    _one_line_error(capsys, code, 2, "not a readable network checkpoint")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("argv, flag", [
    (["-mt", "1.01"], "-mt/--mask-threshold"), (["-ct", "-0.5"], "-ct/--center-threshold"),
    (["-rs", "-1"], "-rs/--remove-min-size"), (["-dt", "-2"], "-dt/--distance-threshold"),
    (["-nn", "-1"], "-nn/--neighbor-number"), (["-ps", "-32"], "-ps/--chunks"),
])
def test_out_of_range_parameters(sim, net, tmp_path, capsys, argv, flag):
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(sim / "tomogram.mrc"), "-m", str(net), "-o", str(out), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and flag in err and err.count("\n") == 1
    assert not out.exists()


def test_chunk_smaller_than_the_halo(sim, net, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["detect", str(sim / "tomogram.mrc"), "-m", str(net), "-o", str(out), "-ps", "16", "--halo", "32",
                 "--cluster", "threads"])
    _one_line_error(capsys, code, 2, "-ps/--chunks 16,16,16", "halo 32,32,32", "125x")
    assert not out.exists()
    from cryodet_dask.pipeline import DetectParams, check_chunks
    from cryodet_dask.prediction import default_halo, resolve_models

    (spec,) = resolve_models(str(net))  # the default halo is the one prediction uses
    halo = default_halo(getattr(spec, "halo", (spec.receptive_field - 1) // 2), spec.pool_factor)
    assert check_chunks(DetectParams(segnet=str(net), chunks=(halo,))) == (halo,) * 3
    with pytest.raises(ParameterError, match=f"halo {halo},{halo},{halo}"):
        check_chunks(DetectParams(segnet=str(net), chunks=(halo - 4, halo, halo)))


def test_batch_outputs_stay_inside_the_output_folder(sim, net, tmp_path, capsys):
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    a, b = tmp_path / "a.mrc", tmp_path / "b.mrc"
    shutil.copy(sim / "tomogram.mrc", a)
    shutil.copy(sim / "tomogram.mrc", b)
    (out / "a").symlink_to(elsewhere)  # a planted link must not redirect the outputs
    code = main(["detect", str(a), str(b), "-m", str(net), "-o", str(out), "-ps", "32", "--halo", "32",
                 "--cluster", "threads"])
    _one_line_error(capsys, code, 2, "outside")
    assert not os.listdir(elsewhere)


# ------------------------------------------------------------------ full disk


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_preflight_refuses_a_disk_too_small(sim, net, tmp_path, capsys):
    with _tmpfs(tmp_path / "small", "512k") as small:
        out = small / "o"
        code = main(_cli(sim, net, out, "--cluster", "threads"))
        err = _one_line_error(capsys, code, 3, "not enough space", "needs up to", "MiB free")
        assert "prediction 4.0 MiB" in err  # 2 maps x 4 bytes x 32*128*128 voxels
        assert not out.exists()


def test_disk_filling_up_during_the_run(sim, net, tmp_path, capsys, monkeypatch):
    """A real ENOSPC (a 3 MiB tmpfs) after the pre-flight check passed: one line, nothing complete-looking."""
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 40))  # something else fills it
    with _tmpfs(tmp_path / "small", "3m") as small:
        out = small / "o"
        code = main(["-q", *_cli(sim, net, out, "--cluster", "threads")])
        err = _one_line_error(capsys, code, 3, "needs up to")
        assert "disk full" in err
        _no_final_outputs(out)
        assert not [n for n in os.listdir(out) if n.endswith(".partial") and "prediction" not in n]
        assert not [n for n in os.listdir(out) if n.startswith(".cryodet-pieces")]


def test_disk_space_error_from_a_worker_write(sim, net, tmp_path, monkeypatch):
    """ENOSPC raised inside a prediction task (mocked) becomes DiskSpaceError with the estimate."""
    from cryodet_dask.prediction import _predict

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_predict, "_store_tiles", full)
    with pytest.raises(DiskSpaceError, match="needs up to"):
        detect(sim / "tomogram.mrc", tmp_path / "o", segnet=str(net), chunks=(CHUNK,), device="cpu", **PP)
    _no_final_outputs(tmp_path / "o")
