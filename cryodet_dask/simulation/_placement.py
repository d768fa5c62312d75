"""Placing particles: on membranes and free, dense, never overlapping.

Particles are placed one after the other (random sequential adsorption) and
pasted at once into the volumes (density, labels, CenterNet target).  A
candidate is rejected, exactly, when its mask overlaps a voxel already taken
by another particle's mask or by a membrane's mask, or when it does not fit
entirely inside the volume; neighbours may therefore touch face to face but
never share a voxel or any density.

Membrane-bound particles: a point is drawn on a membrane (membranes weighted
by their approximate area in the volume), a side of the membrane is chosen
(vesicles: outside with probability 0.7), the template's +z axis is aligned
with the membrane normal on that side, turned by a uniform in-plane angle
and tilted by up to 10° about a random in-plane axis; the particle is then
pushed along the normal until its mask just clears the membrane (its lowest
point 0.75 voxel above the membrane mask), i.e. it sits anchored on the
leaflet.  Free particles get a uniform position and a rotation uniform on
SO(3).

The particle's position (table ``x, y, z``) is where the template's centre
(its mask centroid) is placed; the label's centroid agrees with it to
interpolation accuracy (a fraction of a voxel).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ._membranes import Membrane, MembraneProfile, Vesicle, signed_distance, surface_point
from ._targets import center_target
from ..templates import Template, euler_from_rotation, render_particle

__all__ = ["place_particles", "PARTICLE_COLUMNS"]

log = logging.getLogger("cryodet_dask")

#: Columns of the particle table, in order.
PARTICLE_COLUMNS = [
    "id", "class", "x", "y", "z", "x_angst", "y_angst", "z_angst", "phi", "theta", "psi",
    "on_membrane", "membrane", "n_voxels", "peak_x", "peak_y", "peak_z",
]

_MAX_TILT_DEG = 10.0
_GAP = 0.75


def _membrane_weights(membranes: list[Membrane], shape_zyx: tuple[int, int, int]) -> np.ndarray:
    extent = np.asarray(shape_zyx[::-1], dtype=np.float64)
    w = []
    for m in membranes:
        if isinstance(m, Vesicle):
            r = float(np.mean(m.radii))
            w.append(4 * np.pi * r * r)
        else:
            along = float(np.abs(np.asarray(m.normal)) @ extent)
            w.append(float(np.prod(extent)) / max(along, 1.0))
    w_arr = np.asarray(w)
    return w_arr / w_arr.sum()


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix (x, y, z) about a unit ``axis`` by ``angle`` radians (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _align_z(n: np.ndarray) -> np.ndarray:
    """Rotation matrix taking the +z axis onto the unit vector ``n`` (the shortest such rotation)."""
    ez = np.array([0.0, 0.0, 1.0])
    axis = np.cross(ez, n)
    s = float(np.linalg.norm(axis))
    c = float(n[2])
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    return _axis_angle(axis / s, float(np.arctan2(s, c)))


def _membrane_pose(
    template: Template, membrane: Membrane, rng: np.random.Generator, shape_zyx: tuple[int, int, int],
    profile: MembraneProfile,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (z, y, x) and rotation matrix (x, y, z) of a particle anchored on ``membrane``."""
    p = surface_point(membrane, rng, shape_zyx)
    _, normal = signed_distance(membrane, p)
    if isinstance(membrane, Vesicle):
        side = 1.0 if rng.random() < 0.7 else -1.0
    else:
        side = 1.0 if rng.random() < 0.5 else -1.0
    n_out = side * normal
    inplane = _axis_angle(np.array([0.0, 0.0, 1.0]), rng.uniform(0.0, 2 * np.pi))
    axis = rng.standard_normal(3)
    axis -= (axis @ n_out) * n_out
    axis /= np.linalg.norm(axis)
    tilt = _axis_angle(axis, np.deg2rad(rng.uniform(0.0, _MAX_TILT_DEG)))
    rot = tilt @ _align_z(n_out) @ inplane
    reach = -float((template.points @ rot.T @ n_out).min()) if len(template.points) else 0.0
    center_xyz = p + n_out * (profile.half_thickness + reach + _GAP)
    return center_xyz[::-1].copy(), rot


def _quick_check(template: Template, c_zyx: np.ndarray, rot: np.ndarray, shape: tuple[int, ...],
                 labels: Any, membrane_mask: Any, blocked: Any | None = None) -> bool:
    """Cheap first test before rendering: the particle's rotated voxels fit in the volume
    and its deep interior voxels hit nothing taken.  The exact test follows."""
    pts = (template.points @ rot.T)[:, ::-1] + c_zyx
    if np.any(pts.min(axis=0) < -0.5) or np.any(pts.max(axis=0) > np.asarray(shape) - 0.5):
        return False
    if len(template.core) == 0:
        return True
    idx = np.rint((template.core @ rot.T)[:, ::-1] + c_zyx).astype(np.intp)
    idx = np.clip(idx, 0, np.asarray(shape) - 1)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = tuple((idx - lo).T)
    taken = (np.asarray(labels[box])[local] > 0) | np.asarray(membrane_mask[box], dtype=bool)[local]
    if blocked is not None:
        taken |= np.asarray(blocked[box], dtype=bool)[local]
    return not bool(taken.any())


def place_particles(
    templates: list[Template],
    membranes: list[Membrane],
    profile: MembraneProfile,
    *,
    n_target: int,
    membrane_fraction: float,
    rng: np.random.Generator,
    voxel_size: float,
    signal: Any,
    labels: Any,
    center: Any,
    membrane_mask: Any,
    max_failures: int = 200,
    blocked: Any | None = None,
    abundance: Sequence[float] = (),
) -> list[dict[str, Any]]:
    """Place up to ``n_target`` particles and paste them into the volumes.

    Parameters
    ----------
    templates : list of Template
        Particle species, drawn with equal probability, or in proportion to ``abundance``.
    membranes : list of Sheet or Vesicle
    profile : MembraneProfile
    n_target : int
        Particles asked for.
    membrane_fraction : float
        Fraction of them anchored on membranes (0 if there are no membranes).
    rng : numpy.random.Generator
    voxel_size : float
        Å per voxel (for the table's Å columns).
    signal, labels, center, membrane_mask : array-like (z, y, x)
        float32 density (membranes already in it), integer labels (0),
        float32 CenterNet target (0), bool membrane mask; updated in place
        (numpy arrays or memory maps).
    max_failures : int
        Consecutive rejected candidates after which a kind of placement
        (membrane-bound, then free) gives up: the membranes or the volume
        are full.  Particles the membranes cannot take are placed free.
    blocked : array-like (z, y, x), optional
        Further voxels no particle may touch (nonzero): the distractors.
    abundance : sequence of float
        Relative probability of each template (empty: equal; then the random
        draws are those of the scenes made before it existed).

    Returns
    -------
    list of dict
        One row per placed particle, keys :data:`PARTICLE_COLUMNS`.
    """
    shape = tuple(int(s) for s in labels.shape)
    n_mem = int(round(membrane_fraction * n_target)) if membranes else 0
    weights = _membrane_weights(membranes, shape) if membranes else None  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    p_template = np.asarray(abundance, dtype=np.float64) / float(np.sum(abundance)) if len(abundance) else None
    for on_membrane in (True, False):
        # membrane-bound first; whatever the membranes could not take goes to the cytosol
        wanted = n_mem if on_membrane else n_target - len(rows)
        placed = failures = 0
        while placed < wanted and failures < max_failures:
            t = templates[int(rng.integers(len(templates))) if p_template is None
                          else int(rng.choice(len(templates), p=p_template))]
            membrane_index = 0
            if on_membrane:
                membrane_index = int(rng.choice(len(membranes), p=weights)) + 1
                c_zyx, rot = _membrane_pose(t, membranes[membrane_index - 1], rng, shape, profile)  # type: ignore[arg-type]
            else:
                r = t.radius + 1.0
                lo = np.full(3, r)
                hi = np.asarray(shape, dtype=np.float64) - 1.0 - r
                if np.any(hi < lo):
                    failures += 1
                    continue
                c_zyx = rng.uniform(lo, hi)
                # uniform on SO(3); positional: `random_state` (old scipy) or `rng` (new)
                rot = Rotation.random(None, rng).as_matrix()
            if not _quick_check(t, c_zyx, rot, shape, labels, membrane_mask, blocked):
                failures += 1
                continue
            rp = render_particle(t, c_zyx, Rotation.from_matrix(rot))
            lo_i = np.asarray(rp.corner)
            hi_i = lo_i + np.asarray(rp.mask.shape)
            if np.any(lo_i < 0) or np.any(hi_i > np.asarray(shape)):
                failures += 1
                continue
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo_i, hi_i))
            taken = (np.asarray(labels[box]) > 0) | np.asarray(membrane_mask[box], dtype=bool)
            if blocked is not None:
                taken |= np.asarray(blocked[box], dtype=bool)
            if (taken & rp.mask).any():
                failures += 1
                continue
            failures = 0
            placed += 1
            pid = len(rows) + 1
            target, peak = center_target(rp.mask)
            sig = np.asarray(signal[box])
            signal[box] = sig + rp.density
            lab = np.asarray(labels[box]).copy()
            lab[rp.mask] = pid
            labels[box] = lab
            cen = np.asarray(center[box]).copy()
            cen[rp.mask] = target[rp.mask]
            center[box] = cen
            phi, theta, psi = euler_from_rotation(Rotation.from_matrix(rot))
            z, y, x = (float(v) for v in c_zyx)
            rows.append({
                "id": pid, "class": t.name, "x": x, "y": y, "z": z,
                "x_angst": x * voxel_size, "y_angst": y * voxel_size, "z_angst": z * voxel_size,
                "phi": phi, "theta": theta, "psi": psi,
                "on_membrane": on_membrane, "membrane": membrane_index, "n_voxels": int(rp.mask.sum()),
                "peak_x": int(lo_i[2] + peak[2]), "peak_y": int(lo_i[1] + peak[1]), "peak_z": int(lo_i[0] + peak[0]),
            })
        if placed < wanted and on_membrane:
            log.info("membranes full after %d of %d particles; the rest go to the cytosol", placed, wanted)
        elif placed < wanted:
            log.warning("placed %d of %d particles: no free space left in the volume", len(rows), n_target)
    return rows
