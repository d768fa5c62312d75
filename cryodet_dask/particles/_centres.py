"""Particle-centre tables: the seed's TXT, CSV and a RELION 5 STAR particles file.

Array axes are (z, y, x); these formats use x, y, z order in named columns, x
being the last array axis.  Voxel coordinates are 0-based voxel indices (a
voxel's centre), physical ones are in Å.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError
from ..io import atomic_output

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["write_centers_txt", "write_centers_csv", "write_centers_star", "TXT_HEADER"]

log = logging.getLogger("cryodet_dask")

#: Header of the seed's TXT coordinate file (tab separated).
TXT_HEADER = ("PositionX", "PositionY", "PositionZ", "VolumeX", "VolumeY", "VolumeZ", "OffsetFromFace")


def _centers(obj: Any) -> np.ndarray:
    c = getattr(obj, "centers", obj)
    c = np.asarray(c, dtype=np.float64)
    if c.size == 0:
        return np.zeros((0, 3))
    if c.ndim != 2 or c.shape[1] != 3:
        raise ParameterError(f"centres must be an (N, 3) array of z, y, x, got shape {c.shape}")
    return c


def _vs3(voxel_size: float | Sequence[float] | None, required: bool, what: str) -> np.ndarray:
    if voxel_size is None:
        if required:
            raise ParameterError(f"{what} needs the voxel size in Å (give --voxel-size)")
        return np.full(3, np.nan)
    v = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3 or np.any(~np.isfinite(v)) or np.any(v <= 0):
        if required:
            raise ParameterError(f"{what} needs a positive voxel size in Å, got {voxel_size!r}")
        return np.full(3, np.nan)
    return v


def write_centers_txt(centers: Any, path: str | os.PathLike[str], voxel_size: float | Sequence[float] | None, *,
                      overwrite: bool = False) -> Path:
    """Write centres in the seed's TXT format (positions only: the format has no score column).

    Parameters
    ----------
    centers : ndarray (N, 3) or Detections
        Centres (z, y, x) in voxels.
    path : path-like
        Output file.
    voxel_size : float or (z, y, x) floats
        Voxel size in Å.
    overwrite : bool
        Replace an existing file.

    Notes
    -----
    Tab separated, header ``PositionX PositionY PositionZ VolumeX VolumeY VolumeZ
    OffsetFromFace``.  ``Volume*`` is the voxel index of the centre (centroid
    rounded to the nearest voxel), ``Position*`` that index times the voxel size
    (Å), ``OffsetFromFace`` is 0 (not used by cryodet-dask).
    """
    c = _centers(centers)
    vs = _vs3(voxel_size, True, "the TXT coordinate file")
    idx = np.rint(c).astype(np.int64)
    lines = ["\t".join(TXT_HEADER)]
    for z, y, x in idx:
        lines.append("\t".join([f"{x * vs[2]:.2f}", f"{y * vs[1]:.2f}", f"{z * vs[0]:.2f}",
                                str(x), str(y), str(z), "0"]))
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def write_centers_csv(detections: Any, path: str | os.PathLike[str], voxel_size: float | Sequence[float] | None = None,
                      *, overwrite: bool = False) -> Path:
    """Write the particle table as CSV.

    Columns ``id, x, y, z`` (voxels, float), ``x_angst, y_angst, z_angst`` (Å; empty when
    the voxel size is unknown), ``n_voxels``, ``score`` (the centre-map peak over the
    particle: the ranking score) and ``mask_score`` (mean mask probability).
    ``detections`` is a :class:`~cryodet_dask.postprocessing.Detections` or an (N, 3)
    array of z, y, x centres (then ``n_voxels``, ``score`` and ``mask_score`` are empty).
    """
    import pandas as pd

    if hasattr(detections, "to_dataframe"):
        vs = _vs3(voxel_size, False, "CSV")
        df = detections.to_dataframe(None if np.isnan(vs).any() else vs)
    else:
        c = _centers(detections)
        vs = _vs3(voxel_size, False, "CSV")
        df = pd.DataFrame({"id": np.arange(1, len(c) + 1), "x": c[:, 2], "y": c[:, 1], "z": c[:, 0],
                           "x_angst": c[:, 2] * vs[2], "y_angst": c[:, 1] * vs[1], "z_angst": c[:, 0] * vs[0],
                           "n_voxels": pd.array([pd.NA] * len(c), dtype="Int64"),
                           "score": np.full(len(c), np.nan), "mask_score": np.full(len(c), np.nan)})
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return path


def write_centers_star(centers: Any, path: str | os.PathLike[str], voxel_size: float | Sequence[float] | None,
                       volume_shape: Sequence[int], tomo_name: str, *, overwrite: bool = False) -> Path:
    """Write a RELION 5 particles STAR file.

    Parameters
    ----------
    centers : ndarray (N, 3) or Detections
        Centres (z, y, x) in voxels; from Detections also the ranking score
        (``center_scores``, the centre-map peak) as ``rlnAutopickFigureOfMerit``.
    path : path-like
        Output ``.star`` file.
    voxel_size : float or (z, y, x) floats
        Voxel size in Å of the tomogram the coordinates refer to.
    volume_shape : (Z, Y, X)
        Shape of that tomogram in voxels.
    tomo_name : str
        ``rlnTomoName`` (the tomogram's name in the RELION project).
    overwrite : bool
        Replace an existing file.

    Notes
    -----
    One ``data_particles`` loop with ``rlnTomoName``, ``rlnCoordinateX/Y/Z``
    (voxel index, pixels of this tomogram) and ``rlnCenteredCoordinateX/Y/ZAngst``
    = ``(coordinate - size / 2) * voxel_size``: Å from the tomogram centre, the
    RELION 5 convention.  With Detections, ``rlnAutopickFigureOfMerit`` = the
    particle's score (centre-map peak), so picks can be thresholded afterwards,
    and with a multi-species network ``rlnClassNumber`` = the species' position
    in the network's species list, from 1 (the run record maps numbers to names).
    """
    import pandas as pd

    c = _centers(centers)
    fom = getattr(centers, "center_scores", None)
    if fom is not None and len(fom) != len(c):
        fom = None
    vs = _vs3(voxel_size, True, "the STAR file")
    shape = np.asarray(volume_shape, dtype=np.float64)
    if shape.size != 3:
        raise ParameterError(f"volume shape must be (Z, Y, X), got {volume_shape!r}")
    if not tomo_name or any(ch.isspace() for ch in str(tomo_name)):
        raise ParameterError(f"tomogram name for the STAR file must be one word, got {tomo_name!r}")
    xyz = c[:, ::-1].reshape(-1, 3)
    table = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    if fom is not None:
        table["score"] = np.asarray(fom, dtype=np.float64)
    species = getattr(centers, "species", None)
    if species is not None and len(species) == len(c):  # rlnClassNumber: 1-based, in the network's species order
        table["class"] = np.asarray(species, dtype=np.int64) + 1
    # the one STAR writer (write_particles'), with the voxel size per axis (x, y, z) for the centred Å
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.unlink(missing_ok=True)
        _write_star(table, xyz, vs[::-1], tmp, shape=tuple(int(n) for n in shape), shapes=None,
                    names=np.full(len(xyz), str(tomo_name), dtype=object))
    return path


# ------------------------------------------------------------------ the one STAR writer (write_particles' too)


def _write_star(df: pd.DataFrame, c: np.ndarray, vs: float | np.ndarray | None, tmp: Path, *, shape, shapes,
                names) -> None:
    """RELION 5 particles STAR; ``vs``: Å per voxel, one value or (x, y, z), for the centred Å columns."""
    import pandas as pd
    import starfile

    out = pd.DataFrame({"rlnTomoName": names, "rlnCoordinateX": c[:, 0], "rlnCoordinateY": c[:, 1],
                        "rlnCoordinateZ": c[:, 2]})
    shape = shape if shape is not None else df.attrs.get("shape")
    if shapes is None and shape is None:
        shapes = df.attrs.get("shapes")
    if shapes is None and shape is not None:
        shapes = {nm: shape for nm in set(names)}
    if vs is not None and shapes is not None:
        missing = sorted(set(names) - set(shapes))
        if missing:
            raise ParameterError(f"no tomogram shape for {missing[0]!r} (give one per tomogram name)")
        sz = np.array([list(shapes[nm])[::-1] for nm in names], np.float64).reshape(-1, 3)
        centred = (c - sz / 2.0) * vs
        for k, a in enumerate("XYZ"):
            out[f"rlnCenteredCoordinate{a}Angst"] = centred[:, k]
    else:
        log.info("STAR written without rlnCenteredCoordinate*Angst (needs the voxel size and the tomogram's shape)")
    if {"rot", "tilt", "psi"} <= set(df.columns):
        out["rlnAngleRot"], out["rlnAngleTilt"], out["rlnAnglePsi"] = (df[a].to_numpy(float)
                                                                       for a in ("rot", "tilt", "psi"))
    cls = _class_ids(df)
    if cls is not None:
        out["rlnClassNumber"] = cls
    if "score" in df.columns:
        out["rlnAutopickFigureOfMerit"] = df["score"].to_numpy(float)
    def write(p: Path) -> None:
        # 9 significant digits: coordinates keep 1e-3 voxel at 100,000 voxels, small scores keep theirs
        starfile.write({"particles": out}, p, float_format="%.9g")
        # RELION 5's version line in place of starfile's "Created ... at <time>" comment: the same
        # table gives the same bytes, run after run
        lines = [ln for ln in p.read_text().splitlines() if not ln.startswith("# Created by the starfile")]
        while lines and not lines[0].strip():
            lines.pop(0)
        p.write_text("\n# version 50001\n\n" + "\n".join(lines) + "\n")

    _via_tempdir(tmp, "particles.star", write)


def _class_ids(df: pd.DataFrame) -> np.ndarray | None:
    """Classes as integers 1..K (numbers kept as they are, names numbered in sorted order)."""
    if "class" not in df.columns:
        return None
    cls = df["class"].astype(str)
    try:
        return cls.astype(float).astype(int).to_numpy()
    except ValueError:
        order = {c: k + 1 for k, c in enumerate(sorted(cls.unique()))}
        log.info("class names numbered for this format: %s", ", ".join(f"{c}={k}" for c, k in order.items()))
        return cls.map(order).to_numpy()


def _via_tempdir(tmp: Path, name: str, write: Callable[[Path], None]) -> None:
    """Let a library write under a normal file name, then move its file to ``tmp``."""
    with tempfile.TemporaryDirectory(dir=tmp.parent) as d:
        p = Path(d) / name
        write(p)
        shutil.move(str(p), tmp)
