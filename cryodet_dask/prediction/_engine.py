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

__all__ = ["ENGINES", "ENGINE_CHOICES", "ModelSpec", "OpenVinoNet", "check_engine", "get_model", "forward_block",
           "normalize_block", "openvino_available", "resolve_device", "resolve_engine"]

#: Inference engines.  ``"torch"``: PyTorch, every device.  ``"openvino"``: the same
#: network converted once per worker process to OpenVINO and run by its CPU plugin in fp32; CPU only,
#: the optional dependency ``pip install 'cryodet-dask[openvino]'``.  On this project's 2-core AVX2
#: CPU, ``predict`` ran 1.8x faster with it (2 workers x 1 thread, 128 x 512 x 512), with maps within
#: 1e-5 of PyTorch's and the same particles (README, Performance, "CPU inference engines").
ENGINES = ("torch", "openvino")
#: What ``--engine`` takes: an engine, or ``"auto"`` (the default), which :func:`resolve_engine` turns into
#: ``"openvino"`` when OpenVINO is installed and the networks run on the CPU, else ``"torch"``.
ENGINE_CHOICES = ("auto", *ENGINES)

_MODELS: dict[tuple[Any, ...], Any] = {}
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
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"`` (without importing PyTorch where
    the installed build cannot use a GPU, or the CPU was asked for)."""
    if device == "cpu" or (device == "auto" and _cpu_only_torch()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from ..errors import ParameterError

        raise ParameterError("--device cuda was asked for but no CUDA GPU is visible to torch")
    return device


def _cpu_only_torch() -> bool:
    """True when the installed PyTorch is a CPU-only build (no CUDA, no ROCm), read from its
    ``torch/version.py`` without importing it; False when that cannot be told (PyTorch then decides)."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
        where = list(spec.submodule_search_locations or []) if spec is not None else []
        if not where:
            return False
        tree = ast.parse((Path(where[0]) / "version.py").read_text())
    except (ImportError, ValueError, OSError, SyntaxError):
        return False
    values: dict[str, object] = {}
    for node in tree.body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return "cuda" in values and "hip" in values and values["cuda"] is None and values["hip"] is None


def openvino_available() -> bool:
    """Whether OpenVINO is installed (found, without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out installation
        return False


def check_engine(engine: str, device: str = "cpu") -> str:
    """Refuse, in one line, an unknown engine, OpenVINO where it is not installed, or OpenVINO on a GPU
    (``"auto"`` is always accepted: :func:`resolve_engine` picks what runs)."""
    from ..errors import ParameterError

    if engine not in ENGINE_CHOICES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    if engine == "openvino":
        if device.startswith("cuda"):
            raise ParameterError("--engine openvino runs on the CPU only: use --device cpu (or --engine torch "
                                 "on a GPU)")
        if not openvino_available():
            raise ParameterError("--engine openvino needs OpenVINO, which is not installed: "
                                 "pip install 'cryodet-dask[openvino]' (or use --engine torch)")
    return engine


def resolve_engine(engine: str, device: str) -> str:
    """The engine that runs: ``"auto"`` -> ``"openvino"`` when OpenVINO is installed and ``device`` (as
    :func:`resolve_device` returns it) is the CPU, else ``"torch"``; an explicit engine is checked and kept.

    This is what a store's fingerprint and a run's record hold, never ``"auto"``."""
    check_engine(engine, device)
    if engine != "auto":
        return engine
    return "openvino" if device == "cpu" and openvino_available() else "torch"


class OpenVinoNet:
    """A network converted to OpenVINO and compiled for its CPU plugin in fp32 with ``threads`` threads.

    Called with a float32 batch (n, 1, z, y, x) of any shape the network accepts (the input shape is
    dynamic, so every tile shape shares one compiled model), it returns the network's float32 output
    (n, heads, z, y, x).  Each call makes its own infer request, so tasks running on several threads
    of one worker may share the model.
    """

    def __init__(self, model: Any, threads: int) -> None:
        import openvino as ov  # type: ignore[import-untyped]  # no type information shipped
        import torch

        p = int(model.config.pool_factor)
        with warnings.catch_warnings():  # the shape checks in UNet3D.features trace as constants: intended
            warnings.simplefilter("ignore")
            converted = ov.convert_model(model, example_input=torch.zeros(1, 1, 4 * p, 4 * p, 4 * p),
                                         input=[ov.PartialShape([-1, 1, -1, -1, -1])])
        # fp32, never bf16 even on CPUs that have it: the maps stay exact.  No pinning of threads to cores:
        # OpenVINO pins each process's threads to the first cores, so two worker processes of one thread
        # each shared one core and the engine ran no faster than PyTorch in predict (benchmarks/bench_engine.py)
        self.compiled = ov.Core().compile_model(converted, "CPU", {
            "INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
        self.threads = int(threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = self.compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _forward_openvino(nets: Sequence[OpenVinoNet], batch: np.ndarray, polarity: str, tta: str = "none") -> np.ndarray:
    """:func:`cryodet_dask.models.forward` for OpenVINO networks: every network's heads, stacked; with
    ``polarity="both"`` the mean of the outputs on ``batch`` and on ``-batch``, and with ``tta="flips"``
    the mean over the flips of :data:`~cryodet_dask.models.TTA_FLIPS`, in float32."""
    from ..models import check_polarity, mean_over_flips

    both = check_polarity(polarity) == "both"

    def one(net: OpenVinoNet) -> np.ndarray:
        def run(x: np.ndarray) -> np.ndarray:
            return 0.5 * (net(x) + net(-x)) if both else net(x)

        return mean_over_flips(run, batch, tta, np.flip)

    return np.concatenate([one(net) for net in nets], axis=1)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def get_model(path: str, device: str, engine: str = "torch", threads: int | None = None) -> Any:
    """The model of checkpoint ``path`` on ``device``, loaded once per process.

    ``engine="openvino"``: an :class:`OpenVinoNet` compiled for ``threads`` CPU threads (default:
    torch's thread count in this process), also once per process and thread count.
    """
    from .. import models

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():  # a task placed on a CPU-only worker: say so, in one line
            raise RuntimeError(f"a prediction task for device {device!r} ran on a Dask worker without a visible "
                               "GPU; give every GPU worker the Dask resource GPU and predict with out=... (the "
                               "stored prediction sends its tasks to those workers), or use --device cpu")
    st = os.stat(path)
    key: tuple[Any, ...] = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, device)
    if engine != "torch":
        key += (check_engine(engine, device), threads or _torch_threads())
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = models.load(path).to(device)
            model.eval()
            if engine == "openvino":
                model = OpenVinoNet(model, threads or _torch_threads())
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
    engine: str = "torch",
    tta: str = "none",
) -> list[np.ndarray]:
    """Run every model on every (normalized) block; blocks of equal shape share one forward call.

    Each block is zero-padded at the end of each axis to a multiple of the
    pooling factor and cropped back afterwards.  Returns, per block, a float32
    array (n_heads, *block.shape) with the heads of all models stacked in
    ``specs`` order, or, with ``crops``, only the part ``crops[i]`` (slices of
    the block, e.g. its core without the halo): cut on the device, so only
    that part is copied back.  ``polarity``: see :data:`cryodet_dask.models.POLARITIES`; ``tta``: see
    :data:`cryodet_dask.models.TTAS` (the padded block is flipped, so every tiling flips alike).
    ``engine``: see :data:`ENGINES`.
    """
    import torch

    from ..models import forward

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    p = max(s.pool_factor for s in specs)
    nets = [get_model(s.path, device, engine, torch_threads) for s in specs]
    out: list[np.ndarray | None] = [None] * len(blocks)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, b in enumerate(blocks):
        groups.setdefault(tuple(b.shape), []).append(i)
    use_amp = amp and device.startswith("cuda") and _bf16_ok(device)
    for shape, members in groups.items():
        pad = end_padding(shape, p)
        batch = np.stack([np.pad(blocks[i], pad) for i in members])[:, None]
        crop_of = [(crops[i] if crops is not None else None) or tuple(slice(0, n) for n in shape) for i in members]
        if engine == "openvino":
            y = _forward_openvino(nets, batch, polarity, tta)
            for j, i in enumerate(members):
                out[i] = np.ascontiguousarray(y[j][(slice(None), *crop_of[j])], dtype=np.float32)
            continue
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            yt = torch.cat([forward(net, x, polarity, tta) for net in nets], dim=1)
            for j, i in enumerate(members):  # cut on the device: only the core is copied back
                out[i] = np.ascontiguousarray(yt[j][(slice(None), *crop_of[j])].cpu().numpy())
    return out  # type: ignore[return-value]
