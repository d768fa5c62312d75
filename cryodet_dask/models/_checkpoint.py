"""Network checkpoints: one file per model, weights plus configuration, loaded without executing code.

Format (``torch.save`` of a plain dict, read back with ``torch.load(...,
weights_only=True)`` so no pickled code can run)::

    {
        "format": "cryodet-dask-checkpoint",
        "format_version": 1,
        "config": {...},            # UNetConfig.to_dict(): architecture, channels,
                                    # convs_per_level, heads, normalization,
                                    # voxel_size, training (data, command, ...)
        "receptive_field": 66,      # informative; recomputed from config on load
        "state_dict": {name: tensor, ...},
    }
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ._archive import FORMAT, FORMAT_VERSION, check_payload, check_state_dict, config_of
from ._unet import UNet3D

__all__ = ["save", "load", "read_checkpoint", "check_state_dict", "FORMAT", "FORMAT_VERSION"]


def save(model: UNet3D, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights + configuration) to ``path`` atomically.

    Parameters
    ----------
    model : UNet3D
        The network; its ``config`` is stored with the weights.
    path : path-like
        Output file (``.pt``).
    extra : dict, optional
        More plain data (numbers, strings, lists, dicts, tensors) to store,
        e.g. optimizer state for resuming training.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "receptive_field": model.config.receptive_field,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if extra:
        payload.update(extra)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file as a plain dict, safely (``weights_only=True``).

    Raises
    ------
    CheckpointError
        The file is missing, not a checkpoint, or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: network checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a network checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file can fail anywhere inside the (safe) unpickler
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable network checkpoint (corrupt or unsafe file: {first[:160]})") from exc
    return check_payload(path, payload)


def load(path: str | os.PathLike[str], *, expect_heads: Sequence[str] | None = None,
         device: str | torch.device = "cpu") -> UNet3D:
    """Load a network checkpoint written by :func:`save` (or ``cryodet-dask train``).

    Parameters
    ----------
    path : path-like
        Checkpoint file.
    expect_heads : sequence of str, optional
        Outputs the caller needs, e.g. ``("mask",)`` for a SegNet; a
        checkpoint lacking one of them is refused.
    device : str or torch.device
        Where to put the network (default CPU).

    Returns
    -------
    UNet3D
        The network in eval mode, its :class:`UNetConfig` as ``.config``.

    Raises
    ------
    CheckpointError
        Missing file, corrupt file, unknown architecture, weights that do not
        match the stored architecture, or missing expected heads.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    config = config_of(path, payload)
    if expect_heads is not None:
        missing = [h for h in expect_heads if h not in config.heads]
        if missing:
            raise CheckpointError(
                f"{path}: this network predicts {list(config.heads)}, but {list(expect_heads)} is needed")
    check_state_dict(config, payload["state_dict"], path)
    model = UNet3D(config)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return model.to(device)
