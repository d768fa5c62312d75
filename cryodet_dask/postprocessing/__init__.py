"""Post-processing: instance labels and particle centres from the predicted maps.

Exact and independent of the chunking: the block-wise implementation
(:func:`postprocess`) returns the same label image, voxel for voxel, as the
whole-volume definition (:func:`postprocess_reference`) on every chunking.
"""

from __future__ import annotations

from ._core import Detections, postprocess
from ._label import label
from ._outliers import outlier_keep
from ._params import DEFAULT_CONNECTIVITY, PostprocessParams, from_particle_diameter
from ._reference import ReferenceResult, postprocess_reference
from ._species import SPECIES_SCALE, SpeciesParams, quantize_species

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
    "from_particle_diameter",
]
