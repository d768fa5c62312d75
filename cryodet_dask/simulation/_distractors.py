"""Distractors: dense structures that are not particles, labelled as background.

A network that has never seen a filament, a gold bead or an ice blob as
background picks them.  These objects are put into the specimen density
before imaging (so either imaging mode sees them), never into the particle
labels, and before the particles, which then avoid them: no particle shares a
voxel or any density with a distractor.

Kinds (sizes in nm, converted with the voxel size; densities relative to the
median protein density, 1, over the surrounding ice):

* ``microtubule``: a straight hollow tube 25 nm across with 5 nm walls, its
  13 protofilaments (±25 % density around the wall) and 4 nm tubulin repeat
  (±10 % along the axis); density 1.
* ``actin``: a straight solid filament 7 nm across with its 36 nm crossover
  (±20 % density along the axis); density 1.
* ``gold``: a fiducial bead 5-15 nm across; density 6-10 (gold is far denser
  than protein; the bead is very dark, and in tilt-series imaging it throws
  the streaks real beads do).
* ``ice``: crystalline-ice contamination, an irregular blob of radius
  10-40 nm (smaller when it does not fit), most often on the top or bottom
  surface of the slab; density 1.5-3.
* ``edge``: a carbon-film edge (a 10-25 nm layer of density 2.4 at the top or
  bottom of the slab, beyond a straight, slightly wavy edge) or a lamella
  edge (vacuum beyond a near-vertical cut, density -2.3, i.e. no ice); it
  covers 10-30 % of the volume and cuts the membranes it meets.
* ``membrane``: a gently curved bilayer sheet at any angle (the scene's own
  sheets stay within 45° of vertical), with no particles on it; it is also in
  the membrane mask.

Filaments span the volume along a direction uniform on the sphere and are
cut where they would meet a membrane or another distractor (the longest free
stretch of at least 30 nm is kept).  Blobs and beads are placed at random and
rejected when they would overlap; after ``max_failures`` rejections in a row
the placement stops with a :class:`DistractorPlacementError` that says how
many fitted, never an endless loop.  Counts whose expected volume exceeds
half of the volume are refused before anything is placed.

Not modelled: filament curvature and bundles, microtubule seams and lattice
helicity, beads' crystalline diffraction, the ice's own contrast variation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ParameterError
from ._membranes import MembraneProfile, Sheet, render_membranes

log = logging.getLogger("cryodet_dask")

__all__ = [
    "DISTRACTOR_KINDS",
    "DISTRACTOR_CODES",
    "DistractorPlacementError",
    "parse_distractors",
    "check_distractors",
    "default_distractor_count",
    "place_distractors",
]

#: Distractor kinds, in the order they are placed.
DISTRACTOR_KINDS = ("edge", "membrane", "ice", "microtubule", "actin", "gold")
#: Value of each kind in the distractor map (0: none).
DISTRACTOR_CODES = {"microtubule": 1, "actin": 2, "gold": 3, "ice": 4, "edge": 5, "membrane": 6}
# default count per 256 × 256 voxels of XY area at 10 Å/voxel
_DEFAULT_PER_AREA = {"microtubule": 2, "actin": 6, "gold": 8, "ice": 2, "edge": 1, "membrane": 1}
_MAX_EDGES = 3
_MIN_FILAMENT_NM = 30.0


class DistractorPlacementError(ParameterError):
    """The distractors asked for do not fit into the volume."""


def parse_distractors(spec: Any) -> tuple[tuple[str, int], ...]:
    """Normalise a distractor specification to ``((kind, count), ...)`` in :data:`DISTRACTOR_KINDS` order.

    ``spec``: ``None`` or ``""`` (none), a string ``"gold:10,microtubule"`` (a
    kind without a count gets ``-1``, its default for the volume), a mapping
    ``{"gold": 10}`` or pairs.

    Examples
    --------
    >>> parse_distractors("gold:10,microtubule")
    (('microtubule', -1), ('gold', 10))
    """
    if spec is None or spec == "" or spec == ():
        return ()
    items: list[tuple[str, Any]] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            kind, _, count = part.partition(":")
            items.append((kind.strip().lower(), count.strip() or -1))
    elif isinstance(spec, Mapping):
        items = [(str(k).lower(), v) for k, v in spec.items()]
    elif isinstance(spec, Sequence):
        for item in spec:
            if isinstance(item, str):
                items.append((item.lower(), -1))
            else:
                kind, count = item
                items.append((str(kind).lower(), count))
    else:
        raise ParameterError(f"distractors must be KIND[:COUNT],... or a mapping, got {spec!r}")
    out: dict[str, int] = {}
    for kind, count in items:
        if kind not in DISTRACTOR_CODES:
            raise ParameterError(f"unknown distractor kind {kind!r}; choose among {', '.join(DISTRACTOR_KINDS)}")
        try:
            n = int(count)
        except (TypeError, ValueError):
            raise ParameterError(f"distractor count must be a whole number, got {kind}:{count}") from None
        if n < -1 or (isinstance(count, float) and not float(count).is_integer()):
            raise ParameterError(f"distractor count must be a whole number >= 0, got {kind}:{count}")
        if kind in out:
            raise ParameterError(f"distractor kind {kind!r} given twice")
        out[kind] = n
    return tuple((k, out[k]) for k in DISTRACTOR_KINDS if k in out)


def default_distractor_count(kind: str, shape: tuple[int, int, int]) -> int:
    """Default number of ``kind`` objects for a volume: per 256 × 256 voxels of XY area, at least 1."""
    area = shape[1] * shape[2] / 256**2
    n = max(1, int(round(_DEFAULT_PER_AREA[kind] * area)))
    return min(n, _MAX_EDGES) if kind == "edge" else n


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _expected_voxels(kind: str, shape: tuple[int, int, int], nm: float) -> float:
    """Rough expected volume (voxels) of one object, for the up-front check."""
    vol = float(np.prod(shape))
    nz, ny, nx = shape
    surface = 2.0 * (nz * ny + ny * nx + nz * nx)
    chord = 4.0 * vol / surface  # mean chord of the box for isotropic lines
    if kind == "gold":
        return 4.0 / 3.0 * math.pi * (5.0 * nm) ** 3
    if kind == "ice":
        return 4.0 / 3.0 * math.pi * min(20.0 * nm, 0.3 * min(shape)) ** 3
    if kind == "microtubule":
        return math.pi * ((12.5 * nm) ** 2 - (7.5 * nm) ** 2) * chord
    if kind == "actin":
        return math.pi * (3.5 * nm) ** 2 * chord
    if kind == "edge":
        return 0.2 * vol
    return 8.0 * nm * ny * nx  # a sheet across the volume


class _Scene:
    """The arrays distractors are written into, and the occupancy test."""

    def __init__(self, signal: Any, dmap: Any, membrane_mask: Any) -> None:
        self.signal, self.dmap, self.membranes = signal, dmap, membrane_mask
        self.shape = tuple(int(s) for s in signal.shape)

    def occupied(self, idx: tuple[np.ndarray, ...]) -> np.ndarray:
        lo = [int(a.min()) for a in idx]
        hi = [int(a.max()) + 1 for a in idx]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = tuple(a - o for a, o in zip(idx, lo))
        taken = (np.asarray(self.dmap[box]) != 0) | np.asarray(self.membranes[box], dtype=bool)
        return taken[local]

    def paste(self, idx: tuple[np.ndarray, ...], values: np.ndarray, code: int) -> None:
        lo = [int(a.min()) for a in idx]
        hi = [int(a.max()) + 1 for a in idx]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = tuple(a - o for a, o in zip(idx, lo))
        sig = np.asarray(self.signal[box]).copy()
        sig[local] += values.astype(np.float32)
        self.signal[box] = sig
        dm = np.asarray(self.dmap[box]).copy()
        dm[local] = code
        self.dmap[box] = dm


def _ball_voxels(center: np.ndarray, reach: float, shape: tuple[int, ...]) -> tuple[np.ndarray, ...] | None:
    """Integer grids (z, y, x) of the box of half-width ``reach`` about ``center`` (z, y, x), clipped."""
    lo = np.maximum(np.floor(center - reach).astype(int), 0)
    hi = np.minimum(np.ceil(center + reach).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    return tuple(np.arange(a, b) for a, b in zip(lo, hi))


def _blob(center: np.ndarray, radius: float, rng: np.random.Generator, shape: tuple[int, ...], lumpy: bool,
          density: float) -> tuple[tuple[np.ndarray, ...], np.ndarray] | None:
    """Voxels and density of a sphere (``lumpy``: an irregular blob) with a one-voxel soft edge."""
    terms = []
    if lumpy:
        for _ in range(3):
            terms.append((_random_unit(rng), float(rng.uniform(0.0, 0.15)), int(rng.integers(1, 4)),
                          float(rng.uniform(0, 2 * np.pi))))
    reach = radius * (1.0 + sum(t[1] for t in terms)) + 1.0
    axes = _ball_voxels(center, reach, shape)
    if axes is None:
        return None
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    q = np.stack([xx - center[2], yy - center[1], zz - center[0]], axis=-1).astype(np.float64)
    r = np.linalg.norm(q, axis=-1)
    rad = np.full(r.shape, radius)
    if terms:
        u = q / np.where(r > 0, r, 1.0)[..., None]
        for g, a, m, phase in terms:
            rad = rad * (1.0 + a * np.cos(np.pi * m * (u @ g) + phase))
    weight = np.clip(rad + 0.5 - r, 0.0, 1.0)
    keep = weight > 0
    if not keep.any():
        return None
    return (zz[keep], yy[keep], xx[keep]), (density * weight[keep]).astype(np.float32)


def _filament(kind: str, rng: np.random.Generator, shape: tuple[int, ...], nm: float
              ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, dict[str, Any]] | None:
    """Voxels, density and axial coordinate ``t`` of a straight filament across the volume."""
    if kind == "microtubule":
        r_out, r_in = 12.5 * nm, 7.5 * nm
    else:
        r_out, r_in = 3.5 * nm, 0.0
    d = _random_unit(rng)  # (x, y, z)
    c = rng.uniform(0.0, 1.0, 3) * (np.asarray(shape[::-1], dtype=np.float64) - 1)
    # the stretch of the line within the volume grown by the radius
    lo_b, hi_b = -r_out - 1.0, np.asarray(shape[::-1], dtype=np.float64) - 1 + r_out + 1.0
    t0, t1 = -np.inf, np.inf
    for ax in range(3):
        if abs(d[ax]) < 1e-9:
            continue
        a, b = (lo_b - c[ax]) / d[ax], (hi_b[ax] - c[ax]) / d[ax]
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
    if not t1 > t0:
        return None
    u = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    phase = float(rng.uniform(0, 2 * np.pi))
    idx_parts: list[list[np.ndarray]] = [[], [], []]
    vals, ts = [], []
    piece = 16.0
    reach = r_out + 1.0
    for a in np.arange(t0, t1, piece):
        b = min(a + piece, t1)
        p0, p1 = c + a * d, c + b * d
        lo = np.maximum(np.floor(np.minimum(p0, p1) - reach).astype(int), 0)[::-1]
        hi = np.minimum(np.ceil(np.maximum(p0, p1) + reach).astype(int) + 1, np.asarray(shape[::-1]))[::-1]
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.meshgrid(*(np.arange(i, j) for i, j in zip(lo, hi)), indexing="ij")
        q = np.stack([xx - c[0], yy - c[1], zz - c[2]], axis=-1).astype(np.float64)
        t = q @ d
        perp = q - t[..., None] * d
        r = np.linalg.norm(perp, axis=-1)
        weight = np.clip(r_out + 0.5 - r, 0.0, 1.0)
        if r_in > 0:
            weight = weight - np.clip(r_in + 0.5 - r, 0.0, 1.0)
        keep = (weight > 0) & (t >= a) & (t < b)
        if not keep.any():
            continue
        w, tk = weight[keep], t[keep]
        if kind == "microtubule":
            ang = np.arctan2(perp[keep] @ v, perp[keep] @ u)
            w = w * (1.0 + 0.25 * np.cos(13 * ang + phase)) * (1.0 + 0.1 * np.cos(2 * np.pi * tk / (4.0 * nm)))
        else:
            w = w * (1.0 + 0.2 * np.cos(2 * np.pi * tk / (36.0 * nm) + phase))
        for lst, grid in zip(idx_parts, (zz, yy, xx)):
            lst.append(grid[keep])
        vals.append(w.astype(np.float32))
        ts.append(tk)
    if not vals:
        return None
    idx = tuple(np.concatenate(p) for p in idx_parts)
    info = {"direction_xyz": [round(float(x), 4) for x in d], "point_xyz": [round(float(x), 2) for x in c],
            "diameter_nm": 25.0 if kind == "microtubule" else 7.0}
    return idx, np.concatenate(vals), np.concatenate(ts), info


def _longest_free(t: np.ndarray, blocked: np.ndarray) -> tuple[float, float]:
    """The longest open interval of ``t`` values free of blocked voxels' ``t`` (1-voxel margin)."""
    lo, hi = float(t.min()), float(t.max())
    bt = np.sort(t[blocked])
    if len(bt) == 0:
        return lo - 1.0, hi + 1.0
    cuts = np.concatenate([[lo - 2.0], bt, [hi + 2.0]])
    gaps = np.diff(cuts)
    i = int(np.argmax(gaps))
    return float(cuts[i]) + 1.0, float(cuts[i + 1]) - 1.0


def _render_edge(scene: _Scene, rng: np.random.Generator, nm: float) -> dict[str, Any]:
    """A carbon-film or lamella edge, written slab by slab; it replaces membranes in its region."""
    nz, ny, nx = scene.shape
    variant = "carbon" if rng.random() < 0.5 else "lamella"
    phi = float(rng.uniform(0, 2 * np.pi))
    elev = float(np.deg2rad(rng.uniform(-20, 20))) if variant == "lamella" else 0.0
    n = np.array([np.cos(phi) * np.cos(elev), np.sin(phi) * np.cos(elev), np.sin(elev)])  # (x, y, z)
    # offset so that the region beyond the edge covers 10-30 % of the volume
    corners = np.array([[x, y, z] for x in (0, nx - 1) for y in (0, ny - 1) for z in (0, nz - 1)], float)
    proj = corners @ n
    frac = float(rng.uniform(0.1, 0.3))
    offset = float(proj.max() - frac * (proj.max() - proj.min()))
    wave_amp, wave_len = float(rng.uniform(0.5, 2.0)) * nm, float(rng.uniform(30, 120)) * nm
    wave_phase = float(rng.uniform(0, 2 * np.pi))
    t = np.cross(n, [0.0, 0.0, 1.0])
    t = t / (np.linalg.norm(t) or 1.0)
    if variant == "carbon":
        thick = float(rng.uniform(10, 25)) * nm
        top = bool(rng.random() < 0.5)
        density = 2.4
    else:
        thick, top, density = float(nz), True, -2.3
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    step = max(1, 2_000_000 // (ny * nx))
    for z0 in range(0, nz, step):
        z1 = min(z0 + step, nz)
        zz = np.arange(z0, z1, dtype=np.float64)[:, None, None]
        along = xx * t[0] + yy * t[1]
        dist = xx * n[0] + yy * n[1] + zz * n[2] - offset + wave_amp * np.sin(2 * np.pi * along / wave_len + wave_phase)
        weight = np.clip(dist + 0.5, 0.0, 1.0)
        if variant == "carbon":
            depth = (nz - 1 - zz) if top else zz
            weight = weight * np.clip(thick + 0.5 - depth, 0.0, 1.0)
        region = weight > 0
        if not region.any():
            continue
        sl = (slice(z0, z1), slice(None), slice(None))
        sig = np.asarray(scene.signal[sl]).copy()
        mem = np.asarray(scene.membranes[sl], dtype=bool).copy()
        dm = np.asarray(scene.dmap[sl]).copy()
        sig[region] = (density * weight[region]).astype(np.float32)
        mem[region] = False
        dm[region] = DISTRACTOR_CODES["edge"]
        scene.signal[sl] = sig
        scene.membranes[sl] = mem
        scene.dmap[sl] = dm
    return {"kind": "edge", "variant": variant, "normal_xyz": [round(float(x), 4) for x in n],
            "offset": round(offset, 2), "fraction": round(frac, 3),
            "thickness_nm": round(thick / nm, 1) if variant == "carbon" else None,
            "side": ("top" if top else "bottom") if variant == "carbon" else None}


def _render_sheet(scene: _Scene, rng: np.random.Generator, profile: MembraneProfile) -> dict[str, Any]:
    """A gently curved bilayer at any angle, kept only where nothing else is."""
    nz, ny, nx = scene.shape
    extent = np.asarray([nx, ny, nz], dtype=np.float64)
    n = _random_unit(rng)
    a = _random_unit(rng)
    u = a - (a @ n) * n
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    size = float(extent.max())
    wavelengths = tuple(float(w) for w in rng.uniform(1.0, 2.5, 2) * size)
    sheet = Sheet(normal=tuple(float(x) for x in n), origin=tuple(float(x) for x in rng.uniform(0.2, 0.8, 3) * extent),  # type: ignore[arg-type]
                  u=tuple(float(x) for x in u), v=tuple(float(x) for x in v),  # type: ignore[arg-type]
                  amplitudes=tuple(float(x) for x in rng.uniform(0.01, 0.04, 2) * np.asarray(wavelengths)),  # type: ignore[arg-type]
                  wavelengths=wavelengths, phases=tuple(float(x) for x in rng.uniform(0, 2 * np.pi, 2)))  # type: ignore[arg-type]
    step = max(1, 2_000_000 // (ny * nx))
    n_vox = 0
    for z0 in range(0, nz, step):
        z1 = min(z0 + step, nz)
        dens, mask = render_membranes([sheet], (z0, z1), scene.shape, profile)  # type: ignore[arg-type]
        if not mask.any():
            continue
        sl = (slice(z0, z1), slice(None), slice(None))
        mem = np.asarray(scene.membranes[sl], dtype=bool).copy()
        dm = np.asarray(scene.dmap[sl]).copy()
        new = mask & ~mem & (dm == 0)
        if not new.any():
            continue
        sig = np.asarray(scene.signal[sl]).copy()
        sig[new] += dens[new]
        mem[new] = True
        dm[new] = DISTRACTOR_CODES["membrane"]
        scene.signal[sl], scene.membranes[sl], scene.dmap[sl] = sig, mem, dm
        n_vox += int(new.sum())
    return {"kind": "membrane", "normal_xyz": [round(float(x), 4) for x in n], "n_voxels": n_vox}


def check_distractors(spec: Any, shape: tuple[int, int, int], voxel_size: float) -> dict[str, int]:
    """Counts per kind (defaults resolved); :class:`DistractorPlacementError` when they cannot fit.

    Refused up front: more than 3 edges, or objects whose expected volume
    exceeds half of the volume.
    """
    items = parse_distractors(spec)
    nm = 10.0 / voxel_size
    counts = {k: (default_distractor_count(k, shape) if n < 0 else n) for k, n in items}
    if counts.get("edge", 0) > _MAX_EDGES:
        raise DistractorPlacementError(f"at most {_MAX_EDGES} edges fit a volume, got edge:{counts['edge']}")
    vol = float(np.prod(shape))
    wanted = sum(counts[k] * _expected_voxels(k, shape, nm) for k in counts)
    if wanted > 0.5 * vol:
        detail = ", ".join(f"{k}:{counts[k]}" for k in counts if counts[k])
        raise DistractorPlacementError(
            f"the distractors asked for ({detail}) would fill about {100 * wanted / vol:.0f} % of the "
            f"{'x'.join(map(str, shape))} volume (at most 50 %): ask for fewer or use a larger volume")
    return counts


def place_distractors(
    spec: Any,
    *,
    shape: tuple[int, int, int],
    voxel_size: float,
    rng: np.random.Generator,
    signal: Any,
    distractor_map: Any,
    membrane_mask: Any,
    profile: MembraneProfile,
    max_failures: int = 100,
    strict: bool = True,
) -> list[dict[str, Any]]:
    """Place the distractors of ``spec`` (see :func:`parse_distractors`) into the volumes.

    Parameters
    ----------
    spec
        Kinds and counts; a count of -1 is the kind's default for ``shape``.
    shape : (int, int, int)
    voxel_size : float
        Å per voxel.
    rng : numpy.random.Generator
    signal, distractor_map, membrane_mask : array-like (z, y, x)
        float32 density (membranes already in it), uint8 distractor map
        (:data:`DISTRACTOR_CODES`), bool membrane mask; updated in place.
    profile : MembraneProfile
        Bilayer profile of ``membrane`` distractors.
    max_failures : int
        Rejected candidates in a row after which placement gives up with
        :class:`DistractorPlacementError`.
    strict : bool
        False: a kind that does not fit is placed as often as it fits, with a
        warning, instead of the error (pools, whose counts are drawn at random).

    Returns
    -------
    list of dict
        One record per object: ``kind`` and its geometry.
    """
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    counts = check_distractors(spec, shape, voxel_size)
    nm = 10.0 / voxel_size
    scene = _Scene(signal, distractor_map, membrane_mask)
    records: list[dict[str, Any]] = []
    for kind in DISTRACTOR_KINDS:
        n = counts.get(kind, 0)
        i = 0
        while i < n:
            i += 1
            if kind == "edge":
                records.append(_render_edge(scene, rng, nm))
                continue
            if kind == "membrane":
                records.append(_render_sheet(scene, rng, profile))
                continue
            failures = 0
            while True:
                rec = _try_object(kind, scene, rng, nm, failures)
                if rec is not None:
                    records.append(rec)
                    break
                failures += 1
                if failures >= max_failures and not strict:
                    log.warning("placed %d of %d %s distractors: no room left for more", i - 1, n, kind)
                    i = n
                    break
                if failures >= max_failures:
                    raise DistractorPlacementError(
                        f"could not fit {kind} {i} of {n} into the {'x'.join(map(str, shape))} volume "
                        f"({max_failures} tries; {i - 1} placed, with the membranes and other distractors): "
                        f"ask for at most {kind}:{i - 1} or use a larger volume")
    return records


def _try_object(kind: str, scene: _Scene, rng: np.random.Generator, nm: float, failures: int
                ) -> dict[str, Any] | None:
    """One candidate object of ``kind``; pasted and described if it fits, else ``None``."""
    shape = scene.shape
    code = DISTRACTOR_CODES[kind]
    if kind in ("microtubule", "actin"):
        fil = _filament(kind, rng, shape, nm)
        if fil is None:
            return None
        idx, vals, t, info = fil
        blocked = scene.occupied(idx)
        a, b = _longest_free(t, blocked)
        if b - a < _MIN_FILAMENT_NM * nm:
            return None
        keep = (t > a) & (t < b)
        idx = tuple(g[keep] for g in idx)
        scene.paste(idx, vals[keep], code)
        return {"kind": kind, **info, "length_nm": round(float(min(b, t.max()) - max(a, t.min())) / nm, 1),
                "n_voxels": int(keep.sum())}
    center = rng.uniform(0.0, 1.0, 3) * (np.asarray(shape, dtype=np.float64) - 1)
    if kind == "gold":
        radius = float(rng.uniform(2.5, 7.5)) * nm
        density = float(rng.uniform(6.0, 10.0))
        blob = _blob(center, radius, rng, shape, False, density)
    else:  # ice: shrinks by 20 % every 10 failures, down to 5 nm
        radius = float(rng.uniform(10.0, 40.0)) * nm * 0.8 ** (failures // 10)
        radius = max(min(radius, 0.3 * min(shape)), 5.0 * nm)
        if rng.random() < 0.6:  # surface contamination: centred on the top or bottom face
            center[0] = 0.0 if rng.random() < 0.5 else shape[0] - 1.0
        density = float(rng.uniform(1.5, 3.0))
        blob = _blob(center, radius, rng, shape, True, density)
    if blob is None:
        return None
    idx, vals = blob
    if scene.occupied(idx).any():
        return None
    scene.paste(idx, vals, code)
    return {"kind": kind, "center_zyx": [round(float(x), 2) for x in center],
            "diameter_nm": round(2 * radius / nm, 1), "density": round(density, 2), "n_voxels": int(len(vals))}
