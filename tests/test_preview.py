"""Tests of ``cryodet_dask.preview``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from matplotlib.image import imread

from cryodet_dask.errors import OutputExistsError, ParameterError
from cryodet_dask.preview import central_slices, preview_png


def _volume(shape=(10, 20, 30)):
    z, y, x = np.indices(shape)
    return (z * 10000 + y * 100 + x).astype(np.float32)


def test_central_slices_are_the_middle_planes():
    v = _volume()
    xy, xz = central_slices(v)
    assert np.array_equal(xy, v[5])
    assert np.array_equal(xz, v[:, 10, :])
    thick_xy, thick_xz = central_slices(v, thickness=3)
    assert np.allclose(thick_xy, v[4:7].mean(axis=0))
    assert np.allclose(thick_xz, v[:, 9:12].mean(axis=1))
    lab = np.zeros((10, 20, 30), np.int32)
    lab[4, 3, 3] = 7
    lxy, _ = central_slices(lab, thickness=3, reduce="max")
    assert lxy[3, 3] == 7


def test_preview_png_with_labels(tmp_path):
    v = np.random.default_rng(0).standard_normal((16, 40, 48)).astype(np.float32)
    lab = np.zeros(v.shape, np.uint16)
    lab[6:10, 10:20, 10:20] = 1
    lab[6:10, 25:35, 30:40] = 2
    out = preview_png(v, tmp_path / "p.png", labels=lab, voxel_size=10.0, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 200
    # the overlay adds colour: the image is no longer grey everywhere
    rgb = img[..., :3]
    assert (np.ptp(rgb, axis=-1) > 0.1).any()


def test_preview_png_dask_without_labels(tmp_path):
    v = da.from_array(_volume((12, 32, 32)), chunks=8)
    out = preview_png(v, tmp_path / "d.png")
    img = imread(out)
    rgb = img[..., :3]
    assert np.ptp(rgb, axis=-1).max() < 0.5  # grey panels, white background, black axes frames


def test_preview_errors(tmp_path):
    v = _volume()
    with pytest.raises(ParameterError):
        preview_png(v, tmp_path / "a.png", labels=np.zeros((3, 3, 3)))
    with pytest.raises(ParameterError):
        preview_png(v[0], tmp_path / "b.png")
    preview_png(v, tmp_path / "c.png")
    with pytest.raises(OutputExistsError):
        preview_png(v, tmp_path / "c.png", overwrite=False)
