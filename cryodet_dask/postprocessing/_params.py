"""Parameters of the post-processing, validated once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ParameterError

__all__ = ["PostprocessParams", "DEFAULT_CONNECTIVITY", "from_particle_diameter"]

#: Default connectivity of every connected-component step: 1 (faces, 6-neighbourhood).
#: It is the most conservative choice for touching particles: two blobs that meet
#: only at an edge or a corner stay two objects, and it is the default of
#: :func:`scipy.ndimage.label`, which the seed used.
DEFAULT_CONNECTIVITY = 1


@dataclass(frozen=True)
class PostprocessParams:
    """Parameters of :func:`~cryodet_dask.postprocessing.postprocess`.

    Attributes
    ----------
    mask_threshold : float
        Foreground is ``mask > mask_threshold``; in [0, 1].
    center_threshold : float
        Centre-map values below this are set to 0 before peak finding; in [0, 1].
    remove_min_size : int
        Connected foreground components with fewer voxels are removed (voxels, >= 0).
    check_center : bool
        Split a component only by the centres lying inside it (and only when it holds 2 or more).
    filter_outlier : bool
        Remove particles with fewer than ``neighbor_number`` other particles within
        ``distance_threshold``.
    neighbor_number : int
        Minimum number of other particle centroids within ``distance_threshold`` (>= 0).
    distance_threshold : float
        Neighbour radius in voxels (>= 0).
    connectivity : int
        1, 2 or 3, as in :func:`scipy.ndimage.generate_binary_structure`: voxels sharing a
        face (1), a face or an edge (2), or any of the 26 neighbours (3).  Used by every
        connected-component step.
    center_min_distance : float
        Centre fusion distance D in voxels (finite, >= 0).  With ``c`` the thresholded
        centre map (``c = center if center >= center_threshold else 0``), a voxel ``p`` is
        a centre iff it is strictly greater than its 26 neighbours (mirror border) and,
        for every voxel ``q`` inside the volume with ``0 < |q - p| <= D`` (Euclidean
        ball), ``c[q] < c[p]``, or ``c[q] == c[p]`` and ``q`` comes after ``p`` in raster
        order.  ``peak_local_max(min_distance=D)`` with a ball footprint, but local (no
        greedy suppression chain).  Any D < 2 is the plain 26-neighbour test (every
        voxel within D < 2 is one of the 26 neighbours).
    min_particle_size : int
        Particles (instances, after the ``check_center`` split) with fewer voxels are
        removed, before the outlier filter (voxels, >= 0).
    min_score : float
        Particles whose score (the largest centre-map value over their voxels, the
        ranking score) is below this are removed, with the small ones, before the
        outlier filter (finite, >= 0).  0 is no score filter: every particle is kept, also one
        whose centre-map peak is negative or NaN (the network's centre output can dip below 0).
    """

    # Defaults chosen on validation tomograms (never the test ones) for the shipped two-head network:
    # `python benchmarks/bench_quality.py sweep` (README, Results; docs/img/validation_curves.png).
    # The seed's defaults were 0.1, 0.1, 64, True, True, 3, 30 (-mt, -ct, -rs, check_center,
    # filter_outlier, -nn, -dt); the flags keep their meaning.
    mask_threshold: float = 0.5
    center_threshold: float = 0.05
    remove_min_size: int = 32
    check_center: bool = True
    filter_outlier: bool = False
    neighbor_number: int = 3
    distance_threshold: float = 30.0
    connectivity: int = DEFAULT_CONNECTIVITY
    center_min_distance: float = 7.0
    min_particle_size: int = 384
    # 0.1, not the 0.15 chosen first: chosen on both validation sets together (the usual one and one of
    # mixed imaging, distractors and sizes; docs/results.md, "What the score means")
    min_score: float = 0.1

    def __post_init__(self) -> None:
        for name in ("mask_threshold", "center_threshold"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not (0.0 <= float(v) <= 1.0):
                raise ParameterError(f"{name} must be a number between 0 and 1, got {v!r}")
        for name in ("remove_min_size", "neighbor_number", "min_particle_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ParameterError(f"{name} must be a whole number >= 0, got {v!r}")
        d = self.distance_threshold
        if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or d < 0:
            raise ParameterError(f"distance_threshold must be a number of voxels >= 0, got {d!r}")
        d = self.center_min_distance
        if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or d < 0:
            raise ParameterError(f"center_min_distance must be a finite number of voxels >= 0, got {d!r}")
        d = self.min_score
        if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or d < 0:
            raise ParameterError(f"min_score must be a finite number >= 0, got {d!r}")
        if self.connectivity not in (1, 2, 3) or isinstance(self.connectivity, bool):
            raise ParameterError(
                f"connectivity must be 1 (faces), 2 (faces and edges) or 3 (all 26 neighbours), "
                f"got {self.connectivity!r}"
            )
        for name in ("check_center", "filter_outlier"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_kwargs(cls, params: PostprocessParams | None = None, **kwargs: Any) -> PostprocessParams:
        """``params`` updated with keyword arguments (unknown names raise ParameterError)."""
        base = asdict(params) if params is not None else {}
        unknown = set(kwargs) - set(cls.__dataclass_fields__)
        if unknown:
            raise ParameterError(f"unknown post-processing parameter(s): {', '.join(sorted(unknown))}")
        base.update(kwargs)
        return cls(**base)


def from_particle_diameter(diameter_angst: float, voxel_size_angst: float) -> dict[str, Any]:
    """``center_min_distance`` and ``remove_min_size`` for particles of a given diameter.

    With ``r = 0.5 * diameter / voxel_size`` (half the diameter, in voxels):
    ``center_min_distance = r`` (two centres closer than half a particle are one
    particle) and ``remove_min_size = round((pi / 6) * r**3)``, the volume of a
    sphere of diameter ``r`` (half the particle's diameter).

    >>> from_particle_diameter(200.0, 10.0)
    {'center_min_distance': 10.0, 'remove_min_size': 524}
    """
    for name, v in (("particle diameter", diameter_angst), ("voxel size", voxel_size_angst)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not v > 0:
            raise ParameterError(f"{name} must be a positive number of Å, got {v!r}")
    r = 0.5 * float(diameter_angst) / float(voxel_size_angst)
    return {"center_min_distance": r, "remove_min_size": int(round(math.pi / 6 * r ** 3))}
