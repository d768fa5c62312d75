"""Integrity of the Zarr stores cryodet-dask writes: checksums, chunk existence, source identity.

Every array this project writes carries a ``crc32c`` codec after the
compressor, so a chunk whose bytes changed after it was written (a flipped
byte, a truncated file) fails to decode instead of decoding to wrong numbers.
Every chunk is written, even one equal to the fill value (Zarr's
``write_empty_chunks``), so a store marked ``all_chunks_written`` has a file
for each chunk and a missing file is damage, never zeros.

* :class:`CheckedArray` reads such an array for Dask tasks; a missing or
  damaged chunk raises :class:`~cryodet_dask.errors.StoreIntegrityError` (one
  line naming the store and the chunk), never fill values.
* :func:`verify_array` checks every chunk (exists, decodes, checksum, and
  optionally a digest of the decoded values) and returns what failed.
* :func:`source_identity` is a content digest of a source file: all of it
  below 256 MiB, the header plus evenly spaced blocks above.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import google_crc32c
import numpy as np
import zarr

from ..errors import StoreIntegrityError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

__all__ = [
    "CheckedArray",
    "FULL_DIGEST_LIMIT",
    "INTEGRITY_ATTRS",
    "checksum_codecs",
    "chunk_digest",
    "content_identity",
    "has_checksum",
    "missing_chunks",
    "open_for_write",
    "source_identity",
    "verify_array",
    "WRITE_CONFIG",
]

#: Zarr array runtime configuration for every write: chunks equal to the fill
#: value are written too, so that a missing chunk file always means damage.
WRITE_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}

#: What a store's ``cryodet`` attributes say about its integrity.
INTEGRITY_ATTRS: dict[str, Any] = {"checksum": "crc32c", "all_chunks_written": True}

#: Turn the checksum codec off (measurements only: ``benchmarks`` time the cost with and without it).
CHECKSUM = True

#: Source files smaller than this are digested whole; larger ones by header plus sampled blocks.
FULL_DIGEST_LIMIT = 256 * 2**20
_SAMPLE_BLOCKS = 64
_SAMPLE_SIZE = 1 << 20

#: Errors Zarr, numcodecs and json raise for stored bytes they cannot decode.
_DECODE_ERRORS = (ValueError, RuntimeError, TypeError, KeyError, IndexError, EOFError, AttributeError)


def open_for_write(path: str | os.PathLike[str]) -> zarr.Array[Any]:
    """Open a stored array for writing with :data:`WRITE_CONFIG` (every chunk written, even all fill value)."""
    with zarr.config.set({"array.write_empty_chunks": True}):  # zarr < 3.1 reads it when the array opens
        arr = zarr.open_array(str(path), mode="r+")
    return arr.with_config(WRITE_CONFIG) if hasattr(arr, "with_config") else arr


def checksum_codecs() -> list[Any]:
    """The bytes-to-bytes codecs appended after the compressor: ``[Crc32cCodec()]``."""
    from zarr.codecs import Crc32cCodec

    return [Crc32cCodec()] if CHECKSUM else []


def chunk_digest(values: np.ndarray) -> int:
    """CRC-32C of a chunk's values as stored (C order, the array's dtype)."""
    return int(google_crc32c.value(np.ascontiguousarray(values).tobytes()))


def has_checksum(array: zarr.Array[Any]) -> bool:
    """True if the array's codec pipeline (or its shards' inner pipeline) ends with a ``crc32c`` codec."""

    def walk(codecs: Any) -> bool:
        for c in codecs or ():
            if not isinstance(c, dict):
                continue
            if c.get("name") == "crc32c":
                return True
            if walk((c.get("configuration") or {}).get("codecs")):
                return True
        return False

    try:
        return walk(array.metadata.to_dict().get("codecs"))
    except Exception:  # noqa: BLE001 - a v2 array or unusual metadata: no checksum
        return False


def _grid(array: zarr.Array[Any]) -> tuple[int, ...]:
    """Number of stored objects (shards, or chunks when unsharded) per axis."""
    unit = getattr(array, "shards", None) or array.chunks
    return tuple(math.ceil(s / c) for s, c in zip(array.shape, unit))


def _unit(array: zarr.Array[Any]) -> tuple[int, ...]:
    return tuple(getattr(array, "shards", None) or array.chunks)


def _region(array: zarr.Array[Any], idx: Sequence[int]) -> tuple[slice, ...]:
    unit = _unit(array)
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, unit, array.shape))


def _key_path(array: zarr.Array[Any], idx: Sequence[int]) -> str | None:
    """The file holding stored object ``idx`` (local stores), else ``None``."""
    root = getattr(array.store, "root", None)
    if root is None:
        return None
    key = array.metadata.encode_chunk_key(tuple(int(i) for i in idx))
    return os.path.join(str(root), array.path, key) if array.path else os.path.join(str(root), key)


def _exists(array: zarr.Array[Any], idx: Sequence[int]) -> bool:
    path = _key_path(array, idx)
    if path is not None:
        return os.path.isfile(path)
    from zarr.core.sync import sync

    key = array.metadata.encode_chunk_key(tuple(int(i) for i in idx))
    return bool(sync(array.store.exists(f"{array.path}/{key}" if array.path else key)))


def missing_chunks(array: zarr.Array[Any], indices: Iterable[Sequence[int]] | None = None) -> list[tuple[int, ...]]:
    """Stored objects (chunks or shards) of ``array`` that have no file."""
    if indices is None:
        indices = itertools.product(*(range(n) for n in _grid(array)))
    return [tuple(i) for i in indices if not _exists(array, i)]


def _touched(array: zarr.Array[Any], key: tuple[slice, ...]) -> Iterable[tuple[int, ...]]:
    unit = _unit(array)
    ranges = []
    for k, c, s in zip(key, unit, array.shape):
        start, stop, _ = k.indices(s)
        if stop <= start:
            return []
        ranges.append(range(start // c, (stop - 1) // c + 1))
    return itertools.product(*ranges)


def verify_array(array: zarr.Array[Any], indices: Iterable[Sequence[int]] | None = None, *,
                 digests: dict[tuple[int, ...], int] | None = None,
                 threads: bool = False) -> dict[tuple[int, ...], str]:
    """Check stored objects of ``array``: each exists, decodes (checksum) and, with ``digests``, holds those values.

    Returns ``{index: reason}`` for each object that fails (an empty dict when
    all pass).  ``digests`` maps an index to :func:`chunk_digest` of the values
    written there; an index without a recorded digest fails.  ``threads``
    checks several objects at a time (decompression and CRC release the GIL).
    """
    if indices is None:
        indices = itertools.product(*(range(n) for n in _grid(array)))
    todo = [tuple(int(i) for i in idx) for idx in indices]

    def check(idx: tuple[int, ...]) -> str | None:
        if not _exists(array, idx):
            return "missing"
        region = _region(array, idx)
        inner = tuple(array.chunks)
        try:
            if getattr(array, "shards", None) is not None and digests is None:
                # a shard: decode its inner chunks one at a time (each has its own checksum), bounded memory
                for sub in itertools.product(*(range(r.start, r.stop, c) for r, c in zip(region, inner))):
                    array[tuple(slice(a, min(a + c, r.stop)) for a, c, r in zip(sub, inner, region))]
                return None
            values = array[region]
        except _DECODE_ERRORS as exc:
            return _reason(exc)
        if digests is not None:
            want = digests.get(idx)
            if want is None:
                return "no recorded digest"
            # a region of slices reads back as an ndarray (zarr's annotation also allows scalars)
            if chunk_digest(cast(np.ndarray, values)) != int(want):
                return "content differs from what was written"
        return None

    if threads and len(todo) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(check, todo))
    else:
        results = [check(idx) for idx in todo]
    return {idx: r for idx, r in zip(todo, results) if r is not None}


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "checksum" in text.lower():
        return "checksum mismatch"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"cannot be decoded ({first[:120]})"


def _label(path: str) -> str:
    return path.rstrip("/")


class CheckedArray:
    """Array-like over a stored Zarr array whose reads never return fill values for lost chunks.

    ``reader[z0:z1, y0:y1, x0:x1]`` reads that block; if it touches a chunk
    with no file (when the store says every chunk was written) or one that
    fails to decode (checksum mismatch, truncated), it raises
    :class:`StoreIntegrityError` naming the store and the chunk.  Picklable
    (holds the path), so Dask tasks on other processes read straight from the
    store.
    """

    def __init__(self, path: str | os.PathLike[str], *, require_all_chunks: bool = True,
                 array: zarr.Array[Any] | None = None):
        self.path = str(path)
        self.require_all_chunks = require_all_chunks
        arr = array if array is not None else zarr.open_array(self.path, mode="r")
        self._arr: zarr.Array[Any] | None = arr
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in arr.chunks)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arr"] = None
        return state

    @property
    def array(self) -> zarr.Array[Any]:
        if self._arr is None:
            try:
                self._arr = zarr.open_array(self.path, mode="r")
            except (*_DECODE_ERRORS, FileNotFoundError) as exc:
                raise StoreIntegrityError(f"{_label(self.path)}: the array's zarr.json is missing or damaged "
                                          f"({_reason(exc)}); delete the store and run the step that wrote it again") from None
        return self._arr

    def _fail(self, idx: tuple[int, ...], reason: str) -> StoreIntegrityError:
        key = ".".join(map(str, idx))
        return StoreIntegrityError(
            f"{_label(self.path)}: chunk {key} is {reason if reason == 'missing' else 'damaged (' + reason + ')'}; "
            "the store changed after cryodet-dask wrote it: delete it and run the step that wrote it again")

    def __getitem__(self, key: Any) -> np.ndarray:
        arr = self.array
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        if all(isinstance(k, slice) and k.step in (None, 1) for k in key):
            touched = list(_touched(arr, key))
            if self.require_all_chunks:
                for idx in touched:
                    if not _exists(arr, idx):
                        raise self._fail(idx, "missing")
        else:
            touched = None
        try:
            return np.asarray(arr[key])
        except _DECODE_ERRORS as exc:
            for idx in touched or ():
                try:
                    arr[_region(arr, idx)]
                except _DECODE_ERRORS as inner:
                    raise self._fail(idx, _reason(inner)) from None
            raise StoreIntegrityError(f"{_label(self.path)}: cannot be read ({_reason(exc)})") from None

    def __repr__(self) -> str:
        return f"CheckedArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def content_identity(array: zarr.Array[Any]) -> str | None:
    """Identity of an unsharded checksummed array's content, from its metadata and every chunk's stored CRC-32C.

    The ``crc32c`` codec ends each stored chunk with the checksum of its
    (deterministically) compressed bytes, so reading the last 4 bytes of each
    chunk identifies the content without reading it: a conversion rebuilt
    with the same voxels has the same identity, one changed in any chunk has
    another.  ``None`` when that does not hold (sharded, no checksum, a chunk
    missing, not a local store).
    """
    if getattr(array, "shards", None) is not None or not has_checksum(array):
        return None
    # Zarr v3 metadata: "codecs" is a list of {"name": ..., "configuration": ...} objects
    meta_codecs = cast("list[dict[str, Any]]", array.metadata.to_dict().get("codecs") or [])
    if not meta_codecs or meta_codecs[-1].get("name") != "crc32c":
        return None
    h = hashlib.sha256(json.dumps(array.metadata.to_dict(), sort_keys=True, default=str).encode())
    for idx in itertools.product(*(range(n) for n in _grid(array))):
        path = _key_path(array, idx)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                tail = f.read(4)
        except OSError:
            return None
        h.update(".".join(map(str, idx)).encode() + tail)
    return f"zarr-crc32c:{h.hexdigest()}"


def source_identity(path: str | os.PathLike[str]) -> str:
    """Content identity of a source file: ``"sha256-full:<size>:<hex>"`` or ``"sha256-sampled:<size>:<hex>"``.

    Files below :data:`FULL_DIGEST_LIMIT` are digested whole.  Larger ones:
    the first MiB (MRC header, extended header, first voxels), the last MiB,
    and 64 evenly spaced 1 MiB blocks, so that a different tomogram of the same
    size is recognized without reading all of it.  Neither the path nor the
    modification time is part of it: a copied or touched file keeps its
    identity, a rewritten one of the same size does not.
    """
    path = Path(path)
    if path.is_dir():  # a Zarr store given as the source: its location and last change
        return f"dir:{path.resolve()}:{path.stat().st_mtime_ns}"
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_DIGEST_LIMIT:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
            kind = "full"
        else:
            offsets = [0, size - _SAMPLE_SIZE]
            step = (size - _SAMPLE_SIZE) / (_SAMPLE_BLOCKS + 1)
            offsets += [int(step * (i + 1)) for i in range(_SAMPLE_BLOCKS)]
            for off in sorted(set(offsets)):
                f.seek(off)
                h.update(off.to_bytes(8, "little"))
                h.update(f.read(_SAMPLE_SIZE))
            kind = "sampled"
    return f"sha256-{kind}:{size}:{h.hexdigest()}"


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a small JSON file; ``None`` if it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
