"""``read_particles``: any supported particle file -> one DataFrame in voxels of the target tomogram."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..errors import InputError, ParameterError
from . import _tables
from ._formats import READ_FORMATS, UNITS
from ._tables import RawTable

log = logging.getLogger("cryodet_dask")

__all__ = ["read_particles", "READ_FORMATS", "format_from_path", "TomogramInfo"]


_EXT = {".star": "star", ".csv": "csv", ".tsv": "csv", ".txt": "txt", ".json": "copick", ".mod": "imod",
        ".tbl": "dynamo"}
_ALIASES = {"relion": "star", "relion5": "star", "stopgap": "star", "tomoman": "star", "tardis": "csv",
            "czii": "csv", "json": "copick", "mod": "imod", "tbl": "dynamo", "seed": "txt", "tsv": "csv"}


def format_from_path(path: str | os.PathLike[str], format: str | None = None, *, known=None) -> str:
    """Format name from ``format`` (or an alias) or the file extension; unknown -> one-line error."""
    known = known or READ_FORMATS
    f: str | None
    if format:
        f = str(format).lower()
        f = f if f in known else _ALIASES.get(f, f)
        if f not in known:
            raise ParameterError(f"unknown particle format {format!r}; supported: {', '.join(sorted(known))}")
        return f
    ext = Path(path).suffix.lower()
    f = _EXT.get(ext)
    if f is None or f not in known:
        raise ParameterError(f"{path}: unknown particle format {ext or '(no extension)'!r}; supported: "
                             f"{', '.join(sorted(known))} ({', '.join(k for k, v in _EXT.items() if v in known)})")
    return f


@dataclass(frozen=True)
class TomogramInfo:
    """The target tomogram: shape (z, y, x) in voxels and voxel size in Å (either may be unknown)."""

    shape: tuple[int, int, int] | None = None
    voxel_size: float | None = None
    name: str | None = None


def tomogram_info(tomogram: Any) -> tuple[TomogramInfo | None, dict | None]:
    """``tomogram`` as given: a tomogram file, a loaded Tomogram, a TomogramInfo or a RELION 5 tomograms.star."""
    if tomogram is None:
        return None, None
    if isinstance(tomogram, TomogramInfo):
        return tomogram, None
    if hasattr(tomogram, "data") and hasattr(tomogram, "voxel_size"):
        shape = cast(tuple[int, int, int], tuple(int(s) for s in tomogram.data.shape))  # a tomogram is 3D
        return TomogramInfo(shape, tomogram.voxel_size), None
    p = Path(tomogram)
    if p.suffix.lower() == ".star":
        if not p.is_file():
            raise InputError(f"{p}: tomograms.star not found")
        return None, _tables.read_tomograms_star(p)
    from ..io import load

    t = load(p)
    shape = cast(tuple[int, int, int], tuple(int(s) for s in t.data.shape))  # a loaded tomogram is 3D
    return TomogramInfo(shape, t.voxel_size, p.stem), None


def _read_raw(path: Path, fmt: str) -> RawTable:
    if fmt == "star":
        return _tables.read_star(path)
    if fmt in ("csv", "txt"):
        return _tables.read_delimited(path)
    if fmt == "copick":
        return _tables.read_copick(path)
    if fmt == "imod":
        return _tables.read_imod(path)
    if fmt == "dynamo":
        return _tables.read_dynamo(path)
    raise ParameterError(f"unknown particle format {fmt!r}")  # pragma: no cover


def _select(t: pd.DataFrame, tomogram_name: str, path: Path) -> pd.DataFrame:
    if "tomo_name" not in t.columns:  # a list of one tomogram: all its rows are that tomogram's
        log.info("%s: no tomogram-name column; every particle is taken as %r's", path, tomogram_name)
        return t.assign(tomo_name=str(tomogram_name))
    names = t["tomo_name"].astype(str)
    sel = (names == str(tomogram_name)) | (names.map(lambda n: Path(n).stem) == str(tomogram_name))
    if not sel.any():
        have = ", ".join(sorted(names.unique())[:8])
        raise InputError(f"{path}: no particle of tomogram {tomogram_name!r} (the file has: {have})")
    return t[sel.to_numpy()].reset_index(drop=True)


def read_particles(path: str | os.PathLike[str], *, voxel_size: float | None = None, tomogram: Any = None,
                   tomogram_name: str | None = None, binning: float | None = None, allow_empty: bool = False,
                   format: str | None = None, units: str | None = None) -> pd.DataFrame:
    """Read a particle list in any supported format, in voxels of the target tomogram.

    Parameters
    ----------
    path : path-like
        ``.star`` (RELION 3/4/5, STOPGAP, TomoMan), ``.csv``/``.tsv`` (comma, tab or
        pipe; with or without header; TARDIS; CZII ``experiment, particle_type, x, y, z``
        in Å), ``.txt`` (the seed's or x y z), ``.json`` (copick points), ``.mod``
        (IMOD), ``.tbl`` (Dynamo).
    voxel_size : float, optional
        Å per voxel of the target tomogram (``--voxel-size``).  Needed for files in Å
        unless ``tomogram`` gives it.
    tomogram : path, Tomogram or TomogramInfo, optional
        The target tomogram (its header's voxel size and its shape), or a RELION 5
        ``tomograms.star`` (sizes, pixel sizes and binning per ``rlnTomoName``).  For
        RELION 5 particle files the ``tomograms.star`` named by the optimisation set
        next to the file is used when this is not given.
    tomogram_name : str, optional
        Keep only this tomogram's rows (``rlnTomoName``, ``rlnMicrographName`` with or
        without extension, ``tomo_name``, CZII ``experiment``, copick ``run_name``); a
        file without such a column is taken as this tomogram's list.
    binning : float, optional
        File pixels per target voxel (the tomogram's binning): pixel coordinates
        are divided by it.  RELION 4 tomography coordinates are unbinned tilt-series pixels and need it (or
        ``voxel_size`` with the file's ``rlnTomoTiltSeriesPixelSize``, or a
        ``tomograms.star``).
    allow_empty : bool
        A file with no particle is an error unless this is true.
    format : str, optional
        Force a format instead of the extension (``star``, ``csv``, ``txt``,
        ``copick``, ``imod``, ``dynamo``).
    units : str, optional
        Override the coordinate unit the file is read in: ``voxel``, ``unbinned``,
        ``angstrom``, ``centred_angstrom`` or ``fraction`` (of the tomogram's size).

    Returns
    -------
    pandas.DataFrame
        ``x, y, z`` (voxels of the target tomogram, 0-based voxel centres),
        ``x_angst, y_angst, z_angst`` (Å from voxel 0; NaN when the voxel size is
        unknown), and where the file has them ``tomo_name``, ``class``, ``score``,
        ``rot, tilt, psi`` (RELION ZYZ, degrees), ``instance``.  ``df.attrs`` holds
        ``format``, ``voxel_size``, ``source`` and ``unit`` (as read).

    Notes
    -----
    Origin shifts (``rlnOrigin*``, STOPGAP ``x_shift``, Dynamo ``dx``) are not
    applied: the coordinates are the ones the file lists.  STOPGAP angles are kept as
    ``stopgap_phi/psi/the`` (not converted); Dynamo angles are converted to RELION's.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: particle file not found")
    fmt = format_from_path(path, format)
    raw = _read_raw(path, fmt)
    if units is not None:
        if units not in UNITS:
            raise ParameterError(f"unknown units {units!r}; one of {', '.join(UNITS)}")
        raw.unit = units
        if units in ("centred_angstrom", "unbinned") and raw.tomograms_star is None and fmt == "star":
            raw.tomograms_star = _tables.find_tomograms_star(path)
    t = raw.table
    if tomogram_name is not None:
        t = _select(t, tomogram_name, path)
    if len(t) == 0:
        if not allow_empty:
            raise InputError(f"{path}: no particles in the file (if that is expected: allow_empty=True, "
                             "or --allow-empty of `picks convert` and `labels`)")
    c = t[["cx", "cy", "cz"]].to_numpy(np.float64)
    if not np.isfinite(c).all():
        bad = int(np.flatnonzero(~np.isfinite(c).all(axis=1))[0])
        raise InputError(f"{path}: particle {bad + 1} has a missing (NaN) or infinite coordinate")
    if units is None and raw.format.startswith(("relion", "tomoman")) and raw.unit == "voxel" and len(c) \
            and c.min() >= 0 and c.max() <= 1 and not np.allclose(c, np.round(c)):
        raise ParameterError(f"{path}: every coordinate lies in [0, 1], as Warp writes fractions of the volume; "
                             "pass units='fraction' (--units fraction) with the tomogram, or units='voxel'")
    info, tomo_star = tomogram_info(tomogram)
    if tomo_star is None and info is None and raw.tomograms_star is not None:
        tomo_star = _tables.read_tomograms_star(raw.tomograms_star)
    if info is not None and tomogram_name is None and "tomo_name" in t.columns and t["tomo_name"].nunique() > 1 \
            and raw.unit in ("centred_angstrom", "fraction", "unbinned"):
        names = ", ".join(sorted(t["tomo_name"].unique())[:6])
        raise ParameterError(f"{path}: the file holds particles of several tomograms ({names}); "
                             "choose one with tomogram_name (--tomogram-name)")
    if len(c):
        xyz, vs = _to_voxels(c, t, raw, path, voxel_size=voxel_size, info=info, tomo_star=tomo_star,
                             binning=binning)
    else:  # an allowed empty list: nothing to convert
        xyz, vs = np.zeros((0, 3)), voxel_size or (info.voxel_size if info is not None else None)
    _refuse_implausible(xyz, vs, path)
    out = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    _warn_outside(xyz, info, tomo_star, t, binning, path)
    vs_arr = np.asarray(vs, np.float64) if vs is not None else np.full(len(out), np.nan)
    for k, a in enumerate("xyz"):
        out[f"{a}_angst"] = xyz[:, k] * vs_arr
    for col in t.columns:
        if col not in ("cx", "cy", "cz"):
            out[col] = t[col].to_numpy()
    vs_attr = None
    if vs is not None:
        u = np.unique(np.atleast_1d(vs))
        vs_attr = float(u[0]) if len(u) == 1 else None
    out.attrs.update({"format": raw.format, "voxel_size": vs_attr, "source": str(path), "unit": raw.unit})
    if info is not None and info.shape is not None:
        out.attrs["shape"] = tuple(info.shape)
    elif raw.shapes and vs_attr is not None and vs_attr == raw.voxel_size:
        out.attrs["shapes"] = dict(raw.shapes)
    elif tomo_star is not None and vs_attr is not None:  # shapes (z, y, x) of the tomograms at this voxel size
        out.attrs["shapes"] = {nm: tuple(float(s) * e["pixel_size"] / vs_attr for s in e["size"][::-1])
                               for nm, e in tomo_star.items() if e["pixel_size"]}
    return out


#: No tomogram reaches this far from its origin: 10⁷ Å is 1 mm (a large tomogram spans a few µm), and
#: 10⁷ voxels per axis is 100 times the largest detector.  Coordinates beyond are refused, not converted.
MAX_COORDINATE_ANGSTROM = 1e7
MAX_COORDINATE_VOXELS = 1e7


def _refuse_implausible(xyz: np.ndarray, vs: Any, path: Path) -> None:
    """One-line :class:`InputError` for a particle farther than any tomogram could reach (e.g. x = 1e300)."""
    if not len(xyz):
        return
    bad = np.abs(xyz).max(axis=1) > MAX_COORDINATE_VOXELS
    angst = None
    if vs is not None:
        vs_rows = np.broadcast_to(np.asarray(vs, np.float64).reshape(-1, 1) if np.ndim(vs) else
                                  np.asarray(vs, np.float64), (len(xyz), 1))
        angst = xyz * vs_rows
        bad |= np.abs(angst).max(axis=1) > MAX_COORDINATE_ANGSTROM
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        where = ", ".join(f"{v:.6g}" for v in xyz[k]) + " voxels"
        if angst is not None:
            where += " (" + ", ".join(f"{v:.6g}" for v in angst[k]) + " Å)"
        raise InputError(f"{path}: particle {k + 1} lies at x, y, z = {where}, beyond any tomogram "
                         f"(limit {MAX_COORDINATE_ANGSTROM:g} Å = 1 mm, or {MAX_COORDINATE_VOXELS:g} voxels); "
                         "check the file's values and its unit (--units)")


def _warn_outside(xyz: np.ndarray, info, tomo_star, t: pd.DataFrame, binning, path: Path) -> None:
    """A warning (not an error: the file may hold particles of a larger volume) for particles outside the tomogram."""
    size = None
    if info is not None and info.shape is not None:
        size = np.asarray(info.shape[::-1], np.float64)[None, :]
    elif tomo_star is not None and "tomo_name" in t.columns and set(t["tomo_name"].astype(str)) <= set(tomo_star):
        size = np.array([np.asarray(tomo_star[n]["size"]) / (float(binning) if binning else tomo_star[n]["binning"])
                         for n in t["tomo_name"].astype(str)])
    if size is None or not len(xyz):
        return
    out = ((xyz < -0.5) | (xyz > size - 0.5)).any(axis=1)
    if out.any():
        log.warning("%s: %d of %d particles lie outside the tomogram (first: particle %d at x, y, z = %s voxels)",
                    path, int(out.sum()), len(xyz), int(np.flatnonzero(out)[0]) + 1,
                    ", ".join(f"{v:.1f}" for v in xyz[np.flatnonzero(out)[0]]))


def _need(what: str, option: str, path: Path) -> ParameterError:
    return ParameterError(f"{path}: {what}; pass {option}")


def _to_voxels(c: np.ndarray, t: pd.DataFrame, raw: RawTable, path: Path, *, voxel_size, info, tomo_star,
               binning) -> tuple[np.ndarray, Any]:
    """(n, 3) x, y, z in target voxels, and the target voxel size (scalar, per-row array or None)."""
    n = len(c)
    user_vs = float(voxel_size) if voxel_size else None
    file_vs = raw.voxel_size
    tomo_vs = info.voxel_size if info is not None else None
    names = t["tomo_name"].astype(str).to_numpy() if "tomo_name" in t.columns else None
    # binning, pixel size and voxel size: scalars for some units, per-row arrays for others
    b: Any
    ps: Any
    vs: Any

    def star_rows(key: str) -> np.ndarray:
        """Per row, a tomograms.star field (sizes: (n, 3))."""
        if names is None:
            raise InputError(f"{path}: no rlnTomoName to look the tomogram up in tomograms.star")
        missing = sorted(set(names) - set(tomo_star))
        if missing:
            raise InputError(f"{path}: tomogram {missing[0]!r} is not in the tomograms.star "
                             f"(it has {', '.join(sorted(tomo_star))})")
        return np.array([tomo_star[nm][key] for nm in names], dtype=np.float64)

    if raw.unit == "voxel":
        b = float(binning) if binning else 1.0
        if b != 1.0:
            log.info("%s: pixel coordinates divided by binning %g", path, b)
        vs = user_vs or tomo_vs or (file_vs * b if file_vs else None)
        if raw.format in ("relion3", "relion", "tomoman") and not binning:
            log.info("%s: rlnCoordinateX/Y/Z read as voxels of the target tomogram (binning 1; pass binning "
                     "if they are unbinned pixels)", path)
        return c / b, vs
    if raw.unit == "unbinned":
        ps = raw.tilt_series_pixel_size
        if binning:
            b = np.full(n, float(binning))
        elif tomo_star is not None:
            b = star_rows("binning")
            if ps is None:
                ps = star_rows("pixel_size")
        elif (user_vs or tomo_vs) and ps:
            b = np.full(n, (user_vs or tomo_vs) / ps)
        else:
            raise _need("coordinates are unbinned tilt-series pixels (RELION 4) and the binning of the target "
                        "tomogram is unknown", "binning (--binning), or voxel_size (--voxel-size) with a file "
                        "that has rlnTomoTiltSeriesPixelSize, or tomogram=tomograms.star", path)
        xyz = c / b[:, None]
        vs = user_vs or tomo_vs or (ps * b if ps is not None else None)
        return xyz, vs
    if raw.unit == "angstrom":
        vs = user_vs or tomo_vs or file_vs
        if vs is None:
            raise _need("coordinates are in Å and the voxel size of the target tomogram is unknown",
                        "voxel_size (--voxel-size) or tomogram (--tomogram)", path)
        return c / vs, vs
    if raw.unit == "centred_angstrom":
        if info is not None and info.shape is not None:
            vs = user_vs or tomo_vs
            if vs is None:
                raise _need("centred Å coordinates need the voxel size", "voxel_size (--voxel-size)", path)
            centre_a = np.asarray(info.shape[::-1], np.float64) / 2.0 * vs
            return (c + centre_a) / vs, vs
        if tomo_star is not None:
            size = star_rows("size")
            ps = star_rows("pixel_size")
            b = star_rows("binning")
            if raw.tilt_series_pixel_size is not None and not np.allclose(ps, raw.tilt_series_pixel_size):
                log.warning("%s: rlnTomoTiltSeriesPixelSize %g Å in the particles' optics differs from the "
                            "tomograms.star's %s Å; the tomograms.star is used", path, raw.tilt_series_pixel_size,
                            "/".join(f"{v:g}" for v in np.unique(ps)))
            pos_a = c + size * ps[:, None] / 2.0  # Å from the first voxel (RELION: px = Å / ps + size / 2)
            vs = user_vs or (ps * (float(binning) if binning else b))
            vs_rows = np.broadcast_to(np.asarray(vs, np.float64), (n,))
            return pos_a / vs_rows[:, None], vs
        raise _need("coordinates are centred Å (RELION 5) and the tomogram's size is unknown",
                    "tomogram (--tomogram): the tomogram file or RELION 5 tomograms.star", path)
    if raw.unit == "fraction":
        if info is None or info.shape is None:
            raise _need("coordinates are fractions of the tomogram's size", "tomogram (--tomogram)", path)
        return c * np.asarray(info.shape[::-1], np.float64), user_vs or tomo_vs
    raise ParameterError(f"unknown unit {raw.unit!r}")  # pragma: no cover
