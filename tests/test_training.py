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


def test_fine_tuning_a_wider_network_starts_from_the_same_function(tmp_path):
    img, lab = _spheres(shape=(24, 48, 48), n=12, seed=2)
    kw = dict(patch_size=16, batch_size=2, steps_per_epoch=2, validation_batches=1, validation_fraction=0.34,
              seed=0, progress=False, epochs=1)
    train(img, lab, tmp_path / "a.pt", heads=("mask", "center"), channels=(4, 8), convs_per_level=(1, 1),
          learning_rate=3e-3, **kw)
    # a learning rate too small to move the weights: what is saved is the start
    train(img, lab, tmp_path / "b.pt", init=tmp_path / "a.pt", channels=(6, 11), learning_rate=1e-12, **kw)
    a, b = load(tmp_path / "a.pt").eval(), load(tmp_path / "b.pt").eval()
    assert b.config.channels == (6, 11) and b.config.training["init"]["widened_from"] == [4, 8]
    x = torch.from_numpy(img[None, None, :16, :32, :32].copy())
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-5)
    for bad in [(3, 8), (4, 8, 8)]:  # narrower, or another depth: refused before reading any data
        with pytest.raises(ParameterError, match="widened"):
            train(None, None, tmp_path / "c.pt", init=tmp_path / "a.pt", channels=bad, **kw)
    assert not (tmp_path / "c.pt").exists()


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
    # the default centre target is the seed's distance target, recorded with the other settings
    assert net.config.training["settings"]["center_target"] == "distance"
    code = main(["train", str(tmp_path / "d.pt"), "-t", str(tmp_path / "t.mrc"), "-l", str(tmp_path / "missing.mrc")])
    assert code != 0 and "missing.mrc" in capsys.readouterr().err
    # --init with --channels widens; narrower channels are one line and exit 2, nothing written
    capsys.readouterr()
    code = main(["-q", "train", str(tmp_path / "e.pt"), "-t", str(tmp_path / "t.mrc"), "-l", str(tmp_path / "l.mrc"),
                 "--init", str(tmp_path / "c.pt"), "--channels", "3,8"])
    err = capsys.readouterr().err
    assert code == 2 and "widened" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("e*.pt"))


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


def test_augment_inverts_contrast_with_the_given_probability():
    x = np.arange(8.0, dtype=np.float32).reshape(2, 2, 2)
    y = np.stack([x > 3, x])
    flips = 0
    rng = np.random.default_rng(3)
    for _ in range(400):
        xa, ya = augment(x, y, rng, rotate=False, flip=False, intensity=0.0, invert=0.5)
        np.testing.assert_array_equal(ya, y.astype(np.float32))  # targets never change
        if xa.sum() < 0:
            np.testing.assert_array_equal(xa, -x)
            flips += 1
        else:
            np.testing.assert_array_equal(xa, x)
    assert 150 < flips < 250
    # invert=0 draws nothing: the random stream is that of the old augment
    a = augment(x, y, np.random.default_rng(5), invert=0.0)[0]
    b = augment(x, y, np.random.default_rng(5))[0]
    np.testing.assert_array_equal(a, b)


def test_pool_conditions_are_drawn_per_index_within_the_ranges():
    from cryodet_dask.training import PoolRanges, draw_conditions

    r = PoolRanges()
    conds = [draw_conditions(7, i, r) for i in range(200)]
    assert draw_conditions(7, 3, r) == conds[3]  # pure: depends on (seed, index) only
    assert draw_conditions(8, 3, r) != conds[3]
    for c in conds:
        assert r.snr[0] <= c["snr"] <= r.snr[1] and r.tilt_range[0] <= c["tilt_range"] <= r.tilt_range[1]
        assert r.defocus_um[0] <= c["defocus_um"] <= r.defocus_um[1]
        assert r.voxel_size[0] <= c["voxel_size"] <= r.voxel_size[1]
        assert len(c["templates"]) >= r.min_templates
    assert {t for c in conds for t in c["templates"]} == {"4v4r", "4cr2", "3j9i", "1bxn", "7n4y", "6pxm"}
    inverted = sum(c["inverted"] for c in conds)
    assert 70 < inverted < 130
    assert 20 < sum(c.get("n_membranes", 1) == 0 for c in conds) < 100
    with pytest.raises(ParameterError):
        PoolRanges(snr=(1.0, 0.5))


def test_simulate_pool_writes_a_resumable_manifest_and_trains(tmp_path):
    import mrcfile

    from cryodet_dask.cli import main
    from cryodet_dask.training import read_pool, simulate_pool

    ranges = dict(inverted_fraction=1.0, density=(0.05, 0.05))
    from cryodet_dask.training import PoolRanges

    members = simulate_pool(tmp_path / "pool", 2, seed=1, shape=(24, 48, 48), ranges=PoolRanges(**ranges))
    assert [m.name for m in members] == ["pool/0000", "pool/0001"]
    assert all(m.conditions["inverted"] for m in members)
    with mrcfile.open(members[0].tomogram) as m:
        inverted = np.array(m.data)
    # inverted contrast: particles (label > 0) brighter than the background on average
    with mrcfile.open(members[0].labels) as m:
        lab = np.array(m.data)
    assert inverted[lab > 0].mean() > inverted[lab == 0].mean()
    # the same call keeps complete members (no re-simulation: same bytes, same mtime)
    mtime = members[0].tomogram.stat().st_mtime_ns
    again = simulate_pool(tmp_path / "pool", 3, seed=1, shape=(24, 48, 48), ranges=PoolRanges(**ranges))
    assert len(again) == 3 and again[0].tomogram.stat().st_mtime_ns == mtime
    assert len(read_pool(tmp_path / "pool" / "pool.json")) == 3
    # train from the pool, then fine-tune from that checkpoint with a cosine schedule
    common = ["--patch-size", "16", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2",
              "--validation-batches", "1", "--threads", "1"]
    assert main(["-q", "train", str(tmp_path / "a.pt"), "--pool", str(tmp_path / "pool"), "--network", "twohead",
                 "--channels", "4,8", "--convs-per-level", "1,1", *common]) == 0
    assert main(["-q", "train", str(tmp_path / "b.pt"), "--pool", str(tmp_path / "pool"),
                 "--validation-pool", str(tmp_path / "pool"), "--init", str(tmp_path / "a.pt"),
                 "--lr-schedule", "cosine", "--snapshot-every", "1", *common]) == 0
    assert (tmp_path / "b.epoch001.pt").exists()
    net = load(tmp_path / "b.pt")
    assert net.config.heads == ("mask", "center") and net.config.channels == (4, 8)
    t = net.config.training
    assert t["init"]["sha256"] and t["pools"][0]["tomograms"] == 3
    assert t["settings"]["lr_schedule"] == "cosine" and t["settings"]["invert"] == 0.5
    assert main(["-q", "train", str(tmp_path / "c.pt"), "--pool", str(tmp_path / "nowhere")]) == 2


def test_training_and_simulator_centre_targets_agree():
    from cryodet_dask.simulation import center_target as simulator_target

    lab = np.zeros((8, 8, 8), np.int32)
    lab[2:6, 2:6, 2:6] = 3  # a 4^3 cube: 8 deepest voxels
    t = center_target(lab)
    assert int((t == 1.0).sum()) == 1  # one peak, as the simulator's, not a plateau of 8
    ref, peak = simulator_target(lab[1:7, 1:7, 1:7] == 3)
    np.testing.assert_array_equal(t[1:7, 1:7, 1:7], ref)


def _gaussian_reference(lab, i):
    """exp(-|x-c|^2 / (2 sigma^2)) of label ``i`` at its voxels, written out (sigma = equivalent radius / 2)."""
    pts = np.argwhere(lab == i).astype(float)
    c = pts.mean(axis=0)
    sigma = (3 * len(pts) / (4 * np.pi)) ** (1 / 3) / 2
    return pts.astype(int), np.exp(-((pts - c) ** 2).sum(axis=1) / (2 * sigma**2)), c


def test_gaussian_center_target_per_particle():
    from cryodet_dask.training import gaussian_center_target, make_center_target

    lab = np.zeros((12, 12, 24), np.int32)
    lab[2:9, 2:9, 2:9] = 1  # 7^3 cube, centroid on the voxel (5, 5, 5)
    lab[2:9, 2:9, 9:17] = 2  # touching 7x7x8 box, other id: centroid between voxels
    zz, yy, xx = np.indices(lab.shape)
    ball = (zz - 6.3) ** 2 + (yy - 6.6) ** 2 + (xx - 20.2) ** 2 <= 3.2**2
    lab[ball & (lab == 0)] = 5  # a ball touching box 2, ids need not be consecutive
    t = gaussian_center_target(lab)
    assert t.dtype == np.float32 and t.shape == lab.shape
    assert np.all(t[lab == 0] == 0) and np.all(t[lab > 0] > 0) and t.max() <= 1
    assert t[5, 5, 5] == 1.0  # exact at a centroid that is a voxel centre
    for i in (1, 2, 5):
        pts, ref, c = _gaussian_reference(lab, i)
        # each voxel gets its own particle's value only (the touching faces included)
        np.testing.assert_allclose(t[tuple(pts.T)], ref, rtol=1e-6)
        # the particle's maximum is at its voxel nearest the centroid
        peak = pts[np.argmax(t[tuple(pts.T)])]
        assert np.linalg.norm(peak - c) <= np.linalg.norm(pts - c, axis=1).min() + 1e-9
    # the cube's face touching box 2 has the values of its free face: no merging across the contact
    assert t[5, 5, 8] == pytest.approx(t[5, 5, 2]) and t[5, 5, 9] != pytest.approx(t[5, 5, 8])
    np.testing.assert_array_equal(make_center_target(lab, "gaussian"), t)
    np.testing.assert_array_equal(make_center_target(lab, "distance"), center_target(lab))
    np.testing.assert_array_equal(gaussian_center_target(np.zeros((3, 4, 5), np.uint16)), np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="centre target"):
        make_center_target(lab, "box")


def test_read_patch_gaussian_target_of_cut_particles_is_the_whole_particles():
    from cryodet_dask.training import gaussian_center_target

    img, lab = _spheres(shape=(32, 64, 64), n=14, seed=3)
    fake = np.full(lab.shape, 0.5, np.float32)  # a precomputed centre target: used by distance only
    vol = open_training_volume(img, lab, fake)
    whole = gaussian_center_target(lab)
    centres = np.round(vol.particles["centroid"][:5]).astype(int)
    # patches whose low corner is 1 voxel before a particle's centre (it is cut), one partly outside the volume
    for start in [*(centres - 1), np.array([-3, 50, 56])]:
        x, y = read_patch(vol, start, (16, 16, 16), ("mask", "center"), center_target="gaussian")
        ref = np.pad(whole, 16)[tuple(slice(s + 16, s + 32) for s in start)]
        inside = np.zeros(lab.shape, bool)
        inside[tuple(slice(max(s, 0), s + 16) for s in start)] = True
        cut = np.intersect1d(np.unique(lab[inside]), np.unique(lab[~inside]))
        assert cut[cut > 0].size > 0 or start[0] < 0  # the patch cuts particles...
        # ...whose values are those computed on the whole particle
        np.testing.assert_allclose(y[1], ref, atol=1e-6)
        assert np.all((y[1] >= 0) & (y[1] <= 1)) and np.all(y[1][y[0] == 0] == 0)
        _, yd = read_patch(vol, start, (16, 16, 16), ("center",))
        np.testing.assert_array_equal(yd[0], np.pad(fake, 16)[tuple(slice(s + 16, s + 32) for s in start)])
    # the values differ from those of the cut pieces alone (the margin matters)
    z, yy, xx = centres[0] - 1
    x, y = read_patch(vol, centres[0] - 1, (16, 16, 16), ("center",), center_target="gaussian")
    alone = gaussian_center_target(lab[z:z + 16, yy:yy + 16, xx:xx + 16])
    assert not np.allclose(y[0], alone)
    with pytest.raises(ParameterError, match="center_target"):
        read_patch(vol, np.array([0, 0, 0]), (16, 16, 16), ("center",), center_target="box")


def test_center_target_setting_default_cli_and_resume(tmp_path, monkeypatch):
    from cryodet_dask import training
    from cryodet_dask.cli import main
    from cryodet_dask.training import TrainingConfig

    assert TrainingConfig().center_target == "distance"
    with pytest.raises(ParameterError, match="center_target"):
        TrainingConfig(center_target="box")
    # the CLI flag reaches the training config; its default is the distance target
    seen = []

    def fake_train(*args, config=None, **kw):
        seen.append(config)
        raise SystemExit(0)

    img, lab = _spheres(shape=(24, 48, 48), n=8, seed=5)
    make_mrc(tmp_path / "t.mrc", img, voxel_size=12.0)
    make_mrc(tmp_path / "l.mrc", lab.astype(np.int16), voxel_size=12.0)
    args = ["-q", "train", str(tmp_path / "x.pt"), "-t", str(tmp_path / "t.mrc"), "-l", str(tmp_path / "l.mrc")]
    with monkeypatch.context() as m:
        m.setattr(training, "train", fake_train)
        for extra, want in (([], "distance"), (["--center-target", "gaussian"], "gaussian"),
                            (["--center-target", "distance"], "distance")):
            with pytest.raises(SystemExit):
                main(args + extra)
            assert seen[-1].center_target == want
    with pytest.raises(SystemExit):
        main(args + ["--center-target", "mexican-hat"])
    # training records the choice; resuming with the other target is refused
    out = tmp_path / "g.pt"
    kw = dict(heads=("mask", "center"), channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2,
              steps_per_epoch=2, validation_batches=1, validation_fraction=0.34, progress=False, threads=1)
    train(img, lab, out, epochs=1, center_target="gaussian", **kw)
    assert load(out).config.training["settings"]["center_target"] == "gaussian"
    assert load(out).config.training["center_target"] == "gaussian"
    with pytest.raises(CheckpointError, match="'gaussian' centre target"):
        train(img, lab, out, epochs=2, **kw)
    r = train(img, lab, out, epochs=2, center_target="gaussian", **kw)
    assert r.epochs == 2


def _tiny_run(tmp_path, out, tomo, lab, **extra):
    kw = dict(heads=("mask",), channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2,
              steps_per_epoch=2, validation_batches=1, validation_fraction=0.34, progress=False, threads=1,
              epochs=1)
    return train(tomo, lab, out, **{**kw, **extra})


def test_resume_is_refused_with_other_data_or_settings(tmp_path):
    """Issue 27 item 3: the resumable state records what it was trained on; other data or settings refuse."""
    import os
    import shutil

    img, lab = _spheres(shape=(24, 48, 48), n=8, seed=5)
    img2, lab2 = _spheres(shape=(24, 48, 48), n=8, seed=6)
    a = tmp_path / "a"
    a.mkdir()
    make_mrc(a / "t.mrc", img, voxel_size=10.0)
    make_mrc(a / "l.mrc", lab.astype(np.int16), voxel_size=10.0)
    make_mrc(a / "t2.mrc", img2, voxel_size=10.0)
    make_mrc(a / "l2.mrc", lab2.astype(np.int16), voxel_size=10.0)
    out = tmp_path / "net.pt"
    _tiny_run(tmp_path, out, str(a / "t.mrc"), str(a / "l.mrc"))
    last = out.with_name("net.last.pt")
    before = (out.read_bytes(), last.read_bytes())

    def refused(match, *args, **kw):
        with pytest.raises(CheckpointError, match=match) as exc:
            _tiny_run(tmp_path, out, *args, **kw)
        msg = str(exc.value)
        assert "\n" not in msg and "--init" in msg and "--no-resume" in msg
        assert (out.read_bytes(), last.read_bytes()) == before  # nothing written

    # other labels, another tomogram, a label map rewritten in place with the same size, another order
    refused("other training data", str(a / "t.mrc"), str(a / "l2.mrc"), epochs=2)
    refused("other training data", str(a / "t2.mrc"), str(a / "l2.mrc"), epochs=2)
    refused("2 training tomograms", [str(a / "t.mrc"), str(a / "t2.mrc")], [str(a / "l.mrc"), str(a / "l2.mrc")],
            epochs=2)
    # validation tomograms instead of the held-out parts, and the reverse for a state with validation pairs
    refused("validation tomograms", str(a / "t.mrc"), str(a / "l.mrc"), epochs=2,
            validation=[(str(a / "t2.mrc"), str(a / "l2.mrc"))])
    # every setting that changes what is learnt
    for setting, value in (("batch_size", 4), ("seed", 1), ("learning_rate", 0.5), ("jitter", 2),
                           ("background_fraction", 0.5), ("rotate", False), ("invert", 0.0),
                           ("steps_per_epoch", 3), ("validation_fraction", 0.4), ("patch_size", 8)):
        refused(f"other training settings \\({setting}", str(a / "t.mrc"), str(a / "l.mrc"), epochs=2,
                **{setting: value})
    # the same data, copied elsewhere (new paths and times), with more epochs and another time limit: resumes
    b = tmp_path / "b"
    shutil.copytree(a, b)
    for f in b.iterdir():
        os.utime(f, (1e9, 1e9))
    r = _tiny_run(tmp_path, out, str(b / "t.mrc"), str(b / "l.mrc"), epochs=2, max_minutes=100.0, patience=3)
    assert r.epochs == 2 and len(r.history) == 2
    # a label map changed in place (same size, one particle removed) is not the data the state saw
    lab_b = lab.copy()
    lab_b[lab_b == 3] = 0
    make_mrc(b / "l.mrc", lab_b.astype(np.int16), voxel_size=10.0)
    assert (b / "l.mrc").stat().st_size == (a / "l.mrc").stat().st_size
    before = (out.read_bytes(), last.read_bytes())
    refused("its labels is not", str(b / "t.mrc"), str(b / "l.mrc"), epochs=3)
    # a state trained with validation pairs: other pairs are refused, the same ones resume
    out2 = tmp_path / "val.pt"
    val = [(str(a / "t2.mrc"), str(a / "l2.mrc"))]
    _tiny_run(tmp_path, out2, str(a / "t.mrc"), str(a / "l.mrc"), validation=val)
    with pytest.raises(CheckpointError, match="other validation data"):
        _tiny_run(tmp_path, out2, str(a / "t.mrc"), str(a / "l.mrc"), epochs=2,
                  validation=[(str(a / "t2.mrc"), str(a / "l.mrc"))])
    with pytest.raises(CheckpointError, match="held-out parts"):
        _tiny_run(tmp_path, out2, str(a / "t.mrc"), str(a / "l.mrc"), epochs=2)
    assert _tiny_run(tmp_path, out2, str(a / "t.mrc"), str(a / "l.mrc"), epochs=2, validation=val).epochs == 2
    # the record is a dict that can gain keys; it holds the learning settings and the data identities
    state = torch.load(out2.with_name("val.last.pt"), weights_only=True)
    rec = state["resume_record"]
    assert rec["settings"]["batch_size"] == 2 and rec["settings"]["validation_fraction"] is None
    assert rec["training_data"][0]["tomogram"].startswith("sha256") and len(rec["validation_data"]) == 1


def test_resume_refused_through_the_cli_in_one_line(tmp_path, capsys):
    from cryodet_dask.cli import main

    img, lab = _spheres(shape=(24, 48, 48), n=8, seed=5)
    img2, lab2 = _spheres(shape=(24, 48, 48), n=8, seed=6)
    make_mrc(tmp_path / "t.mrc", img, voxel_size=12.0)
    make_mrc(tmp_path / "l.mrc", lab.astype(np.int16), voxel_size=12.0)
    make_mrc(tmp_path / "t2.mrc", img2, voxel_size=12.0)
    make_mrc(tmp_path / "l2.mrc", lab2.astype(np.int16), voxel_size=12.0)
    common = ["--channels", "4,8", "--convs-per-level", "1,1", "--patch-size", "16", "--batch-size", "2",
              "--steps-per-epoch", "2", "--validation-batches", "1", "--validation-fraction", "0.34",
              "--threads", "1"]
    out = str(tmp_path / "c.pt")
    assert main(["-q", "train", out, "-t", str(tmp_path / "t.mrc"), "-l", str(tmp_path / "l.mrc"),
                 "--epochs", "1", *common]) == 0
    capsys.readouterr()
    code = main(["-q", "train", out, "-t", str(tmp_path / "t2.mrc"), "-l", str(tmp_path / "l2.mrc"),
                 "--epochs", "2", *common])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other training data" in err and "--init" in err and "--no-resume" in err
    assert load(out).config.training["epochs"] == 1
    # as the line says: fine-tune what it learnt into another output with --init
    assert main(["-q", "train", str(tmp_path / "d.pt"), "-t", str(tmp_path / "t2.mrc"), "-l",
                 str(tmp_path / "l2.mrc"), "--init", out, "--epochs", "1", *common[4:]]) == 0
    # or start afresh
    assert main(["-q", "train", out, "-t", str(tmp_path / "t2.mrc"), "-l", str(tmp_path / "l2.mrc"),
                 "--epochs", "1", "--no-resume", *common]) == 0


def test_resume_of_a_state_without_a_record(tmp_path, caplog):
    """States written before the record (training_runs/2026-11-30/*.last.pt): resumed with a warning when
    what they stored (data names, shapes, particle counts, voxel sizes, validation, settings) matches."""
    import logging

    img, lab = _spheres(shape=(24, 48, 48), n=8, seed=5)
    make_mrc(tmp_path / "t.mrc", img, voxel_size=10.0)
    make_mrc(tmp_path / "l.mrc", lab.astype(np.int16), voxel_size=10.0)
    lab_b = lab.copy()
    lab_b[lab_b == 3] = 0
    make_mrc(tmp_path / "l_b.mrc", lab_b.astype(np.int16), voxel_size=10.0)
    out = tmp_path / "old.pt"
    _tiny_run(tmp_path, out, str(tmp_path / "t.mrc"), str(tmp_path / "l.mrc"))
    last = out.with_name("old.last.pt")
    state = torch.load(last, weights_only=True)
    del state["resume_record"]
    torch.save(state, last)
    with pytest.raises(CheckpointError, match="other training data"):
        _tiny_run(tmp_path, out, str(tmp_path / "t.mrc"), str(tmp_path / "l_b.mrc"), epochs=2)
    with pytest.raises(CheckpointError, match="other training settings"):
        _tiny_run(tmp_path, out, str(tmp_path / "t.mrc"), str(tmp_path / "l.mrc"), epochs=2, seed=3)
    with caplog.at_level(logging.WARNING, logger="cryodet_dask"):
        r = _tiny_run(tmp_path, out, str(tmp_path / "t.mrc"), str(tmp_path / "l.mrc"), epochs=2)
    assert r.epochs == 2 and "before training states recorded" in caplog.text
    assert "resume_record" in torch.load(last, weights_only=True)  # recorded from now on

