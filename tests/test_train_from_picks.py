"""Issue 25, items 1 and 6: species from picks, and training from picks in one command.

``cryodet-dask labels`` writes the species of each label id beside the label map (``LABELS_species.csv``,
columns ``id`` and ``class``) when the picks carry a species; ``cryodet-dask train --tomogram T --picks P
--species A:D,B:D`` (or ``--copick CONFIG --runs ...``) builds the label maps itself into ``OUT_labels/`` and
trains a multi-species network.  Bad input: one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryodet_dask.cli import main
from cryodet_dask.io import load
from cryodet_dask.testing import make_mrc

from test_faults import one_line_error

torch.set_num_threads(1)

SHAPE = (32, 48, 48)
TINY = ["--channels", "4,8", "--convs-per-level", "1,1", "--patch-size", "16", "--batch-size", "2", "--epochs", "1",
        "--steps-per-epoch", "2", "--validation-batches", "1", "--threads", "1"]
SPECIES = ["--species", "ribosome:80,proteasome:50"]  # radii 4 and 2.5 voxels at 10 Å
RELION5 = Path("/work/shared/data/particle_lists/relion5_project/Class3D/job_class3d/run_it025_data.star")


def _picks(seed: int = 0, n: int = 8) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    return [(rng.uniform([8, 8, 8], np.array(SHAPE) - 8), "ribosome" if k % 2 == 0 else "proteasome")
            for k in range(n)]


def _tomogram(path: Path, picks, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 0.3, SHAPE).astype(np.float32)
    zz, yy, xx = np.indices(SHAPE)
    for c, kind in picks:
        r = 4.0 if kind == "ribosome" else 2.5
        img[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] -= 1.5
    make_mrc(path, img, voxel_size=10.0)
    return path


def _star(path: Path, picks) -> Path:
    rows = [f"{c[2]:.2f} {c[1]:.2f} {c[0]:.2f} {1 if kind == 'ribosome' else 2}" for c, kind in picks]
    path.write_text("\n".join(["data_particles", "loop_", "_rlnCoordinateX", "_rlnCoordinateY", "_rlnCoordinateZ",
                               "_rlnClassNumber", *rows]) + "\n")
    return path


def _csv(path: Path, picks, classes: bool = True) -> Path:
    df = pd.DataFrame({"x": [c[2] for c, _ in picks], "y": [c[1] for c, _ in picks], "z": [c[0] for c, _ in picks]})
    if classes:
        df["class"] = [k for _, k in picks]
    df.to_csv(path, index=False)
    return path


@pytest.fixture()
def data(tmp_path):
    picks = _picks()
    return {"picks": picks, "tomo": _tomogram(tmp_path / "t.mrc", picks), "star": _star(tmp_path / "p.star", picks),
            "csv": _csv(tmp_path / "p.csv", picks)}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------- labels


def test_labels_writes_the_species_of_each_label_id(data, tmp_path):
    out = tmp_path / "l.mrc"
    assert main(["-q", "labels", str(data["csv"]), str(out), "--tomogram", str(data["tomo"]), "--radius", "3"]) == 0
    table = pd.read_csv(tmp_path / "l_species.csv")
    assert list(table.columns) == ["id", "class"]
    assert table["id"].tolist() == list(range(1, 9))
    assert table["class"].tolist() == [k for _, k in data["picks"]]
    lab = load(out).data.compute()
    for i, (c, _) in enumerate(data["picks"], start=1):  # id = the label value painted for that pick
        assert lab[tuple(np.round(c).astype(int))] == i
    # train --particle-species reads it
    from cryodet_dask.training._species import read_particle_species
    assert read_particle_species(tmp_path / "l_species.csv") == {i: k for i, (_, k) in enumerate(data["picks"], 1)}


def test_labels_names_relion_class_numbers_and_paints_species_diameters(data, tmp_path, capsys):
    # class numbers without names: the label map as before, no species table, a warning
    assert main(["-q", "labels", str(data["star"]), str(tmp_path / "a.mrc"), "--tomogram", str(data["tomo"]),
                 "--radius", "3"]) == 0
    assert (tmp_path / "a.mrc").exists() and not (tmp_path / "a_species.csv").exists()
    # named: the species table; --species paints each pick at its species' diameter
    out = tmp_path / "b.mrc"
    assert main(["-q", "labels", str(data["star"]), str(out), "--tomogram", str(data["tomo"]), *SPECIES,
                 "--class-names", "1=ribosome,2=proteasome"]) == 0
    assert pd.read_csv(tmp_path / "b_species.csv")["class"].tolist() == [k for _, k in data["picks"]]
    lab = load(out).data.compute()
    sizes = {k: [] for k in ("ribosome", "proteasome")}
    for i, (_, k) in enumerate(data["picks"], start=1):
        sizes[k].append((lab == i).sum())
    assert min(sizes["ribosome"]) > 200 > max(sizes["proteasome"])  # 4³·4π/3 = 268 vs 2.5³·4π/3 = 65 voxels
    capsys.readouterr()
    # bad input: one line, exit 2, nothing written
    cases = [
        ([*SPECIES], "are numbers"),  # class numbers need names
        (["--radius", "3", "--class-names", "1=ribo_some"], "not copick-safe"),
        (["--species", "ribosome:80,ribosome:50"], "named twice"),
        (["--species", "ribosome:80", "--class-names", "1=ribosome,2=proteasome"], "not among --species"),
    ]
    for extra, message in cases:
        target = tmp_path / "bad.mrc"
        with pytest.raises(SystemExit) if "named twice" in message else _nothing():
            rc = main(["-q", "labels", str(data["star"]), str(target), "--tomogram", str(data["tomo"]), *extra])
            assert rc == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not target.exists() and not (tmp_path / "bad_species.csv").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_labels_refuses_an_existing_species_table_before_painting(data, tmp_path, capsys):
    (tmp_path / "l_species.csv").write_text("keep\n")
    assert main(["-q", "labels", str(data["csv"]), str(tmp_path / "l.mrc"), "--tomogram", str(data["tomo"]),
                 "--radius", "3"]) == 2
    assert "exists" in one_line_error(capsys)
    assert not (tmp_path / "l.mrc").exists() and (tmp_path / "l_species.csv").read_text() == "keep\n"


@pytest.mark.skipif(not RELION5.is_file(), reason="shared particle lists absent")
def test_a_real_relion5_star_with_class_numbers(tmp_path, capsys):
    from cryodet_dask.annotations import pick_species, read_coordinates
    from cryodet_dask.errors import ParameterError

    table = read_coordinates(RELION5, tomogram_name="TS_01")
    assert table.classes is not None and sorted(set(table.classes)) == ["1", "2", "3"]
    with pytest.raises(ParameterError, match="class-names 1=NAME"):
        pick_species(table, required=True)
    names = {"1": "a", "2": "b", "3": "c"}
    assert pick_species(table, names) == [names[c] for c in table.classes]
    shape = (44, 136, 84)  # the tomograms.star's TS_01
    make_mrc(tmp_path / "TS_01.mrc", np.zeros(shape, np.float32), voxel_size=10.52)
    assert main(["-q", "labels", str(RELION5), str(tmp_path / "TS_01_labels.mrc"), "--tomogram",
                 str(tmp_path / "TS_01.mrc"), "--tomogram-name", "TS_01", "--radius", "2",
                 "--class-names", "1=a,2=b,3=c"]) == 0
    sp = pd.read_csv(tmp_path / "TS_01_labels_species.csv")
    assert sp["id"].tolist() == list(range(1, len(table) + 1)) and sp["class"].tolist() == [names[c] for c in
                                                                                             table.classes]


# ------------------------------------------------------------------------------------------- train


def test_train_from_picks_in_one_command(data, tmp_path):
    picks2 = _picks(seed=1)
    tomo2 = _tomogram(tmp_path / "u.mrc", picks2, seed=1)
    out = tmp_path / "o" / "net.pt"
    args = ["-q", "train", str(out), "-t", str(data["tomo"]), "--picks", str(data["star"]),
            "-t", str(tomo2), "--picks", str(_csv(tmp_path / "u.csv", picks2)), *SPECIES,
            "--class-names", "1=ribosome,2=proteasome", *TINY]
    assert main(args) == 0
    from cryodet_dask.models import load as load_net

    net = load_net(out)
    assert net.config.species.names == ("ribosome", "proteasome")
    assert net.config.species.diameters == (80.0, 50.0)
    folder = tmp_path / "o" / "net_labels"
    assert {"t_labels.mrc", "t_labels_species.csv", "u_labels.mrc", "u_labels_species.csv"} <= _files(folder)
    assert pd.read_csv(folder / "u_labels_species.csv")["class"].tolist() == [k for _, k in picks2]
    lab = load(folder / "t_labels.mrc").data.compute()
    assert set(np.unique(lab)) == set(range(9))
    assert net.config.training["picks"][0]["particles"] == 8
    # the same command again keeps the label maps (and resumes)
    before = (folder / "t_labels.mrc").stat().st_mtime_ns
    assert main(args) == 0
    assert (folder / "t_labels.mrc").stat().st_mtime_ns == before
    # fine-tuning from a multi-species checkpoint: its species (and diameters) paint the picks
    ft = tmp_path / "ft.pt"
    small = [a for a in TINY if a not in ("--channels", "4,8", "--convs-per-level", "1,1")]
    assert main(["-q", "train", str(ft), "--init", str(out), "-t", str(tomo2), "--picks", str(tmp_path / "u.csv"),
                 *small]) == 0
    assert load_net(ft).config.species.names == ("ribosome", "proteasome")
    assert (tmp_path / "ft_labels" / "u_labels_species.csv").is_file()


def test_one_picks_file_of_several_tomograms(data, tmp_path):
    from cryodet_dask.errors import InputError
    from cryodet_dask.species import parse_species
    from cryodet_dask.training import plan_from_picks

    picks2 = _picks(seed=1, n=4)
    tomo2 = _tomogram(tmp_path / "u.mrc", picks2, seed=1)
    rows = [f"{name} {c[2]:.2f} {c[1]:.2f} {c[0]:.2f} {kind}" for name, ps in (("t", data["picks"]), ("u", picks2))
            for c, kind in ps]
    star = tmp_path / "both.star"
    star.write_text("\n".join(["data_particles", "loop_", "_rlnTomoName", "_rlnCoordinateX", "_rlnCoordinateY",
                               "_rlnCoordinateZ", "_rlnClassNumber", *rows]) + "\n")
    jobs = plan_from_picks([(str(data["tomo"]), str(star)), (str(tomo2), str(star))], tmp_path / "n.pt",
                           species=parse_species("ribosome:80,proteasome:50"))
    assert [len(j.table) for j in jobs] == [8, 4]
    assert jobs[1].species == [k for _, k in picks2]
    np.testing.assert_allclose(jobs[1].table.zyx, [c for c, _ in picks2], atol=0.01)
    np.testing.assert_allclose(sorted(set(jobs[0].radius)), [2.5, 4.0])
    assert [j.labels.name for j in jobs] == ["t_labels.mrc", "u_labels.mrc"]
    assert not (tmp_path / "n_labels").exists()  # planning writes nothing
    make_mrc(tmp_path / "w.mrc", np.zeros(SHAPE, np.float32), voxel_size=10.0)
    with pytest.raises(InputError, match="none is named like w.mrc"):
        plan_from_picks([(str(tmp_path / "w.mrc"), str(star))], tmp_path / "n.pt",
                        species=parse_species("ribosome:80,proteasome:50"))


def test_train_from_picks_refuses_bad_input_before_any_work(data, tmp_path, capsys):
    plain = _csv(tmp_path / "plain.csv", data["picks"], classes=False)
    base = ["-q", "train", str(tmp_path / "o" / "net.pt"), "-t", str(data["tomo"])]
    cases = [
        (["--picks", str(plain), *SPECIES], "no species column"),
        (["--picks", str(data["star"]), *SPECIES], "are numbers"),
        (["--picks", str(data["csv"]), "--species", "ribosome:80"], "two or more species"),
        (["--picks", str(data["csv"]), "--species", "ribosome:80,ribosome:50"], "named twice"),
        (["--picks", str(data["csv"]), "--species", "ribo_some:80,proteasome:50"], "not copick-safe"),
        (["--picks", str(data["csv"]), "--species", "ribosome:80,other:50"], "not among --species"),
        (["--picks", str(data["csv"]), "--species", "ribosome,proteasome:50"], "needs a diameter"),
        (["--picks", str(data["csv"]), "--species", "ribosome:80,proteasome:50", "--class-names", "x=a_b"],
         "not copick-safe"),
        (["--picks", str(data["csv"])], "--particle-diameter"),
        (["--picks", str(data["csv"]), "--picks", str(plain), *SPECIES], "one --picks per --tomogram"),
        (["--picks", str(data["csv"]), "-l", str(data["tomo"]), *SPECIES], "not both"),
        (["-l", str(data["tomo"]), "--class-names", "1=ribosome"], "goes with --picks"),
    ]
    for extra, message in cases:
        try:
            rc = main([*base, *extra, *TINY])
        except SystemExit as exc:  # refused by the argument parser
            rc = exc.code
        assert rc == 2, (extra, rc)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("cryodet-dask")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "o").exists(), extra


def test_train_species_agnostic_from_picks(data, tmp_path):
    out = tmp_path / "agn.pt"
    assert main(["-q", "train", str(out), "-t", str(data["tomo"]), "--picks", str(data["star"]),
                 "--particle-diameter", "60", *TINY]) == 0
    from cryodet_dask.models import load as load_net

    assert load_net(out).config.species.is_agnostic
    assert _files(tmp_path / "agn_labels") == {"labels.json", "t_labels.mrc"}


# ------------------------------------------------------------------------------------------- copick


def _copick(tmp: Path, runs: dict[str, list]) -> Path:
    import zarr

    static, overlay = tmp / "static", tmp / "overlay"
    for k, (run, picks) in enumerate(runs.items()):
        img = load(_tomogram(tmp / f"{run}.mrc", picks, seed=k)).data.compute()
        group = zarr.open_group(str(static / "ExperimentRuns" / run / "VoxelSpacing10.000" / "wbp.zarr"), mode="w",
                                zarr_format=2)
        arr = group.create_array("0", shape=img.shape, chunks=img.shape, dtype="float32",
                                 chunk_key_encoding={"name": "v2", "separator": "/"})
        arr[...] = img
        group.attrs.update({"multiscales": [{"version": "0.4", "axes": [{"name": a, "type": "space",
                                                                           "unit": "angstrom"} for a in "zyx"],
                                             "datasets": [{"path": "0", "coordinateTransformations": [
                                                 {"type": "scale", "scale": [10.0] * 3}]}]}]})
        folder = overlay / "ExperimentRuns" / run / "Picks"
        folder.mkdir(parents=True)
        for obj in ("ribosome", "proteasome"):
            pts = [{"location": {"x": c[2] * 10, "y": c[1] * 10, "z": c[0] * 10}, "instance_id": 0, "score": 1.0}
                   for c, kind in picks if kind == obj]
            (folder / f"curation_0_{obj}.json").write_text(json.dumps({
                "pickable_object_name": obj, "user_id": "curation", "session_id": "0", "run_name": run,
                "unit": "angstrom", "points": pts}))
    config = tmp / "copick.json"
    config.write_text(json.dumps({
        "name": "t", "version": "1.31.0", "overlay_root": f"local://{overlay}", "static_root": f"local://{static}",
        "pickable_objects": [{"name": "ribosome", "is_particle": True, "label": 1, "radius": 40},
                             {"name": "proteasome", "is_particle": True, "label": 2, "radius": 25},
                             {"name": "membrane", "is_particle": False, "label": 3}]}))
    return config


def test_train_from_a_copick_project(tmp_path, capsys):
    config = _copick(tmp_path, {"TS_01": _picks(0), "TS_02": _picks(1)})
    out = tmp_path / "cp.pt"
    assert main(["-q", "train", str(out), "--copick", str(config), "--runs", "TS_01,TS_02", *TINY]) == 0
    from cryodet_dask.models import load as load_net

    sp = load_net(out).config.species
    assert sp.names == ("ribosome", "proteasome") and sp.diameters == (80.0, 50.0)  # twice the config's radii
    folder = tmp_path / "cp_labels"
    assert {"TS_01_labels.mrc", "TS_01_labels_species.csv", "TS_02_labels.mrc"} <= _files(folder)
    # a second user's picks of the same object: which one is asked for, before any work
    extra = tmp_path / "overlay" / "ExperimentRuns" / "TS_01" / "Picks"
    doc = json.loads((extra / "curation_0_ribosome.json").read_text())
    (extra / "model_1_ribosome.json").write_text(json.dumps({**doc, "user_id": "model", "session_id": "1"}))
    assert main(["-q", "train", str(tmp_path / "x.pt"), "--copick", str(config), "--runs", "TS_01", *TINY]) == 2
    assert "--copick-user" in one_line_error(capsys) and not (tmp_path / "x_labels").exists()
    assert main(["-q", "train", str(tmp_path / "y.pt"), "--copick", str(config), "--runs", "TS_01",
                 "--copick-user", "nobody", *TINY]) == 2
    assert "no picks" in one_line_error(capsys) and not (tmp_path / "y_labels").exists()


def test_czii_csv_particle_types_are_species(tmp_path):
    from cryodet_dask.species import parse_species
    from cryodet_dask.training import plan_from_picks

    make_mrc(tmp_path / "TS_5_4.mrc", np.zeros(SHAPE, np.float32), voxel_size=10.0)
    pd.DataFrame({"id": [0, 1, 2], "experiment": ["TS_5_4", "TS_5_4", "TS_6_4"],
                  "particle_type": ["apo-ferritin", "ribosome", "ribosome"],
                  "x": [100.0, 200, 300], "y": [150.0, 250, 350], "z": [120.0, 130, 140]}).to_csv(
        tmp_path / "czii.csv", index=False)
    (job,) = plan_from_picks([(str(tmp_path / "TS_5_4.mrc"), str(tmp_path / "czii.csv"))], tmp_path / "n.pt",
                             species=parse_species("apo-ferritin:120,ribosome:280"))
    assert job.species == ["apo-ferritin", "ribosome"]  # the rows of experiment TS_5_4 only
    np.testing.assert_allclose(job.table.zyx, [[12, 15, 10], [13, 25, 20]])  # Å / 10 Å per voxel
    np.testing.assert_allclose(job.radius, [6, 14])


def test_species_on_top_of_the_shipped_network_by_name(data, tmp_path):
    """The README's command: --init twohead (a shipped model's name), a new species branch, backbone frozen."""
    from cryodet_dask.models import load as load_net
    from cryodet_dask.prediction import resolve_models

    out = tmp_path / "sp.pt"
    small = [a for a in TINY if a not in ("--channels", "4,8", "--convs-per-level", "1,1")]
    assert main(["-q", "train", str(out), "-t", str(data["tomo"]), "--picks", str(data["star"]), *SPECIES,
                 "--class-names", "1=ribosome,2=proteasome", "--init", "twohead", "--replace-species",
                 "--freeze-backbone", *small]) == 0
    net, start = load_net(out), load_net(resolve_models("twohead")[0].path)
    assert net.config.species.names == ("ribosome", "proteasome") and net.config.channels == start.config.channels
    for k, v in start.state_dict().items():  # the backbone and the mask and centre heads: untouched
        assert torch.equal(net.state_dict()[k], v), k
