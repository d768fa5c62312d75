"""``predict``: the networks applied chunk by chunk, with halos, on the active Dask scheduler."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .._progress import compute, compute_keys, current_client
from ..errors import CheckpointError, InputError, OutputExistsError, ParameterError
from ..io import (INTEGRITY_ATTRS, WRITE_CONFIG, ArrayReader, CheckedArray, Tomogram, chunk_digest, content_identity,
                  has_checksum, lazy_array, load, normalize_chunks, open_for_write, partial_path, stored_codecs,
                  verify_array)
from ._engine import ModelSpec, check_engine, forward_block, normalize_block, resolve_device
from .._shapes import triplet
from ._tiling import (ACTIVATION_BYTES_PER_VOXEL, ACTIVATION_BYTES_PER_VOXEL_CHANNEL, GPU_CONTEXT_BYTES, RUNTIME_BYTES,
                      ChunkPlan, model_halo, plan_chunks, plan_tiles, with_tile)

__all__ = ["Prediction", "predict", "global_stats", "resolve_models"]

log = logging.getLogger("cryodet_dask")

HEADS = ("mask", "center")
#: The maps are stored uncompressed (the crc32c checksum stays): network outputs carry noise in every
#: mantissa bit and do not compress (1.00x with LZ4 + bit-shuffle on the shipped network's maps), and
#: uncompressed chunks read 1.7-3.8x and write 1.5-1.8x faster (README, Performance: post-processing).
MAPS_CODEC = "none"


@dataclass
class Prediction:
    """Predicted maps of a tomogram.

    Attributes
    ----------
    mask : dask.array.Array
        Particle mask probability in [0, 1], float32, (z, y, x).
    center : dask.array.Array
        CenterNet map: normalized distance to the particle boundary (1 at a
        particle's centre), float32.
    path : Path or None
        The Zarr store holding both (``None`` for a lazy, unstored prediction).
    plan : ChunkPlan
        Chunk shape, halo and pooling alignment used.
    mean, std : float
        Global normalization statistics of the tomogram.
    voxel_size : float or None
        Voxel size in Å.
    chunks_computed, chunks_skipped : int
        For a stored prediction: chunks run now, and chunks found done by an
        earlier interrupted run and skipped (after verification).
    chunks_repaired : int
        Chunks of an earlier run's store (complete or interrupted) that failed
        verification (missing, not decodable, checksum or digest mismatch)
        and were therefore computed again; included in ``chunks_computed``.
    """

    mask: da.Array
    center: da.Array
    path: Path | None
    plan: ChunkPlan
    mean: float
    std: float
    voxel_size: float | None
    chunks_computed: int = 0
    chunks_skipped: int = 0
    chunks_repaired: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_models(model: Any = None) -> list[ModelSpec]:
    """Checkpoints to run, as :class:`ModelSpec` s whose heads together give ``mask`` and ``center``.

    ``model`` may be ``None`` (the shipped demo weights), one checkpoint path
    (a two-head network), or a sequence of paths (SegNet, CenterNet).
    """
    from .. import models

    paths: list[str | os.PathLike[str] | None]
    if model is None:
        # the two-head network: more accurate than the shipped pair on validation data and half the cost
        # (README, Results); the pair is -m segnet.pt -c centernet.pt
        weights = models.default_weights()
        paths = [weights.twohead] if weights.twohead else [weights.segnet, weights.centernet]
        if any(p is None for p in paths):
            raise CheckpointError("no shipped weights found in the package; give -m/-c checkpoints")
    elif isinstance(model, str | os.PathLike):
        paths = [model]
    else:
        paths = list(model)
    specs = []
    for p in paths:
        if p is None:
            continue
        path = Path(p).resolve()
        try:
            st = path.stat()
        except OSError:
            models.load(p)  # raises the one-line CheckpointError for a missing or unreadable file
            raise
        specs.append(_spec(str(path), st.st_mtime_ns, st.st_size))
    heads = [h for s in specs for h in s.heads]
    missing = [h for h in HEADS if h not in heads]
    if missing:
        raise CheckpointError(
            f"the checkpoints predict {heads}; also needed: {missing} (give a SegNet and a CenterNet, or a two-head model)"
        )
    return specs


def check_model_voxel_size(model: Any, voxel_size: float, rescale: bool = False,
                            assumed: bool = False) -> float | None:
    """Warn when the weights were trained at another voxel size; return that voxel size if it differs > 5 %.

    ``assumed``: the tomogram's voxel size is the fallback (no header, no ``-vs``): the warning then
    asks for ``-vs`` first, since ``--rescale`` would resample by a guess.
    """
    found = None
    for spec in resolve_models(model):
        trained = spec.voxel_size
        if trained and abs(trained / voxel_size - 1) > 0.05:
            if found is not None and abs(trained / found - 1) > 0.05:
                raise ParameterError(f"the networks were trained at different voxel sizes ({found:g} and "
                                     f"{trained:g} Å); give networks trained at one voxel size")
            found = trained
            if not rescale and assumed:
                warnings.warn(f"the weights {Path(spec.path).name} were trained at {trained:g} Å per voxel and the "
                              f"tomogram's voxel size is unknown (assumed {voxel_size:g} Å): give -vs/--voxel-size "
                              "first; add --rescale only if it really differs from "
                              f"{trained:g} Å", stacklevel=3)
            elif not rescale:
                warnings.warn(f"the weights {Path(spec.path).name} were trained at {trained:g} Å per voxel, the "
                              f"tomogram has {voxel_size:g} Å (factor {voxel_size / trained:.2f}): detection may "
                              f"suffer; add --rescale to predict on the tomogram resampled to {trained:g} Å",
                              stacklevel=3)
    return found


@functools.lru_cache(maxsize=16)
def _spec(path: str, mtime_ns: int, size: int) -> ModelSpec:
    """One checkpoint's :class:`ModelSpec`, read once per process for a given file version."""
    from .. import models

    cfg = models.load(path).config
    return ModelSpec(path=path, heads=tuple(cfg.heads), pool_factor=int(cfg.pool_factor),
                     receptive_field=int(cfg.receptive_field), halo=int(cfg.halo), width=int(cfg.channels[0]),
                     voxel_size=float(cfg.voxel_size) if cfg.voxel_size else None)


def global_stats(volume: da.Array, *, progress: bool = False) -> tuple[float, float]:
    """Mean and standard deviation of the whole tomogram: one Dask reduction pass, float64.

    A constant volume gets ``std = 1`` so that normalization never divides by zero; NaN or Inf
    anywhere raises :class:`~cryodet_dask.errors.InputError` (every entry point passes here).
    """
    v = volume.astype(np.float64)
    mean, std = compute(v.mean(), v.std(), progress=progress, desc="normalization statistics (one pass)")
    mean, std = float(mean), float(std)
    if not (np.isfinite(mean) and np.isfinite(std)):
        # NaN or Inf anywhere (a Zarr store or an array skips the MRC conversion's check): never a
        # silently empty result
        raise InputError(f"the tomogram holds NaN or infinite values (mean {mean}, std {std}); give "
                         "`detect --nan-policy zero` to read them as 0 (or write a clean copy with "
                         "`cryodet-dask convert TOMO OUT.zarr --nan-policy zero`)")
    return mean, (std if std > 0 else 1.0)


# ------------------------------------------------------------------ tasks


def _predict_tiles(reader: Any, plan: ChunkPlan, tiles: Sequence[tuple[int, int, int]], mean: float,
                   std: float, specs: Sequence[ModelSpec], device: str, amp: bool,
                   torch_threads: int | None, polarity: str = "as-is", engine: str = "torch") -> list[np.ndarray]:
    """Read, normalize and predict the tiles ``tiles``; return their cores (n_heads, *tile core)."""
    regions = [plan.tile_region(t) for t in tiles]
    blocks = [normalize_block(np.asarray(reader[r]), mean, std) for r in regions]
    crops: list[tuple[slice, ...] | None] = [
        tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(plan.tile_core(t), region))
        for t, region in zip(tiles, regions)]
    return forward_block(specs, blocks, device=device, amp=amp, torch_threads=torch_threads, polarity=polarity,
                         crops=crops, engine=engine)


def _head_order(specs: Sequence[ModelSpec]) -> list[int]:
    heads = [h for s in specs for h in s.heads]
    return [heads.index(h) for h in HEADS]


class _RegionBlock:
    """A block already read (core plus halo), indexed in global coordinates."""

    def __init__(self, block: np.ndarray, origin: Sequence[int]):
        self.block = block
        self.origin = tuple(origin)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.block[tuple(slice(k.start - o, k.stop - o) for k, o in zip(key, self.origin))]


def _lazy_chunk(source: Any, *, index: tuple[int, int, int], origin: Sequence[int] | None, plan: ChunkPlan,
                mean: float, std: float, specs: Sequence[ModelSpec], device: str, amp: bool,
                torch_threads: int | None, polarity: str = "as-is", engine: str = "torch") -> np.ndarray:
    reader = source if origin is None else _RegionBlock(source, origin)
    (core,) = _predict_tiles(reader, plan, [index], mean, std, specs, device, amp, torch_threads, polarity, engine)
    return core[_head_order(specs)]


def _store_tiles(reader: Any, *, tiles: Sequence[tuple[tuple[int, int, int], tuple[tuple[int, int, int], ...]]],
                 plan: ChunkPlan, mean: float, std: float, specs: Sequence[ModelSpec], device: str, amp: bool,
                 torch_threads: int | None, store: str, polarity: str = "as-is", engine: str = "torch") -> np.ndarray:
    """Predict tiles, write the chunks listed with each to the Zarr store, then mark each chunk done;
    return how many chunks."""
    outs = _predict_tiles(reader, plan, [t for t, _ in tiles], mean, std, specs, device, amp, torch_threads,
                          polarity, engine)
    order = _head_order(specs)
    # every chunk is written, even all zeros: a missing chunk file is damage, never zeros
    arrays = {h: open_for_write(os.path.join(store, h)) for h in HEADS}
    done = Path(store) / ".done"
    n = 0
    for (tile, members), out in zip(tiles, outs):
        origin = [c.start for c in plan.tile_core(tile)]
        for idx in members:
            sl = plan.core(idx)
            core = out[(slice(None), *(slice(c.start - o, c.stop - o) for c, o in zip(sl, origin)))]
            digests = {}
            for k, h in enumerate(HEADS):
                values = np.ascontiguousarray(core[order[k]].astype(arrays[h].dtype, copy=False))
                arrays[h][sl] = values
                digests[h] = chunk_digest(values)
            # the marker, only after both maps are written, records what they hold (checked before any reuse)
            marker = done / ".".join(map(str, idx))
            tmp = marker.with_name(f".{marker.name}.tmp")
            tmp.write_text(json.dumps(digests))
            os.replace(tmp, marker)
            n += 1
    return np.array([n], dtype=np.int64)


# ------------------------------------------------------------------ graph


def _source(volume: Any, chunks: Any) -> tuple[Any, da.Array, float | None, str]:
    """(reader, lazy array, voxel size, identity) for any accepted input."""
    if isinstance(volume, str | os.PathLike):
        volume = load(volume, chunks=chunks)
    if isinstance(volume, Tomogram):
        content = None
        if isinstance(volume.reader, CheckedArray) and volume.reader.require_all_chunks:
            # a store cryodet-dask wrote: identified by its content (chunk checksums), so a conversion
            # rebuilt with the same voxels keeps its prediction, and one changed in place does not
            content = content_identity(volume.reader.array)
        if content is not None:
            ident = content
        elif volume.path is not None:
            st = Path(volume.path).stat()
            ident = f"{Path(volume.path).resolve()}:{st.st_mtime_ns}:{st.st_size}"
        else:
            ident = tokenize(volume.data)
        if volume.reader is not None:
            return volume.reader, volume.data, volume.voxel_size, ident
        volume = volume.data
    if isinstance(volume, np.ndarray):
        return ArrayReader(volume), lazy_array(volume, normalize_chunks(chunks or 128, volume.shape)), None, tokenize(volume)
    if isinstance(volume, da.Array):
        return None, volume, None, volume.name
    raise ParameterError(f"predict takes a path, a Tomogram, a numpy or a dask array, not {type(volume).__name__}")


def tile_budget(device: str, specs: Sequence[ModelSpec], batch_size: int = 1, in_flight: int | None = None
                ) -> tuple[int, int, int, int]:
    """(memory budget of one task, bytes per tile voxel, fixed bytes, tasks at once) for :func:`plan_tiles`
    on a GPU: the device's memory shared by the prediction tasks in flight on it (``in_flight``: the
    largest ``GPU`` resource of the cluster's workers, a property of how they were started, never of
    how many there are; :data:`~cryodet_dask.cluster.GPU_TASKS` by default)."""
    import torch

    from ..cluster import GPU_TASKS

    width = max(s.width for s in specs)
    per_voxel = (ACTIVATION_BYTES_PER_VOXEL + ACTIVATION_BYTES_PER_VOXEL_CHANNEL * width) * max(batch_size, 1)
    if in_flight is None:
        client = current_client()
        workers = list(client.scheduler_info(n_workers=-1).get("workers", {}).values()) if client is not None else []
        units = [int((w.get("resources") or {}).get("GPU") or 0) for w in workers]
        in_flight = max(units) if any(units) else GPU_TASKS
    total = int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return int(total * 0.85 / max(in_flight, 1)), per_voxel, GPU_CONTEXT_BYTES, in_flight


def _gpu_workers_present() -> bool:
    client = current_client()
    if client is None:
        return False
    info = client.scheduler_info()
    return any(w.get("resources", {}).get("GPU") for w in info.get("workers", {}).values())


def _build_layer(name: str, tasks: dict[Any, Any], deps: list[Any], gpu: bool) -> HighLevelGraph:
    annotations = {"resources": {"GPU": 1}} if gpu else None
    layers = {name: MaterializedLayer(tasks, annotations=annotations)}
    dependencies: dict[str, set[str]] = {name: set()}
    for d in deps:
        hlg = d.__dask_graph__()
        layers.update(hlg.layers)
        dependencies.update(hlg.dependencies)
        dependencies[name] |= {d.name}
    return HighLevelGraph(layers, dependencies)


def predict(
    volume: Any,
    model: Any = None,
    *,
    out: str | os.PathLike[str] | None = None,
    chunks: int | Sequence[int] = 128,
    halo: int | Sequence[int] | None = None,
    device: str = "auto",
    batch_size: int = 1,
    dtype: str = "float32",
    amp: bool = False,
    torch_threads: int | None = None,
    polarity: str = "as-is",
    engine: str = "torch",
    tile: int | Sequence[int] | None = None,
    stats: tuple[float, float] | None = None,
    overwrite: bool = False,
    replace: bool = False,
    progress: bool = False,
) -> Prediction:
    """Apply SegNet and CenterNet to a tomogram chunk by chunk, with halos.

    Parameters
    ----------
    volume : path, Tomogram, numpy.ndarray or dask.array.Array
        The tomogram (z, y, x).  A path (MRC or Zarr) or a :class:`Tomogram`
        lets each task read its block plus halo straight from the file.
    model : path, sequence of paths, or None
        Checkpoints: a two-head network, or (SegNet, CenterNet).  Default: the
        shipped demo weights.
    out : path, optional
        Zarr store to write (group with arrays ``mask`` and ``center``).  With
        ``out`` the prediction runs now, resumably: an interrupted run leaves
        ``.<name>.partial`` with finished chunks marked, and the same call
        continues from there.  Without ``out`` the maps are lazy dask arrays.
    chunks : int or (z, y, x)
        Core chunk shape in voxels, rounded up to a multiple of the network's
        pooling factor.
    halo : int or (z, y, x), optional
        Halo in voxels on each side; default: half the receptive field,
        rounded up to the pooling factor.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
        Chunks per task, run in one forward call where their shapes agree.
    dtype : {"float32", "float16"}
        Storage type of the maps (``out`` only).
    amp : bool
        bfloat16 autocast on a GPU (the output heads, activations and centre-map smoothing stay
        fp32).  Off by default: on an H200 it was no faster than fp32 with TF32 (0.97x) and moved
        about 0.1 % of the mask voxels across the 0.5 threshold (README, Performance).
    polarity : {"both", "as-is"}
        ``"as-is"`` (default): one forward pass; ``"both"``: each map is the mean
        of the networks' outputs on the tomogram and on its contrast-inverted
        copy, so it is exactly the same for either contrast polarity (two passes).
    engine : {"torch", "openvino"}
        ``"torch"`` (default): PyTorch on ``device``.  ``"openvino"``: the networks converted to OpenVINO
        and run by its CPU plugin in fp32 (CPU only; ``pip install 'cryodet-dask[openvino]'``), 1.8x
        faster on this project's CPU, maps within 1e-5 of PyTorch's (:data:`~cryodet_dask.prediction.ENGINES`).
    tile : int or (z, y, x), optional
        Core of one forward pass, in voxels, rounded up to whole chunks (``out`` only: a task computes
        a tile from its core plus the halo and writes every chunk of it).  Default: on GPU workers
        (a cluster whose workers carry the ``GPU`` resource), planned from the device's memory
        shared by the tasks in flight on it (:func:`~cryodet_dask.prediction.plan_tiles`: the fewest
        computed voxels that fit); elsewhere one chunk.  The maps are the same for every tile plan
        (to float rounding, as for every chunking).
    torch_threads : int, optional
        Threads torch uses per task (default: torch's, which Dask workers set to 1).
    stats : (mean, std), optional
        Normalization statistics; default: computed over the whole tomogram.
    overwrite : bool
        Replace an existing ``out``.
    replace : bool
        Replace an existing ``out`` only if it was made from other inputs or
        parameters (a complete one for these is reused; the old one stays
        until the new one is complete).  ``detect`` uses this for its
        intermediate store.
    progress : bool
        Progress bars.

    Returns
    -------
    Prediction
    """
    if dtype not in ("float32", "float16"):
        raise ParameterError(f"dtype must be float32 or float16, got {dtype!r}")
    if batch_size < 1:
        raise ParameterError(f"batch size must be at least 1, got {batch_size}")
    from ..models import check_polarity

    check_polarity(polarity)
    check_engine(engine, device)
    specs = resolve_models(model)
    pool = max(s.pool_factor for s in specs)
    reader, data, voxel_size, ident = _source(volume, chunks)
    if data.ndim != 3:
        raise ParameterError(f"a tomogram has 3 dimensions, got shape {data.shape}")
    # the one derivation of the default halo (detect's checks call the same function)
    halo_v = model_halo([s.halo for s in specs], [s.pool_factor for s in specs]) if halo is None else halo
    if min(np.atleast_1d(halo_v)) < 0:
        raise ParameterError(f"halo must be >= 0 voxels, got {halo_v}")
    plan = plan_chunks(data.shape, chunks, halo_v, pool)
    if any(h and h > c for h, c in zip(plan.halo, plan.chunk_shape)) and max(plan.grid) > 1:
        log.info("halo %s is larger than the chunk %s: consider larger chunks", plan.halo, plan.chunk_shape)
    device = "cpu" if engine == "openvino" and device == "auto" else resolve_device(device)
    gpu = _gpu_workers_present()

    fingerprint = {
        "input": ident,
        "shape": list(plan.shape),
        "chunks": list(plan.chunk_shape),
        "halo": list(plan.halo),
        "models": [file_sha256(s.path) for s in specs],
        "dtype": dtype,
        "polarity": polarity,
        # another engine's maps differ by float rounding: a store is never resumed with the other engine
        "engine": engine,
        # bf16 maps differ from fp32 ones: a store is never resumed in the other precision
        "bf16": bool(amp and device.startswith("cuda")),
    }
    repaired = 0
    if out is not None:
        out = Path(out).absolute()  # tasks write here: workers may run in another folder
        done_attrs = _existing_complete(out, fingerprint)
        if done_attrs is not None and not overwrite:
            bad = _verify_complete(out, done_attrs)
            if bad == {}:
                log.info("%s is complete for these inputs and parameters (every chunk verified): nothing to do", out)
                return _open_prediction(out, plan, done_attrs, skipped=int(np.prod(plan.grid)))
            repaired = _reopen_for_repair(out, plan, done_attrs, bad)
        elif out.exists() and not (overwrite or replace) and _read_attrs(out) is None:
            raise OutputExistsError(f"output {out} exists but its metadata cannot be read (damaged, or not a "
                                    "prediction store); use --overwrite to replace it")
        if out.exists() and not (overwrite or replace):
            raise OutputExistsError(f"output {out} already exists for other inputs or parameters (use --overwrite)")

    if out is not None:  # stored: the tasks are tiles of whole chunks (the lazy arrays keep one chunk per task)
        # planned only for GPU workers (their GPU resource bounds the tasks in flight on a device), so that
        # the tiles, like the chunks, never depend on how many workers there are: other tiles give maps
        # equal to float rounding, not to the bit.  On CPU workers a tile is one chunk unless --tile says
        if tile is not None:
            plan = with_tile(plan, tile)
        elif device.startswith("cuda") and gpu:
            plan = plan_tiles(plan, *tile_budget(device, specs, batch_size))
        if tile is not None and any(t < h for t, h in zip(triplet(tile), plan.halo)):
            raise ParameterError(f"--tile {tile} is smaller than the halo {plan.halo}: most of each forward pass "
                                 "would be halo; give a larger tile (or none, to let it be planned)")
        log.info("prediction tiles: %s chunks each (input up to %s voxels), %.2f computed voxels per output voxel",
                 plan.tile, plan.tile_input_shape(), plan.halo_overhead())
    if reader is None:  # a dask array not backed by a file: materialize halo regions from its graph
        reader_key = None
    else:
        reader_key = "reader-" + tokenize(ident, type(reader).__name__)
    if stats is None and out is not None:
        stats = _resume_stats(partial_path(out), fingerprint)
    mean, std = stats if stats is not None else global_stats(data, progress=progress)
    common: dict[str, Any] = dict(plan=plan, mean=mean, std=std, specs=tuple(specs), device=device, amp=amp,
                  torch_threads=torch_threads, polarity=polarity, engine=engine)

    if out is None:
        name = "predict-" + tokenize(fingerprint, mean, std)
        tasks: dict[Any, Any] = {}
        deps = []
        if reader_key is not None:
            tasks[reader_key] = reader
        source: str | tuple[str, int, int, int]
        origin: tuple[int, ...] | None
        for idx in plan.indices():
            if reader_key is not None:
                source, origin = reader_key, None
            else:  # the halo region as one block of the input's own graph
                region = plan.region(idx)
                block = data[region]
                block = block.rechunk(block.shape)
                deps.append(block)
                source, origin = (block.name, 0, 0, 0), tuple(r.start for r in region)
            tasks[(name, 0, *idx)] = (functools.partial(_lazy_chunk, index=idx, origin=origin, **common), source)
        graph = _build_layer(name, tasks, deps, gpu)
        arr = da.Array(graph, name, chunks=((len(HEADS),),) + plan.chunks, dtype=np.float32,
                       meta=np.empty((0, 0, 0, 0), np.float32))
        return Prediction(mask=arr[0], center=arr[1], path=None, plan=plan, mean=mean, std=std,
                          voxel_size=voxel_size)

    if reader_key is None:  # store the input once so that every task can read its halo region
        raise ParameterError("predict(out=...) needs a tomogram file or store; write the array first "
                             "(cryodet_dask.convert or dask.array.to_zarr) and pass its path")
    return _predict_to_store(out, reader, plan, common, fingerprint, voxel_size, dtype, batch_size, gpu,
                             overwrite, progress, repaired=repaired, verified=repaired > 0)


# ------------------------------------------------------------------ stored, resumable prediction


def _key(idx: Sequence[int]) -> str:
    return ".".join(str(int(i)) for i in idx)


def _parse_key(name: str) -> tuple[int, ...] | None:
    try:
        idx = tuple(int(v) for v in name.split("."))
    except ValueError:
        return None
    return idx if len(idx) == 3 else None


def _read_markers(store: Path) -> dict[tuple[int, ...], dict[str, int] | None]:
    """Finished chunks of a partial store and the digests their markers record (``None``: no digest)."""
    done: dict[tuple[int, ...], dict[str, int] | None] = {}
    folder = store / ".done"
    if not folder.is_dir():
        return done
    for p in folder.iterdir():
        idx = _parse_key(p.name)
        if idx is None:  # a marker being written (".<key>.tmp") when the run was killed
            continue
        try:
            digests = json.loads(p.read_text() or "null")
        except (OSError, ValueError):
            digests = None
        ok = isinstance(digests, dict) and all(isinstance(digests.get(h), int) for h in HEADS)
        done[idx] = digests if ok else None
    return done


def _verify_chunks(store: Path, done: dict[tuple[int, ...], dict[str, int] | None]) -> dict[tuple[int, ...], str] | None:
    """Chunks of ``done`` that fail verification in ``store``, with the reason; ``None`` if the arrays are unusable.

    A chunk passes if, in both maps, its file exists, decodes (the ``crc32c``
    codec's checksum matches) and the decoded values have the digest its
    marker recorded when it was written.
    """
    try:
        group = zarr.open_group(str(store), mode="r")
        arrays = {h: group[h] for h in HEADS}
    except Exception:  # noqa: BLE001 - unreadable metadata: the whole store is damaged
        return None
    if not all(isinstance(a, zarr.Array) and has_checksum(a) for a in arrays.values()):
        return None
    bad: dict[tuple[int, ...], str] = {}
    for h in HEADS:
        digests = {idx: d[h] for idx, d in done.items() if d is not None}
        # every entry was checked to be a zarr.Array above
        checked = verify_array(cast("zarr.Array[Any]", arrays[h]), list(done), digests=digests, threads=True)
        for idx, reason in checked.items():
            bad.setdefault(idx, f"{h} {reason}")
    return bad


def _verify_complete(out: Path, attrs: dict[str, Any]) -> dict[tuple[int, ...], str] | None:
    """Verify every chunk of a complete store against the digests recorded in its attributes."""
    recorded = attrs.get("chunk_digests")
    if not isinstance(recorded, dict):
        return None  # written without digests (an older cryodet-dask)
    done: dict[tuple[int, ...], dict[str, int] | None] = {}
    for k, v in recorded.items():
        idx = _parse_key(k)
        if idx is not None:
            done[idx] = dict(zip(HEADS, v)) if isinstance(v, list) and len(v) == len(HEADS) else None
    bad = _verify_chunks(out, done)
    if bad is None:
        return None
    grid = _grid_of(out)
    if grid is not None:  # chunks with no recorded digest at all
        for idx in itertools.product(*(range(n) for n in grid)):
            if idx not in done:
                bad[idx] = "no recorded digest"
    return bad


def _grid_of(store: Path) -> tuple[int, ...] | None:
    try:
        # a head is an array in the stores written here; a group lacks .shape and lands in except
        arr = cast("zarr.Array[Any]", zarr.open_group(str(store), mode="r")[HEADS[0]])
        return tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks))
    except Exception:  # noqa: BLE001
        return None


def _remove_chunks(store: Path, indices: Sequence[tuple[int, ...]]) -> None:
    """Delete the chunk files of ``indices`` in both maps (they are about to be recomputed)."""
    try:
        group = zarr.open_group(str(store), mode="r")
        for h in HEADS:
            # a head is an array in the stores written here; a group lacks .metadata.encode_chunk_key
            # and lands in except
            arr = cast("zarr.Array[Any]", group[h])
            for idx in indices:
                key = arr.metadata.encode_chunk_key(tuple(idx))
                path = store / h / key
                if path.is_file():
                    path.unlink()
    except Exception:  # noqa: BLE001 - they are overwritten anyway
        pass


def _describe(bad: dict[tuple[int, ...], str]) -> str:
    first = next(iter(sorted(bad.items())))
    return f"{len(bad)} chunk(s) failed verification (first: chunk {_key(first[0])}, {first[1]})"


def _reopen_for_repair(out: Path, plan: ChunkPlan, attrs: dict[str, Any],
                       bad: dict[tuple[int, ...], str] | None) -> int:
    """Turn a complete store with damaged chunks back into a resumable one; return how many chunks to recompute."""
    tmp = partial_path(out)
    if tmp.exists():
        shutil.rmtree(tmp)  # stale: the complete store for these parameters supersedes it
    total = int(np.prod(plan.grid))
    if bad is None:
        reason = ("written without chunk digests (by an older cryodet-dask)" if "chunk_digests" not in attrs
                  else "its arrays cannot be read")
        log.warning("%s is %s: predicting all %d chunks again", out, reason, total)
        shutil.rmtree(out)
        return total
    log.warning("%s: %s: recomputing them", out, _describe(bad))
    os.replace(out, tmp)
    _remove_chunks(tmp, list(bad))
    (tmp / ".done").mkdir(exist_ok=True)
    for k, v in attrs.get("chunk_digests", {}).items():
        idx = _parse_key(k)
        if idx is not None and idx not in bad:
            (tmp / ".done" / k).write_text(json.dumps(dict(zip(HEADS, v))))
    group = zarr.open_group(str(tmp), mode="r+")
    new = {k: v for k, v in attrs.items() if k != "chunk_digests"}
    new["complete"] = False
    group.attrs["cryodet"] = new
    return len(bad)


def _read_attrs(store: Path) -> dict[str, Any] | None:
    try:
        # the "cryodet" attribute is a JSON object; anything else fails in dict() and lands in except
        return dict(cast(dict[str, Any], zarr.open_group(str(store), mode="r").attrs.get("cryodet", {})))
    except Exception:
        return None


def _existing_complete(out: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """Attributes of ``out`` if it is a complete prediction for this fingerprint."""
    if not out.exists():
        return None
    attrs = _read_attrs(out)
    if attrs and attrs.get("fingerprint") == fingerprint and attrs.get("complete"):
        return attrs
    return None


def _resume_stats(partial: Path, fingerprint: dict[str, Any]) -> tuple[float, float] | None:
    attrs = _read_attrs(partial) if partial.exists() else None
    if attrs and attrs.get("fingerprint") == fingerprint:
        return float(attrs["mean"]), float(attrs["std"])
    return None


def _open_prediction(path: Path, plan: ChunkPlan, attrs: dict[str, Any], computed: int = 0,
                     skipped: int = 0, repaired: int = 0) -> Prediction:
    maps = []
    for h in HEADS:  # reads raise StoreIntegrityError for a missing or damaged chunk, never fill values
        reader = CheckedArray(path / h, require_all_chunks=True)
        name = f"prediction-{h}-" + tokenize(str(path.resolve()), attrs.get("fingerprint"), attrs.get("mean"))
        maps.append(da.from_array(reader, chunks=reader.chunks, name=name, asarray=True, fancy=False,
                                  meta=np.empty((0, 0, 0), reader.dtype)))
    vs = attrs.get("voxel_size")
    public = {k: v for k, v in attrs.items() if k != "chunk_digests"}
    return Prediction(mask=maps[0], center=maps[1], path=path, plan=plan, mean=float(attrs["mean"]),
                      std=float(attrs["std"]), voxel_size=float(vs) if vs else None, chunks_computed=computed,
                      chunks_skipped=skipped, chunks_repaired=repaired, attrs=public)


def _predict_to_store(out: Path, reader: Any, plan: ChunkPlan, common: dict[str, Any],
                      fingerprint: dict[str, Any], voxel_size: float | None, dtype: str, batch_size: int,
                      gpu: bool, overwrite: bool, progress: bool, *, repaired: int = 0,
                      verified: bool = False) -> Prediction:
    tmp = partial_path(out)
    attrs = _read_attrs(tmp) if tmp.exists() else None
    done: dict[tuple[int, ...], dict[str, int] | None] = {}
    if attrs is not None and attrs.get("fingerprint") == fingerprint:
        done = _read_markers(tmp)
        if done and not verified:  # every finished chunk is checked before it is reused
            bad = _verify_chunks(tmp, done)
            if bad is None:
                log.warning("%s: the interrupted prediction's arrays cannot be read: starting it again", out)
                repaired += len(done)
                attrs, done = None, {}
            elif bad:
                log.warning("%s: %s in the interrupted prediction: recomputing them", out, _describe(bad))
                _remove_chunks(tmp, list(bad))
                for idx in bad:
                    (tmp / ".done" / _key(idx)).unlink(missing_ok=True)
                    done.pop(idx, None)
                repaired += len(bad)
    elif tmp.exists() and attrs is None and (tmp / ".done").is_dir() and any((tmp / ".done").iterdir()):
        log.warning("%s: the interrupted prediction's metadata cannot be read: starting it again", out)
        repaired += sum(1 for p in (tmp / ".done").iterdir() if _parse_key(p.name) is not None)
    if attrs is None or attrs.get("fingerprint") != fingerprint:
        if tmp.exists():
            shutil.rmtree(tmp)  # stale, damaged, or from other inputs/parameters
        group = zarr.open_group(str(tmp), mode="w")
        for h in HEADS:
            group.create_array(h, shape=plan.shape, chunks=plan.chunk_shape, dtype=dtype, fill_value=0,
                               compressors=stored_codecs(MAPS_CODEC, np.dtype(dtype)) or None,
                               dimension_names=("z", "y", "x"), config=WRITE_CONFIG)
        attrs = {
            "fingerprint": fingerprint,
            "mean": common["mean"],
            "std": common["std"],
            "voxel_size": voxel_size,
            "halo": list(plan.halo),
            "chunks": list(plan.chunk_shape),
            "pool_factor": plan.pool_factor,
            "models": [{"path": s.path, "heads": list(s.heads), "receptive_field": s.receptive_field}
                       for s in common["specs"]],
            "integrity": dict(INTEGRITY_ATTRS),
            "complete": False,
        }
        group.attrs["cryodet"] = attrs
        (tmp / ".done").mkdir()
        done = {}
    pending = [idx for idx in plan.indices() if idx not in done]
    skipped = len(done)
    if skipped:
        log.info("resuming %s: %d of %d chunks already done, skipped", out, skipped, skipped + len(pending))
    name = "predict-store-" + tokenize(fingerprint, str(out), len(pending))
    reader_key = "reader-" + tokenize(fingerprint["input"])
    tasks: dict[Any, Any] = {reader_key: reader}
    by_tile: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
    for idx in pending:  # a tile computes once for all its chunks still to do
        by_tile.setdefault(plan.tile_of(idx), []).append(idx)
    work = [(t, tuple(members)) for t, members in by_tile.items()]
    batches = [work[i : i + batch_size] for i in range(0, len(work), batch_size)]
    for b, batch in enumerate(batches):
        tasks[(name, b)] = (functools.partial(_store_tiles, tiles=tuple(batch), store=str(tmp), **common),
                            reader_key)
    if batches:
        # submitted as the annotated graph itself: a dask array built on it would lose the layer's
        # GPU resource annotation when computed (dask 2026.8), and the tasks would land on CPU-only workers
        graph = _build_layer(name, tasks, [], gpu)
        tile_core = tuple(k * c for k, c in zip(plan.tile, plan.chunk_shape))
        compute_keys(graph, [(name, b) for b in range(len(batches))], progress=progress, unit="tasks",
                     desc=f"predicting {len(pending)} chunks {plan.chunk_shape} in {len(work)} tiles of up to "
                     f"{tile_core} with halo {plan.halo}")
    # the markers' digests move into the attributes, where the next reuse checks every chunk against them
    markers = _read_markers(tmp)
    missing = [idx for idx in plan.indices() if markers.get(idx) is None]
    if missing:  # a task finished without marking its chunk: never call such a store complete
        raise RuntimeError(f"{out}: chunks {missing[:3]} have no marker after prediction")
    group = zarr.open_group(str(tmp), mode="r+")
    attrs = dict(cast(dict[str, Any], group.attrs["cryodet"]))  # the JSON object this run wrote
    attrs["complete"] = True
    attrs["chunk_digests"] = {_key(idx): [markers[idx][h] for h in HEADS]  # type: ignore[index]
                              for idx in sorted(markers)}
    group.attrs["cryodet"] = attrs
    shutil.rmtree(tmp / ".done")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return _open_prediction(out, plan, attrs, computed=len(pending), skipped=skipped, repaired=repaired)
