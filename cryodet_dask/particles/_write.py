"""``write_particles``: one particle DataFrame to any writable format, atomically."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..io import atomic_output
from ._centres import _class_ids, _via_tempdir, _write_star, write_centers_txt
from ._formats import WRITE_FORMATS
from ._read import format_from_path

log = logging.getLogger("cryodet_dask")

__all__ = ["write_particles", "WRITE_FORMATS"]



def _xyz(df: pd.DataFrame) -> np.ndarray:
    missing = [a for a in "xyz" if a not in df.columns]
    if missing:
        raise ParameterError(f"particle table has no {', '.join(missing)} column (voxels)")
    c = df[["x", "y", "z"]].to_numpy(np.float64)
    if not np.isfinite(c).all():
        raise ParameterError("particle table has missing (NaN) or infinite coordinates")
    return c


def _voxel_size(df: pd.DataFrame, voxel_size: float | None) -> float | None:
    if voxel_size:
        return float(voxel_size)
    if df.attrs.get("voxel_size"):
        return float(df.attrs["voxel_size"])
    if {"x_angst", "x"} <= set(df.columns):
        a, v = df["x_angst"].to_numpy(float), df["x"].to_numpy(float)
        ok = np.isfinite(a) & (np.abs(v) > 1e-9)
        if ok.any():
            return float(np.median(a[ok] / v[ok]))
    return None


def _need_vs(vs: float | None, fmt: str) -> float:
    if vs is None:
        raise ParameterError(f"writing {fmt} needs the voxel size in Å (--voxel-size) to give coordinates in Å")
    return vs


def _names(df: pd.DataFrame, tomogram_name: str | None, default: str) -> np.ndarray:
    if tomogram_name:
        return np.full(len(df), str(tomogram_name), dtype=object)
    if "tomo_name" in df.columns:
        return df["tomo_name"].astype(str).to_numpy()
    return np.full(len(df), default, dtype=object)


def write_particles(df: pd.DataFrame, path: str | os.PathLike[str], format: str | None = None, *,
                    voxel_size: float | None = None, shape: Sequence[int] | None = None,
                    shapes: Mapping[str, Sequence[int]] | None = None, tomogram_name: str | None = None,
                    object_name: str | None = None, user_id: str = "cryodet-dask", session_id: str = "0",
                    overwrite: bool = False) -> Path:
    """Write a particle table (``x, y, z`` in voxels, as :func:`read_particles` returns) to ``path``.

    Parameters
    ----------
    df : pandas.DataFrame
        ``x, y, z`` in voxels; optional ``x_angst`` ..., ``tomo_name``, ``class``,
        ``score``, ``rot, tilt, psi`` (RELION ZYZ degrees), ``instance``.
    path : path-like
        Output file; written under a temporary name and renamed when complete.
    format : str, optional
        One of :data:`WRITE_FORMATS` (default: from the extension; ``.csv`` is the
        cryodet-dask CSV, ``czii`` and ``tardis`` must be asked for).
    voxel_size : float, optional
        Å per voxel (default: ``df.attrs['voxel_size']`` or the ratio of ``x_angst`` to
        ``x``).  Needed by the formats in Å (copick, CZII, TARDIS, TXT) and for
        centred STAR coordinates.
    shape, shapes : optional
        The tomogram's shape (z, y, x), or one per ``tomo_name``, for STAR's
        ``rlnCenteredCoordinate*Angst`` (default: ``df.attrs['shape']``).
    tomogram_name : str, optional
        Name written for every row (``rlnTomoName``, CZII ``experiment``, copick
        ``run_name``); default: the ``tomo_name`` column, else the file's stem.
    object_name, user_id, session_id : str
        copick ``pickable_object_name`` (default: the single class, else
        ``particle``), ``user_id`` and ``session_id``.
    overwrite : bool
        Replace an existing file.
    """
    path = Path(path)
    fmt = format_from_path(path, format, known=WRITE_FORMATS)
    if fmt in ("copick", "txt", "tardis", "imod") and "tomo_name" in df.columns:
        tomos = sorted(set(df["tomo_name"].astype(str)))
        if len(tomos) > 1:  # the format holds one tomogram: which one a row belongs to would be lost
            raise ParameterError(f"{path}: the picks belong to {len(tomos)} tomograms ({', '.join(tomos[:4])}"
                                 f"{', ...' if len(tomos) > 4 else ''}) and {fmt} holds one; write one file per "
                                 "tomogram (`picks convert` does), or use STAR, CSV or CZII")
    c = _xyz(df)
    vs = _voxel_size(df, voxel_size)
    n = len(df)
    stem = path.name.split(".")[0] or "tomogram"
    with atomic_output(path, overwrite=overwrite) as tmp:
        if fmt == "csv":
            out = pd.DataFrame({"x": c[:, 0], "y": c[:, 1], "z": c[:, 2]})
            for k, axis in enumerate("xyz"):
                out[f"{axis}_angst"] = c[:, k] * vs if vs else np.nan
            for col in ("tomo_name", "class", "score", "rot", "tilt", "psi", "instance"):
                if col in df.columns:
                    out[col] = df[col].to_numpy()
            out.to_csv(tmp, index=False, float_format="%.6g")
        elif fmt in ("czii", "tardis"):
            a = c * _need_vs(vs, fmt)
            if fmt == "czii":
                cls = df["class"].astype(str).to_numpy() if "class" in df.columns else None
                if cls is None:
                    if not object_name:
                        raise ParameterError("the CZII layout needs a particle_type: a class column or object_name")
                    cls = np.full(n, object_name, dtype=object)
                out = pd.DataFrame({"id": np.arange(n), "experiment": _names(df, tomogram_name, stem),
                                    "particle_type": cls, "x": a[:, 0], "y": a[:, 1], "z": a[:, 2]})
            else:
                ids = df["instance"].to_numpy() if "instance" in df.columns else np.arange(n)
                out = pd.DataFrame({"IDs": ids, "X [A]": a[:, 0], "Y [A]": a[:, 1], "Z [A]": a[:, 2]})
            out.to_csv(tmp, index=False, float_format="%.6g")
        elif fmt == "txt":
            tmp.unlink(missing_ok=True)
            write_centers_txt(c[:, ::-1], tmp, _need_vs(vs, "the seed's TXT"), overwrite=True)
        elif fmt == "star":
            _write_star(df, c, vs, tmp, shape=shape, shapes=shapes, names=_names(df, tomogram_name, stem))
        elif fmt == "copick":
            # not None: the _need_vs in the argument before raises otherwise
            _write_copick(df, c * _need_vs(vs, "copick"), cast(float, vs), tmp, tomogram_name=tomogram_name,
                          object_name=object_name, user_id=user_id, session_id=session_id)
        elif fmt == "imod":
            import imodmodel

            cls = _class_ids(df)
            obj = (cls - cls.min()) if cls is not None and n else np.zeros(n, int)
            m = pd.DataFrame({"object_id": obj.astype(int), "contour_id": np.zeros(n, int),
                              "x": c[:, 0], "y": c[:, 1], "z": c[:, 2]})
            def write_mod(p: Path) -> None:
                with warnings.catch_warnings():  # imodmodel calls pydantic's deprecated .dict()
                    warnings.simplefilter("ignore", DeprecationWarning)
                    imodmodel.write(m, p)

            _via_tempdir(tmp, "model.mod", write_mod)
        elif fmt == "dynamo":
            import dynamotable

            from ._angles import relion_to_dynamo

            t = pd.DataFrame({"tag": np.arange(1, n + 1), "x": c[:, 0], "y": c[:, 1], "z": c[:, 2]})
            if {"rot", "tilt", "psi"} <= set(df.columns):
                ang = relion_to_dynamo(df[["rot", "tilt", "psi"]].to_numpy(float))
                t["tdrot"], t["tilt"], t["narot"] = ang[:, 0], ang[:, 1], ang[:, 2]
            if "score" in df.columns:
                t["cc"] = df["score"].fillna(0).to_numpy(float)
            cls = _class_ids(df)
            if cls is not None:
                t["class"] = cls
            if "tomo_name" in df.columns:
                names = df["tomo_name"].astype(str)
                try:
                    t["tomo"] = names.astype(int).to_numpy()
                except ValueError:
                    order = {nm: k + 1 for k, nm in enumerate(sorted(names.unique()))}
                    log.info("Dynamo tomogram numbers: %s", ", ".join(f"{nm}={k}" for nm, k in order.items()))
                    t["tomo"] = names.map(order).to_numpy()
            _via_tempdir(tmp, "table.tbl", lambda p: dynamotable.write(t, str(p)))
        else:  # pragma: no cover
            raise ParameterError(f"cannot write {fmt!r}")
    return path


def _write_copick(df: pd.DataFrame, a: np.ndarray, vs: float, tmp: Path, *, tomogram_name, object_name, user_id,
                  session_id) -> None:
    from ._angles import relion_to_matrices

    if object_name is None:
        classes: np.ndarray | list[str] = df["class"].astype(str).unique() if "class" in df.columns else []
        if len(classes) > 1:
            raise ParameterError(f"a copick pick file holds one object; the table has {len(classes)} classes "
                                 "(write one file per class, or give object_name)")
        object_name = classes[0] if len(classes) else "particle"
    run = tomogram_name
    if run is None and "tomo_name" in df.columns and df["tomo_name"].nunique() == 1:
        run = str(df["tomo_name"].iloc[0])
    mats = np.tile(np.eye(4), (len(df), 1, 1))
    if {"rot", "tilt", "psi"} <= set(df.columns) and len(df):
        mats[:, :3, :3] = relion_to_matrices(df[["rot", "tilt", "psi"]].to_numpy(float))
    score = df["score"].to_numpy(float) if "score" in df.columns else np.ones(len(df))
    inst = df["instance"].to_numpy() if "instance" in df.columns else np.zeros(len(df), int)
    points = []
    for k in range(len(df)):
        try:
            iid = int(inst[k])
        except (TypeError, ValueError):
            iid = 0
        points.append({"location": {"x": float(a[k, 0]), "y": float(a[k, 1]), "z": float(a[k, 2])},
                       "transformation_": mats[k].tolist(), "instance_id": iid,
                       "score": float(score[k]) if np.isfinite(score[k]) else 1.0})
    doc = {"pickable_object_name": str(object_name), "user_id": user_id, "session_id": str(session_id),
           "run_name": run, "voxel_spacing": vs, "unit": "angstrom", "points": points,
           "trust_orientation": bool({"rot", "tilt", "psi"} <= set(df.columns))}
    tmp.write_text(json.dumps(doc, indent=1))
