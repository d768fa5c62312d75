"""``detect``: convert -> predict -> postprocess -> export, end to end, resumable.

Each stage is its own function (:func:`cryodet_dask.load`,
:func:`~cryodet_dask.predict`, :func:`~cryodet_dask.postprocess`,
:func:`~cryodet_dask.export`); this module chains them on one Dask client and
keeps a ``run.json`` of what it did.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from .errors import ParameterError
from .io import Tomogram, atomic_output, convert, load
from .io._convert import _identity

__all__ = ["DetectParams", "DetectionResult", "detect", "FALLBACK_VOXEL_SIZE"]

log = logging.getLogger("cryodet_dask")

#: The seed's default voxel size (spinach data), used only when the file has none, with a warning.
FALLBACK_VOXEL_SIZE = 14.08


@dataclass(frozen=True)
class DetectParams:
    """Every parameter of a detection run; one name across the CLI, the YAML config and the API.

    Seed flag aliases: ``-m`` segnet, ``-c`` centernet, ``-ps`` chunks, ``-vs``
    voxel_size, ``-mt`` mask_threshold, ``-ct`` center_threshold, ``-rs``
    remove_min_size, ``-nn`` neighbor_number, ``-dt`` distance_threshold.
    """

    segnet: str | None = None
    centernet: str | None = None
    chunks: tuple[int, ...] = (128,)
    voxel_size: float | None = None
    mask_threshold: float = 0.1
    center_threshold: float = 0.1
    remove_min_size: int = 64
    check_center: bool = True
    filter_outlier: bool = True
    neighbor_number: int = 3
    distance_threshold: float = 30.0
    connectivity: int = 1
    halo: tuple[int, ...] | None = None
    device: str = "auto"
    batch_size: int = 1
    keep_intermediate: bool = True
    formats: tuple[str, ...] = ("mrc", "txt", "csv", "star", "zarr")

    def postprocess_kwargs(self) -> dict[str, Any]:
        return dict(mask_threshold=self.mask_threshold, center_threshold=self.center_threshold,
                    remove_min_size=self.remove_min_size, check_center=self.check_center,
                    filter_outlier=self.filter_outlier, neighbor_number=self.neighbor_number,
                    distance_threshold=self.distance_threshold, connectivity=self.connectivity)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        d = dict(d)
        for k in ("chunks", "halo", "formats"):
            if d.get(k) is not None:
                v = d[k]
                d[k] = tuple(v) if isinstance(v, list | tuple) else (v,)
        return cls(**d)


@dataclass
class DetectionResult:
    """What :func:`detect` found.

    Attributes
    ----------
    labels : dask.array.Array
        Instance label image (uint32, z, y, x), lazy.
    particles : pandas.DataFrame
        One row per particle: ``id, x, y, z`` (voxels), ``x_angst, y_angst,
        z_angst`` (Å), ``n_voxels``, ``score`` (mean mask probability).
    voxel_size : float
        Å per voxel used for the Å columns.
    files : dict
        Output files by kind.
    timings : dict
        Seconds per stage.
    """

    labels: da.Array
    particles: Any
    voxel_size: float
    detections: Any = None
    prediction: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    _tmp: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.particles)


def _versions() -> dict[str, str]:
    import dask
    import distributed
    import torch
    import zarr

    from . import __version__

    return {"cryodet_dask": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "dask": dask.__version__, "distributed": distributed.__version__, "zarr": zarr.__version__,
            "torch": torch.__version__}


def _voxel_size(tomo: Tomogram, given: float | None) -> float:
    if given is not None:
        if not given > 0:
            raise ParameterError(f"voxel size must be positive (Å), got {given}")
        return float(given)
    if tomo.voxel_size:
        return float(tomo.voxel_size)
    warnings.warn(f"the tomogram has no voxel size in its header; assuming {FALLBACK_VOXEL_SIZE} Å "
                  "(the seed's default); give -vs/--voxel-size to set it", stacklevel=3)
    return FALLBACK_VOXEL_SIZE


def _check_model_voxel_size(model: Any, voxel_size: float) -> None:
    from .prediction import resolve_models
    from . import models

    for spec in resolve_models(model):
        trained = models.load(spec.path).config.voxel_size
        if trained and abs(trained / voxel_size - 1) > 0.05:
            warnings.warn(f"the weights {Path(spec.path).name} were trained at {trained:g} Å per voxel, the "
                          f"tomogram has {voxel_size:g} Å (factor {voxel_size / trained:.2f}): detection may "
                          f"suffer; bin or rescale the tomogram to {trained:g} Å", stacklevel=3)


def _converted_from(zpath: Path, src_path: Path | None) -> bool:
    """True if ``zpath`` is a complete conversion of the file ``src_path`` as it is now."""
    if src_path is None or not zpath.exists():
        return False
    try:
        meta = load(zpath).metadata
    except Exception:
        return False
    return meta.get("source_identity") == _identity(src_path)


def _model_arg(p: DetectParams) -> Any:
    given = [m for m in (p.segnet, p.centernet) if m]
    if not given:
        return None
    return given[0] if len(given) == 1 else given


def detect(
    tomogram: Any,
    out_dir: str | os.PathLike[str] | None = None,
    params: DetectParams | None = None,
    *,
    name: str | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = False,
    **kwargs: Any,
) -> DetectionResult:
    """Find and instance-label the particles of a tomogram.

    Parameters
    ----------
    tomogram : path, Tomogram, numpy or dask array
        MRC file or Zarr store, or a volume (z, y, x).
    out_dir : path, optional
        Where outputs go (``<name>_labels.mrc``, ``<name>_centers.txt/.csv/.star``,
        intermediate Zarr stores, ``run.json``).  Default: a temporary folder
        kept alive with the result (nothing exported).
    params : DetectParams, optional
        All parameters; keyword arguments override single fields
        (``mask_threshold=0.2``...).
    name : str, optional
        Stem of the output files (default: the tomogram file's stem).
    client : distributed.Client, optional
        Run on this client.  Default: the current default client, or Dask's
        threaded scheduler in this process if there is none (the CLI starts a
        LocalCluster).
    overwrite : bool
        Recompute and replace existing outputs.
    progress : bool
        Progress bars per stage.

    Returns
    -------
    DetectionResult

    Examples
    --------
    >>> res = detect("tomo.mrc", "out/", mask_threshold=0.2)   # doctest: +SKIP
    >>> res.particles[["x", "y", "z", "score"]].head()          # doctest: +SKIP
    """
    from .exports import export
    from .postprocessing import postprocess
    from .prediction import predict

    p = DetectParams.from_dict({**(params.to_dict() if params else {}), **kwargs})
    from .postprocessing import PostprocessParams

    PostprocessParams(**p.postprocess_kwargs())  # validate before any work
    timings: dict[str, float] = {}
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cryodet_")
        out = Path(tmp.name)
    else:
        out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if isinstance(tomogram, str | os.PathLike):
        src_path = Path(tomogram)
        tomo = load(src_path)
        stem = name or src_path.stem.removesuffix(".zarr")
    elif isinstance(tomogram, Tomogram):
        tomo, src_path = tomogram, tomogram.path
        stem = name or (Path(tomogram.path).stem if tomogram.path else "tomogram")
    elif isinstance(tomogram, np.ndarray | da.Array):
        tomo, src_path = Tomogram(data=da.asarray(tomogram), voxel_size=None), None
        stem = name or "tomogram"
    else:
        raise ParameterError(f"detect takes a path, a Tomogram or an array, not {type(tomogram).__name__}")
    voxel_size = _voxel_size(tomo, p.voxel_size)
    _check_model_voxel_size(_model_arg(p), voxel_size)

    ctx = client.as_current() if client is not None else nullcontext()
    with ctx:
        t = time.perf_counter()
        if src_path is not None and Path(src_path).is_dir():  # already a Zarr store
            stored = tomo
        else:
            zpath = out / f"{stem}.zarr"
            if overwrite or not _converted_from(zpath, src_path):
                convert(tomo if src_path is None else src_path, zpath, chunks=p.chunks, voxel_size=voxel_size,
                        overwrite=True, progress=progress)
            stored = load(zpath)
        timings["convert"] = time.perf_counter() - t

        t = time.perf_counter()
        pred = predict(stored, _model_arg(p), out=out / f"{stem}_prediction.zarr", chunks=p.chunks, halo=p.halo,
                       device=p.device, batch_size=p.batch_size, overwrite=overwrite, progress=progress)
        timings["predict"] = time.perf_counter() - t

        t = time.perf_counter()
        # per-chunk instance pieces are kept on disk so that writing the labels does not recompute them
        writes_labels = out_dir is not None and bool({"zarr", "mrc"} & set(p.formats))
        scratch = tempfile.TemporaryDirectory(prefix=".cryodet-pieces-", dir=out) if writes_labels else None
        try:
            dets = postprocess(pred.mask, pred.center, progress=progress,
                               scratch=scratch.name if scratch else None, **p.postprocess_kwargs())
            timings["postprocess"] = time.perf_counter() - t

            t = time.perf_counter()
            files: dict[str, Path] = {}
            if out_dir is not None:
                files = export(dets, out, stem, voxel_size=voxel_size, origin_zyx=tomo.origin_zyx,
                               formats=p.formats, tomo_name=stem, overwrite=True, progress=progress)
            timings["export"] = time.perf_counter() - t
        finally:
            if scratch is not None:
                scratch.cleanup()

    particles = dets.to_dataframe(voxel_size)
    labels = dets.labels  # lazy; recomputes the pieces when no label image was written
    if "zarr" in files:
        labels = load(files["zarr"]).data
    elif "mrc" in files:
        labels = load(files["mrc"]).data
    if out_dir is not None:
        if not p.keep_intermediate:
            import shutil

            for inter in (out / f"{stem}_prediction.zarr", out / f"{stem}.zarr"):
                if inter.exists() and inter != src_path:
                    shutil.rmtree(inter)
        run = {
            "tomogram": str(src_path) if src_path is not None else None,
            "name": stem,
            "shape_zyx": list(tomo.shape),
            "voxel_size_angst": voxel_size,
            "parameters": p.to_dict(),
            "halo": list(pred.plan.halo),
            "chunks": list(pred.plan.chunk_shape),
            "chunks_computed": pred.chunks_computed,
            "chunks_skipped": pred.chunks_skipped,
            "particles": int(len(particles)),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "outputs": {k: str(v) for k, v in files.items()},
            "versions": _versions(),
        }
        with atomic_output(out / "run.json", overwrite=True) as tmp_json:
            tmp_json.write_text(json.dumps(run, indent=2))
        files["run"] = out / "run.json"
    return DetectionResult(labels=labels, particles=particles, voxel_size=voxel_size, detections=dets,
                           prediction=pred, files=files, timings=timings, out_dir=out if out_dir else None,
                           _tmp=tmp)
