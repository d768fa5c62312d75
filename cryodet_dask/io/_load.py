"""Opening a tomogram, MRC or Zarr, as a lazy dask array with its voxel size."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from ..errors import InputError, StoreIntegrityError, TomogramFormatError
from ._integrity import CheckedArray, missing_chunks
from ._mrc import MRC_SUFFIXES, MrcVolume, read_mrc_header
from ._zarr import normalize_chunks

__all__ = ["Tomogram", "TransposedReader", "load", "open_zarr_image"]

DEFAULT_CHUNKS = 128


@dataclass(frozen=True)
class Tomogram:
    """A lazily loaded tomogram.

    Attributes
    ----------
    data : dask.array.Array
        Voxels in (z, y, x) order; nothing is read until computed.
    voxel_size : float or None
        Voxel size in Å (x spacing); ``None`` when the file does not say.
    voxel_size_zyx : tuple of float
        Voxel size in Å per axis (0.0 where unknown).
    origin_zyx : tuple of float
        Origin in Å.
    path : Path or None
        The file or store it came from.
    metadata : dict
        Header fields of the source (MRC) or the store's ``cryodet`` attributes.
    reader : object or None
        Picklable array-like over the stored voxels in (z, y, x) order
        (``reader[z0:z1, y0:y1, x0:x1]`` reads just that block).  Lets a Dask
        task read a chunk plus its halo straight from the file.
    """

    data: da.Array
    voxel_size: float | None
    voxel_size_zyx: tuple[float, float, float] = (0.0, 0.0, 0.0)
    origin_zyx: tuple[float, float, float] = (0.0, 0.0, 0.0)
    path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reader: Any = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    def __iter__(self) -> Iterator[Any]:  # allows ``data, voxel_size = load(path)``
        return iter((self.data, self.voxel_size))


def _is_zarr(path: Path) -> bool:
    # a Zarr v3 node (zarr.json), or a Zarr v2 array or group (a copick tomogram's level "0": .zarray)
    return path.suffix == ".zarr" or (path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup")))


#: MRC files already warned about (ispg 0): once per file and process, however often it is opened
_WARNED_STACKS: set[str] = set()


def load(
    path: str | os.PathLike[str],
    chunks: int | tuple[int, int, int] | str | None = None,
    *,
    array: str | None = None,
) -> Tomogram:
    """Open a tomogram lazily.

    Parameters
    ----------
    path : path-like
        An MRC file (``.mrc``, ``.rec``, ``.map``, ...), a Zarr v3 array, an
        OME-Zarr image group (level ``0`` is used), or a Zarr group holding
        several arrays (name one with ``array``).
    chunks : int, tuple or str, optional
        Dask chunk shape (z, y, x).  MRC files default to 128³; Zarr stores
        default to their stored chunks.
    array : str, optional
        Member of a Zarr group to open (e.g. ``"mask"`` of a prediction store).

    Returns
    -------
    Tomogram
        ``.data`` is the lazy array, ``.voxel_size`` the voxel size in Å.

    Examples
    --------
    >>> tomo = load("tomo.mrc")                      # doctest: +SKIP
    >>> tomo.data.shape, tomo.voxel_size             # doctest: +SKIP
    ((200, 512, 512), 10.0)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    path = path.absolute()  # what the tasks carry: workers of a remote cluster run in another folder
    if _is_zarr(path):
        return open_zarr_image(path, chunks=chunks, array=array)
    if path.is_dir():
        raise InputError(f"{path}: is a directory but not a Zarr store")
    if path.suffix.lower() not in MRC_SUFFIXES:
        warnings.warn(f"{path.name}: unknown suffix, trying to read it as MRC", stacklevel=2)
    info = read_mrc_header(path)
    if info.fields.get("ispg") == 0 and str(path) not in _WARNED_STACKS:
        _WARNED_STACKS.add(str(path))
        warnings.warn(f"{path.name}: the header's space group is 0, which marks a stack of images (a tilt "
                      "series?), not a volume; reading it as a tomogram", stacklevel=2)
    proxy = MrcVolume(info)
    chunk_shape = normalize_chunks(chunks if chunks is not None else DEFAULT_CHUNKS, info.shape)
    disk_chunks = tuple(chunk_shape[info.axis_order.index(i)] for i in range(3))
    st = path.stat()
    name = "mrc-" + tokenize(str(path.resolve()), st.st_size, st.st_mtime_ns, disk_chunks)
    data = da.from_array(proxy, chunks=disk_chunks, name=name, asarray=True, fancy=False,
                         meta=np.empty((0, 0, 0), proxy.dtype))
    if info.axis_order != (0, 1, 2):
        data = data.transpose(info.axis_order)
    return Tomogram(
        data=data,
        voxel_size=info.voxel_size,
        voxel_size_zyx=info.voxel_size_zyx,
        origin_zyx=info.origin_zyx,
        path=path,
        metadata=dict(info.fields),
        reader=proxy if info.axis_order == (0, 1, 2) else TransposedReader(proxy, info.axis_order),
    )


def _integrity(*attr_dicts: Any) -> dict[str, Any]:
    for attrs in attr_dicts:
        meta = attrs.get("cryodet") if isinstance(attrs, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("integrity"), dict):
            integrity: dict[str, Any] = meta["integrity"]
            return integrity
    return {}


def open_zarr_image(
    path: str | os.PathLike[str],
    chunks: int | tuple[int, int, int] | str | None = None,
    array: str | None = None,
) -> Tomogram:
    """Open a Zarr array or (OME-)Zarr group written by cryodet-dask or another tool.

    Reads go through a :class:`~cryodet_dask.io._integrity.CheckedArray`: a
    chunk that fails to decode (checksum mismatch, truncated file) raises
    :class:`~cryodet_dask.errors.StoreIntegrityError`.  For stores that
    cryodet-dask wrote (``integrity.all_chunks_written``) every chunk file
    must exist; a missing one is refused here, before any work, rather than
    read as zeros.
    """
    path = Path(path).absolute()  # what the tasks carry: workers may run in another folder
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for unreadable stores
        raise TomogramFormatError(f"{path}: not a readable Zarr store ({_one_line(exc)})") from None
    attrs: dict[str, Any] = {}
    scale: list[float] | None = None
    translation: list[float] | None = None
    group_attrs: dict[str, Any] = {}
    array_path = path
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        group_attrs = attrs
        ome = attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 does not
        multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
        try:
            if array is None and multiscales:
                ds = multiscales[0]["datasets"][0]
                array = ds["path"]
                for t in ds.get("coordinateTransformations", []):
                    if t.get("type") == "scale":
                        scale = [float(v) for v in t["scale"]][-3:]
                    elif t.get("type") == "translation":
                        translation = [float(v) for v in t["translation"]][-3:]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise TomogramFormatError(f"{path}: malformed OME-Zarr multiscales metadata ({_one_line(exc)})") from None
        if array is None:
            members = sorted(k for k, _ in node.arrays())
            raise TomogramFormatError(
                f"{path}: a Zarr group with arrays {members}; say which one to use"
            )
        try:
            if array not in node:
                raise TomogramFormatError(f"{path}: has no array {array!r}")
            zarr_array = node[array]
        except TomogramFormatError:
            raise
        except Exception as exc:  # a truncated or missing zarr.json of the member
            raise StoreIntegrityError(f"{path}: the zarr.json of {array!r} is damaged ({_one_line(exc)}); "
                                      "delete the store and run the step that wrote it again") from None
        if isinstance(zarr_array, zarr.Group):
            return open_zarr_image(path / array, chunks=chunks)
        array_path = path / array
    else:
        zarr_array = node
        attrs = dict(node.attrs)
    if zarr_array.ndim != 3:
        raise TomogramFormatError(f"{path}: a tomogram needs 3 dimensions, this array has {zarr_array.ndim}")
    if 0 in zarr_array.shape:
        raise TomogramFormatError(f"{path}: zero-size axis (shape {zarr_array.shape})")
    integrity = _integrity(group_attrs, dict(zarr_array.attrs) if zarr_array is not node else attrs)
    require_all = bool(integrity.get("all_chunks_written"))
    if require_all:
        missing = missing_chunks(zarr_array)
        if missing:
            raise StoreIntegrityError(
                f"{array_path}: {len(missing)} chunk file(s) missing (first: {'.'.join(map(str, missing[0]))}); "
                "the store changed after cryodet-dask wrote it: delete it and run the step that wrote it again")
    meta = dict(attrs.get("cryodet", {})) if isinstance(attrs.get("cryodet"), dict) else {}
    if "voxel_size_zyx" in meta:
        vs_zyx = tuple(float(v) for v in meta["voxel_size_zyx"])
    elif "voxel_size" in attrs or "voxel_size" in meta:
        v = float(meta["voxel_size"] if "voxel_size" in meta else attrs["voxel_size"])
        vs_zyx = (v, v, v)
    elif scale is not None:
        vs_zyx = tuple(scale)
    else:
        vs_zyx = (0.0, 0.0, 0.0)
    origin = tuple(float(v) for v in meta.get("origin_angst_zyx", translation or (0.0, 0.0, 0.0)))
    reader = CheckedArray(array_path, require_all_chunks=require_all, array=zarr_array)
    data = _checked_dask(reader, array_path)
    if chunks is not None:
        data = data.rechunk(normalize_chunks(chunks, data.shape))
    voxel_size = float(vs_zyx[2]) if vs_zyx[2] > 0 else None
    return Tomogram(data=data, voxel_size=voxel_size, voxel_size_zyx=vs_zyx,  # type: ignore[arg-type]
                    origin_zyx=origin, path=path, metadata=meta, reader=reader)  # type: ignore[arg-type]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _checked_dask(reader: CheckedArray, array_path: Path) -> da.Array:
    """Lazy dask array over ``reader`` in the stored chunks, named by the store's path and metadata."""
    try:
        st = (array_path / "zarr.json").stat()
        stamp: Any = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    name = "zarr-" + tokenize(str(Path(array_path).resolve()), stamp, reader.shape, str(reader.dtype),
                              reader.chunks)
    lazy: da.Array = da.from_array(reader, chunks=reader.chunks, name=name, asarray=True, fancy=False,
                                   meta=np.empty((0,) * reader.ndim, reader.dtype))
    return lazy


class TransposedReader:
    """Array-like view of ``base`` with its axes permuted by ``axes`` (like ``numpy.transpose``)."""

    def __init__(self, base: Any, axes: tuple[int, ...]):
        self.base = base
        self.axes = tuple(axes)
        self.shape = tuple(base.shape[a] for a in self.axes)
        self.dtype = base.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        inverse: list[int | slice] = [0] * self.ndim
        for out_axis, in_axis in enumerate(self.axes):
            inverse[in_axis] = key[out_axis]
        return np.transpose(self.base[tuple(inverse)], self.axes)
