"""Training from picks: label maps and species tables built from particle lists, for ``train --picks``.

A user with picks (RELION, copick, CZII, CSV ...) and tomograms trains in one command::

    cryodet-dask train net.pt -t a.mrc --picks a.star -t b.mrc --picks b.star \\
        --species ribosome:280,proteasome:190 --class-names 1=ribosome,2=proteasome

Each tomogram's picks become an instance label map (pick ``i`` = label ``i + 1``, a sphere of its species'
diameter in Å over the tomogram's voxel size) and, for a multi-species network, the species of each label id
(``LABELS_species.csv``, the table ``cryodet-dask labels`` writes); both go into ``OUT_labels/`` beside
``OUT.pt``, painted chunk by chunk by :func:`cryodet_dask.annotations.write_label_map`.

Work happens in two steps so that bad input writes nothing: :func:`plan_from_picks` /
:func:`plan_from_copick` read and check everything (one-line errors), :func:`build_labels` writes.  A label
map whose inputs have not changed since the last run is kept as it is (its content identity, recorded by a
resumable training, stays the same), so that the same command run again resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..annotations import ParticleTable, pick_species, read_coordinates, species_table_path
from ..errors import InputError, ParameterError
from ..species import SpeciesTable

__all__ = ["PicksJob", "labels_folder", "species_radii", "plan_from_picks", "plan_from_copick", "build_labels"]

log = logging.getLogger("cryodet_dask")

#: the record of what each label map in ``OUT_labels/`` was painted from
MANIFEST = "labels.json"


@dataclass(frozen=True, eq=False)
class PicksJob:
    """One tomogram's label map to paint from its picks (see :func:`build_labels`)."""

    tomogram: str
    table: ParticleTable
    shape: tuple[int, int, int]
    voxel_size: float
    radius: np.ndarray
    species: list[str] | None
    labels: Path

    @property
    def species_csv(self) -> Path | None:
        """The species table of the label map (``None`` for a species-agnostic training)."""
        return species_table_path(self.labels) if self.species is not None else None

    def key(self) -> str:
        """What the label map and its species table are painted from (picks, radii, shape, species)."""
        h = hashlib.sha256()
        for a in (self.table.zyx, self.radius):
            a = np.ascontiguousarray(a, np.float64)
            h.update(f"{a.shape}".encode())
            h.update(a.tobytes())
        h.update(json.dumps([list(self.shape), self.voxel_size, self.species]).encode())
        return h.hexdigest()


def labels_folder(output: str | os.PathLike[str]) -> Path:
    """Where ``train OUT.pt --picks ...`` writes its label maps: ``OUT_labels/`` beside the checkpoint."""
    out = Path(output)
    return out.with_name(f"{out.stem if out.suffix else out.name}_labels")


def species_radii(species: Sequence[str], table: SpeciesTable, voxel_size: float, where: str) -> np.ndarray:
    """Sphere radius in voxels of each pick: its species' diameter (Å) / 2 / ``voxel_size``.

    One line for a pick of a species that ``table`` does not list, or a species without a diameter.
    """
    index = {s.name: s for s in table}
    unknown = sorted(set(species) - set(index))
    if unknown:
        raise ParameterError(f"{where}: picks of species {unknown[0]!r}, which is not among --species "
                             f"({', '.join(table.names)}); add it as {unknown[0]}:DIAMETER_A")
    for name in sorted(set(species)):
        if index[name].diameter is None:
            raise ParameterError(f"species {name!r} needs a diameter in Å to paint its picks: --species "
                                 f"{name}:DIAMETER_A")
    return np.array([cast(float, index[n].diameter) / 2.0 / voxel_size for n in species], np.float64)


def _tomogram(path: str | os.PathLike[str], voxel_size: float | None) -> tuple[tuple[int, int, int], float]:
    from ..io import load

    tomo = load(path)
    shape = cast(tuple[int, int, int], tuple(int(s) for s in tomo.shape))
    if len(shape) != 3:
        raise InputError(f"{path}: training tomograms must be 3D, got shape {shape}")
    vs = voxel_size or tomo.voxel_size
    if not vs:
        raise ParameterError(f"{path}: the header gives no voxel size; the picks' diameters in Å need it "
                             f"(--voxel-size)")
    return shape, float(vs)


def _tomogram_rows(picks: Path, tomogram: str | os.PathLike[str]) -> str | None:
    """The tomogram name to select in a picks file of several tomograms: the one named like ``tomogram``."""
    from ..particles import read_particles

    table = read_particles(picks, units="voxel", allow_empty=True)  # the names only: no unit conversion
    if "tomo_name" not in table.columns:
        return None
    names = sorted(set(table["tomo_name"].astype(str)))
    if len(names) <= 1:
        return None
    stem = Path(tomogram).name
    for suffix in (".zarr", ".mrc", ".rec", ".map", ".st"):
        stem = stem.removesuffix(suffix)
    for name in names:
        if name == stem or Path(name).stem == stem:
            return name
    raise InputError(f"{picks}: holds particles of several tomograms ({', '.join(names[:6])}"
                     f"{', ...' if len(names) > 6 else ''}) and none is named like {Path(tomogram).name}; name "
                     "the tomogram file after its rlnTomoName / tomogram column, or split the picks")


def _unique_names(paths: Sequence[str]) -> list[str]:
    stems = []
    for p in paths:
        name = Path(p).name
        for suffix in (".zarr", ".mrc", ".rec", ".map"):
            name = name.removesuffix(suffix)
        stems.append(name or "tomogram")
    return [s if stems.count(s) == 1 else f"{k + 1:02d}-{s}" for k, s in enumerate(stems)]


def plan_from_picks(pairs: Sequence[tuple[str, str]], output: str | os.PathLike[str], *,
                    species: SpeciesTable | None, class_names: Mapping[str, str] | None = None,
                    voxel_size: float | None = None, particle_diameter: float | None = None) -> list[PicksJob]:
    """Read and check every (tomogram, picks) pair; nothing is written.

    Parameters
    ----------
    pairs : sequence of (tomogram, picks)
        MRC or Zarr tomograms and their particle lists (any format of
        :func:`~cryodet_dask.particles.read_particles`).  A picks file of several tomograms gives
        the rows of the one named like the tomogram file.
    output : path-like
        The checkpoint; the label maps go into :func:`labels_folder`.
    species : SpeciesTable, optional
        A multi-species training: every pick needs a species of this table (its class column, renamed by
        ``class_names``), painted at its species' diameter.  ``None``: species-agnostic, every pick a sphere
        of ``particle_diameter`` Å.
    voxel_size : float, optional
        Å per voxel of every tomogram (default: its header's).
    """
    if species is None and particle_diameter is None:
        raise ParameterError("training from --picks paints spheres: give --species NAME:DIAMETER_A,... (a "
                             "multi-species network) or --particle-diameter ANGSTROM (a species-agnostic one)")
    folder = labels_folder(output)
    names = _unique_names([t for t, _ in pairs])
    jobs = []
    for (tomo, picks), name in zip(pairs, names):
        shape, vs = _tomogram(tomo, voxel_size)
        path = Path(picks)
        if not path.is_file():
            raise InputError(f"{path}: particle file not found")
        from ..particles import TomogramInfo

        table = read_coordinates(path, voxel_size=vs, tomogram=TomogramInfo(shape=shape, voxel_size=vs),
                                 tomogram_name=_tomogram_rows(path, tomo))
        jobs.append(_job(tomo, table, shape, vs, species, dict(class_names or {}), particle_diameter,
                         folder / f"{name}_labels.mrc"))
    return jobs


def _job(tomo: str, table: ParticleTable, shape: tuple[int, int, int], vs: float, species: SpeciesTable | None,
         class_names: dict[str, str], particle_diameter: float | None, labels: Path) -> PicksJob:
    if species is not None:
        kinds = pick_species(table, class_names, required=True)
        assert kinds is not None
        radius = species_radii(kinds, species, vs, table.source)
        absent = [n for n in species.names if n not in set(kinds)]
        if absent:
            log.info("%s: no picks of %s", table.source, ", ".join(absent))
    else:
        kinds = None
        radius = np.full(len(table), float(cast(float, particle_diameter)) / 2.0 / vs)
    return PicksJob(tomogram=str(tomo), table=table, shape=shape, voxel_size=vs, radius=radius, species=kinds,
                    labels=labels)


def _copick_picks(project: Any, run: str, user: str | None, session: str | None) -> dict[str, list[Path]]:
    """The run's pick files by object name (a file's own ``pickable_object_name``), of ``user`` / ``session``."""
    found: dict[str, dict[tuple[str, str], list[Path]]] = {}
    for root in [r for r in (project.static_root, project.overlay_root) if r is not None]:
        for f in sorted((root / "ExperimentRuns" / run / "Picks").glob("*.json")):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"{f}: not a readable copick picks file ({str(exc).splitlines()[0]})") from None
            if not isinstance(doc, dict) or not doc.get("pickable_object_name"):
                raise InputError(f"{f}: not a copick picks file (no pickable_object_name)")
            who = (str(doc.get("user_id", "")), str(doc.get("session_id", "")))
            if (user is not None and who[0] != user) or (session is not None and who[1] != session):
                continue
            found.setdefault(str(doc["pickable_object_name"]), {}).setdefault(who, []).append(f)
    out: dict[str, list[Path]] = {}
    for obj, by in found.items():
        if len(by) > 1:
            whos = ", ".join(f"{u}/{s}" for u, s in sorted(by))
            raise ParameterError(f"{project.config_path}: run {run!r} has picks of {obj!r} by several users/sessions "
                                 f"({whos}); choose with --copick-user and --copick-session")
        out[obj] = next(iter(by.values()))
    return out


def plan_from_copick(config: str | os.PathLike[str], runs: Sequence[str], output: str | os.PathLike[str], *,
                     species: SpeciesTable | None = None, class_names: Mapping[str, str] | None = None,
                     voxel_spacing: float = 10.0, tomo_type: str = "wbp", array: str | None = None,
                     user: str | None = None, session: str | None = None
                     ) -> tuple[list[PicksJob], SpeciesTable | None, float | None]:
    """Read and check the picks of ``runs`` of a copick project; nothing is written.

    The species are ``species`` (objects of other names are left out), else every particle object of the
    config (``is_particle`` not false) with picks in these runs, in the config's order; a species' diameter
    is ``species``' or twice the object's ``radius`` (Å) in the config.  Object names are renamed by
    ``class_names`` and must be copick-safe species names.

    Returns
    -------
    (jobs, species table, particle diameter)
        The table is ``None`` for one species (a species-agnostic training, with that species' diameter).
    """
    from ..particles import CopickProject, TomogramInfo
    from ..particles import check_copick_name as check_name
    from ..species import Species, check_species_name

    project = CopickProject.open(config)
    if not runs:
        raise ParameterError("--copick needs the runs to train on: --runs A,B")
    if len(set(runs)) != len(runs):
        raise ParameterError(f"run named twice in --runs: {min(r for r in runs if list(runs).count(r) > 1)}")
    names = dict(class_names or {})
    rename = {obj: names.get(obj, obj) for obj in project.objects}
    stores, picks = {}, {}
    for run in runs:
        check_name("run", run, "--runs")
        stores[run] = project.tomogram(run, voxel_spacing, tomo_type, array)
        picks[run] = _copick_picks(project, run, user, session)
    seen = {obj for by in picks.values() for obj in by}
    if species is None:
        objs = [o for o, d in project.objects.items() if o in seen and d.get("is_particle", True) is not False]
        objs += sorted(o for o in seen if o not in project.objects)
        if not objs:
            raise InputError(f"{config}: runs {', '.join(runs)} have no picks of a particle object"
                             f"{' of user ' + user if user else ''}{' session ' + session if session else ''}")
        made = []
        for o in objs:
            radius = project.objects.get(o, {}).get("radius")
            sp = check_species_name(rename.get(o, names.get(o, o)))
            if not isinstance(radius, int | float) or isinstance(radius, bool) or not radius > 0:
                raise ParameterError(f"{config}: pickable object {o!r} has no radius; give the diameters with "
                                     f"--species {sp}:DIAMETER_A,...")
            made.append(Species(sp, 2.0 * float(radius)))
        table = SpeciesTable(tuple(made))
    else:
        filled = []
        for s in species:
            obj = next((o for o, n in rename.items() if n == s.name), s.name)
            radius = project.objects.get(obj, {}).get("radius")
            d = s.diameter if s.diameter is not None else (2.0 * float(radius) if isinstance(radius, int | float)
                                                            and not isinstance(radius, bool) and radius > 0 else None)
            filled.append(Species(s.name, d, s.colour))
        table = SpeciesTable(tuple(filled))
    wanted = set(table.names)
    folder = labels_folder(output)
    jobs = []
    for run in runs:
        shape, vs = _tomogram(stores[run], voxel_spacing)
        info = TomogramInfo(shape=shape, voxel_size=vs)
        zyx, kinds = [], []
        for obj, files in picks[run].items():
            sp = rename.get(obj, names.get(obj, obj))
            if sp not in wanted:
                log.info("copick run %s: picks of %r left out (not among the species %s)", run, obj,
                         ", ".join(table.names))
                continue
            for f in files:
                t = read_coordinates(f, voxel_size=vs, tomogram=info, allow_empty=True)
                zyx.append(t.zyx)
                kinds += [sp] * len(t)
        if not kinds:
            raise InputError(f"{config}: run {run!r} has no picks of {', '.join(table.names)}")
        ptable = ParticleTable(zyx=np.concatenate(zyx), angles=None, classes=kinds,
                               source=f"copick run {run}")
        multi = table if len(table) > 1 else None
        diameter = table[0].diameter if multi is None else None
        jobs.append(_job(str(stores[run]), ptable, shape, vs, multi, {}, diameter, folder / f"{run}_labels.mrc"))
    return jobs, (table if len(table) > 1 else None), (table[0].diameter if len(table) == 1 else None)


def build_labels(jobs: Sequence[PicksJob], *, chunks: int | Sequence[int] = 128, progress: bool = False) -> None:
    """Paint each job's label map (and write its species table) into its folder, chunk by chunk.

    A label map whose picks, radii, shape and species are those recorded for it in the folder's
    ``labels.json`` is kept as it is.
    """
    from ..annotations import write_label_map, write_species_table

    if not jobs:
        return
    folder = jobs[0].labels.parent
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    for job in jobs:
        key = job.key()
        csv = job.species_csv
        entry = manifest.get(job.labels.name)
        if isinstance(entry, dict) and entry.get("key") == key and job.labels.exists() \
                and (csv is None or csv.exists()):
            log.info("%s: kept (painted from the same picks)", job.labels)
            continue
        write_label_map(job.labels, job.shape, job.table, radius=job.radius, voxel_size=job.voxel_size,
                        chunks=chunks, overwrite=True, progress=progress)
        if csv is not None and job.species is not None:
            write_species_table(csv, job.species, overwrite=True)
        manifest[job.labels.name] = {"key": key, "tomogram": job.tomogram, "picks": job.table.source,
                                     "particles": len(job.table), "voxel_size": job.voxel_size,
                                     "species": sorted(set(job.species)) if job.species is not None else None}
        tmp = manifest_path.with_name(f".{MANIFEST}.tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, manifest_path)
        log.info("%s: %d particles painted from %s", job.labels, len(job.table), job.table.source)
