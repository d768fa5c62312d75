"""The OpenVINO CPU engine (``--engine openvino``): the same maps as PyTorch, for every chunking and
tile plan, within the chunk-invariance tolerance; the same particles from ``detect``; bad requests
refused in one line before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cryodet_dask import models
from cryodet_dask.cli import main
from cryodet_dask.errors import OutputExistsError, ParameterError
from cryodet_dask.prediction import (ENGINE_CHOICES, ENGINES, check_engine, forward_block, predict, resolve_engine,
                                     resolve_models)
from cryodet_dask.prediction import _engine as engine_module
from cryodet_dask.testing import make_mrc

pytest.importorskip("openvino")  # a test dependency (pyproject's `test` extra); skipped only where absent

torch.set_num_threads(1)
TOL = 1e-5  # the chunk-invariance tolerance of the PyTorch path (tests/test_prediction.py)


def test_engines_listed():
    assert ENGINES == ("torch", "openvino")
    assert ENGINE_CHOICES == ("auto", "torch", "openvino")


def _hide_openvino(monkeypatch):
    """As if OpenVINO were not installed: its import fails and it is not found."""
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises, find_spec says None
    with pytest.raises(ImportError):
        import openvino  # noqa: F401


def test_auto_resolves_to_openvino_on_the_cpu_when_it_is_installed(monkeypatch):
    assert resolve_engine("auto", "cpu") == "openvino"
    _hide_openvino(monkeypatch)
    assert resolve_engine("auto", "cpu") == "torch"


def test_auto_resolves_to_torch_on_a_gpu():
    assert resolve_engine("auto", "cuda") == "torch"
    assert resolve_engine("auto", "cuda:1") == "torch"


def test_explicit_engines_are_kept_and_checked(monkeypatch):
    assert resolve_engine("torch", "cpu") == "torch"
    assert resolve_engine("openvino", "cpu") == "openvino"
    with pytest.raises(ParameterError, match="CPU only"):
        resolve_engine("openvino", "cuda")
    _hide_openvino(monkeypatch)
    with pytest.raises(ParameterError, match="not installed"):
        resolve_engine("openvino", "cpu")


def test_the_default_engine_is_auto_and_a_store_records_the_resolved_one(tmp_path, two_head, volume, monkeypatch):
    """predict's, detect's and the command line's default is auto; the store's fingerprint names the engine
    that ran, so a store made by OpenVINO is not resumed by torch once OpenVINO is gone."""
    import inspect

    from cryodet_dask.cli._flags import NETWORK_FLAGS
    from cryodet_dask.pipeline import DetectParams

    assert inspect.signature(predict).parameters["engine"].default == "auto"
    assert DetectParams().engine == "auto"
    assert {f.name: f.default for f in NETWORK_FLAGS}["engine"] == "auto"
    src = make_mrc(tmp_path / "v.mrc", volume)
    pred = predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu")
    assert pred.attrs["fingerprint"]["engine"] == "openvino"
    _hide_openvino(monkeypatch)
    with pytest.raises(OutputExistsError):  # auto is torch now: another engine's store
        predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu")
    pred = predict(src, two_head, out=tmp_path / "q.zarr", chunks=16, device="cpu")
    assert pred.attrs["fingerprint"]["engine"] == "torch"


def test_auto_on_a_gpu_runs_torch(two_head, volume, monkeypatch):
    """--device cuda with the default engine: torch, never a refusal (OpenVINO runs on the CPU only)."""
    seen = []
    real = engine_module.resolve_engine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import cryodet_dask.prediction._predict as predict_module

    def spy(engine, device):
        seen.append(real(engine, device))
        raise RuntimeError("stop before the forward pass")  # no GPU here to run it on

    monkeypatch.setattr(predict_module, "resolve_engine", spy)
    with pytest.raises(RuntimeError, match="stop before"):
        predict(volume, two_head, chunks=16, device="cuda")
    assert seen == ["torch"]


@pytest.mark.parametrize("polarity,tta", [("as-is", "none"), ("both", "none"), ("as-is", "flips")])
def test_forward_block_matches_torch_for_blocks_of_several_shapes(two_head, pair, polarity, tta):
    """Blocks of different shapes (one compiled model with a dynamic input shape), batches, crops,
    both networks' layouts, both polarities."""
    rng = np.random.default_rng(3)
    blocks = [rng.normal(size=s).astype(np.float32) for s in [(16, 20, 24), (16, 20, 24), (13, 8, 30)]]
    crops = [None, (slice(2, 10), slice(0, 20), slice(5, 9)), (slice(0, 13), slice(1, 7), slice(3, 29))]
    for ckpts in ([two_head], list(pair)):
        specs = resolve_models(ckpts if len(ckpts) > 1 else ckpts[0])
        ref = forward_block(specs, blocks, device="cpu", polarity=polarity, crops=crops, tta=tta)
        got = forward_block(specs, blocks, device="cpu", polarity=polarity, crops=crops, engine="openvino", tta=tta)
        for r, g in zip(ref, got):
            assert g.shape == r.shape and g.dtype == np.float32
            np.testing.assert_allclose(g, r, atol=TOL, rtol=0)


@pytest.mark.parametrize("chunks,tile", [(8, None), ((12, 20, 28), None), (16, 36), (64, None)])
def test_chunked_openvino_equals_whole_volume_torch(tmp_path, two_head, volume, chunks, tile):
    ref = models.predict_array(models.load(two_head), volume)
    path = make_mrc(tmp_path / "v.mrc", volume)
    if tile is None:
        pred = predict(path, two_head, chunks=chunks, device="cpu", engine="openvino")
    else:  # stored, several chunks per forward pass
        pred = predict(path, two_head, out=tmp_path / "p.zarr", chunks=chunks, tile=tile, device="cpu",
                       engine="openvino")
    np.testing.assert_allclose(pred.mask.compute(), ref[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(pred.center.compute(), ref[1], atol=TOL, rtol=0)


def test_a_store_records_its_engine_and_is_not_resumed_with_the_other(tmp_path, two_head, volume):
    src = make_mrc(tmp_path / "v.mrc", volume)
    first = predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu", engine="openvino")
    assert first.attrs["fingerprint"]["engine"] == "openvino"
    again = predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu", engine="openvino")
    assert again.chunks_computed == 0
    with pytest.raises(OutputExistsError):
        predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu", engine="torch")


def test_auto_device_means_cpu_for_openvino(two_head, volume, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: openvino still runs on the CPU
    pred = predict(volume, two_head, chunks=16, device="auto", engine="openvino")
    assert pred.mask.shape == volume.shape


def test_bad_engine_requests_are_refused(monkeypatch, two_head, volume):
    with pytest.raises(ParameterError, match="engine must be one of auto, torch, openvino"):
        check_engine("tensorrt")
    with pytest.raises(ParameterError, match="CPU only"):
        check_engine("openvino", "cuda")
    with pytest.raises(ParameterError, match="CPU only"):
        predict(volume, two_head, chunks=16, device="cuda", engine="openvino")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(ParameterError, match=r"pip install 'cryodet-dask\[openvino\]'"):
        predict(volume, two_head, chunks=16, device="cpu", engine="openvino")


def test_cli_refuses_openvino_on_a_gpu_in_one_line_before_any_work(tmp_path, volume, capsys):
    src = make_mrc(tmp_path / "v.mrc", volume)
    out = tmp_path / "out"
    rc = main(["detect", str(src), "-o", str(out), "--engine", "openvino", "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "CPU only" in err[0]
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["detect", str(src), "-o", str(out), "--engine", "onnx"])
    assert e.value.code == 2 and not out.exists()


def test_detect_with_openvino_finds_the_same_particles_and_records_the_engine(tmp_path):
    """End to end on a simulated tomogram with the shipped weights: the particles and the label image
    of both engines are the same; run.json names the engine and OpenVINO's version."""
    from cryodet_dask.simulation import simulate

    simulate(tmp_path / "sim", shape=(48, 96, 96), seed=11)
    src = tmp_path / "t.mrc"
    (tmp_path / "sim" / "tomogram.mrc").rename(src)
    results = {}
    for engine in ENGINES:
        out = tmp_path / engine
        assert main(["-q", "detect", str(src), "-o", str(out), "--engine", engine, "--device", "cpu",
                     "--formats", "mrc,csv"]) == 0
        run = json.loads((out / "t_run.json").read_text())
        assert run["parameters"]["engine"] == engine
        assert run["stages"]["predict"]["engine"] == engine
        assert run["versions"]["openvino"]
        import mrcfile

        with mrcfile.open(out / "t_labels.mrc") as m:
            results[engine] = (np.asarray(m.data).copy(), (out / "t_centers.csv").read_text())
    labels_t, csv_t = results["torch"]
    labels_o, csv_o = results["openvino"]
    assert labels_t.max() > 5
    np.testing.assert_array_equal(labels_o, labels_t)
    rows_t, rows_o = csv_t.splitlines(), csv_o.splitlines()
    assert len(rows_o) == len(rows_t) == labels_t.max() + 1  # a header and one row per particle
    ct = np.array([r.split(",")[1:4] for r in rows_t[1:]], float)
    co = np.array([r.split(",")[1:4] for r in rows_o[1:]], float)
    np.testing.assert_allclose(co, ct, atol=1e-3)


def test_model_cache_compiles_once_per_process_and_thread_count(two_head):
    before = len(engine_module._MODELS)
    a = engine_module.get_model(str(two_head), "cpu", "openvino", 1)
    b = engine_module.get_model(str(two_head), "cpu", "openvino", 1)
    c = engine_module.get_model(str(two_head), "cpu", "openvino", 2)
    assert a is b and c is not a and c.threads == 2
    assert len(engine_module._MODELS) - before <= 2


def test_engine_in_the_yaml_config(tmp_path, volume, capsys):
    """`engine` is a YAML key like every parameter: saved by --save-config, read back, and a bad value is
    one line naming the file and the key, exit 2, nothing written."""
    import yaml

    src = make_mrc(tmp_path / "v.mrc", volume)
    cfg = tmp_path / "run.yaml"
    out = tmp_path / "out"
    assert main(["detect", "-o", str(out), "--engine", "openvino", "--save-config", str(cfg)]) == 0
    assert yaml.safe_load(cfg.read_text())["engine"] == "openvino"
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: onnx\n")
    out2 = tmp_path / "out2"
    capsys.readouterr()
    assert main(["detect", str(src), "-o", str(out2), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml: engine" in err[0] and not out2.exists()
