"""Per-chunk inference on a worker: the model cache and the forward pass of one block.

A task receives checkpoint *paths*, never model objects; each worker process
loads a checkpoint once and keeps it in :data:`_MODELS` (keyed by path, file
identity and device), so the weights travel neither with every task nor more
than once to a worker.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._shapes import end_padding

__all__ = ["ModelSpec", "get_model", "forward_block", "normalize_block", "resolve_device"]

_MODELS: dict[tuple[str, int, int, str], Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint as a task sees it: path plus the heads it predicts."""

    path: str
    heads: tuple[str, ...]
    pool_factor: int
    receptive_field: int
    halo: int = 0  # largest one-sided extent of the receptive field (voxels)
    width: int = 32  # feature channels at full resolution: what sets the activation memory per voxel
    voxel_size: float | None = None  # Å per voxel of the training data (checkpoint config), if recorded


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from ..errors import ParameterError

        raise ParameterError("--device cuda was asked for but no CUDA GPU is visible to torch")
    return device


def get_model(path: str, device: str) -> Any:
    """The model of checkpoint ``path`` on ``device``, loaded once per process."""
    from .. import models

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():  # a task placed on a CPU-only worker: say so, in one line
            raise RuntimeError(f"a prediction task for device {device!r} ran on a Dask worker without a visible "
                               "GPU; give every GPU worker the Dask resource GPU and predict with out=... (the "
                               "stored prediction sends its tasks to those workers), or use --device cpu")
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, device)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = models.load(path).to(device)
            model.eval()
            _MODELS[key] = model
    return model


#: cuDNN releases that compute wrong bf16 3D convolutions for large shapes (as ``cudnn.version()``).
BAD_BF16_CUDNN = (90800, 91499)
#: torch releases that disable cuDNN for bf16 3D convolutions (about 4x slower, still correct).
SLOW_BF16_TORCH = ("2.9.0",)


def bf16_allowed(torch_version: str, cudnn_version: int | None) -> tuple[bool, str | None]:
    """Whether bf16 autocast may run with these versions, and the warning to give (``None``: none).

    A cuDNN in :data:`BAD_BF16_CUDNN` gives wrong bf16 results: refused (the forward runs in fp32).
    A torch in :data:`SLOW_BF16_TORCH` is correct but slow: allowed, with a warning.
    """
    if cudnn_version is not None and BAD_BF16_CUDNN[0] <= int(cudnn_version) <= BAD_BF16_CUDNN[1]:
        return False, (f"cuDNN {cudnn_version} computes wrong bf16 3D convolutions for large shapes: the networks "
                       "run in fp32 on this GPU (about 2x slower); use a cuDNN outside 9.8-9.14")
    if torch_version.split("+")[0] in SLOW_BF16_TORCH:
        return True, (f"torch {torch_version} disables cuDNN for bf16 3D convolutions (about 4x slower); "
                      "use another torch release")
    return True, None


_BF16: dict[str, bool] = {}


def _bf16_ok(device: str) -> bool:
    """:func:`bf16_allowed` for this process's torch and cuDNN, decided (and warned about) once."""
    import torch

    if device not in _BF16:
        cudnn = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        ok, why = bf16_allowed(torch.__version__, cudnn)
        if why:
            warnings.warn(why, stacklevel=3)
        _BF16[device] = ok
    return _BF16[device]


def normalize_block(block: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Global z-score normalization, in float32 exactly as the whole-volume reference does it."""
    return ((block.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32, copy=False)


def forward_block(
    specs: Sequence[ModelSpec],
    blocks: Sequence[np.ndarray],
    *,
    device: str = "cpu",
    amp: bool = False,
    torch_threads: int | None = None,
    polarity: str = "as-is",
    crops: Sequence[tuple[slice, ...] | None] | None = None,
) -> list[np.ndarray]:
    """Run every model on every (normalized) block; blocks of equal shape share one forward call.

    Each block is zero-padded at the end of each axis to a multiple of the
    pooling factor and cropped back afterwards.  Returns, per block, a float32
    array (n_heads, *block.shape) with the heads of all models stacked in
    ``specs`` order, or, with ``crops``, only the part ``crops[i]`` (slices of
    the block, e.g. its core without the halo): cut on the device, so only
    that part is copied back.  ``polarity``: see :data:`cryodet_dask.models.POLARITIES`.
    """
    import torch

    from ..models import forward

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    p = max(s.pool_factor for s in specs)
    nets = [get_model(s.path, device) for s in specs]
    out: list[np.ndarray | None] = [None] * len(blocks)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, b in enumerate(blocks):
        groups.setdefault(tuple(b.shape), []).append(i)
    use_amp = amp and device.startswith("cuda") and _bf16_ok(device)
    for shape, members in groups.items():
        pad = end_padding(shape, p)
        batch = np.stack([np.pad(blocks[i], pad) for i in members])[:, None]
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            y = torch.cat([forward(net, x, polarity) for net in nets], dim=1)
            for j, i in enumerate(members):
                crop: tuple[slice, ...] = (crops[i] if crops is not None else None) or tuple(slice(0, n) for n in shape)
                out[i] = np.ascontiguousarray(y[j][(slice(None), *crop)].cpu().numpy())
    return out  # type: ignore[return-value]
