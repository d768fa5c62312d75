"""Reading MRC2014 tomograms lazily, and writing them chunk by chunk.

The reader validates the header with :mod:`mrcfile` (never reading the data),
then exposes the voxels through :class:`MrcVolume`, a small picklable proxy
whose ``__getitem__`` memory-maps the file and copies out just the requested
block.  Wrapped by :func:`dask.array.from_array` this gives a lazy tomogram
that a Dask worker reads piece by piece, and whose task graph carries only the
path and the header numbers, never the voxels.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from ..errors import InputError, TomogramFormatError

__all__ = [
    "MRC_SUFFIXES",
    "SUPPORTED_MODES",
    "MrcHeaderInfo",
    "MrcVolume",
    "read_mrc_header",
    "mrc_mode_for_dtype",
]

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")

#: MRC2014 modes cryodet-dask reads, and their data types.
SUPPORTED_MODES: dict[int, np.dtype[Any]] = {
    0: np.dtype(np.int8),
    1: np.dtype(np.int16),
    2: np.dtype(np.float32),
    6: np.dtype(np.uint16),
    12: np.dtype(np.float16),
}

_MODE_NAMES = {3: "complex int16", 4: "complex float32", 101: "4-bit packed"}

HEADER_BYTES = 1024


def mrc_mode_for_dtype(dtype: np.dtype[Any]) -> int:
    """MRC2014 mode number that stores ``dtype`` without loss."""
    for mode, dt in SUPPORTED_MODES.items():
        if np.dtype(dtype) == dt:
            return mode
    raise ValueError(f"no MRC mode stores {np.dtype(dtype)}")


@dataclass(frozen=True)
class MrcHeaderInfo:
    """What cryodet-dask needs from an MRC header, already validated.

    Attributes
    ----------
    path : Path
    shape : tuple of int
        Shape of the volume in (z, y, x) order after applying the map order.
    disk_shape : tuple of int
        Shape as stored: (sections, rows, columns).
    dtype : numpy.dtype
        Data type as stored on disk, with its byte order.
    offset : int
        Byte offset of the first voxel (1024 + extended header size).
    axis_order : tuple of int
        Transpose that maps the on-disk (sections, rows, columns) array to
        (z, y, x); ``(0, 1, 2)`` for the standard map order.
    voxel_size_zyx : tuple of float
        Voxel size in Å along z, y, x; 0.0 where the header gives none.
    origin_zyx : tuple of float
        Origin in Å (header ``origin`` field) along z, y, x.
    mode : int
        MRC2014 mode.
    fields : dict
        Header fields kept for provenance (nstart, map order, statistics,
        labels, extended header type).
    """

    path: Path
    shape: tuple[int, int, int]
    disk_shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    offset: int
    axis_order: tuple[int, int, int]
    voxel_size_zyx: tuple[float, float, float]
    origin_zyx: tuple[float, float, float]
    mode: int
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def voxel_size(self) -> float | None:
        """Isotropic voxel size in Å (the x spacing), ``None`` if the header has none."""
        vs = self.voxel_size_zyx[2]
        return float(vs) if vs > 0 else None


def _fail(path: Path, why: str) -> TomogramFormatError:
    return TomogramFormatError(f"{path}: {why}")


def read_mrc_header(path: str | os.PathLike[str]) -> MrcHeaderInfo:
    """Read and validate the header of an MRC file without touching its data.

    Raises
    ------
    InputError
        The file does not exist or cannot be read.
    TomogramFormatError
        The file is not an MRC file, is truncated, is not a 3D volume, has a
        zero-size axis or a mode cryodet-dask cannot read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an MRC file")
    try:
        size = path.stat().st_size
    except OSError as exc:  # pragma: no cover - permissions
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    if size < HEADER_BYTES:
        raise _fail(path, f"not an MRC file (only {size} bytes, an MRC header alone is 1024)")
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if raw[208:212].strip(b"\x00") not in (b"MAP", b"MAP "):
        raise _fail(path, "not an MRC file (no 'MAP ' identifier in the header)")
    order = ">" if raw[212:214] == b"\x11\x11" else "<"  # machine stamp; little-endian otherwise
    nsymbt_raw = struct.unpack_from(f"{order}i", raw, 92)[0]
    if nsymbt_raw < 0:
        raise _fail(path, f"negative extended header size ({nsymbt_raw})")
    if HEADER_BYTES + nsymbt_raw > size:  # checked before mrcfile, which would allocate that many bytes
        raise _fail(path, f"truncated: the header announces an extended header of {nsymbt_raw} bytes "
                          f"but the file has {size} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
    except (ValueError, OSError, EOFError) as exc:
        raise _fail(path, f"not a readable MRC file ({exc})") from exc
    if header is None:
        raise _fail(path, "not an MRC file (no header)")
    if bytes(header.map).strip(b"\x00") not in (b"MAP", b"MAP "):
        raise _fail(path, "not an MRC file (no 'MAP ' identifier in the header)")

    mode = int(header.mode)
    if mode not in SUPPORTED_MODES:
        name = _MODE_NAMES.get(mode, "unknown")
        raise _fail(path, f"MRC mode {mode} ({name}) is not supported; use mode 0, 1, 2, 6 or 12")
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as exc:
        raise _fail(path, f"cannot determine the data type ({exc})") from exc

    nc, nr, ns = (int(header.nx), int(header.ny), int(header.nz))
    if min(nc, nr, ns) < 0:
        raise _fail(path, f"negative dimension in header (nx, ny, nz = {nc}, {nr}, {ns})")
    if min(nc, nr, ns) == 0:
        raise _fail(path, f"zero-size axis (nx, ny, nz = {nc}, {nr}, {ns})")
    ispg = int(header.ispg)
    mz = int(header.mz)
    if 401 <= ispg <= 630 and mz > 0 and ns > mz and ns % mz == 0:
        raise _fail(path, f"4D data (a stack of {ns // mz} volumes) is not supported; split it into single volumes")
    if ns == 1:
        raise _fail(path, f"2D data (a single {nr}x{nc} image), a tomogram needs 3 dimensions")

    nsymbt = int(header.nsymbt)
    if nsymbt < 0:
        raise _fail(path, f"negative extended header size ({nsymbt})")
    offset = HEADER_BYTES + nsymbt
    needed = offset + nc * nr * ns * dtype.itemsize
    if size < needed:
        raise _fail(
            path,
            f"truncated: header says {ns}x{nr}x{nc} voxels of {dtype.itemsize} bytes "
            f"({needed} bytes with header) but the file has {size} bytes",
        )

    mapc, mapr, maps = int(header.mapc), int(header.mapr), int(header.maps)
    if sorted((mapc, mapr, maps)) != [1, 2, 3]:
        if (mapc, mapr, maps) == (0, 0, 0):
            mapc, mapr, maps = 1, 2, 3  # unset in some old files: assume the standard order
        else:
            raise _fail(path, f"invalid map order (MAPC, MAPR, MAPS) = ({mapc}, {mapr}, {maps})")
    # on-disk axes (sections, rows, columns) hold the physical axes (maps, mapr, mapc);
    # (z, y, x) are physical axes (3, 2, 1).
    disk_axes = (maps, mapr, mapc)
    axis_order = tuple(disk_axes.index(a) for a in (3, 2, 1))
    disk_shape = (ns, nr, nc)
    shape = tuple(disk_shape[i] for i in axis_order)

    mx, my, mz_ = int(header.mx), int(header.my), int(header.mz)
    cella = header.cella
    def _spacing(cell: float, m: int) -> float:
        return float(cell) / m if m > 0 and np.isfinite(cell) and cell > 0 else 0.0
    voxel_size_zyx = (_spacing(cella.z, mz_), _spacing(cella.y, my), _spacing(cella.x, mx))
    origin = header.origin
    origin_zyx = tuple(float(v) if np.isfinite(v) else 0.0 for v in (origin.z, origin.y, origin.x))

    labels = []
    for i in range(min(int(header.nlabl), 10)):
        text = bytes(header.label[i]).decode("ascii", errors="replace").strip()
        if text:
            labels.append(text)
    fields = {
        "mode": mode,
        "nstart_xyz": [int(header.nxstart), int(header.nystart), int(header.nzstart)],
        "sampling_xyz": [mx, my, mz_],
        "cell_angst_xyz": [float(cella.x), float(cella.y), float(cella.z)],
        "map_order_crs": [mapc, mapr, maps],
        "ispg": ispg,
        "dmin": float(header.dmin),
        "dmax": float(header.dmax),
        "dmean": float(header.dmean),
        "rms": float(header.rms),
        "exttyp": bytes(header.exttyp).decode("ascii", errors="replace").strip("\x00 "),
        "nversion": int(header.nversion),
        "extended_header_bytes": nsymbt,
        "labels": labels,
    }
    return MrcHeaderInfo(
        path=path,
        shape=shape,  # type: ignore[arg-type]
        disk_shape=disk_shape,
        dtype=dtype,
        offset=offset,
        axis_order=axis_order,  # type: ignore[arg-type]
        voxel_size_zyx=voxel_size_zyx,
        origin_zyx=origin_zyx,  # type: ignore[arg-type]
        mode=mode,
        fields=fields,
    )


class MrcVolume:
    """Picklable, array-like view of the voxels of an MRC file in on-disk order.

    Indexing memory-maps the file, copies the selected block into a native
    byte-order array and closes the map, so a worker holds only that block.
    It pickles as a path plus header numbers.
    """

    def __init__(self, info: MrcHeaderInfo):
        self.path = str(info.path)
        self.shape = info.disk_shape
        self.dtype = info.dtype.newbyteorder("=")
        self._disk_dtype = info.dtype
        self.offset = info.offset
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        mm = np.memmap(self.path, dtype=self._disk_dtype, mode="r", offset=self.offset, shape=self.shape)
        try:
            block = np.array(mm[key], dtype=self.dtype, copy=True)
        finally:
            del mm
        return block

    def __repr__(self) -> str:
        return f"MrcVolume({self.path!r}, shape={self.shape}, dtype={self.dtype})"
