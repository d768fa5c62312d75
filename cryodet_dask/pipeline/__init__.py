"""The detection pipeline around a run folder, one job per module:

- :mod:`.params`: :class:`DetectParams` (valid from construction on) and the run's voxel size;
- :mod:`.rundir`: the run folder: its files' names (:class:`RunDirectory`), the lock (one run per folder),
  the inputs' identity, stale outputs and their retirement, what a rerun reuses, the run records;
- :mod:`.resources`: the checks before a run starts: chunks against the halo, worker memory, disk space;
- :mod:`.provenance`: what a run record holds about the run itself (versions, command, host, peak memory);
- :mod:`.detect`: :func:`cryodet_dask.detect`, its four stages and their order.
"""

from __future__ import annotations

from .detect import DetectionResult, detect
from .params import (ANGSTROM_FORMATS, VOXEL_SIZE_RANGE, DetectParams, check_known_voxel_size, check_tomo_name,
                     check_voxel_size, output_voxel_size, resolve_voxel_size)
from .resources import (check_chunks, check_disk_space, check_worker_memory, estimate_space, inference_halo,
                        memory_refusal, prediction_memory)
from .rundir import (LAST_RUN, LOCK_NAME, OUTPUT_SUFFIX, RUN_SUFFIX, RunDirectory, input_identity, output_lock,
                     read_run, run_identity, run_record_path)

__all__ = [
    "DetectParams",
    "DetectionResult",
    "detect",
    "ANGSTROM_FORMATS",
    "VOXEL_SIZE_RANGE",
    "check_known_voxel_size",
    "check_tomo_name",
    "check_voxel_size",
    "output_voxel_size",
    "resolve_voxel_size",
    "check_chunks",
    "check_disk_space",
    "check_worker_memory",
    "estimate_space",
    "inference_halo",
    "memory_refusal",
    "prediction_memory",
    "RunDirectory",
    "OUTPUT_SUFFIX",
    "RUN_SUFFIX",
    "LAST_RUN",
    "LOCK_NAME",
    "input_identity",
    "output_lock",
    "read_run",
    "run_identity",
    "run_record_path",
]
