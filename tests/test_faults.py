"""Fault table of ``detect`` (issue 15, items 3-6): batch identity, safe cleanup, one run per output folder,
configuration files validated like flags.

Every case checks the exit status, that an error is one line, and that the outputs are either complete
and identical to an undisturbed run (MRC, TXT, CSV, STAR byte for byte, the Zarr label image voxel for voxel
with its attributes) or absent.  A 16 x 40 x 40 noise tomogram and a tiny random-weight network keep each
run around a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cryodet_dask.cli import main
from cryodet_dask.cli.detect import TYPES
from cryodet_dask.pipeline import LOCK_NAME, detect, output_lock
from cryodet_dask.errors import OutputBusyError
from cryodet_dask.testing import make_mrc, tiny_two_head_checkpoint

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
#: every post-processing parameter explicit: the cases must not depend on the shipped defaults
FLAGS = ["--cluster", "threads", "-ps", "32", "--halo", "16", "-mt", "0.5", "-ct", "0.1", "-rs", "2",
         "--no-filter-outlier", "--check-center", "--center-min-distance", "0", "--min-particle-size", "0",
         "--min-score", "0", "--connectivity", "1", "--device", "cpu"]
FILES = ("_labels.mrc", "_centers.txt", "_centers.csv", "_centers.star")


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(16, 40, 40)).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, net):
    d = tmp_path_factory.mktemp("in")
    make_mrc(d / "tomo.mrc", _volume(1), voxel_size=10.0)
    return d


def _argv(tomos, out, net, *extra):
    return ["-q", "detect", *map(str, tomos), "-m", str(net), "-o", str(out), *FLAGS, *extra]


@pytest.fixture(scope="module")
def reference(inputs, net, tmp_path_factory):
    """The undisturbed run every case is compared with."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_argv([inputs / "tomo.mrc"], out, net)) == 0
    assert json.loads((out / "run.json").read_text())["particles"] > 10  # the comparisons compare something
    return out


def same_outputs(a: Path, b: Path, name: str = "tomo", name_b: str | None = None,
                 files: tuple[str, ...] = FILES) -> None:
    name_b = name_b or name
    for suffix in files:
        if suffix == "_centers.star" and name_b != name:  # rlnTomoName is the name: compare the rest
            ta, tb = (p.read_text().replace(n, "NAME") for p, n in ((a / f"{name}{suffix}", name),
                                                                    (b / f"{name_b}{suffix}", name_b)))
            assert ta == tb, suffix
            continue
        assert (a / f"{name}{suffix}").read_bytes() == (b / f"{name_b}{suffix}").read_bytes(), suffix
    za = zarr.open_group(str(a / f"{name}_labels.zarr"), mode="r")
    zb = zarr.open_group(str(b / f"{name_b}_labels.zarr"), mode="r")
    assert np.array_equal(za["0"][...], zb["0"][...])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cryodet-dask")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ refused before any work: exit 2, nothing written


def _write_cfg(tmp: Path, text: str) -> list[str]:
    cfg = tmp / "c.yaml"
    cfg.write_text(text)
    return ["--config", str(cfg)]


def _spaced_name(tmp: Path, inputs: Path) -> list[str]:
    shutil.copy(inputs / "tomo.mrc", tmp / "my tomo.mrc")
    return [str(tmp / "my tomo.mrc")]


def _star_keyword_name(tmp: Path, inputs: Path) -> list[str]:
    shutil.copy(inputs / "tomo.mrc", tmp / "data_x.mrc")
    return [str(tmp / "data_x.mrc")]


def _header_voxel_size(vs):
    def make(tmp: Path, inputs: Path) -> list[str]:
        make_mrc(tmp / "odd.mrc", _volume(1), voxel_size=vs)
        return [str(tmp / "odd.mrc")]
    return make


def _batch_with_one_bad_name(tmp: Path, inputs: Path) -> list[str]:
    shutil.copy(inputs / "tomo.mrc", tmp / "fine.mrc")
    shutil.copy(inputs / "tomo.mrc", tmp / "#bad.mrc")
    return [str(tmp / "fine.mrc"), str(tmp / "#bad.mrc")]


def _batch_with_two(tmp: Path, inputs: Path) -> list[str]:
    shutil.copy(inputs / "tomo.mrc", tmp / "a.mrc")
    shutil.copy(inputs / "tomo.mrc", tmp / "b.mrc")
    return [str(tmp / "a.mrc"), str(tmp / "b.mrc")]


#: (id, extra flags or a function (tmp) -> extra flags, tomograms or a function (tmp, inputs) -> tomograms,
#:  text the one-line error must contain)
REFUSED = [
    ("yaml-rescale-not-a-boolean", lambda t: _write_cfg(t, 'rescale: "maybe"\n'), None,
     "rescale: expected true or false, got 'maybe'"),
    ("yaml-keep-intermediate-number", lambda t: _write_cfg(t, "keep_intermediate: 2\n"), None,
     "keep_intermediate: expected true or false"),
    ("yaml-threshold-as-text", lambda t: _write_cfg(t, "mask_threshold: high\n"), None,
     "mask_threshold: expected a number in [0, 1]"),
    ("yaml-threshold-boolean", lambda t: _write_cfg(t, "mask_threshold: true\n"), None,
     "mask_threshold: expected a number in [0, 1]"),
    ("yaml-neighbour-count-fraction", lambda t: _write_cfg(t, "neighbor_number: 2.5\n"), None,
     "neighbor_number: expected a whole number"),
    ("yaml-connectivity-4", lambda t: _write_cfg(t, "connectivity: 4\n"), None, "connectivity: expected 1, 2 or 3"),
    ("yaml-chunks-zero", lambda t: _write_cfg(t, "chunks: [0, 32, 32]\n"), None,
     "chunks: expected one or three positive integers"),
    ("yaml-voxel-size-inf", lambda t: _write_cfg(t, "voxel_size: .inf\n"), None,
     "voxel_size: expected a finite positive number"),
    ("yaml-voxel-size-5000", lambda t: _write_cfg(t, "voxel_size: 5000\n"), None,
     "voxel_size: expected a voxel size between 0.1 and 1000 Å"),
    ("yaml-formats-typo", lambda t: _write_cfg(t, "formats: [csv, stra]\n"), None, "formats: unknown format(s) stra"),
    ("yaml-device-gpu", lambda t: _write_cfg(t, "device: gpu\n"), None, "device: expected one of auto, cpu, cuda"),
    ("yaml-batch-size-0", lambda t: _write_cfg(t, "batch_size: 0\n"), None, "batch_size: expected a whole number >= 1"),
    ("yaml-threshold-null", lambda t: _write_cfg(t, "mask_threshold:\n"), None, "mask_threshold: needs a value"),
    ("yaml-nested", lambda t: _write_cfg(t, "chunks: {z: 32}\n"), None, "chunks: expected a value"),
    ("flag-formats-typo", ["--formats", "csv,stra"], None, "--formats: unknown format(s) stra"),
    ("flag-formats-empty", ["--formats", ","], None, "--formats: expected at least one"),
    ("flag-voxel-size-inf", ["-vs", "inf"], None, "-vs/--voxel-size: expected a finite positive number"),
    ("flag-voxel-size-nan", ["-vs", "nan"], None, "-vs/--voxel-size"),
    ("flag-voxel-size-tiny", ["-vs", "0.01"], None, "between 0.1 and 1000 Å"),
    ("flag-voxel-size-huge", ["-vs", "1e6"], None, "between 0.1 and 1000 Å"),
    ("flag-batch-size-0", ["--batch-size", "0"], None, "--batch-size: expected a whole number >= 1"),
    ("flag-tile-zero", ["--tile", "0"], None, "--tile: expected"),
    ("flag-tile-below-halo", ["--tile", "4"], None, "--tile 4 is smaller than the inference halo"),
    ("yaml-tile-text", lambda t: _write_cfg(t, "tile: big\n"), None, "tile: expected"),
    ("flag-particle-diameter-inf", ["--particle-diameter", "inf"], None, "--particle-diameter"),
    ("header-voxel-size-5000", [], _header_voxel_size(5000.0), "voxel size 5000.0 Å (from the file header)"),
    ("header-voxel-size-0.01", [], _header_voxel_size(0.01), "give -vs/--voxel-size"),
    ("name-with-space", [], _spaced_name, "cannot be the STAR file's rlnTomoName (it contains white space)"),
    ("name-star-keyword", [], _star_keyword_name, "cannot be the STAR file's rlnTomoName (it starts with a STAR"),
    ("batch-one-bad-name", [], _batch_with_one_bad_name, "it starts with '#'"),
    ("flag-tomogram-name-space", ["--tomogram-name", "TS 01"], None, "cannot be the STAR file's rlnTomoName"),
    ("flag-tomogram-name-in-a-batch", ["--tomogram-name", "TS_01"], _batch_with_two, "names one tomogram"),
    ("flag-polarity-typo", ["--polarity", "inverted"], None, "--polarity: expected one of both, as-is"),
    ("yaml-nan-policy-typo", lambda t: _write_cfg(t, "nan_policy: ignore\n"), None,
     "nan_policy: expected one of error, zero"),
    ("flag-memory-limit-banana", ["--memory-limit", "banana"], None, "must be a size such as 4GiB or 500MB"),
    ("flag-memory-limit-10MiB", ["--memory-limit", "10MiB"], None, "below 64 MiB"),
    ("flag-workers-negative", ["--workers", "-2"], None, "--workers: expected a whole number >= 1"),
    ("flag-workers-zero", ["--workers", "0"], None, "--workers: expected a whole number >= 1"),
    ("flag-threads-zero", ["--threads-per-worker", "0"], None, "expected a whole number >= 1"),
    ("flag-worker-timeout-zero", ["--worker-timeout", "0"], None, "expected a positive number of seconds"),
    ("flag-adapt-reversed", ["--cluster", "slurm", "--adapt", "4,1"], None, "1 <= MIN <= MAX"),
    # the local cluster is sized before it starts: a limit below one prediction task (~370 MiB here)
    ("memory-limit-below-one-task", ["--cluster", "local", "--workers", "1", "--memory-limit", "300MiB"], None,
     "one prediction task needs about"),
]
if not torch.cuda.is_available():
    REFUSED.append(("device-cuda-without-gpu", ["--device", "cuda"], None, "no CUDA GPU is visible"))


@pytest.mark.parametrize("case, extra, tomos, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_any_work(case, extra, tomos, message, inputs, net, tmp_path, capsys):
    extra = extra(tmp_path) if callable(extra) else extra
    tomos = tomos(tmp_path, inputs) if tomos else [inputs / "tomo.mrc"]
    out = tmp_path / "o"
    t0 = time.monotonic()
    try:
        code = main(_argv(tomos, out, net, *extra))
    except SystemExit as exc:  # argument errors leave through argparse
        code = exc.code
    assert code == 2
    assert message in one_line_error(capsys)
    assert not out.exists()  # nothing written
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("text, field, value", [
    ('rescale: "false"\n', "rescale", False), ('keep_intermediate: "false"\n', "keep_intermediate", False),
    ("keep_intermediate: 'no'\n", "keep_intermediate", False), ("rescale: 'yes'\n", "rescale", True),
    ("check_center: '0'\n", "check_center", False), ("filter_outlier: off\n", "filter_outlier", False),
    ('mask_threshold: "0.3"\n', "mask_threshold", 0.3), ("chunks: 64,96,96\n", "chunks", (64, 96, 96)),
    ("chunks: [64, 96, 96]\n", "chunks", (64, 96, 96)), ("formats: CSV,star\n", "formats", ("csv", "star")),
    ("device: CPU\n", "device", "cpu"), ("voxel_size: '13.48'\n", "voxel_size", 13.48),
    ("voxel_size:\n", "voxel_size", None),
])
def test_config_values_go_through_the_flag_parsers(tmp_path, text, field, value):
    from cryodet_dask.cli import build_parser
    from cryodet_dask.cli.detect import params_from_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    p = params_from_args(build_parser().parse_args(["detect", "t.mrc", "--config", str(cfg)]))
    assert getattr(p, field) == value and type(getattr(p, field)) is type(value)


def test_every_flag_uses_the_config_parser():
    import argparse

    from cryodet_dask.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    types = {a.dest: a.type for a in sub.choices["detect"]._actions if a.dest in TYPES and a.type is not None}
    assert set(TYPES) - set(types) == {"rescale"}  # --rescale takes no value
    for dest, fn in types.items():
        assert fn is TYPES[dest], dest


def test_api_refuses_non_boolean_switches(tmp_path):
    from cryodet_dask.errors import ParameterError

    for kw in ({"rescale": "false"}, {"keep_intermediate": "false"}, {"formats": ("csv", "stra")},
               {"voxel_size": float("inf")}, {"batch_size": 0}, {"device": "gpu"}):
        with pytest.raises(ParameterError):
            detect(np.zeros((8, 8, 8), np.float32), tmp_path / "api", **kw)
    assert not (tmp_path / "api").exists()


# ------------------------------------------------------------------ configs that now mean what they say


def test_quoted_false_in_a_config_is_false(inputs, net, reference, tmp_path):
    """``keep_intermediate: "false"`` used to act as true: the intermediates now go, the outputs are the same."""
    out = tmp_path / "o"
    cfg = tmp_path / "c.yaml"
    cfg.write_text('keep_intermediate: "false"\nrescale: "false"\n')
    assert main(_argv([inputs / "tomo.mrc"], out, net, "--config", str(cfg))) == 0
    same_outputs(reference, out)
    assert not (out / "tomo.zarr").exists() and not (out / "tomo_prediction.zarr").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["keep_intermediate"] is False and run["parameters"]["rescale"] is False


# ------------------------------------------------------------------ batch identity


def test_batch_with_colliding_stems(inputs, net, reference, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(inputs / "tomo.mrc", tmp_path / "a" / "tomo.mrc")
    make_mrc(tmp_path / "b" / "tomo.mrc", _volume(2), voxel_size=10.0)
    b_alone = tmp_path / "b_alone"
    assert main(_argv([tmp_path / "b" / "tomo.mrc"], b_alone, net)) == 0

    out = tmp_path / "batch"
    tomos = [tmp_path / "a" / "tomo.mrc", tmp_path / "b" / "tomo.mrc"]
    argv = ["detect", *map(str, tomos), "-m", str(net), "-o", str(out), *FLAGS]
    assert main(argv) == 0
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 2 and all(f.startswith("tomo-") and len(f) == len("tomo-") + 8 for f in folders)
    import hashlib

    names = [f"tomo-{hashlib.sha1(str(t.resolve()).encode()).hexdigest()[:8]}" for t in tomos]
    assert sorted(names) == folders  # stable: from the resolved path
    same_outputs(reference, out / names[0], "tomo", names[0])
    same_outputs(b_alone, out / names[1], "tomo", names[1])
    capsys.readouterr()

    # the same batch again: both recognized as complete (content identity, weights, parameters)
    stamp = {n: (out / n / f"{n}_centers.csv").stat().st_mtime_ns for n in names}
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("outputs complete") == 2
    assert stamp == {n: (out / n / f"{n}_centers.csv").stat().st_mtime_ns for n in names}

    # b's content changes (same name, same size): b is recomputed, a is not
    make_mrc(tmp_path / "b" / "tomo.mrc", _volume(3), voxel_size=10.0)
    b3 = tmp_path / "b3_alone"
    assert main(_argv([tmp_path / "b" / "tomo.mrc"], b3, net)) == 0
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{tomos[0]}: outputs complete" in printed and f"{tomos[1]}: outputs complete" not in printed
    same_outputs(b3, out / names[1], "tomo", names[1])
    same_outputs(reference, out / names[0], "tomo", names[0])

    # the weights change in place: everything is recomputed
    w = tmp_path / "w.pt"
    shutil.copy(net, w)
    argv_w = ["detect", *map(str, tomos), "-m", str(w), "-o", str(tmp_path / "bw"), *FLAGS]
    assert main(argv_w) == 0
    tiny_two_head_checkpoint(w, seed=11)
    capsys.readouterr()
    assert main(argv_w) == 0
    printed = capsys.readouterr().out
    assert "outputs complete" not in printed and printed.count("chunks computed 4") == 2


def test_batch_with_the_same_file_twice(inputs, net, reference, tmp_path, capsys):
    out = tmp_path / "o"
    other = tmp_path / "x.mrc"
    make_mrc(other, _volume(2), voxel_size=10.0)
    same = [inputs / "tomo.mrc", Path(os.path.relpath(inputs / "tomo.mrc"))]
    assert main(["detect", *map(str, same), str(other), "-m", str(net), "-o", str(out), *FLAGS]) == 0
    assert "given more than once" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["tomo", "x"]  # no collision left: plain names
    same_outputs(reference, out / "tomo")


# ------------------------------------------------------------------ safe cleanup


def test_keep_intermediate_false_never_deletes_the_input_store(inputs, net, reference, tmp_path):
    """The user's own Zarr in the output folder, given as an absolute path: kept."""
    from cryodet_dask.io import convert, load

    out = tmp_path / "o"
    mine = out / "tomo.zarr"
    convert(inputs / "tomo.mrc", mine, chunks=(32,))
    before = load(mine).data.compute()
    for given in (mine.resolve(), Path(os.path.relpath(mine)), out / "." / "tomo.zarr"):
        assert main(_argv([given], out, net, "--keep-intermediate", "false")) == 0
        assert np.array_equal(load(mine).data.compute(), before)
        assert not (out / "tomo_prediction.zarr").exists()
        same_outputs(reference, out)


def test_keep_intermediate_false_removes_only_its_intermediates(inputs, net, reference, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(inputs / "tomo.mrc", out / "tomo.mrc")  # the input itself in the output folder
    (out / "other.zarr").mkdir()  # someone else's store
    assert main(_argv([out / "tomo.mrc"], out, net, "--keep-intermediate", "false")) == 0
    assert (out / "tomo.mrc").read_bytes() == (inputs / "tomo.mrc").read_bytes()
    assert (out / "other.zarr").is_dir()
    assert not (out / "tomo.zarr").exists() and not (out / "tomo_prediction.zarr").exists()
    same_outputs(reference, out)


def test_formats_subset_never_deletes_other_outputs(inputs, net, reference, tmp_path):
    """A ``NAME_labels.mrc`` that this run does not write (``--formats csv``) is left alone."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "tomo_labels.mrc").write_bytes(b"the user's own file")
    assert main(_argv([inputs / "tomo.mrc"], out, net, "--formats", "csv")) == 0
    assert (out / "tomo_labels.mrc").read_bytes() == b"the user's own file"
    assert (out / "tomo_centers.csv").read_bytes() == (reference / "tomo_centers.csv").read_bytes()
    run = json.loads((out / "run.json").read_text())
    assert list(run["outputs"]) == ["csv"] and Path(run["outputs"]["csv"]).is_absolute()
    # after a full run, new parameters with --formats csv replace the CSV only
    shutil.rmtree(out)
    shutil.copytree(reference, out)
    mrc = (out / "tomo_labels.mrc").read_bytes()
    assert main(_argv([inputs / "tomo.mrc"], out, net, "--formats", "csv", "-mt", "0.6")) == 0
    assert (out / "tomo_labels.mrc").read_bytes() == mrc
    assert (out / "tomo_centers.csv").read_bytes() != (reference / "tomo_centers.csv").read_bytes()


# ------------------------------------------------------------------ one run per output folder


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    code = (f"import time, sys; from cryodet_dask.pipeline.rundir import output_lock\n"
            f"with output_lock({str(folder)!r}):\n    print('held', flush=True); time.sleep({seconds})\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_into_a_locked_folder_exits_at_once(inputs, net, reference, tmp_path, capsys):
    out = tmp_path / "o"
    shutil.copytree(reference, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    holder = _holder(out, 60)
    try:
        t0 = time.monotonic()
        code = main(_argv([inputs / "tomo.mrc"], out, net, "-mt", "0.6"))
        took = time.monotonic() - t0
        line = one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 75
    assert f"pid {holder.pid} on host " in line and "in use by another cryodet-dask run" in line
    assert took < 10
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_NAME}
    assert after == before  # nothing touched
    same_outputs(reference, out)


def test_batch_into_a_locked_folder_exits_at_once(inputs, net, tmp_path, capsys):
    out = tmp_path / "o"
    other = tmp_path / "x.mrc"
    make_mrc(other, _volume(2), voxel_size=10.0)
    holder = _holder(out, 60)
    try:
        code = main(["detect", str(inputs / "tomo.mrc"), str(other), "-m", str(net), "-o", str(out), *FLAGS])
        line = one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 75 and f"pid {holder.pid}" in line
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # the killed holder's lock file, nothing else


def test_lock_of_a_dead_process_does_not_block(inputs, net, reference, tmp_path):
    out = tmp_path / "o"
    holder = _holder(out, 60)
    holder.kill()  # killed while holding the lock: the kernel released it, the file stays
    holder.wait()
    assert (out / LOCK_NAME).exists()
    (out / LOCK_NAME).write_text("pid=999999 host=gone\n")
    assert main(_argv([inputs / "tomo.mrc"], out, net)) == 0
    same_outputs(reference, out)
    assert not (out / LOCK_NAME).exists()  # released and removed at the end of the run


def test_lock_between_threads_of_one_process(inputs, net, tmp_path):
    out = tmp_path / "o"
    held, release = threading.Event(), threading.Event()

    def hold():
        with output_lock(out):
            held.set()
            release.wait(30)

    th = threading.Thread(target=hold)
    th.start()
    try:
        assert held.wait(30)
        with pytest.raises(OutputBusyError, match="in use by another detection run in this process"):
            detect(inputs / "tomo.mrc", out, segnet=str(net), chunks=(32,), halo=(16,), device="cpu")
    finally:
        release.set()
        th.join()
    assert not out.exists()  # created by the lock, left empty, removed


def test_lock_is_reentrant_in_one_thread(tmp_path):
    deep = tmp_path / "o" / "p" / "q"
    with output_lock(deep):
        assert (deep / LOCK_NAME).read_text().startswith(f"pid={os.getpid()} host=")
        with output_lock(deep):
            pass
        assert (deep / LOCK_NAME).exists()
    assert not (tmp_path / "o").exists()  # every folder it created, left empty, is removed


def test_rescaled_store_input_changed_in_place_is_rescaled_again(net, tmp_path):
    """A Zarr input is not converted, so its rescaled copy must be recognized by the input's content."""
    from cryodet_dask import models
    from cryodet_dask.io import convert

    torch.manual_seed(3)
    coarse = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"),
                                                         voxel_size=20.0)), tmp_path / "coarse.pt")
    store = tmp_path / "in" / "tomo.zarr"
    make_mrc(tmp_path / "v1.mrc", _volume(1), voxel_size=10.0)
    make_mrc(tmp_path / "v2.mrc", _volume(2), voxel_size=10.0)
    convert(tmp_path / "v1.mrc", store, chunks=(32,))
    argv = lambda out: _argv([store], out, coarse, "--rescale", "-mt", "0.3", "-rs", "1")  # noqa: E731
    out = tmp_path / "o"
    assert main(argv(out)) == 0
    convert(tmp_path / "v2.mrc", store, chunks=(32,), overwrite=True)  # new content, same name
    assert main(argv(out)) == 0
    fresh = tmp_path / "fresh"
    assert main(argv(fresh)) == 0
    assert json.loads((fresh / "run.json").read_text())["particles"] > 0
    same_outputs(fresh, out)


@pytest.mark.parametrize("where", ["a-file", "below-a-file"])
def test_output_folder_that_cannot_be_one(where, inputs, net, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("not a folder")
    out = f if where == "a-file" else f / "sub"
    assert main(_argv([inputs / "tomo.mrc"], out, net)) == 2
    assert "cannot be used as the output folder" in one_line_error(capsys)
    assert f.read_text() == "not a folder"


def test_batch_particle_diameter_needs_every_voxel_size_before_any_work(inputs, net, tmp_path, capsys):
    import mrcfile

    novs = tmp_path / "novs.mrc"
    with mrcfile.new(novs) as m:
        m.set_data(_volume(2))
        m.voxel_size = 0.0
    out = tmp_path / "o"
    assert main(_argv([inputs / "tomo.mrc", novs], out, net, "--particle-diameter", "100")) == 2
    assert "--particle-diameter needs the voxel size" in one_line_error(capsys)
    assert not out.exists()


def test_two_detect_runs_into_one_folder(net, tmp_path, capsys):
    """The original fault: two runs into one folder deleted each other's temporaries.  Now the second
    exits at once (75, naming the first), and the first completes identical to an undisturbed run."""
    tomo = make_mrc(tmp_path / "tomo.mrc", np.random.default_rng(4).normal(size=(32, 96, 96)).astype(np.float32),
                    voxel_size=10.0)
    ref = tmp_path / "ref"
    assert main(_argv([tomo], ref, net)) == 0
    assert json.loads((ref / "run.json").read_text())["particles"] > 0
    out = tmp_path / "o"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    first = subprocess.Popen([sys.executable, "-m", "cryodet_dask", *_argv([tomo], out, net)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        done = out / ".tomo_prediction.zarr.partial" / ".done"
        t0 = time.monotonic()
        while not (done.is_dir() and os.listdir(done)) and first.poll() is None:
            assert time.monotonic() - t0 < 120
            time.sleep(0.01)
        assert first.poll() is None, first.communicate()
        code = main(_argv([tomo], out, net))
        line = one_line_error(capsys)
    finally:
        first.communicate(timeout=300)
    assert code == 75 and f"pid {first.pid} on host" in line
    assert first.returncode == 0
    same_outputs(ref, out)
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporaries, lock released


def test_tomogram_name_ties_the_star_file_to_the_tilt_series(inputs, net, reference, tmp_path):
    """rec_TS_01.mrc with --tomogram-name TS_01: the STAR names TS_01; every other output is unchanged."""
    shutil.copy(inputs / "tomo.mrc", tmp_path / "rec_TS_01.mrc")
    out = tmp_path / "o"
    assert main(_argv([tmp_path / "rec_TS_01.mrc"], out, net, "--tomogram-name", "TS_01")) == 0
    from cryodet_dask import read_particles

    star = read_particles(out / "rec_TS_01_centers.star", voxel_size=10.0)
    assert set(star["tomo_name"]) == {"TS_01"}
    same_outputs(reference, out, name_b="rec_TS_01", files=("_labels.mrc", "_centers.txt", "_centers.csv"))


def test_polarity_both_finds_the_same_particles_in_the_inverted_tomogram(inputs, net, tmp_path):
    """--polarity both: a tomogram and its contrast-inverted copy give the same outputs, byte for byte."""
    import mrcfile

    with mrcfile.open(inputs / "tomo.mrc") as m:
        data = np.array(m.data)
    make_mrc(tmp_path / "tomo.mrc", -data, voxel_size=10.0)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_argv([inputs / "tomo.mrc"], a, net, "--polarity", "both")) == 0
    assert main(_argv([tmp_path / "tomo.mrc"], b, net, "--polarity", "both")) == 0
    same_outputs(a, b)
    assert json.loads((a / "tomo_run.json").read_text())["parameters"]["polarity"] == "both"
