"""The ``cryodet-dask`` command line.

Each subcommand lives in its own module of this package (``cli/convert.py``,
``cli/simulate.py``, ...) exposing ``register(subparsers)``; this module finds
them, builds the parser, and turns :class:`~cryodet_dask.errors.CryodetError`
into one line on stderr and a non-zero exit status.

Building the parser imports no heavy module (torch, dask, zarr, pandas): ``register`` only declares
arguments, and each command imports what it needs in its ``run``; ``--help`` answers at once
(tests/test_cli_startup.py).  The global options ``-v``, ``-q`` and ``--progress``/``--no-progress``
are accepted before and after the command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import CryodetError

__all__ = ["main", "build_parser"]

# The order subcommands appear in --help; modules not listed come after.
_ORDER = ["detect", "demo", "simulate", "simulate_pool", "convert", "train", "labels", "predict", "postprocess",
          "evaluate", "picks"]


class _OneLineErrorParser(argparse.ArgumentParser):
    """Argument errors as one line (plus where to look), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_global_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """``-v``, ``-q``, ``--progress``/``--no-progress``: on the main parser, and again (``after``) on every
    command's parser, where an option left out leaves the namespace alone (:func:`_merge_global_options`)."""
    g = parser.add_argument_group("global options (before or after the command)") if after else parser
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if after else {}
    suffix = "_after" if after else ""
    g.add_argument("-v", "--verbose", dest="verbose" + suffix, action="count",
                   **(unset or {"default": 0}), help="more log output (-vv for debug)")
    g.add_argument("-q", "--quiet", dest="quiet" + suffix, action="store_true", **unset,
                   help="only errors; no progress bars")
    progress = g.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress" + suffix, action="store_const", const=True,
                          **(unset or {"default": None}), help="progress bars even when stderr is not a terminal")
    progress.add_argument("--no-progress", dest="progress" + suffix, action="store_const", const=False, **unset,
                          help="no progress bars (default when stderr is not a terminal, e.g. a log file)")


class _CommandParser(_OneLineErrorParser):
    """A command's parser (and a nested action's, e.g. ``picks convert``): it takes the global options too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, after=True)


def _merge_global_options(args: argparse.Namespace) -> None:
    """Fold the global options given after the command into those given before it (after wins for
    ``--progress``; ``-v`` counts add up)."""
    ns = vars(args)
    args.verbose = ns.get("verbose", 0) + ns.pop("verbose_after", 0)
    args.quiet = bool(ns.get("quiet", False) or ns.pop("quiet_after", False))
    after = ns.pop("progress_after", None)
    if after is not None:
        args.progress = after


def _command_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="cryodet-dask",
        description=(
            "Find and instance-label particles in cryo-electron tomograms larger than memory, "
            "on a Dask cluster. Array axes are (z, y, x); voxel coordinates are in voxels, "
            "physical ones in Å."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cryodet-dask {__version__}")
    _add_global_options(parser, after=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


class _OwnInfoFilter(logging.Filter):
    """Let through warnings from everyone, but INFO only from cryodet-dask itself (not Dask's chatter)."""

    def __init__(self, verbose: int):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if _INTERRUPTED.is_set() and record.name.startswith(_CLUSTER_LOGGERS):
            # after Ctrl-C or SIGTERM the one line says it all: not the event loop's callbacks that the
            # interruption cut short (distributed's sync() "Exception in callback ... cancel" NameError)
            return False
        if record.levelno >= logging.WARNING or self.verbose > 1:
            return True
        return record.name.startswith("cryodet_dask") or (self.verbose > 0 and record.levelno >= logging.INFO)


#: Set by the SIGINT and SIGTERM handlers before they unwind the main thread.
_INTERRUPTED = threading.Event()
_CLUSTER_LOGGERS = ("tornado", "distributed", "asyncio")


def _setup_logging(verbose: int, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[cryodet-dask] %(levelname)s: %(message)s"))
    handler.setLevel(logging.ERROR if quiet else logging.DEBUG)
    handler.addFilter(_OwnInfoFilter(verbose))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logging.getLogger("cryodet_dask").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logging.captureWarnings(True)
    # a warning is one line: its message, without the source line that raised it
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return str(message).splitlines()[0] if str(message) else category.__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cryodet-dask``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _merge_global_options(args)
    args.argv = argv  # the command as given, for provenance (checkpoints, run.json)
    _setup_logging(args.verbose, args.quiet)
    _INTERRUPTED.clear()
    previous = _terminate_like_interrupt()
    previous_int = _interrupt_flagged()
    try:
        result = args.func(args)
    except CryodetError as exc:
        print(f"cryodet-dask: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("cryodet-dask: terminated (SIGTERM); run the same command again to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("cryodet-dask: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    return int(result or 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and PBS send at the walltime): unwinds like Ctrl-C, leaving resumable state."""


def _raise_terminated(signum: int, frame: object) -> None:
    _INTERRUPTED.set()
    raise Terminated()


def _raise_interrupt(signum: int, frame: object) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt()


def _interrupt_flagged() -> Any:
    """Ctrl-C raises KeyboardInterrupt as by default, and flags the interruption first (the cluster's
    loggers then stay quiet); returns the handler it replaced (None off the main thread or when SIGINT
    is ignored, as in a background job)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, _raise_interrupt)


def _terminate_like_interrupt() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
