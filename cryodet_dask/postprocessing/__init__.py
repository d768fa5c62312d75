"""Post-processing: instance labels and particle centres from the predicted maps.

Exact and independent of the chunking: the block-wise implementation
(:func:`postprocess`) returns the same label image, voxel for voxel, as the
whole-volume definition (:func:`postprocess_reference`) on every chunking.

The names are imported on first use: :class:`PostprocessParams` comes without dask or pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._core import Detections, postprocess
    from ._label import label
    from ._outliers import outlier_keep
    from ._params import DEFAULT_CONNECTIVITY, PostprocessParams, from_particle_diameter
    from ._plan import check_center_min_distance, check_plan, plan_size
    from ._reference import ReferenceResult, postprocess_reference
    from ._species import SPECIES_SCALE, SpeciesParams, quantize_species, species_lookup

__all__ = [
    "DEFAULT_CONNECTIVITY",
    "Detections",
    "PostprocessParams",
    "ReferenceResult",
    "SPECIES_SCALE",
    "SpeciesParams",
    "label",
    "outlier_keep",
    "postprocess",
    "postprocess_reference",
    "quantize_species",
    "species_lookup",
    "from_particle_diameter",
    "check_plan",
    "check_center_min_distance",
    "plan_size",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, {
        "._core": ("Detections", "postprocess"),
        "._label": ("label",),
        "._outliers": ("outlier_keep",),
        "._params": ("DEFAULT_CONNECTIVITY", "PostprocessParams", "from_particle_diameter"),
        "._plan": ("check_center_min_distance", "check_plan", "plan_size"),
        "._reference": ("ReferenceResult", "postprocess_reference"),
        "._species": ("SPECIES_SCALE", "SpeciesParams", "quantize_species", "species_lookup"),
    })
