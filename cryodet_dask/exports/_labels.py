"""Instance label images: MRC (block by block) and OME-Zarr label image."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np

from .._progress import compute
from ..errors import ParameterError
from ..io import PendingMRC, atomic_output, create_image_group, pending_mrc, write_blocks

__all__ = ["label_dtype", "write_labels_mrc", "write_labels_zarr", "pending_labels_mrc", "pending_labels_zarr"]

LABEL_DTYPES = ("auto", "uint16", "int16", "float32", "uint32")


def label_dtype(n_labels: int, choice: str = "auto", *, fmt: str = "mrc") -> np.dtype[Any]:
    """Storage type of a label image with labels 0..``n_labels``.

    ``auto`` picks, for MRC, uint16 (mode 6) when ``n_labels <= 65535`` and float32
    (mode 2, exact integers up to 2^24) beyond; for Zarr the smallest unsigned
    type.  ``int16`` (mode 1, up to 32767 labels) suits older viewers,
    ``float32`` is what the seed wrote.
    """
    if choice not in LABEL_DTYPES:
        raise ParameterError(f"label dtype must be one of {', '.join(LABEL_DTYPES)}, got {choice!r}")
    limits = {"uint16": 65535, "int16": 32767, "float32": 1 << 24, "uint32": (1 << 32) - 1}
    if choice == "auto":
        if fmt == "zarr":
            choice = "uint16" if n_labels <= 65535 else "uint32"
        else:
            choice = "uint16" if n_labels <= 65535 else "float32"
    if fmt == "mrc" and choice == "uint32":
        raise ParameterError("MRC has no 32-bit integer mode; use float32 or uint16")
    if n_labels > limits[choice]:
        raise ParameterError(f"{n_labels} particles do not fit a {choice} label image (at most {limits[choice]}); "
                             "use --label-dtype auto or float32")
    return np.dtype(choice)


def _as_labels(labels: Any) -> da.Array:
    labels = getattr(labels, "labels", labels)
    if not isinstance(labels, da.Array):
        labels = da.from_array(np.asarray(labels), chunks=128)
    if labels.ndim != 3:
        raise ParameterError(f"a label image must be 3D, got {labels.ndim}D")
    return labels


def _n_labels(detections: Any, n_labels: int | None, labels: da.Array) -> int:
    if n_labels is not None:
        return int(n_labels)
    if hasattr(detections, "centers"):
        return len(detections.centers)
    return int(labels.max().compute())


def write_labels_mrc(detections: Any, path: str | os.PathLike[str], *,
                     voxel_size: float | Sequence[float] | None = None,
                     origin_zyx: Sequence[float] = (0.0, 0.0, 0.0), dtype: str = "auto",
                     n_labels: int | None = None, overwrite: bool = False, progress: bool = False) -> Path:
    """Write the instance label image as MRC, block by block (no whole-volume array).

    Parameters
    ----------
    detections : Detections or array
        :class:`~cryodet_dask.postprocessing.Detections` (its ``labels``), or a label image.
    path : path-like
        Output ``.mrc``.
    voxel_size : float, optional
        Voxel size in Å for the header (that of the input tomogram).
    origin_zyx : tuple of float
        Origin in Å for the header.
    dtype : {"auto", "uint16", "int16", "float32"}
        See :func:`label_dtype`.
    n_labels : int, optional
        Highest label (default: number of detections, or computed).
    overwrite, progress : bool
        Replace an existing file; show a progress bar.
    """
    with pending_labels_mrc(detections, path, voxel_size=voxel_size, origin_zyx=origin_zyx, dtype=dtype,
                            n_labels=n_labels, overwrite=overwrite) as pending:
        (stats,) = compute(pending.writes, progress=progress, desc=f"writing {Path(path).name}")
        pending.finish(stats)
    return Path(path)


def pending_labels_mrc(detections: Any, path: str | os.PathLike[str], *,
                       voxel_size: float | Sequence[float] | None = None,
                       origin_zyx: Sequence[float] = (0.0, 0.0, 0.0), dtype: str = "auto",
                       n_labels: int | None = None, overwrite: bool = False) -> AbstractContextManager[PendingMRC]:
    """:func:`write_labels_mrc` as a :func:`~cryodet_dask.io.pending_mrc` (its blocks computed with other work)."""
    labels = _as_labels(detections)
    dt = label_dtype(_n_labels(detections, n_labels, labels), dtype, fmt="mrc")
    return pending_mrc(labels.astype(dt), path, voxel_size=voxel_size, origin_zyx=tuple(origin_zyx),  # type: ignore[arg-type]
                       overwrite=overwrite, label="cryodet-dask instance labels")


def write_labels_zarr(detections: Any, path: str | os.PathLike[str], *,
                      voxel_size_zyx: float | Sequence[float] | None = None,
                      origin_zyx: Sequence[float] = (0.0, 0.0, 0.0), dtype: str = "auto",
                      n_labels: int | None = None, overwrite: bool = False, progress: bool = False,
                      name: str = "labels", source_image: str | None = None,
                      properties: list[dict[str, Any]] | None = None, colors: list[dict[str, Any]] | None = None,
                      kind: str = "instance-labels") -> Path:
    """Write the instance label image as an OME-Zarr (NGFF 0.5) label image.

    The group holds one full-resolution array ``0`` chunked like the labels,
    OME ``multiscales`` metadata in Å (downscaling ``type`` ``"nearest"``: labels
    are never averaged) and an ``image-label`` entry; the ``cryodet`` attributes
    record the voxel size, origin and number of labels.  ``source_image`` is the
    path of the tomogram's OME-Zarr image relative to this label group (NGFF
    ``image-label.source.image``, e.g. ``"../NAME.zarr"`` beside it); without it
    no source is claimed.  ``properties`` and ``colors`` are NGFF ``image-label``
    entries (``{"label-value": k, ...}``), e.g. the species name of each value of a
    species label image.  Written block by block under a temporary name,
    renamed when complete.
    """
    with pending_labels_zarr(detections, path, voxel_size_zyx=voxel_size_zyx, origin_zyx=origin_zyx, dtype=dtype,
                             n_labels=n_labels, overwrite=overwrite, name=name, source_image=source_image,
                             properties=properties, colors=colors, kind=kind) as pending:
        (counts,) = compute(pending.writes, progress=progress, desc=f"writing {Path(path).name}")
        pending.finish(counts)
    return Path(path)


class PendingZarr:
    """A label image being written: :attr:`writes` are its lazy block writes; :meth:`finish` takes their result."""

    def __init__(self, writes: da.Array) -> None:
        self.writes = writes
        self.finished = False

    def finish(self, result: Any) -> None:
        self.finished = True


@contextmanager
def pending_labels_zarr(detections: Any, path: str | os.PathLike[str], *,
                        voxel_size_zyx: float | Sequence[float] | None = None,
                        origin_zyx: Sequence[float] = (0.0, 0.0, 0.0), dtype: str = "auto",
                        n_labels: int | None = None, overwrite: bool = False,
                        name: str = "labels", source_image: str | None = None,
                        properties: list[dict[str, Any]] | None = None, colors: list[dict[str, Any]] | None = None,
                        kind: str = "instance-labels") -> Iterator[PendingZarr]:
    """:func:`write_labels_zarr` in two halves (its blocks computed with other work): yields a
    :class:`PendingZarr` whose ``writes`` must be computed and then :meth:`PendingZarr.finish` called;
    the image gets its name when the context ends."""
    labels = _as_labels(detections)
    n = _n_labels(detections, n_labels, labels)
    dt = label_dtype(n, dtype, fmt="zarr") if dtype != "float32" else np.dtype(np.float32)
    vs: tuple[float, ...]
    if voxel_size_zyx is None:
        vs = (1.0, 1.0, 1.0)
    else:
        v = np.atleast_1d(np.asarray(voxel_size_zyx, dtype=np.float64))
        vs = tuple(float(x) for x in (np.repeat(v, 3) if v.size == 1 else v))
    chunks = tuple(int(c[0]) for c in labels.chunks)
    regular = all(len(set(c[:-1])) <= 1 and c[-1] <= c[0] for c in labels.chunks)
    if not regular:
        labels = labels.rechunk(chunks)
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        group = create_image_group(tmp, shape=labels.shape, dtype=dt, chunks=chunks, name=name,
                                   voxel_size_zyx=vs, origin_zyx=tuple(origin_zyx), method="nearest",
                                   attributes={"voxel_size_zyx": list(vs), "origin_angst_zyx": list(origin_zyx),
                                               "n_labels": n, "kind": kind})
        ome = dict(cast(dict[str, Any], group.attrs["ome"]))  # the OME object create_image_group wrote
        ome["image-label"] = {"version": "0.5", "colors": colors or [],
                              **({"properties": properties} if properties else {}),
                              **({"source": {"image": source_image}} if source_image else {})}
        group.attrs["ome"] = ome
        pending = PendingZarr(write_blocks(labels.astype(dt), tmp / "0"))
        yield pending
        if not pending.finished:
            raise RuntimeError(f"{path}: the label image's blocks were not written (PendingZarr.finish was not called)")
