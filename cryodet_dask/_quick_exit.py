"""A worker plugin that lets a local worker process end as soon as it has closed.

A worker process that ran the networks holds torch and OpenVINO; once it has closed, the interpreter's
own teardown of those libraries took about 1 s more, and a whole run waited 1.9 s for its 2 workers to
stop.  Their work is done and their files are closed by then, so the process flushes its log and output
and ends at once (``os._exit``) when the interpreter starts to exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from distributed import WorkerPlugin

__all__ = ["QuickExit"]


def _exit_now() -> None:
    logging.shutdown()  # flushes every handler
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or replaced
            pass
    os._exit(0)


class QuickExit(WorkerPlugin):
    """On a worker's close, arrange for its process to skip the interpreter's teardown (see the module)."""

    name = "cryodet-quick-exit"

    def teardown(self, worker: Any) -> None:
        atexit.register(_exit_now)  # registered last, so it runs first when the process exits
