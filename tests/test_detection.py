"""End to end: detect on a small simulated tomogram, chunk invariance of the whole pipeline, outputs, API."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cryodet_dask.cli import main
from cryodet_dask.pipeline.detect import detect
from cryodet_dask.io import load
from cryodet_dask.simulation import simulate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    simulate(d, shape=(32, 96, 96), seed=5, overwrite=True)
    return d


def _run(sim, net, out, chunks):
    return detect(sim / "tomogram.mrc", out, segnet=str(net), chunks=(chunks,), device="cpu",
                  mask_threshold=0.5, center_threshold=0.1, remove_min_size=8, filter_outlier=False, min_particle_size=0, min_score=0.0, center_min_distance=0.0)


def test_outputs_and_chunk_invariance(sim, net, tmp_path):
    a = _run(sim, net, tmp_path / "a", 16)
    b = _run(sim, net, tmp_path / "b", 32)
    assert len(a.particles) > 0
    pd.testing.assert_frame_equal(a.particles, b.particles)  # the particle list does not depend on chunking
    assert np.array_equal(a.labels.compute(), b.labels.compute())
    names = {p.name for p in (tmp_path / "a").iterdir()}
    for f in ("tomogram_labels.mrc", "tomogram_centers.txt", "tomogram_centers.csv", "tomogram_labels.zarr",
              "run.json", "tomogram_prediction.zarr", "tomogram.zarr"):
        assert f in names, f
    assert any(n.endswith(".star") for n in names)
    assert not any(n.endswith(".partial") or n.startswith(".cryodet-pieces") for n in names)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["particles"] == len(a.particles)
    assert set(run["timings_s"]) == {"convert", "predict", "postprocess", "export"}
    assert run["voxel_size_angst"] == pytest.approx(10.0)
    csv = pd.read_csv(tmp_path / "a" / "tomogram_centers.csv")
    for col in ("id", "x", "y", "z", "x_angst", "y_angst", "z_angst", "n_voxels", "score", "mask_score"):
        assert col in csv.columns
    np.testing.assert_allclose(csv.x_angst, csv.x * 10.0)
    mrc_labels = load(tmp_path / "a" / "tomogram_labels.mrc").data.compute()
    assert np.array_equal(mrc_labels, a.labels.compute())
    assert int(mrc_labels.max()) == len(a.particles)


def test_rerun_reuses_completed_stages(sim, net, tmp_path):
    first = _run(sim, net, tmp_path, 32)
    again = _run(sim, net, tmp_path, 32)
    assert again.prediction.chunks_computed == 0 and again.prediction.chunks_skipped > 0
    pd.testing.assert_frame_equal(first.particles, again.particles)


def test_peak_memory_counts_only_the_run(sim, net, tmp_path):
    import resource

    big = np.ones(2 * 2**30 // 8)  # 2 GiB resident in this process before the run
    # the process really held them (the peak the run must not report)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 >= 2 * 2**30
    del big
    _run(sim, net, tmp_path, 32)
    peak = json.loads((tmp_path / "run.json").read_text())["peak_memory_mib"]
    if peak["since"] != "run start":
        pytest.skip("peak memory cannot be reset on this system (no /proc/self/clear_refs)")
    assert 0 < peak["driver"] < 1536  # the run itself (threads, torch) needs ~0.7 GiB


def test_array_input_and_temporary_output(sim, net):
    vol = load(sim / "tomogram.mrc").data.compute()
    res = detect(vol, segnet=str(net), chunks=(32,), device="cpu", voxel_size=10.0, mask_threshold=0.5,
                 remove_min_size=8, filter_outlier=False, min_particle_size=0, min_score=0.0, center_min_distance=0.0)
    assert res.files == {} and res.labels.shape == vol.shape
    assert len(res.particles) == int(res.labels.max().compute())


def test_cli_detect_seed_flags(sim, net, tmp_path, capsys):
    code = main(["-q", "detect", "-tomo", str(sim / "tomogram.mrc"), "-m", str(net), "-o", str(tmp_path),
                 "-ps", "48", "-mt", "0.5", "-rs", "8", "-filter_outlier", "false", "--cluster", "threads",
                 "--device", "cpu"])
    assert code == 0
    assert (tmp_path / "tomogram_centers.txt").read_text().startswith(
        "PositionX\tPositionY\tPositionZ\tVolumeX\tVolumeY\tVolumeZ\tOffsetFromFace")
    assert json.loads((tmp_path / "run.json").read_text())["parameters"]["filter_outlier"] is False


def test_cli_detect_particle_diameter_fusion_and_fragments(sim, net, tmp_path):
    # 60 Å at 10 Å per voxel: --center-min-distance 3, -rs round(pi/6 * 27) = 14 (not given); -rs wins when given
    base = ["-q", "detect", str(sim / "tomogram.mrc"), "-m", str(net), "-ps", "48", "-mt", "0.5",
            "-filter_outlier", "false", "--cluster", "threads", "--device", "cpu", "--min-particle-size", "5"]
    assert main([*base, "-o", str(tmp_path / "a"), "--particle-diameter", "60"]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    pp = run["postprocess_parameters"]
    assert (pp["center_min_distance"], pp["remove_min_size"], pp["min_particle_size"]) == (3.0, 14, 5)
    assert run["parameters"]["particle_diameter"] == 60.0
    csv = pd.read_csv(tmp_path / "a" / "tomogram_centers.csv")
    assert (csv.n_voxels >= 5).all()
    assert main([*base, "-o", str(tmp_path / "b"), "--particle-diameter", "60", "-rs", "8"]) == 0
    pp = json.loads((tmp_path / "b" / "run.json").read_text())["postprocess_parameters"]
    assert (pp["center_min_distance"], pp["remove_min_size"]) == (3.0, 8)


def test_bad_threshold_writes_nothing(sim, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(sim / "tomogram.mrc"), "-o", str(tmp_path / "o"), "-mt", "2"])
    assert exc.value.code == 2 and not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert "-mt/--mask-threshold" in err and err.count("\n") == 1
