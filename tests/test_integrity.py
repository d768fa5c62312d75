"""Integrity of intermediate stores: damaged, truncated or missing chunks and metadata are never used.

The fault table: for the converted tomogram (``NAME.zarr``) and the
prediction store (``NAME_prediction.zarr``, complete or interrupted), each of
*4 KiB of a chunk overwritten*, *chunk truncated*, *chunk deleted*,
*``zarr.json`` truncated* — and the rerun either recomputes and gives exactly
what an undisturbed run gives, or stops with a one-line
:class:`~cryodet_dask.errors.CryodetError`.  Never a silent wrong answer.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import torch
import zarr

import cryodet_dask
from cryodet_dask.cli import main
from cryodet_dask.errors import CryodetError, OutputExistsError, StoreIntegrityError
from cryodet_dask.io import conversion_reusable, load, source_identity
from cryodet_dask.prediction import _predict as predict_module
from cryodet_dask.simulation import simulate

torch.set_num_threads(1)

SHAPE = (32, 64, 64)
CHUNKS = 32  # 1 x 2 x 2 chunks


@pytest.fixture(scope="module")
def ref(tmp_path_factory, net):
    """An undisturbed conversion and prediction, shared read-only by the tests (they damage copies)."""
    d = tmp_path_factory.mktemp("ref")
    simulate(d / "sim", shape=SHAPE, seed=5, overwrite=True)
    mrc = d / "sim" / "tomogram.mrc"
    z = cryodet_dask.convert(mrc, d / "tomogram.zarr", chunks=CHUNKS)
    pred = cryodet_dask.predict(mrc, net, out=d / "tomogram_prediction.zarr", chunks=CHUNKS, device="cpu")
    return {
        "dir": d, "mrc": mrc, "zarr": z, "pred": d / "tomogram_prediction.zarr",
        "volume": load(z).data.compute(),
        "mask": pred.mask.compute(), "center": pred.center.compute(),
    }


# ------------------------------------------------------------------ faults


def _chunk_file(store: Path, array: str, idx=(0, 1, 1)) -> Path:
    return store / array / "c" / "/".join(map(str, idx))


def overwrite_4k(path: Path) -> None:
    """Overwrite 4 KiB in the middle of the file with other bytes (what a bad disk or a stray write does)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    n = min(4096, len(data) - mid - 8)
    data[mid : mid + n] = bytes((b ^ 0x5A) for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def delete(path: Path) -> None:
    path.unlink()


FAULTS = {"overwrite 4 KiB": overwrite_4k, "truncate": truncate, "delete": delete}


def _damage(store: Path, target: str, fault: str) -> None:
    """``target``: ``"chunk:<array>"`` or ``"zarr.json:<array or .>"``."""
    kind, array = target.split(":")
    if kind == "chunk":
        FAULTS[fault](_chunk_file(store, array))
    else:
        FAULTS[fault](store / array / "zarr.json" if array != "." else store / "zarr.json")


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, CryodetError), repr(exc)
    assert "\n" not in str(exc) and len(str(exc)) < 400, str(exc)


# ------------------------------------------------------------------ converted store


CONVERTED_ROWS = [
    ("chunk:0", "overwrite 4 KiB"),
    ("chunk:0", "truncate"),
    ("chunk:0", "delete"),
    ("zarr.json:0", "truncate"),
    ("zarr.json:.", "truncate"),
]


@pytest.mark.parametrize("target,fault", CONVERTED_ROWS)
def test_converted_store_damage_is_rebuilt_by_convert(ref, tmp_path, target, fault, caplog):
    """convert(reuse=True): a damaged conversion is rebuilt (with a warning), identical to the undisturbed one."""
    z = tmp_path / "tomogram.zarr"
    shutil.copytree(ref["zarr"], z)
    assert conversion_reusable(z, ref["mrc"])  # the intact copy verifies
    _damage(z, target, fault)
    with caplog.at_level(logging.INFO, logger="cryodet_dask"):
        assert not conversion_reusable(z, ref["mrc"])
        cryodet_dask.convert(ref["mrc"], z, chunks=CHUNKS, reuse=True)
    assert any(r.levelno == logging.WARNING and "converting again" in r.getMessage() for r in caplog.records)
    assert np.array_equal(load(z).data.compute(), ref["volume"])
    assert conversion_reusable(z, ref["mrc"])


@pytest.mark.parametrize("target,fault", CONVERTED_ROWS)
def test_converted_store_damage_read_directly_is_one_line(ref, tmp_path, net, target, fault):
    """predict (or anything) reading a damaged conversion stops with one line, never reads zeros or garbage."""
    z = tmp_path / "tomogram.zarr"
    shutil.copytree(ref["zarr"], z)
    _damage(z, target, fault)
    with pytest.raises(CryodetError) as info:
        cryodet_dask.predict(z, net, out=tmp_path / "p.zarr", chunks=CHUNKS, device="cpu")
    _one_line(info.value)
    assert not (tmp_path / "p.zarr").exists()


def test_conversion_reused_only_when_intact_and_same_source(ref, tmp_path):
    z = tmp_path / "tomogram.zarr"
    shutil.copytree(ref["zarr"], z)
    mrc = tmp_path / "t.mrc"
    shutil.copy2(ref["mrc"], mrc)  # a copy has the same content identity
    assert source_identity(mrc) == source_identity(ref["mrc"])
    stamp = (z / "zarr.json").stat().st_mtime_ns
    cryodet_dask.convert(mrc, z, chunks=CHUNKS, reuse=True)
    assert (z / "zarr.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    # same size, same mtime, other content: converted again
    st = mrc.stat()
    with open(mrc, "r+b") as f:
        f.seek(st.st_size - 4096)
        f.write(bytes(4096))
    os.utime(mrc, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not conversion_reusable(z, mrc)
    cryodet_dask.convert(mrc, z, chunks=CHUNKS, reuse=True)
    assert not np.array_equal(load(z).data.compute(), ref["volume"])


def test_sampled_identity_of_large_files(tmp_path, monkeypatch):
    from cryodet_dask.io import _integrity

    monkeypatch.setattr(_integrity, "FULL_DIGEST_LIMIT", 1 << 20)
    monkeypatch.setattr(_integrity, "_SAMPLE_SIZE", 4096)
    p = tmp_path / "big.bin"
    p.write_bytes(np.random.default_rng(0).bytes(4 << 20))
    a = source_identity(p)
    assert a.startswith("sha256-sampled:")
    data = bytearray(p.read_bytes())
    data[0] ^= 1  # the header is always digested
    p.write_bytes(bytes(data))
    assert source_identity(p) != a


# ------------------------------------------------------------------ prediction store (complete)


PREDICTION_ROWS = [
    ("chunk:mask", "overwrite 4 KiB", 1),
    ("chunk:center", "overwrite 4 KiB", 1),
    ("chunk:mask", "truncate", 1),
    ("chunk:center", "delete", 1),
    ("zarr.json:center", "truncate", 4),  # the array is unreadable: every chunk predicted again
]


def _copy_pred(ref, tmp_path) -> Path:
    p = tmp_path / "tomogram_prediction.zarr"
    shutil.copytree(ref["pred"], p)
    return p


@pytest.mark.parametrize("target,fault,repaired", PREDICTION_ROWS)
def test_complete_prediction_damage_is_recomputed(ref, tmp_path, net, target, fault, repaired, caplog):
    p = _copy_pred(ref, tmp_path)
    _damage(p, target, fault)
    with caplog.at_level(logging.WARNING, logger="cryodet_dask"):
        pred = cryodet_dask.predict(ref["mrc"], net, out=p, chunks=CHUNKS, device="cpu")
    assert pred.chunks_repaired == repaired and pred.chunks_computed == repaired
    assert pred.chunks_skipped == 4 - repaired
    assert any("failed verification" in r.getMessage() or "again" in r.getMessage() for r in caplog.records)
    assert np.array_equal(pred.mask.compute(), ref["mask"])
    assert np.array_equal(pred.center.compute(), ref["center"])
    again = cryodet_dask.predict(ref["mrc"], net, out=p, chunks=CHUNKS, device="cpu")
    assert again.chunks_computed == 0 and again.chunks_repaired == 0


def test_complete_prediction_undisturbed_is_reused(ref, tmp_path, net):
    p = _copy_pred(ref, tmp_path)
    pred = cryodet_dask.predict(ref["mrc"], net, out=p, chunks=CHUNKS, device="cpu")
    assert (pred.chunks_computed, pred.chunks_skipped, pred.chunks_repaired) == (0, 4, 0)


def test_complete_prediction_unreadable_group_metadata(ref, tmp_path, net):
    """A truncated root zarr.json: predict cannot tell whose store it is: one line; detect (replace) rebuilds."""
    p = _copy_pred(ref, tmp_path)
    _damage(p, "zarr.json:.", "truncate")
    with pytest.raises(OutputExistsError) as info:
        cryodet_dask.predict(ref["mrc"], net, out=p, chunks=CHUNKS, device="cpu")
    _one_line(info.value)
    pred = cryodet_dask.predict(ref["mrc"], net, out=p, chunks=CHUNKS, device="cpu", replace=True)
    assert pred.chunks_computed == 4
    assert np.array_equal(pred.mask.compute(), ref["mask"])


@pytest.mark.parametrize("target,fault", [
    ("chunk:mask", "overwrite 4 KiB"), ("chunk:center", "truncate"), ("chunk:mask", "delete"),
    ("zarr.json:mask", "truncate"), ("zarr.json:.", "truncate"),
])
def test_prediction_damage_read_directly_is_one_line(ref, tmp_path, target, fault):
    """Post-processing's reader (load(PRED, array=...)) stops with one line on a damaged store."""
    p = _copy_pred(ref, tmp_path)
    _damage(p, target, fault)
    with pytest.raises(CryodetError) as info:
        for array in ("mask", "center"):
            load(p, array=array).data.compute()
    _one_line(info.value)


def test_postprocess_cli_on_a_damaged_prediction_prints_one_line(ref, tmp_path, capsys):
    p = _copy_pred(ref, tmp_path)
    _damage(p, "chunk:center", "overwrite 4 KiB")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # main() points the root logger at this test's captured stderr: restore it afterwards
        code = main(["postprocess", str(p), "-o", str(tmp_path / "out"), "--cluster", "threads"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and "damaged (checksum mismatch)" in errors[0] and "Traceback" not in err


def test_checked_reader_never_returns_fill_for_a_missing_chunk(ref, tmp_path):
    p = _copy_pred(ref, tmp_path)
    _damage(p, "chunk:mask", "delete")
    raw = zarr.open_array(str(p / "mask"), mode="r")[:]  # what plain Zarr does: zeros
    assert np.all(raw[:, 32:, 32:] == 0)
    with pytest.raises(StoreIntegrityError, match="missing"):
        load(p, array="mask")


# ------------------------------------------------------------------ prediction store (interrupted, resumed)


def _interrupted(ref, net, out: Path, monkeypatch, after: int = 3) -> None:
    calls = {"n": 0}
    real = predict_module._store_tiles

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "_store_tiles", flaky)
    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="synchronous"):
        cryodet_dask.predict(ref["mrc"], net, out=out, chunks=CHUNKS, device="cpu")
    monkeypatch.setattr(predict_module, "_store_tiles", real)


@pytest.mark.parametrize("array,fault,expect", [
    ("mask", "overwrite 4 KiB", (1, 2, 2)), ("center", "truncate", (1, 2, 2)), ("mask", "delete", (1, 2, 2)),
    ("marker", "overwrite 4 KiB", (1, 2, 2)),
    ("zarr.json:mask", "truncate", (3, 0, 4)), ("zarr.json:.", "truncate", (3, 0, 4)),
])
def test_resumed_prediction_verifies_finished_chunks(ref, tmp_path, net, monkeypatch, array, fault, expect):
    """An interrupted prediction (3 of 4 chunks done) with one finished chunk damaged, or its metadata:
    the rerun recomputes what fails verification (counted in chunks_repaired) and equals the undisturbed maps."""
    out = tmp_path / "tomogram_prediction.zarr"
    _interrupted(ref, net, out, monkeypatch)
    partial = tmp_path / ".tomogram_prediction.zarr.partial"
    done = sorted(p.name for p in (partial / ".done").iterdir())
    assert len(done) == 3 and not out.exists()
    victim = tuple(int(v) for v in done[-1].split("."))
    if array == "marker":  # the marker's digest no longer matches what the chunk holds
        (partial / ".done" / done[-1]).write_text('{"mask": 1, "center": 2}')
    elif array.startswith("zarr.json"):
        _damage(partial, array, fault)
    else:
        FAULTS[fault](_chunk_file(partial, array, victim))
    pred = cryodet_dask.predict(ref["mrc"], net, out=out, chunks=CHUNKS, device="cpu")
    assert (pred.chunks_repaired, pred.chunks_skipped, pred.chunks_computed) == expect
    assert np.array_equal(pred.mask.compute(), ref["mask"])
    assert np.array_equal(pred.center.compute(), ref["center"])


def test_stores_carry_checksums_and_every_chunk(ref):
    for store, arrays in ((ref["zarr"], ["0"]), (ref["pred"], ["mask", "center"])):
        for a in arrays:
            arr = zarr.open_array(str(store / a), mode="r")
            names = [c["name"] for c in arr.metadata.to_dict()["codecs"]]
            assert names[-1] == "crc32c", names
            assert len(list((store / a / "c").rglob("*"))) >= 4


# ------------------------------------------------------------------ end to end


def test_detect_recomputes_a_damaged_prediction_chunk(ref, tmp_path, net):
    kw = dict(segnet=str(net), chunks=(CHUNKS,), device="cpu", mask_threshold=0.5, center_threshold=0.1,
              remove_min_size=8, filter_outlier=False, min_particle_size=0, min_score=0.0, center_min_distance=0.0)
    first = cryodet_dask.detect(ref["mrc"], tmp_path, **kw)
    assert len(first.particles) > 0
    overwrite_4k(_chunk_file(tmp_path / "tomogram_prediction.zarr", "center"))
    overwrite_4k(_chunk_file(tmp_path / "tomogram_prediction.zarr", "mask", (0, 0, 1)))
    again = cryodet_dask.detect(ref["mrc"], tmp_path, **kw)
    assert again.prediction.chunks_repaired == 2 and again.prediction.chunks_computed == 2
    pd.testing.assert_frame_equal(first.particles, again.particles)
    assert np.array_equal(first.labels.compute(), again.labels.compute())


@pytest.mark.parametrize("fault", ["delete", "overwrite 4 KiB"])
def test_detect_with_a_damaged_conversion_never_answers_wrong(ref, tmp_path, net, fault):
    """detect after a chunk of NAME.zarr is damaged (prediction store gone, so the tomogram is read again):
    the conversion is rebuilt and the particles equal the undisturbed run's, or the run stops with one line."""
    kw = dict(segnet=str(net), chunks=(CHUNKS,), device="cpu", mask_threshold=0.5, center_threshold=0.1,
              remove_min_size=8, filter_outlier=False, min_particle_size=0, min_score=0.0, center_min_distance=0.0)
    first = cryodet_dask.detect(ref["mrc"], tmp_path, **kw)
    FAULTS[fault](_chunk_file(tmp_path / "tomogram.zarr", "0"))
    shutil.rmtree(tmp_path / "tomogram_prediction.zarr")
    try:
        again = cryodet_dask.detect(ref["mrc"], tmp_path, **kw)
    except CryodetError as exc:  # a damaged chunk found while reading: one line, naming the chunk
        _one_line(exc)
        assert "damaged" in str(exc) or "missing" in str(exc)
        return
    pd.testing.assert_frame_equal(first.particles, again.particles)
    assert np.array_equal(load(tmp_path / "tomogram.zarr").data.compute(), ref["volume"])


def test_prediction_input_identity_is_the_converted_content(ref, tmp_path, net):
    """A conversion rebuilt with the same voxels keeps its prediction; one changed in place (valid chunks) does not."""
    z = tmp_path / "tomogram.zarr"
    shutil.copytree(ref["zarr"], z)
    out = tmp_path / "p.zarr"
    first = cryodet_dask.predict(z, net, out=out, chunks=CHUNKS, device="cpu")
    assert first.attrs["fingerprint"]["input"].startswith("zarr-crc32c:")
    shutil.rmtree(z)
    cryodet_dask.convert(ref["mrc"], z, chunks=CHUNKS)  # rebuilt: same content, new files and mtimes
    again = cryodet_dask.predict(z, net, out=out, chunks=CHUNKS, device="cpu")
    assert again.chunks_computed == 0 and again.chunks_skipped == 4
    arr = zarr.open_array(str(z / "0"), mode="r+").with_config({"write_empty_chunks": True})
    arr[0, 0, 0] = arr[0, 0, 0] + 1  # a valid write: checksums fine, content changed
    with pytest.raises(OutputExistsError):
        cryodet_dask.predict(z, net, out=out, chunks=CHUNKS, device="cpu")


@pytest.mark.parametrize("fault", ["overwrite 4 KiB", "truncate", "delete"])
def test_sharded_conversion_damage_is_rebuilt(ref, tmp_path, fault):
    """With shards (many chunks per file) the inner chunks and the shard index carry checksums too."""
    z = cryodet_dask.convert(ref["mrc"], tmp_path / "s.zarr", chunks=16, shards=32)
    assert conversion_reusable(z, ref["mrc"])
    FAULTS[fault](_chunk_file(z, "0", (0, 1, 0)))
    assert not conversion_reusable(z, ref["mrc"])
    with pytest.raises(CryodetError) as info:
        load(z).data.compute()
    _one_line(info.value)
    cryodet_dask.convert(ref["mrc"], z, chunks=16, shards=32, reuse=True)
    assert np.array_equal(load(z).data.compute(), ref["volume"])
