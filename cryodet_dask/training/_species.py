"""Which species each annotated particle is: per-tomogram tables of (particle id, species name).

A multi-species network learns from instance label maps plus, per tomogram, the
species of each particle id: the simulator's ``particles.csv`` (columns ``id``
and ``class``), or any table with those columns.  :func:`species_codes` turns
such a table into the sorted ids and their species codes (``k + 1`` for species
``k`` of the network's :class:`~cryodet_dask.species.SpeciesTable`), which the
patch reader looks the label map up in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..species import SpeciesTable

__all__ = ["read_particle_species", "species_codes", "species_target"]


def read_particle_species(source: str | os.PathLike[str] | Mapping[int, str]) -> dict[int, str]:
    """``{particle id: species name}`` from a mapping or a CSV with ``id`` and ``class`` columns."""
    if isinstance(source, Mapping):
        return {int(k): str(v) for k, v in source.items()}
    import pandas as pd

    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: particle species table not found")
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # pandas raises several kinds on a bad file
        raise InputError(f"{path}: not a readable CSV table ({exc})") from None
    missing = [c for c in ("id", "class") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: a multi-species training needs the species of each particle: columns 'id' "
                         f"and 'class' (missing: {', '.join(missing)})")
    if table["id"].duplicated().any():
        raise InputError(f"{path}: particle id {int(table['id'][table['id'].duplicated()].iloc[0])} "
                         f"is listed twice")
    return {int(i): str(c) for i, c in zip(table["id"], table["class"])}


def species_codes(ids: np.ndarray, species_of: Mapping[int, str], table: SpeciesTable,
                  where: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted particle ids of a label map and their species codes (uint8, ``k + 1`` for species ``k``).

    Every particle of the label map needs a species of ``table``; one line names the first that has none.
    """
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    codes = np.zeros(len(ids), dtype=np.uint8)
    index = {n: i for i, n in enumerate(table.names)}
    for j, pid in enumerate(ids.tolist()):
        name = species_of.get(int(pid))
        if name is None:
            raise InputError(f"{where}: particle {pid} of the label map has no species in its table")
        if name not in index:
            raise InputError(f"{where}: particle {pid} is of species {name!r}, which is not among the species "
                             f"trained ({', '.join(table.names)}); add it to --species")
        codes[j] = index[name] + 1
    return ids, codes


def species_target(labels: np.ndarray, ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The species code of every voxel (0: background) from instance ``labels``; float32 like the other targets."""
    lab = np.asarray(labels).astype(np.int64, copy=False)
    pos = np.clip(np.searchsorted(ids, lab), 0, max(len(ids) - 1, 0))
    hit = (lab > 0) & (len(ids) > 0) & (ids[pos] == lab if len(ids) else False)
    out: np.ndarray = np.where(hit, codes[pos] if len(ids) else 0, 0).astype(np.float32)
    return out
