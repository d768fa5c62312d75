"""All outputs of a detection run in one call."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from .._progress import compute
from ..errors import ParameterError
from ..particles import write_centers_csv, write_centers_star, write_centers_txt
from ..pipeline.rundir import RunDirectory
from ..species import SpeciesTable
from ._labels import label_dtype as label_dtype_of
from ._labels import pending_labels_mrc, pending_labels_zarr

__all__ = ["FORMATS", "export"]

FORMATS = ("mrc", "txt", "csv", "star", "zarr")


def export(detections: Any, out_dir: str | os.PathLike[str], name: str, voxel_size: float | Sequence[float] | None,
           *, origin_zyx: Sequence[float] | None = None, origin: Sequence[float] | None = None,
           formats: Sequence[str] = FORMATS,
           tomo_name: str | None = None, label_dtype: str = "auto", overwrite: bool = False,
           progress: bool = False, source_image: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write labels and centres of ``detections`` in the chosen formats.

    Parameters
    ----------
    detections : Detections
        Result of :func:`~cryodet_dask.postprocessing.postprocess`.
    out_dir : path-like
        Output directory (created).
    name : str
        Base name: ``NAME_labels.mrc``, ``NAME_labels.zarr``, ``NAME_centers.txt``,
        ``NAME_centers.csv``, ``NAME_centers.star``.
    voxel_size : float or (z, y, x) or None
        Voxel size in Å (of the input tomogram).  Required for TXT and STAR.
    origin_zyx, origin : tuple of float
        Origin (z, y, x) in Å written to the label images (``origin`` is an alias).
    formats : sequence of str
        Any of ``mrc, txt, csv, star, zarr``.
    tomo_name : str, optional
        ``rlnTomoName`` for STAR (default: ``name``).
    label_dtype : str
        ``auto`` (uint16 when the particles fit), ``uint16``, ``int16``, ``float32`` (like the seed).
    overwrite, progress : bool
        Replace existing outputs; show progress bars.
    source_image : path-like, optional
        The tomogram's OME-Zarr image the labels belong to; recorded in the label image as NGFF
        ``image-label.source.image``, relative to it.  Without it no source is claimed.

    Returns
    -------
    dict
        Format -> written path.

    Notes
    -----
    When both label formats are asked for, they are written in one computation:
    each block of the label image is computed once and written to both.
    """
    if origin_zyx is not None and origin is not None:
        raise ParameterError("give the origin once (origin_zyx or origin)")
    origin_zyx = tuple(float(v) for v in (origin_zyx if origin_zyx is not None else origin or (0.0, 0.0, 0.0)))
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ParameterError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    if "mrc" in formats:  # a label type the particles overflow: one line before anything is written
        label_dtype_of(len(detections.centers), label_dtype, fmt="mrc")
    out = Path(out_dir).absolute()  # tasks write here: workers may run in another folder
    out.mkdir(parents=True, exist_ok=True)
    rd = RunDirectory(out, name)  # the file names
    vs_zyx = None
    if voxel_size is not None:
        v = [float(x) for x in (voxel_size if isinstance(voxel_size, Sequence) else [voxel_size] * 3)]
        vs_zyx = tuple(v) if all(x > 0 for x in v) else None
    written: dict[str, Path] = {}
    n = len(detections.centers)
    source = None
    if source_image is not None:  # NGFF image-label.source.image: relative to the label group
        source = os.path.relpath(Path(source_image).absolute(), rd.output("zarr"))
    written.update(_label_images(
        detections, formats, zarr_path=rd.output("zarr"), mrc_path=rd.output("mrc"), progress=progress,
        zarr_kwargs=dict(voxel_size_zyx=vs_zyx, source_image=source, origin_zyx=origin_zyx, n_labels=n,
                         overwrite=overwrite),
        mrc_kwargs=dict(voxel_size=_one_or_three(vs_zyx), origin_zyx=origin_zyx, dtype=label_dtype, n_labels=n,
                        overwrite=overwrite)))
    if getattr(detections, "species", None) is not None:  # the species label image beside the instance labels
        # from the instance labels just written where there are some (not the relabel pass again)
        species = _species_labels(detections, da.from_zarr(str(written["zarr"] / "0")) if "zarr" in written
                                  else detections.labels)
        names = list(detections.species_names)
        images = _label_images(
            species, formats, zarr_path=rd.species_output("zarr"), mrc_path=rd.species_output("mrc"),
            progress=progress,
            zarr_kwargs=dict(voxel_size_zyx=vs_zyx, origin_zyx=origin_zyx, n_labels=len(names), overwrite=overwrite,
                             kind="species-labels", name="species",
                             properties=[{"label-value": k + 1, "species": nm} for k, nm in enumerate(names)],
                             colors=[{"label-value": k + 1, "rgba": _rgba(c)} for k, c in
                                     enumerate(SpeciesTable.of(names).colours())]),
            mrc_kwargs=dict(voxel_size=_one_or_three(vs_zyx), origin_zyx=origin_zyx, dtype="auto",
                            n_labels=len(names), overwrite=overwrite))
        written.update({f"species_{fmt}": path for fmt, path in images.items()})
    if "txt" in formats:
        written["txt"] = write_centers_txt(detections, rd.output("txt"), vs_zyx or voxel_size,
                                           overwrite=overwrite)
    if "csv" in formats:
        written["csv"] = write_centers_csv(detections, rd.output("csv"), vs_zyx, overwrite=overwrite)
    if "star" in formats:
        written["star"] = write_centers_star(detections, rd.output("star"), vs_zyx or voxel_size,
                                             detections.labels.shape, tomo_name or name, overwrite=overwrite)
    return written


def _label_images(labels: Any, formats: Sequence[str], *, zarr_path: Path, mrc_path: Path, progress: bool,
                  zarr_kwargs: dict[str, Any], mrc_kwargs: dict[str, Any]) -> dict[str, Path]:
    """The label image as OME-Zarr and MRC, as ``formats`` asks, in one computation: each block of
    ``labels`` is computed once and written to both."""
    wanted = [f for f in ("zarr", "mrc") if f in formats]
    if not wanted:
        return {}
    with contextlib.ExitStack() as stack:
        pending: dict[str, Any] = {}
        if "zarr" in wanted:
            pending["zarr"] = stack.enter_context(pending_labels_zarr(labels, zarr_path, **zarr_kwargs))
        if "mrc" in wanted:
            pending["mrc"] = stack.enter_context(pending_labels_mrc(labels, mrc_path, **mrc_kwargs))
        paths = {"zarr": zarr_path, "mrc": mrc_path}
        names = " and ".join(paths[f].name for f in wanted)
        results = compute(*(pending[f].writes for f in wanted), progress=progress, desc=f"writing {names}")
        for f, result in zip(wanted, results):
            pending[f].finish(result)
    return {f: paths[f] for f in wanted}


def _species_labels(detections: Any, labels: Any) -> da.Array:
    """Species label image (0 background, k + 1 for species k) from the instance labels just written."""
    import numpy as np

    from ..postprocessing import species_lookup

    lut = species_lookup(detections.species)  # label i + 1 -> its species + 1
    lab = labels if isinstance(labels, da.Array) else detections.labels
    out: da.Array = da.map_blocks(np.take, lut, lab, dtype=np.uint8)
    return out


def _rgba(colour: str) -> list[int]:
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)] + [255]


def _one_or_three(vs_zyx: tuple[float, ...] | None) -> float | tuple[float, ...] | None:
    """One voxel size when the axes agree (the MRC header written as before), else (z, y, x)."""
    if vs_zyx is None:
        return None
    return vs_zyx[2] if max(vs_zyx) - min(vs_zyx) <= 1e-6 * max(vs_zyx) else vs_zyx
