"""What a resumable training state was trained on (its resume record), and the species a run trains.

A ``*.last.pt`` keeps a record of its data's content identities and of the settings that change what is
learnt; :func:`record_differences` says how a new run differs from it (a resume is then refused).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ParameterError
from ..models import UNet3D
from ..species import SpeciesTable
from ._sampler import TrainingVolume

if TYPE_CHECKING:
    from ._config import TrainingConfig

__all__ = ["LEARNING_SETTINGS", "RESUME_RECORD_FORMAT", "file_identity", "volume_identity", "learning_settings",
           "record_differences", "legacy_differences", "species_to_train", "with_new_species", "species_identity"]


# ------------------------------------------------------------------ what a resumable state was trained on

#: :class:`TrainingConfig` fields that change what is learned: a resume with another value is refused.
#: Not among them: ``epochs`` (a longer run continues the same one; the cosine schedule stretches to it),
#: ``patience`` and ``min_delta`` (when to stop, what counts as better), ``amp`` (arithmetic precision on
#: CUDA), ``max_minutes`` and ``snapshot_every``.
LEARNING_SETTINGS = ("patch_size", "batch_size", "steps_per_epoch", "validation_fraction", "validation_batches",
                     "learning_rate", "lr_factor", "lr_patience", "jitter", "background_fraction", "rotate",
                     "flip", "intensity", "center_weight", "center_target", "invert", "lr_schedule", "seed",
                     "freeze_backbone", "species_loss")

#: Version of the resume record kept in ``*.last.pt`` under ``"resume_record"``.
RESUME_RECORD_FORMAT = 1


def file_identity(obj: Any) -> str | None:
    """Content identity of one input (neither its path nor its modification time: a copy keeps it).

    A file: :func:`cryodet_dask.io.source_identity`.  A directory (a Zarr store): a digest of every file's
    relative path and content.  A NumPy array: a digest of its dtype, shape and bytes.  Anything else
    (a Dask array): ``None``, described by the volume's statistics only.
    """
    import hashlib

    from ..io import source_identity

    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_dir():
            return source_identity(path)
        h = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                fp = Path(root) / f
                h.update(f"{fp.relative_to(path).as_posix()}\0{fp.stat().st_size}\0".encode())
                with open(fp, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
        return f"tree-sha256:{h.hexdigest()}"
    if isinstance(obj, np.ndarray):
        h = hashlib.sha256(f"{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
        return f"array-sha256:{h.hexdigest()}"
    return None


def volume_identity(vol: TrainingVolume, tomogram: Any, labels: Any, center: Any = None) -> dict[str, Any]:
    """What identifies one training or validation volume: its files' content identities plus the
    tomogram's global statistics and the label map's particle table (computed anyway, so free)."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(vol.particles):
        a = np.ascontiguousarray(vol.particles[key])
        h.update(f"{key}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return {"name": vol.name, "tomogram": file_identity(tomogram), "labels": file_identity(labels),
            "center": file_identity(center) if center is not None else None,
            "shape": [int(s) for s in vol.shape], "mean": float(vol.mean), "std": float(vol.std),
            "particles": int(vol.particles["ids"].size), "particle_table": h.hexdigest()}


def learning_settings(cfg: TrainingConfig, heads: Sequence[str], held_out: bool) -> dict[str, Any]:
    """The :data:`LEARNING_SETTINGS` that take effect for this network and validation."""
    out: dict[str, Any] = {}
    for name in LEARNING_SETTINGS:
        v = getattr(cfg, name)
        if name in ("center_weight", "center_target") and "center" not in heads:
            v = None  # no centre head: not used
        if name == "species_loss" and v == "voxel":
            v = None  # the species loss of runs from before the option (and of species-agnostic networks)
        if name == "validation_fraction" and not held_out:
            v = None  # validation tomograms given: not used
        out[name] = list(v) if isinstance(v, tuple) else v
    return out


def record_differences(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first way the resume record ``stored`` differs from ``current`` (None: the same run).

    A key only one of them has compares as ``None`` on the other side, so a key added later (e.g. the
    species of a multi-class network) keeps old records valid only where its value is ``None``.
    """
    for key in [*current, *(k for k in stored if k not in current)]:
        if key in ("format", "names"):
            continue
        old, new = stored.get(key), current.get(key)
        if old == new:
            continue
        if key in ("training_data", "validation_data"):
            what = "training" if key == "training_data" else "validation"
            if old is None:
                return "validation tomograms where it was validated on held-out parts of its training tomograms"
            if new is None:
                return "validation on held-out parts of the training tomograms where it had validation tomograms"
            if len(old) != len(new):
                return f"{len(new)} {what} tomograms where it was trained on {len(old)}"
            strip = [{k: v for k, v in d.items() if k != "name"} for d in old]
            now = [{k: v for k, v in d.items() if k != "name"} for d in new]
            if strip == now:
                continue  # the same files under other names (moved or copied)
            if sorted(map(repr, strip)) == sorted(map(repr, now)):
                return f"the same {what} tomograms in another order (the order decides the sampling)"
            for i, (a, b) in enumerate(zip(strip, now)):
                if a != b:
                    parts = {"tomogram": ("tomogram", "shape", "mean", "std"),
                             "labels": ("labels", "particles", "particle_table"), "centre target": ("center",)}
                    part = next((p for p, ks in parts.items() if any(a.get(k) != b.get(k) for k in ks)), "tomogram")
                    return (f"other {what} data: {new[i].get('name')} ({what} pair {i + 1}: its {part} is not "
                            f"the {part} the state was trained on)")
        if key == "settings":
            old, new = old or {}, new or {}
            diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k)]
            return "other training settings (" + ", ".join(diffs) + ")"
        if key == "init":
            return "other start weights (--init) than the state was trained from"
        return f"another {key} ({old!r} -> {new!r})"
    return None


def legacy_differences(state: dict[str, Any], description: dict[str, Any], settings: dict[str, Any],
                       defaults: dict[str, Any]) -> str | None:
    """For a state written before resume records: compare what it did store (data names, shapes,
    particle counts, voxel sizes, validation, settings, start weights) with this run."""
    old = (state.get("config") or {}).get("training") or {}
    if old.get("data") != description["data"]:
        return "other training data (tomogram names, shapes, particle counts or voxel sizes differ)"
    if old.get("validation") != description["validation"]:
        return "other validation data"
    old_settings = {**defaults, "center_target": "distance", **(old.get("settings") or {})}
    old_settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in old_settings.items()}
    diffs = [f"{k} {old_settings.get(k)!r} -> {v!r}" for k, v in settings.items()
             if v is not None and old_settings.get(k) != v]
    if diffs:
        return "other training settings (" + ", ".join(diffs) + ")"
    old_init = (old.get("init") or {}).get("sha256")
    new_init = (description.get("init") or {}).get("sha256")
    if old_init != new_init:
        return "other start weights (--init) than the state was trained from"
    return None


def species_to_train(species: SpeciesTable | Sequence[str] | None, current: SpeciesTable,
                   init: Any, replace: bool) -> SpeciesTable:
    """The species to train: those asked for, else the start weights' (or one, ``particle``)."""
    if species is None:
        return current
    table = species if isinstance(species, SpeciesTable) else SpeciesTable.of(species)
    if init is not None and table.names != current.names and not replace:
        raise ParameterError(f"{init}: its network knows the species {', '.join(current.names)}, not "
                             f"{', '.join(table.names)}; ask for a new species output layer "
                             f"(--replace-species) to fine-tune it to other species")
    return table


def with_new_species(start: UNet3D, net: UNet3D) -> dict[str, torch.Tensor]:
    """``start``'s weights for ``net``; where their species (or species head) differ, ``net``'s own
    (fresh) species branch and head (the mask and centre heads and the backbone are ``start``'s)."""
    state = start.state_dict()
    if start.config.species == net.config.species and start.config.species_head == net.config.species_head:
        return state
    fresh = net.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith("species_")}
    return {k: kept.get(k, v) for k, v in fresh.items()}


def species_identity(source: Any) -> Any:
    """What a resume record keeps of a particle species table: its file identity or the mapping's content."""
    if isinstance(source, Mapping):
        return sorted((int(k), str(v)) for k, v in source.items())
    return file_identity(source)
