"""``detect``: convert -> predict -> postprocess -> export, end to end, resumable.

Each stage is its own function (:func:`cryodet_dask.load`,
:func:`~cryodet_dask.predict`, :func:`~cryodet_dask.postprocess`,
:func:`~cryodet_dask.export`); this module chains them on one Dask client and
keeps a ``run.json`` of what it did.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import dask.array as da
import numpy as np
import zarr

from .._progress import current_client
from .._shapes import triplet
from .rundir import LOCK_NAME as _LOCK_NAME
from .rundir import OUTPUT_SUFFIX as _OUTPUT_SUFFIX
from .rundir import RunDirectory
from .params import _DERIVED, VOXEL_SIZE_RANGE, DetectParams, check_tomo_name
from .params import check_voxel_size as _check_voxel_size
from .provenance import peak_memory_mib, reset_peak_memory, run_provenance, versions
from ..errors import DiskSpaceError, InputError, OutputBusyError, ParameterError
from ..io import Tomogram, atomic_output, convert, load, partial_path
from ..postprocessing import Detections, PostprocessParams, from_particle_diameter
from ..resampling import resample

if TYPE_CHECKING:  # torch is imported only when a stage needs it
    from ..prediction import Prediction

__all__ = ["DetectParams", "DetectionResult", "detect", "check_chunks", "check_worker_memory", "inference_halo", "memory_refusal",
           "prediction_memory", "estimate_space", "FALLBACK_VOXEL_SIZE",
           "output_lock", "input_identity", "check_tomo_name", "LOCK_NAME"]

log = logging.getLogger("cryodet_dask")

#: The seed's default voxel size (spinach data), used only when the file has none, with a warning.
FALLBACK_VOXEL_SIZE = 14.08


@dataclass
class DetectionResult:
    """What :func:`detect` found.

    Attributes
    ----------
    labels : dask.array.Array
        Instance label image (uint32, z, y, x), lazy.
    particles : pandas.DataFrame
        One row per particle: ``id, x, y, z`` (voxels), ``x_angst, y_angst,
        z_angst`` (Å), ``n_voxels``, ``score`` (centre-map peak over the particle: the
        ranking score), ``mask_score`` (mean mask probability).
    voxel_size : float
        Å per voxel used for the Å columns.
    files : dict
        Output files by kind.
    timings : dict
        Seconds per stage.
    """

    labels: da.Array
    particles: Any
    voxel_size: float
    detections: Any = None
    prediction: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    _tmp: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.particles)


def _voxel_size(tomo: Tomogram, given: float | None) -> float:
    if given is not None:
        return _check_voxel_size(given, "-vs/--voxel-size")
    if tomo.voxel_size:
        return _check_voxel_size(tomo.voxel_size, "from the file header")
    warnings.warn(f"the tomogram has no voxel size in its header; assuming {FALLBACK_VOXEL_SIZE} Å "
                  "(the seed's default); give -vs/--voxel-size to set it", stacklevel=3)
    return FALLBACK_VOXEL_SIZE


def output_voxel_size(tomo: Tomogram, given: float | None, voxel_size: float) -> tuple[float, float, float]:
    """The voxel size (z, y, x) in Å of the outputs: ``-vs`` on every axis when given, else the header's
    per-axis sizes when they differ (warned: the networks see the grid as isotropic), else
    ``voxel_size`` on every axis."""
    zyx = tuple(float(v) for v in getattr(tomo, "voxel_size_zyx", (0.0, 0.0, 0.0)))
    if given is None and all(np.isfinite(v) and v > 0 for v in zyx) and max(zyx) - min(zyx) > 0.01 * max(zyx):
        for v in zyx:
            _check_voxel_size(v, "from the file header")
        warnings.warn(f"anisotropic voxel size (z, y, x) = ({', '.join(f'{v:g}' for v in zyx)}) Å: the networks "
                      f"treat the grid as isotropic ({voxel_size:g} Å); coordinates in Å, the label MRC header and "
                      "the OME-Zarr scale keep the per-axis sizes (give -vs to use one size)", stacklevel=3)
        return zyx  # type: ignore[return-value]
    return (voxel_size,) * 3


def _converted_from(zpath: Path, src_path: Path | None) -> bool:
    """True if ``zpath`` is a complete conversion of the file ``src_path`` as it is now."""
    from ..io import conversion_reusable

    if src_path is None or not zpath.exists():
        return False
    # the store verifies (every chunk decodes, checksums match) and records this source's content digest
    return conversion_reusable(zpath, src_path)

# ------------------------------------------------------------------ one run per output folder

#: The advisory lock file a run holds in its output folder (``fcntl.flock``; PID and host written into it).
LOCK_NAME = _LOCK_NAME  # pipeline.rundir names it

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


def inference_halo(p: DetectParams) -> tuple[int, ...]:
    """The halo (z, y, x) prediction will use: ``p.halo``, or the networks' receptive field extent
    rounded up to the pooling factor, exactly as :func:`~cryodet_dask.prediction.predict` derives it."""
    from ..prediction import model_halo, resolve_models

    specs = resolve_models(_model_arg(p))
    return model_halo([s.halo for s in specs], [s.pool_factor for s in specs], p.halo)


def check_chunks(p: DetectParams) -> tuple[int, ...]:
    """Refuse a chunk smaller than the inference halo; return the halo (z, y, x).

    Each prediction task reads its chunk plus the halo on both sides, so a
    chunk ``c`` with halo ``h`` costs ``((c + 2h) / c)^3`` times the compute of
    the chunk alone: 27x at ``c = h``, 125x at ``c = h / 2``.  The command line
    therefore refuses ``c < h`` on any axis (an axis shorter than the chunk is
    exempt, it has a single chunk anyway); the Python API only logs it.
    """
    halo3 = inference_halo(p)
    chunks3 = triplet(p.chunks)
    small = [(c, h) for c, h in zip(chunks3, halo3) if c < h]
    if small:
        raise ParameterError(
            f"-ps/--chunks {','.join(map(str, chunks3))} is smaller than the inference halo "
            f"{','.join(map(str, halo3))} voxels (each chunk would read {((small[0][0] + 2 * small[0][1]) / small[0][0]) ** 3:.0f}x "
            f"its own size); use chunks of at least {max(halo3)} voxels (128 or more is efficient)")
    if p.tile is not None and any(t < h for t, h in zip(triplet(p.tile), halo3)):
        raise ParameterError(f"--tile {','.join(map(str, p.tile))} is smaller than the inference halo "
                             f"{','.join(map(str, halo3))} voxels: most of each forward pass would be halo; give a "
                             "larger tile (or none, to let it be planned)")
    return halo3


def prediction_memory(p: DetectParams, shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """Memory (bytes) a Dask worker needs for one CPU prediction task of this run, and the tile read
    (one chunk's, the smallest the planner uses, or ``--tile``'s).

    :func:`~cryodet_dask.prediction._tiling.task_memory_bytes` for the tile (chunk plus halo on each
    side, clipped to the volume ``shape``), divided by the ``distributed.worker.memory.terminate``
    fraction of the limit at which a worker's nanny kills it.
    """
    import dask

    from ..prediction import resolve_models, task_memory_bytes, task_tile

    specs = resolve_models(_model_arg(p))
    core: tuple[int, ...] = triplet(p.chunks)
    if p.tile is not None:  # an explicit --tile: whole chunks (the planned tiles fit the memory by construction)
        core = tuple(-(-int(t) // int(c)) * int(c) for t, c in zip(triplet(p.tile), core))
    tile = task_tile(core, inference_halo(p), shape, max(s.pool_factor for s in specs))
    usable = float(dask.config.get("distributed.worker.memory.terminate", 0.95) or 1.0)
    return int(task_memory_bytes(tile, max(s.width for s in specs), p.batch_size) / usable), tile


def memory_refusal(p: DetectParams, shape: Sequence[int], limit: int) -> str | None:
    """The one-line reason a worker memory ``limit`` (bytes) is too small for this run, or ``None``."""
    need, tile = prediction_memory(p, shape)
    if limit >= need:
        return None
    smaller = None
    halo = inference_halo(p)
    for c in (96, 64, 48, 32):
        if min(p.chunks) > c >= max(halo) and prediction_memory(dataclasses.replace(p, chunks=(c,)), shape)[0] <= limit:
            smaller = c
            break
    hint = f" or lower -ps/--chunks (-ps {smaller} fits)" if smaller else ""
    return (f"a Dask worker may use {_gib(limit)} (--memory-limit) but one prediction task needs about "
            f"{_gib(need)} (a {'x'.join(map(str, tile))} tile: chunk plus halo); raise --memory-limit{hint}")


def check_worker_memory(client: Any, p: DetectParams, shape: Sequence[int]) -> int | None:
    """Refuse, before any work, Dask workers whose memory limit is below what one prediction task needs
    (:func:`prediction_memory`).  Returns the need (bytes), or ``None`` when there is nothing to check
    (no client, GPU inference, workers without a limit or not started yet).
    """
    if client is None or str(p.device).startswith("cuda"):
        return None
    workers = list(client.scheduler_info(n_workers=-1).get("workers", {}).values())
    if any((w.get("resources") or {}).get("GPU") for w in workers):
        return None
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    if not limits or min(limits) <= 0:
        return None
    reason = memory_refusal(p, shape, max(limits))
    if reason:
        raise ParameterError(reason)
    need = prediction_memory(p, shape)[0]
    if min(limits) < need:
        log.warning("some Dask workers have less memory (%s) than one prediction task needs (about %s); "
                    "they may be restarted", _gib(min(limits)), _gib(need))
    return need


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def estimate_space(shape: Sequence[int], itemsize: int, formats: Sequence[str], *, convert: bool = True,
                   predict: bool = True) -> dict[str, int]:
    """Upper bound of the bytes a detection run writes, by output (uncompressed sizes).

    The converted tomogram takes ``voxels x itemsize``, the prediction store
    two float32 maps, the per-chunk instance pieces (scratch) and the Zarr
    label image 4 bytes per voxel each, the MRC label image 2.  Compression
    makes the real sizes smaller; the estimate is what a run may need at most.
    """
    n = int(np.prod([int(v) for v in shape]))
    need = {}
    if convert:
        need["converted tomogram"] = n * int(itemsize)
    if predict:
        need["prediction"] = 2 * 4 * n
    if {"zarr", "mrc"} & set(formats):
        need["label pieces"] = 4 * n
    if "zarr" in formats:
        need["labels zarr"] = 4 * n
    if "mrc" in formats:
        need["labels mrc"] = 2 * n
    need["particle lists"] = 1 << 20
    return need


def _clean_stale(out: Path, stem: str) -> list[str]:
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


def _rescaled_ok(path: Path, shape: tuple[int, ...], voxel_size: float) -> bool:
    """True if ``path`` is a complete rescaled tomogram of this shape and voxel size (written atomically)."""
    try:
        t = load(path)
    except Exception:  # noqa: BLE001 - absent or unreadable: rebuild it
        return False
    return t.shape == shape and t.voxel_size is not None and abs(t.voxel_size / voxel_size - 1) < 1e-6


def _same_input_as_before(out: Path, stem: str, identity: dict[str, Any] | None) -> bool:
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


def _deletable(path: Path, out: Path, src_path: Any) -> bool:
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


def _retire_outputs(out: Path, stem: str, export_fp: str, formats: Sequence[str] = tuple(_OUTPUT_SUFFIX),
                    src_path: Any = None) -> None:
    """Keep the final outputs consistent: remove them unless ``run.json`` says they come from ``export_fp``.

    ``run.json`` is written last, so it vouches for a complete set; outputs
    without it (an interrupted export) or made with other parameters are
    removed before new ones are written, so that a failure half-way never
    leaves a mix of old and new results.  Only the outputs this run writes
    (its ``formats``) are removed, never an input; an older output of another
    format is left where it is (with a note: the new ``run.json`` does not list it).
    """
    from ..io import remove_path

    try:
        old = (read_run(out, stem) or {})["stages"]["export"]["fingerprint"]
    except (KeyError, TypeError):
        old = None
    if old == export_fp:
        return
    rd = RunDirectory(out, stem)
    records = [rd.record]
    try:
        if json.loads(rd.last_run.read_text()).get("name") == stem:
            records.append(rd.last_run)
    except (OSError, ValueError, AttributeError):
        pass
    for path in [*records, *rd.outputs(list(formats))]:
        if _deletable(path, out, src_path):
            remove_path(path)
    kept = [p.name for p in _final_outputs(out, stem) if p not in rd.outputs(list(formats))]
    if kept:
        log.info("kept %s: not written by this run (--formats %s), so not listed in its run.json",
                 ", ".join(kept), ",".join(formats))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_arg(p: DetectParams) -> Any:
    given = [m for m in (p.segnet, p.centernet) if m]
    if not given:
        return None
    return given[0] if len(given) == 1 else given


def detect(
    tomogram: Any,
    out_dir: str | os.PathLike[str] | None = None,
    params: DetectParams | None = None,
    *,
    name: str | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: bool = False,
    **kwargs: Any,
) -> DetectionResult:
    """Find and instance-label the particles of a tomogram.

    Parameters
    ----------
    tomogram : path, Tomogram, numpy or dask array
        MRC file or Zarr store, or a volume (z, y, x).
    out_dir : path, optional
        Where outputs go (``<name>_labels.mrc``, ``<name>_centers.txt/.csv/.star``,
        intermediate Zarr stores, ``run.json``).  Default: a temporary folder
        kept alive with the result (nothing exported).
    params : DetectParams, optional
        All parameters; keyword arguments override single fields
        (``mask_threshold=0.2``...).
    name : str, optional
        Stem of the output files (default: the tomogram file's stem).
    client : distributed.Client, optional
        Run on this client.  Default: the current default client, or Dask's
        threaded scheduler in this process if there is none (the CLI starts a
        LocalCluster).
    overwrite : bool
        Recompute and replace existing outputs.
    progress : bool
        Progress bars per stage.

    Returns
    -------
    DetectionResult

    Raises
    ------
    OutputBusyError
        Another run (process or thread) holds ``out_dir``'s lock (``.cryodet.lock``).

    Notes
    -----
    Cleaning never deletes the input (paths resolved first), nor an output of
    a format this run does not write; ``keep_intermediate=False`` removes only
    the intermediate stores this run wrote or used.

    Examples
    --------
    >>> res = detect("tomo.mrc", "out/", mask_threshold=0.2)   # doctest: +SKIP
    >>> res.particles[["x", "y", "z", "score"]].head()          # doctest: +SKIP
    """
    p = DetectParams.from_dict({**(params.to_dict() if params else {}), **kwargs})  # validated when made
    timings: dict[str, float] = {}
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cryodet_")
        out = Path(tmp.name)
    else:
        out = Path(out_dir)  # created after the checks below: a refused run writes nothing

    src_path: Path | None
    if isinstance(tomogram, str | os.PathLike):
        src_path = Path(tomogram)
        tomo = load(src_path)
        stem = name or src_path.stem.removesuffix(".zarr")
    elif isinstance(tomogram, Tomogram):
        tomo, src_path = tomogram, tomogram.path
        stem = name or (Path(tomogram.path).stem if tomogram.path else "tomogram")
    elif isinstance(tomogram, np.ndarray | da.Array):
        tomo, src_path = Tomogram(data=da.asarray(tomogram), voxel_size=None), None
        stem = name or "tomogram"
    else:
        raise ParameterError(f"detect takes a path, a Tomogram or an array, not {type(tomogram).__name__}")
    if p.particle_diameter is not None and p.voxel_size is None and not tomo.voxel_size:
        raise ParameterError(f"--particle-diameter needs the voxel size: {stem} has none in its header; "
                             "give -vs/--voxel-size")
    voxel_size = _voxel_size(tomo, p.voxel_size)
    from ..prediction import check_model_voxel_size

    trained = check_model_voxel_size(_model_arg(p), voxel_size, p.rescale,
                                      assumed=p.voxel_size is None and not tomo.voxel_size)
    factor = voxel_size / trained if (p.rescale and trained) else None
    if out_dir is not None and "star" in p.formats:
        check_tomo_name(p.tomogram_name or stem, str(src_path) if src_path is not None else stem)
    identity = _identity(src_path, p) if out_dir is not None else None

    # one run per output folder: the lock is taken before anything in it is touched (cleaning included)
    guard = ExitStack()
    if out_dir is not None:
        guard.enter_context(output_lock(out))
    with guard:
        return _detect_locked(tomo, src_path, out, out_dir, stem, p, voxel_size, factor, identity, client,
                              overwrite, progress, tmp, timings)


def _identity(src_path: Path | None, p: DetectParams) -> dict[str, Any]:
    """What completed work is recognized by: the input's content identity and the weights' digests."""
    from ..prediction import resolve_models
    from ..prediction import file_sha256

    return {"input": input_identity(src_path) if src_path is not None else None,
            "weights_sha256": [file_sha256(s.path) for s in resolve_models(_model_arg(p))]}


@dataclass
class _Run:
    """What the four stages of one detection share: one tomogram, one run folder, one set of parameters."""

    tomo: Tomogram
    src_path: Path | None
    out: Path
    writes: bool  # an output folder was given (else ``out`` is a temporary folder and nothing is exported)
    stem: str
    p: DetectParams
    voxel_size: float
    factor: float | None  # rescaling factor to the weights' voxel size (``--rescale``), or None
    identity: dict[str, Any] | None
    client: Any
    overwrite: bool
    progress: bool
    timings: dict[str, float]
    keep_alive: Any = None  # the temporary folder of an API run without an output folder
    needs_convert: bool = False
    is_store: bool = False  # the input is a Zarr store used in place

    @property
    def folder(self) -> RunDirectory:
        return RunDirectory(self.out, self.stem)


@dataclass
class _Outputs:
    """What the post-processing and the export of a run are, decided before they run."""

    pp_kwargs: dict[str, Any]
    voxel_size_zyx: tuple[float, float, float]
    source: Path | None  # the image the label image names (NGFF image-label.source)
    fingerprint: str


def _detect_locked(tomo: Tomogram, src_path: Path | None, out: Path, out_dir: Any, stem: str, p: DetectParams,
                   voxel_size: float, factor: float | None, identity: dict[str, Any] | None, client: Any,
                   overwrite: bool, progress: bool, tmp: Any, timings: dict[str, float]) -> DetectionResult:
    """The checks that need the run folder (disk space, worker memory), then the stages."""
    if out.is_dir():
        _clean_stale(out, stem)
    run = _Run(tomo=tomo, src_path=src_path, out=out, writes=out_dir is not None, stem=stem, p=p,
               voxel_size=voxel_size, factor=factor, identity=identity, client=client, overwrite=overwrite,
               progress=progress, timings=timings, keep_alive=tmp)
    # a Zarr store is used in place, unless NaN/Inf must become 0 (--nan-policy zero): then it is copied
    # like an MRC file, with the check and the replacement on the way
    run.is_store = src_path is not None and Path(src_path).is_dir() and p.nan_policy == "error"
    zpath = run.folder.converted
    if not run.is_store and src_path is not None and zpath.resolve() == Path(src_path).resolve():
        raise ParameterError(f"{src_path}: --nan-policy zero writes the cleaned copy to {zpath}, which is the "
                             "input itself; choose another -o")
    run.needs_convert = not run.is_store and (overwrite or not _converted_from(zpath, src_path))
    need = estimate_space(tomo.shape, np.dtype(tomo.data.dtype).itemsize, p.formats if run.writes else (),
                          convert=run.needs_convert, predict=overwrite or not run.folder.prediction.exists())
    if factor is not None:
        need["rescaled tomogram"] = int(4 * np.prod(tomo.shape) * factor**3)
        need["prediction"] = int(need.get("prediction", 0) * factor**3)
    if run.writes:
        import shutil

        existing = out.resolve()
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if sum(need.values()) > free:
            raise DiskSpaceError(
                f"not enough space in {out}: the run needs up to {_gib(sum(need.values()))} "
                f"({', '.join(f'{k} {_gib(v)}' for k, v in need.items())}), {_gib(free)} free")
    out.mkdir(parents=True, exist_ok=True)

    ctx = client.as_current() if client is not None else nullcontext()
    try:
        with ctx:
            active = client if client is not None else current_client()
            check_worker_memory(active, p,
                                tuple(max(int(round(n * factor)), 1) for n in tomo.shape) if factor else tomo.shape)
            peak_reset = reset_peak_memory(active)
            return _detect_stages(run, peak_reset)
    except DiskSpaceError as exc:
        raise DiskSpaceError(f"{exc}; the run needs up to {_gib(sum(need.values()))} in {out}") from exc
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise DiskSpaceError(f"disk full while writing in {out}: the run needs up to {_gib(sum(need.values()))} "
                             f"({', '.join(f'{k} {_gib(v)}' for k, v in need.items())}); free space and run "
                             "the same command again to resume") from exc


def _detect_stages(run: _Run, peak_reset: bool) -> DetectionResult:
    """convert -> predict -> post-process -> export, each timed in ``run.timings``; then the run record."""
    stored = _convert_stage(run)
    pred = _predict_stage(run, stored)
    outputs = _plan_outputs(run, pred)
    with ExitStack() as stack:  # the post-processing's scratch folder lives until the export has read it
        dets = _postprocess_stage(run, pred, outputs, stack)
        files = _export_stage(run, dets, outputs)
    return _finish(run, stored, pred, outputs, dets, files, peak_reset)


def _convert_stage(run: _Run) -> Tomogram:
    """The tomogram as a Zarr store (the input itself, or a checked conversion that a rerun reuses), on the
    weights' grid when ``--rescale`` asks for it."""
    p, t = run.p, time.perf_counter()
    if run.is_store:
        stored = run.tomo
    else:
        zpath = run.folder.converted
        if run.needs_convert:
            convert(run.tomo if run.src_path is None else run.src_path, zpath, chunks=p.chunks,
                    voxel_size=run.voxel_size, nan_policy="zero" if p.nan_policy == "zero" else "error",
                    overwrite=True, progress=run.progress)
        else:
            log.info("%s is a complete conversion of %s: reused", zpath.name, run.src_path)
        stored = load(zpath)
    if run.factor is not None:  # the tomogram on the weights' grid, stored so that prediction can resume
        factor, rescaled = run.factor, run.folder.rescaled
        new_shape = tuple(max(int(round(n * factor)), 1) for n in stored.shape)
        if run.needs_convert or run.overwrite or not _rescaled_ok(rescaled, new_shape, run.voxel_size / factor) or \
                not _same_input_as_before(run.out, run.stem, run.identity):
            log.info("rescaling %s by %.3f to %s voxels of %.4g Å", run.stem, factor, new_shape,
                     run.voxel_size / factor)
            chunks = triplet(p.chunks)
            convert(resample(stored.reader, new_shape, factor, tuple(min(c, n) for c, n in zip(chunks, new_shape))),
                    rescaled, chunks=p.chunks, voxel_size=run.voxel_size / factor, overwrite=True,
                    progress=run.progress)
        stored = load(rescaled)
    run.timings["convert"] = time.perf_counter() - t
    return stored


def _predict_stage(run: _Run, stored: Tomogram) -> Prediction:
    """The maps in the run folder's prediction store (resumed chunk by chunk, reused when complete)."""
    from ..prediction import predict

    p, t = run.p, time.perf_counter()
    pred = predict(stored, _model_arg(p), out=run.folder.prediction, chunks=p.chunks, halo=p.halo, tile=p.tile,
                   device=p.device, batch_size=p.batch_size, polarity=p.polarity, engine=p.engine,
                   overwrite=run.overwrite,
                   replace=True, progress=run.progress)
    run.timings["predict"] = time.perf_counter() - t
    return pred


def _plan_outputs(run: _Run, pred: Prediction) -> _Outputs:
    """The post-processing parameters, the outputs' voxel size and source image, and the fingerprint that
    recognizes the outputs; outputs of another run in the folder are retired here, before any is written."""
    p = run.p
    pp_kwargs = p.postprocess_kwargs(run.voxel_size)
    vs_zyx = output_voxel_size(run.tomo, p.voxel_size, run.voxel_size)
    # the label image names its tomogram (NGFF image-label.source) where that image stays:
    # the user's store, or the kept conversion beside it (not a rescaled copy)
    source = run.src_path if run.is_store else (run.folder.converted if p.keep_intermediate else None)
    fingerprint = _digest([pred.attrs.get("fingerprint"), pp_kwargs, list(p.formats), p.tomogram_name,
                           str(Path(source).resolve()) if source is not None else None,
                           run.voxel_size if len(set(vs_zyx)) == 1 else list(vs_zyx),
                           list(run.tomo.origin_zyx)])
    if run.writes:
        _retire_outputs(run.out, run.stem, fingerprint, p.formats, run.src_path)
    return _Outputs(pp_kwargs=pp_kwargs, voxel_size_zyx=vs_zyx, source=source, fingerprint=fingerprint)


def _postprocess_stage(run: _Run, pred: Prediction, outputs: _Outputs, stack: ExitStack) -> Detections:
    """Instance labels and centres from the maps (brought back to the tomogram's grid after a rescale)."""
    from ..postprocessing import postprocess

    mask, center = pred.mask, pred.center
    if run.factor is not None:  # maps back to the tomogram's grid (linear); post-processing runs there
        map_chunks = tuple(min(c, n) for c, n in zip(triplet(run.p.chunks), run.tomo.shape))
        group = zarr.open_group(str(pred.path), mode="r")
        mask = resample(group["mask"], run.tomo.shape, 1 / run.factor, map_chunks)
        center = resample(group["center"], run.tomo.shape, 1 / run.factor, map_chunks)
    t = time.perf_counter()
    # per-chunk instance pieces are kept on disk so that writing the labels does not recompute them
    scratch = None
    if run.writes and {"zarr", "mrc"} & set(run.p.formats):
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=".cryodet-pieces-", dir=run.out))
    dets = postprocess(mask, center, progress=run.progress, scratch=scratch, **outputs.pp_kwargs)
    run.timings["postprocess"] = time.perf_counter() - t
    return dets


def _export_stage(run: _Run, dets: Detections, outputs: _Outputs) -> dict[str, Path]:
    """The label image and the particle files in every asked format (none without an output folder)."""
    from ..exports import export

    t = time.perf_counter()
    files: dict[str, Path] = {}
    if run.writes:
        files = export(dets, run.out, run.stem, voxel_size=outputs.voxel_size_zyx, origin_zyx=run.tomo.origin_zyx,
                       source_image=outputs.source, formats=run.p.formats, tomo_name=run.p.tomogram_name or run.stem,
                       overwrite=True, progress=run.progress)
    run.timings["export"] = time.perf_counter() - t
    return files


def _finish(run: _Run, stored: Tomogram, pred: Prediction, outputs: _Outputs, dets: Detections,
            files: dict[str, Path], peak_reset: bool) -> DetectionResult:
    """Drop the intermediates unless kept, write the run record (last: it vouches for the outputs)."""
    from ..prediction import resolve_models

    p = run.p
    particles = dets.to_dataframe(outputs.voxel_size_zyx)
    labels = dets.labels  # lazy; recomputes the pieces when no label image was written
    if "zarr" in files:
        labels = load(files["zarr"]).data
    elif "mrc" in files:
        labels = load(files["mrc"]).data
    if run.writes:
        if not p.keep_intermediate:
            # only the intermediates this run wrote or used, never the input (paths resolved first)
            ours = [Path(cast(Path, pred.path))]  # predict(out=...) records the store's path
            if not run.is_store:
                ours.append(run.folder.converted)
            if run.factor is not None:
                ours.append(run.folder.rescaled)
            for inter in ours:
                if _deletable(inter, run.out, run.src_path):
                    from ..io import remove_path

                    remove_path(inter)
        factor = run.factor
        record = {
            "tomogram": str(Path(run.src_path).resolve()) if run.src_path is not None else None,
            "identity": run.identity,
            "name": run.stem,
            "shape_zyx": list(run.tomo.shape),
            "voxel_size_angst": run.voxel_size,
            "voxel_size_zyx_angst": list(outputs.voxel_size_zyx),
            "parameters": p.to_dict(),
            "postprocess_parameters": outputs.pp_kwargs,
            "rescale": None if factor is None else {
                "factor": factor, "weights_voxel_size_angst": run.voxel_size / factor,
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
                "convert": {"ran": run.needs_convert,
                            "fingerprint": _digest(stored.metadata.get("source_identity", str(run.src_path)))},
                "predict": {"ran": pred.chunks_computed > 0, "chunks_computed": pred.chunks_computed,
                            "chunks_skipped": pred.chunks_skipped, "chunks_repaired": pred.chunks_repaired,
                            "fingerprint": _digest(pred.attrs.get("fingerprint"))},
                "postprocess": {"ran": True,
                                "fingerprint": _digest([pred.attrs.get("fingerprint"), outputs.pp_kwargs])},
                "export": {"ran": True, "fingerprint": outputs.fingerprint},
            },
            "peak_memory_mib": peak_memory_mib(run.client if run.client is not None else current_client(), peak_reset),
            "particles": int(len(particles)),
            "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
            "outputs": {k: str(Path(v).resolve()) for k, v in files.items()},
            "versions": versions(),
            **run_provenance(list(zip((s.path for s in resolve_models(_model_arg(p))),
                                      (run.identity or {}).get("weights_sha256") or []))),
        }
        # the tomogram's own record, then the folder's last run (both written last: they vouch for the outputs)
        for path in (run.folder.record, run.folder.last_run):
            with atomic_output(path, overwrite=True) as tmp_json:
                tmp_json.write_text(json.dumps(record, indent=2))
        files["run"] = run_record_path(run.out, run.stem)
    return DetectionResult(labels=labels, particles=particles, voxel_size=run.voxel_size, detections=dets,
                           prediction=pred, files=files, timings=run.timings, out_dir=run.out if run.writes else None,
                           _tmp=run.keep_alive)
