"""Distributed inference: the networks applied per chunk with halos on Dask workers."""

from __future__ import annotations

from ._engine import ENGINES, ModelSpec, OpenVinoNet, check_engine, forward_block, get_model, normalize_block, resolve_device
from ._predict import (Prediction, check_model_voxel_size, file_sha256, global_stats, predict, resolve_models,
                       tile_budget)
from ._tiling import ChunkPlan, default_halo, model_halo, plan_chunks, plan_tiles, task_memory_bytes, task_tile, with_tile

__all__ = [
    "ENGINES",
    "OpenVinoNet",
    "check_engine",
    "ChunkPlan",
    "check_model_voxel_size",
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
    "resolve_models",
    "file_sha256",
    "task_memory_bytes",
    "model_halo",
    "task_tile",
    "plan_tiles",
    "tile_budget",
    "with_tile",
]
