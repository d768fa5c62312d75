"""Species: what a network picks, each with its name, diameter in Å and an optional colour.

A *species* is one kind of macromolecule a biologist picks (ribosomes,
proteasomes, rubisco).  A :class:`SpeciesTable` is the ordered list a network
was trained on: species ``i`` is the network's species channel ``i`` and the
STAR ``rlnClassNumber`` ``i + 1``.  The species-agnostic networks declare one
species, ``particle``.

Names are copick-safe (letters, digits and ``-``), so that a species name can
be a copick pickable object, a file-name part and a CSV value unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError

__all__ = ["Species", "SpeciesTable", "DEFAULT_SPECIES", "check_species_name", "parse_species",
           "parse_species_weights"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


def check_species_name(name: object) -> str:
    """``name`` if it is a copick-safe species name (letters, digits and ``-``), else :class:`ParameterError`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ParameterError(
            f"species name {name!r} is not copick-safe: use letters, digits and '-' only (e.g. 'ribosome-70S')")
    return name


@dataclass(frozen=True)
class Species:
    """One species.

    Attributes
    ----------
    name : str
        Copick-safe name (letters, digits, ``-``).
    diameter : float or None
        Diameter in Å (None: not known); sets the per-species centre-fusion
        distance and minimum size (:func:`~cryodet_dask.postprocessing.from_particle_diameter`).
    colour : str or None
        ``#rrggbb`` for pictures and copick (None: a default palette colour).
    """

    name: str
    diameter: float | None = None
    colour: str | None = None

    def __post_init__(self) -> None:
        check_species_name(self.name)
        d = self.diameter
        if d is not None:
            if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or not d > 0:
                raise ParameterError(f"species {self.name}: diameter must be a positive number of Å, got {d!r}")
            object.__setattr__(self, "diameter", float(d))
        if self.colour is not None and (not isinstance(self.colour, str) or not _COLOUR.match(self.colour)):
            raise ParameterError(f"species {self.name}: colour must be '#rrggbb', got {self.colour!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "diameter": self.diameter, "colour": self.colour}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Species:
        extra = set(d) - {"name", "diameter", "colour"}
        if extra:
            raise ParameterError(f"unknown species field(s): {sorted(extra)}")
        return cls(name=d.get("name"), diameter=d.get("diameter"), colour=d.get("colour"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class SpeciesTable:
    """The ordered species of a network (index ``i`` = species channel ``i`` = ``rlnClassNumber`` ``i + 1``).

    Examples
    --------
    >>> t = SpeciesTable.of(["ribosome", "proteasome"])
    >>> t.names, t.index("proteasome"), len(t)
    (('ribosome', 'proteasome'), 1, 2)
    """

    species: tuple[Species, ...]

    def __post_init__(self) -> None:
        sp = tuple(s if isinstance(s, Species) else Species.from_dict(s) for s in self.species)
        object.__setattr__(self, "species", sp)
        if not sp:
            raise ParameterError("a species table needs at least one species")
        if len(sp) > 255:
            raise ParameterError(f"at most 255 species are supported, got {len(sp)}")
        seen: set[str] = set()
        for s in sp:
            if s.name in seen:
                raise ParameterError(f"species {s.name!r} is named twice; species names must be distinct")
            seen.add(s.name)

    @classmethod
    def of(cls, species: Iterable[str | Species | dict[str, Any]]) -> SpeciesTable:
        """A table from names, :class:`Species` or their dicts."""
        return cls(tuple(Species(s) if isinstance(s, str) else s if isinstance(s, Species)
                         else Species.from_dict(s) for s in species))

    @classmethod
    def from_list(cls, items: Sequence[dict[str, Any]] | None) -> SpeciesTable:
        """Inverse of :meth:`to_list`; ``None`` (an older checkpoint) is the one species ``particle``."""
        return DEFAULT_SPECIES if items is None else cls.of(items)

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.species]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.species)

    @property
    def diameters(self) -> tuple[float | None, ...]:
        return tuple(s.diameter for s in self.species)

    def __len__(self) -> int:
        return len(self.species)

    def __iter__(self) -> Iterator[Species]:
        return iter(self.species)

    def __getitem__(self, i: int) -> Species:
        return self.species[i]

    def index(self, name: str) -> int:
        """Position of species ``name``; :class:`ParameterError` listing the known ones if absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ParameterError(
                f"unknown species {name!r}; this model knows {', '.join(self.names)}") from None

    def select(self, names: Sequence[str]) -> tuple[int, ...]:
        """Indices of ``names`` (each checked, duplicates refused), in the order given."""
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if list(names).count(n) > 1})
            raise ParameterError(f"species named twice: {', '.join(dup)}")
        return tuple(self.index(check_species_name(n)) for n in names)

    def colours(self) -> list[str]:
        """Each species' colour, the palette's where none is set (tab10, cycling)."""
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
        return [s.colour or palette[i % len(palette)] for i, s in enumerate(self.species)]

    @property
    def is_agnostic(self) -> bool:
        """True for the one-species table of the species-agnostic networks."""
        return len(self.species) == 1


#: The species of the species-agnostic networks.
DEFAULT_SPECIES = SpeciesTable((Species("particle"),))


def parse_species(text: str) -> SpeciesTable:
    """``"ribosome:280,proteasome:190:2"`` (``name[:diameter Å[:weight]]``, comma-separated) as a table.

    The optional weight (the CZII metric's per-species weight) is validated and dropped here;
    :func:`parse_species_weights` returns it.
    """
    return SpeciesTable.of(_parse(text)[0])


def parse_species_weights(text: str) -> dict[str, float]:
    """The weights of :func:`parse_species`'s notation (1 where none is given)."""
    return _parse(text)[1]


def _parse(text: str) -> tuple[list[Species], dict[str, float]]:
    out: list[Species] = []
    weights: dict[str, float] = {}
    for item in [t.strip() for t in str(text).split(",")]:
        if not item:
            raise ParameterError(f"empty species in {text!r}; write name[:diameter_angst[:weight]],...")
        parts = item.split(":")
        if len(parts) > 3:
            raise ParameterError(f"species {item!r}: write name[:diameter_angst[:weight]]")
        try:
            diameter = float(parts[1]) if len(parts) > 1 and parts[1] else None
            weight = float(parts[2]) if len(parts) > 2 and parts[2] else 1.0
        except ValueError:
            raise ParameterError(f"species {item!r}: diameter (Å) and weight must be numbers") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ParameterError(f"species {item!r}: the weight must be a positive number, got {weight}")
        out.append(Species(parts[0], diameter))
        weights[parts[0]] = weight
    SpeciesTable(tuple(out))  # duplicate names refused here
    return out, weights
