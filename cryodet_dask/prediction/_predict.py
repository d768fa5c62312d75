"""``predict``: the networks applied chunk by chunk, with halos, on the active Dask scheduler."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .._progress import compute_keys, current_client
from .._shapes import triplet
from ..errors import OutputExistsError, ParameterError
from ..postprocessing import quantize_species
from ..io import CheckedArray, chunk_digest, open_for_write, partial_path
from ._engine import ModelSpec, check_engine, forward_block, normalize_block, resolve_device, resolve_engine
from ._input import global_stats, read_source
from ._models import HEADS, head_order, resolve_models, species_names, store_maps
from ._store import (existing_complete, maps_of, open_partial, read_attrs, reopen_for_repair, resume_stats, seal_store,
                     store_fingerprint, verify_complete, write_marker)
from ._tiling import ChunkPlan, model_halo, plan_chunks, plan_tiles, tile_budget, with_tile

__all__ = ["Prediction", "predict", "global_stats"]

log = logging.getLogger("cryodet_dask")


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
    species : dask.array.Array or None
        A multi-species network's species probabilities quantized to uint8
        (:func:`~cryodet_dask.postprocessing.quantize_species`), (K, z, y, x);
        None for a species-agnostic network.
    species_names : tuple of str
        The K species, in the network's order.
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
    species: da.Array | None = None
    species_names: tuple[str, ...] = ()


# ------------------------------------------------------------------ tasks


def _predict_tiles(reader: Any, plan: ChunkPlan, tiles: Sequence[tuple[int, int, int]], mean: float,
                   std: float, specs: Sequence[ModelSpec], device: str, amp: bool,
                   torch_threads: int | None, polarity: str = "as-is", engine: str = "torch",
                   tta: str = "none") -> list[np.ndarray]:
    """Read, normalize and predict the tiles ``tiles``; return their cores (n_heads, *tile core)."""
    regions = [plan.tile_region(t) for t in tiles]
    blocks = [normalize_block(np.asarray(reader[r]), mean, std) for r in regions]
    crops: list[tuple[slice, ...] | None] = [
        tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(plan.tile_core(t), region))
        for t, region in zip(tiles, regions)]
    return forward_block(specs, blocks, device=device, amp=amp, torch_threads=torch_threads, polarity=polarity,
                         crops=crops, engine=engine, tta=tta)



class _RegionBlock:
    """A block already read (core plus halo), indexed in global coordinates."""

    def __init__(self, block: np.ndarray, origin: Sequence[int]):
        self.block = block
        self.origin = tuple(origin)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.block[tuple(slice(k.start - o, k.stop - o) for k, o in zip(key, self.origin))]


def _lazy_chunk(source: Any, *, index: tuple[int, int, int], origin: Sequence[int] | None, plan: ChunkPlan,
                mean: float, std: float, specs: Sequence[ModelSpec], device: str, amp: bool,
                torch_threads: int | None, polarity: str = "as-is", engine: str = "torch",
                tta: str = "none") -> np.ndarray:
    reader = source if origin is None else _RegionBlock(source, origin)
    (core,) = _predict_tiles(reader, plan, [index], mean, std, specs, device, amp, torch_threads, polarity, engine,
                             tta)
    return core[head_order(specs)]


def _store_tiles(reader: Any, *, tiles: Sequence[tuple[tuple[int, int, int], tuple[tuple[int, int, int], ...]]],
                 plan: ChunkPlan, mean: float, std: float, specs: Sequence[ModelSpec], device: str, amp: bool,
                 torch_threads: int | None, store: str, polarity: str = "as-is", engine: str = "torch",
                 tta: str = "none") -> np.ndarray:
    """Predict tiles, write the chunks listed with each to the Zarr store, then mark each chunk done;
    return how many chunks."""
    outs = _predict_tiles(reader, plan, [t for t, _ in tiles], mean, std, specs, device, amp, torch_threads,
                          polarity, engine, tta)
    order = head_order(specs)
    maps = store_maps(specs)
    # every chunk is written, even all zeros: a missing chunk file is damage, never zeros
    arrays = {h: open_for_write(os.path.join(store, h)) for h in maps}
    n = 0
    for (tile, members), out in zip(tiles, outs):
        origin = [c.start for c in plan.tile_core(tile)]
        for idx in members:
            sl = plan.core(idx)
            core = out[(slice(None), *(slice(c.start - o, c.stop - o) for c, o in zip(sl, origin)))]
            digests = {}
            for k, h in enumerate(maps):
                values = core[order[k]]
                values = np.ascontiguousarray(quantize_species(values) if h not in HEADS
                                              else values.astype(arrays[h].dtype, copy=False))
                arrays[h][sl] = values
                digests[h] = chunk_digest(values)
            # the marker, only after both maps are written, records what they hold (checked before any reuse)
            write_marker(store, idx, digests)
            n += 1
    return np.array([n], dtype=np.int64)


# ------------------------------------------------------------------ graph


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
    tta: str = "none",
    engine: str = "auto",
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
    tta : {"none", "flips"}
        Test-time augmentation (:data:`cryodet_dask.models.TTAS`): ``"flips"``: each map is the mean
        over four mirror images of every tile, mirrored back (four passes; with ``polarity="both"``
        eight).  The maps are the same for any chunking, to float rounding.
    engine : {"auto", "torch", "openvino"}
        ``"auto"`` (default): ``"openvino"`` when OpenVINO is installed and the networks run on the CPU,
        else ``"torch"`` (:func:`~cryodet_dask.prediction.resolve_engine`; the store's fingerprint and
        :attr:`Prediction.attrs` record the engine that ran).  ``"torch"``: PyTorch on ``device``.
        ``"openvino"``: the networks converted to OpenVINO
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
        Normalization statistics; default: those the conversion recorded for this very content
        (:func:`cryodet_dask.io.convert` computes them as it writes), else computed over the whole
        tomogram in one pass.
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
    from ..models import check_polarity, check_tta

    check_polarity(polarity)
    check_tta(tta)
    check_engine(engine, device)
    specs = resolve_models(model)
    pool = max(s.pool_factor for s in specs)
    reader, data, voxel_size, ident, recorded = read_source(volume, chunks)
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
    engine = resolve_engine(engine, device)  # "auto" is never recorded: the fingerprint names what ran
    gpu = _gpu_workers_present()

    fingerprint = store_fingerprint(ident, plan, specs, dtype, polarity, tta, engine,
                                    bf16=bool(amp and device.startswith("cuda")))
    repaired = 0
    if out is not None:
        out = Path(out).absolute()  # tasks write here: workers may run in another folder
        done_attrs = existing_complete(out, fingerprint)
        if done_attrs is not None and not overwrite:
            bad = verify_complete(out, done_attrs)
            if bad == {}:
                log.info("%s is complete for these inputs and parameters (every chunk verified): nothing to do", out)
                return _open_prediction(out, plan, done_attrs, skipped=int(np.prod(plan.grid)))
            repaired = reopen_for_repair(out, plan, done_attrs, bad)
        elif out.exists() and not (overwrite or replace) and read_attrs(out) is None:
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
        stats = resume_stats(partial_path(out), fingerprint)
    if stats is None:  # recorded by the conversion, for this content: no second read of the tomogram
        stats = recorded
    mean, std = stats if stats is not None else global_stats(data, progress=progress)
    common: dict[str, Any] = dict(plan=plan, mean=mean, std=std, specs=tuple(specs), device=device, amp=amp,
                  torch_threads=torch_threads, polarity=polarity, tta=tta, engine=engine)

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
        n_maps = len(store_maps(specs))
        arr = da.Array(graph, name, chunks=((n_maps,),) + plan.chunks, dtype=np.float32,
                       meta=np.empty((0, 0, 0, 0), np.float32))
        names = species_names(specs)
        species = arr[len(HEADS):].map_blocks(quantize_species, dtype=np.uint8) if names else None
        return Prediction(mask=arr[0], center=arr[1], path=None, plan=plan, mean=mean, std=std,
                          voxel_size=voxel_size, species=species, species_names=names)

    if reader_key is None:  # store the input once so that every task can read its halo region
        raise ParameterError("predict(out=...) needs a tomogram file or store; write the array first "
                             "(cryodet_dask.convert or dask.array.to_zarr) and pass its path")
    return _predict_to_store(out, reader, plan, common, fingerprint, voxel_size, dtype, batch_size, gpu,
                             overwrite, progress, repaired=repaired, verified=repaired > 0)


def _open_prediction(path: Path, plan: ChunkPlan, attrs: dict[str, Any], computed: int = 0,
                     skipped: int = 0, repaired: int = 0) -> Prediction:
    maps = []
    for h in maps_of(attrs):  # reads raise StoreIntegrityError for a missing or damaged chunk, never fill values
        reader = CheckedArray(path / h, require_all_chunks=True)
        name = f"prediction-{h}-" + tokenize(str(path.resolve()), attrs.get("fingerprint"), attrs.get("mean"))
        maps.append(da.from_array(reader, chunks=reader.chunks, name=name, asarray=True, fancy=False,
                                  meta=np.empty((0, 0, 0), reader.dtype)))
    vs = attrs.get("voxel_size")
    public = {k: v for k, v in attrs.items() if k != "chunk_digests"}
    names = tuple(str(n) for n in attrs.get("species") or ())
    species = da.stack(maps[len(HEADS):]) if names else None
    return Prediction(mask=maps[0], center=maps[1], path=path, plan=plan, mean=float(attrs["mean"]),
                      std=float(attrs["std"]), voxel_size=float(vs) if vs else None, chunks_computed=computed,
                      chunks_skipped=skipped, chunks_repaired=repaired, attrs=public, species=species,
                      species_names=names)


def _predict_to_store(out: Path, reader: Any, plan: ChunkPlan, common: dict[str, Any],
                      fingerprint: dict[str, Any], voxel_size: float | None, dtype: str, batch_size: int,
                      gpu: bool, overwrite: bool, progress: bool, *, repaired: int = 0,
                      verified: bool = False) -> Prediction:
    tmp, done, repaired = open_partial(out, plan, fingerprint, common["mean"], common["std"], common["specs"],
                                       voxel_size, dtype, repaired=repaired, verified=verified)
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
    attrs = seal_store(out, tmp, plan)
    return _open_prediction(out, plan, attrs, computed=len(pending), skipped=skipped, repaired=repaired)
