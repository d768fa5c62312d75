"""The names of a run folder's files, in one place.

``detect`` writes, for a tomogram named NAME, into its output folder::

    NAME.zarr               the converted tomogram (intermediate)
    NAME_rescaled.zarr      the tomogram on the weights' grid (intermediate, --rescale)
    NAME_prediction.zarr    the predicted mask and centre maps (intermediate, resumable)
    NAME_labels.mrc         instance labels (MRC)
    NAME_labels.zarr        instance labels (OME-Zarr label image)
    NAME_species.mrc/.zarr  species labels beside them (a multi-species model only)
    NAME_centers.txt/.csv/.star   particle centres
    NAME_run.json           this tomogram's run record
    run.json                the folder's last run record
    .cryodet.lock           held while a run writes into the folder

Everything that needs one of these paths asks a :class:`RunDirectory`.  This module also holds what a
run does with its folder: the lock (one run per folder), the identity of the inputs (what completed work
is recognized by), the temporaries of an interrupted run and the outputs of another one (removed before
new ones are written), what can be reused, and the run records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, OutputBusyError
from ..io import atomic_output, load, partial_path

if TYPE_CHECKING:
    from ..prediction import Prediction
    from .params import DetectParams

__all__ = ["RunDirectory", "OUTPUT_SUFFIX", "RUN_SUFFIX", "LAST_RUN", "LOCK_NAME", "output_lock", "input_identity",
           "run_identity", "clean_stale", "retire_outputs", "deletable", "same_input_as_before", "converted_from",
           "rescaled_ok", "remove_intermediates", "digest", "run_record", "run_record_path", "read_run",
           "write_run_record"]

log = logging.getLogger("cryodet_dask")

#: File name of each output format, after the name.
OUTPUT_SUFFIX = {"mrc": "_labels.mrc", "zarr": "_labels.zarr", "txt": "_centers.txt", "csv": "_centers.csv",
                 "star": "_centers.star"}
#: A tomogram's run record, after the name.
RUN_SUFFIX = "_run.json"
#: The folder's last run record.
LAST_RUN = "run.json"
#: The advisory lock of a folder a run writes into.
LOCK_NAME = ".cryodet.lock"


@dataclass(frozen=True)
class RunDirectory:
    """The files of tomogram ``name``'s run in ``folder``."""

    folder: Path
    name: str

    @classmethod
    def of(cls, folder: str | os.PathLike[str], name: str) -> RunDirectory:
        return cls(Path(folder), name)

    @property
    def converted(self) -> Path:
        return self.folder / f"{self.name}.zarr"

    @property
    def rescaled(self) -> Path:
        return self.folder / f"{self.name}_rescaled.zarr"

    @property
    def prediction(self) -> Path:
        return self.folder / f"{self.name}_prediction.zarr"

    def output(self, fmt: str) -> Path:
        """The final output of format ``fmt`` (one of :data:`OUTPUT_SUFFIX`)."""
        return self.folder / f"{self.name}{OUTPUT_SUFFIX[fmt]}"

    def species_output(self, fmt: str) -> Path:
        """The species label image beside the instance labels of format ``fmt`` (``mrc`` or ``zarr``)."""
        return self.folder / f"{self.name}_species.{fmt}"

    def outputs(self, formats: tuple[str, ...] | list[str] | None = None) -> list[Path]:
        """The final outputs of ``formats`` (default: every format), in :data:`OUTPUT_SUFFIX` order, then the
        species label images of the label formats (written for multi-species models only)."""
        chosen = [f for f in OUTPUT_SUFFIX if formats is None or f in formats]
        return [self.output(f) for f in chosen] + [self.species_output(f) for f in chosen if f in ("mrc", "zarr")]

    @property
    def record(self) -> Path:
        """This tomogram's run record."""
        return self.folder / f"{self.name}{RUN_SUFFIX}"

    @property
    def last_run(self) -> Path:
        """The folder's last run record (any tomogram)."""
        return self.folder / LAST_RUN

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_NAME

    def finals(self) -> list[Path]:
        """Every file a complete run leaves, intermediates included (what an interrupted one may have left
        half-written under a temporary name)."""
        return [self.converted, self.rescaled, *self.outputs(), self.record, self.last_run]


# ------------------------------------------------------------------ one run per output folder

_held_lock = threading.Lock()
_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (owning thread id, depth): re-entry by the same thread


def _lock_holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    info = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if info.get("pid"):
        return f"pid {info['pid']} on host {info.get('host', '?')}" + (
            f", since {info['since']}" if info.get("since") else "")
    return "a process that has not yet written its pid"


@contextmanager
def output_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the advisory lock ``folder/.cryodet.lock`` for the duration of the block (one run per folder).

    A second run (another process, or another thread of this one) into the same folder raises
    :class:`OutputBusyError` at once, naming the holder's PID and host.  The lock is ``fcntl.flock``: the
    kernel releases it when the holder dies, so a lock file left by a killed run blocks nothing.  The same
    thread may re-enter (``detect`` inside the command line's lock).  The folder is created if needed and
    removed again on exit if the run left nothing else in it (a refused run writes nothing); the lock file
    is removed on exit (under the lock, so a waiting run notices and retries on a new file).
    """
    import fcntl

    folder = Path(folder)
    key = str(folder.resolve())
    me = threading.get_ident()
    with _held_lock:
        owner = _held.get(key)
        if owner is not None:
            if owner[0] != me:
                raise OutputBusyError(f"{folder} is in use by another detection run in this process; wait for it "
                                      "to finish or choose another output folder (-o)")
            _held[key] = (me, owner[1] + 1)
    if owner is not None:
        try:
            yield folder
        finally:
            with _held_lock:
                tid, depth = _held[key]
                _held[key] = (tid, depth - 1)
        return

    created = []  # the folders this lock creates (deepest first), removed again if left empty
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:  # a file, below a file, read-only, ...: one line, before any work
        raise InputError(f"{folder}: cannot be used as the output folder ({exc.strerror or exc}); "
                         "choose another -o") from None
    fd = None
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(f"{folder} is in use by another cryodet-dask run ({_lock_holder(path)}); "
                                  "wait for it to finish or choose another output folder (-o)") from None
        except OSError as exc:  # a file system without flock (some NFS mounts): run unguarded, say so
            os.close(fd)
            fd = None
            log.warning("cannot lock %s (%s): concurrent runs into this folder are not prevented", path,
                        exc.strerror or exc)
            break
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        fd = None
    if fd is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} since={stamp}\n".encode())
    with _held_lock:
        _held[key] = (me, 1)
    try:
        yield folder
    finally:
        with _held_lock:
            del _held[key]
        if fd is not None:
            try:
                path.unlink()
            except OSError:
                pass
            os.close(fd)
        for made in created:
            try:
                made.rmdir()  # only if the run left nothing in it
            except OSError:
                break


# ------------------------------------------------------------------ identity of inputs and names


def input_identity(path: str | os.PathLike[str]) -> str:
    """Identity of an input's content, for recognizing completed work (never the name alone).

    A file: :func:`cryodet_dask.io.source_identity` (content digest).  A directory (a Zarr store): a digest
    of every file's relative path, size and modification time (metadata only: a chunk rewritten in place
    changes it).
    """
    from ..io import source_identity

    path = Path(path)
    if not path.is_dir():
        return source_identity(path)
    h = hashlib.sha256()
    n = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            fp = Path(root) / f
            st = fp.stat()
            h.update(f"{fp.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
    return f"tree:{n}:{h.hexdigest()}"


def run_identity(src_path: Path | None, p: DetectParams) -> dict[str, Any]:
    """What completed work is recognized by: the input's content identity and the weights' digests."""
    from ..prediction import file_sha256, resolve_models

    return {"input": input_identity(src_path) if src_path is not None else None,
            "weights_sha256": [file_sha256(s.path) for s in resolve_models(p.model_arg())]}


# ------------------------------------------------------------------ stale outputs and run records


def clean_pieces(out: Path) -> list[str]:
    """Remove the post-processing scratch folders (``.cryodet-pieces-*``) a killed run left in ``out``.

    Call it under :func:`output_lock` only: a live run's scratch folder is in use."""
    from ..io import remove_path

    removed = []
    for path in sorted(Path(out).glob(".cryodet-pieces-*")):
        remove_path(path)
        removed.append(path.name)
    if removed:
        log.info("removed temporaries of an interrupted run: %s", ", ".join(removed))
    return removed


def clean_stale(out: Path, stem: str) -> list[str]:
    """Remove temporaries an interrupted run of ``stem`` left in ``out``; keep the resumable prediction."""
    from ..io import remove_path

    stale = [partial_path(p) for p in RunDirectory(out, stem).finals()] + sorted(out.glob(".cryodet-pieces-*"))
    removed = []
    for path in stale:
        if path.exists() or path.is_symlink():
            remove_path(path)
            removed.append(path.name)
    if removed:
        log.info("removed temporaries of an interrupted run: %s", ", ".join(removed))
    return removed


def same_input_as_before(out: Path, stem: str, identity: dict[str, Any] | None) -> bool:
    """True if the last complete run in ``out`` (its ``run.json``) had an input of this content identity.

    Guards what is reused by name and shape alone (the rescaled tomogram of a Zarr input, which is not
    converted); no ``run.json`` (an interrupted run) counts as unknown: rebuilt, which is cheap next to the
    prediction, and a rebuilt store of the same voxels keeps the prediction's chunks.
    """
    try:
        old = (read_run(out, stem) or {})["identity"]["input"]
    except (KeyError, TypeError):
        return False
    return identity is not None and old == identity.get("input")


def run_record_path(out: str | os.PathLike[str], stem: str) -> Path:
    """Where a tomogram's run record lies: ``OUT/<stem>_run.json`` (``OUT/run.json`` is the folder's last run)."""
    return RunDirectory.of(out, stem).record


def read_run(out: str | os.PathLike[str], stem: str) -> dict[str, Any] | None:
    """The record of the last complete run of ``stem`` in ``out``, or ``None``.

    ``<stem>_run.json``, or (a folder written before per-tomogram records) ``run.json`` when it names ``stem``.
    """
    rd = RunDirectory.of(out, stem)
    for path, must_name in ((rd.record, False), (rd.last_run, True)):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and (not must_name or run.get("name") == stem):
            return run
    return None


def _final_outputs(out: Path, stem: str) -> list[Path]:
    return [p for p in RunDirectory(out, stem).outputs() if p.exists()]


def deletable(path: Path, out: Path, src_path: Any) -> bool:
    """True if ``path`` exists, lies in ``out`` and is neither the input nor holds it (paths resolved)."""
    if not (path.exists() or path.is_symlink()):
        return False
    real = path.resolve()
    if not real.is_relative_to(out.resolve()):
        return False
    if src_path is not None:
        src = Path(src_path).resolve()
        if src == real or src.is_relative_to(real):
            return False
    return True


def retire_outputs(out: Path, stem: str, export_fp: str, formats: Sequence[str] = tuple(OUTPUT_SUFFIX),
                    src_path: Any = None, parameters: dict[str, Any] | None = None) -> None:
    """Keep the final outputs consistent: remove them unless ``run.json`` says they come from ``export_fp``.

    ``run.json`` is written last, so it vouches for a complete set; outputs
    without it (an interrupted export) or made with other parameters are
    removed before new ones are written, so that a failure half-way never
    leaves a mix of old and new results.  Only the outputs this run writes
    (its ``formats``) are removed, never an input; an older output of another
    format is left where it is (with a note: the new ``run.json`` does not list it).  Outputs of an
    earlier complete run are never replaced silently: one warning names them and, given this run's
    ``parameters``, the parameters that changed.
    """
    from ..io import remove_path

    previous = read_run(out, stem) or {}
    try:
        old = previous["stages"]["export"]["fingerprint"]
    except (KeyError, TypeError):
        old = None
    if old == export_fp:
        return
    rd = RunDirectory(out, stem)
    replaced = [p.name for p in rd.outputs(list(formats)) if p.exists() and deletable(p, out, src_path)]
    if old is not None and replaced:
        before = previous.get("parameters")
        before = before if isinstance(before, dict) else {}
        changed = sorted(k for k in set(before) | set(parameters or {})
                         if parameters is not None and before.get(k) != parameters.get(k))
        why = (f"other parameters ({', '.join(changed)})" if changed else
               "another input, weights or prediction")
        log.warning("%s: replacing the outputs of an earlier run of %s with %s: %s; use another -o to keep them",
                    out, stem, why, ", ".join(replaced))
    records = [rd.record]
    try:
        if json.loads(rd.last_run.read_text()).get("name") == stem:
            records.append(rd.last_run)
    except (OSError, ValueError, AttributeError):
        pass
    for path in [*records, *rd.outputs(list(formats))]:
        if deletable(path, out, src_path):
            remove_path(path)
    kept = [p.name for p in _final_outputs(out, stem) if p not in rd.outputs(list(formats))]
    if kept:
        log.info("kept %s: not written by this run (--formats %s), so not listed in its run.json",
                 ", ".join(kept), ",".join(formats))


# ------------------------------------------------------------------ what a rerun reuses


def converted_from(zpath: Path, src_path: Path | None) -> bool:
    """True if ``zpath`` is a complete conversion of the file ``src_path`` as it is now."""
    from ..io import conversion_reusable

    if src_path is None or not zpath.exists():
        return False
    # the store verifies (every chunk decodes, checksums match) and records this source's content digest
    return conversion_reusable(zpath, src_path)


def remove_intermediates(paths: Sequence[Path], out: Path, src_path: Any) -> None:
    """Remove the intermediates ``paths`` a run wrote or used in ``out``, never the input (:func:`deletable`)."""
    from ..io import remove_path

    for inter in paths:
        if deletable(inter, out, src_path):
            remove_path(inter)


def rescaled_ok(path: Path, shape: tuple[int, ...], voxel_size: float) -> bool:
    """True if ``path`` is a complete rescaled tomogram of this shape and voxel size (written atomically)."""
    try:
        t = load(path)
    except Exception:  # noqa: BLE001 - absent or unreadable: rebuild it
        return False
    return t.shape == shape and t.voxel_size is not None and abs(t.voxel_size / voxel_size - 1) < 1e-6


def digest(obj: Any) -> str:
    """A short digest of a JSON value: the fingerprints a run record keeps of each stage."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_record(*, tomogram: Path | None, identity: dict[str, Any] | None, name: str, shape: Sequence[int],
               voxel_size: float | None, voxel_size_zyx: Sequence[float] | None, parameters: dict[str, Any],
               pp_kwargs: dict[str, Any], factor: float | None, pred: Prediction, converted: bool,
               source_identity: Any, export_fingerprint: str, particles: int, timings: dict[str, float],
               files: dict[str, Path], peak_memory: Any, weights: list[tuple[str, str]]) -> dict[str, Any]:
    """What a run record holds: the input and its identity, the parameters, the rescaling, the prediction's
    grid and chunk counts, each stage's fingerprint, the outputs, and where and how the run ran."""
    from .provenance import run_provenance, versions

    return {
        "tomogram": str(Path(tomogram).resolve()) if tomogram is not None else None,
        "identity": identity,
        "name": name,
        "shape_zyx": list(shape),
        "voxel_size_angst": voxel_size,  # null: unknown (no header, no -vs); the outputs are in voxels only
        "voxel_size_zyx_angst": list(voxel_size_zyx) if voxel_size_zyx is not None else None,
        "voxel_size_source": ("-vs/--voxel-size" if parameters.get("voxel_size") is not None else
                              "the file header" if voxel_size is not None else "unknown"),
        "parameters": parameters,
        "postprocess_parameters": pp_kwargs,
        "rescale": None if factor is None else {
            "factor": factor, "network_voxel_size_angst": voxel_size / factor if voxel_size else None,
            "predicted_shape_zyx": list(pred.plan.shape),
            "method": "linear interpolation of cell centres (Gaussian anti-aliasing when shrinking); "
                      "predicted maps interpolated back linearly, post-processing on the tomogram's grid"},
        "halo": list(pred.plan.halo),
        "chunks": list(pred.plan.chunk_shape),
        "tile_chunks": list(pred.plan.tile),
        "computed_per_output_voxel": round(pred.plan.halo_overhead(), 3),
        "chunks_computed": pred.chunks_computed,
        "chunks_skipped": pred.chunks_skipped,
        "chunks_repaired": pred.chunks_repaired,
        "stages": {
            "convert": {"ran": converted, "fingerprint": digest(source_identity)},
            "predict": {"ran": pred.chunks_computed > 0, "chunks_computed": pred.chunks_computed,
                        "chunks_skipped": pred.chunks_skipped, "chunks_repaired": pred.chunks_repaired,
                        # the engine that ran (--engine auto resolved: torch or openvino)
                        "engine": (pred.attrs.get("fingerprint") or {}).get("engine"),
                        "fingerprint": digest(pred.attrs.get("fingerprint"))},
            "postprocess": {"ran": True, "fingerprint": digest([pred.attrs.get("fingerprint"), pp_kwargs])},
            "export": {"ran": True, "fingerprint": export_fingerprint},
        },
        "peak_memory_mib": peak_memory,
        "particles": particles,
        # rlnClassNumber k (STAR), species label k and the CSV's class name of each species of the network
        "species": {str(k + 1): name for k, name in enumerate(pred.species_names)} or None,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {k: str(Path(v).resolve()) for k, v in files.items()},
        "versions": versions(),
        **run_provenance(weights),
    }


def write_run_record(folder: RunDirectory, record: dict[str, Any]) -> Path:
    """Write ``record`` as the tomogram's run record, then as the folder's last run (both last: they vouch
    for the outputs); return the tomogram's."""
    for path in (folder.record, folder.last_run):
        with atomic_output(path, overwrite=True) as tmp_json:
            tmp_json.write_text(json.dumps(record, indent=2))
    return folder.record
