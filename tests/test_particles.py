"""cryodet_dask.particles: every particle file other tools wrote, and round trips through every writable format.

The files in ``shared/data/particle_lists/`` were written by RELION, the CZ cryoET Data
Portal's fixtures, copick, IMOD, STOPGAP, TomoMan and TARDIS.  Each test takes its
expected row count and first/last coordinates from the file itself with plain Python
(a hand-rolled STAR loop reader, csv, json, struct for IMOD), independently of the
reader under test.
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryodet_dask.errors import CryodetError, InputError, ParameterError
from cryodet_dask.particles import READ_FORMATS, WRITE_FORMATS, TomogramInfo, read_particles, write_particles

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "particle_lists"
FIX = SHARED / "cryoet_data_portal_fixtures"
R5 = SHARED / "relion5_project"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")


# ------------------------------------------------------------------ independent plain-Python readers

def star_loop(path: Path, block: str) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of ``data_<block>``'s loop, read line by line."""
    lines = path.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.strip() == f"data_{block}")
    while lines[i].strip() != "loop_":
        i += 1
    i += 1
    cols = []
    while i < len(lines) and (lines[i].strip().startswith("_") or not lines[i].strip()):
        if lines[i].strip():
            cols.append(lines[i].split()[0][1:])
        elif cols and i + 1 < len(lines) and not lines[i + 1].strip().startswith("_"):
            i += 1
            break
        i += 1
    rows = []
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("data_"):
            break
        if s and not s.startswith("#"):
            rows.append(s.split())
        elif rows and not s:
            break
        i += 1
    return cols, rows


def col(cols: list[str], rows: list[list[str]], name: str) -> list[float]:
    k = cols.index(name)
    return [float(r[k]) for r in rows]


def imod_points(path: Path) -> list[tuple[float, float, float]]:
    """Points of every CONT chunk of an IMOD model (big-endian: psize, flags, time, surf, then x y z floats)."""
    data = path.read_bytes()
    pts, k = [], data.find(b"CONT")
    while k >= 0:
        n = struct.unpack(">i", data[k + 4:k + 8])[0]
        vals = struct.unpack(f">{3 * n}f", data[k + 20:k + 20 + 12 * n])
        pts += [tuple(vals[j:j + 3]) for j in range(0, len(vals), 3)]
        k = data.find(b"CONT", k + 20 + 12 * n)
    return pts


def tomograms_star() -> dict[str, tuple[float, float, float, float, float]]:
    cols, rows = star_loop(R5 / "Tomograms/job_tomo/tomograms.star", "global")
    out = {}
    for r in rows:
        g = dict(zip(cols, r))
        out[g["rlnTomoName"]] = (float(g["rlnTomoSizeX"]), float(g["rlnTomoSizeY"]), float(g["rlnTomoSizeZ"]),
                                 float(g["rlnTomoTiltSeriesPixelSize"]), float(g["rlnTomoTomogramBinning"]))
    return out


def check_first_last(df: pd.DataFrame, expected: list[tuple[float, float, float]]) -> None:
    assert len(df) == len(expected)
    for row, exp in ((0, expected[0]), (-1, expected[-1])):
        np.testing.assert_allclose(df[["x", "y", "z"]].to_numpy()[row], exp, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ the CZ cryoET Data Portal fixtures

@needs_shared
def test_relion3_star():
    cols, rows = star_loop(FIX / "relion_3_star.star", "")
    exp = list(zip(*(col(cols, rows, f"rlnCoordinate{a}") for a in "XYZ")))
    df = read_particles(FIX / "relion_3_star.star")
    check_first_last(df, exp)
    assert df.attrs["format"] == "relion3" and df.attrs["unit"] == "voxel"
    np.testing.assert_allclose(df[["rot", "tilt", "psi"]].iloc[0], [float(rows[0][cols.index(n)]) for n in
                                                                    ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")])
    # rlnMicrographName selection, with or without the extension
    sel = [r for r in rows if r[cols.index("rlnMicrographName")] == "tomo_2.tomostar"]
    assert len(read_particles(FIX / "relion_3_star.star", tomogram_name="tomo_2")) == len(sel)
    assert len(read_particles(FIX / "relion_3_star.star", tomogram_name="tomo_2.tomostar")) == len(sel)


@needs_shared
def test_relion4_star_unbinned_pixels_need_the_binning():
    cols, rows = star_loop(FIX / "relion_4_star.star", "particles")
    exp = list(zip(*(col(cols, rows, f"rlnCoordinate{a}") for a in "XYZ")))
    with pytest.raises(ParameterError, match="binning"):
        read_particles(FIX / "relion_4_star.star")
    check_first_last(read_particles(FIX / "relion_4_star.star", binning=1), exp)
    df = read_particles(FIX / "relion_4_star.star", binning=2)
    check_first_last(df, [tuple(v / 2 for v in e) for e in exp])
    assert set(df["tomo_name"]) == {r[cols.index("rlnTomoName")] for r in rows}
    assert df.attrs["format"] == "relion4"


@needs_shared
def test_stopgap_star():
    cols, rows = star_loop(FIX / "stopgap_star.star", "stopgap_motivelist")
    exp = list(zip(*(col(cols, rows, f"orig_{a}") for a in "xyz")))
    df = read_particles(FIX / "stopgap_star.star")
    check_first_last(df, exp)
    np.testing.assert_allclose(df["score"], col(cols, rows, "score"))
    assert df.attrs["format"] == "stopgap"


@needs_shared
def test_tomoman_star():
    cols, rows = star_loop(FIX / "tomoman_relion_star.star", "")
    exp = list(zip(*(col(cols, rows, f"rlnCoordinate{a}") for a in "XYZ")))
    df = read_particles(FIX / "tomoman_relion_star.star")
    check_first_last(df, exp)
    n1 = sum(r[cols.index("rlnTomoName")] == "grid_1_lamella1_pos2" for r in rows)
    assert len(read_particles(FIX / "tomoman_relion_star.star", tomogram_name="grid_1_lamella1_pos2")) == n1


@pytest.mark.parametrize("name,delim,header", [("points.csv", ",", False), ("points_tab_delim.csv", "\t", False),
                                               ("points_with_header.csv", ",", True),
                                               ("points_with_header_pipe_delim.csv", "|", True)])
@needs_shared
def test_plain_csv(name, delim, header):
    with open(FIX / name, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=delim) if r]
    if header:
        rows = rows[1:]
    exp = [tuple(float(v) for v in r[:3]) for r in rows]
    df = read_particles(FIX / name)
    check_first_last(df, exp)
    assert df.attrs["unit"] == "voxel"


@needs_shared
def test_tardis_csv_in_angstrom():
    with open(FIX / "tardis.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == ["X [A]", "Y [A]", "Z [A]"]
    exp = [tuple(float(v) / 2.0 for v in r[1:4]) for r in rows[1:]]
    with pytest.raises(ParameterError, match="voxel_size"):
        read_particles(FIX / "tardis.csv")
    df = read_particles(FIX / "tardis.csv", voxel_size=2.0)
    check_first_last(df, exp)
    np.testing.assert_allclose(df["x_angst"].iloc[-1], float(rows[-1][1]))
    assert df.attrs["format"] == "tardis"


@pytest.mark.parametrize("name", ["copick.json", "copick_instance.json"])
@needs_shared
def test_copick_json(name):
    from cryodet_dask.particles._angles import relion_to_matrices

    doc = json.loads((FIX / name).read_text())
    exp = [tuple(p["location"][a] / 10.0 for a in "xyz") for p in doc["points"]]
    df = read_particles(FIX / name, voxel_size=10.0)
    check_first_last(df, exp)
    assert set(df["class"]) == {doc["pickable_object_name"]}
    for k in (0, -1):  # the angles give back the file's rotation matrix
        m = np.asarray(doc["points"][k]["transformation_"])[:3, :3]
        np.testing.assert_allclose(relion_to_matrices(df[["rot", "tilt", "psi"]].to_numpy()[k]), m[None], atol=1e-9)


@needs_shared
def test_copick_angles_match_the_relion_fixture():
    """copick.json holds the RELION 3 fixture's first particle orientation (90, 45, 180): same rotation."""
    from cryodet_dask.particles._angles import relion_to_matrices

    df = read_particles(FIX / "copick.json", voxel_size=1.0)
    np.testing.assert_allclose(relion_to_matrices(df[["rot", "tilt", "psi"]].to_numpy()[0]),
                               relion_to_matrices([90, 45, 180]), atol=1e-9)


@pytest.mark.parametrize("name", ["points.mod", "oriented_points.mod"])
@needs_shared
def test_imod_model(name):
    exp = imod_points(FIX / name)
    df = read_particles(FIX / name)
    check_first_last(df, exp)
    assert df.attrs["format"] == "imod"


# ------------------------------------------------------------------ the RELION 5 project (centred Å)

def _expected_centred(path: Path) -> list[tuple[float, float, float]]:
    """pixel = centred Å / rlnTomoTiltSeriesPixelSize + rlnTomoSize / 2, then / binning."""
    block = "particles"
    cols, rows = star_loop(path, block)
    tomos = tomograms_star()
    out = []
    for r in rows:
        g = dict(zip(cols, r))
        sx, sy, sz, ps, b = tomos[g["rlnTomoName"]]
        out.append(tuple((float(g[f"rlnCenteredCoordinate{a}Angst"]) / ps + s / 2.0) / b
                         for a, s in zip("XYZ", (sx, sy, sz))))
    return out


@pytest.mark.parametrize("rel", ["Picks/job_picks/particles.star", "Refine3D/job_refine/run_it050_data.star",
                                 "Class3D/job_class3d/run_it025_data.star"])
@needs_shared
def test_relion5_centred_angstrom(rel):
    exp = _expected_centred(R5 / rel)
    df = read_particles(R5 / rel)  # tomograms.star found through the optimisation set beside the file
    check_first_last(df, exp)
    assert df.attrs["unit"] == "centred_angstrom"
    # the same with the tomograms.star given explicitly, and one tomogram selected
    df2 = read_particles(R5 / rel, tomogram=R5 / "Tomograms/job_tomo/tomograms.star", tomogram_name="TS_02")
    assert len(df2) == sum(1 for e, n in zip(exp, df["tomo_name"]) if n == "TS_02")


@needs_shared
def test_relion5_blank_line_after_labels_is_not_zero_rows():
    """The bug of the issue: RELION's run_it050_data.star has a blank line after the column labels."""
    cols, rows = star_loop(R5 / "Refine3D/job_refine/run_it050_data.star", "particles")
    assert len(rows) == 5
    assert len(read_particles(R5 / "Refine3D/job_refine/run_it050_data.star")) == len(rows)


@needs_shared
def test_relion5_centred_needs_the_tomogram_size(tmp_path):
    p = tmp_path / "particles.star"
    p.write_text((R5 / "Picks/job_picks/particles.star").read_text())
    with pytest.raises(ParameterError, match="--tomogram"):
        read_particles(p)
    # with a tomogram shape and voxel size instead: Å / voxel size + shape / 2
    cols, rows = star_loop(p, "particles")
    df = read_particles(p, tomogram=TomogramInfo(shape=(44, 136, 84), voxel_size=10.52), tomogram_name="TS_01")
    first = [float(rows[0][cols.index(f"rlnCenteredCoordinate{a}Angst")]) for a in "XYZ"]
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [first[0] / 10.52 + 42, first[1] / 10.52 + 68,
                                                             first[2] / 10.52 + 22])
    with pytest.raises(ParameterError, match="tomogram_name"):
        read_particles(p, tomogram=TomogramInfo(shape=(44, 136, 84), voxel_size=10.52))


PARTICLE_FILES = {"relion_3_star.star", "relion_4_star.star", "stopgap_star.star", "tomoman_relion_star.star",
                  "points.csv", "points_tab_delim.csv", "points_with_header.csv",
                  "points_with_header_pipe_delim.csv", "tardis.csv", "copick.json", "copick_instance.json",
                  "points.mod", "oriented_points.mod", "particles.star", "run_it050_data.star",
                  "run_it025_data.star"}


@needs_shared
def test_every_other_file_is_refused_in_one_line():
    """Files that are not particle lists (masks, job and tomogram STARs, licences) give a CryodetError, never 0 rows."""
    others = [p for p in sorted(SHARED.rglob("*")) if p.is_file() and p.name not in PARTICLE_FILES
              and p.name != "README.md"]
    assert others
    for p in others:
        with pytest.raises(CryodetError) as exc:
            read_particles(p)
        assert "\n" not in str(exc.value)
    listed = {p.name for p in SHARED.rglob("*") if p.is_file()}
    assert PARTICLE_FILES <= listed


# ------------------------------------------------------------------ errors

def test_public_api():
    import cryodet_dask as cd

    assert cd.read_particles is read_particles and cd.write_particles is write_particles


def test_ragged_and_empty_and_nan(tmp_path):
    star = "data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n_rlnTomoName #4\n"
    (tmp_path / "short.star").write_text(star + "1 2 3 a\n4 5 6\n7 8 9 b\n")
    with pytest.raises(InputError, match="line 9 has 3 values for 4 columns"):
        read_particles(tmp_path / "short.star")
    (tmp_path / "empty.star").write_text(star)
    with pytest.raises(InputError, match="no particles"):
        read_particles(tmp_path / "empty.star")
    assert len(read_particles(tmp_path / "empty.star", allow_empty=True)) == 0
    (tmp_path / "empty.json").write_text('{"pickable_object_name": "ribosome", "unit": "angstrom", "points": []}')
    with pytest.raises(InputError, match="no particles"):
        read_particles(tmp_path / "empty.json")
    assert list(read_particles(tmp_path / "empty.json", allow_empty=True).columns[:3]) == ["x", "y", "z"]
    (tmp_path / "nan.star").write_text(star + "1 2 3 a\nnan 5 6 a\n")
    with pytest.raises(InputError, match="particle 2 .*NaN"):
        read_particles(tmp_path / "nan.star")
    (tmp_path / "ragged.csv").write_text("x,y,z\n1,2,3\n4,5\n")
    with pytest.raises(InputError, match="line 3 has 2 values"):
        read_particles(tmp_path / "ragged.csv")
    row = " ".join(["1"] * 35)
    (tmp_path / "ragged.tbl").write_text(f"{row}\n{row} 1\n")
    with pytest.raises(InputError, match="line 2 has 36 values"):
        read_particles(tmp_path / "ragged.tbl")
    (tmp_path / "nocoord.star").write_text("data_\n\nloop_\n_rlnAngleRot\n_rlnAngleTilt\n1 2\n")
    with pytest.raises(InputError, match="no STAR table with coordinates"):
        read_particles(tmp_path / "nocoord.star")
    (tmp_path / "a.xyz").write_text("1 2 3\n")
    with pytest.raises(ParameterError, match="supported: .*copick"):
        read_particles(tmp_path / "a.xyz")


def test_fractions_are_not_taken_for_voxels(tmp_path):
    p = tmp_path / "warp.star"
    p.write_text("data_\n\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n0.25 0.5 0.75\n0.1 0.2 0.3\n")
    with pytest.raises(ParameterError, match="fraction"):
        read_particles(p)
    df = read_particles(p, units="fraction", tomogram=TomogramInfo(shape=(40, 80, 100), voxel_size=5.0))
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [25, 40, 30])


def test_csv_angstrom_columns_and_own_csv_voxel_size(tmp_path):
    (tmp_path / "a.csv").write_text("x [A]\ty [A]\tz [A]\tclass\n100\t200\t50\tribosome\n")
    df = read_particles(tmp_path / "a.csv", voxel_size=10)
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [10, 20, 5])
    assert df["class"].iloc[0] == "ribosome"
    (tmp_path / "own.csv").write_text("id,x,y,z,x_angst,y_angst,z_angst,n_voxels,score\n1,2,4,6,20,40,60,9,0.5\n")
    df = read_particles(tmp_path / "own.csv")
    assert df.attrs["voxel_size"] == pytest.approx(10.0)
    assert df["score"].iloc[0] == 0.5
    (tmp_path / "seed.txt").write_text("PositionX\tPositionY\tPositionZ\tVolumeX\tVolumeY\tVolumeZ\tOffsetFromFace\n"
                                       "28.16\t42.24\t14.08\t2\t3\t1\t0\n")
    df = read_particles(tmp_path / "seed.txt")
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [2, 3, 1])
    assert df.attrs["voxel_size"] == pytest.approx(14.08)


def test_czii_csv(tmp_path):
    (tmp_path / "sub.csv").write_text("id,experiment,particle_type,x,y,z\n0,TS_5_4,ribosome,100.0,200.0,300.0\n"
                                      "1,TS_6_4,apo-ferritin,50,60,70\n")
    with pytest.raises(ParameterError, match="voxel_size"):
        read_particles(tmp_path / "sub.csv")
    df = read_particles(tmp_path / "sub.csv", voxel_size=10, tomogram_name="TS_5_4")
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [10, 20, 30])
    assert df["class"].iloc[0] == "ribosome"


# ------------------------------------------------------------------ round trips

def _table(n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.uniform(2, 60, (n, 3)), columns=["x", "y", "z"])
    df["tomo_name"] = "TS_01"
    df["class"] = "ribosome"
    df["score"] = rng.uniform(0, 1, n)
    df["rot"], df["tilt"], df["psi"] = rng.uniform(-180, 180, n), rng.uniform(5, 175, n), rng.uniform(-180, 180, n)
    df.attrs["voxel_size"] = 10.0
    return df


def _same_rotation(a: np.ndarray, b: np.ndarray) -> None:
    from cryodet_dask.particles._angles import relion_to_matrices

    np.testing.assert_allclose(relion_to_matrices(a), relion_to_matrices(b), atol=1e-5)


@pytest.mark.parametrize("fmt,ext,kw", [("star", ".star", {}), ("csv", ".csv", {}), ("czii", ".csv", {}),
                                        ("tardis", ".csv", {}), ("copick", ".json", {}), ("imod", ".mod", {}),
                                        ("dynamo", ".tbl", {}), ("txt", ".txt", {})])
def test_round_trip(tmp_path, fmt, ext, kw):
    df = _table()
    if fmt == "txt":  # the seed's TXT holds voxel indices
        df[["x", "y", "z"]] = np.rint(df[["x", "y", "z"]])
    out = write_particles(df, tmp_path / f"p{ext}", format=fmt, shape=(64, 64, 64), **kw)
    back = read_particles(out, voxel_size=10.0 if fmt in ("czii", "tardis", "copick") else None,
                          binning=None)
    assert len(back) == len(df)
    tol = 1e-4 if fmt in ("imod",) else 1e-3
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy(), atol=tol)
    if fmt in ("star", "csv", "copick", "dynamo"):
        _same_rotation(back[["rot", "tilt", "psi"]].to_numpy(), df[["rot", "tilt", "psi"]].to_numpy())
    if fmt in ("csv", "czii", "copick"):
        assert set(back["class"]) == {"ribosome"}
    if fmt in ("star", "csv", "copick", "dynamo"):
        np.testing.assert_allclose(back["score"], df["score"], atol=1e-5)
    assert not (tmp_path / f".p{ext}.partial").exists()


def test_star_round_trip_keeps_centred_coordinates_and_several_tomograms(tmp_path):
    df = pd.concat([_table(3), _table(2).assign(tomo_name="TS_02")], ignore_index=True)
    df.attrs["voxel_size"] = 10.0
    p = write_particles(df, tmp_path / "merged.star", shapes={"TS_01": (40, 50, 60), "TS_02": (30, 50, 60)})
    cols, rows = star_loop(p, "particles")
    assert len(rows) == 5 and "rlnCenteredCoordinateZAngst" in cols
    z = col(cols, rows, "rlnCenteredCoordinateZAngst")
    assert z[0] == pytest.approx((df["z"].iloc[0] - 20) * 10, abs=1e-3)
    assert z[-1] == pytest.approx((df["z"].iloc[-1] - 15) * 10, abs=1e-3)
    back = read_particles(p, tomogram_name="TS_02")
    np.testing.assert_allclose(back[["x", "y", "z"]], df[["x", "y", "z"]].iloc[3:], atol=1e-4)
    # rlnCoordinate (voxels) next to rlnCenteredCoordinate (Å) gives the voxel size and the shapes back
    both = read_particles(p)
    assert both.attrs["voxel_size"] == pytest.approx(10.0, rel=1e-6)
    assert both.attrs["shapes"] == {"TS_01": pytest.approx((40, 50, 60)), "TS_02": pytest.approx((30, 50, 60))}


def test_write_refusals(tmp_path):
    df = _table()
    df.attrs.pop("voxel_size")
    with pytest.raises(ParameterError, match="voxel size"):
        write_particles(df, tmp_path / "a.json")
    with pytest.raises(ParameterError, match="supported"):
        write_particles(df, tmp_path / "a.xyz")
    bad = _table()
    bad.loc[2, "x"] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        write_particles(bad, tmp_path / "b.csv")
    assert not list(tmp_path.iterdir())
    assert set(READ_FORMATS) <= set(WRITE_FORMATS) | {"star"}


# ------------------------------------------------------------------ cryodet-dask picks convert

def _cli(*argv: str) -> int:
    from cryodet_dask.cli import main

    return main(["-q", *map(str, argv)])


@needs_shared
def test_cli_convert_relion5_to_copick_and_back_to_star(tmp_path, capsys):
    src = R5 / "Picks/job_picks/particles.star"
    exp = _expected_centred(src)
    assert _cli("picks", "convert", src, tmp_path / "ts1.json", "--tomogram-name", "TS_01") == 0
    doc = json.loads((tmp_path / "ts1.json").read_text())
    n1 = sum(1 for _ in doc["points"])
    assert doc["run_name"] == "TS_01" and doc["unit"] == "angstrom"
    assert doc["points"][0]["location"]["x"] == pytest.approx(exp[0][0] * 10.52, abs=1e-6)
    # the whole file as one STAR: centred Å coordinates come back as RELION wrote them
    assert _cli("picks", "convert", src, tmp_path / "all.star") == 0
    cols, rows = star_loop(tmp_path / "all.star", "particles")
    cols0, rows0 = star_loop(src, "particles")
    assert len(rows) == len(rows0) and n1 == sum(r[0] == "TS_01" for r in rows0)
    np.testing.assert_allclose(col(cols, rows, "rlnCenteredCoordinateXAngst"),
                               col(cols0, rows0, "rlnCenteredCoordinateXAngst"), atol=1e-3)
    # csv -> IMOD with the format from --to
    assert _cli("picks", "convert", FIX / "points_with_header.csv", tmp_path / "m.bin", "--to", "imod") == 0
    assert imod_points(tmp_path / "m.bin")[0] == (1.0, 2.0, 3.0)


def test_cli_convert_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("x,y,z\n1,2,3\n")
    (tmp_path / "nan.csv").write_text("x,y,z\n1,2,3\n4,,6\n")
    (tmp_path / "nocoord.star").write_text("data_\n\nloop_\n_rlnAngleRot\n1\n")
    (tmp_path / "ang.csv").write_text("x_angst,y_angst,z_angst\n10,20,30\n")
    cases = [(tmp_path / "a.csv", tmp_path / "o.xyz", "unknown particle format"),
             (tmp_path / "nocoord.star", tmp_path / "o.csv", "no STAR table with coordinates"),
             (tmp_path / "nan.csv", tmp_path / "o.csv", "NaN"),
             (tmp_path / "ang.csv", tmp_path / "o.csv", "--voxel-size")]
    for src, dst, msg in cases:
        capsys.readouterr()
        assert _cli("picks", "convert", src, dst) != 0
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err
        assert not dst.exists() and not list(tmp_path.glob(".*partial"))


def test_tomogram_file_gives_shape_and_voxel_size(tmp_path):
    import mrcfile

    with mrcfile.new(tmp_path / "tomo.mrc") as m:
        m.set_data(np.zeros((20, 30, 40), np.float32))
        m.voxel_size = 10.0
    (tmp_path / "c.star").write_text("data_particles\n\nloop_\n_rlnTomoName\n_rlnCenteredCoordinateXAngst\n"
                                     "_rlnCenteredCoordinateYAngst\n_rlnCenteredCoordinateZAngst\n\nTS_1 -50 0 25\n")
    df = read_particles(tmp_path / "c.star", tomogram=tmp_path / "tomo.mrc")
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [20 - 5, 15, 10 + 2.5])
    np.testing.assert_allclose(df[["x_angst", "y_angst", "z_angst"]].iloc[0], [150, 150, 125])
    # CSV in voxels -> RELION 5 STAR with centred Å from the tomogram's shape and voxel size
    (tmp_path / "v.csv").write_text("x,y,z\n20,15,10\n")
    assert _cli("picks", "convert", tmp_path / "v.csv", tmp_path / "v.star", "--tomogram", tmp_path / "tomo.mrc",
                "--tomogram-name", "TS_1") == 0
    cols, rows = star_loop(tmp_path / "v.star", "particles")
    assert [col(cols, rows, f"rlnCenteredCoordinate{a}Angst")[0] for a in "XYZ"] == [0.0, 0.0, 0.0]
    assert rows[0][cols.index("rlnTomoName")] == "TS_1"


def test_cli_merge_batch_stars_into_one_relion5_star(tmp_path):
    """Two tomograms' STARs as detect writes them -> one STAR with each tomogram's centred Å (RELION 5 import)."""
    from cryodet_dask.exports import write_centers_star

    a = np.array([[5.0, 10, 20], [6, 11, 21]])
    b = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    write_centers_star(a, tmp_path / "A_centers.star", 10.0, (20, 40, 60), "TS_A")
    write_centers_star(b, tmp_path / "B_centers.star", 10.0, (30, 40, 50), "TS_B")
    assert _cli("picks", "merge", tmp_path / "all.star", tmp_path / "A_centers.star", tmp_path / "B_centers.star") == 0
    cols, rows = star_loop(tmp_path / "all.star", "particles")
    assert [r[cols.index("rlnTomoName")] for r in rows] == ["TS_A"] * 2 + ["TS_B"] * 3
    cz = col(cols, rows, "rlnCenteredCoordinateZAngst")
    assert cz[0] == pytest.approx((5 - 10) * 10, abs=1e-3) and cz[-1] == pytest.approx((7 - 15) * 10, abs=1e-3)
    back = read_particles(tmp_path / "all.star", tomogram_name="TS_B")
    np.testing.assert_allclose(back[["z", "y", "x"]], b, atol=1e-3)


# ------------------------------------------------------------------ issue 27: picks of several tomograms

@needs_shared
def test_cli_convert_several_tomograms_to_copick_gives_one_run_each_and_round_trips(tmp_path, capsys):
    """STAR with TS_01 and TS_02 -> copick: one file per run (OUTSTEM_RUN.json, run_name set) -> STAR again,
    every row with its own tomogram (was: one file with run_name null, then every row named after the file)."""
    src = R5 / "Picks/job_picks/particles.star"
    cols0, rows0 = star_loop(src, "particles")
    names0 = [r[cols0.index("rlnTomoName")] for r in rows0]
    assert set(names0) == {"TS_01", "TS_02"}
    assert _cli("picks", "convert", src, tmp_path / "picks.json") == 0
    assert not (tmp_path / "picks.json").exists()
    runs = {}
    for name in ("TS_01", "TS_02"):
        doc = json.loads((tmp_path / f"picks_{name}.json").read_text())
        assert doc["run_name"] == name
        runs[name] = len(doc["points"])
    assert runs == {n: names0.count(n) for n in ("TS_01", "TS_02")}
    assert not list(tmp_path.glob(".*"))  # no temporary left
    # back to STAR, each run on its own and all of them merged: every row keeps its tomogram
    assert _cli("picks", "convert", tmp_path / "picks_TS_02.json", tmp_path / "ts2.star") == 0
    cols, rows = star_loop(tmp_path / "ts2.star", "particles")
    assert [r[cols.index("rlnTomoName")] for r in rows] == ["TS_02"] * runs["TS_02"]
    assert _cli("picks", "merge", tmp_path / "back.star", tmp_path / "picks_TS_01.json",
                tmp_path / "picks_TS_02.json") == 0
    cols, rows = star_loop(tmp_path / "back.star", "particles")
    assert [r[cols.index("rlnTomoName")] for r in rows] == names0
    exp = read_particles(src)
    back = read_particles(tmp_path / "back.star")
    np.testing.assert_allclose(back[["x", "y", "z"]], exp[["x", "y", "z"]], atol=1e-4)
    # the runs exist: a second convert is refused in one line before anything is written
    capsys.readouterr()
    before = (tmp_path / "picks_TS_01.json").read_bytes()
    (tmp_path / "picks_TS_02.json").unlink()
    assert _cli("picks", "convert", src, tmp_path / "picks.json") == 2
    err = capsys.readouterr().err.strip()
    assert "picks_TS_01.json" in err and "--overwrite" in err and "\n" not in err
    assert not (tmp_path / "picks_TS_02.json").exists() and (tmp_path / "picks_TS_01.json").read_bytes() == before
    # --tomogram-name still gives the one file asked for
    assert _cli("picks", "convert", src, tmp_path / "one.json", "--tomogram-name", "TS_01") == 0
    assert json.loads((tmp_path / "one.json").read_text())["run_name"] == "TS_01"


@needs_shared
def test_cli_convert_several_tomograms_star_csv_star_keeps_every_row_tomogram(tmp_path):
    src = R5 / "Picks/job_picks/particles.star"
    cols0, rows0 = star_loop(src, "particles")
    names0 = [r[cols0.index("rlnTomoName")] for r in rows0]
    assert _cli("picks", "convert", src, tmp_path / "all.csv") == 0
    with open(tmp_path / "all.csv", newline="") as f:
        assert [r["tomo_name"] for r in csv.DictReader(f)] == names0
    assert _cli("picks", "convert", tmp_path / "all.csv", tmp_path / "back.star") == 0
    cols, rows = star_loop(tmp_path / "back.star", "particles")
    assert [r[cols.index("rlnTomoName")] for r in rows] == names0
    # the other one-tomogram formats: one file per tomogram too; Dynamo numbers them with a warning
    for fmt, ext in (("txt", ".txt"), ("tardis", ".csv"), ("imod", ".mod")):
        assert _cli("picks", "convert", src, tmp_path / f"o_{fmt}{ext}", "--to", fmt) == 0
        assert sorted(p.name for p in tmp_path.glob(f"o_{fmt}_*")) == [f"o_{fmt}_TS_01{ext}", f"o_{fmt}_TS_02{ext}"]
        assert not (tmp_path / f"o_{fmt}{ext}").exists()


def test_cli_convert_several_tomograms_refuses_names_that_cannot_be_files(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("x,y,z,tomo_name\n1,2,3,../evil\n4,5,6,TS_2\n")
    capsys.readouterr()
    assert _cli("picks", "convert", tmp_path / "a.csv", tmp_path / "o.json", "--voxel-size", "10") == 2
    err = capsys.readouterr().err.strip()
    assert "'../evil'" in err and "--tomogram-name" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    (tmp_path / "a.csv").write_text("x,y,z,tomo_name\n1,2,3,TS_1\n4,5,6,ts_1\n")
    assert _cli("picks", "convert", tmp_path / "a.csv", tmp_path / "o.txt", "--voxel-size", "10") == 2
    assert "differ only in case" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    assert "one file per tomogram" in _help("picks", "convert")


def _help(*argv: str) -> str:
    import contextlib
    import io

    from cryodet_dask.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(buf.getvalue().split())


def test_duplicated_columns_are_named(tmp_path):
    (tmp_path / "d.csv").write_text("x,y,x,z\n1,2,3,4\n")
    (tmp_path / "d.star").write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n"
                                     "_rlnCoordinateY #3\n_rlnCoordinateX #4\n_rlnCoordinateZ #5\nTS 1 2 3 4\n")
    for name, col_name in (("d.csv", "'x'"), ("d.star", "'rlnCoordinateX'")):
        with pytest.raises(InputError, match=f"column {col_name} appears twice") as exc:
            read_particles(tmp_path / name)
        assert "not numbers" not in str(exc.value)


def test_one_row_star_block_without_loop(tmp_path):
    (tmp_path / "one.star").write_text("data_particles\n\n_rlnTomoName TS_01\n_rlnCoordinateX 10.5\n"
                                       "_rlnCoordinateY 20\n_rlnCoordinateZ 30\n")
    df = read_particles(tmp_path / "one.star")
    assert len(df) == 1 and df["tomo_name"].tolist() == ["TS_01"]
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [10.5, 20, 30])
    # the same particle in a RELION 5 centred block with its one-row optics block
    (tmp_path / "c.star").write_text("data_optics\n\n_rlnOpticsGroup 1\n_rlnImagePixelSize 10\n\n"
                                     "data_particles\n\n_rlnTomoName TS_01\n_rlnCenteredCoordinateXAngst 0\n"
                                     "_rlnCenteredCoordinateYAngst 0\n_rlnCenteredCoordinateZAngst 0\n")
    df = read_particles(tmp_path / "c.star", tomogram=TomogramInfo((20, 30, 40), 10.0))
    np.testing.assert_allclose(df[["x", "y", "z"]].iloc[0], [20, 15, 10])


def test_cli_convert_refuses_coordinates_beyond_any_tomogram(tmp_path, capsys):
    (tmp_path / "huge.csv").write_text("x,y,z\n1,2,3\n1e300,2,3\n")
    (tmp_path / "far.csv").write_text("x_angst,y_angst,z_angst\n1,2,2e7\n")
    (tmp_path / "ok.csv").write_text("x_angst,y_angst,z_angst\n1,2,9e6\n")
    for name, vs, where in (("huge.csv", None, "particle 2"), ("far.csv", "10", "2e+07 Å")):
        capsys.readouterr()
        extra = ["--voxel-size", vs] if vs else []
        assert _cli("picks", "convert", tmp_path / name, tmp_path / f"o_{name}.star", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert where in err and "beyond any tomogram" in err and "\n" not in err
        assert not (tmp_path / f"o_{name}.star").exists()
    assert _cli("picks", "convert", tmp_path / "ok.csv", tmp_path / "ok.star", "--voxel-size", "10") == 0


def test_write_particles_refuses_several_tomograms_in_a_one_tomogram_format(tmp_path):
    import pandas as pd

    from cryodet_dask.errors import ParameterError
    from cryodet_dask.particles import write_particles

    df = pd.DataFrame({"x": [1.0, 2.0], "y": [1.0, 2.0], "z": [1.0, 2.0], "tomo_name": ["TS_01", "TS_02"]})
    for name in ("p.json", "p.txt", "p.mod"):
        with pytest.raises(ParameterError, match="2 tomograms"):
            write_particles(df, tmp_path / name, voxel_size=10.0)
        assert not (tmp_path / name).exists()
    write_particles(df, tmp_path / "p.star", voxel_size=10.0)  # STAR keeps each row's tomogram
    write_particles(df.iloc[:1], tmp_path / "one.json", voxel_size=10.0)
