"""The chunk grid of prediction: cores, halos, and the alignment to the U-Net's pooling grid.

Each output chunk (its *core*) is computed from the input region
``core ± halo`` clipped to the volume.  For the result to be independent of
the chunking, three things must hold (see ``docs``/README, "Chunk invariance"):

1. the halo covers the network's receptive field, so voxels of the core never
   see the block's artificial border;
2. every block starts at a multiple of the pooling factor ``P`` in global
   coordinates (chunk edges and halos are multiples of ``P``), so the
   max-pooling windows fall on the same global grid in every block;
3. a block that reaches the end of the volume is zero-padded up to the next
   multiple of ``P``, exactly as the whole-volume reference pads the volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._shapes import triplet

if TYPE_CHECKING:
    from ._engine import ModelSpec

__all__ = ["ChunkPlan", "default_halo", "plan_chunks", "plan_tiles", "with_tile", "task_memory_bytes", "model_halo",
           "task_tile", "tile_budget", "RUNTIME_BYTES", "GPU_CONTEXT_BYTES",
           "ACTIVATION_BYTES_PER_VOXEL", "ACTIVATION_BYTES_PER_VOXEL_CHANNEL"]

#: Resident memory of a Dask worker process once PyTorch, the package and a network are loaded
#: (measured: 323 MiB in a LocalCluster worker after one prediction task, torch 2.13 CPU; rounded up).
RUNTIME_BYTES = 352 * 2**20
#: Peak memory of one float32 CPU forward pass per input voxel: a fixed part plus a part per feature
#: channel at full resolution.  Measured with ``ru_maxrss`` around one forward pass of two-head
#: networks on a 144-voxel cube: 321, 448 and 796 bytes per voxel at 8, 16 and 32 channels (and
#: 438-518 for the shipped 16-channel network on cubes of 96-216 voxels); this fit lies above all.
ACTIVATION_BYTES_PER_VOXEL = 170
#: GPU memory a process holds before its first forward pass (CUDA context and cuDNN workspace; rounded up).
#: The activations on a GPU follow the CPU estimate closely: the shipped network's fp32 forward peaked at
#: 466 bytes per input voxel on an H200 (17.66 GiB for a 344^3 tile), below the 522 the CPU fit gives.
GPU_CONTEXT_BYTES = 2**30
ACTIVATION_BYTES_PER_VOXEL_CHANNEL = 22


def task_memory_bytes(tile_shape: Sequence[int], width: int, batch_size: int = 1) -> int:
    """Estimated peak memory (bytes) of one CPU prediction task on tiles of ``tile_shape`` (core + halo).

    ``width`` is the network's channel count at full resolution; the estimate is the worker's
    runtime plus the forward pass of ``batch_size`` tiles (:data:`ACTIVATION_BYTES_PER_VOXEL` +
    ``width`` x :data:`ACTIVATION_BYTES_PER_VOXEL_CHANNEL` per voxel).
    """
    voxels = math.prod(int(n) for n in tile_shape) * max(int(batch_size), 1)
    return int(RUNTIME_BYTES + voxels * (ACTIVATION_BYTES_PER_VOXEL + ACTIVATION_BYTES_PER_VOXEL_CHANNEL * int(width)))



def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def default_halo(extent: int, pool_factor: int) -> int:
    """Smallest halo, a multiple of ``pool_factor``, covering the receptive field's one-sided ``extent``.

    ``extent`` is how far (voxels) an output voxel's inputs reach on the far
    side (:attr:`UNetConfig.halo`; the U-Net's field is not symmetric).
    """
    return _round_up(max(int(extent), 0), pool_factor)


@dataclass(frozen=True)
class ChunkPlan:
    """The prediction chunk grid of a volume.

    Attributes
    ----------
    shape : tuple of int
        Volume shape (z, y, x).
    chunk_shape : tuple of int
        Core chunk shape, a multiple of ``pool_factor`` (except where clipped
        to the volume).
    halo : tuple of int
        Halo on each side, per axis, a multiple of ``pool_factor``.
    pool_factor : int
    """

    shape: tuple[int, int, int]
    chunk_shape: tuple[int, int, int]
    halo: tuple[int, int, int]
    pool_factor: int
    #: chunks per prediction tile along each axis: one forward pass computes a tile's core (a box of
    #: chunks) from the core plus the halo, and the task writes every chunk of it (see :func:`plan_tiles`)
    tile: tuple[int, int, int] = (1, 1, 1)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Number of chunks along each axis."""
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunk_shape))  # type: ignore[return-value]

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Dask-style chunks of the output."""
        out = []
        for s, c in zip(self.shape, self.chunk_shape):
            n = math.ceil(s / c)
            out.append(tuple(min(c, s - i * c) for i in range(n)))
        return tuple(out)

    def indices(self) -> Iterator[tuple[int, int, int]]:
        """Chunk indices (i, j, k) in raster order."""
        return itertools.product(*(range(n) for n in self.grid))  # type: ignore[return-value]

    def core(self, index: Sequence[int]) -> tuple[slice, slice, slice]:
        """Global slices of the output chunk ``index``."""
        return tuple(  # type: ignore[return-value]
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, self.chunk_shape, self.shape)
        )

    def region(self, index: Sequence[int]) -> tuple[slice, slice, slice]:
        """Global slices of the input block (core plus halo, clipped to the volume)."""
        return tuple(  # type: ignore[return-value]
            slice(max(c.start - h, 0), min(c.stop + h, s))
            for c, h, s in zip(self.core(index), self.halo, self.shape)
        )

    # ---- tiles: boxes of ``tile`` chunks, the unit of one forward pass
    @property
    def tile_grid(self) -> tuple[int, int, int]:
        """Number of tiles along each axis."""
        return tuple(math.ceil(g / t) for g, t in zip(self.grid, self.tile))  # type: ignore[return-value]

    def tiles(self) -> Iterator[tuple[int, int, int]]:
        """Tile indices in raster order."""
        return itertools.product(*(range(n) for n in self.tile_grid))  # type: ignore[return-value]

    def tile_of(self, index: Sequence[int]) -> tuple[int, int, int]:
        """The tile holding chunk ``index``."""
        return tuple(i // t for i, t in zip(index, self.tile))  # type: ignore[return-value]

    def tile_members(self, tile: Sequence[int]) -> list[tuple[int, int, int]]:
        """The chunks of ``tile``, in raster order."""
        ranges = [range(i * t, min((i + 1) * t, g)) for i, t, g in zip(tile, self.tile, self.grid)]
        return list(itertools.product(*ranges))  # type: ignore[arg-type]

    def tile_core(self, tile: Sequence[int]) -> tuple[slice, slice, slice]:
        """Global slices of the output of ``tile``: the union of its chunks' cores."""
        return tuple(  # type: ignore[return-value]
            slice(i * t * c, min((i + 1) * t * c, s)) for i, t, c, s in zip(tile, self.tile, self.chunk_shape, self.shape)
        )

    def tile_region(self, tile: Sequence[int]) -> tuple[slice, slice, slice]:
        """Global slices of the input of ``tile`` (its core plus the halo, clipped to the volume).

        Chunk edges and halos are multiples of the pooling factor, so a tile starts on the global
        pooling grid exactly as a chunk does: the chunk-invariance argument holds for tiles unchanged.
        """
        return tuple(  # type: ignore[return-value]
            slice(max(c.start - h, 0), min(c.stop + h, s))
            for c, h, s in zip(self.tile_core(tile), self.halo, self.shape)
        )

    def tile_input_shape(self) -> tuple[int, int, int]:
        """The largest tile input (core plus halo on each side, within the volume padded to the pooling factor)."""
        t = tuple(min(k * c + 2 * h, _round_up(n, self.pool_factor))
                  for k, c, h, n in zip(self.tile, self.chunk_shape, self.halo, self.shape))
        return (t[0], t[1], t[2])

    def computed_voxels(self) -> int:
        """Voxels the network processes (tile inputs padded to the pooling grid), over all tiles."""
        total = 0
        for tile in self.tiles():
            n = 1
            for r in self.tile_region(tile):
                n *= _round_up(r.stop - r.start, self.pool_factor)
            total += n
        return total

    def halo_overhead(self) -> float:
        """Computed voxels per output voxel (1.0 means no halo cost)."""
        return self.computed_voxels() / math.prod(self.shape)


def plan_chunks(
    shape: Sequence[int],
    chunk_shape: int | Sequence[int],
    halo: int | Sequence[int],
    pool_factor: int,
) -> ChunkPlan:
    """Chunk grid with chunks and halos rounded up to multiples of ``pool_factor``."""
    shape_t = tuple(int(s) for s in shape)
    cs = (chunk_shape,) * 3 if isinstance(chunk_shape, int) else tuple(chunk_shape)
    hs = (halo,) * 3 if isinstance(halo, int) else tuple(halo)
    if len(cs) == 1:
        cs = cs * 3
    if len(hs) == 1:
        hs = hs * 3
    cs = tuple(min(_round_up(int(c), pool_factor), _round_up(s, pool_factor)) for c, s in zip(cs, shape_t))
    hs = tuple(_round_up(int(h), pool_factor) for h in hs)
    return ChunkPlan(shape=shape_t, chunk_shape=cs, halo=hs, pool_factor=pool_factor)  # type: ignore[arg-type]


def model_halo(extents: Sequence[int], pool_factors: Sequence[int], halo: int | Sequence[int] | None = None
               ) -> tuple[int, int, int]:
    """The halo (z, y, x) prediction uses for networks with these receptive-field ``extents`` and pooling
    factors: ``halo`` when given, else the largest extent rounded up to the largest pooling factor.

    The one derivation: :func:`~cryodet_dask.prediction.predict` and ``detect``'s checks both call it.
    """
    if halo is None:
        halo = default_halo(max(int(e) for e in extents), max(int(p) for p in pool_factors))
    z, y, x = triplet(halo)
    return (int(z), int(y), int(x))


def task_tile(chunks: Sequence[int], halo: Sequence[int], shape: Sequence[int], pool_factor: int
              ) -> tuple[int, int, int]:
    """The input block a prediction task reads: its chunk plus the halo on each side, no larger than the
    volume padded to the pooling factor."""
    t = tuple(min(int(c) + 2 * int(h), _round_up(int(n), pool_factor)) for c, h, n in zip(chunks, halo, shape))
    return (t[0], t[1], t[2])


def with_tile(plan: ChunkPlan, tile: int | Sequence[int]) -> ChunkPlan:
    """``plan`` with prediction tiles of at least ``tile`` voxels (core, per axis), rounded up to whole
    storage chunks and clipped to the volume."""
    from dataclasses import replace

    from ..errors import ParameterError

    want = triplet(tile)
    if any(int(t) < 1 for t in want):
        raise ParameterError(f"--tile must be a positive number of voxels, got {tile}")
    k = tuple(min(max(1, math.ceil(int(t) / c)), g) for t, c, g in zip(want, plan.chunk_shape, plan.grid))
    return replace(plan, tile=(k[0], k[1], k[2]))


def plan_tiles(plan: ChunkPlan, budget: int, bytes_per_voxel: int, fixed: int = 0, slots: int = 1) -> ChunkPlan:
    """The tiles (boxes of storage chunks) that compute the fewest voxels within a memory budget.

    Every candidate tile input must satisfy ``fixed + bytes_per_voxel * voxels <= budget``, and there
    must be at least ``slots`` tiles (the tasks that run at once: every worker thread, or every GPU
    task in flight) where the volume has that many chunks.  Among those, the tiles with the fewest
    computed voxels (halo included) win, then the fewest tiles.  Tiles through the whole depth cost
    no z halo, so thin tomograms get them when memory allows.  One chunk per tile when even that
    does not fit (the memory checks before the run say so).
    """
    from dataclasses import replace

    gz, gy, gx = plan.grid
    n_chunks = gz * gy * gx
    need_tiles = min(max(int(slots), 1), n_chunks)
    best: tuple[tuple[int, int], ChunkPlan] | None = None
    for kz in range(1, gz + 1):
        for ky in range(1, gy + 1):
            for kx in {min(ky, gx), *([gx] if ky == gy else [])}:
                cand = replace(plan, tile=(kz, ky, kx))
                if math.prod(cand.tile_grid) < need_tiles:
                    continue
                if fixed + bytes_per_voxel * math.prod(cand.tile_input_shape()) > budget and (kz, ky, kx) != (1, 1, 1):
                    continue
                key = (cand.computed_voxels(), math.prod(cand.tile_grid))
                if best is None or key < best[0]:
                    best = (key, cand)
    return best[1] if best is not None else replace(plan, tile=(1, 1, 1))


def tile_budget(device: str, specs: Sequence[ModelSpec], batch_size: int = 1, in_flight: int | None = None
                ) -> tuple[int, int, int, int]:
    """(memory budget of one task, bytes per tile voxel, fixed bytes, tasks at once) for :func:`plan_tiles`
    on a GPU: the device's memory shared by the prediction tasks in flight on it (``in_flight``: the
    largest ``GPU`` resource of the cluster's workers, a property of how they were started, never of
    how many there are; :data:`~cryodet_dask.cluster.GPU_TASKS` by default)."""
    import torch

    from .._progress import current_client
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
