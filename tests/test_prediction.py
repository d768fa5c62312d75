"""Distributed inference: chunk invariance against a whole-volume forward pass, resume, GPU annotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryodet_dask import models
from cryodet_dask.cli import main
from cryodet_dask.errors import CheckpointError, OutputExistsError, ParameterError
from cryodet_dask.prediction import default_halo, plan_chunks, predict
from cryodet_dask.prediction import _predict as predict_module
from cryodet_dask.testing import make_mrc

torch.set_num_threads(1)


def _reference(ckpts, vol):
    outs = [models.predict_array(models.load(c), vol) for c in ckpts]
    stacked = np.concatenate(outs)
    heads = [h for c in ckpts for h in models.load(c).config.heads]
    return stacked[heads.index("mask")], stacked[heads.index("center")]


def test_plan_alignment_and_overhead():
    plan = plan_chunks((100, 130, 70), (30, 50, 64), 9, pool_factor=4)
    assert plan.chunk_shape == (32, 52, 64)
    assert plan.halo == (12, 12, 12)
    for idx in plan.indices():
        for r in plan.region(idx):
            assert r.start % 4 == 0  # every block starts on the global pooling grid
    covered = np.zeros((100, 130, 70), int)
    for idx in plan.indices():
        covered[plan.core(idx)] += 1
    assert (covered == 1).all()
    assert plan.halo_overhead() > 1.0
    assert default_halo(34, 4) == 36 and default_halo(32, 4) == 32 and default_halo(0, 4) == 0


@pytest.mark.parametrize("chunks", [8, 16, (12, 20, 28), 64])
def test_chunk_invariance_two_head(tmp_path, two_head, volume, chunks):
    ref_mask, ref_center = _reference([two_head], volume)
    path = make_mrc(tmp_path / "v.mrc", volume)
    pred = predict(path, two_head, chunks=chunks, device="cpu")
    np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pred.center.compute(), ref_center, atol=1e-5, rtol=0)


def test_chunk_invariance_pair_numpy_and_dask_inputs(pair, volume):
    import dask.array as da

    ref_mask, ref_center = _reference(list(pair), volume)
    for vol in (volume, da.from_array(volume, chunks=(7, 11, 13))):
        pred = predict(vol, list(pair), chunks=16, device="cpu")
        np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5)
        np.testing.assert_allclose(pred.center.compute(), ref_center, atol=1e-5)


def test_too_small_halo_breaks_invariance(two_head, volume):
    ref_mask, _ = _reference([two_head], volume)
    pred = predict(volume, two_head, chunks=8, halo=0, device="cpu")
    assert np.abs(pred.mask.compute() - ref_mask).max() > 1e-4  # the default halo is needed


def _interrupt_at_task(monkeypatch, n: int):
    """Make the n-th prediction task raise KeyboardInterrupt; return the real task function."""
    calls = {"n": 0}
    real = predict_module._store_tiles

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "_store_tiles", flaky)
    return real


def test_stored_prediction_resumes(tmp_path, two_head, volume, monkeypatch):
    path = make_mrc(tmp_path / "v.mrc", volume)
    out = tmp_path / "pred.zarr"
    real = _interrupt_at_task(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        import dask

        with dask.config.set(scheduler="synchronous"):
            predict(path, two_head, out=out, chunks=16, device="cpu")
    assert not out.exists()  # nothing complete-looking
    monkeypatch.setattr(predict_module, "_store_tiles", real)
    pred = predict(path, two_head, out=out, chunks=16, device="cpu")
    total = int(np.prod(pred.plan.grid))
    assert pred.chunks_skipped == 4 and pred.chunks_computed == total - 4
    ref_mask, ref_center = _reference([two_head], volume)
    np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5)
    np.testing.assert_allclose(pred.center.compute(), ref_center, atol=1e-5)
    # complete: a third run computes nothing; other parameters refuse to clobber it
    again = predict(path, two_head, out=out, chunks=16, device="cpu")
    assert again.chunks_computed == 0 and again.chunks_skipped == total
    with pytest.raises(OutputExistsError):
        predict(path, two_head, out=out, chunks=32, device="cpu")


def test_gpu_resource_annotation_and_distributed(tmp_path, two_head, volume):
    from distributed import Client, LocalCluster

    ref_mask, _ = _reference([two_head], volume)
    path = make_mrc(tmp_path / "v.mrc", volume)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1},
                      dashboard_address=None) as cluster, Client(cluster):
        pred = predict(path, two_head, chunks=16, device="cpu")
        annotated = [lay for lay in pred.mask.dask.layers.values() if (lay.annotations or {}).get("resources")]
        assert annotated and annotated[0].annotations["resources"] == {"GPU": 1}
        np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5)
        stored = predict(path, two_head, chunks=16, device="cpu", out=tmp_path / "d.zarr")
        np.testing.assert_allclose(stored.mask.compute(), ref_mask, atol=1e-5)
    # without GPU workers no resource is required
    pred = predict(path, two_head, chunks=16, device="cpu")
    assert not any((lay.annotations or {}).get("resources") for lay in pred.mask.dask.layers.values())


@pytest.mark.parametrize("tile", [36, (36, 36, 48), (64, 64, 64), None])
def test_tile_plans_give_the_whole_volume_maps(tmp_path, two_head, volume, tile):
    """Tiles of 3x3x3, 3x3x3 / 2x3x3 and all chunks (and the planner's choice): one forward pass per tile, the
    same maps as the whole-volume pass (issue 17: tiles decoupled from the 16^3 storage chunks)."""
    import zarr

    path = make_mrc(tmp_path / "v.mrc", volume)
    pred = predict(path, two_head, out=tmp_path / "p.zarr", chunks=16, tile=tile, device="cpu")
    ref_mask, ref_center = _reference([two_head], volume)
    np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5)
    np.testing.assert_allclose(pred.center.compute(), ref_center, atol=1e-5)
    assert zarr.open_array(str(tmp_path / "p.zarr" / "mask")).chunks == (16, 16, 16)  # storage chunks stay
    if tile is not None:
        assert pred.plan.tile == tuple(min(-(-t // 16), g) for t, g in zip(np.broadcast_to(tile, 3), pred.plan.grid))
        assert pred.plan.tile != (1, 1, 1)


def test_resume_with_another_tile_plan(tmp_path, two_head, volume, monkeypatch):
    """Interrupted with one chunk per tile, resumed with 2x2x2-chunk tiles: the finished chunks are kept,
    a tile computes only for the chunks it still lacks, and the maps are the whole-volume ones."""
    path = make_mrc(tmp_path / "v.mrc", volume)
    out = tmp_path / "pred.zarr"
    real = _interrupt_at_task(monkeypatch, 6)
    import dask

    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="synchronous"):
        predict(path, two_head, out=out, chunks=16, device="cpu")
    monkeypatch.setattr(predict_module, "_store_tiles", real)
    pred = predict(path, two_head, out=out, chunks=16, tile=(36, 36, 36), device="cpu")
    assert pred.chunks_skipped == 5 and pred.chunks_computed == int(np.prod(pred.plan.grid)) - 5
    ref_mask, _ = _reference([two_head], volume)
    np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5)


def test_tile_planner_fills_memory_and_keeps_every_worker_busy():
    from cryodet_dask.prediction import plan_tiles

    plan = plan_chunks((464, 928, 928), 128, 44, pool_factor=4)
    assert plan.halo_overhead() == pytest.approx(4.28, abs=0.01)
    big = plan_tiles(plan, budget=80 * 2**30, bytes_per_voxel=522, slots=1)
    assert big.tile[0] == 4 and big.halo_overhead() < 1.5  # through the whole depth: no z halo
    assert 522 * np.prod(big.tile_input_shape()) <= 80 * 2**30
    shared = plan_tiles(plan, budget=80 * 2**30 // 4, bytes_per_voxel=522, slots=4)
    assert 522 * np.prod(shared.tile_input_shape()) <= 20 * 2**30
    assert big.halo_overhead() < shared.halo_overhead() < plan.halo_overhead()
    # never fewer tiles than tasks that run at once, where the volume has that many chunks
    many = plan_tiles(plan, budget=2**40, bytes_per_voxel=522, slots=16)
    assert np.prod(many.tile_grid) >= 16
    # a budget below one chunk's tile leaves one chunk per tile (the memory checks refuse such runs)
    assert plan_tiles(plan, budget=2**20, bytes_per_voxel=522).tile == (1, 1, 1)


def test_bad_tile_is_refused_before_any_work(tmp_path, two_head, volume):
    path = make_mrc(tmp_path / "v.mrc", volume)
    with pytest.raises(ParameterError, match="smaller than the halo"):
        predict(path, two_head, out=tmp_path / "p.zarr", chunks=16, halo=8, tile=4, device="cpu")
    with pytest.raises(ParameterError, match="positive"):
        predict(path, two_head, out=tmp_path / "p.zarr", chunks=16, tile=0, device="cpu")
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / ".p.zarr.partial").exists()


def test_stored_prediction_runs_only_on_gpu_workers_of_a_mixed_cluster(tmp_path, two_head, volume):
    """Every prediction task lands on the worker with the GPU resource, none on the CPU-only one
    (a dask array built on the annotated layer loses the annotation when computed: dask 2026.8)."""
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    ref_mask, _ = _reference([two_head], volume)
    path = make_mrc(tmp_path / "v.mrc", volume)
    workers = {"gpu": {"cls": Worker, "options": {"nthreads": 2, "resources": {"GPU": 2}}},
               "cpu": {"cls": Worker, "options": {"nthreads": 2}}}
    scheduler = {"cls": Scheduler, "options": {"dashboard": False}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        names = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        with get_task_stream(client) as ts:
            stored = predict(path, two_head, chunks=16, device="cpu", out=tmp_path / "d.zarr")
        placed = [t["worker"] for t in ts.data if "predict-store" in str(t["key"])]
        assert stored.chunks_computed == 2 * 4 * 3 and len(placed) >= 4  # tiles: at least one per thread
        assert set(placed) == {names["gpu"]}
        np.testing.assert_allclose(stored.mask.compute(), ref_mask, atol=1e-5)


def test_local_cuda_workers_one_per_gpu_plus_cpu_workers():
    from cryodet_dask.cluster import GPU_TASKS, local_cuda_workers

    specs = local_cuda_workers(2, cores=16, total_memory=100 * 2**30)
    gpus = [s for n, s in specs.items() if n.startswith("gpu")]
    cpus = [s for n, s in specs.items() if n.startswith("cpu")]
    assert len(gpus) == 2 and len(cpus) == 14
    assert [g["env"]["CUDA_VISIBLE_DEVICES"] for g in gpus] == ["0", "1"]
    assert all(g["resources"] == {"GPU": GPU_TASKS} and g["nthreads"] == GPU_TASKS for g in gpus)
    assert all(c["env"]["CUDA_VISIBLE_DEVICES"] == "" and c["nthreads"] == 1 and "resources" not in c for c in cpus)
    from dask.utils import parse_bytes

    total = sum(parse_bytes(s["memory_limit"]) for s in specs.values())
    assert 0.75 * 100 * 2**30 < total <= 0.8 * 100 * 2**30  # 80 % of the memory, shared per thread
    assert len(local_cuda_workers(1, n_workers=3, memory_limit="2GiB", cores=8)) == 4
    with pytest.raises(ParameterError, match="needs a CUDA GPU"):
        local_cuda_workers(0)


def test_one_task_per_chunk(two_head, tmp_path, volume):
    path = make_mrc(tmp_path / "v.mrc", volume)
    pred = predict(path, two_head, chunks=16, device="cpu")
    layer = [k for k in pred.mask.dask.layers if k.startswith("predict-")][0]
    n_chunks = int(np.prod(pred.plan.grid))
    assert len(pred.mask.dask.layers[layer]) == n_chunks + 1  # one task per chunk + the file reader


def test_models_must_cover_both_heads(pair, volume):
    with pytest.raises(CheckpointError, match="center"):
        predict(volume, pair[0], device="cpu")


def test_cli_predict(tmp_path, two_head, volume, capsys):
    path = make_mrc(tmp_path / "v.mrc", volume)
    code = main(["-q", "predict", str(path), "-m", str(two_head), "-o", str(tmp_path / "p.zarr"),
                 "--chunks", "16", "--cluster", "threads", "--device", "cpu"])
    assert code == 0
    import zarr

    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert set(k for k, _ in g.arrays()) == {"mask", "center"}
    assert g.attrs["cryodet"]["voxel_size"] == pytest.approx(10.0)
    code = main(["predict", str(path), "-m", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "q.zarr"),
                 "--cluster", "threads"])
    err = capsys.readouterr().err
    assert code != 0 and "missing.pt" in err and not (tmp_path / "q.zarr").exists()


def test_centre_smoothing_is_in_the_receptive_field_and_chunk_invariant(tmp_path, volume):
    torch.manual_seed(2)
    cfg = models.UNetConfig(channels=(4, 6, 8), heads=("mask", "center"), center_smoothing=1.5)
    assert cfg.smoothing_radius == 5
    assert models.receptive_extent(cfg) == tuple(e + 5 for e in models.receptive_extent(
        cfg.replace(center_smoothing=0.0)))
    net = models.UNet3D(cfg)
    with torch.no_grad():
        net.head.bias[1] = 0.5  # a live (non-zero after ReLU) centre map from random weights
    ckpt = models.save(net, tmp_path / "smooth.pt")
    ref_mask, ref_center = _reference([ckpt], volume)
    unsmoothed = models.load(ckpt)
    unsmoothed.config = cfg.replace(center_smoothing=0.0)  # same weights, no smoothing
    plain = models.predict_array(unsmoothed, volume)
    np.testing.assert_allclose(plain[0], ref_mask, atol=1e-6)
    assert np.abs(plain[1] - ref_center).max() > 1e-3  # the smoothing does change the centre map
    pred = predict(volume, ckpt, chunks=12, device="cpu")
    assert pred.plan.halo == (40, 40, 40)  # 34 + 5 rounded up to the pooling factor
    np.testing.assert_allclose(pred.center.compute(), ref_center, atol=1e-5)
    np.testing.assert_allclose(pred.mask.compute(), ref_mask, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_anywhere_is_an_error_not_an_empty_result(bad, tmp_path):
    import dask.array as da

    from cryodet_dask.errors import InputError
    from cryodet_dask.prediction import global_stats

    vol = np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32)
    vol[9, 30, 1] = bad
    with pytest.raises(InputError, match="NaN or infinite.*--nan-policy zero"):
        global_stats(da.from_array(vol, chunks=8))
    vol[9, 30, 1] = 0
    mean, std = global_stats(da.from_array(vol, chunks=8))
    assert np.isfinite(mean) and std > 0


@pytest.mark.parametrize("torch_version, cudnn, ok, warns", [
    ("2.13.0", 90500, True, False),
    ("2.13.0+cu128", None, True, False),
    ("2.13.0", 90800, False, True),   # wrong bf16 results: refused, fp32 instead
    ("2.13.0", 91400, False, True),
    ("2.13.0", 91500, True, False),
    ("2.9.0+cu126", 90300, True, True),  # correct but slow
])
def test_known_bad_torch_and_cudnn_for_bf16(torch_version, cudnn, ok, warns):
    from cryodet_dask.prediction._engine import bf16_allowed

    allowed, why = bf16_allowed(torch_version, cudnn)
    assert allowed is ok and (why is not None) is warns


@pytest.mark.parametrize("polarity", ["both", "as-is"])
def test_polarity_chunked_equals_whole_volume_and_both_is_contrast_invariant(two_head, volume, polarity, tmp_path):
    ref = models.predict_array(models.load(two_head), volume, polarity=polarity)
    pred = predict(volume, two_head, chunks=16, device="cpu", polarity=polarity)
    np.testing.assert_allclose(pred.mask.compute(), ref[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pred.center.compute(), ref[1], atol=1e-5, rtol=0)
    inverted = predict(-volume, two_head, chunks=16, device="cpu", polarity=polarity)
    diff = np.abs(inverted.mask.compute() - pred.mask.compute()).max()
    if polarity == "both":  # the same maps for the inverted tomogram
        assert diff < 1e-5
    else:  # the plain network is not polarity invariant (what "both" fixes)
        assert diff > 1e-3
    # a stored prediction records its polarity: the other one is not reused
    src = make_mrc(tmp_path / "v.mrc", volume)
    first = predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu", polarity=polarity)
    other = "as-is" if polarity == "both" else "both"
    with pytest.raises(OutputExistsError):
        predict(src, two_head, out=tmp_path / "p.zarr", chunks=16, device="cpu", polarity=other)
    assert first.attrs["fingerprint"]["polarity"] == polarity


@pytest.mark.parametrize("chunks,tile", [(16, None), ((12, 20, 28), None), (16, 36)])
def test_flip_tta_chunked_equals_whole_volume_and_is_the_mean_of_four_mirror_images(two_head, volume, chunks,
                                                                                      tile, tmp_path):
    net = models.load(two_head)
    ref = models.predict_array(net, volume, tta="flips")
    # by hand: the mean over the four mirror images of the padded volume, each output mirrored back
    p = net.config.pool_factor
    m, s = models.zscore_stats(volume)
    padded = np.pad(volume, [(0, -n % p) for n in volume.shape], constant_values=m)  # 0 once normalized
    by_hand = np.zeros((2, *padded.shape), np.float64)
    for axes in ((), (1, 2), (0,), (0, 1, 2)):
        flipped = np.flip(padded, axes) if axes else padded
        y = models.predict_array(net, np.ascontiguousarray(flipped), mean=m, std=s)
        by_hand += np.flip(y, tuple(a + 1 for a in axes)) if axes else y
    z, yy, xx = volume.shape
    np.testing.assert_allclose(ref, (by_hand / 4)[:, :z, :yy, :xx], atol=1e-5, rtol=0)
    assert np.abs(ref - models.predict_array(net, volume)).max() > 1e-3  # the augmentation changes the maps
    src = make_mrc(tmp_path / "v.mrc", volume)
    pred = predict(src, two_head, out=tmp_path / "p.zarr", chunks=chunks, tile=tile, device="cpu", tta="flips",
                   engine="torch")
    np.testing.assert_allclose(pred.mask.compute(), ref[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pred.center.compute(), ref[1], atol=1e-5, rtol=0)
    assert pred.attrs["fingerprint"]["tta"] == "flips"
    with pytest.raises(OutputExistsError):  # a store of other passes is never reused
        predict(src, two_head, out=tmp_path / "p.zarr", chunks=chunks, tile=tile, device="cpu", engine="torch")
    with pytest.raises(ParameterError, match="tta must be one of none, flips"):
        predict(volume, two_head, chunks=16, device="cpu", tta="rotations")


def test_unknown_polarity_is_refused(two_head, volume):
    with pytest.raises(ParameterError, match="polarity must be one of as-is, both"):
        predict(volume, two_head, chunks=16, device="cpu", polarity="inverted")


def test_one_halo_derivation_for_predict_and_detect(two_head, volume):
    """predict's default halo and detect's chunk and memory checks come from prediction.model_halo."""
    from cryodet_dask.pipeline import DetectParams, inference_halo
    from cryodet_dask.prediction import model_halo, resolve_models, task_tile

    (spec,) = resolve_models(two_head)
    pred = predict(volume, two_head, chunks=16, device="cpu")
    assert pred.plan.halo == model_halo([spec.halo], [spec.pool_factor])
    assert inference_halo(DetectParams(segnet=str(two_head), chunks=(16,))) == pred.plan.halo
    assert model_halo([34], [4], 8) == (8, 8, 8) and model_halo([34], [4], (4, 8, 8)) == (4, 8, 8)
    assert task_tile((128,) * 3, (44,) * 3, (64, 1000, 1000), 4) == (64, 216, 216)  # clipped in z


def test_model_voxel_size_check_warns_every_time_and_takes_a_pair(tmp_path):
    """The check beside resolve_models: a network trained at 10 Å against a 14 Å tomogram warns on every
    call (nothing cached) and returns the trained size; a (SegNet, CenterNet) list is accepted."""
    import warnings

    from cryodet_dask.prediction import check_model_voxel_size

    torch.manual_seed(0)
    cfg = dict(channels=(4, 6, 8), voxel_size=10.0)
    seg = models.save(models.UNet3D(models.UNetConfig(heads=("mask",), **cfg)), tmp_path / "s.pt")
    cen = models.save(models.UNet3D(models.UNetConfig(heads=("center",), **cfg)), tmp_path / "c.pt")
    for _ in range(2):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            assert check_model_voxel_size([str(seg), str(cen)], 14.0) == 10.0
        assert any("were trained at 10" in str(w.message) for w in rec)
    assert check_model_voxel_size([str(seg), str(cen)], 10.2) is None  # within 5 %: nothing to say
