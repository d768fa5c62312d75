"""Shared fixtures: small MRC files made on the fly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cryodet_dask.testing import make_mrc, tiny_two_head_checkpoint

# Keep torch and BLAS from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_mrc(tmp_path, rng):
    data = rng.normal(size=(20, 33, 41)).astype(np.float32)
    return make_mrc(tmp_path / "small.mrc", data, voxel_size=13.48), data


@pytest.fixture(scope="session")
def net(tmp_path_factory):
    """A tiny random-weight two-head network (the end-to-end tests need particles, not accuracy)."""
    return tiny_two_head_checkpoint(tmp_path_factory.mktemp("net") / "two.pt", seed=3)


@pytest.fixture(scope="module")
def two_head(tmp_path_factory):
    """A small random two-head network (the prediction and engine tests)."""
    import torch

    from cryodet_dask import models

    torch.manual_seed(0)
    net = models.UNet3D(models.UNetConfig(channels=(6, 8, 10), heads=("mask", "center")))
    return models.save(net, tmp_path_factory.mktemp("ck") / "two.pt")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A small random SegNet + CenterNet pair."""
    import torch

    from cryodet_dask import models

    d = tmp_path_factory.mktemp("pair")
    torch.manual_seed(1)
    seg = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("mask",))), d / "seg.pt")
    cen = models.save(models.UNet3D(models.UNetConfig(channels=(4, 6, 8), heads=("center",))), d / "cen.pt")
    return seg, cen


@pytest.fixture(scope="module")
def volume():
    """A 30 x 50 x 44 noise volume, not a multiple of any chunk or pooling factor."""
    rng = np.random.default_rng(7)
    return (rng.normal(size=(30, 50, 44)) * 3 + 10).astype(np.float32)
