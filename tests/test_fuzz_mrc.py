"""Fuzzing MRC headers: every malformed file gives a clean CryodetError, never a crash or a hang.

A valid small MRC2014 file is written with :mod:`mrcfile`; hypothesis then
overwrites header fields at their MRC2014 byte offsets with arbitrary values
(and truncates or extends the file).  ``load`` must either succeed, and then
reading a block must succeed too, or raise a :class:`CryodetError` subclass.
"""

from __future__ import annotations

import struct
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryodet_dask import load
from cryodet_dask.errors import CryodetError
from cryodet_dask.testing import make_mrc

SHAPE = (4, 5, 6)  # z, y, x

#: MRC2014 header fields: name -> (byte offset, struct format)
INT_FIELDS = {
    "nx": (0, "<i"), "ny": (4, "<i"), "nz": (8, "<i"), "mode": (12, "<i"),
    "nxstart": (16, "<i"), "nystart": (20, "<i"), "nzstart": (24, "<i"),
    "mx": (28, "<i"), "my": (32, "<i"), "mz": (36, "<i"),
    "mapc": (64, "<i"), "mapr": (68, "<i"), "maps": (72, "<i"),
    "ispg": (88, "<i"), "nsymbt": (92, "<i"), "nversion": (108, "<i"), "nlabl": (220, "<i"),
}
FLOAT_FIELDS = {
    "cella_x": (40, "<f"), "cella_y": (44, "<f"), "cella_z": (48, "<f"),
    "origin_x": (196, "<f"), "origin_y": (200, "<f"), "origin_z": (204, "<f"),
}
BYTE_FIELDS = {"map": (208, 4), "machst": (212, 4), "exttyp": (104, 4)}

_INTS = st.one_of(
    st.integers(-3, 16),  # small values: modes, map order, zero and negative sizes
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 12, 101, 401, 1024, 65535, 2**31 - 1, -(2**31)]),
    st.integers(-(2**31), 2**31 - 1),
)
_FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)

_corruption = st.one_of(
    st.tuples(st.just("int"), st.sampled_from(sorted(INT_FIELDS)), _INTS),
    st.tuples(st.just("float"), st.sampled_from(sorted(FLOAT_FIELDS)), _FLOATS),
    st.tuples(st.just("bytes"), st.sampled_from(sorted(BYTE_FIELDS)), st.binary(min_size=4, max_size=4)),
)


@pytest.fixture(scope="module")
def valid_bytes():
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        path = make_mrc(Path(d) / "v.mrc", rng.normal(size=SHAPE).astype(np.float32), voxel_size=10.0)
        return Path(path).read_bytes()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _check(path: Path) -> str:
    """Load ``path``; return "ok" or "error" (a CryodetError). Anything else fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tomo = load(path)
            block = tomo.data[:2, :3, :3].compute(scheduler="synchronous")
            whole = tomo.data.compute(scheduler="synchronous")
    except CryodetError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg  # one line for the user
        return "error"
    assert block.shape == tuple(min(n, s) for n, s in zip((2, 3, 3), tomo.shape))
    assert whole.shape == tomo.shape and len(tomo.shape) == 3
    return "ok"


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruptions=st.lists(_corruption, min_size=1, max_size=4),
       resize=st.one_of(st.none(), st.integers(-4200, 4200)))
def test_fuzzed_headers_fail_cleanly(valid_bytes, workdir, corruptions, resize):
    buf = bytearray(valid_bytes)
    for kind, name, value in corruptions:
        if kind == "int":
            off, fmt = INT_FIELDS[name]
            struct.pack_into(fmt, buf, off, value)
        elif kind == "float":
            off, fmt = FLOAT_FIELDS[name]
            struct.pack_into(fmt, buf, off, value)
        else:
            off, n = BYTE_FIELDS[name]
            buf[off : off + n] = value
    if resize is not None:
        buf = buf[: max(len(buf) + resize, 0)] if resize < 0 else buf + bytes(resize)
    path = workdir / "f.mrc"
    path.write_bytes(bytes(buf))
    _check(path)


@pytest.mark.parametrize("field, value, words", [
    ("mode", 4, "mode 4"), ("mode", 101, "mode 101"), ("nz", 1, "2D"), ("nx", 0, "zero-size"),
    ("ny", -5, "negative dimension"), ("nsymbt", 1 << 20, "extended header of 1048576 bytes"), ("nsymbt", 2**31 - 1, "truncated"), ("nsymbt", -1, "negative extended"),
    ("mapc", 5, "map order"), ("nx", 2**31 - 1, "truncated"),
])
def test_specific_malformed_headers(valid_bytes, tmp_path, field, value, words):
    buf = bytearray(valid_bytes)
    off, fmt = INT_FIELDS[field]
    struct.pack_into(fmt, buf, off, value)
    path = tmp_path / "bad.mrc"
    path.write_bytes(bytes(buf))
    t = time.perf_counter()
    with pytest.raises(CryodetError, match=words):
        load(path)
    assert time.perf_counter() - t < 1.0  # e.g. a 2 GiB extended header is refused, not read


def test_truncated_and_garbage_files(valid_bytes, tmp_path):
    for n in (0, 100, 1023, 1024, len(valid_bytes) - 1):
        (tmp_path / "t.mrc").write_bytes(valid_bytes[:n])
        assert _check(tmp_path / "t.mrc") == "error"
    (tmp_path / "g.mrc").write_bytes(bytes(range(256)) * 8)
    assert _check(tmp_path / "g.mrc") == "error"
    (tmp_path / "ok.mrc").write_bytes(valid_bytes)
    assert _check(tmp_path / "ok.mrc") == "ok"
