"""Atomic outputs: write under a temporary name, rename when complete.

A crashed or interrupted run must never leave a file or Zarr store that looks
complete.  Every writer in cryodet-dask therefore writes to
``<dir>/.<name>.partial`` and renames it to ``<dir>/<name>`` only after the
last byte is written.  The temporary name is deterministic, so the next run
finds and removes a stale one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import DiskSpaceError, OutputExistsError

__all__ = ["partial_path", "atomic_output", "remove_path", "check_output"]


def partial_path(final: str | os.PathLike[str]) -> Path:
    """Temporary sibling path used while ``final`` is being written."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial")


def remove_path(path: str | os.PathLike[str]) -> None:
    """Remove a file or a directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_output(final: str | os.PathLike[str], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if ``final`` exists and may not be replaced."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"output {final} already exists (use --overwrite to replace it)")


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path that becomes ``final`` on success.

    On any exception the temporary output is removed and ``final`` is left as
    it was.  A full disk (``ENOSPC``) is reported as :class:`DiskSpaceError`.
    """
    final = Path(final)
    check_output(final, overwrite)
    tmp = partial_path(final)
    remove_path(tmp)  # a stale temporary from an interrupted run
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except OSError as exc:
        remove_path(tmp)
        if exc.errno == errno.ENOSPC:
            raise DiskSpaceError(f"disk full while writing {final}: free space and run again") from exc
        raise
    except BaseException:
        remove_path(tmp)
        raise
    if final.exists():
        remove_path(final)
    os.replace(tmp, final)
