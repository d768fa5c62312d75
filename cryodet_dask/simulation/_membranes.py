"""Membranes: gently curved sheets in stacks and closed vesicles, as bilayers.

Every membrane is described by an (approximate) signed distance ``d(p)`` in
voxels from its mid-surface, positive on the side its normal points to.  Its
density is a bilayer: two Gaussian leaflets (head-group layers) at
``d = ±separation / 2`` with standard deviation ``leaflet_sigma``, cut to 0
outside ``|d| <= half_thickness`` (the membrane mask), so a membrane and a
particle that do not overlap in their masks share no density.

* :class:`Sheet`: ``d = n·(p - p0) + a1 sin(2π u·p / L1 + φ1) + a2 sin(2π v·p / L2 + φ2)``
  divided by the norm of its gradient (exact for the plane, first-order for
  the gentle undulation).  Sheets of one stack share ``n``, ``p0`` direction
  and undulation, at different offsets along ``n``: thylakoid-like stacks.
* :class:`Vesicle`: a closed ellipsoid, ``d ≈ k0 (k0 - 1) / k1`` with
  ``k0 = |p / r|``, ``k1 = |p / r²|`` (a good approximation near the surface).

Positions ``p`` are (x, y, z) voxel coordinates (x the last array axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Sheet",
    "Vesicle",
    "Membrane",
    "MembraneProfile",
    "plan_membranes",
    "render_membranes",
    "signed_distance",
    "surface_point",
]


@dataclass(frozen=True)
class MembraneProfile:
    """Bilayer profile in voxels.

    Attributes
    ----------
    separation : float
        Distance between the two leaflets (head groups), voxels.
    leaflet_sigma : float
        Standard deviation of each leaflet's Gaussian, voxels.
    amplitude : float
        Peak density of a leaflet (protein density is ~1 in these units).
    """

    separation: float
    leaflet_sigma: float
    amplitude: float = 1.0

    @property
    def half_thickness(self) -> float:
        """Half the width of the membrane mask, voxels."""
        return self.separation / 2.0 + 1.5 * self.leaflet_sigma


@dataclass(frozen=True)
class Sheet:
    """A gently undulating sheet.  Vectors are (x, y, z) in voxels."""

    normal: tuple[float, float, float]
    origin: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]
    amplitudes: tuple[float, float]
    wavelengths: tuple[float, float]
    phases: tuple[float, float]
    kind: str = "sheet"


@dataclass(frozen=True)
class Vesicle:
    """A closed ellipsoidal vesicle (axis-aligned semi-axes, voxels)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    kind: str = "vesicle"


Membrane = Sheet | Vesicle


def _sheet_terms(m: Sheet, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw level-set value and gradient of a sheet at points ``p`` (..., 3)."""
    n, o = np.asarray(m.normal), np.asarray(m.origin)
    u, v = np.asarray(m.u), np.asarray(m.v)
    (a1, a2), (l1, l2), (f1, f2) = m.amplitudes, m.wavelengths, m.phases
    k1, k2 = 2 * np.pi / l1, 2 * np.pi / l2
    s1, s2 = k1 * (p @ u) + f1, k2 * (p @ v) + f2
    val = (p - o) @ n + a1 * np.sin(s1) + a2 * np.sin(s2)
    grad = n + (a1 * k1 * np.cos(s1))[..., None] * u + (a2 * k2 * np.cos(s2))[..., None] * v
    return val, grad


def signed_distance(m: Membrane, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate signed distance (voxels) and unit normal of a membrane at points ``p``.

    Parameters
    ----------
    m : Sheet or Vesicle
    p : numpy.ndarray
        (..., 3) float (x, y, z) voxel coordinates.

    Returns
    -------
    d : numpy.ndarray
        (...) signed distance, positive on the normal's side (outside a vesicle).
    normal : numpy.ndarray
        (..., 3) unit normal (x, y, z).
    """
    p = np.asarray(p, dtype=np.float64)
    if isinstance(m, Sheet):
        val, grad = _sheet_terms(m, p)
        g = np.linalg.norm(grad, axis=-1)
        return val / g, grad / g[..., None]
    c, r = np.asarray(m.center), np.asarray(m.radii)
    q = p - c
    k0 = np.linalg.norm(q / r, axis=-1)
    k1 = np.linalg.norm(q / r**2, axis=-1)
    k1 = np.where(k1 > 0, k1, 1e-12)
    d = k0 * (k0 - 1.0) / k1
    grad = q / r**2
    gn = np.linalg.norm(grad, axis=-1)
    normal = grad / np.where(gn > 0, gn, 1.0)[..., None]
    return d, normal


def surface_point(m: Membrane, rng: np.random.Generator, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """A random point on a membrane's mid-surface, (x, y, z) voxels (may lie outside the volume)."""
    if isinstance(m, Vesicle):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        # ray to the ellipsoid surface: |t d / r| = 1
        t = 1.0 / np.linalg.norm(direction / np.asarray(m.radii))
        return np.asarray(m.center) + t * direction
    extent = np.asarray(shape_zyx[::-1], dtype=np.float64)
    p = rng.uniform(0.0, 1.0, 3) * extent
    for _ in range(6):  # Newton steps onto the level set
        val, grad = _sheet_terms(m, p)
        p = p - val * grad / float(grad @ grad)
    return p


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _orthonormal(n: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = _random_unit(rng)
    u = a - (a @ n) * n
    u /= np.linalg.norm(u)
    return u, np.cross(n, u)


def plan_membranes(
    n_membranes: int,
    shape_zyx: tuple[int, int, int],
    voxel_size: float,
    rng: np.random.Generator,
    profile: MembraneProfile,
) -> list[Membrane]:
    """Draw the membranes of a scene.

    Half of the membranes (rounded down, only if at least two, at most 8) form one
    thylakoid-like stack of parallel, gently curved sheets spanning the
    volume; the others are closed vesicles.  Sheets in a stack are 12-35 nm
    apart (mid-surface to mid-surface); their normal is drawn uniformly but
    at most 45° from the XY plane, so the sheets cut the slab rather than lie
    in it (membranes parallel to XY are erased by the missing wedge).
    Vesicles have radii of 15-60 nm (bounded by the volume), lie with their
    centre inside the volume and keep at least 8 nm from other membranes.
    A vesicle that cannot be fitted after 200 tries is left out.

    Parameters
    ----------
    n_membranes : int
        Membranes asked for.
    shape_zyx : tuple of int
        Volume shape.
    voxel_size : float
        Voxel size in Å.
    rng : numpy.random.Generator
    profile : MembraneProfile

    Returns
    -------
    list of Sheet or Vesicle
    """
    if n_membranes <= 0:
        return []
    nm = 10.0 / voxel_size  # voxels per nm
    extent = np.asarray(shape_zyx[::-1], dtype=np.float64)  # x, y, z
    n_sheets = min(n_membranes // 2, 8) if n_membranes >= 2 else 0
    membranes: list[Membrane] = []
    if n_sheets:
        while True:
            n = _random_unit(rng)
            if abs(n[2]) <= np.sqrt(0.5):
                break
        u, v = _orthonormal(n, rng)
        gaps = rng.uniform(12.0, 35.0, n_sheets - 1) * nm
        offsets = np.concatenate([[0.0], np.cumsum(gaps)])
        offsets -= offsets.mean()
        center = extent / 2 + rng.uniform(-0.15, 0.15, 3) * extent
        size = float(extent.max())
        wavelengths = tuple(float(w) for w in rng.uniform(1.0, 2.5, 2) * size)
        amplitudes = tuple(float(a) for a in rng.uniform(0.02, 0.06, 2) * np.asarray(wavelengths))
        phases = tuple(float(f) for f in rng.uniform(0, 2 * np.pi, 2))
        for off in offsets:
            membranes.append(
                Sheet(
                    normal=tuple(float(x) for x in n),  # type: ignore[arg-type]
                    origin=tuple(float(x) for x in center + off * n),  # type: ignore[arg-type]
                    u=tuple(float(x) for x in u),  # type: ignore[arg-type]
                    v=tuple(float(x) for x in v),  # type: ignore[arg-type]
                    amplitudes=amplitudes,  # type: ignore[arg-type]
                    wavelengths=wavelengths,  # type: ignore[arg-type]
                    phases=phases,  # type: ignore[arg-type]
                )
            )
    margin = 8.0 * nm + 2 * profile.half_thickness
    r_hi = min(60.0 * nm, 0.4 * float(extent.min()))
    r_lo = min(15.0 * nm, 0.6 * r_hi)
    for _ in range(n_membranes - n_sheets):
        for _try in range(200):
            r0 = rng.uniform(r_lo, r_hi)
            radii = r0 * rng.uniform(0.85, 1.15, 3)
            c = rng.uniform(0.0, 1.0, 3) * extent
            ok = True
            for m in membranes:
                if isinstance(m, Vesicle):
                    gap = np.linalg.norm(c - np.asarray(m.center)) - max(m.radii) - radii.max()
                else:
                    gap = abs(float(signed_distance(m, c)[0])) - radii.max()
                if gap < margin:
                    ok = False
                    break
            if ok:
                membranes.append(Vesicle(center=tuple(float(x) for x in c),  # type: ignore[arg-type]
                                         radii=tuple(float(x) for x in radii)))  # type: ignore[arg-type]
                break
    return membranes


def render_membranes(
    membranes: list[Membrane],
    z_range: tuple[int, int],
    shape_zyx: tuple[int, int, int],
    profile: MembraneProfile,
) -> tuple[np.ndarray, np.ndarray]:
    """Density and mask of all membranes in the z-slab ``z_range`` of the volume.

    Returns
    -------
    density : numpy.ndarray
        float32 (z1 - z0, ny, nx) bilayer density.
    mask : numpy.ndarray
        bool, the membranes' masks (``|d| <= half_thickness``).
    """
    z0, z1 = z_range
    ny, nx = shape_zyx[1], shape_zyx[2]
    dens = np.zeros((z1 - z0, ny, nx), np.float32)
    mask = np.zeros((z1 - z0, ny, nx), bool)
    if not membranes or z1 <= z0:
        return dens, mask
    zz = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    yy = np.arange(ny, dtype=np.float32)[None, :, None]
    xx = np.arange(nx, dtype=np.float32)[None, None, :]
    half_sep, s2 = profile.separation / 2.0, 2.0 * profile.leaflet_sigma**2
    for m in membranes:
        for box in _boxes(m, profile, (z0, z1), (ny, nx)):
            sub = tuple(slice(a - off, b - off) for (a, b), off in zip(box, (z0, 0, 0)))
            d = _distance_grid(m, zz[sub[0]], yy[:, sub[1]], xx[:, :, sub[2]])
            inside = np.abs(d) <= profile.half_thickness
            inside &= ~mask[sub]
            if not inside.any():
                continue
            di = d[inside]
            dens[sub][inside] = profile.amplitude * (np.exp(-((di - half_sep) ** 2) / s2)
                                                     + np.exp(-((di + half_sep) ** 2) / s2))
            mask[sub] |= inside
    return dens, mask


_TILE = 64


def _boxes(m: Membrane, profile: MembraneProfile, z_range: tuple[int, int],
           yx: tuple[int, int]) -> list[list[tuple[int, int]]]:
    """(z, y, x) index ranges of the slab that can hold part of a membrane's mask.

    Vesicles: their bounding box.  Sheets: the (slab × 64 × 64) tiles whose
    centre lies closer to the sheet than the tile's half diagonal plus the
    membrane's half thickness and a margin for the curvature.
    """
    if isinstance(m, Vesicle):
        box = _bounding_box(m, profile, z_range, yx)
        return [] if box is None else [box]
    z0, z1 = z_range
    tiles = []
    for y0 in range(0, yx[0], _TILE):
        for x0 in range(0, yx[1], _TILE):
            y1, x1 = min(y0 + _TILE, yx[0]), min(x0 + _TILE, yx[1])
            c = np.array([(x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (z0 + z1 - 1) / 2])
            half_diag = 0.5 * float(np.sqrt((x1 - x0) ** 2 + (y1 - y0) ** 2 + (z1 - z0) ** 2))
            d = abs(float(signed_distance(m, c)[0]))
            if d <= 1.2 * half_diag + profile.half_thickness + 2.0:
                tiles.append([(z0, z1), (y0, y1), (x0, x1)])
    return tiles


def _bounding_box(m: Membrane, profile: MembraneProfile, z_range: tuple[int, int],
                  yx: tuple[int, int]) -> list[tuple[int, int]] | None:
    """(z, y, x) index ranges that can hold a membrane's mask within the slab; ``None`` if empty."""
    limits = [z_range, (0, yx[0]), (0, yx[1])]
    if isinstance(m, Sheet):
        return limits
    reach = max(m.radii) + profile.half_thickness + 2.0
    center_zyx = m.center[::-1]
    box = []
    for (lo, hi), c in zip(limits, center_zyx):
        a, b = max(lo, int(np.floor(c - reach))), min(hi, int(np.ceil(c + reach)) + 1)
        if a >= b:
            return None
        box.append((a, b))
    return box


def _distance_grid(m: Membrane, zz: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """:func:`signed_distance` on a (z, y, x) grid given by sparse float32 coordinate arrays."""
    f32 = np.float32
    if isinstance(m, Sheet):
        n, o, u, v = (np.asarray(a, dtype=np.float64) for a in (m.normal, m.origin, m.u, m.v))
        (a1, a2), (l1, l2), (p1, p2) = m.amplitudes, m.wavelengths, m.phases
        k1, k2 = 2 * np.pi / l1, 2 * np.pi / l2
        s1 = f32(k1 * u[0]) * xx + f32(k1 * u[1]) * yy + f32(k1 * u[2]) * zz + f32(p1)
        s2 = f32(k2 * v[0]) * xx + f32(k2 * v[1]) * yy + f32(k2 * v[2]) * zz + f32(p2)
        val = (f32(n[0]) * xx + f32(n[1]) * yy + f32(n[2]) * zz - f32(n @ o)
               + f32(a1) * np.sin(s1) + f32(a2) * np.sin(s2))
        c1, c2 = f32(a1 * k1) * np.cos(s1), f32(a2 * k2) * np.cos(s2)
        # |grad|^2 = 1 + c1^2 + c2^2 + 2 c1 c2 (u.v) + 2 c1 (n.u) + 2 c2 (n.v); u, v, n orthonormal
        g2 = 1.0 + c1 * c1 + c2 * c2 + f32(2 * (u @ v)) * c1 * c2 + f32(2 * (n @ u)) * c1 + f32(2 * (n @ v)) * c2
        return (val / np.sqrt(g2)).astype(np.float32)
    c = [f32(x) for x in m.center]
    r = [f32(x) for x in m.radii]
    qx, qy, qz = xx - c[0], yy - c[1], zz - c[2]
    k0 = np.sqrt((qx / r[0]) ** 2 + (qy / r[1]) ** 2 + (qz / r[2]) ** 2)
    k1 = np.sqrt((qx / r[0] ** 2) ** 2 + (qy / r[1] ** 2) ** 2 + (qz / r[2] ** 2) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, f32(1e-12))).astype(np.float32)
