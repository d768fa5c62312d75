"""What a detection run needs before it starts: chunks no smaller than the inference halo, Dask workers
with the memory one prediction task needs, and the disk space for what the run writes.

The command line refuses a run that would not fit before any work; :func:`~cryodet_dask.detect` checks
the workers it runs on and the space in its output folder.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._shapes import triplet
from ..errors import DiskSpaceError, ParameterError
from .params import DetectParams

__all__ = ["inference_halo", "check_chunks", "prediction_memory", "memory_refusal", "check_worker_memory",
           "estimate_space", "check_disk_space", "gib"]

log = logging.getLogger("cryodet_dask")


def inference_halo(p: DetectParams) -> tuple[int, ...]:
    """The halo (z, y, x) prediction will use: ``p.halo``, or the networks' receptive field extent
    rounded up to the pooling factor, exactly as :func:`~cryodet_dask.prediction.predict` derives it."""
    from ..prediction import model_halo, resolve_models

    specs = resolve_models(p.model_arg())
    return model_halo([s.halo for s in specs], [s.pool_factor for s in specs], p.halo)


def check_chunks(p: DetectParams) -> tuple[int, ...]:
    """Refuse a chunk smaller than the inference halo; return the halo (z, y, x).

    Each prediction task reads its chunk plus the halo on both sides, so a
    chunk ``c`` with halo ``h`` costs ``((c + 2h) / c)^3`` times the compute of
    the chunk alone: 27x at ``c = h``, 125x at ``c = h / 2``.  The command line
    therefore refuses ``c < h`` on any axis (an axis shorter than the chunk is
    exempt, it has a single chunk anyway); the Python API only logs it.
    """
    halo3 = inference_halo(p)
    chunks3 = triplet(p.chunks)
    small = [(c, h) for c, h in zip(chunks3, halo3) if c < h]
    if small:
        raise ParameterError(
            f"-ps/--chunks {','.join(map(str, chunks3))} is smaller than the inference halo "
            f"{','.join(map(str, halo3))} voxels (each chunk would read {((small[0][0] + 2 * small[0][1]) / small[0][0]) ** 3:.0f}x "
            f"its own size); use chunks of at least {max(halo3)} voxels (128 or more is efficient)")
    if p.tile is not None and any(t < h for t, h in zip(triplet(p.tile), halo3)):
        raise ParameterError(f"--tile {','.join(map(str, p.tile))} is smaller than the inference halo "
                             f"{','.join(map(str, halo3))} voxels: most of each forward pass would be halo; give a "
                             "larger tile (or none, to let it be planned)")
    return halo3


def prediction_memory(p: DetectParams, shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """Memory (bytes) a Dask worker needs for one CPU prediction task of this run, and the tile read
    (one chunk's, the smallest the planner uses, or ``--tile``'s).

    :func:`~cryodet_dask.prediction._tiling.task_memory_bytes` for the tile (chunk plus halo on each
    side, clipped to the volume ``shape``), divided by the ``distributed.worker.memory.terminate``
    fraction of the limit at which a worker's nanny kills it.
    """
    import dask

    from ..prediction import resolve_models, task_memory_bytes, task_tile

    specs = resolve_models(p.model_arg())
    core: tuple[int, ...] = triplet(p.chunks)
    if p.tile is not None:  # an explicit --tile: whole chunks (the planned tiles fit the memory by construction)
        core = tuple(-(-int(t) // int(c)) * int(c) for t, c in zip(triplet(p.tile), core))
    tile = task_tile(core, inference_halo(p), shape, max(s.pool_factor for s in specs))
    usable = float(dask.config.get("distributed.worker.memory.terminate", 0.95) or 1.0)
    return int(task_memory_bytes(tile, max(s.width for s in specs), p.batch_size) / usable), tile


def memory_refusal(p: DetectParams, shape: Sequence[int], limit: int) -> str | None:
    """The one-line reason a worker memory ``limit`` (bytes) is too small for this run, or ``None``."""
    need, tile = prediction_memory(p, shape)
    if limit >= need:
        return None
    smaller = None
    halo = inference_halo(p)
    for c in (96, 64, 48, 32):
        if min(p.chunks) > c >= max(halo) and prediction_memory(dataclasses.replace(p, chunks=(c,)), shape)[0] <= limit:
            smaller = c
            break
    hint = f" or lower -ps/--chunks (-ps {smaller} fits)" if smaller else ""
    return (f"a Dask worker may use {gib(limit)} (--memory-limit) but one prediction task needs about "
            f"{gib(need)} (a {'x'.join(map(str, tile))} tile: chunk plus halo); raise --memory-limit{hint}")


def check_worker_memory(client: Any, p: DetectParams, shape: Sequence[int]) -> int | None:
    """Refuse, before any work, Dask workers whose memory limit is below what one prediction task needs
    (:func:`prediction_memory`).  Returns the need (bytes), or ``None`` when there is nothing to check
    (no client, GPU inference, workers without a limit or not started yet).
    """
    if client is None or str(p.device).startswith("cuda"):
        return None
    workers = list(client.scheduler_info(n_workers=-1).get("workers", {}).values())
    if any((w.get("resources") or {}).get("GPU") for w in workers):
        return None
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    if not limits or min(limits) <= 0:
        return None
    reason = memory_refusal(p, shape, max(limits))
    if reason:
        raise ParameterError(reason)
    need = prediction_memory(p, shape)[0]
    if min(limits) < need:
        log.warning("some Dask workers have less memory (%s) than one prediction task needs (about %s); "
                    "they may be restarted", gib(min(limits)), gib(need))
    return need


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB (MiB below one GiB), for messages."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def estimate_space(shape: Sequence[int], itemsize: int, formats: Sequence[str], *, convert: bool = True,
                   predict: bool = True, factor: float | None = None) -> dict[str, int]:
    """Upper bound of the bytes a detection run writes, by output (uncompressed sizes).

    The converted tomogram takes ``voxels x itemsize``, the prediction store
    two float32 maps, the per-chunk instance pieces (scratch) and the Zarr
    label image 4 bytes per voxel each, the MRC label image 2.  Compression
    makes the real sizes smaller; the estimate is what a run may need at most.  With a rescaling
    ``factor`` (``--rescale``), the rescaled tomogram (float32) and the prediction on its grid.
    """
    n = int(np.prod([int(v) for v in shape]))
    need = {}
    if convert:
        need["converted tomogram"] = n * int(itemsize)
    if predict:
        need["prediction"] = 2 * 4 * n
    if {"zarr", "mrc"} & set(formats):
        need["label pieces"] = 4 * n
    if "zarr" in formats:
        need["labels zarr"] = 4 * n
    if "mrc" in formats:
        need["labels mrc"] = 2 * n
    need["particle lists"] = 1 << 20
    if factor is not None:
        need["rescaled tomogram"] = int(4 * np.prod(shape) * factor**3)
        need["prediction"] = int(need.get("prediction", 0) * factor**3)
    return need


def check_disk_space(out: Path, need: dict[str, int]) -> None:
    """Refuse a run whose outputs (``need``: bytes by output, :func:`estimate_space`) do not fit in the free
    space of ``out``'s file system (``out`` need not exist yet)."""
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if sum(need.values()) > free:
        raise DiskSpaceError(
            f"not enough space in {out}: the run needs up to {gib(sum(need.values()))} "
            f"({', '.join(f'{k} {gib(v)}' for k, v in need.items())}), {gib(free)} free")
