"""The detect command line: the seed's flags, long options, config files, and argument errors."""

from __future__ import annotations


import dataclasses
import math

import pytest
import yaml

from cryodet_dask.cli import build_parser, main
from cryodet_dask.cli.detect import params_from_args
from cryodet_dask.pipeline.detect import DetectParams, detect
from cryodet_dask.errors import ParameterError
from cryodet_dask.postprocessing import PostprocessParams


def parse(*argv: str):
    args = build_parser().parse_args(["detect", *argv])
    return args, params_from_args(args)


def test_defaults_are_the_validated_ones():
    _, p = parse("t.mrc")
    kw = p.postprocess_kwargs()
    assert (kw["mask_threshold"], kw["center_threshold"], kw["remove_min_size"]) == (0.5, 0.05, 32)
    assert (p.check_center, p.filter_outlier, p.neighbor_number, p.distance_threshold) == (True, False, 3, 30.0)
    # the seed's flags still parse with their meaning
    _, s = parse("t.mrc", "-mt", "0.1", "-ct", "0.1", "-rs", "64", "-filter_outlier", "true")
    assert (s.mask_threshold, s.center_threshold, s.remove_min_size, s.filter_outlier) == (0.1, 0.1, 64, True)
    assert p == DetectParams()
    assert kw == dataclasses.asdict(PostprocessParams())  # every default comes from PostprocessParams


def test_fusion_and_fragment_flags():
    _, p = parse("t.mrc", "--center-min-distance", "4.5", "--min-particle-size", "20")
    assert p.postprocess_kwargs()["center_min_distance"] == 4.5 and p.min_particle_size == 20
    # the particle diameter (Å) sets D and -rs from the voxel size ...
    _, p = parse("t.mrc", "--particle-diameter", "200")
    kw = p.postprocess_kwargs(voxel_size=10.0)
    assert kw["center_min_distance"] == 10.0 and kw["remove_min_size"] == round(math.pi / 6 * 10.0 ** 3)
    with pytest.raises(ParameterError, match="voxel size"):
        p.postprocess_kwargs()  # ... which it needs
    # ... unless they are given
    _, p = parse("t.mrc", "--particle-diameter", "200", "-rs", "7", "--center-min-distance", "0")
    kw = p.postprocess_kwargs(voxel_size=10.0)
    assert kw["center_min_distance"] == 0 and kw["remove_min_size"] == 7


def test_fusion_keys_in_config(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("center_min_distance: 3.5\nmin_particle_size: 9\nparticle_diameter: 150\n")
    _, p = parse("t.mrc", "--config", str(cfg))
    assert (p.center_min_distance, p.min_particle_size, p.particle_diameter) == (3.5, 9, 150)
    assert p.postprocess_kwargs(voxel_size=10.0)["remove_min_size"] == round(math.pi / 6 * 7.5 ** 3)


def test_seed_spellings():
    args, p = parse("-tomo", "t.mrc", "-m", "seg.pt", "-c", "cen.pt", "-o", "out", "-ps", "64", "-vs", "13.5",
                    "-mt", "0.25", "-ct", "0.3", "-rs", "100", "-check_center", "false", "-filter_outlier",
                    "False", "-nn", "2", "-dt", "12.5")
    assert args.tomo_flag == ["t.mrc"] and args.out == "out"
    assert p.segnet == "seg.pt" and p.centernet == "cen.pt"
    assert p.chunks == (64,) and p.voxel_size == 13.5
    assert (p.mask_threshold, p.center_threshold, p.remove_min_size) == (0.25, 0.3, 100)
    assert p.check_center is False and p.filter_outlier is False  # the seed took any string as True
    assert p.neighbor_number == 2 and p.distance_threshold == 12.5  # floats where floats are meant


@pytest.mark.parametrize("argv, expected", [
    (["--no-check-center"], False), (["--check-center"], True), (["-check_center", "true"], True),
    (["-check_center", "0"], False), (["-check_center"], True),
])
def test_boolean_switches(argv, expected):
    _, p = parse("t.mrc", *argv)
    assert p.check_center is expected


def test_long_options():
    _, p = parse("t.mrc", "--mask-threshold", "0.5", "--distance-threshold", "7", "--connectivity", "3",
                 "--chunks", "32,64,64", "--no-filter-outlier")
    assert p.mask_threshold == 0.5 and p.distance_threshold == 7.0 and p.connectivity == 3
    assert p.chunks == (32, 64, 64) and p.filter_outlier is False


@pytest.mark.parametrize("argv, flag", [
    (["-mt", "1.5"], "-mt/--mask-threshold"), (["-ct", "-0.1"], "-ct/--center-threshold"),
    (["-rs", "-3"], "-rs/--remove-min-size"), (["-dt", "-1"], "-dt/--distance-threshold"),
    (["-nn", "2.5"], "-nn/--neighbor-number"), (["-check_center", "maybe"], "-check_center"),
    (["-ps", "0"], "-ps/--chunks"), (["-vs", "0"], "-vs/--voxel-size"), (["--connectivity", "4"], "--connectivity"),
    (["--center-min-distance", "-1"], "--center-min-distance"), (["--center-min-distance", "nan"], "--center-min-distance"),
    (["--min-particle-size", "-1"], "--min-particle-size"), (["--particle-diameter", "0"], "--particle-diameter"),
])
def test_bad_arguments_name_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(["detect", "t.mrc", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err


def test_config_round_trip(tmp_path):
    cfg = tmp_path / "run.yaml"
    code = main(["detect", "-mt", "0.3", "--no-check-center", "-ps", "96", "--save-config", str(cfg)])
    assert code == 0
    saved = yaml.safe_load(cfg.read_text())
    assert saved["mask_threshold"] == 0.3 and saved["check_center"] is False
    _, p = parse("t.mrc", "--config", str(cfg))
    assert p.mask_threshold == 0.3 and p.check_center is False and p.chunks == (96,)
    _, p = parse("t.mrc", "--config", str(cfg), "-mt", "0.4")  # flags override the file
    assert p.mask_threshold == 0.4 and p.check_center is False


def test_config_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mask_treshold: 0.2\n")
    assert main(["detect", "t.mrc", "--config", str(bad)]) == 2
    assert "unknown parameter(s) mask_treshold" in capsys.readouterr().err
    evil = tmp_path / "evil.yaml"
    evil.write_text("mask_threshold: !!python/object/apply:os.system ['echo pwned > %s']\n" % (tmp_path / "p"))
    assert main(["detect", "t.mrc", "--config", str(evil)]) == 2
    assert not (tmp_path / "p").exists()  # safe YAML: nothing executed
    assert "not valid YAML" in capsys.readouterr().err
    out_of_range = tmp_path / "r.yaml"
    out_of_range.write_text("mask_threshold: 3\n")
    assert main(["detect", "t.mrc", "--config", str(out_of_range)]) == 2
    assert "r.yaml: mask_threshold: expected a number in [0, 1], got '3'" in capsys.readouterr().err


def test_missing_tomogram_is_a_clean_error(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "nope.mrc"), "-o", str(tmp_path / "o"), "--cluster", "threads"]) == 2
    err = capsys.readouterr().err
    assert "nope.mrc" in err and "no such file" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_particle_diameter_without_voxel_size_is_a_clean_error(tmp_path, capsys):
    import mrcfile
    import numpy as np

    tomo = tmp_path / "novs.mrc"
    with mrcfile.new(tomo) as mrc:
        mrc.set_data(np.zeros((8, 8, 8), np.float32))
        mrc.voxel_size = 0.0
    out = tmp_path / "o"
    assert main(["detect", str(tomo), "-o", str(out), "--cluster", "threads", "--particle-diameter", "200"]) == 2
    err = capsys.readouterr().err
    assert "--particle-diameter needs the voxel size" in err and err.count("\n") == 1
    assert not out.exists()
    with pytest.raises(ParameterError, match="voxel size"):
        detect(np.zeros((8, 8, 8), np.float32), tmp_path / "api", particle_diameter=200.0)
    assert not (tmp_path / "api").exists()


def test_progress_bars_only_on_a_terminal_unless_asked(monkeypatch):
    import sys

    from cryodet_dask.cli import build_parser
    from cryodet_dask.cli._common import show_progress

    def flags(*argv):
        return build_parser().parse_args([*argv, "detect", "t.mrc"])

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not show_progress(flags())  # a redirected log: no bars
    assert show_progress(flags("--progress"))
    assert not show_progress(flags("-q", "--progress"))  # -q wins
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(flags()) and not show_progress(flags("--no-progress"))


@pytest.mark.parametrize("argv, dest, value", [
    (["postprocess", "p.zarr", "--output", "o"], "out", "o"),
    (["postprocess", "p.zarr", "-o", "o", "--tomo-name", "TS_01"], "tomogram_name", "TS_01"),
    (["evaluate", "a.csv", "b.csv", "--radius-angst", "50"], "radius_angst", 50.0),
    (["simulate", "out", "--voltage", "200"], "voltage", 200.0),
])
def test_old_flag_spellings_still_work_with_a_note(argv, dest, value, capsys):
    """One vocabulary (-o/--out, --tomogram-name, --radius-angstrom, --voltage-kv); old spellings are hidden
    aliases that say what to use instead."""
    from cryodet_dask.cli import build_parser

    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert "is deprecated" in err and len(err.strip().splitlines()) == 1
    helptext = build_parser()._subparsers._group_actions[0].choices[argv[0]].format_help()
    assert argv[argv.index(next(a for a in argv if a.startswith("--") and a not in ("-o",)))] not in helptext.split()
