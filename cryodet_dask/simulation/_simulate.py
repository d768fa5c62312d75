"""The simulator: configuration, in-memory core, and the writer of an output folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import OutputExistsError, ParameterError
from .._progress import compute
from ..io import atomic_output, create_image_group, lazy_array, normalize_chunks, write_blocks, write_mrc
from ._config import DEFAULT_DENSITY, IMAGING_MODES, SimulationConfig
from ._distractors import DISTRACTOR_CODES, check_distractors, place_distractors
from ._imaging import image_volume
from ._membranes import plan_membranes, render_membranes
from ._placement import PARTICLE_COLUMNS, place_particles
from ._tiltseries import image_tiltseries
from ..templates import Template, load_template, prepare_template

__all__ = [
    "SimulationConfig",
    "SimulatedTomogram",
    "SimulationResult",
    "OUTPUT_FILES",
    "FORMATS",
    "DEFAULT_DENSITY",
    "IMAGING_MODES",
    "output_files",
    "simulate",
    "simulate_arrays",
    "write_simulation",
]

log = logging.getLogger("cryodet_dask")

#: Fixed names of the files ``simulate`` writes into its output folder.
OUTPUT_FILES = {
    "tomogram": "tomogram.mrc",
    "labels": "labels.mrc",
    "mask": "mask.mrc",
    "center": "center.mrc",
    "membranes": "membranes.mrc",
    "particles": "particles.csv",
    "parameters": "simulation.json",
}
PREVIEW_FILE = "preview.png"
#: Written only when the scene has distractors: their map (0 none, else the kind's code).
DISTRACTORS_FILE = "distractors.mrc"
#: Volume formats ``simulate`` writes.
FORMATS = ("mrc", "zarr")
_VOLUMES = ("tomogram", "labels", "mask", "center", "membranes")


def output_files(format: str = "mrc", distractors: bool = False) -> dict[str, str]:
    """File names ``simulate`` writes for a volume ``format`` (``"mrc"`` or ``"zarr"``).

    ``distractors``: the scene has distractors, so their map is written too.
    """
    if format not in FORMATS:
        raise ParameterError(f"output format must be one of {', '.join(FORMATS)}, got {format!r}")
    files = dict(OUTPUT_FILES)
    if distractors:
        files["distractors"] = DISTRACTORS_FILE
    return {k: (v.replace(".mrc", ".zarr") if (k in _VOLUMES or k == "distractors") and format == "zarr" else v)
            for k, v in files.items()}


_SLAB_VOXELS = 2_000_000


@dataclass(frozen=True, eq=False)
class SimulatedTomogram:
    """A simulated tomogram and its ground truth, in memory (arrays (z, y, x)).

    Attributes
    ----------
    tomogram : numpy.ndarray
        float32, zero mean, unit variance; particles dark (low values).
    labels : numpy.ndarray
        int32 instance labels, 0 background, ``particles.id`` otherwise.
    mask : numpy.ndarray
        uint8 0/1 particle mask (``labels > 0``).
    center : numpy.ndarray
        float32 CenterNet target in [0, 1].
    membranes : numpy.ndarray
        uint8 0/1 membrane mask.
    signal : numpy.ndarray
        float32 specimen density before imaging.
    clean : numpy.ndarray or None
        The noise-free tomogram on the tomogram's scale (if asked for).
    particles : pandas.DataFrame
        The particle table.
    stats : dict
        Measured SNR, variances, counts and timings.
    config : SimulationConfig
    distractors : numpy.ndarray or None
        uint8 distractor map (0 none, else the kind's code,
        :data:`~cryodet_dask.simulation.DISTRACTOR_CODES`), when the scene has any.
    """

    tomogram: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    center: np.ndarray
    membranes: np.ndarray
    signal: np.ndarray
    clean: np.ndarray | None
    particles: pd.DataFrame
    stats: dict[str, Any]
    config: SimulationConfig
    distractors: np.ndarray | None = None


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    out_dir : Path
    paths : dict of str to Path
        ``tomogram``, ``labels``, ``mask``, ``center``, ``membranes``,
        ``particles``, ``parameters`` (and ``preview`` when written).
    n_particles, n_on_membrane, n_membranes : int
    snr : float
        SNR measured on the written tomogram.
    shape : tuple of int
    voxel_size : float
    seconds : float
        Wall time.
    """

    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    n_particles: int = 0
    n_on_membrane: int = 0
    n_membranes: int = 0
    snr: float = float("nan")
    shape: tuple[int, int, int] = (0, 0, 0)
    voxel_size: float = 10.0
    seconds: float = 0.0


def _config(config: SimulationConfig | None, params: dict[str, Any]) -> SimulationConfig:
    if config is None:
        return SimulationConfig(**params)
    return dataclasses.replace(config, **params) if params else config


def _load_templates(cfg: SimulationConfig) -> list[Template]:
    out = []
    for i, name in enumerate(cfg.templates):
        dens, vs, stem = load_template(name)
        scale = cfg.template_scale[i] if cfg.template_scale else 1.0  # a larger voxel: a larger particle
        out.append(prepare_template(dens, source_voxel_size=vs * scale, voxel_size=cfg.voxel_size,
                                    fraction=cfg.threshold, name=stem, source=str(name)))
    return out


def _n_target(cfg: SimulationConfig, templates: list[Template]) -> int:
    if cfg.n_particles is not None:
        return int(cfg.n_particles)
    density = DEFAULT_DENSITY if cfg.density is None else cfg.density
    mean_voxels = float(np.average([t.n_voxels for t in templates], weights=cfg.abundance or None))
    return int(round(density * float(np.prod(cfg.shape)) / mean_voxels))


def _run(cfg: SimulationConfig, arrays: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fill ``arrays`` (signal, labels, center, membranes, tomogram, clean?) and return the table."""
    t0 = time.perf_counter()
    # a third child for the distractors: scenes without them stay as they were, bit for bit
    scene_seed, noise_seed, distractor_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.default_rng(scene_seed)
    templates = _load_templates(cfg)
    profile = cfg.membrane_profile
    membranes = plan_membranes(cfg.membrane_count, cfg.shape, cfg.voxel_size, rng, profile)
    if len(membranes) < cfg.membrane_count:
        log.info("fitted %d of %d membranes into the volume", len(membranes), cfg.membrane_count)
    nz, ny, nx = cfg.shape
    step = max(1, _SLAB_VOXELS // (ny * nx))
    for z0 in range(0, nz, step):
        z1 = min(z0 + step, nz)
        dens, mask = render_membranes(membranes, (z0, z1), cfg.shape, profile)
        arrays["signal"][z0:z1] = dens
        arrays["membranes"][z0:z1] = mask
    distractors: list[dict[str, Any]] = []
    if cfg.distractors:
        distractors = place_distractors(
            cfg.distractors, shape=cfg.shape, voxel_size=cfg.voxel_size, rng=np.random.default_rng(distractor_seed),
            signal=arrays["signal"], distractor_map=arrays["distractors"], membrane_mask=arrays["membranes"],
            profile=profile, strict=not cfg.allow_fewer_distractors)
    t1 = time.perf_counter()
    rows = place_particles(
        templates, membranes, profile, n_target=_n_target(cfg, templates),
        membrane_fraction=cfg.membrane_fraction, rng=rng, voxel_size=cfg.voxel_size,
        signal=arrays["signal"], labels=arrays["labels"], center=arrays["center"],
        membrane_mask=arrays["membranes"], blocked=arrays.get("distractors"), abundance=cfg.abundance,
    )
    table = pd.DataFrame(rows, columns=PARTICLE_COLUMNS)
    t2 = time.perf_counter()
    stats: dict[str, Any]
    if cfg.imaging == "tiltseries":
        stats = dict(image_tiltseries(arrays["signal"], arrays["tomogram"], cfg.imaging_params, cfg.tiltseries, noise_seed,
                                 clean=arrays.get("clean"), exclude=arrays.get("distractors")))
    else:
        stats = dict(image_volume(arrays["signal"], arrays["tomogram"], cfg.imaging_params, noise_seed,
                             clean=arrays.get("clean"), max_fft_voxels=cfg.max_fft_voxels, block=cfg.fft_block,
                             halo=cfg.fft_halo, exclude=arrays.get("distractors")))
    t3 = time.perf_counter()
    if cfg.distractors:
        stats["distractors"] = distractors
        stats["n_distractors"] = {k: sum(d["kind"] == k for d in distractors) for k, _ in cfg.distractors}
        stats["distractors_asked"] = check_distractors(cfg.distractors, cfg.shape, cfg.voxel_size)
    stats.update(
        n_particles=len(table), n_on_membrane=int(table["on_membrane"].sum()) if len(table) else 0,
        n_membranes=len(membranes), membranes=[m.kind for m in membranes],
        particle_fraction=float(table["n_voxels"].sum() / np.prod(cfg.shape)) if len(table) else 0.0,
        seconds_membranes=t1 - t0, seconds_particles=t2 - t1, seconds_imaging=t3 - t2,
    )
    return table, stats


def simulate_arrays(config: SimulationConfig | None = None, *, return_clean: bool = False,
                    **params: Any) -> SimulatedTomogram:
    """Simulate a tomogram with ground truth, in memory.

    Parameters
    ----------
    config : SimulationConfig, optional
        All parameters; keyword arguments override its fields.
    return_clean : bool
        Also return the noise-free tomogram.
    **params
        Fields of :class:`SimulationConfig` (``shape``, ``snr``, ``seed``, ...).

    Returns
    -------
    SimulatedTomogram

    Examples
    --------
    >>> sim = simulate_arrays(shape=(32, 64, 64), n_particles=5, n_membranes=0, seed=1)
    >>> sim.tomogram.shape, int(sim.labels.max()) == len(sim.particles)
    ((32, 64, 64), True)
    """
    cfg = _config(config, params)
    shape = cfg.shape
    arrays: dict[str, Any] = {
        "signal": np.zeros(shape, np.float32),
        "labels": np.zeros(shape, np.int32),
        "center": np.zeros(shape, np.float32),
        "membranes": np.zeros(shape, bool),
        "tomogram": np.zeros(shape, np.float32),
    }
    if cfg.distractors:
        arrays["distractors"] = np.zeros(shape, np.uint8)
    if return_clean:
        arrays["clean"] = np.zeros(shape, np.float32)
    table, stats = _run(cfg, arrays)
    return SimulatedTomogram(
        tomogram=arrays["tomogram"], labels=arrays["labels"], mask=(arrays["labels"] > 0).astype(np.uint8),
        center=arrays["center"], membranes=arrays["membranes"].astype(np.uint8), signal=arrays["signal"],
        clean=arrays.get("clean"), particles=table, stats=stats, config=cfg, distractors=arrays.get("distractors"),
    )


def _slab_chunks(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return (max(1, 2**22 // (shape[1] * shape[2])), shape[1], shape[2])


def _lazy(array: Any, key: str, chunks: tuple[int, int, int]) -> da.Array:
    """A dask view of a (memory-mapped) array, read chunk by chunk, never copied whole."""
    return lazy_array(array, chunks, name=f"cryodet-simulate-{key}-{uuid.uuid4().hex}")


def _write_zarr(volume: da.Array, path: Path, name: str, voxel_size: float, chunks: tuple[int, int, int], *,
                overwrite: bool, progress: bool) -> Path:
    """Write a volume as a one-level OME-Zarr v3 image group, block by block."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        create_image_group(tmp, shape=volume.shape, dtype=volume.dtype, chunks=chunks, name=name,
                           voxel_size_zyx=(voxel_size,) * 3,
                           attributes={"voxel_size": voxel_size, "voxel_size_zyx": [voxel_size] * 3,
                                       "source": "cryodet-dask simulate"})
        compute(write_blocks(volume, tmp / "0").sum(), progress=progress, desc=f"writing {path.name}")
    return path


def _label_dtype(n: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if n <= np.iinfo(np.uint16).max else np.dtype(np.float32)


def write_simulation(
    out_dir: Path,
    cfg: SimulationConfig,
    volumes: dict[str, Any],
    table: pd.DataFrame,
    stats: dict[str, Any],
    *,
    format: str = "mrc",
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Write volumes (numpy arrays or memory maps) and the table under their fixed names.

    MRC: tomogram and CenterNet target float32, labels uint16 (float32 above
    65535 particles), masks int8 (MRC has no uint8).  Zarr: OME-Zarr v3 image
    groups in 128³ chunks (as written by ``cryodet-dask convert``), labels
    int32, masks uint8.
    """
    has_distractors = volumes.get("distractors") is not None
    names = output_files(format, has_distractors)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vs = cfg.voxel_size
    paths: dict[str, Path] = {}
    dtypes: dict[str, npt.DTypeLike]
    if format == "zarr":
        chunks = normalize_chunks(128, cfg.shape)
        dtypes = {"tomogram": np.float32, "labels": np.int32, "mask": np.uint8, "center": np.float32,
                  "membranes": np.uint8, "distractors": np.uint8}
    else:
        chunks = _slab_chunks(cfg.shape)
        dtypes = {"tomogram": np.float32, "labels": _label_dtype(len(table)), "mask": np.int8,
                  "center": np.float32, "membranes": np.int8, "distractors": np.int8}
    labels = _lazy(volumes["labels"], "labels", chunks)
    plan = {
        "tomogram": (_lazy(volumes["tomogram"], "tomogram", chunks), "simulated tomogram"),
        "labels": (labels, "particle instance labels"),
        "mask": (labels > 0, "particle mask"),
        "center": (_lazy(volumes["center"], "center", chunks), "CenterNet target"),
        "membranes": (_lazy(volumes["membranes"], "membranes", chunks), "membrane mask"),
    }
    if has_distractors:
        plan["distractors"] = (_lazy(volumes["distractors"], "distractors", chunks),
                               "distractor map (" + ", ".join(f"{v} {k}" for k, v in DISTRACTOR_CODES.items()) + ")")
    for key, (vol, label) in plan.items():
        vol = vol.astype(dtypes[key])
        if format == "zarr":
            paths[key] = _write_zarr(vol, out_dir / names[key], key, vs, chunks, overwrite=overwrite,
                                     progress=progress)
        else:
            paths[key] = write_mrc(vol, out_dir / names[key], voxel_size=vs, overwrite=overwrite,
                                   progress=progress, label=f"cryodet-dask simulate: {label}")
    with atomic_output(out_dir / names["particles"], overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    paths["particles"] = out_dir / names["particles"]
    meta: dict[str, Any] = {"config": cfg.to_dict(),
            "stats": {k: v for k, v in stats.items() if not k.startswith("seconds")},
            "conventions": {
                "axes": "arrays (z, y, x); table x, y, z in voxels (x = last array axis), *_angst = voxels * voxel_size",
                "euler": "RELION ZYZ (phi, theta, psi) = (rot, tilt, psi), degrees; particle = template rotated by "
                         "Rotation.from_euler('ZYZ', [phi, theta, psi], degrees=True).inv() about its centre",
                "contrast": "tomogram zero mean, unit variance; dense objects dark (low values)",
                "snr": "var(wedge(CTF(signal))) / var(wedge(noise)) over the whole volume",
                "missing_wedge": "tilt axis y, beam z: Fourier coefficients with |kz| > |kx| tan(tilt_range) are 0",
                "imaging": ("fourier: CTF and missing wedge as Fourier masks on the volume" if cfg.imaging == "fourier"
                            else "tiltseries: scikit-image radon per xz-slice (tilt axis y, beam z), per projection "
                                 "exposure filter, CTF (defocus gradient across the tilted image) and noise, "
                                 "weighted back-projection (iradon)"),
            }}
    if has_distractors:
        meta["conventions"]["distractors"] = ("in the density, not in the labels; distractors map codes "
                                              + ", ".join(f"{v} {k}" for k, v in DISTRACTOR_CODES.items()))
    with atomic_output(out_dir / names["parameters"], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=float) + "\n")
    paths["parameters"] = out_dir / names["parameters"]
    return paths


def simulate(
    out_dir: str | os.PathLike[str],
    config: SimulationConfig | None = None,
    *,
    preview: bool = False,
    format: str = "mrc",
    overwrite: bool = False,
    progress: bool = False,
    **params: Any,
) -> SimulationResult:
    """Simulate a tomogram with its ground truth and write it to ``out_dir``.

    Files (fixed names): ``tomogram.mrc`` (float32, voxel size in the
    header), ``labels.mrc`` (uint16 instance ids = ``particles.csv`` ``id``;
    float32 above 65535 particles), ``mask.mrc`` (int8 0/1), ``center.mrc``
    (float32 CenterNet target), ``membranes.mrc`` (int8 0/1),
    ``particles.csv``, ``simulation.json`` (parameters and measured SNR) and,
    with ``preview``, ``preview.png``.

    The volumes are built in memory-mapped scratch files inside ``out_dir``
    (removed at the end), particle by particle and slab by slab, and imaged
    in blocks when large, so memory stays at a few slabs plus one FFT block
    (or one volume's FFT up to ``max_fft_voxels``).

    Parameters
    ----------
    out_dir : path-like
        Output folder (created).
    config : SimulationConfig, optional
        Parameters; keyword arguments override its fields.
    preview : bool
        Also write ``preview.png`` (central XY and XZ slices, label overlay).
    format : {"mrc", "zarr"}
        Volume format: MRC files, or OME-Zarr v3 stores (``tomogram.zarr``, ...)
        for large volumes.
    overwrite : bool
        Replace existing output files.
    progress : bool
        Progress bars while writing.
    **params
        Fields of :class:`SimulationConfig`: ``shape=(z, y, x)``,
        ``voxel_size`` (Å), ``seed``, ``snr``, ``tilt_range`` (degrees),
        ``defocus_um`` (µm, negative = underfocus), ``amplitude_contrast``,
        ``voltage_kv``, ``cs_mm``, ``n_particles`` or ``density``,
        ``templates``, ``n_membranes``, ``membrane_fraction``, ...

    Returns
    -------
    SimulationResult
    """
    t0 = time.perf_counter()
    cfg = _config(config, params)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    names = list(output_files(format, bool(cfg.distractors)).values()) + ([PREVIEW_FILE] if preview else [])
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{out} already holds {', '.join(existing)} (use --overwrite to replace)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / ".simulate.partial"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    try:
        dtypes = {"signal": np.float32, "labels": np.int32, "center": np.float32, "membranes": np.bool_,
                  "tomogram": np.float32}
        if cfg.distractors:
            dtypes["distractors"] = np.uint8
        arrays = {k: np.lib.format.open_memmap(scratch / f"{k}.npy", mode="w+", dtype=dt, shape=cfg.shape)
                  for k, dt in dtypes.items()}
        table, stats = _run(cfg, arrays)
        del arrays["signal"]
        paths = write_simulation(out, cfg, arrays, table, stats, format=format, overwrite=overwrite,
                                 progress=progress)
        if preview:
            from ..preview import preview_png

            paths["preview"] = preview_png(
                arrays["tomogram"], out / PREVIEW_FILE, labels=arrays["labels"], voxel_size=cfg.voxel_size,
                title=f"simulated tomogram, {len(table)} particles, SNR {cfg.snr:g}, ±{cfg.tilt_range:g}° tilt"
                      + (f" ({cfg.tilt_step:g}° steps, back-projected)" if cfg.imaging == "tiltseries" else ""),
                overwrite=overwrite,
            )
        del arrays
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()  # a run that failed (e.g. distractors that do not fit) leaves nothing behind
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return SimulationResult(
        out_dir=out, paths=paths, n_particles=int(stats["n_particles"]), n_on_membrane=int(stats["n_on_membrane"]),
        n_membranes=int(stats["n_membranes"]), snr=float(stats["snr"]), shape=cfg.shape,
        voxel_size=cfg.voxel_size, seconds=time.perf_counter() - t0,
    )
