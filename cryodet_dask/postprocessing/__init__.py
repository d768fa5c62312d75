"""Post-processing: instance labels and particle centres from the predicted maps.

Exact and independent of the chunking: the block-wise implementation
(:func:`postprocess`) returns the same label image, voxel for voxel, as the
whole-volume definition (:func:`postprocess_reference`) on every chunking.
"""

from __future__ import annotations

from ._core import WORKER_ENV, Detections, postprocess
from ._label import label
from ._outliers import outlier_keep
from ._params import DEFAULT_CONNECTIVITY, PostprocessParams, from_particle_diameter
from ._reference import ReferenceResult, postprocess_reference

__all__ = [
    "DEFAULT_CONNECTIVITY",
    "Detections",
    "PostprocessParams",
    "ReferenceResult",
    "WORKER_ENV",
    "label",
    "outlier_keep",
    "postprocess",
    "postprocess_reference",
    "from_particle_diameter",
]
