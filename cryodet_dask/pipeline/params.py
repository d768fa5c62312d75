"""Every parameter of a detection run, validated in full when it is made (issue 16: ``pipeline/params``).

One name per concept across the command line, the YAML config and the API; ``detect`` and the CLI
refuse a bad value here, before any work.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError
from ..postprocessing import PostprocessParams, from_particle_diameter

if TYPE_CHECKING:
    from ..io import Tomogram

__all__ = ["DetectParams", "check_tomo_name", "check_voxel_size", "resolve_voxel_size", "output_voxel_size",
           "check_known_voxel_size", "VOXEL_SIZE_RANGE", "ANGSTROM_FORMATS"]

#: DetectParams fields that ``particle_diameter`` sets when they are not given.
_DERIVED = ("center_min_distance", "remove_min_size")


#: The magnifications ``--magnify`` accepts (the CLI's parser and :class:`DetectParams` check the same).
MAGNIFY_RANGE: tuple[float, float] = (0.25, 4.0)


@dataclass(frozen=True)
class DetectParams:
    """Every parameter of a detection run; one name across the CLI, the YAML config and the API.

    ``rescale``: when the weights were trained at a voxel size more than 5 %
    away from the tomogram's, predict on the tomogram resampled to the
    weights' voxel size and bring the maps back to the tomogram's grid
    (see :func:`cryodet_dask.resampling.resample`).  ``magnify``: predict on the tomogram
    resampled this much larger again (with ``rescale``, relative to the weights' voxel size), so that
    particles smaller than the training's are seen at a size the networks know; the maps come back
    to the tomogram's grid the same way.

    Seed flag aliases: ``-m`` segnet, ``-c`` centernet, ``-ps`` chunks, ``-vs``
    voxel_size, ``-mt`` mask_threshold, ``-ct`` center_threshold, ``-rs``
    remove_min_size, ``-nn`` neighbor_number, ``-dt`` distance_threshold.

    ``particle_diameter`` (Å, optional): sets ``center_min_distance = 0.5 * diameter /
    voxel_size`` and ``remove_min_size = round((pi / 6) * (0.5 * diameter / voxel_size)**3)``
    (:func:`~cryodet_dask.postprocessing._params.from_particle_diameter`) for the fields
    left at None; it needs the voxel size (``voxel_size`` or the file header).
    ``remove_min_size`` and ``center_min_distance`` at None mean: from
    ``particle_diameter`` if given, else :class:`PostprocessParams`' defaults.

    With a multi-species model each species has its own diameter: the one given for it in a
    ``particle_diameter`` mapping (``{"ribosome": 280}``; ``--particle-diameter ribosome:280,...``),
    else the one its checkpoint records (``train --species NAME:DIAMETER``); one number applies to
    every species alike.  A species' diameter sets its own centre-fusion distance (unless
    ``center_min_distance`` is given) and its own minimum particle size (the smaller of
    ``min_particle_size`` and the sphere-of-half-the-diameter volume, so that a species smaller than
    the run-wide minimum keeps its particles); ``remove_min_size``, which
    runs before the species are known, takes the smallest species' (:meth:`resolve_postprocess`).
    ``min_score`` too may be a mapping (``{"ribosome": 0.3}``; ``--min-score ribosome:0.3,...``): each
    species named keeps its instances scoring at least that, the others the default.
    """

    segnet: str | None = None
    centernet: str | None = None
    chunks: tuple[int, ...] = (128,)
    voxel_size: float | None = None
    # post-processing: the defaults are PostprocessParams' (the seed's), stated once there
    mask_threshold: float = PostprocessParams.mask_threshold
    center_threshold: float = PostprocessParams.center_threshold
    remove_min_size: int | None = None  # None: PostprocessParams' default, or from particle_diameter
    check_center: bool = PostprocessParams.check_center
    filter_outlier: bool = PostprocessParams.filter_outlier
    neighbor_number: int = PostprocessParams.neighbor_number
    distance_threshold: float = PostprocessParams.distance_threshold
    connectivity: int = PostprocessParams.connectivity
    center_min_distance: float | None = None  # None: PostprocessParams' default, or from particle_diameter
    min_particle_size: int = PostprocessParams.min_particle_size
    min_score: float | dict[str, float] = PostprocessParams.min_score  # one for all, or per species (NAME: score)
    particle_diameter: float | dict[str, float] | None = None  # Å; one for all, or per species (NAME: Å)
    halo: tuple[int, ...] | None = None
    tile: tuple[int, ...] | None = None  # prediction tile core (voxels, whole chunks); None: planned from memory
    device: str = "auto"
    batch_size: int = 1
    keep_intermediate: bool = True
    formats: tuple[str, ...] = ("mrc", "txt", "csv", "star", "zarr")
    rescale: bool = False
    magnify: float = 1.0  # the networks see the tomogram this much larger (small particles); 0.25-4
    nan_policy: str = "error"
    tomogram_name: str | None = None  # rlnTomoName in the STAR file (default: the output name)
    polarity: str = "as-is"  # models.POLARITIES: average over the tomogram and its inverted contrast, or as-is
    tta: str = "none"  # models.TTAS: test-time augmentation, the mean over four mirror images ("flips")
    engine: str = "auto"  # prediction.ENGINE_CHOICES: auto (openvino when installed and on the CPU, else torch)
    species: tuple[str, ...] = ()  # keep only these species of a multi-species model (empty: all)

    def __post_init__(self) -> None:
        self.validate()  # a DetectParams is valid from construction on: a bad option fails before any work

    def postprocess_kwargs(self, voxel_size: float | None = None) -> dict[str, Any]:
        """The :class:`PostprocessParams` fields, by name, with ``remove_min_size`` and
        ``center_min_distance`` resolved: the value given, else derived from
        ``particle_diameter`` (which then needs ``voxel_size``, Å), else the default."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(PostprocessParams)}
        if isinstance(self.min_score, dict):  # per species (resolve_postprocess): the default for the others
            kw["min_score"] = PostprocessParams.min_score
        derived: dict[str, Any] = {}
        one = self.one_diameter
        if one is not None and any(kw[k] is None for k in _DERIVED):
            if voxel_size is None:
                raise ParameterError("--particle-diameter needs the voxel size: the input has none in its "
                                     "header; give -vs/--voxel-size")
            derived = from_particle_diameter(one, voxel_size)
        for k in _DERIVED:
            if kw[k] is None:
                kw[k] = derived.get(k, getattr(PostprocessParams, k))
        return kw

    @property
    def one_diameter(self) -> float | None:
        """The particle diameter (Å) when one is given for every species alike, else None."""
        d = self.particle_diameter
        return None if d is None or isinstance(d, dict) else float(d)

    def validate(self) -> PostprocessParams:
        """Check every parameter before any work (post-processing ones with any voxel size)."""
        _check_params(self)
        from ..postprocessing import SpeciesParams
        from ..species import check_species_name

        # the per-species forms (NAME: value): copick-safe names, each value in range
        per_species = (("--particle-diameter", self.particle_diameter,
                        lambda values: [from_particle_diameter(d, 1.0) for d in values]),
                       ("--min-score", self.min_score, lambda values: SpeciesParams(min_score=tuple(values))))
        for flag, given, check in per_species:
            if isinstance(given, dict):
                if not given:
                    raise ParameterError(f"{flag}: no species given")
                for name in given:
                    check_species_name(name)
                check(given.values())
        if self.particle_diameter is not None and not isinstance(self.particle_diameter, dict):
            from_particle_diameter(self.particle_diameter, 1.0)
        return PostprocessParams(**self.postprocess_kwargs(voxel_size=1.0))

    def resolve_postprocess(self, voxel_size: float | None,
                            model_diameters: dict[str, float | None] | None = None) -> tuple[dict[str, Any], Any]:
        """The :class:`PostprocessParams` fields and the per-species settings of a run.

        ``model_diameters``: the model's species in order, each with the diameter (Å) its checkpoint
        records (:func:`~cryodet_dask.prediction.model_species_diameters`); default: looked up from the
        model.  Returns ``(kwargs, species_params)``; ``species_params`` is a
        :class:`~cryodet_dask.postprocessing.SpeciesParams`, or None for a species-agnostic model.
        """
        from ..postprocessing import SpeciesParams

        if model_diameters is None:
            from ..prediction import model_species_diameters

            model_diameters = model_species_diameters(self.model_arg())
        kw = self.postprocess_kwargs(voxel_size)
        given = self.particle_diameter if isinstance(self.particle_diameter, dict) else None
        scores = self.min_score if isinstance(self.min_score, dict) else None
        if not model_diameters:
            if given is not None:
                raise ParameterError(f"--particle-diameter {_pairs(given)}: this model is species-agnostic (it picks "
                                     "'particle'); give one diameter in Å")
            if scores is not None:
                raise ParameterError(f"--min-score {_pairs(scores)}: this model is species-agnostic (it picks "
                                     "'particle'); give one score")
            return kw, None
        names = list(model_diameters)
        for flag, per in (("--particle-diameter", given), ("--min-score", scores)):
            if per is not None and set(per) - set(names):
                raise ParameterError(f"{flag}: {', '.join(sorted(set(per) - set(names)))} is not a species "
                                     f"of this model; its species: {', '.join(names)}")
        from ..species import SpeciesTable

        keep = SpeciesTable.of(names).select(list(self.species)) if self.species else ()
        # each species' score threshold: the one given for it, else the run-wide default
        min_score = () if scores is None else tuple(float(scores.get(n, kw["min_score"])) for n in names)
        if self.one_diameter is not None:  # one diameter for every species: the run-wide settings apply
            return kw, SpeciesParams(keep=keep, min_score=min_score)
        diam = {n: (given or {}).get(n, model_diameters[n]) for n in names}
        if all(d is None for d in diam.values()):
            return kw, SpeciesParams(keep=keep, min_score=min_score)
        if voxel_size is None:
            raise ParameterError(f"the species' diameters ({_pairs(diam)} Å) set each species' centre fusion distance "
                                 "and minimum size in voxels, which needs the voxel size: the input has none in its "
                                 "header; give -vs/--voxel-size")
        derived = [from_particle_diameter(d, voxel_size) if d is not None else None for d in diam.values()]
        fusion = tuple(float(kw["center_min_distance"]) if self.center_min_distance is not None or x is None
                       else float(x["center_min_distance"]) for x in derived)
        # a species smaller than the run-wide minimum keeps its particles: the smaller of the two
        min_size = tuple(int(kw["min_particle_size"]) if x is None else min(int(kw["min_particle_size"]),
                                                                             int(x["remove_min_size"]))
                         for x in derived)
        if self.remove_min_size is None:  # runs before the species are known: the smallest species' size
            kw["remove_min_size"] = min(int(kw["remove_min_size"]) if x is None else int(x["remove_min_size"])
                                        for x in derived)
        kw["center_min_distance"] = max(fusion)  # the widest fusion ball: the halo every block needs
        return kw, SpeciesParams(min_particle_size=min_size, keep=keep, min_score=min_score,
                                 center_min_distance=fusion if len(set(fusion)) > 1 else ())

    def check_plan(self, shape: Sequence[int], voxel_size: float | None,
                   model_diameters: dict[str, float | None] | None = None) -> None:
        """Refuse, before any work, a post-processing the task graph cannot hold: the blocks (``-ps``) and
        the centre fusion distance (given, or from ``--particle-diameter`` at ``voxel_size``) on ``shape``."""
        from dask.array.core import normalize_chunks

        from .._shapes import triplet
        from ..postprocessing import check_center_min_distance, check_plan

        kw, _ = self.resolve_postprocess(voxel_size, model_diameters)
        if self.center_min_distance is None and self.one_diameter is not None:
            check_center_min_distance(kw["center_min_distance"], diameter=self.one_diameter,
                                      voxel_size=voxel_size)
        chunks = normalize_chunks(tuple(min(int(c), int(n)) for c, n in zip(triplet(self.chunks), shape)),
                                  tuple(int(n) for n in shape))
        check_plan(shape, chunks, kw["center_min_distance"], chunks_flag="-ps/--chunks")

    def model_arg(self) -> Any:
        """The checkpoints to run, as :func:`~cryodet_dask.prediction.resolve_models` takes them (``None``:
        the shipped weights)."""
        given = [m for m in (self.segnet, self.centernet) if m]
        if not given:
            return None
        return given[0] if len(given) == 1 else given

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        d = dict(d)
        for k in ("chunks", "halo", "tile", "formats", "species"):
            if d.get(k) is not None:
                v = d[k]
                d[k] = tuple(v) if isinstance(v, list | tuple) else (v,)
        for k in ("particle_diameter", "min_score"):  # per species: NAME -> value
            if isinstance(d.get(k), dict):
                d[k] = dict(d[k])
        return cls(**d)


def _pairs(d: dict[str, Any]) -> str:
    return ",".join(f"{k}:{v:g}" if v is not None else k for k, v in d.items())


#: Characters and prefixes a RELION STAR value cannot start with or hold unquoted.
_STAR_RESERVED = ("data_", "loop_", "save_", "global_", "stop_")


def check_tomo_name(name: str, what: str = "") -> str:
    """Refuse a tomogram name that cannot become a RELION ``rlnTomoName`` (one unquoted STAR word)."""
    bad = None
    if not name:
        bad = "it is empty"
    elif any(ch.isspace() for ch in name):
        bad = "it contains white space"
    elif name[0] in "_#;'\"$":
        bad = f"it starts with {name[0]!r}"
    elif name.lower().startswith(_STAR_RESERVED):
        bad = "it starts with a STAR keyword"
    elif not name.isprintable():
        bad = "it contains control characters"
    if bad:
        raise ParameterError(f"{what or name!r}: the name {name!r} cannot be the STAR file's rlnTomoName ({bad}); "
                             "rename the file, or leave star out of --formats")
    return name


def _check_params(p: DetectParams) -> None:
    """Types and ranges of the fields the post-processing check does not cover (the API's guard)."""
    from ..exports import FORMATS

    m, (lo, hi) = p.magnify, MAGNIFY_RANGE
    if isinstance(m, bool) or not isinstance(m, int | float | np.floating) or not lo <= float(m) <= hi:
        raise ParameterError(f"magnify must be a number from {lo:g} to {hi:g}, got {m!r}")
    for k in ("check_center", "filter_outlier", "keep_intermediate", "rescale"):
        if not isinstance(getattr(p, k), bool | np.bool_):
            raise ParameterError(f"{k} must be true or false, got {getattr(p, k)!r}")
    unknown = [f for f in p.formats if f not in FORMATS]
    if unknown or not p.formats:
        raise ParameterError(f"formats must be among {','.join(FORMATS)}, got {','.join(map(str, p.formats)) or 'none'}")
    if p.tomogram_name is not None:
        check_tomo_name(p.tomogram_name, "--tomogram-name")
    from ..models import check_polarity, check_tta
    from ..prediction import check_engine

    check_polarity(p.polarity)
    check_tta(p.tta)
    check_engine(p.engine, p.device if isinstance(p.device, str) else "cpu")
    if p.species:
        from ..species import check_species_name

        for name in p.species:
            check_species_name(name)
        if len(set(p.species)) != len(p.species):
            raise ParameterError(f"--species names a species twice: {', '.join(p.species)}")
    if p.nan_policy not in ("error", "zero"):
        raise ParameterError(f"nan_policy must be error or zero, got {p.nan_policy!r}")
    if not (isinstance(p.device, str) and (p.device in ("auto", "cpu") or p.device.startswith("cuda"))):
        raise ParameterError(f"device must be auto, cpu or cuda, got {p.device!r}")
    if isinstance(p.batch_size, bool) or not isinstance(p.batch_size, int | np.integer) or p.batch_size < 1:
        raise ParameterError(f"batch_size must be a whole number >= 1, got {p.batch_size!r}")
    if p.voxel_size is not None:
        check_voxel_size(p.voxel_size, "-vs/--voxel-size")
    for k in ("chunks", "halo", "tile"):
        v = getattr(p, k)
        if v is not None and (len(v) not in (1, 3) or not all(isinstance(x, int | np.integer) and not isinstance(x, bool)
                                                              and x >= 1 for x in v)):
            raise ParameterError(f"{k} must be one or three whole numbers >= 1 (z,y,x), got {v!r}")


#: Physically plausible voxel sizes, Å.
VOXEL_SIZE_RANGE = (0.1, 1000.0)


def check_voxel_size(v: Any, source: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ParameterError(f"voxel size ({source}) must be a number of Å, got {v!r}") from None
    lo, hi = VOXEL_SIZE_RANGE
    if not (np.isfinite(f) and lo <= f <= hi):
        raise ParameterError(f"voxel size {v!r} Å ({source}) is not finite, positive and within {lo:g}-{hi:g} Å"
                             + ("; give -vs/--voxel-size" if source != "-vs/--voxel-size" else ""))
    return f


#: The outputs whose coordinates are in Å: they need a known voxel size (``-vs`` or the file header).
#: The TXT file's ``Position*`` columns are Å, so it is one of them; the label images and the CSV
#: (whose ``x_angst`` columns are then left empty) are in voxels.
ANGSTROM_FORMATS = ("txt", "star")


def resolve_voxel_size(tomo: Tomogram, given: float | None) -> float | None:
    """The voxel size (Å) a run uses: ``given`` (``-vs``), else the file header's, each checked to lie in
    the accepted range; None when neither says (never a guess: see :func:`check_known_voxel_size`)."""
    if given is not None:
        return check_voxel_size(given, "-vs/--voxel-size")
    if tomo.voxel_size:
        return check_voxel_size(tomo.voxel_size, "from the file header")
    return None


def check_known_voxel_size(voxel_size: float | None, formats: Sequence[str], what: str, *,
                           rescale: bool = False, magnify: float = 1.0) -> None:
    """Refuse, in one line naming ``-vs``, outputs in Å (:data:`ANGSTROM_FORMATS`) or ``--rescale`` when the
    voxel size is unknown (none in the header, no ``-vs``); outputs in voxels go ahead."""
    if voxel_size is not None:
        return
    need = [f for f in formats if f in ANGSTROM_FORMATS]
    if rescale or magnify != 1.0:
        flag = "--rescale" if rescale else "--magnify"
        raise ParameterError(f"{what} has no voxel size in its header: {flag} needs it; give -vs/--voxel-size")
    if need:
        raise ParameterError(f"{what} has no voxel size in its header and {', '.join(need)} give coordinates in Å: "
                             "give -vs/--voxel-size, or --formats mrc,zarr,csv for outputs in voxels only "
                             "(the CSV's Å columns then stay empty)")


def output_voxel_size(tomo: Tomogram, given: float | None,
                      voxel_size: float | None) -> tuple[float, float, float] | None:
    """The voxel size (z, y, x) in Å of the outputs: ``-vs`` on every axis when given, else the header's
    per-axis sizes when they differ (warned: the networks see the grid as isotropic), else
    ``voxel_size`` on every axis; None when the voxel size is unknown."""
    if voxel_size is None:
        return None
    zyx = tuple(float(v) for v in getattr(tomo, "voxel_size_zyx", (0.0, 0.0, 0.0)))
    if given is None and all(np.isfinite(v) and v > 0 for v in zyx) and max(zyx) - min(zyx) > 0.01 * max(zyx):
        for v in zyx:
            check_voxel_size(v, "from the file header")
        warnings.warn(f"anisotropic voxel size (z, y, x) = ({', '.join(f'{v:g}' for v in zyx)}) Å: the networks "
                      f"treat the grid as isotropic ({voxel_size:g} Å); coordinates in Å, the label MRC header and "
                      "the OME-Zarr scale keep the per-axis sizes (give -vs to use one size)", stacklevel=3)
        return zyx  # type: ignore[return-value]
    return (voxel_size,) * 3
