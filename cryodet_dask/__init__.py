"""cryodet-dask: particle detection in cryo-electron tomograms larger than memory.

The pipeline, one module per stage::

    io              MRC <-> chunked (OME-)Zarr, lazy loading          load, convert, write_mrc
    simulation      synthetic tomograms with ground truth             simulate
    models          SegNet / CenterNet 3D U-Nets, checkpoints         models.load, models.default_weights
    training        training the networks                             train
    prediction      per-chunk inference with halos on Dask            predict
    postprocessing  chunk-aware instance labelling and centres        postprocess
    exports         labels (MRC, OME-Zarr), centres (TXT, CSV, STAR)  export
    evaluation      precision / recall against ground truth           evaluate
    particles       picks in every cryo-ET format (STAR, copick, ...)  read_particles, write_particles
    resampling      another voxel size, lazily (detect --rescale)     resampling.resample
    detection       all of the above, end to end                      detect

Axes are (z, y, x) everywhere in arrays; x, y, z order appears only in file
formats that use it (TXT, STAR, CSV columns are named).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CryodetError
from .io import Tomogram, convert, load, write_mrc

__version__ = "0.1.0"

# Stages imported on first use, so `import cryodet_dask` stays light (no torch).
_LAZY = {
    "simulate": ("cryodet_dask.simulation", "simulate"),
    "train": ("cryodet_dask.training", "train"),
    "predict": ("cryodet_dask.prediction", "predict"),
    "postprocess": ("cryodet_dask.postprocessing", "postprocess"),
    "export": ("cryodet_dask.exports", "export"),
    "evaluate": ("cryodet_dask.evaluation", "evaluate"),
    "detect": ("cryodet_dask.pipeline.detect", "detect"),
    "read_particles": ("cryodet_dask.particles", "read_particles"),
    "write_particles": ("cryodet_dask.particles", "write_particles"),
}

__all__ = ["CryodetError", "Tomogram", "__version__", "convert", "load", "write_mrc", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cryodet_dask' has no attribute {name!r}")
