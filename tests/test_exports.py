"""Exports of detections: TXT, CSV, STAR, MRC and OME-Zarr labels; the postprocess command."""

from __future__ import annotations

import dask
import dask.array as da
import mrcfile
import numpy as np
import pandas as pd
import pytest
import zarr

from cryodet_dask.errors import OutputExistsError, ParameterError
from cryodet_dask.exports import (
    TXT_HEADER,
    export,
    label_dtype,
    write_centers_csv,
    write_centers_star,
    write_centers_txt,
    write_labels_mrc,
    write_labels_zarr,
)
from cryodet_dask.io import load
from cryodet_dask.postprocessing import postprocess, postprocess_reference
from cryodet_dask.postprocessing._synthetic import blob_maps


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


@pytest.fixture(scope="module")
def maps():
    return blob_maps((20, 30, 40), 25, radius=(2.0, 4.0), seed=4)


@pytest.fixture
def det(maps):
    m, c, _ = maps
    with dask.config.set(scheduler="sync"):
        return postprocess(da.from_array(m, chunks=(8, 16, 16)), da.from_array(c, chunks=(8, 16, 16)),
                           remove_min_size=4, filter_outlier=False, mask_threshold=0.1, center_threshold=0.1, min_particle_size=0, min_score=0.0, center_min_distance=0.0)


def test_txt_matches_the_seed_format(det, tmp_path):
    path = write_centers_txt(det, tmp_path / "c.txt", 12.5)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(TXT_HEADER)
    assert len(lines) == len(det.centers) + 1
    rows = np.array([[float(v) for v in line.split("\t")] for line in lines[1:]])
    idx = np.rint(det.centers).astype(int)
    np.testing.assert_array_equal(rows[:, 3:6], idx[:, ::-1])  # VolumeX/Y/Z: x is the last array axis
    np.testing.assert_allclose(rows[:, 0:3], idx[:, ::-1] * 12.5)
    assert (rows[:, 6] == 0).all()
    with pytest.raises(ParameterError):
        write_centers_txt(det, tmp_path / "d.txt", None)


def test_csv_columns_and_values(det, tmp_path):
    path = write_centers_csv(det, tmp_path / "c.csv", 2.0)
    df = pd.read_csv(path)
    assert list(df.columns) == ["id", "x", "y", "z", "x_angst", "y_angst", "z_angst", "n_voxels", "score",
                                "mask_score"]
    np.testing.assert_allclose(df[["z", "y", "x"]].to_numpy(), det.centers, rtol=1e-5)
    np.testing.assert_allclose(df["score"], det.center_scores, rtol=1e-5)  # the centre-map peak: ranks
    np.testing.assert_allclose(df["mask_score"], det.scores, rtol=1e-5)  # mean mask probability
    np.testing.assert_allclose(df["x_angst"], det.centers[:, 2] * 2.0, rtol=1e-5)
    np.testing.assert_array_equal(df["n_voxels"], det.n_voxels)
    assert df["id"].tolist() == list(range(1, len(det.centers) + 1))


def test_star_is_relion5_particles(det, tmp_path):
    path = write_centers_star(det, tmp_path / "p.star", 10.0, (20, 30, 40), "TS_01")
    text = path.read_text().splitlines()
    assert "data_particles" in text and "loop_" in text
    names = [line.split()[0][1:] for line in text if line.startswith("_rln")]
    assert names == ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
                     "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst",
                     "rlnAutopickFigureOfMerit"]
    rows = [line.split() for line in text if line.startswith("TS_01")]
    assert len(rows) == len(det.centers)
    vals = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_allclose(vals[:, 0:3], det.centers[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(vals[:, 3:6], (det.centers[:, ::-1] - [20, 15, 10]) * 10.0, atol=1e-2)
    np.testing.assert_allclose(vals[:, 6], det.center_scores, rtol=1e-5)  # the score, for thresholding later
    # plain centres: no figure of merit column
    plain = write_centers_star(det.centers, tmp_path / "plain.star", 10.0, (20, 30, 40), "TS_01").read_text()
    assert "rlnAutopickFigureOfMerit" not in plain
    with pytest.raises(ParameterError):
        write_centers_star(det, tmp_path / "q.star", 10.0, (20, 30, 40), "two words")


def test_label_dtype_choice():
    assert label_dtype(10) == np.uint16
    assert label_dtype(70000) == np.float32
    assert label_dtype(70000, fmt="zarr") == np.uint32
    assert label_dtype(100, "int16") == np.int16
    with pytest.raises(ParameterError):
        label_dtype(40000, "int16")
    with pytest.raises(ParameterError):
        label_dtype(5, "uint32")


@pytest.mark.parametrize("dtype,expected", [("auto", np.uint16), ("float32", np.float32), ("int16", np.int16)])
def test_labels_mrc_roundtrip(det, tmp_path, dtype, expected):
    path = write_labels_mrc(det, tmp_path / "l.mrc", voxel_size=7.5, origin_zyx=(1.0, 2.0, 3.0), dtype=dtype)
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == expected
        np.testing.assert_array_equal(mrc.data.astype(np.int64), det.labels.compute())
        assert float(mrc.voxel_size.x) == pytest.approx(7.5)
        assert (float(mrc.header.origin.z), float(mrc.header.origin.x)) == (1.0, 3.0)
    assert not list(tmp_path.glob(".*partial"))


def test_labels_zarr_is_an_ome_label_image(det, tmp_path):
    path = write_labels_zarr(det, tmp_path / "l.zarr", voxel_size_zyx=(4.0, 5.0, 6.0))
    tomo = load(path)
    np.testing.assert_array_equal(tomo.data.compute(), det.labels.compute())
    assert tomo.data.dtype == np.uint16
    assert tomo.voxel_size_zyx == (4.0, 5.0, 6.0)
    attrs = zarr.open_group(str(path)).attrs
    assert "image-label" in attrs["ome"] and attrs["cryodet"]["n_labels"] == len(det.centers)


def test_export_writes_everything_atomically(det, tmp_path):
    written = export(det, tmp_path / "out", "tomo", 10.0)
    assert set(written) == {"mrc", "txt", "csv", "star", "zarr"}
    assert all(p.exists() for p in written.values())
    with pytest.raises(OutputExistsError):
        export(det, tmp_path / "out", "tomo", 10.0, formats=("csv",))
    export(det, tmp_path / "out", "tomo", 10.0, formats=("csv",), overwrite=True)
    assert not list((tmp_path / "out").glob(".*partial"))
    with pytest.raises(ParameterError):
        export(det, tmp_path / "out2", "tomo", 10.0, formats=("png",))


def _prediction_store(path, m, c):
    g = zarr.open_group(str(path), mode="w")
    g.create_array("mask", data=m, chunks=(8, 16, 16))
    g.create_array("center", data=c, chunks=(8, 16, 16))
    g.attrs["cryodet"] = {"voxel_size": 8.0}
    return path


def test_postprocess_command(maps, tmp_path):
    from cryodet_dask.cli import main

    m, c, _ = maps
    store = _prediction_store(tmp_path / "pred.zarr", m, c)
    rc = main(["-q", "postprocess", str(store), "-o", str(tmp_path / "out"), "-mt", "0.2", "-rs", "5",
               "-check_center", "false", "-filter_outlier", "true", "-nn", "1", "-dt", "12", "-ct", "0.1",
               "--min-particle-size", "0", "--min-score", "0", "--center-min-distance", "0"])
    assert rc == 0
    ref = postprocess_reference(m, c, mask_threshold=0.2, remove_min_size=5, check_center=False,
                                neighbor_number=1, distance_threshold=12.0, filter_outlier=True,
                                center_threshold=0.1, min_particle_size=0, min_score=0.0, center_min_distance=0.0)
    with mrcfile.open(tmp_path / "out" / "pred_labels.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, ref.labels)
        assert float(mrc.voxel_size.x) == pytest.approx(8.0)
    df = pd.read_csv(tmp_path / "out" / "pred_centers.csv")
    np.testing.assert_allclose(df[["z", "y", "x"]].to_numpy(), ref.centers, rtol=1e-5)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # scratch removed


def test_postprocess_command_fusion_and_fragment_flags(maps, tmp_path):
    from cryodet_dask.cli import main

    m, c, _ = maps
    store = _prediction_store(tmp_path / "pred.zarr", m, c)
    rc = main(["-q", "postprocess", str(store), "-o", str(tmp_path / "out"), "--center-min-distance", "3.5",
               "--min-particle-size", "6", "-rs", "5", "--no-filter-outlier", "--chunks", "7"])
    assert rc == 0
    ref = postprocess_reference(m, c, center_min_distance=3.5, min_particle_size=6, remove_min_size=5,
                                filter_outlier=False)
    with mrcfile.open(tmp_path / "out" / "pred_labels.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, ref.labels)
    df = pd.read_csv(tmp_path / "out" / "pred_centers.csv")
    np.testing.assert_allclose(df["score"], ref.center_scores, rtol=1e-6)
    # --particle-diameter 56 Å at 8 Å per voxel: D = 3.5 voxels, -rs = round(pi/6 * 3.5^3) = 22
    rc = main(["-q", "postprocess", str(store), "-o", str(tmp_path / "pd"), "--particle-diameter", "56",
               "--no-filter-outlier", "--formats", "mrc"])
    assert rc == 0
    ref = postprocess_reference(m, c, center_min_distance=3.5, remove_min_size=22, filter_outlier=False)
    with mrcfile.open(tmp_path / "pd" / "pred_labels.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, ref.labels)
    # explicit flags win over the diameter
    rc = main(["-q", "postprocess", str(store), "-o", str(tmp_path / "pd2"), "--particle-diameter", "56",
               "-rs", "5", "--no-filter-outlier", "--formats", "mrc"])
    ref = postprocess_reference(m, c, center_min_distance=3.5, remove_min_size=5, filter_outlier=False)
    with mrcfile.open(tmp_path / "pd2" / "pred_labels.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, ref.labels)


@pytest.mark.parametrize("argv", [["--center-min-distance", "-1"], ["--center-min-distance", "nan"],
                                  ["--center-min-distance", "inf"], ["--min-particle-size", "-2"],
                                  ["--particle-diameter", "0"], ["--particle-diameter", "200"]])
def test_postprocess_command_bad_fusion_values_write_nothing(maps, tmp_path, capsys, argv):
    from cryodet_dask.cli import main

    m, c, _ = maps
    store = tmp_path / "pred.zarr"
    g = zarr.open_group(str(store), mode="w")  # no voxel size in this store
    g.create_array("mask", data=m, chunks=(8, 16, 16))
    g.create_array("center", data=c, chunks=(8, 16, 16))
    try:
        code = main(["postprocess", str(store), "-o", str(tmp_path / "out"), *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "out").exists()
    if argv[0] == "--particle-diameter" and argv[1] == "200":
        assert "voxel size" in err[0]


def test_postprocess_command_rejects_bad_values(maps, tmp_path, capsys):
    from cryodet_dask.cli import main

    m, c, _ = maps
    store = _prediction_store(tmp_path / "pred.zarr", m, c)
    with pytest.raises(SystemExit) as exc:
        main(["postprocess", str(store), "-o", str(tmp_path / "out"), "-mt", "1.5"])
    assert exc.value.code != 0
    assert main(["postprocess", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "o")]) != 0
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [True, False])
def test_label_image_follows_ome_ngff(net, tmp_path, keep):
    """The label image names its tomogram by a path that resolves (NGFF image-label.source.image, relative
    to the label group), only where that image stays, and declares no averaging for its pyramid."""
    import json

    from cryodet_dask import detect
    from cryodet_dask.testing import make_mrc

    vol = np.random.default_rng(3).normal(size=(16, 40, 40)).astype(np.float32)
    make_mrc(tmp_path / "t.mrc", vol)
    out = tmp_path / "o"
    detect(tmp_path / "t.mrc", out, segnet=str(net), chunks=(32,), halo=(16,), device="cpu",
           keep_intermediate=keep, min_particle_size=0, min_score=0.0)
    ome = json.loads((out / "t_labels.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["multiscales"][0]["type"] == "nearest"
    if keep:
        source = ome["image-label"]["source"]["image"]
        assert source == "../t.zarr"
        assert ((out / "t_labels.zarr") / source).resolve() == (out / "t.zarr").resolve()
        image = json.loads((out / "t.zarr" / "zarr.json").read_text())["attributes"]["ome"]
        assert image["multiscales"][0]["type"] == "mean"  # intensities are averaged
    else:  # the converted tomogram was removed: no source is claimed
        assert "source" not in ome["image-label"] and not (out / "t.zarr").exists()


def test_label_image_of_a_zarr_input_names_that_store(net, tmp_path):
    import json

    from cryodet_dask import convert, detect

    vol = np.random.default_rng(4).normal(size=(16, 40, 40)).astype(np.float32)
    store = convert(vol, tmp_path / "data" / "tomo.zarr", chunks=16, voxel_size=10.0)
    out = tmp_path / "results" / "run1"
    detect(store, out, segnet=str(net), chunks=(32,), halo=(16,), device="cpu", formats=("zarr", "csv"),
           min_particle_size=0, min_score=0.0)
    source = json.loads((out / "tomo_labels.zarr" / "zarr.json").read_text())["attributes"]["ome"][
        "image-label"]["source"]["image"]
    assert ((out / "tomo_labels.zarr") / source).resolve() == store.resolve()
