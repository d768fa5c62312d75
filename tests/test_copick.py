"""copick projects (issue 14, item 4): ``detect --copick`` reads a run's tomogram from a local copick project
and writes the picks and the instance labels back into its overlay, in copick's own layout.

The project is built here in a temporary folder as copick 1.31 lays one out (a JSON config, the tomogram
as OME-Zarr 0.4 in Zarr v2 under ``ExperimentRuns/RUN/VoxelSpacing10.000/wbp.zarr``); no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from cryodet_dask import detect, read_particles
from cryodet_dask.cli import main

from test_faults import FLAGS, one_line_error

torch.set_num_threads(1)


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(16, 40, 40)).astype(np.float32)


def _project(tmp: Path, runs=("TS_01", "TS_02"), objects=("ribosome",)) -> Path:
    overlay, static = tmp / "overlay", tmp / "static"
    for i, run in enumerate(runs):
        store = static / "ExperimentRuns" / run / "VoxelSpacing10.000" / "wbp.zarr"
        group = zarr.open_group(str(store), mode="w", zarr_format=2)
        arr = group.create_array("0", shape=(16, 40, 40), chunks=(16, 40, 40), dtype="float32")
        arr[...] = _volume(i + 1)
        group.attrs.update({"multiscales": [{
            "version": "0.4", "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [10.0] * 3}]}]}]})
    config = tmp / "copick.json"
    config.write_text(json.dumps({
        "name": "test", "version": "1.31.0",
        "pickable_objects": [{"name": o, "is_particle": True, "label": k + 1, "radius": 120}
                             for k, o in enumerate(objects)],
        "overlay_root": f"local://{overlay}", "static_root": f"local://{static}",
    }))
    return config


def test_detect_reads_a_copick_run_and_writes_picks_and_labels_back(net, tmp_path, capsys):
    config = _project(tmp_path)
    out = tmp_path / "o"
    assert main(["-q", "detect", "--copick", str(config), "--run", "TS_02", "-m", str(net), "-o", str(out),
                 *FLAGS]) == 0
    # the same tomogram through the plain path gives the same particles
    store = tmp_path / "static" / "ExperimentRuns" / "TS_02" / "VoxelSpacing10.000" / "wbp.zarr"
    plain = detect(store, tmp_path / "plain", segnet=str(net), chunks=(32,), halo=(16,), device="cpu",
                   mask_threshold=0.5, center_threshold=0.1, remove_min_size=2, filter_outlier=False,
                   center_min_distance=0.0, min_particle_size=0, min_score=0.0)
    assert len(plain.particles) > 0
    run_dir = tmp_path / "overlay" / "ExperimentRuns" / "TS_02"
    picks = run_dir / "Picks" / "cryodet-dask_0_ribosome.json"
    doc = json.loads(picks.read_text())
    assert doc["pickable_object_name"] == "ribosome" and doc["run_name"] == "TS_02" and doc["user_id"] == "cryodet-dask"
    assert len(doc["points"]) == len(plain.particles)
    back = read_particles(picks, voxel_size=10.0)  # Å in the file, voxels here
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), plain.particles[["x", "y", "z"]].to_numpy(),
                               atol=1e-3)
    seg = run_dir / "InstanceSegmentations" / "10.000_cryodet-dask_0_ribosome.zarr"
    group = zarr.open_group(str(seg), mode="r")
    assert group.metadata.zarr_format == 2  # what copick (zarr < 3) reads
    assert group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [10.0] * 3
    np.testing.assert_array_equal(group["0"][...], plain.labels.compute())
    # nothing was written into the static (read-only) root
    assert not (tmp_path / "static" / "ExperimentRuns" / "TS_02" / "Picks").exists()


def test_all_runs_one_folder_each(net, tmp_path):
    config = _project(tmp_path)
    out = tmp_path / "o"
    assert main(["-q", "detect", "--copick", str(config), "--copick-runs", "all", "-m", str(net), "-o", str(out),
                 *FLAGS]) == 0
    for run in ("TS_01", "TS_02"):
        assert (out / run / f"{run}_centers.csv").is_file()
        n = len(pd.read_csv(out / run / f"{run}_centers.csv"))
        doc = json.loads((tmp_path / "overlay" / "ExperimentRuns" / run / "Picks" / "cryodet-dask_0_ribosome.json")
                         .read_text())
        assert len(doc["points"]) == n


@pytest.mark.parametrize("extra, message", [
    (["--copick", "{tmp}/nope.json", "--run", "TS_01"], "copick config not found"),
    (["--copick", "{config}", "--run", "TS_09"], "no run 'TS_09' (runs: TS_01, TS_02)"),
    (["--copick", "{config}", "--run", "TS_01", "--voxel-spacing", "7.5"], "has no VoxelSpacing7.500/wbp.zarr"),
    (["--copick", "{config}", "--run", "TS_01", "--copick-object", "proteasome"], "no pickable object 'proteasome'"),
    (["--copick", "{config}"], "say which runs"),
    (["--run", "TS_01"], "--run/--copick-runs need --copick"),
    (["--copick", "{config}", "--run", "TS_01", "--formats", "star"], "keep csv in --formats"),
])
def test_bad_copick_input_is_one_line_before_any_work(net, tmp_path, capsys, extra, message):
    config = _project(tmp_path)
    extra = [e.format(tmp=tmp_path, config=config) for e in extra]
    out = tmp_path / "o"
    assert main(["-q", "detect", *extra, "-m", str(net), "-o", str(out), *FLAGS]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists() and not (tmp_path / "overlay").exists()


def test_a_remote_root_is_refused(tmp_path):
    from cryodet_dask.errors import ParameterError
    from cryodet_dask.particles._copick import CopickProject

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"overlay_root": "s3://bucket/project", "pickable_objects": []}))
    with pytest.raises(ParameterError, match="not on a local filesystem"):
        CopickProject.open(cfg)
