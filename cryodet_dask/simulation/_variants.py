"""Random imaging mode, tilt-series settings and distractors of a pool's tomogram.

Used by :func:`cryodet_dask.training.draw_conditions`.  Draws from its own
random stream (seeded by the pool seed and the tomogram index), so that the
other conditions of a tomogram do not change with these options, and adds
nothing to the conditions when the pool keeps the defaults (Fourier-mask
imaging, no distractors): pools made before these options stay valid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ParameterError
from ._distractors import DISTRACTOR_CODES, default_distractor_count

__all__ = ["POOL_IMAGING", "SPECIES_MIX", "check_pool_variants", "draw_variants"]

#: ``--imaging`` choices of a pool: one mode for all, or each tomogram either at random.
POOL_IMAGING = ("fourier", "tiltseries", "mixed")

#: ``--species-mix`` choices of a pool: equal abundance of a tomogram's templates, or random proportions.
SPECIES_MIX = ("equal", "varied")

_SCHEMES = (("dose-symmetric", 0.6), ("bidirectional", 0.3), ("unidirectional", 0.1))
_FILTERS = (("ramp", 0.5), ("shepp-logan", 0.25), ("hamming", 0.25))
_DOSE = (60.0, 180.0)  # e/Å² over the series


def check_pool_variants(imaging: str, tilt_step: tuple[float, float], distractors: tuple[str, ...],
                        probability: float, min_tilt_range: float = 90.0, species_mix: str = "equal",
                        size_range: tuple[float, float] = (1.0, 1.0)) -> None:
    """Raise :class:`ParameterError` for a pool imaging mode, tilt-step range, distractor kind or species mix
    out of range."""
    if not (0.1 <= size_range[0] <= size_range[1] <= 10):
        raise ParameterError(f"pool size range must be two factors 0.1 <= lo <= hi <= 10, got {tuple(size_range)}")
    if species_mix not in SPECIES_MIX:
        raise ParameterError(f"pool species mix must be one of {', '.join(SPECIES_MIX)}, got {species_mix!r}")
    if imaging not in POOL_IMAGING:
        raise ParameterError(f"pool imaging must be one of {', '.join(POOL_IMAGING)}, got {imaging!r}")
    lo, hi = tilt_step
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 90):
        raise ParameterError(f"pool tilt step must be two numbers 0 < lo <= hi <= 90 degrees, got {tilt_step}")
    if imaging != "fourier" and hi > min_tilt_range:
        raise ParameterError(f"pool tilt step ({hi:g}°) must not exceed the smallest tilt range ({min_tilt_range:g}°)")
    unknown = [k for k in distractors if k not in DISTRACTOR_CODES]
    if unknown:
        raise ParameterError(f"unknown distractor kind {unknown[0]!r}; choose among {', '.join(DISTRACTOR_CODES)}")
    if not 0 <= probability <= 1:
        raise ParameterError(f"distractor probability must be in [0, 1], got {probability}")


def _choice(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*options)
    return str(names[int(rng.choice(len(names), p=np.asarray(weights) / sum(weights)))])


def draw_variants(seed: int, index: int, *, imaging: str = "fourier", tilt_step: tuple[float, float] = (1.0, 3.0),
                  distractors: tuple[str, ...] = (), probability: float = 0.5,
                  shape: tuple[int, int, int] = (64, 160, 160), species_mix: str = "equal",
                  n_templates: int = 0, size_range: tuple[float, float] = (1.0, 1.0)) -> dict[str, Any]:
    """Imaging mode, tilt-series settings and distractors of tomogram ``index`` (pure; ``{}`` for the defaults).

    Returns
    -------
    dict
        Keyword arguments of :func:`~cryodet_dask.simulation.simulate`:
        ``imaging`` (unless the pool is Fourier-mask only), with
        ``tiltseries`` also ``tilt_step`` (uniform in the range),
        ``tilt_scheme`` (dose-symmetric 60 %, bidirectional 30 %,
        unidirectional 10 %), ``total_dose`` (60-180 e/Å²) and
        ``reconstruction_filter`` (ramp 50 %, shepp-logan, hamming); and
        ``distractors`` ``{kind: count}``, each kind of ``distractors``
        present with ``probability``, its count 0.5-1.5 times its default
        for ``shape`` (with ``allow_fewer_distractors``: as many as fit); with
        ``species_mix="varied"``, ``abundance``: the relative numbers of the
        tomogram's ``n_templates`` templates, from a flat Dirichlet
        distribution (every mix of proportions equally likely), each at least
        0.02 so that no species vanishes; with ``size_range`` other than
        (1, 1), ``template_scale``: a size factor per template, log-uniform in
        the range.
    """
    rng = np.random.default_rng([int(seed), int(index), 20261130, 26])
    out: dict[str, Any] = {}
    mode = imaging
    if imaging == "mixed":
        mode = "tiltseries" if rng.random() < 0.5 else "fourier"
    if imaging != "fourier":
        out["imaging"] = mode
    if mode == "tiltseries":
        out["tilt_step"] = round(float(rng.uniform(*tilt_step)), 2)
        out["tilt_scheme"] = _choice(rng, _SCHEMES)
        out["total_dose"] = round(float(rng.uniform(*_DOSE)), 1)
        out["reconstruction_filter"] = _choice(rng, _FILTERS)
    chosen: dict[str, int] = {}
    for kind in distractors:
        if rng.random() < probability:
            base = default_distractor_count(kind, shape)
            chosen[kind] = max(1, int(round(base * rng.uniform(0.5, 1.5))))
    if chosen:
        out["distractors"] = chosen
        out["allow_fewer_distractors"] = True  # random counts: as many as fit, never a failed pool
    if species_mix == "varied" and n_templates > 1:  # drawn last: the draws above stay those of older pools
        w = np.maximum(rng.dirichlet(np.ones(n_templates)), 0.02)
        out["abundance"] = [round(float(v), 4) for v in w / w.sum()]
    if tuple(size_range) != (1.0, 1.0) and n_templates > 0:
        lo, hi = np.log(size_range[0]), np.log(size_range[1])
        out["template_scale"] = [round(float(np.exp(rng.uniform(lo, hi))), 3) for _ in range(n_templates)]
    return out
