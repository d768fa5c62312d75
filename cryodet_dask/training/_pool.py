"""A pool of simulated training tomograms under randomized imaging conditions.

Networks trained on one imaging condition fail on others (another SNR,
missing wedge, defocus, pixel size, or the opposite contrast polarity, which
depends on the reconstruction software).  :func:`simulate_pool` draws every
tomogram's conditions at random from :class:`PoolRanges` and writes the
simulator's files per tomogram plus a manifest, ``pool.json``, that
:func:`read_pool` turns into the lists :func:`~cryodet_dask.training.train`
takes.  The draw of tomogram *i* depends only on ``(seed, i)``: a pool can be
extended or an interrupted one completed, and two pools with different seeds
(training, validation, test) never share a tomogram.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ParameterError

__all__ = ["PoolRanges", "PoolMember", "draw_conditions", "simulate_pool", "read_pool", "invert_polarity",
           "POOL_MANIFEST"]

log = logging.getLogger("cryodet_dask")

#: File name of a pool's manifest.
POOL_MANIFEST = "pool.json"

_TEMPLATES = ("4v4r", "4cr2", "3j9i", "1bxn", "7n4y", "6pxm")


@dataclass(frozen=True)
class PoolRanges:
    """Ranges the imaging conditions of a pool's tomograms are drawn from.

    Attributes
    ----------
    snr : (float, float)
        Signal-to-noise ratio, drawn log-uniformly.
    tilt_range : (float, float)
        Maximum tilt in degrees (±), uniform.
    defocus_um : (float, float)
        Defocus in µm (negative = underfocus), uniform.
    voxel_size : (float, float)
        Å per voxel, uniform: particles appear at other sizes in voxels (the
        network is used at its checkpoint's voxel size; ``--rescale`` brings
        other tomograms to it).
    density : (float, float)
        Particle volume fraction, uniform.
    membrane_probability : float
        Probability that a tomogram has membranes (else none, all particles free).
    inverted_fraction : float
        Probability that a tomogram's contrast is inverted (particles bright).
    min_templates : int
        Each tomogram holds a random subset of at least this many of the six
        shipped templates.
    imaging : str
        ``fourier`` (Fourier-mask imaging, the default), ``tiltseries`` or
        ``mixed`` (each tomogram one or the other, evenly).
    tilt_step : (float, float)
        Tilt-series step in degrees, uniform (tilt-series tomograms only).
    distractors : tuple of str
        Distractor kinds (microtubule, actin, gold, ice, edge, membrane), each
        present in a tomogram with ``distractor_probability``, with 0.5-1.5
        times its default count.  See
        :func:`cryodet_dask.simulation.draw_variants`.
    distractor_probability : float
    species_mix : str
        ``equal`` (each tomogram's templates equally abundant, the default) or
        ``varied`` (random proportions per tomogram, recorded as ``abundance``).
    size_range : (float, float)
        Size factor of each template per tomogram, log-uniform (recorded as
        ``template_scale``); (1, 1), the default: real sizes.
    """

    snr: tuple[float, float] = (0.05, 1.0)
    tilt_range: tuple[float, float] = (40.0, 70.0)
    defocus_um: tuple[float, float] = (-6.0, -1.0)
    voxel_size: tuple[float, float] = (8.5, 12.0)
    density: tuple[float, float] = (0.04, 0.16)
    membrane_probability: float = 0.7
    inverted_fraction: float = 0.5
    min_templates: int = 2
    imaging: str = "fourier"
    tilt_step: tuple[float, float] = (1.0, 3.0)
    distractors: tuple[str, ...] = ()
    distractor_probability: float = 0.5
    species_mix: str = "equal"
    size_range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("snr", "tilt_range", "defocus_um", "voxel_size", "density"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ParameterError(f"pool range {name} must be two finite numbers lo <= hi, got {(lo, hi)}")
            object.__setattr__(self, name, (lo, hi))
        if self.snr[0] <= 0 or self.voxel_size[0] <= 0:
            raise ParameterError("pool SNR and voxel size ranges must be positive")
        if not (0 < self.tilt_range[0] and self.tilt_range[1] <= 90):
            raise ParameterError(f"pool tilt range must lie in (0, 90] degrees, got {self.tilt_range}")
        if not (0 <= self.density[0] and self.density[1] <= 0.5):
            raise ParameterError(f"pool density must lie in [0, 0.5], got {self.density}")
        for name in ("membrane_probability", "inverted_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ParameterError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.min_templates <= len(_TEMPLATES):
            raise ParameterError(f"min_templates must be in 1..{len(_TEMPLATES)}, got {self.min_templates}")
        from ..simulation import check_pool_variants

        object.__setattr__(self, "tilt_step", tuple(float(v) for v in self.tilt_step))
        object.__setattr__(self, "distractors", tuple(str(k) for k in self.distractors))
        object.__setattr__(self, "size_range", tuple(float(v) for v in self.size_range))
        check_pool_variants(self.imaging, self.tilt_step, self.distractors, self.distractor_probability,
                            self.tilt_range[0], self.species_mix, self.size_range)


@dataclass(frozen=True)
class PoolMember:
    """One tomogram of a pool: its files and the conditions it was simulated with."""

    name: str
    tomogram: Path
    labels: Path
    center: Path
    conditions: dict[str, Any] = field(default_factory=dict)
    #: the simulator's particle table (``id``, ``class`` = the template, i.e. the species, ...)
    particles: Path | None = None


def draw_conditions(seed: int, index: int, ranges: PoolRanges | None = None,
                    shape: tuple[int, int, int] = (64, 160, 160)) -> dict[str, Any]:
    """The random imaging conditions of tomogram ``index`` of the pool with ``seed`` (pure).

    Returns
    -------
    dict
        Keyword arguments of :func:`~cryodet_dask.simulation.simulate`
        (``snr``, ``tilt_range``, ``defocus_um``, ``voxel_size``, ``density``,
        ``templates``, ``n_membranes`` when none, ``seed``) plus ``inverted``.
    """
    ranges = PoolRanges() if ranges is None else ranges  # not made at import: its check imports the simulation
    rng = np.random.default_rng([int(seed), int(index), 20261130])
    lo, hi = np.log(ranges.snr[0]), np.log(ranges.snr[1])
    k = int(rng.integers(ranges.min_templates, len(_TEMPLATES) + 1))
    templates = tuple(sorted(rng.choice(len(_TEMPLATES), size=k, replace=False).tolist()))
    cond: dict[str, Any] = {
        "seed": int(rng.integers(2**31 - 1)),
        "snr": round(float(np.exp(rng.uniform(lo, hi))), 4),
        "tilt_range": round(float(rng.uniform(*ranges.tilt_range)), 2),
        "defocus_um": round(float(rng.uniform(*ranges.defocus_um)), 3),
        "voxel_size": round(float(rng.uniform(*ranges.voxel_size)), 3),
        "density": round(float(rng.uniform(*ranges.density)), 4),
        "templates": [_TEMPLATES[t] for t in templates],
    }
    if rng.random() >= ranges.membrane_probability:
        cond["n_membranes"] = 0
        cond["membrane_fraction"] = 0.0
    cond["inverted"] = bool(rng.random() < ranges.inverted_fraction)
    from ..simulation import draw_variants  # imaging mode and distractors: their own random stream

    cond.update(draw_variants(seed, index, imaging=ranges.imaging, tilt_step=ranges.tilt_step,
                              distractors=ranges.distractors, probability=ranges.distractor_probability, shape=shape,
                              species_mix=ranges.species_mix, n_templates=len(templates),
                              size_range=ranges.size_range))
    return cond


def invert_polarity(path: str | os.PathLike[str]) -> None:
    """Negate an MRC tomogram in place (zero-mean, so only the contrast flips); header statistics updated."""
    import mrcfile

    with mrcfile.mmap(path, mode="r+") as m:
        m.data[...] = -m.data
        m.update_header_stats()


def simulate_pool(out_dir: str | os.PathLike[str], count: int, *, seed: int = 0,
                  shape: tuple[int, int, int] = (64, 160, 160), ranges: PoolRanges | None = None,
                  progress: bool = False, workers: int = 1) -> list[PoolMember]:
    """Simulate ``count`` tomograms with random imaging conditions into ``out_dir``.

    Tomogram *i* goes to ``out_dir/NNNN/`` (the simulator's files; its contrast
    negated when drawn ``inverted``) and is listed in ``out_dir/pool.json``
    with its conditions.  Tomograms already complete (listed in the manifest
    with the same conditions) are kept, so an interrupted pool is completed
    by the same call and a larger ``count`` extends it.

    Parameters
    ----------
    out_dir : path-like
        Pool folder (created).
    count : int
        Number of tomograms.
    seed : int
        Pool seed; tomogram *i*'s conditions are :func:`draw_conditions` (seed, i).
    shape : (int, int, int)
        Shape of every tomogram (z, y, x) in voxels.
    ranges : PoolRanges, optional
        Where conditions are drawn from (default: ``PoolRanges()``).
    progress : bool
        A progress bar (tqdm).
    workers : int
        Tomograms simulated at once, each in its own process (the files are
        the same as with one: every tomogram depends only on (seed, index)).

    Returns
    -------
    list of PoolMember
    """
    from tqdm.auto import tqdm

    from ..io import atomic_output

    ranges = PoolRanges() if ranges is None else ranges
    if count < 1:
        raise ParameterError(f"a pool needs at least one tomogram, got {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / POOL_MANIFEST
    old: dict[str, Any] = {}
    if manifest_path.exists():
        old = {m["name"]: m for m in json.loads(manifest_path.read_text())["members"]}
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers must be a whole number >= 1, got {workers!r}")
    members: dict[str, dict[str, Any]] = {}
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]

    def finish(entry: dict[str, Any]) -> None:
        members[entry["name"]] = entry
        # the manifest lists only complete tomograms (in index order): rewritten after each one
        with atomic_output(manifest_path, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps({"format": "cryodet-dask-pool", "seed": int(seed),
                                             "ranges": asdict(ranges),
                                             "members": [members[k] for k in sorted(members)]}, indent=1))

    todo = []
    for i in range(count):
        name = f"{i:04d}"
        cond = draw_conditions(seed, i, ranges, shape)
        entry: dict[str, Any] = {"name": name, "conditions": cond, "shape": list(shape)}
        done = old.get(name)
        if done and done.get("conditions") == cond and done.get("shape") == list(shape) \
                and (out / name / "simulation.json").exists():
            entry.update({k: done[k] for k in ("n_particles", "measured_snr") if k in done})
            members[name] = entry
        else:
            todo.append(entry)
    bar = tqdm(total=count, initial=count - len(todo), desc="simulating pool", disable=not progress,
               unit="tomogram")
    with bar:
        if workers == 1 or len(todo) <= 1:
            for entry in todo:
                entry.update(_simulate_member(out / entry["name"], shape, entry["conditions"]))
                finish(entry)
                bar.update()
        else:
            import concurrent.futures as cf
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # no forked copies of this process's threads
            with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                futures = {pool.submit(_simulate_member, out / e["name"], shape, e["conditions"]): e for e in todo}
                for fut in cf.as_completed(futures):
                    entry = futures[fut]
                    entry.update(fut.result())
                    finish(entry)
                    bar.update()
    if not todo:  # nothing simulated: the manifest still states this call's members
        finish(members[f"{count - 1:04d}"])
    return read_pool(out)


def _simulate_member(folder: Path, shape: tuple[int, int, int], cond: dict[str, Any]) -> dict[str, Any]:
    """Simulate one pool tomogram into ``folder`` (its contrast negated when drawn ``inverted``)."""
    from ..simulation import simulate

    params = {k: v for k, v in cond.items() if k != "inverted"}
    params["templates"] = tuple(params["templates"])
    res = simulate(folder, shape=shape, overwrite=True, **params)
    if cond["inverted"]:
        invert_polarity(folder / "tomogram.mrc")
    return {"n_particles": res.n_particles, "measured_snr": res.snr}


def read_pool(path: str | os.PathLike[str]) -> list[PoolMember]:
    """The members of the pool in ``path`` (a pool folder or its ``pool.json``)."""
    p = Path(path)
    manifest = p / POOL_MANIFEST if p.is_dir() else p
    if not manifest.exists():
        raise InputError(f"{p}: not a training pool (no {POOL_MANIFEST}; make one with `cryodet-dask "
                         f"simulate-pool`)")
    try:
        data = json.loads(manifest.read_text())
        members = data["members"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{manifest}: not a valid pool manifest ({exc})") from None
    root = manifest.parent
    out = []
    for m in members:
        folder = root / m["name"]
        paths = {k: folder / f"{k}.mrc" for k in ("tomogram", "labels", "center")}
        missing = [str(v) for v in paths.values() if not v.exists()]
        if missing:
            raise InputError(f"{manifest}: member {m['name']} is incomplete (missing {missing[0]})")
        table = folder / "particles.csv"
        out.append(PoolMember(name=f"{root.name}/{m['name']}", conditions=dict(m["conditions"]),
                              particles=table if table.exists() else None, **paths))
    if not out:
        raise InputError(f"{manifest}: the pool is empty")
    return out
