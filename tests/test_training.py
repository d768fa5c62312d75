"""Tests of cryodet_dask.training: targets, lazy patches, augmentation, the loop, resume, CLI."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from cryodet_dask.errors import CheckpointError, ParameterError
from cryodet_dask.models import load
from cryodet_dask.testing import make_mrc
from cryodet_dask.training import (
    augment,
    center_target,
    open_training_volume,
    particle_table,
    read_patch,
    sample_origins,
    split_region,
    train,
)

torch.set_num_threads(1)


def _spheres(shape=(24, 48, 48), n=10, seed=0, noise=0.3):
    """Random non-overlapping-ish balls (instance labels) and a noisy image of them."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    zz, yy, xx = np.indices(shape)
    for k in range(1, n + 1):
        c = rng.uniform([5, 5, 5], np.array(shape) - 5)
        r = rng.uniform(2.5, 4.0)
        m = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        lab[m & (lab == 0)] = k
    img = -(lab > 0).astype(np.float32) + rng.normal(0, noise, shape).astype(np.float32) + 3.0
    return img, lab


def test_center_target_per_particle():
    lab = np.zeros((9, 9, 16), np.int32)
    lab[1:8, 1:8, 1:8] = 1  # 7^3 cube
    lab[1:8, 1:8, 8:15] = 2  # touching cube, other id
    t = center_target(lab)
    assert t[4, 4, 4] == pytest.approx(1.0) and t[4, 4, 11] == pytest.approx(1.0)
    # boundary voxels 0, including the face shared by the two particles
    assert t[4, 4, 7] == 0 and t[4, 4, 8] == 0 and t[1, 4, 4] == 0
    assert np.all(t[lab == 0] == 0) and t.max() <= 1


def test_particle_table_across_chunks():
    _, lab = _spheres()
    table = particle_table(da.from_array(lab, chunks=(7, 13, 11)))
    ids = np.unique(lab)[1:]
    assert np.array_equal(table["ids"], ids)
    for j, i in enumerate(ids):
        pts = np.argwhere(lab == i)
        np.testing.assert_allclose(table["centroid"][j], pts.mean(axis=0), atol=1e-9)
        np.testing.assert_array_equal(table["lo"][j], pts.min(axis=0))
        np.testing.assert_array_equal(table["hi"][j], pts.max(axis=0) + 1)
        assert table["count"][j] == len(pts)


def test_read_patch_computes_only_the_patch_and_uses_global_stats():
    img, lab = _spheres(shape=(32, 64, 64))
    touched = []

    def spy(block, block_info=None):
        touched.append(tuple(block_info[None]["chunk-location"]))
        return block

    dimg = da.from_array(img, chunks=16).map_blocks(spy, dtype=img.dtype)
    vol = open_training_volume(dimg, lab)
    assert vol.mean == pytest.approx(img.mean(dtype=np.float64))
    touched.clear()
    x, y = read_patch(vol, np.array([0, 0, 0]), (16, 16, 16), ("mask", "center"))
    assert set(touched) == {(0, 0, 0)}
    np.testing.assert_allclose(x, (img[:16, :16, :16] - vol.mean) / vol.std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y[0], lab[:16, :16, :16] > 0)
    # centre target of particles cut by the patch border is that of the whole particle
    np.testing.assert_allclose(y[1], center_target(lab)[:16, :16, :16], atol=1e-6)


def test_read_patch_outside_volume_is_zero_padded():
    img, lab = _spheres(shape=(16, 16, 16), n=3)
    vol = open_training_volume(img, lab)
    x, y = read_patch(vol, np.array([8, -4, 0]), (16, 16, 16), ("mask",))
    assert x.shape == (16, 16, 16) and np.all(x[8:] == 0) and np.all(x[:, :4] == 0) and np.all(y[0, 8:] == 0)


def test_split_and_sampling_stay_in_their_region():
    img, lab = _spheres(shape=(24, 64, 48))
    vol = open_training_volume(img, lab)
    train_r, val_r = split_region(vol.shape, 0.25, 16)
    assert train_r[1] == (0, 48) and val_r[1] == (48, 64)
    rng = np.random.default_rng(0)
    for region in (train_r, val_r):
        starts = sample_origins(vol, region, (16, 16, 16), 50, rng, jitter=5, background_fraction=0.2)
        for a in range(3):
            assert np.all(starts[:, a] >= region[a][0]) and np.all(starts[:, a] + 16 <= region[a][1])
    with pytest.raises(ParameterError):
        split_region((24, 20, 20), 0.5, 16)


def test_augment_moves_input_and_targets_together():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8)).astype(np.float32)
    y = np.stack([x > 0, x * 2])
    for _ in range(20):
        xa, ya = augment(x, y, rng, intensity=0.0)
        np.testing.assert_array_equal(ya[0], xa > 0)
        np.testing.assert_allclose(ya[1], xa * 2)
        # rotations about y keep the y profile's multiset per slab
        assert sorted(xa.ravel()) == sorted(x.ravel())
    xa, _ = augment(x, y, np.random.default_rng(1), rotate=False, flip=False, intensity=0.2)
    assert not np.allclose(xa, x)


def test_training_lowers_the_loss_and_resumes(tmp_path):
    img, lab = _spheres(shape=(24, 48, 48), n=12, seed=2)
    out = tmp_path / "net.pt"
    kw = dict(heads=("mask", "center"), channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2,
              steps_per_epoch=12, validation_batches=2, validation_fraction=0.34, learning_rate=3e-3, seed=0,
              progress=False)
    r1 = train(img, lab, out, epochs=3, **kw)
    losses = [h["validation_loss"] for h in r1.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert r1.checkpoint.exists() and r1.last.exists()
    net = load(out)
    assert net.config.heads == ("mask", "center")
    assert net.config.training["best_validation_loss"] == pytest.approx(min(losses))
    # run again with more epochs: continues at epoch 4, keeps the history
    r2 = train(img, lab, out, epochs=4, **kw)
    assert r2.epochs == 4 and len(r2.history) == 4
    assert r2.history[:3] == r1.history
    # another network where a run was left refuses to resume
    with pytest.raises(CheckpointError, match="another network"):
        train(img, lab, out, epochs=5, **{**kw, "heads": ("mask",)})


def test_training_errors(tmp_path):
    img, lab = _spheres(shape=(24, 48, 48))
    with pytest.raises(ParameterError, match="multiples"):
        train(img, lab, tmp_path / "unused.pt", patch_size=15, channels=(4, 8), convs_per_level=(1, 1), progress=False)
    with pytest.raises(ParameterError, match="unknown training parameter"):
        train(img, lab, tmp_path / "unused.pt", epoch=3)
    from cryodet_dask.errors import InputError

    with pytest.raises(InputError, match="differs"):
        train(img, lab[:, :40], tmp_path / "unused.pt", progress=False)
    with pytest.raises(InputError, match="no particles"):
        train(img, np.zeros_like(lab), tmp_path / "unused.pt", progress=False)


def test_cli_train_from_mrc(tmp_path, capsys):
    from cryodet_dask.cli import main

    img, lab = _spheres(shape=(24, 48, 48), n=8, seed=5)
    make_mrc(tmp_path / "t.mrc", img, voxel_size=12.0)
    make_mrc(tmp_path / "l.mrc", lab.astype(np.int16), voxel_size=12.0)
    code = main(["-q", "train", str(tmp_path / "c.pt"), "-t", str(tmp_path / "t.mrc"), "-l", str(tmp_path / "l.mrc"),
                 "--network", "centernet", "--channels", "4,8", "--convs-per-level", "1,1", "--patch-size", "16",
                 "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2", "--validation-batches", "1",
                 "--validation-fraction", "0.34"])
    assert code == 0
    net = load(tmp_path / "c.pt", expect_heads=("center",))
    assert net.config.voxel_size == pytest.approx(12.0)
    assert "train" in net.config.training["command"]
    code = main(["train", str(tmp_path / "d.pt"), "-t", str(tmp_path / "t.mrc"), "-l", str(tmp_path / "missing.mrc")])
    assert code != 0 and "missing.mrc" in capsys.readouterr().err


def test_centre_loss_has_gradient_where_the_output_is_clipped():
    # the centre head is trained on its pre-ReLU output, so it cannot die at 0
    from cryodet_dask.models import UNet3D, UNetConfig
    from cryodet_dask.training._loop import _loss

    net = UNet3D(UNetConfig(channels=(2, 2), convs_per_level=(1, 1), heads=("mask", "center")))
    logits = torch.full((1, 2, 4, 4, 4), -3.0, requires_grad=True)
    target = torch.zeros(1, 2, 4, 4, 4)
    target[:, 1, 1:3, 1:3, 1:3] = 1.0
    _loss(net, logits, target, 1.0).backward()
    assert float(logits.grad[:, 1].abs().sum()) > 0
    assert float(net.activate(logits.detach())[:, 1].max()) == 0.0  # while the activated output is 0
