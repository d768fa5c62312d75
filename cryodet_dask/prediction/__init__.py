"""Distributed inference: the networks applied per chunk with halos on Dask workers.

:mod:`._models` resolves and checks the networks, :mod:`._tiling` plans chunks, halos and tiles,
:mod:`._predict` builds the tile graph, :mod:`._store` keeps the resumable prediction store, and
:mod:`._engine` runs one forward pass (PyTorch or OpenVINO).
"""

from __future__ import annotations

from ._engine import (ENGINE_CHOICES, ENGINES, ModelSpec, OpenVinoNet, check_engine, forward_block, get_model,
                      normalize_block, resolve_device, resolve_engine)
from ._models import (HEADS, SHIPPED_MODELS, check_model_voxel_size, check_species, file_sha256, model_species,
                      model_species_diameters, one_checkpoint, resolve_models, shipped_models)
from ._predict import Prediction, global_stats, predict
from ._tiling import (ChunkPlan, default_halo, model_halo, plan_chunks, plan_tiles, task_memory_bytes, task_tile,
                      tile_budget, with_tile)

__all__ = [
    "ENGINES",
    "ENGINE_CHOICES",
    "HEADS",
    "SHIPPED_MODELS",
    "OpenVinoNet",
    "check_engine",
    "ChunkPlan",
    "check_model_voxel_size",
    "check_species",
    "model_species",
    "model_species_diameters",
    "one_checkpoint",
    "ModelSpec",
    "Prediction",
    "default_halo",
    "forward_block",
    "get_model",
    "global_stats",
    "normalize_block",
    "plan_chunks",
    "predict",
    "resolve_device",
    "resolve_engine",
    "resolve_models",
    "shipped_models",
    "file_sha256",
    "task_memory_bytes",
    "model_halo",
    "task_tile",
    "plan_tiles",
    "tile_budget",
    "with_tile",
]
