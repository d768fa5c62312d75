"""copick projects on a local filesystem: find a run's tomogram, write picks and instance labels back.

copick (the CZ cryo-ET Data Portal's data model) keeps a project as a JSON config whose
``overlay_root`` (and optional ``static_root``) point at folders laid out as::

    ROOT/ExperimentRuns/RUN/VoxelSpacing10.000/wbp.zarr                 tomogram (OME-Zarr 0.4, Zarr v2)
    ROOT/ExperimentRuns/RUN/Picks/USER_SESSION_OBJECT.json              picks (Å)
    ROOT/ExperimentRuns/RUN/InstanceSegmentations/10.000_USER_SESSION_NAME.zarr   instance labels

This module reads and writes that layout directly (the same names as copick 1.31's
``filesystem`` implementation), because the ``copick`` package pins ``zarr<3`` and cannot be
installed beside this package's Zarr v3 stores.  Tomograms are read from the static root first,
then the overlay; everything is written to the overlay, as copick does.  Only local roots
(``local://`` or a plain path) are supported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da

from ..errors import InputError, ParameterError

__all__ = ["CopickProject"]


def _local_root(url: str | None, config: Path) -> Path | None:
    if not url:
        return None
    text = str(url)
    if text.startswith("local://"):
        text = text[len("local://"):]
    elif "://" in text:
        raise ParameterError(f"{config}: copick root {url!r} is not on a local filesystem; cryodet-dask reads "
                             "local copick projects only (copy the run, e.g. with `copick sync`)")
    root = Path(text).expanduser()
    return root if root.is_absolute() else (config.parent / root)


@dataclass(frozen=True)
class CopickProject:
    """A local copick project, from its JSON config."""

    config_path: Path
    overlay_root: Path
    static_root: Path | None
    objects: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, config: str | os.PathLike[str]) -> CopickProject:
        """Read the config; one-line :class:`InputError` for a missing or malformed file."""
        path = Path(config)
        if not path.is_file():
            raise InputError(f"{path}: copick config not found")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable copick config ({str(exc).splitlines()[0]})") from None
        if not isinstance(doc, dict) or "overlay_root" not in doc:
            raise InputError(f"{path}: not a copick config (no overlay_root)")
        overlay = _local_root(doc.get("overlay_root"), path)
        assert overlay is not None
        objects = {str(o["name"]): dict(o) for o in doc.get("pickable_objects", []) if isinstance(o, dict) and "name" in o}
        return cls(config_path=path, overlay_root=overlay, static_root=_local_root(doc.get("static_root"), path),
                   objects=objects)

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
        """Refuse an object name the config does not list (when it lists any)."""
        if self.objects and name not in self.objects:
            raise ParameterError(f"{self.config_path}: no pickable object {name!r}; the config lists "
                                 f"{', '.join(sorted(self.objects))} (give --copick-object)")

    def tomogram(self, run: str, voxel_spacing: float, tomo_type: str) -> Path:
        """The OME-Zarr store of ``run``'s tomogram at ``voxel_spacing`` Å of type ``tomo_type``."""
        if run not in self.runs():
            raise InputError(f"{self.config_path}: no run {run!r} (runs: {', '.join(self.runs()) or 'none'})")
        folder = f"VoxelSpacing{float(voxel_spacing):.3f}"
        for root in self._roots():
            store = root / "ExperimentRuns" / run / folder / f"{tomo_type}.zarr"
            if store.is_dir():
                return store
        found = sorted({p.relative_to(root / "ExperimentRuns" / run).as_posix() for root in self._roots()
                        for p in (root / "ExperimentRuns" / run).glob("VoxelSpacing*/*.zarr")})
        raise InputError(f"{self.config_path}: run {run!r} has no {folder}/{tomo_type}.zarr "
                         f"(it has: {', '.join(found) or 'no tomogram'}); give --voxel-spacing and --tomo-type")

    def picks_path(self, run: str, user_id: str, session_id: str, object_name: str) -> Path:
        return self.overlay_root / "ExperimentRuns" / run / "Picks" / f"{user_id}_{session_id}_{object_name}.json"

    def segmentation_path(self, run: str, voxel_spacing: float, user_id: str, session_id: str, name: str) -> Path:
        return (self.overlay_root / "ExperimentRuns" / run / "InstanceSegmentations"
                / f"{float(voxel_spacing):.3f}_{user_id}_{session_id}_{name}.zarr")

    def write_picks(self, run: str, particles: Any, *, voxel_size: float, user_id: str, session_id: str,
                    object_name: str) -> Path:
        """``particles`` (``x, y, z`` in voxels) as the run's pick set, replacing an older one of this name."""
        from ._write import write_particles

        path = self.picks_path(run, user_id, session_id, object_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_particles(particles, path, format="copick", voxel_size=voxel_size, tomogram_name=run,
                               object_name=object_name, user_id=user_id, session_id=session_id, overwrite=True)

    def write_instance_labels(self, run: str, labels: da.Array, *, voxel_size: float, user_id: str,
                              session_id: str, name: str) -> Path:
        """The instance label image as the run's copick instance segmentation (OME-Zarr 0.4 in Zarr v2,
        one level ``0``), streamed chunk by chunk, written under a temporary name and renamed."""
        import zarr

        from ..io import atomic_output

        path = self.segmentation_path(run, voxel_size, user_id, session_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        chunks = tuple(int(c[0]) for c in labels.chunks)
        with atomic_output(path, overwrite=True) as tmp:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            arr = group.create_array("0", shape=labels.shape, chunks=chunks, dtype=labels.dtype, fill_value=0)
            group.attrs.update({"multiscales": [{
                "version": "0.4", "name": name,
                "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
                "datasets": [{"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": [float(voxel_size)] * 3}]}],
            }]})
            da.store(labels.rechunk(chunks), arr, lock=False)  # type: ignore[arg-type]  # a zarr array is a valid target
        return path
