"""The names of the particle formats and coordinate units, without pandas: the command line's
help and choices read them here (:mod:`cryodet_dask.particles` re-exports them)."""

from __future__ import annotations

__all__ = ["READ_FORMATS", "WRITE_FORMATS", "UNITS"]

#: format name -> what it reads
READ_FORMATS = {
    "star": "RELION 3/4/5 STAR (pixels, unbinned pixels or centred Å), STOPGAP and TomoMan STAR",
    "csv": "CSV/TSV/pipe tables with or without a header (voxel or Å columns), TARDIS and CZII CSV",
    "txt": "the seed's TXT (PositionX ... VolumeX ...) or whitespace x y z in voxels",
    "copick": "copick point JSON (Å)",
    "imod": "IMOD model .mod (voxels)",
    "dynamo": "Dynamo table .tbl (voxels)",
}

#: format name -> what is written
WRITE_FORMATS = {
    "star": "RELION 5 particles STAR: rlnTomoName, rlnCoordinateX/Y/Z (voxels of the tomogram), "
            "rlnCenteredCoordinateX/Y/ZAngst when the tomogram's shape and voxel size are known, angles, "
            "class, rlnAutopickFigureOfMerit; several tomograms in one file (RELION 5 particle import)",
    "csv": "CSV: x, y, z (voxels), x_angst, y_angst, z_angst (Å), and tomo_name, class, score, rot, tilt, psi",
    "czii": "CZII CSV: experiment, particle_type, x, y, z in Å",
    "tardis": "TARDIS CSV: IDs, X [A], Y [A], Z [A]",
    "txt": "the seed's TXT (PositionX/Y/Z in Å, VolumeX/Y/Z voxel indices)",
    "copick": "copick point JSON (Å, transformation_ from the angles)",
    "imod": "IMOD model .mod (scattered points, one object per class, voxels)",
    "dynamo": "Dynamo table .tbl (voxels, tdrot/tilt/narot from the angles)",
}

#: coordinate units a file can use
UNITS = ("voxel", "unbinned", "angstrom", "centred_angstrom", "fraction")
