"""The detection pipeline around a run folder (issue 16, in steps): :mod:`.rundir` names every file of
a run folder, :mod:`.params` holds :class:`DetectParams` (valid from construction on), :mod:`.provenance` says what a run record holds about the run itself (versions, command,
host, date, peak memory); :func:`cryodet_dask.detect` (``detection.py``) runs the stages."""

from __future__ import annotations

from .rundir import LAST_RUN, LOCK_NAME, OUTPUT_SUFFIX, RUN_SUFFIX, RunDirectory

__all__ = ["RunDirectory", "OUTPUT_SUFFIX", "RUN_SUFFIX", "LAST_RUN", "LOCK_NAME"]
