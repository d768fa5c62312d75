"""Tomogram I/O: MRC <-> Zarr round trips, metadata, chunking, and bad input."""

from __future__ import annotations

import json
import struct

import dask.array as da
import mrcfile
import numpy as np
import pytest
import zarr

import cryodet_dask as cd
from cryodet_dask.cli import main
from cryodet_dask.errors import InputError, OutputExistsError, TomogramFormatError
from cryodet_dask.io import partial_path, read_mrc_header
from cryodet_dask.testing import make_mrc

MODES = [np.int8, np.int16, np.uint16, np.float16, np.float32]


def _random(dtype, shape, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.normal(scale=100, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", MODES)
def test_round_trip_bit_exact_every_mode(tmp_path, rng, dtype):
    data = _random(dtype, (17, 30, 45), rng)
    src = make_mrc(tmp_path / "t.mrc", data, voxel_size=7.5)
    out = cd.convert(src, tmp_path / "t.zarr", chunks=(8, 16, 32))
    tomo = cd.load(out)
    back = tomo.data.compute()
    assert back.dtype == data.dtype
    assert back.tobytes() == data.tobytes()
    assert tomo.voxel_size == pytest.approx(7.5)
    # and back to MRC through the chunked writer
    cd.write_mrc(tomo.data, tmp_path / "back.mrc", voxel_size=tomo.voxel_size)
    with mrcfile.open(tmp_path / "back.mrc") as m:
        assert m.data.tobytes() == data.tobytes()
        assert float(m.voxel_size.x) == pytest.approx(7.5)
        assert float(m.header.dmax) == pytest.approx(float(data.max()), rel=1e-3)


def test_lazy_mrc_load_is_chunked_and_exact(small_mrc):
    path, data = small_mrc
    tomo = cd.load(path, chunks=(7, 16, 16))
    assert isinstance(tomo.data, da.Array)
    assert tomo.data.chunks[0] == (7, 7, 6)
    assert tomo.data.chunks[2] == (16, 16, 9)
    assert np.array_equal(tomo.data.compute(), data)
    arr, vs = cd.load(path)  # tuple unpacking: (data, voxel size)
    assert vs == pytest.approx(13.48, rel=1e-5)
    # the graph holds the path, not the voxels
    import pickle

    assert len(pickle.dumps(tomo.data.dask)) < 20_000


@pytest.mark.parametrize("chunks", [(8, 8, 8), (5, 32, 7), (20, 33, 41), (64, 64, 64)])
def test_chunk_shapes_honoured_including_non_divisors(small_mrc, tmp_path, chunks):
    path, data = small_mrc
    out = cd.convert(path, tmp_path / "c.zarr", chunks=chunks)
    arr = zarr.open_group(str(out), mode="r")["0"]
    expected = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    assert arr.chunks == expected
    assert np.array_equal(arr[:], data)


def test_ome_zarr_metadata_and_levels(small_mrc, tmp_path):
    path, data = small_mrc
    out = cd.convert(path, tmp_path / "m.zarr", chunks=8, levels=3)
    group = zarr.open_group(str(out), mode="r")
    ms = group.attrs["ome"]["multiscales"][0]
    assert group.attrs["ome"]["version"] == "0.5"
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "angstrom" for a in ms["axes"])
    scale1 = ms["datasets"][1]["coordinateTransformations"][0]["scale"]
    assert scale1 == pytest.approx([2 * 13.48] * 3, rel=1e-5)
    assert group["1"].shape == (10, 16, 20)
    expected = data[:20, :32, :40].reshape(10, 2, 16, 2, 20, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(group["1"][:], expected, rtol=1e-5, atol=1e-5)
    meta = group.attrs["cryodet"]
    assert meta["voxel_size"] == pytest.approx(13.48, rel=1e-5)
    assert meta["source_header"]["mode"] == 2


def test_sharding(small_mrc, tmp_path):
    path, data = small_mrc
    out = cd.convert(path, tmp_path / "s.zarr", chunks=8, shards=16)
    arr = zarr.open_group(str(out), mode="r")["0"]
    assert arr.chunks == (8, 8, 8)
    assert arr.shards == (16, 16, 16)
    assert np.array_equal(arr[:], data)


def test_origin_and_header_fields_survive(tmp_path, rng):
    data = rng.normal(size=(4, 8, 8)).astype(np.float32)
    src = make_mrc(tmp_path / "o.mrc", data, voxel_size=2.5, origin=(30.0, 20.0, 10.0))
    tomo = cd.load(cd.convert(src, tmp_path / "o.zarr"))
    assert tomo.origin_zyx == pytest.approx((30.0, 20.0, 10.0))


def test_nonstandard_map_order_is_transposed(tmp_path, rng):
    data = rng.normal(size=(6, 7, 8)).astype(np.float32)  # stored (sections, rows, columns)
    path = make_mrc(tmp_path / "mo.mrc", data)
    with mrcfile.open(path, mode="r+") as m:  # columns=y, rows=x, sections=z
        m.header.mapc, m.header.mapr, m.header.maps = 2, 1, 3
    tomo = cd.load(path)
    assert tomo.shape == (6, 8, 7)
    assert np.array_equal(tomo.data.compute(), data.transpose(0, 2, 1))


# ---------------------------------------------------------------- bad input


def _cli_error(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_file(tmp_path, capsys):
    code, err = _cli_error(capsys, "convert", str(tmp_path / "nope.mrc"), str(tmp_path / "o.zarr"))
    assert code != 0 and "no such file" in err and "\n" not in err
    assert not (tmp_path / "o.zarr").exists()


def test_not_mrc(tmp_path, capsys):
    bad = tmp_path / "text.mrc"
    bad.write_bytes(b"hello world, this is not a tomogram\n" * 100)
    code, err = _cli_error(capsys, "convert", str(bad), str(tmp_path / "o.zarr"))
    assert code != 0 and "not an MRC file" in err and "\n" not in err
    with pytest.raises(TomogramFormatError):
        read_mrc_header(bad)
    tiny = tmp_path / "tiny.mrc"
    tiny.write_bytes(b"MAP ")
    with pytest.raises(TomogramFormatError, match="1024"):
        read_mrc_header(tiny)


def test_truncated(tmp_path, rng, capsys):
    path = make_mrc(tmp_path / "t.mrc", rng.normal(size=(10, 16, 16)).astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 500])
    code, err = _cli_error(capsys, "convert", str(path), str(tmp_path / "o.zarr"))
    assert code != 0 and "truncated" in err
    assert not (tmp_path / "o.zarr").exists()


def test_2d_and_4d(tmp_path, rng):
    p2 = tmp_path / "img.mrc"
    with mrcfile.new(p2) as m:
        m.set_data(rng.normal(size=(16, 16)).astype(np.float32))
    with pytest.raises(TomogramFormatError, match="2D"):
        cd.load(p2)
    p4 = tmp_path / "stack.mrc"
    with mrcfile.new(p4) as m:
        m.set_data(rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(TomogramFormatError, match="4D"):
        cd.load(p4)


def test_unsupported_mode(tmp_path, rng):
    path = make_mrc(tmp_path / "c.mrc", rng.normal(size=(4, 8, 8)).astype(np.float32))
    raw = bytearray(path.read_bytes())
    raw[12:16] = struct.pack("<i", 4)  # complex64: same byte count per voxel pair
    path.write_bytes(bytes(raw))
    with pytest.raises(TomogramFormatError, match="mode 4"):
        cd.load(path)


def test_zero_size_axis(tmp_path, rng):
    path = make_mrc(tmp_path / "z.mrc", rng.normal(size=(4, 8, 8)).astype(np.float32))
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack("<i", 0)  # ny = 0
    path.write_bytes(bytes(raw))
    with pytest.raises(TomogramFormatError, match="zero-size"):
        cd.load(path)


def test_nan_policy(tmp_path, rng, capsys):
    data = rng.normal(size=(8, 16, 16)).astype(np.float32)
    data[1, 2, 3] = np.nan
    data[4, 5, 6] = np.inf
    data[7, 0, 0] = -np.inf
    src = make_mrc(tmp_path / "n.mrc", data)
    code, err = _cli_error(capsys, "convert", str(src), str(tmp_path / "o.zarr"), "--chunks", "4")
    assert code != 0 and "3 voxels are NaN or Inf" in err
    assert not (tmp_path / "o.zarr").exists() and not partial_path(tmp_path / "o.zarr").exists()
    code, _ = _cli_error(capsys, "-q", "convert", str(src), str(tmp_path / "o.zarr"), "--nan-policy", "zero")
    assert code == 0
    out = cd.load(tmp_path / "o.zarr").data.compute()
    assert np.isfinite(out).all() and out[1, 2, 3] == 0 and out[4, 5, 6] == 0
    good = np.isfinite(data)
    assert np.array_equal(out[good], data[good])


def test_existing_output_refused_unless_overwrite(small_mrc, tmp_path, capsys):
    path, data = small_mrc
    out = tmp_path / "o.zarr"
    cd.convert(path, out)
    assert cd.convert(path, out) == out  # the same conversion again: a no-op (issue 15), not an error
    other = make_mrc(tmp_path / "other.mrc", data + 1, voxel_size=13.48)
    with pytest.raises(OutputExistsError):  # another source into an existing store: refused
        cd.convert(other, out)
    code, err = _cli_error(capsys, "convert", str(other), str(out))
    assert code != 0 and "--overwrite" in err
    assert cd.convert(other, out, overwrite=True) == out


def test_interrupted_conversion_leaves_no_valid_store(small_mrc, tmp_path, monkeypatch):
    path, _ = small_mrc
    out = tmp_path / "i.zarr"
    import cryodet_dask.io._convert as conv

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(conv, "compute", boom)
    with pytest.raises(KeyboardInterrupt):
        cd.convert(path, out)
    assert not out.exists()
    assert not partial_path(out).exists()


def test_stale_partial_is_cleaned(small_mrc, tmp_path):
    path, data = small_mrc
    out = tmp_path / "p.zarr"
    stale = partial_path(out)
    stale.mkdir()
    (stale / "junk").write_text("left by a killed run")
    cd.convert(path, out)
    assert not stale.exists()
    assert np.array_equal(cd.load(out).data.compute(), data)


def test_load_zarr_errors(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("a", shape=(4, 4, 4), dtype="f4")
    g.create_array("b", shape=(4, 4), dtype="f4")
    with pytest.raises(TomogramFormatError, match="say which"):
        cd.load(tmp_path / "g.zarr")
    assert cd.load(tmp_path / "g.zarr", array="a").shape == (4, 4, 4)
    with pytest.raises(TomogramFormatError, match="3 dimensions"):
        cd.load(tmp_path / "g.zarr", array="b")
    with pytest.raises(InputError):
        cd.load(tmp_path / "missing.zarr")


def test_cli_convert_reports(small_mrc, tmp_path, capsys):
    path, _ = small_mrc
    code = main(["convert", str(path), str(tmp_path / "c.zarr"), "--chunks", "8,16,16", "--levels", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(8, 16, 16)" in out and "13.48 Å" in out
    assert json.loads((tmp_path / "c.zarr" / "zarr.json").read_text())["node_type"] == "group"


def test_mrc_written_by_worker_processes_is_complete_with_exact_header(tmp_path):
    """Blocks written into one MRC by two worker processes (memory-mapped, no msync per block) are
    all there when the writer returns, and the header's statistics are the whole volume's."""
    import distributed

    rng = np.random.default_rng(8)
    data = (rng.normal(size=(23, 40, 37)) * 5 + 3).astype(np.float32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        cd.write_mrc(da.from_array(data, chunks=(6, 16, 9)), tmp_path / "w.mrc", voxel_size=4.0)
    with mrcfile.open(tmp_path / "w.mrc") as m:
        assert m.data.tobytes() == data.tobytes()
        h = m.header
        x = data.astype(np.float64)
        assert (float(h.dmin), float(h.dmax)) == (float(data.min()), float(data.max()))
        assert float(h.dmean) == pytest.approx(x.mean(), rel=1e-6, abs=1e-6)
        assert float(h.rms) == pytest.approx(x.std(), rel=1e-6)
