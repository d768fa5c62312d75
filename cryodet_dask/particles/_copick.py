"""copick projects on a local filesystem: find a run's tomogram, write picks and instance labels back.

copick (the CZ cryo-ET Data Portal's data model) keeps a project as a JSON config whose
``overlay_root`` (and optional ``static_root``) point at folders laid out as::

    ROOT/ExperimentRuns/RUN/VoxelSpacing10.000/wbp.zarr                 tomogram (OME-Zarr 0.4, Zarr v2)
    ROOT/ExperimentRuns/RUN/Picks/USER_SESSION_OBJECT.json              picks (Å)
    ROOT/ExperimentRuns/RUN/InstanceSegmentations/10.000_USER_SESSION_NAME.zarr   instance labels

This module reads and writes that layout directly (the same names as copick 1.31's
``filesystem`` implementation), because the ``copick`` package pins ``zarr<3`` and cannot be
installed beside this package's Zarr v3 stores; ``tests/test_copick_conformance.py`` checks the
result with the real package, in a virtual environment of its own.  Tomograms are read from the
static root first, then the overlay; everything is written to the overlay, as copick does.  Only
local roots (``local://`` or a plain path) are supported.

Names (run, user, session, object) become file and folder names, so they must be copick-safe:
letters, digits, ``-`` and ``_`` (:func:`check_name`).  Existing picks or segmentations of the same
user, session and object are never replaced unless asked (``overwrite``): a project is shared by a lab.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da

from ..errors import InputError, OutputExistsError, ParameterError

if TYPE_CHECKING:
    from zarr.core.common import JSON

__all__ = ["CopickProject", "check_name", "SAFE_NAME"]

#: what copick accepts in a run, user, session or object name (they become file names)
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_name(kind: str, value: Any, flag: str | None = None) -> str:
    """``value`` if it is a copick-safe name (letters, digits, ``-``, ``_``), else a one-line :class:`ParameterError`."""
    text = value if isinstance(value, str) else None
    if text is None or not SAFE_NAME.fullmatch(text):
        hint = f" (give {flag})" if flag else ""
        raise ParameterError(f"copick {kind} {value!r} is not a copick-safe name: use letters, digits, '-' and '_' "
                             f"only{hint}")
    return text


#: :func:`check_name` under the name the package exports.
check_copick_name = check_name


def _local_root(url: Any, config: Path, key: str) -> Path | None:
    if url is None and key == "static_root":
        return None
    if not isinstance(url, str) or not url.strip():
        raise InputError(f"{config}: {key} must be a path or a local:// URL (a non-empty string), got {url!r}")
    text = url.strip()
    if text.startswith("local://"):
        text = text[len("local://"):]
    elif "://" in text:
        raise ParameterError(f"{config}: copick root {url!r} is not on a local filesystem; cryodet-dask reads "
                             "local copick projects only (copy the run, e.g. with `copick sync`)")
    if not text:
        raise InputError(f"{config}: {key} {url!r} names no folder")
    root = Path(text).expanduser()
    return root if root.is_absolute() else (config.parent / root)


def _objects(doc: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    objs = doc.get("pickable_objects", [])
    if objs is None:
        return {}
    if not isinstance(objs, list):
        raise InputError(f"{path}: pickable_objects must be a list of objects, got {type(objs).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for k, o in enumerate(objs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not o["name"]:
            raise InputError(f"{path}: pickable_objects[{k}] has no name (a non-empty string): {o!r}"[:300])
        out[o["name"]] = dict(o)
    return out


#: the compressor of the instance segmentations (zarr v2 metadata; bit-shuffle)
_BLOSC: dict[str, JSON] = {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2}


@dataclass(frozen=True)
class CopickProject:
    """A local copick project, from its JSON config."""

    config_path: Path
    overlay_root: Path
    static_root: Path | None
    objects: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, config: str | os.PathLike[str]) -> CopickProject:
        """Read and check the config; one-line :class:`InputError` for a missing or malformed file or a
        bad value (``overlay_root`` missing, null or not a string; ``static_root`` not a string;
        ``pickable_objects`` not a list of named objects)."""
        path = Path(config)
        if not path.is_file():
            raise InputError(f"{path}: copick config not found")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable copick config ({str(exc).splitlines()[0]})") from None
        if not isinstance(doc, dict) or "overlay_root" not in doc:
            raise InputError(f"{path}: not a copick config (no overlay_root)")
        overlay = _local_root(doc.get("overlay_root"), path, "overlay_root")
        assert overlay is not None
        return cls(config_path=path, overlay_root=overlay,
                   static_root=_local_root(doc.get("static_root"), path, "static_root"), objects=_objects(doc, path))

    def _roots(self) -> list[Path]:
        return [r for r in (self.static_root, self.overlay_root) if r is not None]

    def runs(self) -> list[str]:
        """Every run of the project (static and overlay), sorted."""
        names: set[str] = set()
        for root in self._roots():
            runs = root / "ExperimentRuns"
            if runs.is_dir():
                names.update(p.name for p in runs.iterdir() if p.is_dir())
        return sorted(names)

    def check_object(self, name: str) -> None:
        """Refuse an object name that is not copick-safe, or that the config does not list (when it lists any)."""
        check_name("object", name, "--copick-object")
        if self.objects and name not in self.objects:
            raise ParameterError(f"{self.config_path}: no pickable object {name!r}; the config lists "
                                 f"{', '.join(sorted(self.objects))} (give --copick-object)")

    def tomogram(self, run: str, voxel_spacing: float, tomo_type: str, array: str | None = None) -> Path:
        """The Zarr of ``run``'s tomogram at ``voxel_spacing`` Å of type ``tomo_type``.

        The OME-Zarr group when it has ``multiscales`` metadata (its first level is read) and ``array`` is
        None; else the group's array named ``array``, or its only array (``store/NAME``); a group with
        several arrays and no ``multiscales`` needs ``array`` (``--copick-array``).
        """
        check_name("run", run, "--run")
        check_name("tomogram type", tomo_type, "--tomo-type")
        if run not in self.runs():
            raise InputError(f"{self.config_path}: no run {run!r} (runs: {', '.join(self.runs()) or 'none'})")
        folder = f"VoxelSpacing{float(voxel_spacing):.3f}"
        for root in self._roots():
            store = root / "ExperimentRuns" / run / folder / f"{tomo_type}.zarr"
            if store.is_dir():
                return self._array(store, array)
        found = sorted({p.relative_to(root / "ExperimentRuns" / run).as_posix() for root in self._roots()
                        for p in (root / "ExperimentRuns" / run).glob("VoxelSpacing*/*.zarr")})
        raise InputError(f"{self.config_path}: run {run!r} has no {folder}/{tomo_type}.zarr "
                         f"(it has: {', '.join(found) or 'no tomogram'}); give --voxel-spacing and --tomo-type")

    @staticmethod
    def _array(store: Path, array: str | None) -> Path:
        import zarr

        try:
            node = zarr.open(str(store), mode="r")
        except Exception as exc:  # zarr raises several types for unreadable stores
            raise InputError(f"{store}: not a readable Zarr store ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                             ) from None
        if not isinstance(node, zarr.Group):
            if array is not None:
                raise ParameterError(f"{store}: a single Zarr array, not a group: leave out --copick-array")
            return store
        members = sorted(k for k, _ in node.arrays())
        if array is not None:
            if array not in members:
                raise InputError(f"{store}: has no array {array!r} (arrays: {', '.join(members) or 'none'}; "
                                 "--copick-array)")
            return store / array
        attrs = dict(node.attrs)
        ome = attrs.get("ome", attrs)
        if isinstance(ome, dict) and ome.get("multiscales"):
            return store
        if len(members) == 1:
            return store / members[0]
        raise InputError(f"{store}: a Zarr group without multiscales metadata and with "
                         f"{'arrays ' + ', '.join(members) if members else 'no array'}; "
                         "name the tomogram's array with --copick-array NAME")

    def picks_path(self, run: str, user_id: str, session_id: str, object_name: str) -> Path:
        for kind, v in (("run", run), ("user", user_id), ("session", session_id), ("object", object_name)):
            check_name(kind, v)
        return self.overlay_root / "ExperimentRuns" / run / "Picks" / f"{user_id}_{session_id}_{object_name}.json"

    def segmentation_path(self, run: str, voxel_spacing: float, user_id: str, session_id: str, name: str) -> Path:
        for kind, v in (("run", run), ("user", user_id), ("session", session_id), ("object", name)):
            check_name(kind, v)
        return (self.overlay_root / "ExperimentRuns" / run / "InstanceSegmentations"
                / f"{float(voxel_spacing):.3f}_{user_id}_{session_id}_{name}.zarr")

    def check_free(self, run: str, voxel_spacing: float, user_id: str, session_id: str, object_name: str) -> None:
        """Refuse (one line) when the run already has picks or an instance segmentation of this user, session
        and object: someone's data in a shared project is only replaced with ``--overwrite``."""
        taken = [p for p in (self.picks_path(run, user_id, session_id, object_name),
                             self.segmentation_path(run, voxel_spacing, user_id, session_id, object_name))
                 if p.exists()]
        if taken:
            raise self._taken(run, taken, user_id, session_id, object_name)

    def _taken(self, run: str, taken: list[Path], user_id: str, session_id: str, object_name: str) -> OutputExistsError:
        rel = " and ".join(p.relative_to(self.overlay_root).as_posix() for p in taken)
        return OutputExistsError(
            f"{self.config_path}: run {run!r} already has {rel} (user {user_id!r}, session {session_id!r}, "
            f"object {object_name!r}); give --overwrite to replace it, or write a new session "
            "with --copick-session NAME")

    def write_picks(self, run: str, particles: Any, *, voxel_size: float, user_id: str, session_id: str,
                    object_name: str, overwrite: bool = False) -> Path:
        """``particles`` (``x, y, z`` in voxels) as the run's pick set; an existing one of this user, session
        and object is replaced only with ``overwrite``.

        Each point's ``instance_id`` is the particle's label in the instance segmentation written beside it:
        the table's ``instance`` column, else its ``id`` (detect's ``id`` is the label: row i is label i + 1).
        """
        from ._write import write_particles

        path = self.picks_path(run, user_id, session_id, object_name)
        if path.exists() and not overwrite:
            raise self._taken(run, [path], user_id, session_id, object_name)
        if "instance" not in particles.columns and "id" in particles.columns:
            particles = particles.assign(instance=particles["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_particles(particles, path, format="copick", voxel_size=voxel_size, tomogram_name=run,
                               object_name=object_name, user_id=user_id, session_id=session_id, overwrite=overwrite)

    def write_instance_labels(self, run: str, labels: da.Array, *, voxel_size: float, user_id: str,
                              session_id: str, name: str, overwrite: bool = False) -> Path:
        """The instance label image as the run's copick instance segmentation, as copick writes one: OME-NGFF
        0.4 in Zarr v2 with ``/`` as the dimension separator (what copick's fsspec store reads; with ``.``
        copick reads every voxel as 0), one level ``0``, Blosc-zstd; streamed chunk by chunk, written under a
        temporary name and renamed.  An existing segmentation of this name is replaced only with ``overwrite``."""
        import zarr

        from ..io import atomic_output

        path = self.segmentation_path(run, voxel_size, user_id, session_id, name)
        if path.exists() and not overwrite:
            raise self._taken(run, [path], user_id, session_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        chunks = tuple(int(c[0]) for c in labels.chunks)
        with atomic_output(path, overwrite=overwrite) as tmp:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            arr = group.create_array("0", shape=labels.shape, chunks=chunks, dtype=labels.dtype, fill_value=0,
                                     chunk_key_encoding={"name": "v2", "separator": "/"},
                                     compressors=_BLOSC)
            group.attrs.update({"multiscales": [{
                "version": "0.4", "name": name,
                "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
                "datasets": [{"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": [float(voxel_size)] * 3}]}],
            }]})
            da.store(labels.rechunk(chunks), arr, lock=False)  # type: ignore[arg-type]  # a zarr array is a valid target
        return path
