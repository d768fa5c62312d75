"""Import shim, kept for one release: the detection pipeline moved to :mod:`cryodet_dask.pipeline.detect`."""

from __future__ import annotations

from .pipeline.detect import *  # noqa: F403 - the same public names as before
from .pipeline.detect import __all__  # noqa: F401
from .pipeline.detect import (  # noqa: F401 - private names that tests and the CLI still import from here
    _clean_stale,
    _identity,
    _retire_outputs,
    _voxel_size,
    read_run,
)
