"""A checkpoint's configuration and weight shapes, read without PyTorch.

The process that plans a run needs each network's configuration (outputs, halo, species, voxel size)
and the assurance that its weights fit it, not the weights themselves: the workers load those.
Importing PyTorch costs 2-3 s, so this reads the file as what ``torch.save`` writes, a zip archive
of a pickle and one record per tensor storage, with an unpickler that knows only what a checkpoint
holds (dicts, lists, numbers, strings, ``OrderedDict`` and tensors) and builds a
:class:`TensorRecord` (shape, storage) for each tensor instead of loading it.  Every record is read
once, so zip's CRC-32 finds a damaged file, and every tensor must lie within its storage.  A file
with anything else in its pickle is read with PyTorch after all
(:func:`~cryodet_dask.models.inspect_checkpoint`), whose ``weights_only`` loader then refuses what is unsafe.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CheckpointError, CryodetError
from ._config import UNetConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "TensorRecord", "read_archive", "check_payload", "check_state_dict"]

FORMAT = "cryodet-dask-checkpoint"
FORMAT_VERSION = 1

# the storage classes torch.save names in its pickle, with their bytes per element
_STORAGE_ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
                     "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                     "BoolStorage": 1}


class TensorRecord(NamedTuple):
    """A tensor of a checkpoint as stored: its shape and where its elements lie, not its values."""

    shape: tuple[int, ...]
    dtype: str  # the storage class, e.g. "FloatStorage"
    storage: str  # the record holding the storage
    offset: int
    stride: tuple[int, ...]


class _StorageType(NamedTuple):
    name: str


class _Storage(NamedTuple):
    key: str
    dtype: str
    numel: int


class _Unsupported(Exception):
    """The pickle holds something this reader does not know (PyTorch reads it instead)."""


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> TensorRecord:
    return TensorRecord(tuple(int(s) for s in size), storage.dtype, storage.key, int(offset),
                        tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_ITEMSIZE:
            return _StorageType(name)
        raise _Unsupported(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise _Unsupported(f"persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), pid[1].name, int(pid[4]))


def _unreadable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable network checkpoint (corrupt or unsafe file: {why[:160]})")


def read_archive(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint's contents with a :class:`TensorRecord` for each tensor, or None when its pickle
    holds something beyond a checkpoint's plain data (or it is not a zip archive): read it with
    PyTorch then.  Raises :class:`CheckpointError` for a missing, damaged or inconsistent file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: network checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a network checkpoint file")
    if not zipfile.is_zipfile(path):
        return None  # PyTorch's legacy format, or not a checkpoint at all: PyTorch says which
    try:
        with zipfile.ZipFile(path) as z:
            records = {name: z.read(name) for name in z.namelist()}  # every CRC-32 checked
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        raise _unreadable(path, str(exc) or type(exc).__name__) from exc
    pickles = [name for name in records if name.endswith("/data.pkl")]
    if len(pickles) != 1:
        return None
    prefix = pickles[0][: -len("data.pkl")]
    try:
        payload = _Unpickler(io.BytesIO(records[pickles[0]])).load()
    except _Unsupported:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle can fail anywhere
        raise _unreadable(path, str(exc) or type(exc).__name__) from exc
    for key, t in _tensors(payload):
        data = records.get(f"{prefix}data/{t.storage}")
        if data is None:
            raise _unreadable(path, f"tensor {key} has no storage record {t.storage}")
        extent = t.offset + sum((s - 1) * st for s, st in zip(t.shape, t.stride)) + 1 if all(t.shape) else 0
        if extent > len(data) // _STORAGE_ITEMSIZE[t.dtype]:
            raise _unreadable(path, f"tensor {key} reaches beyond its storage")
    return payload if isinstance(payload, dict) else {}


def _tensors(obj: Any, key: str = "") -> list[tuple[str, TensorRecord]]:
    if isinstance(obj, TensorRecord):
        return [(key, obj)]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() for t in _tensors(v, f"{key}.{k}" if key else str(k))]
    if isinstance(obj, list | tuple):
        return [t for i, v in enumerate(obj) for t in _tensors(v, f"{key}[{i}]")]
    return []


def check_payload(path: str | os.PathLike[str], payload: Any) -> dict[str, Any]:
    """Refuse what is not a cryodet-dask checkpoint this version understands; return the payload."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cryodet-dask network checkpoint (no '{FORMAT}' marker)")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')} is newer than this "
            f"cryodet-dask understands ({FORMAT_VERSION}); upgrade cryodet-dask")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path}: checkpoint lacks its configuration or weights")
    return payload


def config_of(path: str | os.PathLike[str], payload: dict[str, Any]) -> UNetConfig:
    """The checked payload's :class:`UNetConfig` (one line for an unsupported one)."""
    try:
        return UNetConfig.from_dict(payload["config"])
    except (CryodetError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unsupported network configuration ({exc})") from exc


def check_state_dict(config: UNetConfig, state_dict: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse weights that do not fit ``config`` (names and shapes, from
    :meth:`UNetConfig.parameter_shapes`: no network is built, so a checkpoint whose configuration asks
    for a huge network costs nothing to refuse).  Takes tensors or :class:`TensorRecord` s."""
    expected = config.parameter_shapes()
    got = {k: tuple(v.shape) for k, v in state_dict.items() if _is_tensor(v)}
    bad = sorted(set(expected) ^ set(got)) + sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if bad or len(got) != len(state_dict):
        raise CheckpointError(
            f"{path}: weights do not match the architecture stored in the checkpoint "
            f"(channels {config.channels}, convs {config.convs_per_level}, heads {config.heads}; "
            f"{max(len(bad), 1)} mismatching tensor(s), first: {bad[0] if bad else 'a non-tensor entry'})")


def _is_tensor(v: Any) -> bool:
    return isinstance(v, TensorRecord) or type(v).__module__.split(".")[0] == "torch" and hasattr(v, "shape")
