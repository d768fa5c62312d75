"""Parsing particle files into raw tables: coordinates as written, with their unit.

Each reader returns a :class:`RawTable`: the three coordinate columns exactly
as the file holds them (``cx, cy, cz``), the unit they are in, the optional
columns (``tomo_name``, ``class``, ``score``, ``rot``, ``tilt``, ``psi``,
``instance`` and format-specific extras) and what the file says about sizes.
Turning coordinates into voxels of a target tomogram is done afterwards, in
:mod:`._convert`, with what the file and the user give.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..errors import InputError

log = logging.getLogger("cryodet_dask")



@dataclass
class RawTable:
    """Coordinates as the file holds them, and what the file says about them."""

    table: pd.DataFrame          # cx, cy, cz (float) + optional columns
    unit: str                    # one of particles.UNITS
    format: str                  # the detected format (e.g. "relion4", "copick")
    voxel_size: float | None = None          # Å per unit-voxel, when the file states it
    tilt_series_pixel_size: float | None = None   # RELION optics rlnTomoTiltSeriesPixelSize
    tomograms_star: Path | None = None       # RELION 5 tomograms.star the file refers to
    shapes: dict[str, tuple[float, float, float]] | None = None   # per tomo_name (z, y, x), when the file implies it
    notes: list[str] = field(default_factory=list)


def _norm(name: Any) -> str:
    """Column name for matching: lower case, no spaces, brackets or leading underscores."""
    s = str(name).strip().lower().lstrip("_").replace("å", "a")
    return re.sub(r"[\s\[\]()]", "", s)


_VOXEL = {a: {a, f"{a}_px", f"{a}px", f"{a}_voxel", f"{a}_voxels", f"coord_{a}", f"coordinate_{a}",
              f"rlncoordinate{a}", f"center_{a}", f"centre_{a}", f"volume{a}", f"{a}_pixel", f"{a}pixel"}
          for a in "xyz"}
_ANGST = {a: {f"{a}_angst", f"{a}_angstrom", f"{a}_a", f"{a}a", f"{a}angst", f"{a}angstrom", f"position{a}"}
          for a in "xyz"}
_CENTRED = {a: {f"rlncenteredcoordinate{a}angst"} for a in "xyz"}
_CLASS = ("class", "class_name", "particle_type", "rlnclassnumber", "species", "molecule", "object",
          "pickable_object_name")
_SCORE = ("score", "rlnautopickfigureofmerit", "rlnlccmax", "cc", "confidence")
_TOMO = ("tomo_name", "rlntomoname", "tomogram", "experiment", "run_name", "run", "rlnmicrographname",
         "tomo", "tomo_num")
_ANGLES = (("rot", "rlnanglerot", "angle_rot", "phi"), ("tilt", "rlnangletilt", "angle_tilt", "theta"),
           ("psi", "rlnanglepsi", "angle_psi"))
_INSTANCE = ("ids", "instance", "instance_id")


def _pick(cols: dict[str, str], names) -> str | None:
    for n in names:
        if n in cols:
            return cols[n]
    return None


def check_unique_columns(columns: Any, path: Path, where: str = "") -> None:
    """One-line :class:`InputError` naming a column that appears twice (also as ``X`` and ``x``, which
    read as the same column), instead of a later, misleading "not numbers"."""
    seen: dict[str, str] = {}
    for c in columns:
        key = _norm(c)
        if key in seen:
            same = f"{c!r}" if str(seen[key]).strip() == str(c).strip() else f"{seen[key]!r} and {c!r}"
            raise InputError(f"{path}: column {same} appears twice{where}; remove or rename the duplicate")
        seen[key] = str(c)


def _numeric(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    try:
        return pd.to_numeric(df[col]).to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: column {col!r} holds values that are not numbers") from exc


def _optional(df: pd.DataFrame, cols: dict[str, str], out: pd.DataFrame, path: Path, *,
              angles: bool = True, skip: frozenset[str] = frozenset()) -> None:
    """Copy tomo_name, class, score, angles, instance from ``df`` into ``out`` where present."""
    c = _pick(cols, [n for n in _TOMO if n not in skip])
    if c is not None:
        out["tomo_name"] = df[c].astype(str).to_numpy()
    c = _pick(cols, [n for n in _CLASS if n not in skip])
    if c is not None:
        out["class"] = df[c].astype(str).to_numpy()
    c = _pick(cols, [n for n in _SCORE if n not in skip])
    if c is not None:
        out["score"] = _numeric(df, c, path)
    c = _pick(cols, _INSTANCE)
    if c is not None:
        out["instance"] = df[c].astype(str).to_numpy()
    if angles:
        acols = [_pick(cols, names) for names in _ANGLES]
        if all(a is not None for a in acols):
            for name, a in zip(("rot", "tilt", "psi"), cast(list[str], acols)):  # none is None: checked above
                out[name] = _numeric(df, a, path)


# ----------------------------------------------------------------------------------------------- STAR

_TOKEN = re.compile(r"\"[^\"]*\"|'[^']*'|\S+")


def _check_star_rows(text: str, path: Path) -> None:
    """Every data row of every loop must have exactly one value per column (short rows are an error)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "loop_":
            i += 1
            continue
        ncol = 0
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(("_", "#"))):
            ncol += lines[i].lstrip().startswith("_")
            i += 1
        while i < len(lines):  # the rows, up to the next block, loop or label
            parts = lines[i].split()
            if parts:
                head = parts[0]
                if head.startswith(("data_", "loop_", "_")):
                    break
                if len(parts) != ncol and not head.startswith("#"):
                    s = lines[i]
                    n = len(_TOKEN.findall(s)) if ('"' in s or "'" in s) else len(parts)
                    if n != ncol:
                        raise InputError(f"{path}: line {i + 1} has {n} values for {ncol} columns "
                                         "(a short or ragged row)")
            i += 1


def read_star_blocks(path: Path) -> dict[str, Any]:
    """All data blocks of a STAR file (``starfile``), after checking that no row is ragged."""
    import starfile

    text = path.read_text(errors="replace")
    _check_star_rows(text, path)
    try:
        return starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises many kinds on malformed input
        raise InputError(f"{path}: not a readable STAR file ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from exc


def _as_table(block: Any) -> pd.DataFrame | None:
    """A STAR data block as a table: a loop as it is, a block of ``_label value`` pairs (one row, written
    without ``loop_``) as a one-row table."""
    if isinstance(block, pd.DataFrame):
        return block
    if isinstance(block, dict) and block:
        return pd.DataFrame([block])
    return None


def _star_particles(blocks: dict[str, Any], path: Path) -> tuple[str, pd.DataFrame]:
    tables = {k: t for k, t in ((k, _as_table(v)) for k, v in blocks.items()) if t is not None}
    found = []
    for name, t in tables.items():
        cols = {_norm(c) for c in t.columns}
        if cols & {"rlncoordinatex", "rlncenteredcoordinatexangst", "orig_x"}:
            found.append(name)
    if not found:
        names = ", ".join(f"data_{k}" for k in blocks) or "none"
        raise InputError(f"{path}: no STAR table with coordinates (rlnCoordinateX/Y/Z, "
                         f"rlnCenteredCoordinateX/Y/ZAngst or STOPGAP orig_x/y/z); blocks: {names}")
    if len(found) > 1:
        raise InputError(f"{path}: several data blocks hold coordinates ({', '.join(found)}); "
                         "split the file")
    check_unique_columns(tables[found[0]].columns, path, f" in data_{found[0]}")
    return found[0], tables[found[0]]


def read_star(path: Path) -> RawTable:
    blocks = read_star_blocks(path)
    name, df = _star_particles(blocks, path)
    cols = {_norm(c): c for c in df.columns}
    out = pd.DataFrame(index=range(len(df)))
    optics = _as_table(blocks.get("optics"))
    if optics is not None:
        check_unique_columns(optics.columns, path, " in data_optics")
    optics_cols = {_norm(c): c for c in optics.columns} if isinstance(optics, pd.DataFrame) else {}
    ts_ps = None
    if isinstance(optics, pd.DataFrame) and "rlntomotiltseriespixelsize" in optics_cols:  # cols imply a frame
        v = pd.to_numeric(optics[optics_cols["rlntomotiltseriespixelsize"]]).unique()
        if len(v) == 1:
            ts_ps = float(v[0])
    if "orig_x" in cols:  # STOPGAP motive list: orig_x/y/z in voxels, ZXZ angles phi, psi, the
        for a in "xyz":
            out[f"c{a}"] = _numeric(df, cols[f"orig_{a}"], path)
        if "tomo_num" in cols:
            out["tomo_name"] = df[cols["tomo_num"]].astype(str).to_numpy()
        if "class" in cols:
            out["class"] = df[cols["class"]].astype(str).to_numpy()
        if "score" in cols:
            out["score"] = _numeric(df, cols["score"], path)
        for a in ("phi", "psi", "the"):  # kept as written: STOPGAP's ZXZ convention, not converted
            if a in cols:
                out[f"stopgap_{a}"] = _numeric(df, cols[a], path)
        return RawTable(out, "voxel", "stopgap")
    relion4 = bool(ts_ps is not None or {"rlntomoparticleid", "rlntomoparticlename", "rlntomosubtomogramrot"}
                   & set(cols) or ("rlntomoname" in cols and optics_cols))
    centred = "rlncenteredcoordinatexangst" in cols
    pixel = "rlncoordinatex" in cols
    if pixel and not (centred and relion4):
        for a in "xyz":
            out[f"c{a}"] = _numeric(df, cols[f"rlncoordinate{a}"], path)
        if relion4:
            unit, fmt = "unbinned", "relion4"
        elif "rlntomonumber" in cols or "rlnpixelsize" in cols:
            unit, fmt = "voxel", "tomoman"
        elif centred:
            unit, fmt = "voxel", "relion5"  # cryodet-dask's own STAR: both, rlnCoordinate in tomogram voxels
        elif "rlntomoname" in cols:
            unit, fmt = "voxel", "relion"
        else:
            unit, fmt = "voxel", "relion3"
    else:
        for a in "xyz":
            out[f"c{a}"] = _numeric(df, cols[f"rlncenteredcoordinate{a}angst"], path)
        unit, fmt = "centred_angstrom", "relion5"
    _optional(df, cols, out, path)
    raw = RawTable(out, unit, fmt, tilt_series_pixel_size=ts_ps)
    if unit == "voxel" and centred:
        _voxel_size_from_both(raw, df, cols, path)
    if unit in ("centred_angstrom", "unbinned"):
        raw.tomograms_star = find_tomograms_star(path)
    return raw


def _voxel_size_from_both(raw: RawTable, df: pd.DataFrame, cols: dict[str, str], path: Path) -> None:
    """Voxel size and tomogram shapes implied by rlnCoordinate (voxels) next to rlnCenteredCoordinate (Å).

    centred = (coordinate - size / 2) x voxel size on every axis: two particles with
    different coordinates on an axis give the voxel size exactly; kept only when all
    axes agree to 0.1 % and the fit is exact.
    """
    est = []
    for a in "xyz":
        v = raw.table[f"c{a}"].to_numpy(np.float64)
        c = _numeric(df, cols[f"rlncenteredcoordinate{a}angst"], path)
        if len(v) >= 2 and np.ptp(v) > 0:
            slope, icpt = np.polyfit(v, c, 1)
            if slope > 0 and np.allclose(slope * v + icpt, c, atol=1e-2 * max(1.0, slope)):
                est.append(slope)
    if est and np.ptp(est) <= 1e-3 * max(est):
        vs = round(float(np.mean(est)), 4)  # the coordinates are written to ~1e-3: more digits are noise
        raw.voxel_size = vs
        names = raw.table["tomo_name"].astype(str) if "tomo_name" in raw.table.columns else pd.Series(
            ["tomogram"] * len(raw.table))
        shapes: dict[str, tuple[float, float, float]] = {}
        for nm in names.unique():
            sel = (names == nm).to_numpy()
            size = [float(np.median(2 * (raw.table[f"c{a}"].to_numpy()[sel]
                                         - _numeric(df, cols[f"rlncenteredcoordinate{a}angst"], path)[sel] / vs)))
                    for a in "zyx"]
            shapes[nm] = cast(tuple[float, float, float], tuple(round(v, 3) for v in size))  # one per axis
        raw.shapes = shapes


def find_tomograms_star(path: Path) -> Path | None:
    """The RELION 5 ``tomograms.star`` named by the optimisation set next to a particles file."""
    import starfile

    folder = path.parent
    m = re.match(r"(.*)_data\.star$", path.name)
    candidates = []
    if m:
        candidates.append(folder / f"{m.group(1)}_optimisation_set.star")
    candidates.append(folder / "optimisation_set.star")
    candidates += sorted(folder.glob("*optimisation_set.star"))
    for opt in candidates:
        if not opt.is_file():
            continue
        try:
            blocks = starfile.read(opt, always_dict=True)
        except Exception:  # not an optimisation set after all
            continue
        rel = None
        for block in blocks.values():
            if isinstance(block, dict):
                rel = block.get("rlnTomoTomogramsFile", rel)
            elif isinstance(block, pd.DataFrame) and "rlnTomoTomogramsFile" in block.columns and len(block):
                rel = block["rlnTomoTomogramsFile"].iloc[0]
        if not rel:
            continue
        for base in [folder, *folder.parents]:
            cand = base / str(rel)
            if cand.is_file():
                log.info("%s: tomogram sizes from %s (via %s)", path, cand, opt.name)
                return cand
    return None


def read_tomograms_star(path: Path) -> dict[str, dict[str, Any]]:
    """RELION 5 ``tomograms.star``: per rlnTomoName the unbinned size (x, y, z), pixel size and binning."""
    blocks = read_star_blocks(path)
    for block in blocks.values():
        t = _as_table(block)
        if t is not None and {"rlnTomoName", "rlnTomoSizeX"} <= set(t.columns):
            break
    else:
        raise InputError(f"{path}: not a RELION 5 tomograms.star (no rlnTomoName and rlnTomoSizeX/Y/Z)")
    out = {}
    for _, row in t.iterrows():
        ps = row.get("rlnTomoTiltSeriesPixelSize", row.get("rlnMicrographOriginalPixelSize"))
        out[str(row["rlnTomoName"])] = {
            "size": (float(row["rlnTomoSizeX"]), float(row["rlnTomoSizeY"]), float(row["rlnTomoSizeZ"])),
            "pixel_size": float(ps) if ps is not None else None,
            "binning": float(row.get("rlnTomoTomogramBinning", 1.0)),
        }
    return out


# ------------------------------------------------------------------------------------------- CSV, TXT

def _sniff_delimiter(line: str) -> str | None:
    for d in ("\t", "|", ",", ";"):
        if d in line:
            return d
    return None  # whitespace


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_delimited(path: Path) -> RawTable:
    """CSV / TSV / pipe / whitespace tables, with or without a header (also the seed's TXT and TARDIS CSV)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text table") from exc
    lines = [(i + 1, ln.rstrip("\r\n")) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return RawTable(pd.DataFrame({"cx": [], "cy": [], "cz": []}), "voxel", "csv")
    delim = _sniff_delimiter(lines[0][1])

    def split(ln: str) -> list[str]:
        if delim is None:
            return ln.split()
        return [v.strip() for v in next(csv.reader(io.StringIO(ln), delimiter=delim))]

    rows = [(i, split(ln)) for i, ln in lines]
    first = rows[0][1]
    header = not all(_is_number(v) for v in first if v != "")
    if header:
        names, rows = first, rows[1:]
        check_unique_columns(names, path, " in the header")
    else:
        names = [f"col{k}" for k in range(len(first))]
    for i, r in rows:
        if len(r) != len(names):
            raise InputError(f"{path}: line {i} has {len(r)} values for {len(names)} columns (a short or ragged row)")
    df = pd.DataFrame([r for _, r in rows], columns=names, dtype=object).replace({"": np.nan})
    out = pd.DataFrame(index=range(len(df)))
    if not header:
        if len(names) < 3:
            raise InputError(f"{path}: expected at least three columns x y z, got {len(names)}")
        for a, c in zip("xyz", names[:3]):
            out[f"c{a}"] = _numeric(df, c, path)
        fmt = "txt" if path.suffix.lower() == ".txt" else "csv"
        log.info("%s: no header; columns 1-3 read as x, y, z in voxels", path)
        return RawTable(out, "voxel", fmt, notes=["no header: x, y, z in voxels"])
    cols = {_norm(c): c for c in df.columns}
    czii = "experiment" in cols and "particle_type" in cols
    vox = [_pick(cols, sorted(_VOXEL[a])) for a in "xyz"]
    ang = [_pick(cols, sorted(_ANGST[a])) for a in "xyz"]
    cen = [_pick(cols, sorted(_CENTRED[a])) for a in "xyz"]
    if any(_norm(c).endswith("[a]") for c in df.columns) or any(re.search(r"\[(a|å|angst)", str(c).lower())
                                                              for c in df.columns):
        ang = [next((c for c in df.columns if re.match(rf"^\s*{a}\s*\[\s*(a|å|angst\w*)\s*\]\s*$", str(c).lower())),
                    ang[k]) for k, a in enumerate("xyz")]
    vs = None
    if czii:
        if not all(vox):
            raise InputError(f"{path}: CZII layout (experiment, particle_type) without x, y, z columns")
        for a, c in zip("xyz", cast(list[str], vox)):  # all set: checked above
            out[f"c{a}"] = _numeric(df, c, path)
        unit, fmt = "angstrom", "czii"
    elif all(vox):
        for a, c in zip("xyz", cast(list[str], vox)):  # all set: checked above
            out[f"c{a}"] = _numeric(df, c, path)
        unit = "voxel"
        fmt = "seed_txt" if _norm(vox[0]) == "volumex" else ("csv" if path.suffix.lower() != ".txt" else "txt")
        if all(ang):  # both: the file states its voxel size (Å / voxel)
            a_x = np.concatenate([_numeric(df, c, path) for c in cast(list[str], ang)])  # all set: checked above
            v_x = np.concatenate([out[f"c{a}"].to_numpy() for a in "xyz"])
            ok = np.isfinite(a_x) & (np.abs(v_x) > 1e-9)
            if ok.any():
                ratio = a_x[ok] / v_x[ok]
                vs = float(np.median(ratio)) if np.median(ratio) > 0 else None
    elif all(ang):
        for a, c in zip("xyz", cast(list[str], ang)):  # all set: checked above
            out[f"c{a}"] = _numeric(df, c, path)
        unit = "angstrom"
        fmt = "tardis" if "ids" in cols else "csv"
    elif all(cen):
        for a, c in zip("xyz", cast(list[str], cen)):  # all set: checked above
            out[f"c{a}"] = _numeric(df, c, path)
        unit, fmt = "centred_angstrom", "csv"
    else:
        raise InputError(f"{path}: no x, y, z coordinate columns (found: {', '.join(map(str, df.columns[:12]))}); "
                         "expected x/y/z (voxels), x_angst or 'x [A]' (Å), or rlnCoordinateX")
    _optional(df, cols, out, path)
    return RawTable(out, unit, fmt, voxel_size=vs)


# ------------------------------------------------------------------------------------------- copick

def read_copick(path: Path) -> RawTable:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or "points" not in doc:
        raise InputError(f"{path}: not a copick pick file (no 'points')")
    unit = str(doc.get("unit", "angstrom")).lower()
    if unit not in ("angstrom", "a", "å"):
        raise InputError(f"{path}: copick unit {unit!r} is not supported (expected 'angstrom')")
    pts = doc["points"] or []
    xyz = np.zeros((len(pts), 3))
    score = np.full(len(pts), np.nan)
    inst = []
    mats = np.tile(np.eye(4), (len(pts), 1, 1))
    have_rot = False
    for k, p in enumerate(pts):
        loc = p.get("location") or {}
        try:
            xyz[k] = [float(loc[a]) for a in "xyz"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: point {k} has no numeric location x, y, z") from exc
        if p.get("score") is not None:
            score[k] = float(p["score"])
        inst.append(str(p.get("instance_id", 0)))
        t = p.get("transformation_")
        if t is not None:
            mats[k] = np.asarray(t, np.float64)
            have_rot = True
    out = pd.DataFrame({"cx": xyz[:, 0], "cy": xyz[:, 1], "cz": xyz[:, 2]})
    if doc.get("run_name"):
        out["tomo_name"] = str(doc["run_name"])
    if doc.get("pickable_object_name"):
        out["class"] = str(doc["pickable_object_name"])
    out["score"] = score
    out["instance"] = inst
    if have_rot and len(pts):
        from ._angles import matrices_to_relion

        ang = matrices_to_relion(mats[:, :3, :3])
        out["rot"], out["tilt"], out["psi"] = ang[:, 0], ang[:, 1], ang[:, 2]
    vs = doc.get("voxel_spacing")
    return RawTable(out, "angstrom", "copick", voxel_size=float(vs) if vs else None)


# ------------------------------------------------------------------------------------------- IMOD, Dynamo

def read_imod(path: Path) -> RawTable:
    import imodmodel

    try:
        model = imodmodel.ImodModel.from_file(path)
        df = imodmodel.read(path)
    except Exception as exc:  # the library raises several kinds on bad input
        raise InputError(f"{path}: not a readable IMOD model ({exc})") from exc
    out = pd.DataFrame({"cx": df["x"].to_numpy(float), "cy": df["y"].to_numpy(float),
                        "cz": df["z"].to_numpy(float)})
    names = [getattr(o.header, "name", "") if hasattr(o, "header") else "" for o in model.objects]
    oid = df["object_id"].to_numpy(int)
    out["class"] = [names[i] if i < len(names) and names[i] else str(i + 1) for i in oid]
    out["instance"] = df["contour_id"].astype(str).to_numpy()
    vs = None
    h = model.header
    units = int(getattr(h, "units", 0))
    if units != 0 and bool(getattr(h, "pixelsize", 0)):  # IMOD units: power of ten of a metre (-9 nm, -10 Å)
        vs = float(h.pixelsize) * 10.0 ** (units + 10)
    return RawTable(out, "voxel", "imod", voxel_size=vs)


def read_dynamo(path: Path) -> RawTable:
    import dynamotable

    counts: dict[int, int] = {}
    for k, line in enumerate(path.read_text(errors="replace").splitlines()):
        if line.strip():
            counts.setdefault(len(line.split()), k + 1)
    if len(counts) > 1:
        n, line_no = sorted(counts.items(), key=lambda kv: kv[1])[1]
        first = min(counts, key=counts.__getitem__)
        raise InputError(f"{path}: line {line_no} has {n} values where line {counts[first]} has {first} "
                         "(a short or ragged row)")
    try:
        df = dynamotable.read(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable Dynamo table ({exc})") from exc
    if not {"x", "y", "z"} <= set(df.columns):
        raise InputError(f"{path}: a Dynamo table needs at least 26 columns (x, y, z are columns 24-26)")
    out = pd.DataFrame({f"c{a}": df[a].to_numpy(float) for a in "xyz"})  # shifts dx, dy, dz not applied
    if "tomo" in df.columns:
        out["tomo_name"] = df["tomo"].astype(int).astype(str).to_numpy()
    if "class" in df.columns:
        out["class"] = df["class"].astype(int).astype(str).to_numpy()
    if "cc" in df.columns:
        out["score"] = df["cc"].to_numpy(float)
    if "tag" in df.columns:
        out["instance"] = df["tag"].astype(int).astype(str).to_numpy()
    if {"tdrot", "tilt", "narot"} <= set(df.columns):
        from ._angles import dynamo_to_relion

        ang = dynamo_to_relion(df[["tdrot", "tilt", "narot"]].to_numpy(float))
        out["rot"], out["tilt"], out["psi"] = ang[:, 0], ang[:, 1], ang[:, 2]
    return RawTable(out, "voxel", "dynamo")
