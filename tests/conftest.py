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
