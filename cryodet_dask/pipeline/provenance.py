"""What a run record says about the run itself: versions, who ran what where and when, peak memory."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["versions", "run_provenance", "vmhwm_mib", "reset_peak_memory", "peak_memory_mib"]


def versions() -> dict[str, Any]:
    """Versions of this package and of what decides its numbers (torch, CUDA and cuDNN included: as the
    processes that ran the networks have them, see :func:`torch_versions`)."""
    import dask
    import distributed
    import zarr

    from .. import __version__

    return {"cryodet_dask": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "dask": dask.__version__, "distributed": distributed.__version__, "zarr": zarr.__version__,
            **torch_versions(), "openvino": _installed("openvino")}


def torch_versions() -> dict[str, Any]:
    """``torch``, ``cuda`` and ``cudnn`` of the PyTorch that ran the networks: this process's if it has
    imported PyTorch, else a worker's (the process that plans a run does not import it); when no process
    has (every result was reused), the installed version and None for the others."""
    import sys

    if "torch" in sys.modules:
        return _loaded_torch_versions() or {}
    from .._progress import current_client

    client = current_client()
    if client is not None:
        try:
            for seen in client.run(_loaded_torch_versions).values():
                if seen:
                    return dict(seen)
        except Exception:  # noqa: BLE001 - a record of versions never fails a run
            pass
    return {"torch": _installed("torch"), "cuda": None, "cudnn": None}


def _loaded_torch_versions() -> dict[str, Any] | None:
    """This process's PyTorch versions if it has imported PyTorch (run on workers too), else None."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cudnn = torch.backends.cudnn.version()
    # plain str and int: torch.__version__ is a str subclass that would import PyTorch where it is unpickled
    return {"torch": str(torch.__version__), "cuda": None if torch.version.cuda is None else str(torch.version.cuda),
            "cudnn": None if cudnn is None else int(cudnn)}


def _installed(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def run_provenance(weights: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Who ran what, where and when: the command line, UTC date, host, working folder, and each
    weight file as ``(absolute path, SHA-256)``."""
    import datetime
    import shlex
    import sys

    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv[0] in ("__main__.py", "-m"):
        argv[0] = "cryodet-dask"
    return {
        "command": " ".join(shlex.quote(a) for a in argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "working_directory": os.getcwd(),
        "weights": [{"path": path, "sha256": digest} for path, digest in weights],
    }


def vmhwm_mib() -> float | None:
    """This process's peak resident memory (``VmHWM``, MiB), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_vmhwm() -> bool:
    """Restart this process's peak-RSS count (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def reset_peak_memory(client: Any) -> bool:
    """Restart the peak-memory counts of this process and of every worker; True if all were reset."""
    ok = _reset_vmhwm()
    if client is not None:
        try:
            ok = all(client.run(_reset_vmhwm).values()) and ok
        except Exception:  # noqa: BLE001 - a scheduler without workers or without client.run
            ok = False
    return ok


def peak_memory_mib(client: Any, since_start: bool) -> dict[str, Any]:
    """Peak resident memory (MiB, ``VmHWM``): this process, and each worker of ``client``.

    ``since_start``: the counts were reset when the run started (otherwise they
    cover the processes' whole lives, e.g. a tomogram written earlier by the caller).
    """
    import resource

    own = vmhwm_mib()
    peak: dict[str, Any] = {
        "driver": round(own if own is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "since": "run start" if since_start else "process start",
    }
    if client is not None:
        try:
            workers = client.run(vmhwm_mib)
            peak["workers"] = {k: (round(v, 1) if v is not None else None) for k, v in workers.items()}
            peak["workers_max"] = max((v for v in peak["workers"].values() if v is not None), default=None)
        except Exception:  # noqa: BLE001 - a scheduler without workers or without client.run
            pass
    return peak
