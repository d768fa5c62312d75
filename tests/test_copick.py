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


def _store(store: Path, data: np.ndarray, *, scale: float | None = 10.0, arrays=("0",)) -> None:
    """A tomogram as copick writes one: OME-Zarr 0.4 in Zarr v2, '/' as the dimension separator
    (``scale=None``: no multiscales metadata; several ``arrays``: the same data under each name)."""
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    for name in arrays:
        arr = group.create_array(name, shape=data.shape, chunks=data.shape, dtype="float32",
                                 chunk_key_encoding={"name": "v2", "separator": "/"})
        arr[...] = data
    if scale is not None:
        group.attrs.update({"multiscales": [{
            "version": "0.4", "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
            "datasets": [{"path": arrays[0], "coordinateTransformations": [{"type": "scale", "scale": [scale] * 3}]}]}]})


def _project(tmp: Path, runs=("TS_01", "TS_02"), objects=("ribosome",), **store) -> Path:
    overlay, static = tmp / "overlay", tmp / "static"
    for i, run in enumerate(runs):
        _store(static / "ExperimentRuns" / run / "VoxelSpacing10.000" / "wbp.zarr", _volume(i + 1), **store)
    config = tmp / "copick.json"
    config.write_text(json.dumps({
        "name": "test", "version": "1.31.0",
        "pickable_objects": [{"name": o, "is_particle": True, "label": k + 1, "radius": 120}
                             for k, o in enumerate(objects)],
        "overlay_root": f"local://{overlay}", "static_root": f"local://{static}",
    }))
    return config


def _plain(data: np.ndarray, net, tmp: Path):
    """What detect finds in ``data`` through the plain (non-copick) path."""
    src = tmp / "plain_in.zarr"
    _store(src, data)
    return detect(src, tmp / "plain_out", segnet=str(net), chunks=(32,), halo=(16,), device="cpu",
                  mask_threshold=0.5, center_threshold=0.1, remove_min_size=2, filter_outlier=False,
                  center_min_distance=0.0, min_particle_size=0, min_score=0.0, voxel_size=10.0)


def _picks(tmp: Path, run: str, name: str = "cryodet-dask_0_ribosome") -> dict:
    return json.loads((tmp / "overlay" / "ExperimentRuns" / run / "Picks" / f"{name}.json").read_text())


def _xyz(doc: dict) -> np.ndarray:
    return np.array([[p["location"][a] for a in "xyz"] for p in doc["points"]]).reshape(-1, 3)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


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
    # OME-NGFF 0.4's "/" separator: with "." copick's fsspec store reads every voxel as 0 (issue 27, item 5)
    assert json.loads((seg / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    assert any(p.is_file() and p.relative_to(seg / "0").as_posix().count("/") == 2 for p in (seg / "0").rglob("*"))
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


# ------------------------------------------------------------------ issue 27: copick projects shared with others


@pytest.mark.parametrize("runs", [
    ["--copick-runs", "TS_01,TS_01,TS_02"],
    ["--copick-runs", "TS_02,TS_02, TS_01"],
    ["--run", "TS_01", "--run", "TS_01", "--run", "TS_02"],
])
def test_a_run_named_twice_is_processed_once_under_its_own_name(net, tmp_path, capsys, runs):
    """Item 1: TS_02's tomogram was processed under the name TS_01 (its picks replaced TS_01's, TS_02 got none)."""
    config = _project(tmp_path)
    out = tmp_path / "o"
    assert main(["-q", "detect", "--copick", str(config), *runs, "-m", str(net), "-o", str(out), *FLAGS]) == 0
    assert "given more than once" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["TS_01", "TS_02"]
    for i, run in enumerate(("TS_01", "TS_02")):
        plain = _plain(_volume(i + 1), net, tmp_path / f"plain_{run}")
        doc = _picks(tmp_path, run)
        assert doc["run_name"] == run and len(doc["points"]) == len(plain.particles) > 0
        np.testing.assert_allclose(_xyz(doc), plain.particles[["x_angst", "y_angst", "z_angst"]].to_numpy(), atol=1e-3)
        csv = pd.read_csv(out / run / f"{run}_centers.csv")
        np.testing.assert_allclose(csv[["x", "y", "z"]].to_numpy(), plain.particles[["x", "y", "z"]].to_numpy(),
                                   atol=1e-4)
        seg = tmp_path / "overlay" / "ExperimentRuns" / run / "InstanceSegmentations" / "10.000_cryodet-dask_0_ribosome.zarr"
        np.testing.assert_array_equal(zarr.open_group(str(seg), mode="r")["0"][...], plain.labels.compute())


@pytest.mark.parametrize("form", ["files", "globs", "tomo-flag"])
def test_every_batch_form_with_duplicates_keeps_each_tomogram_under_its_name(net, tmp_path, capsys, form):
    """Item 1, the other batch forms: a file named twice (./a, a/../a, a glob that matches it again) is processed
    once, and every output folder holds its own tomogram's particles."""
    from cryodet_dask.testing import make_mrc

    d = tmp_path / "in"
    d.mkdir()
    for i, n in enumerate(("a", "b")):
        make_mrc(d / f"{n}.mrc", _volume(i + 1), voxel_size=10.0)
    argv = {"files": [str(d / "a.mrc"), str(d / ".." / "in" / "a.mrc"), str(d / "b.mrc")],
            "globs": [str(d / "*.mrc"), str(d / "a.mrc"), str(d / "[ab].mrc")],
            "tomo-flag": ["-tomo", str(d / "a.mrc"), "-tomo", str(d / "b.mrc"), "-tomo", str(d / "a.mrc")]}[form]
    out = tmp_path / "o"
    assert main(["-q", "detect", *argv, "-m", str(net), "-o", str(out), *FLAGS]) == 0
    assert "given more than once" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "b"]
    for i, n in enumerate(("a", "b")):
        plain = _plain(_volume(i + 1), net, tmp_path / f"plain_{n}")
        csv = pd.read_csv(out / n / f"{n}_centers.csv")
        assert len(csv) == len(plain.particles) > 0
        np.testing.assert_allclose(csv[["x", "y", "z"]].to_numpy(), plain.particles[["x", "y", "z"]].to_numpy(),
                                   atol=1e-4)


@pytest.mark.parametrize("existing", ["Picks/user2_0_ribosome.json",
                                      "InstanceSegmentations/10.000_user2_0_ribosome.zarr/.zgroup"])
def test_another_users_picks_or_segmentation_are_never_replaced(net, tmp_path, capsys, existing):
    """Item 2: --copick-user user2 replaced user2's own picks without a word."""
    config = _project(tmp_path)
    theirs = tmp_path / "overlay" / "ExperimentRuns" / "TS_01" / existing
    theirs.parent.mkdir(parents=True)
    theirs.write_text('{"their": "work"}')
    before = _tree(tmp_path / "overlay")
    out = tmp_path / "o"
    argv = ["-q", "detect", "--copick", str(config), "--run", "TS_01", "--copick-user", "user2", "-m", str(net),
            "-o", str(out), *FLAGS]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert existing.split("/.zgroup")[0] in line and "--overwrite" in line and "--copick-session" in line
    assert _tree(tmp_path / "overlay") == before and not out.exists()  # refused before any work
    # a new session writes beside them
    assert main([*argv, "--copick-session", "1"]) == 0
    assert (theirs.read_text()) == '{"their": "work"}'
    assert len(_picks(tmp_path, "TS_01", "user2_1_ribosome")["points"]) > 0
    # --overwrite replaces them
    assert main([*argv, "-o", str(tmp_path / "o2"), "--overwrite"]) == 0
    assert len(_picks(tmp_path, "TS_01", "user2_0_ribosome")["points"]) > 0
    seg = tmp_path / "overlay" / "ExperimentRuns" / "TS_01" / "InstanceSegmentations" / "10.000_user2_0_ribosome.zarr"
    assert zarr.open_group(str(seg), mode="r")["0"].shape == (16, 40, 40)


def test_a_rerun_leaves_its_own_identical_copick_outputs_alone(net, tmp_path, capsys):
    """Item 2 without a false alarm: the same batch again finds its own outputs complete and exits 0, nothing
    replaced; once someone changes the picks, the rerun refuses."""
    config = _project(tmp_path)
    argv = ["-q", "detect", "--copick", str(config), "--copick-runs", "all", "-m", str(net), "-o",
            str(tmp_path / "o"), *FLAGS]
    assert main(argv) == 0
    before = _tree(tmp_path / "overlay")
    rec = json.loads((tmp_path / "o" / "TS_01" / "TS_01_run.json").read_text())["copick"]
    assert len(rec["written"]) == 2 and rec["run"] == "TS_01"
    assert main(argv) == 0
    assert _tree(tmp_path / "overlay") == before
    picks = tmp_path / "overlay" / "ExperimentRuns" / "TS_02" / "Picks" / "cryodet-dask_0_ribosome.json"
    picks.write_text(picks.read_text().replace('"score"', '"score" ', 1))  # edited since (by someone)
    capsys.readouterr()
    assert main(argv) == 2
    assert "TS_02" in one_line_error(capsys)


@pytest.mark.parametrize("extra, message", [
    (["--run", "TS_01", "--copick-user", "../../../../escaped"], "copick user '../../../../escaped' is not a copick-safe"),
    (["--run", "TS_01", "--copick-session", "0/../../x"], "copick session '0/../../x'"),
    (["--run", "TS_01", "--copick-session", ""], "copick session ''"),
    (["--run", "TS_01", "--copick-object", "ribo some/../x"], "copick object 'ribo some/../x'"),
    (["--run", "../static/ExperimentRuns/TS_01"], "copick run '../static/ExperimentRuns/TS_01'"),
    (["--copick-runs", "TS_01,TS 02"], "copick run 'TS 02'"),
    (["--run", "TS_01", "--tomo-type", "../wbp"], "copick tomogram type '../wbp'"),
])
def test_names_that_are_not_copick_safe_are_refused_before_any_work(net, tmp_path, capsys, extra, message):
    """Item 6: names became paths (--copick-user ../../../../escaped wrote outside the overlay)."""
    config = _project(tmp_path, objects=("ribosome", "ribo some/../x"))
    before = _tree(tmp_path)
    out = tmp_path / "o"
    assert main(["-q", "detect", "--copick", str(config), *extra, "-m", str(net), "-o", str(out), *FLAGS]) == 2
    line = one_line_error(capsys)
    assert message in line and "letters, digits, '-' and '_'" in line
    assert _tree(tmp_path) == before and not out.exists() and not (tmp_path / "overlay").exists()


def test_a_tomogram_whose_voxel_size_disagrees_with_its_folder_follows_the_folder(net, tmp_path, capsys):
    """Item 7: a 14.08 Å tomogram in VoxelSpacing10.000 was used silently and its picks written at 14.08 Å."""
    config = _project(tmp_path, runs=("TS_01",), scale=14.08)
    out = tmp_path / "o"
    assert main(["detect", "--copick", str(config), "--run", "TS_01", "-m", str(net), "-o", str(out), *FLAGS]) == 0
    err = capsys.readouterr().err
    assert "14.08" in err and "VoxelSpacing10.000" in err and "folder" in err
    csv = pd.read_csv(out / "TS_01_centers.csv")
    doc = _picks(tmp_path, "TS_01")
    assert doc["voxel_spacing"] == 10.0 and len(doc["points"]) == len(csv) > 0
    np.testing.assert_allclose(_xyz(doc), csv[["x", "y", "z"]].to_numpy() * 10.0, atol=1e-3)
    record = json.loads((out / "TS_01_run.json").read_text())
    assert record["voxel_size_angst"] == 10.0
    assert record["copick"]["voxel_size_used_angst"] == 10.0
    assert record["copick"]["tomogram_voxel_size_angst"] == pytest.approx(14.08)
    assert "14.08" in record["copick"]["voxel_size_source"]
    # -vs that contradicts the folder is refused, before any work
    assert main(["-q", "detect", "--copick", str(config), "--run", "TS_01", "-vs", "14.08", "-m", str(net),
                 "-o", str(tmp_path / "o2"), *FLAGS]) == 2
    assert "disagrees with the copick voxel spacing 10" in one_line_error(capsys)
    assert not (tmp_path / "o2").exists()


def test_a_zarr_tomogram_without_multiscales(net, tmp_path, capsys):
    """Item 8: a group without multiscales was refused with "say which one to use", and copick mode had no flag."""
    config = _project(tmp_path, runs=("TS_01",), scale=None)
    out = tmp_path / "o"
    assert main(["-q", "detect", "--copick", str(config), "--run", "TS_01", "-m", str(net), "-o", str(out),
                 *FLAGS]) == 0
    plain = _plain(_volume(1), net, tmp_path / "plain")
    np.testing.assert_allclose(_xyz(_picks(tmp_path, "TS_01")),
                               plain.particles[["x_angst", "y_angst", "z_angst"]].to_numpy(), atol=1e-3)
    # two arrays: refused in one line that names the flag, then read as named
    _store(tmp_path / "static" / "ExperimentRuns" / "TS_01" / "VoxelSpacing10.000" / "wbp.zarr", _volume(1),
           scale=None, arrays=("a", "b"))
    argv = ["-q", "detect", "--copick", str(config), "--run", "TS_01", "-m", str(net), "-o", str(tmp_path / "o2"),
            "--copick-session", "2", *FLAGS]
    assert main(argv) == 2
    assert "--copick-array" in one_line_error(capsys) and not (tmp_path / "o2").exists()
    assert main([*argv, "--copick-array", "c"]) == 2
    assert "has no array 'c'" in one_line_error(capsys)
    assert main([*argv, "--copick-array", "b"]) == 0
    np.testing.assert_allclose(_xyz(_picks(tmp_path, "TS_01", "cryodet-dask_2_ribosome")),
                               plain.particles[["x_angst", "y_angst", "z_angst"]].to_numpy(), atol=1e-3)


@pytest.mark.parametrize("change, message", [
    ({"overlay_root": None}, "overlay_root must be a path or a local:// URL (a non-empty string), got None"),
    ({"overlay_root": 5}, "overlay_root must be a path or a local:// URL (a non-empty string), got 5"),
    ({"overlay_root": ""}, "overlay_root must be"),
    ({"overlay_root": ["a"]}, "overlay_root must be"),
    ({"static_root": 7}, "static_root must be a path or a local:// URL (a non-empty string), got 7"),
    ({"overlay_root": "local://"}, "names no folder"),
    ({"pickable_objects": "ribosome"}, "pickable_objects must be a list"),
    ({"pickable_objects": [{"label": 1}]}, "pickable_objects[0] has no name"),
])
def test_a_bad_copick_config_value_is_one_line(net, tmp_path, capsys, change, message):
    """Item 9: overlay_root null ended in an AssertionError traceback; 5 was taken as a relative path."""
    config = _project(tmp_path)
    doc = json.loads(config.read_text())
    doc.update(change)
    config.write_text(json.dumps(doc))
    out = tmp_path / "o"
    assert main(["-q", "detect", "--copick", str(config), "--run", "TS_01", "-m", str(net), "-o", str(out),
                 *FLAGS]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists() and not (tmp_path / "overlay").exists() and not (tmp_path / "5").exists()


def test_picks_carry_the_instance_id_of_their_label(net, tmp_path):
    """Low item: every point had instance_id 0; now each is the label of its particle in the segmentation."""
    config = _project(tmp_path, runs=("TS_01",))
    assert main(["-q", "detect", "--copick", str(config), "--run", "TS_01", "-m", str(net), "-o",
                 str(tmp_path / "o"), *FLAGS]) == 0
    doc = _picks(tmp_path, "TS_01")
    seg = tmp_path / "overlay" / "ExperimentRuns" / "TS_01" / "InstanceSegmentations" / "10.000_cryodet-dask_0_ribosome.zarr"
    labels = zarr.open_group(str(seg), mode="r")["0"][...]
    ids = [p["instance_id"] for p in doc["points"]]
    assert sorted(ids) == sorted(set(np.unique(labels)) - {0}) and min(ids) > 0
    for p in doc["points"]:  # the pick is its label's centroid (x, y, z in Å at 10 Å)
        zyx = np.argwhere(labels == p["instance_id"]).mean(axis=0)
        np.testing.assert_allclose([p["location"][a] for a in "zyx"], zyx * 10.0, atol=1e-3)


def test_all_runs_skips_a_run_without_the_tomogram_and_says_so_in_the_exit_status(net, tmp_path, capsys):
    """Low item: one run without a tomogram aborted the whole --copick-runs all batch."""
    from cryodet_dask.cli.detect import SKIPPED_RUNS_EXIT

    config = _project(tmp_path)
    (tmp_path / "overlay" / "ExperimentRuns" / "TS_00" / "Picks").mkdir(parents=True)  # a run with picks only
    out = tmp_path / "o"
    assert SKIPPED_RUNS_EXIT not in (0, 2)
    assert main(["-q", "detect", "--copick", str(config), "--copick-runs", "all", "-m", str(net), "-o", str(out),
                 *FLAGS]) == SKIPPED_RUNS_EXIT
    err = capsys.readouterr().err
    assert "'TS_00' skipped" in err and "1 copick run(s) skipped" in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["TS_01", "TS_02"]
    for run in ("TS_01", "TS_02"):
        assert len(_picks(tmp_path, run)["points"]) == len(pd.read_csv(out / run / f"{run}_centers.csv"))
    # named explicitly, the same run is an error before any work
    assert main(["-q", "detect", "--copick", str(config), "--copick-runs", "TS_00,TS_01", "-m", str(net), "-o",
                 str(tmp_path / "o2"), *FLAGS]) == 2
    assert "run 'TS_00' has no VoxelSpacing10.000/wbp.zarr" in one_line_error(capsys)


def test_a_multi_species_model_writes_one_pickable_object_per_species(tmp_path, capsys):
    from cryodet_dask.models import UNet3D, UNetConfig, save
    from cryodet_dask.species import SpeciesTable

    torch.manual_seed(1)
    cfg = UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center", "species"),
                     species=SpeciesTable.of(["ribosome", "proteasome"]), voxel_size=10.0)
    ckpt = save(UNet3D(cfg), tmp_path / "sp.pt")
    flags = ["--cluster", "threads", "--device", "cpu", "-ps", "16", "-mt", "0", "-ct", "0", "-rs", "0",
             "--min-particle-size", "0", "--min-score", "0", "--center-min-distance", "0", "--engine", "torch"]
    # a species the project's config lacks: one line listing the objects it has, nothing written
    lacking = _project(tmp_path / "a", objects=("ribosome",))
    assert main(["-q", "detect", "--copick", str(lacking), "--run", "TS_01", "-m", str(ckpt),
                 "-o", str(tmp_path / "a" / "o"), *flags]) == 2
    assert "no pickable object 'proteasome'" in capsys.readouterr().err
    assert not (tmp_path / "a" / "overlay").exists()
    config = _project(tmp_path / "b", objects=("ribosome", "proteasome"))
    out = tmp_path / "b" / "o"
    assert main(["-q", "detect", "--copick", str(config), "--run", "TS_01", "-m", str(ckpt), "-o", str(out),
                 *flags]) == 0
    table = pd.read_csv(out / "TS_01_centers.csv")
    labels = zarr.open_group(str(out / "TS_01_labels.zarr"), mode="r")["0"][...]
    run_dir = tmp_path / "b" / "overlay" / "ExperimentRuns" / "TS_01"
    total = 0
    for species in ("ribosome", "proteasome"):
        doc = json.loads((run_dir / "Picks" / f"cryodet-dask_0_{species}.json").read_text())
        mine = table[table["class"] == species]
        assert doc["pickable_object_name"] == species and len(doc["points"]) == len(mine)
        assert sorted(p["instance_id"] for p in doc["points"]) == sorted(mine["id"])
        seg = zarr.open_group(str(run_dir / "InstanceSegmentations" / f"10.000_cryodet-dask_0_{species}.zarr"),
                              mode="r")["0"][...]
        np.testing.assert_array_equal(seg, np.where(np.isin(labels, mine["id"]), labels, 0))
        total += len(doc["points"])
    assert total == len(table) > 0
