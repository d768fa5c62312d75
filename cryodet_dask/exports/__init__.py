"""Exports: instance labels (MRC, OME-Zarr) and particle centres (TXT, CSV, STAR).

The label image writers live here; the centre files are particle tables, written by
:mod:`cryodet_dask.particles` (re-exported here for :func:`export`).

All writers are atomic (temporary name, renamed when complete) and write label
images block by block.  Arrays are (z, y, x); the centre files use x, y, z in
named columns, x being the last array axis.
"""

from __future__ import annotations

from ..particles import TXT_HEADER, write_centers_csv, write_centers_star, write_centers_txt
from ._export import FORMATS, export
from ._labels import label_dtype, write_labels_mrc, write_labels_zarr

__all__ = [
    "FORMATS",
    "TXT_HEADER",
    "export",
    "label_dtype",
    "write_centers_csv",
    "write_centers_star",
    "write_centers_txt",
    "write_labels_mrc",
    "write_labels_zarr",
]
