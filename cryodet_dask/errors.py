"""Exceptions of cryodet-dask.

Every error a user can cause (a missing file, a malformed MRC, a threshold out
of range) is raised as a :class:`CryodetError` subclass whose message is one
line a biologist understands.  The command line turns these into that line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "CryodetError",
    "InputError",
    "TomogramFormatError",
    "OutputExistsError",
    "ParameterError",
    "CheckpointError",
    "DiskSpaceError",
    "StoreIntegrityError",
    "OutputBusyError",
    "ClusterError",
]


class CryodetError(Exception):
    """Base class of all errors cryodet-dask raises on purpose."""

    exit_code = 2


class InputError(CryodetError):
    """An input file is missing, unreadable or of the wrong kind."""


class TomogramFormatError(InputError):
    """A tomogram file exists but its content cannot be used (bad header, truncated, 2D, ...)."""


class StoreIntegrityError(TomogramFormatError):
    """A Zarr store written by cryodet-dask has a missing or damaged chunk or metadata file."""


class OutputExistsError(CryodetError):
    """The output already exists and ``overwrite`` was not given."""


class ParameterError(CryodetError):
    """A parameter value is out of its valid range."""


class CheckpointError(CryodetError):
    """A network checkpoint is missing, corrupt, or does not match the expected architecture."""


class DiskSpaceError(CryodetError):
    """Writing an output failed because the disk is full."""

    exit_code = 3


class OutputBusyError(CryodetError):
    """Another run holds the output folder's lock (``.cryodet.lock``): try again when it has finished.

    Exit status 75 (``EX_TEMPFAIL`` of sysexits.h: a temporary failure, the same command will work later).
    """

    exit_code = 75


class ClusterError(CryodetError):
    """The Dask cluster cannot do the work: the scheduler is unreachable or lost, no worker joined in
    time, or the workers kept dying on one task (most often for memory).

    Exit status 69 (``EX_UNAVAILABLE`` of sysexits.h).  Finished chunks are kept: once the cluster is
    fixed, the same command resumes.
    """

    exit_code = 69
