"""Normalization statistics from per-block moments: the conversion records them as it writes, and a
prediction of the converted store uses them instead of reading the tomogram a second time."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from cryodet_dask.io import block_moments, combine_moments, convert, load, stored_statistics
from cryodet_dask.prediction import _predict as predict_module
from cryodet_dask.prediction import global_stats, predict
from cryodet_dask.testing import make_mrc


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(1, 9), min_size=1, max_size=6),
       st.floats(-1e4, 1e4), st.floats(1e-3, 1e3))
def test_combined_moments_equal_the_whole_volume_formulas(seed, cuts, offset, scale):
    rng = np.random.default_rng(seed)
    v = (rng.normal(size=int(sum(cuts)) * 7) * scale + offset).astype(np.float32)
    edges = np.cumsum([0, *[c * 7 for c in cuts]])
    parts = [block_moments(v[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    n, mean, std = combine_moments(parts)
    assert n == v.size
    x = v.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(), rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(std, x.std(), rtol=1e-9)
    # correctly rounded sums: the order of the blocks does not change a bit
    assert combine_moments(parts[::-1]) == (n, mean, std)


def test_nonfinite_blocks_give_nan_not_an_error():
    good = block_moments(np.ones(8, np.float32))
    for bad in (np.inf, -np.inf, np.nan):
        v = np.ones(8, np.float32)
        v[3] = bad
        _, mean, std = combine_moments([good, block_moments(v), block_moments(-v)])
        assert np.isnan(mean) and np.isnan(std)


@pytest.mark.parametrize("chunks", [8, (5, 16, 9), 64])
def test_global_stats_equals_numpy_for_any_chunking(chunks):
    vol = (np.random.default_rng(2).normal(size=(20, 33, 41)) * 4 + 100).astype(np.float32)
    mean, std = global_stats(da.from_array(vol, chunks=chunks))
    np.testing.assert_allclose([mean, std], [vol.astype(np.float64).mean(), vol.astype(np.float64).std()],
                               rtol=1e-12)
    assert global_stats(da.from_array(np.full((4, 5, 6), 3.0, np.float32), chunks=2)) == (3.0, 1.0)


@pytest.mark.parametrize("nan_policy", ["error", "zero"])
def test_convert_records_the_statistics_of_what_it_wrote(tmp_path, nan_policy):
    vol = (np.random.default_rng(3).normal(size=(20, 33, 41)) * 2 - 7).astype(np.float32)
    if nan_policy == "zero":
        vol[4, 5, 6] = np.nan
    src = make_mrc(tmp_path / "t.mrc", vol, voxel_size=10.0)
    out = convert(src, tmp_path / "t.zarr", chunks=(8, 16, 16), nan_policy=nan_policy)
    tomo = load(out)
    rec = tomo.metadata["statistics"]
    written = np.nan_to_num(vol, nan=0.0).astype(np.float64)
    np.testing.assert_allclose([rec["mean"], rec["std"]], [written.mean(), written.std()], rtol=1e-12)
    assert rec["voxels"] == vol.size
    ident = predict_module.read_source(tomo, None)[3]
    assert rec["content_identity"] == ident
    # the same blocks in a stats pass over the store give the same figures, to the bit
    assert stored_statistics(tomo, ident) == global_stats(tomo.data)


def test_recorded_statistics_are_ignored_when_the_content_changed(tmp_path):
    vol = np.random.default_rng(4).normal(size=(16, 24, 24)).astype(np.float32)
    out = convert(make_mrc(tmp_path / "t.mrc", vol, voxel_size=10.0), tmp_path / "t.zarr", chunks=8)
    tomo = load(out)
    ident = predict_module.read_source(tomo, None)[3]
    assert stored_statistics(tomo, ident) is not None
    assert stored_statistics(tomo, "zarr-crc32c:another") is None
    assert stored_statistics(tomo, None) is None
    # a chunk rewritten in place (a valid chunk with other voxels): another identity, statistics not used
    arr = zarr.open_array(str(out / "0"), mode="r+")
    arr[0:8, 0:8, 0:8] = arr[0:8, 0:8, 0:8] + 5
    tomo = load(out)
    reader, data, _, ident2, recorded = predict_module.read_source(tomo, None)
    assert ident2 != ident and recorded is None


def test_sharded_conversion_records_no_statistics(tmp_path):
    vol = np.random.default_rng(5).normal(size=(16, 24, 24)).astype(np.float32)
    out = convert(make_mrc(tmp_path / "t.mrc", vol, voxel_size=10.0), tmp_path / "t.zarr", chunks=8, shards=16)
    assert "statistics" not in load(out).metadata


def test_prediction_of_a_converted_store_reads_no_statistics_pass(tmp_path, two_head, monkeypatch):
    vol = (np.random.default_rng(6).normal(size=(24, 40, 40)) * 3 + 10).astype(np.float32)
    out = convert(make_mrc(tmp_path / "t.mrc", vol, voxel_size=10.0), tmp_path / "t.zarr", chunks=16)
    reference = predict(load(out), two_head, chunks=16, stats=global_stats(load(out).data))
    ref_mask, ref_center = reference.mask.compute(), reference.center.compute()

    def no_pass(*args, **kwargs):
        raise AssertionError("the statistics pass ran although the conversion recorded them")

    monkeypatch.setattr(predict_module, "global_stats", no_pass)
    pred = predict(out, two_head, chunks=16, out=tmp_path / "p.zarr")
    np.testing.assert_array_equal(pred.mask.compute(), ref_mask)
    np.testing.assert_array_equal(pred.center.compute(), ref_center)
    # an input without recorded statistics still gets its pass
    with pytest.raises(AssertionError, match="statistics pass ran"):
        predict(vol, two_head, chunks=16)
