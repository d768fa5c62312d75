"""Tests of cryodet_dask.annotations: coordinate readers and block-wise painting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryodet_dask.annotations import label_map, paint_spheres, read_coordinates, write_label_map
from cryodet_dask.errors import InputError, ParameterError

ZYX = np.array([[5.0, 10.0, 20.0], [12.0, 30.0, 8.0], [20.0, 20.0, 33.5]])


def test_read_txt_csv_star_agree(tmp_path):
    np.savetxt(tmp_path / "c.txt", ZYX[:, ::-1], header="x y z")  # TXT: x y z
    pd.DataFrame({"class": ["a", "b", "a"], "x": ZYX[:, 2], "y": ZYX[:, 1], "z": ZYX[:, 0],
                  "phi": [0, 10, 20], "theta": [0, 30, 40], "psi": [1, 2, 3]}).to_csv(tmp_path / "c.csv", index=False)
    star = ["", "data_particles", "", "loop_", "_rlnTomoName #1", "_rlnCoordinateX #2", "_rlnCoordinateY #3",
            "_rlnCoordinateZ #4", "_rlnAngleRot #5", "_rlnAngleTilt #6", "_rlnAnglePsi #7"]
    star += [f"TS_01 {x} {y} {z} 0 0 0" for z, y, x in ZYX] + ["TS_02 1 1 1 0 0 0", ""]
    (tmp_path / "c.star").write_text("\n".join(star))
    t_txt = read_coordinates(tmp_path / "c.txt")
    t_csv = read_coordinates(tmp_path / "c.csv")
    t_star = read_coordinates(tmp_path / "c.star", tomogram_name="TS_01")
    for t in (t_txt, t_csv, t_star):
        np.testing.assert_allclose(t.zyx, ZYX)
    assert t_csv.classes == ["a", "b", "a"] and t_csv.angles.shape == (3, 3)
    assert len(read_coordinates(tmp_path / "c.star")) == 4


def test_angstrom_and_centred_star(tmp_path):
    pd.DataFrame({"x_angstrom": [100.0], "y_angstrom": [200.0], "z_angstrom": [50.0]}).to_csv(tmp_path / "a.csv",
                                                                                            index=False)
    np.testing.assert_allclose(read_coordinates(tmp_path / "a.csv", voxel_size=10).zyx, [[5, 20, 10]])
    with pytest.raises(ParameterError, match="voxel size"):
        read_coordinates(tmp_path / "a.csv")
    star = "data_\nloop_\n_rlnCenteredCoordinateXAngst\n_rlnCenteredCoordinateYAngst\n" \
           "_rlnCenteredCoordinateZAngst\n0 -100 50\n"
    (tmp_path / "r5.star").write_text(star)
    t = read_coordinates(tmp_path / "r5.star", voxel_size=10, shape=(20, 40, 60))
    np.testing.assert_allclose(t.zyx, [[15, 10, 30]])


def test_bad_tables(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_coordinates(tmp_path / "none.csv")
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="no x, y, z coordinate"):
        read_coordinates(tmp_path / "bad.csv")
    (tmp_path / "two.txt").write_text("1 2\n3 4\n")
    with pytest.raises(InputError, match="three columns"):
        read_coordinates(tmp_path / "two.txt")


def test_paint_spheres_volume_and_nearest_centre():
    lab = paint_spheres((32, 32, 32), np.array([[16.0, 16, 16]]), 5.0)
    assert lab.max() == 1
    assert abs(int((lab == 1).sum()) - 4 / 3 * np.pi * 125) < 0.1 * 4 / 3 * np.pi * 125
    zz, yy, xx = np.indices(lab.shape)
    d2 = (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2
    np.testing.assert_array_equal(lab == 1, d2 <= 25)
    two = paint_spheres((8, 8, 20), np.array([[4.0, 4, 6], [4.0, 4, 11]]), 4.0)
    assert two[4, 4, 8] == 1 and two[4, 4, 9] == 2  # overlap split by the nearest centre


def test_label_map_blockwise_equals_whole(tmp_path):
    from cryodet_dask.annotations import ParticleTable
    from cryodet_dask.io import load

    rng = np.random.default_rng(0)
    zyx = rng.uniform(0, [24, 40, 36], size=(25, 3))
    table = ParticleTable(zyx=zyx, angles=None, classes=None, source="mem")
    whole = paint_spheres((24, 40, 36), zyx, 4.5)
    lazy = label_map((24, 40, 36), table, radius=4.5, chunks=(7, 11, 13))
    assert lazy.numblocks == (4, 4, 3)
    np.testing.assert_array_equal(lazy.compute(), whole)
    out = write_label_map(tmp_path / "l.mrc", (24, 40, 36), table, radius=4.5, voxel_size=10.0, chunks=(8, 16, 16))
    back = load(out)
    np.testing.assert_array_equal(back.data.compute(), whole)
    assert back.voxel_size == pytest.approx(10.0)


def test_template_painting_matches_simulator_masks():
    from cryodet_dask.annotations import ParticleTable
    from cryodet_dask.simulation import simulate_arrays

    sim = simulate_arrays(shape=(32, 64, 64), n_particles=4, n_membranes=0, seed=3)
    tab = sim.particles
    one = tab[tab["class"] == tab["class"].iloc[0]]
    table = ParticleTable(zyx=one[["z", "y", "x"]].to_numpy(float), angles=one[["phi", "theta", "psi"]].to_numpy(float),
                          classes=None, source="sim")
    lab = label_map(sim.labels.shape, table, template=str(one["class"].iloc[0]), voxel_size=sim.config.voxel_size,
                    chunks=16).compute()
    for k, pid in enumerate(one["id"], start=1):
        truth = sim.labels == pid
        painted = lab == k
        iou = (truth & painted).sum() / max((truth | painted).sum(), 1)
        assert iou > 0.9


def test_cli_labels(tmp_path):
    from cryodet_dask.cli import main
    from cryodet_dask.io import load
    from cryodet_dask.testing import make_mrc

    make_mrc(tmp_path / "t.mrc", np.zeros((16, 32, 32), np.float32), voxel_size=10.0)
    np.savetxt(tmp_path / "c.txt", [[10, 12, 8], [20, 20, 8]])
    assert main(["-q", "labels", str(tmp_path / "c.txt"), str(tmp_path / "l.mrc"), "--tomogram",
                 str(tmp_path / "t.mrc"), "--radius-angstrom", "30"]) == 0
    lab = load(tmp_path / "l.mrc").data.compute()
    assert lab.shape == (16, 32, 32) and set(np.unique(lab)) == {0, 1, 2}
    assert lab[8, 12, 10] == 1 and lab[8, 20, 20] == 2
    assert main(["labels", str(tmp_path / "c.txt"), str(tmp_path / "m.mrc"), "--radius", "3"]) != 0


def test_several_tomograms_without_a_name_warn(tmp_path, caplog):
    star = ["data_particles", "loop_", "_rlnTomoName", "_rlnCoordinateX", "_rlnCoordinateY", "_rlnCoordinateZ",
            "TS_01 1 2 3", "TS_02 1 1 1"]
    (tmp_path / "c.star").write_text("\n".join(star) + "\n")
    with caplog.at_level("WARNING", logger="cryodet_dask"):
        assert len(read_coordinates(tmp_path / "c.star")) == 2
    assert "2 tomograms (TS_01, TS_02)" in caplog.text and "--tomogram-name" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cryodet_dask"):
        assert len(read_coordinates(tmp_path / "c.star", tomogram_name="TS_02")) == 1
    assert "tomograms" not in caplog.text
