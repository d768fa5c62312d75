"""Per-species post-processing settings: each species' diameter gives its own centre-fusion distance and
minimum particle size (``--particle-diameter NAME:ANGSTROM,...`` or the diameters a checkpoint records)."""

from __future__ import annotations

import json
import math

import pytest

from cryodet_dask.errors import ParameterError
from cryodet_dask.pipeline import DetectParams
from cryodet_dask.postprocessing import from_particle_diameter
from cryodet_dask.species import Species, SpeciesTable

MODEL = {"big": 200.0, "small": 80.0, "plain": None}  # species -> diameter (Å) the checkpoint records


def _sphere_min(d: float, vs: float) -> int:
    return int(round(math.pi / 6 * (0.5 * d / vs) ** 3))


def test_the_checkpoint_diameters_set_each_species_fusion_distance_and_minimum_size():
    kw, sp = DetectParams().resolve_postprocess(10.0, MODEL)
    default = DetectParams().postprocess_kwargs(10.0)
    assert sp.center_min_distance == (10.0, 4.0, default["center_min_distance"])  # a species without one: default
    # the smaller of the run-wide minimum and the species' own: a small species keeps its particles
    assert sp.min_particle_size == (min(default["min_particle_size"], _sphere_min(200, 10)),
                                    min(default["min_particle_size"], _sphere_min(80, 10)),
                                    default["min_particle_size"])
    assert sp.min_particle_size[1] == _sphere_min(80, 10) < default["min_particle_size"]
    assert kw["remove_min_size"] == min(_sphere_min(80, 10), default["remove_min_size"])  # before species are known
    assert kw["center_min_distance"] == 10.0  # the widest ball sets the halo
    assert from_particle_diameter(80, 10)["center_min_distance"] == 4.0


def test_given_diameters_override_the_checkpoint_and_one_number_applies_to_all():
    _, sp = DetectParams(particle_diameter={"small": 120.0}).resolve_postprocess(10.0, MODEL)
    assert sp.center_min_distance[:2] == (10.0, 6.0)
    kw, sp = DetectParams(particle_diameter=150.0).resolve_postprocess(10.0, MODEL)
    assert sp.center_min_distance == () and sp.min_particle_size == ()  # the run-wide settings, as before
    assert kw["center_min_distance"] == 7.5
    # an explicit fusion distance wins over every species' diameter (the minimum sizes still follow them)
    kw, sp = DetectParams(center_min_distance=3.0).resolve_postprocess(10.0, MODEL)
    assert sp.center_min_distance == () and kw["center_min_distance"] == 3.0 and sp.min_particle_size
    # a model without diameters, or a species-agnostic one: nothing per species
    assert DetectParams().resolve_postprocess(10.0, {"a": None, "b": None})[1].center_min_distance == ()
    assert DetectParams().resolve_postprocess(None, {})[1] is None
    # --species keeps its selection
    assert DetectParams(species=("small",)).resolve_postprocess(10.0, MODEL)[1].keep == (1,)


def test_per_species_diameters_are_refused_in_one_line_where_they_cannot_apply():
    with pytest.raises(ParameterError, match="not a species of this model; its species: big, small, plain"):
        DetectParams(particle_diameter={"rubisco": 100.0}).resolve_postprocess(10.0, MODEL)
    with pytest.raises(ParameterError, match="species-agnostic"):
        DetectParams(particle_diameter={"big": 100.0}).resolve_postprocess(10.0, {})
    with pytest.raises(ParameterError, match="needs the voxel size"):
        DetectParams().resolve_postprocess(None, MODEL)
    with pytest.raises(ParameterError, match="copick-safe"):
        DetectParams(particle_diameter={"a_b": 100.0})
    with pytest.raises(ParameterError):
        DetectParams(particle_diameter={"big": -1.0})


def test_detect_applies_and_records_per_species_settings(tmp_path, capsys):
    from cryodet_dask.cli import main

    from cryodet_dask.testing import tiny_species_setup

    ckpt, _ = tiny_species_setup(tmp_path, SpeciesTable((Species("ribo", 300.0), Species("prot", 120.0))))
    base = ["-q", "detect", str(tmp_path / "t.mrc"), "-m", str(ckpt), "--cluster", "threads", "--device", "cpu",
            "-ps", "16", "-mt", "0", "-ct", "0", "--min-score", "0", "--engine", "torch", "--formats", "csv"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    rec = json.loads((tmp_path / "a" / "t_run.json").read_text())["postprocess_parameters"]
    assert rec["species"]["center_min_distance"] == [15.0, 6.0]
    cap = DetectParams().min_particle_size  # no species needs more than --min-particle-size
    assert rec["species"]["min_particle_size"] == [min(cap, _sphere_min(300, 10)), min(cap, _sphere_min(120, 10))]
    assert main([*base, "-o", str(tmp_path / "b"), "--particle-diameter", "prot:200"]) == 0
    rec = json.loads((tmp_path / "b" / "t_run.json").read_text())["postprocess_parameters"]
    assert rec["species"]["center_min_distance"] == [15.0, 10.0]
    # a score threshold for one species: recorded per species, and no particle of it scores below it
    assert main([*base, "-o", str(tmp_path / "s"), "--min-score", "prot:0.99"]) == 0
    rec = json.loads((tmp_path / "s" / "t_run.json").read_text())["postprocess_parameters"]
    assert rec["species"]["min_score"] == [DetectParams().postprocess_kwargs()["min_score"], 0.99]
    import pandas as pd

    rows = pd.read_csv(tmp_path / "s" / "t_centers.csv")
    assert not ((rows["class"] == "prot") & (rows["score"] < 0.99)).any()
    capsys.readouterr()
    # a species the model does not know: one line, exit 2, nothing written
    assert main([*base, "-o", str(tmp_path / "c"), "--particle-diameter", "rubisco:100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rubisco" in err[0] and "ribo, prot" in err[0]
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    # a malformed value: argparse's one line
    with pytest.raises(SystemExit) as e:
        main([*base, "-o", str(tmp_path / "d"), "--particle-diameter", "prot:x"])
    assert e.value.code == 2


def test_per_species_diameters_in_a_yaml_config_round_trip(tmp_path):
    import argparse

    from cryodet_dask.cli.detect import params_from_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("particle_diameter:\n  ribo: 300\n  prot: 120.5\n")
    p = params_from_args(argparse.Namespace(config=str(cfg)))
    assert p.particle_diameter == {"ribo": 300.0, "prot": 120.5}
    import yaml

    cfg.write_text(yaml.safe_dump(p.to_dict()))  # what --save-config writes reads back the same
    assert params_from_args(argparse.Namespace(config=str(cfg))) == p
    cfg.write_text("particle_diameter:\n  ribo: -3\n")
    with pytest.raises(ParameterError, match="particle_diameter"):
        params_from_args(argparse.Namespace(config=str(cfg)))


def test_per_species_score_thresholds_resolve_and_are_refused_where_they_cannot_apply():
    kw, sp = DetectParams(min_score={"small": 0.3}).resolve_postprocess(10.0, MODEL)
    assert sp.min_score == (kw["min_score"], 0.3, kw["min_score"])  # the others: the default
    assert kw["min_score"] == DetectParams().postprocess_kwargs()["min_score"]
    _, sp = DetectParams(min_score={"big": 0.0}, particle_diameter=150.0).resolve_postprocess(10.0, MODEL)
    assert sp.min_score[0] == 0.0 and sp.center_min_distance == ()
    assert DetectParams(min_score=0.2).resolve_postprocess(10.0, MODEL)[1].min_score == ()  # one for all
    with pytest.raises(ParameterError, match="--min-score: rubisco is not a species of this model"):
        DetectParams(min_score={"rubisco": 0.3}).resolve_postprocess(10.0, MODEL)
    with pytest.raises(ParameterError, match="species-agnostic"):
        DetectParams(min_score={"big": 0.3}).resolve_postprocess(10.0, {})
    with pytest.raises(ParameterError, match="minimum scores must be finite"):
        DetectParams(min_score={"big": -0.3})
    with pytest.raises(ParameterError, match="copick-safe"):
        DetectParams(min_score={"a b": 0.3})


def test_cli_per_species_score_thresholds(tmp_path, capsys):
    import argparse

    from cryodet_dask.cli import main
    from cryodet_dask.cli._common import min_score_arg
    from cryodet_dask.cli.detect import params_from_args

    assert min_score_arg("0.25") == 0.25
    assert min_score_arg("ribo:0.3, prot:0") == {"ribo": 0.3, "prot": 0.0}
    for bad in ("ribo:-1", "ribo:0.3,ribo:0.4", ":0.3", "ribo:nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            min_score_arg(bad)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("min_score:\n  ribo: 0.3\n")
    p = params_from_args(argparse.Namespace(config=str(cfg)))
    assert p.min_score == {"ribo": 0.3}
    import yaml

    cfg.write_text(yaml.safe_dump(p.to_dict()))
    assert params_from_args(argparse.Namespace(config=str(cfg))) == p
    # postprocess has the maps alone (no species): one line, exit 2, nothing written
    import numpy as np
    import zarr

    g = zarr.open_group(str(tmp_path / "maps.zarr"), mode="w")
    for name in ("mask", "center"):
        g.create_array(name, data=np.zeros((8, 8, 8), np.float32), chunks=(8, 8, 8))
    assert main(["-q", "postprocess", str(tmp_path / "maps.zarr"), "-o", str(tmp_path / "o"), "--voxel-size", "10",
                 "--min-score", "ribo:0.3"]) == 2
    assert not (tmp_path / "o").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--min-score" in err[0]
