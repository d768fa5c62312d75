"""``detect --copick``: the runs of a local copick project in, picks and instance segmentations back out."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InputError, ParameterError
from ._batch import outputs_complete

__all__ = ["SKIPPED_RUNS_EXIT", "Copick", "copick_inputs", "copick_status", "write_copick"]

#: exit status of a --copick-runs all batch that skipped a run without the tomogram (the others are complete)
SKIPPED_RUNS_EXIT = 4


def copick_status(copick: Copick | None) -> int:
    """0, or :data:`SKIPPED_RUNS_EXIT` when ``--copick-runs all`` skipped runs without the tomogram."""
    if copick is None or not copick.skipped:
        return 0
    print(f"cryodet-dask: {len(copick.skipped)} copick run(s) skipped for want of the tomogram: "
          f"{', '.join(copick.skipped)}; the others are complete (exit status {SKIPPED_RUNS_EXIT})", file=sys.stderr)
    return SKIPPED_RUNS_EXIT


class Copick(NamedTuple):
    """A checked ``--copick`` batch: the project, each run's tomogram and name, the parameters (the voxel size
    is the VoxelSpacing folder's), the runs skipped for want of a tomogram, and per run what the run record's
    copick section says about the voxel size."""

    project: Any
    stores: list[Path]
    runs: list[str]
    params: Any
    skipped: list[str]
    voxel: dict[str, dict[str, Any]]
    done: set[str]


def copick_inputs(args: argparse.Namespace, params: Any) -> Copick | None:
    """With ``--copick``: the project, the tomogram stores of the chosen runs and the run names;
    everything checked (config, names, runs, tomograms, voxel sizes, object name, output formats, picks and
    segmentations already in the overlay) before any work."""
    import dataclasses

    if not args.copick:
        if args.copick_run or args.copick_runs:
            raise ParameterError("--run/--copick-runs need --copick CONFIG.json")
        if getattr(args, "copick_array", None):
            raise ParameterError("--copick-array needs --copick CONFIG.json")
        return None
    from ..particles import CopickProject
    from ..particles import check_copick_name as check_name

    if args.tomograms or args.tomo_flag:
        raise ParameterError("give either TOMO or --copick, not both")
    check_name("user", args.copick_user, "--copick-user")
    check_name("session", args.copick_session, "--copick-session")
    check_name("tomogram type", args.copick_tomo_type, "--tomo-type")
    project = CopickProject.open(args.copick)
    every = bool(args.copick_runs) and args.copick_runs.strip() == "all"
    if args.copick_runs:
        given = project.runs() if every else [r.strip() for r in args.copick_runs.split(",") if r.strip()]
    else:
        given = list(args.copick_run)
    if not given:
        raise ParameterError(f"{args.copick}: say which runs: --run NAME or --copick-runs all "
                             f"(runs: {', '.join(project.runs()) or 'none'})")
    runs = list(dict.fromkeys(given))  # a run named twice is processed once, under its own name
    if len(runs) < len(given):
        print(f"{len(given) - len(runs)} copick run(s) given more than once: each is processed once",
              file=sys.stderr)
    for r in runs:
        check_name("run", r, "--run")
    species = _model_species(params)
    if species:  # a multi-species model: one pickable object per species, named as the species
        if args.copick_object is not None:
            raise ParameterError("--copick-object: a multi-species model writes one pickable object per species, "
                                 f"named as the species ({', '.join(species)})")
    elif args.copick_object is None:
        particles = [n for n, o in project.objects.items() if o.get("is_particle", True)]
        if len(particles) != 1:
            raise ParameterError(f"{args.copick}: give --copick-object (the config lists "
                                 f"{', '.join(sorted(project.objects)) or 'no object'})")
        args.copick_object = particles[0]
    args.copick_objects = list(species) or [str(args.copick_object)]
    for obj in args.copick_objects:
        project.check_object(obj)
    if "csv" not in params.formats:
        raise ParameterError("--copick writes the picks from the CSV output: keep csv in --formats")
    spacing = float(args.copick_voxel_spacing)
    if params.voxel_size is not None and abs(params.voxel_size / spacing - 1) > 1e-3:
        raise ParameterError(f"-vs {params.voxel_size:g} disagrees with the copick voxel spacing {spacing:g} Å "
                             "(--voxel-spacing): a copick tomogram's voxel size is its VoxelSpacing folder's; "
                             "leave out -vs or give the folder's spacing")
    stores: list[Path] = []
    kept: list[str] = []
    skipped: list[str] = []
    for r in runs:
        try:
            stores.append(project.tomogram(r, spacing, args.copick_tomo_type, getattr(args, "copick_array", None)))
            kept.append(r)
        except InputError as exc:
            if not every or "has no VoxelSpacing" not in str(exc):
                raise
            skipped.append(r)
            print(f"warning: copick run {r!r} skipped: {str(exc).split(': ', 1)[1]}", file=sys.stderr)
    if not kept:
        raise InputError(f"{args.copick}: no run has a VoxelSpacing{spacing:.3f}/{args.copick_tomo_type}.zarr "
                         "tomogram; give --voxel-spacing and --tomo-type")
    same: dict[Path, str] = {}
    for r, st in zip(kept, stores):
        other = same.setdefault(st.resolve(), r)
        if other != r:
            raise InputError(f"{args.copick}: runs {other!r} and {r!r} are the same tomogram ({st.resolve()}); "
                             "give one of them")
    from ..io import load

    voxel: dict[str, dict[str, Any]] = {}
    for r, st in zip(kept, stores):
        header = load(st).voxel_size
        record = {"voxel_spacing_folder_angst": spacing, "tomogram_voxel_size_angst": header,
                  "voxel_size_used_angst": spacing, "voxel_size_source": "VoxelSpacing folder"}
        if header and abs(header / spacing - 1) > 1e-3:
            print(f"warning: copick run {r!r}: the tomogram says {header:g} Å per voxel but lies in "
                  f"VoxelSpacing{spacing:.3f}: read at the folder's {spacing:g} Å (copick's voxel spacing; "
                  "the run record's copick section says so)", file=sys.stderr)
            record["voxel_size_source"] = (f"VoxelSpacing folder; the tomogram's own metadata says {header:g} Å "
                                           "and was not used")
        voxel[r] = record
    params = dataclasses.replace(params, voxel_size=spacing)
    batch = len(kept) > 1
    done: set[str] = set()
    for r, st in zip(kept, stores):
        if args.overwrite:
            continue
        target = Path(args.out) / r if batch else Path(args.out)
        if _copick_already_written(project, args, r, st, target, params, spacing):
            done.add(r)
        else:
            for obj in args.copick_objects:
                project.check_free(r, spacing, args.copick_user, args.copick_session, obj)
    return Copick(project, stores, kept, params, skipped, voxel, done)


def _model_species(params: Any) -> tuple[str, ...]:
    """The species a run with ``params`` picks (those kept by ``--species``); empty for a species-agnostic model."""
    from ..prediction import model_species

    names = model_species(params.model_arg())
    return tuple(params.species) if params.species and names else names


def _keep_labels(block: Any, ids: Any) -> Any:
    """``block`` with every label not in ``ids`` set to 0."""
    import numpy as np

    return np.where(np.isin(block, ids), block, 0).astype(block.dtype)


def _tree_digest(path: Path) -> str | None:
    """SHA-256 of a file, or of a folder's relative file names and contents (a Zarr store); None if absent."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _copick_already_written(project: Any, args: argparse.Namespace, run: str, store: Path, target: Path,
                            params: Any, spacing: float) -> bool:
    """True when the run's copick picks and segmentation are, byte for byte, the ones an earlier run wrote
    from complete outputs in ``target`` for this input and these parameters (a rerun: nothing to replace)."""
    from ..pipeline import read_run

    paths = [p for obj in args.copick_objects for p in (
        project.picks_path(run, args.copick_user, args.copick_session, obj),
        project.segmentation_path(run, spacing, args.copick_user, args.copick_session, obj))]
    if not any(p.exists() for p in paths):
        return False
    rec = read_run(target, run)
    section = (rec or {}).get("copick") or {}
    written = section.get("written") if isinstance(section, dict) else None
    if not isinstance(written, dict) or not outputs_complete(target, store, run, params):
        return False
    return all(written.get(str(p)) == _tree_digest(p) for p in paths if p.exists()) and \
        all(_tree_digest(Path(p)) == d for p, d in written.items())


def write_copick(copick: Copick, args: argparse.Namespace, name: str, target: Path) -> None:
    """The run's picks (from ``NAME_centers.csv``; each point's ``instance_id`` is its label) and instance
    labels (from ``NAME_labels.zarr``) into the copick overlay; the run record gains a ``copick`` section
    (the voxel size used and why, the files written and their digests)."""
    import dask.array as da
    import pandas as pd

    from ..io import atomic_output, load
    from ..pipeline import RunDirectory

    project = copick.project
    rd = RunDirectory(target, name)
    if name in copick.done:
        if not args.quiet:
            print(f"{name}: copick picks and segmentation already written by the same run earlier, left as they are")
        return
    run = json.loads(rd.record.read_text())
    vs = float(run["voxel_size_angst"])
    particles = pd.read_csv(rd.output("csv"))
    labels = rd.output("zarr")
    if not labels.is_dir() and rd.output("mrc").is_file():
        labels = rd.output("mrc")
    written = []
    for obj in args.copick_objects:  # one object per species of a multi-species model (its particles only)
        mine = particles if "class" not in particles.columns else particles[particles["class"] == obj]
        written.append(project.write_picks(name, mine, voxel_size=vs, user_id=args.copick_user,
                                           session_id=args.copick_session, object_name=obj,
                                           overwrite=args.overwrite))
        if labels.exists():
            lab = load(labels).data
            if "class" in particles.columns:  # this species' instances; the others are background here
                lab = da.map_blocks(_keep_labels, lab, mine["id"].to_numpy(dtype="int64"), dtype=lab.dtype)
            written.append(project.write_instance_labels(name, lab, voxel_size=vs, user_id=args.copick_user,
                                                         session_id=args.copick_session, name=obj,
                                                         overwrite=args.overwrite))
    run["copick"] = {"config": str(Path(args.copick).resolve()), "run": name, **copick.voxel.get(name, {}),
                     "written": {str(p): _tree_digest(p) for p in written}}
    for rec in (rd.record, rd.last_run):
        if rec == rd.record or (rec.is_file() and json.loads(rec.read_text()).get("name") == name):
            with atomic_output(rec, overwrite=True) as tmp:
                tmp.write_text(json.dumps(run, indent=2))
    if not args.quiet:
        print(f"{name}: copick {', '.join(str(p) for p in written)}")
