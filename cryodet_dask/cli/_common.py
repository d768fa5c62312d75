"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

__all__ = ["str2bool", "int_triplet", "positive_float", "fraction", "nonneg_float", "finite_nonneg_float", "nonneg_int",
           "positive_int", "voxel_size_angst", "format_list", "add_bool_flag", "show_progress",
           "VOXEL_SIZE_RANGE", "deprecated_alias", "dataclass_defaults"]

#: Physically plausible voxel sizes (Å): below 0.1 Å or above 1000 Å is a unit or header mistake.
VOXEL_SIZE_RANGE = (0.1, 1000.0)


def str2bool(text: str) -> bool:
    """Parse ``true/false``, ``yes/no``, ``1/0``, ``on/off`` (the seed's flags took any string as True)."""
    t = str(text).strip().lower()
    if t in ("true", "t", "yes", "y", "1", "on"):
        return True
    if t in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def int_triplet(text: str) -> tuple[int, ...]:
    """``128`` or ``64,256,256`` (z,y,x) -> tuple of positive ints."""
    try:
        values = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or z,y,x integers, got {text!r}") from None
    if len(values) not in (1, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected one or three positive integers (z,y,x), got {text!r}")
    return values


def positive_float(text: str) -> float:
    """A finite number > 0 (NaN, inf, zero and negatives refused)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return v


def _per_species(text: str, value: Callable[[str], float], unit: str) -> float | dict[str, float]:
    """``VALUE`` (every species) or ``NAME:VALUE,...`` (per species of a multi-species model)."""
    if ":" not in text:
        return value(text)
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, v = item.strip().partition(":")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected {unit} or NAME:{unit},..., got {text!r}")
        if name in out:
            raise argparse.ArgumentTypeError(f"species {name!r} is given twice in {text!r}")
        out[name] = value(v)
    return out


def particle_diameter_arg(text: str) -> float | dict[str, float]:
    """``ANGSTROM`` (every species) or ``NAME:ANGSTROM,...`` (per species of a multi-species model)."""
    return _per_species(text, positive_float, "ANGSTROM")


def min_score_arg(text: str) -> float | dict[str, float]:
    """``SCORE`` (every species) or ``NAME:SCORE,...`` (per species of a multi-species model)."""
    return _per_species(text, finite_nonneg_float, "SCORE")


def voxel_size_angst(text: str) -> float:
    """A voxel size in Å: finite, positive and within :data:`VOXEL_SIZE_RANGE` (0.1-1000 Å)."""
    v = positive_float(text)
    lo, hi = VOXEL_SIZE_RANGE
    if not lo <= v <= hi:
        raise argparse.ArgumentTypeError(f"expected a voxel size between {lo:g} and {hi:g} Å, got {text!r}")
    return v


def positive_int(text: str) -> int:
    v = nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def format_list(text: str) -> tuple[str, ...]:
    """``csv,star`` -> ("csv", "star"): known output formats only, each once, at least one."""
    from ..exports import FORMATS

    values = tuple(dict.fromkeys(v.strip().lower() for v in str(text).split(",") if v.strip()))
    unknown = [v for v in values if v not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(unknown)} in {text!r}; choose among "
                                         f"{','.join(FORMATS)}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one of {','.join(FORMATS)}, got {text!r}")
    return values


def fraction(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def finite_nonneg_float(text: str) -> float:
    """A finite number >= 0 (NaN, inf and negatives refused)."""
    v = nonneg_float(text)
    if v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def add_bool_flag(parser: Any, name: str, default: bool, help: str,
                  aliases: tuple[str, ...] = (), suppress: bool = False) -> None:
    """Add ``--name/--no-name`` plus value-taking aliases such as ``-check_center true``.

    ``suppress``: an unset flag stays out of the namespace (the help still states ``default``)."""
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, action=argparse.BooleanOptionalAction,
                        default=argparse.SUPPRESS if suppress else default,
                        help=f"{help} (default: {'on' if default else 'off'})")
    for alias in aliases:
        parser.add_argument(alias, dest=dest, type=str2bool, nargs="?", const=True, metavar="true|false",
                            default=argparse.SUPPRESS if suppress else default,
                            help=f"same as --{name}/--no-{name}")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars: never with ``-q``; with ``--progress`` / ``--no-progress`` as asked; otherwise only
    when stderr is a terminal (a redirected log gets the one-line stage messages, not ~10 bar
    updates a second)."""
    if getattr(args, "quiet", False):
        return False
    asked = getattr(args, "progress", None)
    if asked is not None:
        return bool(asked)
    return sys.stderr.isatty()


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: hidden from ``--help``, stores into the new flag's ``dest``, with a note."""

    def __init__(self, option_strings: Any, dest: str, new: str = "", parse: Any = None, **kwargs: Any) -> None:
        self.new, self.parse = new, parse
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        value = values
        if self.parse is not None:
            try:
                value = self.parse(values)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"argument {option_string}: {exc}")
        # one line on stderr (the arguments are parsed before logging is set up)
        print(f"cryodet-dask: note: {option_string} is deprecated and will be removed; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, value)


def deprecated_alias(group: Any, old: str, new: str, dest: str, parse: Any = None) -> None:
    """Accept ``old`` (hidden, with a deprecation warning) as another spelling of ``new``."""
    group.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, parse=parse, default=argparse.SUPPRESS)


def dataclass_defaults(cls: Any) -> SimpleNamespace:
    """The field defaults of dataclass ``cls`` without making one: its validation may import heavy modules
    (``--help`` must not), and a field without a default is left out."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return SimpleNamespace(**values)
