"""A run folder's names (pipeline.rundir) and the rules built on them: stale cleanup, retiring outputs,
reading a tomogram's run record.  Unit tests on files made by hand, no detection run."""

from __future__ import annotations

import json
from pathlib import Path

from cryodet_dask.pipeline.rundir import clean_stale, read_run, retire_outputs
from cryodet_dask.io import partial_path
from cryodet_dask.pipeline import LAST_RUN, OUTPUT_SUFFIX, RunDirectory


def test_every_name_of_a_run_folder():
    rd = RunDirectory.of("out", "TS_01")
    assert rd.converted == Path("out/TS_01.zarr") and rd.prediction == Path("out/TS_01_prediction.zarr")
    assert rd.rescaled == Path("out/TS_01_rescaled.zarr")
    assert rd.record == Path("out/TS_01_run.json") and rd.last_run == Path("out") / LAST_RUN
    assert [p.name for p in rd.outputs(["csv", "mrc"])] == ["TS_01_labels.mrc", "TS_01_centers.csv",
                                                             "TS_01_species.mrc"]  # a multi-species model's
    assert [p.name for p in rd.outputs()] == [f"TS_01{s}" for s in OUTPUT_SUFFIX.values()] + [
        "TS_01_species.mrc", "TS_01_species.zarr"]
    assert rd.lock.name == ".cryodet.lock"
    assert rd.prediction not in rd.finals()  # the resumable prediction is never a stale final


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_stale_cleanup_removes_only_this_runs_temporaries(tmp_path):
    rd = RunDirectory(tmp_path, "a")
    stale = [_touch(partial_path(rd.output("csv"))), _touch(partial_path(rd.record)),
             _touch(tmp_path / ".cryodet-pieces-123" / "x")]
    kept = [_touch(rd.output("csv")), _touch(partial_path(RunDirectory(tmp_path, "b").output("csv"))),
            _touch(partial_path(rd.prediction) / "0")]  # another name's temporary; the resumable prediction
    removed = clean_stale(tmp_path, "a")
    assert sorted(removed) == sorted(p.name if p.parent == tmp_path else p.parent.name for p in stale)
    assert not any(p.exists() for p in stale[:2]) and not (tmp_path / ".cryodet-pieces-123").exists()
    assert all(p.exists() for p in kept)


def _record(rd: RunDirectory, fingerprint: str) -> None:
    _touch(rd.record, json.dumps({"name": rd.name, "stages": {"export": {"fingerprint": fingerprint}}}))


def test_retire_keeps_vouched_outputs_and_removes_the_others(tmp_path):
    rd = RunDirectory(tmp_path, "a")
    outputs = [_touch(p) for p in rd.outputs(["csv", "star", "mrc"])]
    _record(rd, "fp1")
    retire_outputs(tmp_path, "a", "fp1", ("csv", "star"))  # the same export: nothing removed
    assert all(p.exists() for p in outputs) and rd.record.exists()
    retire_outputs(tmp_path, "a", "fp2", ("csv", "star"))  # other parameters: this run's formats go
    assert not rd.output("csv").exists() and not rd.output("star").exists() and not rd.record.exists()
    assert rd.output("mrc").exists()  # a format this run does not write is never removed


def test_retire_never_touches_another_tomograms_files(tmp_path):
    a, b = RunDirectory(tmp_path, "a"), RunDirectory(tmp_path, "b")
    b_files = [_touch(p) for p in b.outputs()]
    _record(b, "fpb")
    _touch(b.last_run, json.dumps({"name": "b"}))
    retire_outputs(tmp_path, "a", "fpa", ("csv", "mrc"))
    assert all(p.exists() for p in b_files) and b.record.exists() and b.last_run.exists()


def test_a_tomograms_record_is_its_own_or_the_folders_when_it_names_it(tmp_path):
    a = RunDirectory(tmp_path, "a")
    assert read_run(tmp_path, "a") is None
    _touch(a.last_run, json.dumps({"name": "b", "x": 1}))
    assert read_run(tmp_path, "a") is None  # the folder's last run was another tomogram's
    _touch(a.last_run, json.dumps({"name": "a", "x": 2}))
    assert read_run(tmp_path, "a")["x"] == 2  # a folder written before per-tomogram records
    _touch(a.record, json.dumps({"name": "a", "x": 3}))
    assert read_run(tmp_path, "a")["x"] == 3
    _touch(a.record, "{broken")
    assert read_run(tmp_path, "a")["x"] == 2  # an unreadable record is no record
