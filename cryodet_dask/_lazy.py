"""Package attributes imported on first use (PEP 562), so that importing a package stays light.

A package lists where each public name lives and binds the module ``__getattr__`` and ``__dir__``
this returns; type checkers read the same names from an ``if TYPE_CHECKING:`` import block::

    if TYPE_CHECKING:
        from ._core import postprocess
    __all__ = ["postprocess"]
    if not TYPE_CHECKING:
        __getattr__, __dir__ = lazy_attributes(__name__, {"._core": ("postprocess",)})

The command line (``cryodet-dask --help``) thereby never imports torch, pandas, zarr or dask.distributed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: Mapping[str, Sequence[str]]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps a (relative) module to the names it
    provides; a name is imported from its module on first access and then kept in the package."""
    origin = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = origin.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(origin))

    return __getattr__, __dir__
