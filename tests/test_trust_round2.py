"""Issue 27, second round of "never a silent wrong answer": the post-processing plan, the scratch folders,
the label type checked before anything is written, a rerun that replaces picks, and Ctrl-C on a cluster.

(The unknown voxel size, item 12, is tested in ``tests/test_cluster_faults.py``:
``test_unknown_voxel_size_is_never_guessed``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import dask.array as da
import numpy as np
import pytest
import zarr

from cryodet_dask.cli import main
from cryodet_dask.errors import ParameterError

from test_faults import FLAGS, _argv, one_line_error

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (64, 128, 128)
MAX_CENTER_MIN_DISTANCE = 64  # postprocessing._plan's, imported in the tests (a test module that imports fails whole)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 64 x 128 x 128 prediction store (the issue's), 10 Å, in 32³ chunks, with a few particles."""
    path = tmp_path_factory.mktemp("pred") / "pred.zarr"
    m = np.zeros(SHAPE, np.float32)
    c = np.zeros(SHAPE, np.float32)
    for k, (z, y, x) in enumerate([(16, 20, 20), (40, 64, 90), (30, 100, 40)]):
        m[z - 4 : z + 4, y - 4 : y + 4, x - 4 : x + 4] = 1
        c[z, y, x] = 1
    g = zarr.open_group(str(path), mode="w")
    g.create_array("mask", data=m, chunks=(32, 32, 32))
    g.create_array("center", data=c, chunks=(32, 32, 32))
    g.attrs["cryodet"] = {"voxel_size": 10.0}
    return path


PP = ["-q", "--cluster", "threads", "-rs", "1", "--min-particle-size", "0", "--min-score", "0"]


# ------------------------------------------------------------------ item 10: chunkings and distances that cannot work


def test_plan_size_counts_the_neighbour_reads_exactly():
    """plan_size equals the count postprocess builds: per block, the blocks the core widened by the halo meets."""
    import itertools

    from cryodet_dask.postprocessing._plan import plan_size

    for shape, chunk, d in [((10, 12, 7), 3, 0.0), ((10, 12, 7), 3, 4.5), ((9, 9, 9), 2, 7.0), ((5, 6, 7), 7, 1.0)]:
        chunks = da.zeros(shape, chunks=chunk).chunks
        h = max(1, int(np.floor(d)))
        bounds = [np.concatenate([[0], np.cumsum(c)]) for c in chunks]
        grid = [len(c) for c in chunks]
        links = 0
        for idx in itertools.product(*(range(g) for g in grid)):
            n = 1
            for a in range(3):
                lo, hi = max(0, bounds[a][idx[a]] - h), min(shape[a], bounds[a][idx[a] + 1] + h)
                n *= sum(1 for j in range(grid[a]) if bounds[a][j] < hi and bounds[a][j + 1] > lo)
            links += n - 1
        assert plan_size(shape, chunks, d) == (int(np.prod(grid)), links)


@pytest.mark.parametrize("argv, words", [
    (["--chunks", "1"], ["--chunks 1x1x1 on a 64x128x128 volume makes 1,048,576 blocks", "use --chunks"]),
    (["--chunks", "2"], ["131,072 blocks", "use --chunks"]),
    (["--center-min-distance", "1e9"], ["--center-min-distance 1e+09 voxels", f"at most {MAX_CENTER_MIN_DISTANCE:g}"]),
    (["--particle-diameter", "1e9"], ["--particle-diameter 1e+09 Å at 10 Å per voxel",
                                      f"up to {2 * MAX_CENTER_MIN_DISTANCE * 10:g} Å"]),
], ids=["chunks-1", "chunks-2", "distance-1e9", "diameter-1e9"])
def test_postprocess_refuses_what_cannot_work_in_one_line_before_any_work(store, tmp_path, capsys, argv, words):
    """Before: --chunks 1 took 24 GB and was killed, leaving .cryodet-pieces-*; 1e9 was a ValueError traceback."""
    from cryodet_dask.postprocessing._plan import MAX_CENTER_MIN_DISTANCE as limit

    assert limit == MAX_CENTER_MIN_DISTANCE
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(["postprocess", str(store), "-o", str(out), *PP, *argv]) == 2
    assert time.perf_counter() - t0 < 20  # refused from the metadata, not after building the graph
    line = one_line_error(capsys)
    assert all(w in line for w in words), line
    assert not out.exists()  # nothing written, no scratch folder


def test_the_suggested_chunking_is_the_smallest_that_fits(store, tmp_path, capsys):
    from cryodet_dask.postprocessing._plan import MAX_BLOCKS, check_plan, plan_size

    assert main(["postprocess", str(store), "-o", str(tmp_path / "a"), *PP, "--chunks", "1"]) == 2
    line = one_line_error(capsys)
    fit = int(line.rsplit("use --chunks ", 1)[1].split()[0])
    chunks = da.zeros(SHAPE, chunks=fit).chunks
    assert plan_size(SHAPE, chunks, 7.0)[0] <= MAX_BLOCKS
    check_plan(SHAPE, chunks, 7.0)  # accepted
    with pytest.raises(ParameterError):
        check_plan(SHAPE, da.zeros(SHAPE, chunks=fit - 1).chunks, 7.0)  # the smallest that fits
    # a chunking that fits runs and finds the store's particles (4³ would take minutes on a busy core: 16³ here)
    assert main(["postprocess", str(store), "-o", str(tmp_path / "b"), *PP, "--formats", "csv"]) == 0
    assert main(["postprocess", str(store), "-o", str(tmp_path / "c"), *PP, "--formats", "csv", "--chunks", "16"]) == 0
    a, b = ((tmp_path / d / "pred_centers.csv").read_text() for d in "bc")
    assert a == b and len(a.splitlines()) == 4  # header + 3 particles


def test_the_api_refuses_too_many_blocks_and_a_huge_distance_at_once():
    from cryodet_dask.postprocessing import postprocess

    m = da.zeros(SHAPE, chunks=1, dtype=np.float32)
    t0 = time.perf_counter()
    with pytest.raises(ParameterError, match="blocks"):
        postprocess(m, m)
    with pytest.raises(ParameterError, match="at most 64 voxels"):
        postprocess(da.zeros(SHAPE, chunks=32, dtype=np.float32), da.zeros(SHAPE, chunks=32, dtype=np.float32),
                    center_min_distance=1e9)
    assert time.perf_counter() - t0 < 20


def test_detect_refuses_a_huge_fusion_distance_before_any_work(net, tmp_path, capsys):
    from cryodet_dask.testing import make_mrc

    tomo = make_mrc(tmp_path / "t.mrc", np.zeros((32, 64, 64), np.float32), voxel_size=10.0)
    base = ["detect", str(tomo), "-m", str(net), "-o", str(tmp_path / "o"), *[f for f in FLAGS]]
    i = base.index("--center-min-distance")
    no_d = base[:i] + base[i + 2:]
    assert main([*no_d, "--center-min-distance", "1e9"]) == 2
    assert "at most 64 voxels" in one_line_error(capsys)
    assert main([*no_d, "--particle-diameter", "1e9"]) == 2
    assert "--particle-diameter 1e+09 Å at 10 Å per voxel" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_no_scratch_folder_is_left_behind(store, tmp_path, capsys):
    """A killed run's .cryodet-pieces-* is removed by the next postprocess; a failing one leaves none."""
    out = tmp_path / "out"
    (out / ".cryodet-pieces-killed").mkdir(parents=True)
    (out / ".cryodet-pieces-killed" / "pieces.zarr").write_text("x")
    assert main(["postprocess", str(store), "-o", str(out), *PP]) == 0
    assert not list(out.glob(".cryodet-pieces-*"))
    # a failure after the post-processing (the outputs exist, no --overwrite): one line, no scratch left
    assert main(["postprocess", str(store), "-o", str(out), *PP]) == 2
    assert "exist" in one_line_error(capsys)
    assert not list(out.glob(".cryodet-pieces-*"))


# ------------------------------------------------------------------ low: the label type is checked first


def test_a_label_type_too_small_leaves_no_label_zarr(tmp_path):
    """Before: the Zarr label image was written, then the MRC's uint16 check failed and left it behind."""
    from cryodet_dask.exports import export

    n = 70_000
    det = SimpleNamespace(centers=np.zeros((n, 3)), labels=da.zeros((4, 4, 4), chunks=4, dtype=np.uint32),
                          species=None)
    with pytest.raises(ParameterError, match="70000 particles do not fit a uint16 label image") as exc:
        export(det, tmp_path / "o", "t", 10.0, formats=("zarr", "mrc", "csv"), label_dtype="uint16")
    left = sorted(p.name for p in (tmp_path / "o").iterdir()) if (tmp_path / "o").exists() else []
    assert left == []  # no t_labels.zarr, no partial file, no CSV
    assert "--label-dtype auto or float32" in str(exc.value)


# ------------------------------------------------------------------ low: a rerun that replaces picks says so


def test_a_batch_rerun_with_other_parameters_says_it_replaces_the_picks(net, tmp_path, capsys):
    from cryodet_dask.testing import make_mrc

    rng = np.random.default_rng(2)
    a = make_mrc(tmp_path / "a.mrc", rng.normal(size=(32, 64, 64)).astype(np.float32), voxel_size=10.0)
    b = make_mrc(tmp_path / "b.mrc", rng.normal(size=(32, 64, 64)).astype(np.float32), voxel_size=10.0)
    out = tmp_path / "o"
    assert main(_argv([a, b], out, net)) == 0
    capsys.readouterr()
    assert main(_argv([a, b], out, net)) == 0  # the same: skipped, nothing said about replacing
    assert "replacing" not in capsys.readouterr().err
    assert main([*_argv([a, b], out, net)[1:], "-mt", "0.6"]) == 0  # without -q (which silences warnings)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "replacing the outputs of an earlier run" in ln]
    assert len(err) == 2 and all("other parameters (mask_threshold)" in ln and "_centers.star" in ln for ln in err)


# ------------------------------------------------------------------ low: Ctrl-C on a local cluster


def test_after_an_interruption_the_cluster_loggers_stay_quiet():
    """A Ctrl-C that lands while distributed's sync() schedules its cancel callback made the client's event
    loop log "Exception in callback ... NameError" (about 1 run in 30 under load): the handler flags the
    interruption before it unwinds, and the CLI's log filter then drops the event loop's records."""
    import logging

    from cryodet_dask import cli

    flt = cli._OwnInfoFilter(0)
    record = logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, "Exception in callback", (), None)
    own = logging.LogRecord("cryodet_dask", logging.ERROR, __file__, 1, "ours", (), None)
    cli._INTERRUPTED.clear()
    assert flt.filter(record)  # not interrupted: an event-loop error is shown
    with pytest.raises(KeyboardInterrupt):
        cli._raise_interrupt(signal.SIGINT, None)
    try:
        assert not flt.filter(record) and flt.filter(own)
    finally:
        cli._INTERRUPTED.clear()


def test_ctrl_c_on_a_local_cluster_prints_one_line(net, tmp_path):
    """Ctrl-C reaches the whole foreground process group (driver and worker processes): only the one line
    shows.  Before: about 30 lines of worker tracebacks, CancelledError and a leaked-semaphore warning."""
    from cryodet_dask.testing import make_mrc

    tomo = make_mrc(tmp_path / "t.mrc", np.random.default_rng(1).normal(size=(32, 128, 128)).astype(np.float32),
                    voxel_size=10.0)
    out = tmp_path / "o"
    argv = [a for a in FLAGS if a != "threads"]
    argv[argv.index("--cluster") + 1:argv.index("--cluster") + 1] = ["local", "--workers", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "cryodet_dask", "-q", "detect", str(tomo), "-m", str(net),
                             "-o", str(out), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    done = out / ".t_prediction.zarr.partial" / ".done"
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 240:
        if done.is_dir() and [n for n in os.listdir(done) if not n.startswith(".")]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, stderr = proc.communicate(timeout=120)
    time.sleep(1)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["cryodet-dask: interrupted; run the same command again to resume"], stderr
