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
    pipeline        all of the above, end to end, in a run folder     detect

Axes are (z, y, x) everywhere in arrays; x, y, z order appears only in file
formats that use it (TXT, STAR, CSV columns are named).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from .errors import CryodetError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .evaluation import evaluate
    from .exports import export
    from .io import Tomogram, convert, load, write_mrc
    from .particles import read_particles, write_particles
    from .pipeline.detect import detect
    from .postprocessing import postprocess
    from .prediction import predict
    from .simulation import simulate
    from .training import train

__all__ = ["CryodetError", "Tomogram", "__version__", "convert", "load", "write_mrc", "simulate", "train", "predict",
           "postprocess", "export", "evaluate", "detect", "read_particles", "write_particles"]

# Every stage is imported on first use, so that `import cryodet_dask` (and `cryodet-dask --help`) stays
# light: no torch, dask, zarr or pandas.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, {
        ".io": ("Tomogram", "convert", "load", "write_mrc"),
        ".simulation": ("simulate",),
        ".training": ("train",),
        ".prediction": ("predict",),
        ".postprocessing": ("postprocess",),
        ".exports": ("export",),
        ".evaluation": ("evaluate",),
        ".pipeline.detect": ("detect",),
        ".particles": ("read_particles", "write_particles"),
    })
