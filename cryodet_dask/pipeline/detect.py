"""``detect``: convert -> predict -> postprocess -> export, end to end, resumable.

Each stage is its own function (:func:`cryodet_dask.load`,
:func:`~cryodet_dask.predict`, :func:`~cryodet_dask.postprocess`,
:func:`~cryodet_dask.export`); this module chains them on one Dask client and
keeps a ``run.json`` of what it did.  What a run does with its folder (the lock,
the inputs' identity, stale outputs, run records) is :mod:`.rundir`'s; the checks
of memory and disk space before it starts are :mod:`.resources`'.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
from contextlib import ExitStack, nullcontext
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import dask.array as da
import numpy as np
import zarr

from .._progress import current_client
from .._shapes import triplet
from ..errors import DiskSpaceError, ParameterError
from ..io import Tomogram, convert, load
from ..postprocessing import Detections
from ..resampling import resample
from .result import DetectionResult
from .params import DetectParams, check_known_voxel_size, check_tomo_name, output_voxel_size, resolve_voxel_size
from .provenance import peak_memory_mib, reset_peak_memory
from .resources import check_disk_space, check_worker_memory, estimate_space, gib
from .rundir import (RunDirectory, clean_stale, converted_from, digest, output_lock, remove_intermediates, rescaled_ok,
                     retire_outputs, run_identity, run_record, same_input_as_before, write_run_record)

if TYPE_CHECKING:  # torch is imported only when a stage needs it
    from ..prediction import Prediction

__all__ = ["DetectParams", "DetectionResult", "detect"]

log = logging.getLogger("cryodet_dask")


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

    Raises
    ------
    OutputBusyError
        Another run (process or thread) holds ``out_dir``'s lock (``.cryodet.lock``).

    Notes
    -----
    Cleaning never deletes the input (paths resolved first), nor an output of
    a format this run does not write; ``keep_intermediate=False`` removes only
    the intermediate stores this run wrote or used.

    Examples
    --------
    >>> res = detect("tomo.mrc", "out/", mask_threshold=0.2)   # doctest: +SKIP
    >>> res.particles[["x", "y", "z", "score"]].head()          # doctest: +SKIP
    """
    p = DetectParams.from_dict({**(params.to_dict() if params else {}), **kwargs})  # validated when made
    timings: dict[str, float] = {}
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cryodet_")
        out = Path(tmp.name)
    else:
        out = Path(out_dir)  # created after the checks below: a refused run writes nothing

    src_path: Path | None
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
    if p.particle_diameter is not None and p.voxel_size is None and not tomo.voxel_size:
        raise ParameterError(f"--particle-diameter needs the voxel size: {stem} has none in its header; "
                             "give -vs/--voxel-size")
    voxel_size = resolve_voxel_size(tomo, p.voxel_size)  # None: unknown (no header, no -vs); never a guess
    # outputs in Å need a known voxel size: one line asking for -vs, before any work
    check_known_voxel_size(voxel_size, p.formats if out_dir is not None else (), str(src_path or stem),
                           rescale=p.rescale, magnify=p.magnify)
    p.check_plan(tomo.shape, voxel_size)  # blocks and fusion distance the task graph can hold, before any work
    from ..prediction import check_model_voxel_size, check_species

    check_species(p.model_arg(), p.species)  # before any work: a species the model does not know is one line
    trained = check_model_voxel_size(p.model_arg(), voxel_size, p.rescale)
    factor = voxel_size / trained if (p.rescale and trained and voxel_size) else None
    if p.magnify != 1.0:  # the networks see the tomogram magnified (on top of --rescale)
        factor = (factor or 1.0) * float(p.magnify)
    if out_dir is not None and "star" in p.formats:
        check_tomo_name(p.tomogram_name or stem, str(src_path) if src_path is not None else stem)
    identity = run_identity(src_path, p) if out_dir is not None else None

    # one run per output folder: the lock is taken before anything in it is touched (cleaning included)
    guard = ExitStack()
    if out_dir is not None:
        guard.enter_context(output_lock(out))
    with guard:
        return _detect_locked(tomo, src_path, out, out_dir, stem, p, voxel_size, factor, identity, client,
                              overwrite, progress, tmp, timings)


@dataclass
class _Run:
    """What the four stages of one detection share: one tomogram, one run folder, one set of parameters."""

    tomo: Tomogram
    src_path: Path | None
    out: Path
    writes: bool  # an output folder was given (else ``out`` is a temporary folder and nothing is exported)
    stem: str
    p: DetectParams
    voxel_size: float | None  # None: unknown (no header, no -vs); the outputs are then in voxels only
    factor: float | None  # resampling factor to the grid the networks see (``--rescale``, ``--magnify``), or None
    identity: dict[str, Any] | None
    client: Any
    overwrite: bool
    progress: bool
    timings: dict[str, float]
    keep_alive: Any = None  # the temporary folder of an API run without an output folder
    needs_convert: bool = False
    is_store: bool = False  # the input is a Zarr store used in place

    @property
    def folder(self) -> RunDirectory:
        return RunDirectory(self.out, self.stem)


@dataclass
class _Outputs:
    """What the post-processing and the export of a run are, decided before they run."""

    pp_kwargs: dict[str, Any]
    voxel_size_zyx: tuple[float, float, float] | None
    source: Path | None  # the image the label image names (NGFF image-label.source)
    fingerprint: str
    species_params: Any = None  # postprocessing.SpeciesParams of a multi-species model (None: species-agnostic)

    def record(self) -> dict[str, Any]:
        """The post-processing parameters as the run record states them (per species when there are some)."""
        if self.species_params is None:
            return self.pp_kwargs
        return {**self.pp_kwargs, "species": {k: list(v) for k, v in dataclasses.asdict(self.species_params).items()}}


def _detect_locked(tomo: Tomogram, src_path: Path | None, out: Path, out_dir: Any, stem: str, p: DetectParams,
                   voxel_size: float | None, factor: float | None, identity: dict[str, Any] | None, client: Any,
                   overwrite: bool, progress: bool, tmp: Any, timings: dict[str, float]) -> DetectionResult:
    """The checks that need the run folder (disk space, worker memory), then the stages."""
    if out.is_dir():
        clean_stale(out, stem)
    run = _Run(tomo=tomo, src_path=src_path, out=out, writes=out_dir is not None, stem=stem, p=p,
               voxel_size=voxel_size, factor=factor, identity=identity, client=client, overwrite=overwrite,
               progress=progress, timings=timings, keep_alive=tmp)
    # a Zarr store is used in place, unless NaN/Inf must become 0 (--nan-policy zero): then it is copied
    # like an MRC file, with the check and the replacement on the way
    run.is_store = src_path is not None and Path(src_path).is_dir() and p.nan_policy == "error"
    zpath = run.folder.converted
    if not run.is_store and src_path is not None and zpath.resolve() == Path(src_path).resolve():
        raise ParameterError(f"{src_path}: --nan-policy zero writes the cleaned copy to {zpath}, which is the "
                             "input itself; choose another -o")
    run.needs_convert = not run.is_store and (overwrite or not converted_from(zpath, src_path))
    need = estimate_space(tomo.shape, np.dtype(tomo.data.dtype).itemsize, p.formats if run.writes else (),
                          convert=run.needs_convert, predict=overwrite or not run.folder.prediction.exists(),
                          factor=factor)
    if run.writes:
        check_disk_space(out, need)
    out.mkdir(parents=True, exist_ok=True)

    ctx = client.as_current() if client is not None else nullcontext()
    try:
        with ctx:
            active = client if client is not None else current_client()
            check_worker_memory(active, p,
                                tuple(max(int(round(n * factor)), 1) for n in tomo.shape) if factor else tomo.shape)
            peak_reset = reset_peak_memory(active)
            return _detect_stages(run, peak_reset)
    except DiskSpaceError as exc:
        raise DiskSpaceError(f"{exc}; the run needs up to {gib(sum(need.values()))} in {out}") from exc
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise DiskSpaceError(f"disk full while writing in {out}: the run needs up to {gib(sum(need.values()))} "
                             f"({', '.join(f'{k} {gib(v)}' for k, v in need.items())}); free space and run "
                             "the same command again to resume") from exc


def _detect_stages(run: _Run, peak_reset: bool) -> DetectionResult:
    """convert -> predict -> post-process -> export, each timed in ``run.timings``; then the run record."""
    stored = _convert_stage(run)
    pred = _predict_stage(run, stored)
    outputs = _plan_outputs(run, pred)
    with ExitStack() as stack:  # the post-processing's scratch folder lives until the export has read it
        dets = _postprocess_stage(run, pred, outputs, stack)
        files = _export_stage(run, dets, outputs)
    return _finish(run, stored, pred, outputs, dets, files, peak_reset)


def _convert_stage(run: _Run) -> Tomogram:
    """The tomogram as a Zarr store (the input itself, or a checked conversion that a rerun reuses), on the
    weights' grid when ``--rescale`` asks for it."""
    p, t = run.p, time.perf_counter()
    if run.is_store:
        stored = run.tomo
    else:
        zpath = run.folder.converted
        if run.needs_convert:
            convert(run.tomo if run.src_path is None else run.src_path, zpath, chunks=p.chunks,
                    voxel_size=run.voxel_size, nan_policy="zero" if p.nan_policy == "zero" else "error",
                    overwrite=True, progress=run.progress)
        else:
            log.info("%s is a complete conversion of %s: reused", zpath.name, run.src_path)
        stored = load(zpath)
    if run.factor is not None:  # the tomogram on the weights' grid, stored so that prediction can resume
        factor, rescaled = run.factor, run.folder.rescaled
        assert run.voxel_size is not None  # a factor needs the voxel size (check_known_voxel_size)
        new_shape = tuple(max(int(round(n * factor)), 1) for n in stored.shape)
        if run.needs_convert or run.overwrite or not rescaled_ok(rescaled, new_shape, run.voxel_size / factor) or \
                not same_input_as_before(run.out, run.stem, run.identity):
            log.info("rescaling %s by %.3f to %s voxels of %.4g Å", run.stem, factor, new_shape,
                     run.voxel_size / factor)
            chunks = triplet(p.chunks)
            convert(resample(stored.reader, new_shape, factor, tuple(min(c, n) for c, n in zip(chunks, new_shape))),
                    rescaled, chunks=p.chunks, voxel_size=run.voxel_size / factor, overwrite=True,
                    progress=run.progress)
        stored = load(rescaled)
    run.timings["convert"] = time.perf_counter() - t
    return stored


def _predict_stage(run: _Run, stored: Tomogram) -> Prediction:
    """The maps in the run folder's prediction store (resumed chunk by chunk, reused when complete)."""
    from ..prediction import predict

    p, t = run.p, time.perf_counter()
    pred = predict(stored, p.model_arg(), out=run.folder.prediction, chunks=p.chunks, halo=p.halo, tile=p.tile,
                   device=p.device, batch_size=p.batch_size, polarity=p.polarity, tta=p.tta, engine=p.engine,
                   overwrite=run.overwrite,
                   replace=True, progress=run.progress)
    run.timings["predict"] = time.perf_counter() - t
    return pred


def _plan_outputs(run: _Run, pred: Prediction) -> _Outputs:
    """The post-processing parameters, the outputs' voxel size and source image, and the fingerprint that
    recognizes the outputs; outputs of another run in the folder are retired here, before any is written."""
    p = run.p
    pp_kwargs, species_params = p.resolve_postprocess(run.voxel_size)
    vs_zyx = output_voxel_size(run.tomo, p.voxel_size, run.voxel_size)
    # the label image names its tomogram (NGFF image-label.source) where that image stays:
    # the user's store, or the kept conversion beside it (not a rescaled copy)
    source = run.src_path if run.is_store else (run.folder.converted if p.keep_intermediate else None)
    sp_record = None if species_params is None else dataclasses.asdict(species_params)
    fingerprint = digest([pred.attrs.get("fingerprint"), pp_kwargs, *([sp_record] if sp_record else []),
                          list(p.formats), p.tomogram_name,
                           str(Path(source).resolve()) if source is not None else None,
                           run.voxel_size if vs_zyx is None or len(set(vs_zyx)) == 1 else list(vs_zyx),
                           list(run.tomo.origin_zyx)])
    if run.writes:
        retire_outputs(run.out, run.stem, fingerprint, p.formats, run.src_path, parameters=p.to_dict())
    return _Outputs(pp_kwargs=pp_kwargs, voxel_size_zyx=vs_zyx, source=source, fingerprint=fingerprint,
                    species_params=species_params)


def _postprocess_stage(run: _Run, pred: Prediction, outputs: _Outputs, stack: ExitStack) -> Detections:
    """Instance labels and centres from the maps (brought back to the tomogram's grid after a rescale)."""
    from ..postprocessing import SpeciesParams, postprocess, quantize_species

    mask, center, species = pred.mask, pred.center, pred.species
    if run.factor is not None:  # maps back to the tomogram's grid (linear); post-processing runs there
        chunks = tuple(min(c, n) for c, n in zip(triplet(run.p.chunks), run.tomo.shape))
        group = zarr.open_group(str(pred.path), mode="r")
        mask, center, *per_species = (resample(group[m], run.tomo.shape, 1 / run.factor, chunks) for m in
                                      ["mask", "center", *(f"species_{n}" for n in pred.species_names)])
        species = da.stack(per_species).map_blocks(lambda b: quantize_species(b / 255), dtype=np.uint8) \
            if per_species else None
    t = time.perf_counter()
    # per-chunk instance pieces are kept on disk so that writing the labels does not recompute them
    scratch = None
    if run.writes and {"zarr", "mrc"} & set(run.p.formats):
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=".cryodet-pieces-", dir=run.out))
    sp = (outputs.species_params or SpeciesParams()) if species is not None else None
    dets = postprocess(mask, center, progress=run.progress, scratch=scratch, species=species,
                       species_names=pred.species_names, species_params=sp, **outputs.pp_kwargs)
    calibration = _calibration(run.p.model_arg())
    # fitted on the maps of one forward pass on the tomogram's own grid: a mean of several passes lowers the
    # centre peaks it reads, and maps resampled back from another grid lower the mask scores; on held-out
    # tomograms it then said 0.38 (flips) or 0.54 (both) where 99 % of the picks were true, and under
    # --magnify 1.5 or --rescale 0.002 or 0.01 where 54 % or 45 % were (docs/results.md)
    unfitted = [f for f, v, plain in (("--tta", run.p.tta, "none"), ("--polarity", run.p.polarity, "as-is"))
                if v != plain]
    if run.factor is not None:
        unfitted += [f for f, on in (("--rescale", bool(run.p.rescale)), ("--magnify", float(run.p.magnify) != 1.0))
                     if on]
    if calibration is not None and unfitted:
        log.info("no pick probability with %s: the network's calibration was fitted on the maps of one forward "
                 "pass on the tomogram's own grid", " and ".join(unfitted))
        calibration = None
    if calibration is not None:
        dets = dataclasses.replace(dets, probabilities=calibration.probability(
            dets.center_scores, dets.scores, np.asarray(dets.n_voxels, dtype=np.float64)))
    run.timings["postprocess"] = time.perf_counter() - t
    return dets


def _calibration(model: Any) -> Any:
    """The score calibration of a two-head network (:mod:`cryodet_dask.calibration`), or None (none
    recorded, or a SegNet and CenterNet pair)."""
    from ..models import inspect_checkpoint
    from ..prediction import resolve_models

    specs = resolve_models(model)
    return inspect_checkpoint(specs[0].path).calibration if len(specs) == 1 else None


def _export_stage(run: _Run, dets: Detections, outputs: _Outputs) -> dict[str, Path]:
    """The label image and the particle files in every asked format (none without an output folder)."""
    from ..exports import export

    t = time.perf_counter()
    files: dict[str, Path] = {}
    if run.writes:
        files = export(dets, run.out, run.stem, voxel_size=outputs.voxel_size_zyx, origin_zyx=run.tomo.origin_zyx,
                       source_image=outputs.source, formats=run.p.formats, tomo_name=run.p.tomogram_name or run.stem,
                       overwrite=True, progress=run.progress)
    run.timings["export"] = time.perf_counter() - t
    return files


def _finish(run: _Run, stored: Tomogram, pred: Prediction, outputs: _Outputs, dets: Detections,
            files: dict[str, Path], peak_reset: bool) -> DetectionResult:
    """Drop the intermediates unless kept, write the run record (last: it vouches for the outputs)."""
    from ..prediction import resolve_models

    p = run.p
    particles = dets.to_dataframe(outputs.voxel_size_zyx)
    labels = dets.labels  # lazy; recomputes the pieces when no label image was written
    if "zarr" in files:
        labels = load(files["zarr"]).data
    elif "mrc" in files:
        labels = load(files["mrc"]).data
    if run.writes:
        if not p.keep_intermediate:
            # only the intermediates this run wrote or used, never the input (paths resolved first)
            ours = [Path(cast(Path, pred.path))]  # predict(out=...) records the store's path
            if not run.is_store:
                ours.append(run.folder.converted)
            if run.factor is not None:
                ours.append(run.folder.rescaled)
            remove_intermediates(ours, run.out, run.src_path)
        record = run_record(
            tomogram=run.src_path, identity=run.identity, name=run.stem, shape=run.tomo.shape,
            voxel_size=run.voxel_size, voxel_size_zyx=outputs.voxel_size_zyx, parameters=p.to_dict(),
            pp_kwargs=outputs.record(), factor=run.factor, pred=pred, converted=run.needs_convert,
            source_identity=stored.metadata.get("source_identity", str(run.src_path)),
            export_fingerprint=outputs.fingerprint, particles=int(len(particles)), timings=run.timings, files=files,
            peak_memory=peak_memory_mib(run.client if run.client is not None else current_client(), peak_reset),
            weights=list(zip((s.path for s in resolve_models(p.model_arg())),
                             (run.identity or {}).get("weights_sha256") or [])))
        # the tomogram's own record, then the folder's last run (both written last: they vouch for the outputs)
        files["run"] = write_run_record(run.folder, record)
    return DetectionResult(labels=labels, particles=particles, voxel_size=run.voxel_size, detections=dets,
                           prediction=pred, files=files, timings=run.timings, out_dir=run.out if run.writes else None,
                           _tmp=run.keep_alive)
