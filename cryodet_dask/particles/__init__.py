"""Particle tables: one reader and one writer for every picks format cryo-ET tools write.

:func:`read_particles` reads RELION 3/4/5 STAR (any layout, several data blocks,
optics groups, unbinned pixels, centred Å with the project's ``tomograms.star``),
STOPGAP and TomoMan STAR, copick point JSON, IMOD models, Dynamo tables, CSV with
or without a header (comma, tab, pipe; voxel or Å columns), the seed's TXT,
TARDIS CSV and the CZII challenge CSV, and returns one DataFrame with ``x, y, z``
in voxels of the target tomogram and ``x_angst, y_angst, z_angst`` in Å.
Units are never guessed: a file whose unit cannot be resolved from what it or
the caller says raises a one-line :class:`~cryodet_dask.errors.ParameterError`
naming the option that resolves it.

:func:`write_particles` writes such a table as STAR (RELION 5), CSV, CZII CSV,
TARDIS CSV, the seed's TXT, copick JSON, IMOD ``.mod`` or Dynamo ``.tbl``;
``write_centers_txt/csv/star`` write a detection's centres (the files ``detect``
writes), through the same STAR writer.

The names are imported on first use: the format names come without pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._centres import TXT_HEADER, write_centers_csv, write_centers_star, write_centers_txt
    from ._copick import CopickProject, check_copick_name
    from ._formats import READ_FORMATS, UNITS, WRITE_FORMATS
    from ._read import TomogramInfo, format_from_path, read_particles, tomogram_info
    from ._write import write_particles

__all__ = ["read_particles", "write_particles", "READ_FORMATS", "WRITE_FORMATS", "UNITS", "TomogramInfo",
           "format_from_path", "TXT_HEADER", "write_centers_csv", "write_centers_star", "write_centers_txt",
           "CopickProject", "check_copick_name", "tomogram_info"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, {
        "._centres": ("TXT_HEADER", "write_centers_csv", "write_centers_star", "write_centers_txt"),
        "._copick": ("CopickProject", "check_copick_name"),
        "._formats": ("READ_FORMATS", "UNITS", "WRITE_FORMATS"),
        "._read": ("TomogramInfo", "format_from_path", "read_particles", "tomogram_info"),
        "._write": ("write_particles",),
    })
