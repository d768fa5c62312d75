"""The detection pipeline around a run folder (issue 16, in steps): :mod:`.rundir` names every file of
a run folder, :mod:`.params` holds :class:`DetectParams` (valid from construction on), :mod:`.provenance` says what a run record holds about the run itself (versions, command,
host, date, peak memory); :mod:`.detect` holds :func:`cryodet_dask.detect`, its four stages and the
checks before them (``cryodet_dask.detection`` is an import shim for one release)."""

from __future__ import annotations

from .rundir import LAST_RUN, LOCK_NAME, OUTPUT_SUFFIX, RUN_SUFFIX, RunDirectory

__all__ = ["RunDirectory", "OUTPUT_SUFFIX", "RUN_SUFFIX", "LAST_RUN", "LOCK_NAME"]
