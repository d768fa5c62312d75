"""Parameters of the post-processing, validated once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ParameterError

__all__ = ["PostprocessParams", "DEFAULT_CONNECTIVITY"]

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
    """

    mask_threshold: float = 0.1
    center_threshold: float = 0.1
    remove_min_size: int = 64
    check_center: bool = True
    filter_outlier: bool = True
    neighbor_number: int = 3
    distance_threshold: float = 30.0
    connectivity: int = DEFAULT_CONNECTIVITY

    def __post_init__(self) -> None:
        for name in ("mask_threshold", "center_threshold"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not (0.0 <= float(v) <= 1.0):
                raise ParameterError(f"{name} must be a number between 0 and 1, got {v!r}")
        for name in ("remove_min_size", "neighbor_number"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ParameterError(f"{name} must be a whole number >= 0, got {v!r}")
        d = self.distance_threshold
        if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or d < 0:
            raise ParameterError(f"distance_threshold must be a number of voxels >= 0, got {d!r}")
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
