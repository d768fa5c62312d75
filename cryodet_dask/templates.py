"""Particle templates: loading, resampling, recentring, rotating, thresholding.

A template is a density map of one macromolecule (density >= 0, background
0).  For the simulator it is brought to the simulation's voxel size, scaled so
that the median density inside its mask is 1 (every species then has the
same protein density, whatever the source map's units), recentred so that
the centroid of its mask lies exactly on the centre of its (cubic, odd-sided)
box, and cropped to the smallest such box that holds it in any orientation.

Rotations follow the RELION convention for ZYZ Euler angles ``(phi, theta,
psi)`` = (rlnAngleRot, rlnAngleTilt, rlnAnglePsi) in degrees: the angles
rotate the particle onto the reference, so the particle in the tomogram is
the template rotated by ``Rotation.from_euler("ZYZ", (phi, theta, psi),
degrees=True).inv()`` acting on (x, y, z) coordinates about its centre.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mrcfile
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .errors import InputError, ParameterError, TomogramFormatError

__all__ = [
    "SHIPPED_TEMPLATES",
    "Template",
    "RenderedParticle",
    "load_template",
    "prepare_template",
    "template_path",
    "euler_from_rotation",
    "rotation_from_euler",
    "render_particle",
    "largest_component",
]

#: Templates shipped in ``cryodet_dask/data/templates`` (name -> description).
SHIPPED_TEMPLATES: dict[str, str] = {
    "4v4r": "70S ribosome",
    "4cr2": "26S proteasome",
    "3j9i": "20S proteasome",
    "1bxn": "rubisco",
    "7n4y": "7N4Y",
    "6pxm": "6PXM",
}

#: Fraction of the template's maximum below which density counts as background
#: when cropping the box (the mask threshold is higher, see ``threshold``).
_SUPPORT_FRACTION = 0.02

# (x, y, z) <-> (z, y, x): reverses the axes of a 3x3 matrix.
_REV = np.eye(3)[::-1]


@dataclass(frozen=True, eq=False)
class Template:
    """A particle template ready to be rotated and pasted.

    Attributes
    ----------
    name : str
        Class name written to the particle table (file stem).
    density : numpy.ndarray
        Cubic float32 density box (z, y, x), odd side, median mask density 1;
        the mask centroid is at the box centre ``(side - 1) / 2``.
    threshold : float
        Absolute density threshold of the particle mask (``fraction`` times
        the maximum density).
    points : numpy.ndarray
        (n, 3) float64 (x, y, z) offsets of the mask voxels from the centre,
        in voxels (used to find how far a rotated particle reaches).
    core : numpy.ndarray
        (m, 3) (x, y, z) offsets of the mask voxels at least 2.5 voxels inside
        the mask (a cheap, conservative first test for overlaps).
    n_voxels : int
        Voxels in the mask before rotation.
    source : str
        File the template came from.
    """

    name: str
    density: np.ndarray
    threshold: float
    points: np.ndarray
    core: np.ndarray
    n_voxels: int
    source: str

    @property
    def side(self) -> int:
        return int(self.density.shape[0])

    @property
    def radius(self) -> float:
        """Largest distance of a mask voxel from the centre, in voxels."""
        return float(np.sqrt((self.points**2).sum(axis=1).max())) if len(self.points) else 0.0


def template_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a template name (shipped with the package) or a path to an MRC file.

    Raises
    ------
    InputError
        Neither a shipped template nor an existing file.
    """
    text = str(name_or_path)
    stem = text.lower().removesuffix(".mrc")
    if stem in SHIPPED_TEMPLATES and not Path(text).exists():
        ref = resources.files("cryodet_dask") / "data" / "templates" / f"{stem}.mrc"
        return Path(str(ref))
    path = Path(text)
    if not path.is_file():
        shipped = ", ".join(SHIPPED_TEMPLATES)
        raise InputError(f"template {text!r}: not a file and not one of the shipped templates ({shipped})")
    return path


def load_template(name_or_path: str | os.PathLike[str]) -> tuple[np.ndarray, float, str]:
    """Read a template map.

    Returns
    -------
    density : numpy.ndarray
        float32 (z, y, x) density.
    voxel_size : float
        Voxel size in Å from the header (10 Å assumed when the header has none).
    name : str
        The template's class name (file stem).
    """
    path = template_path(name_or_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32).copy()
                vs = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError) as exc:
        raise TomogramFormatError(f"template {path}: not a readable MRC file ({exc})") from exc
    if data.ndim != 3 or min(data.shape) < 3:
        raise TomogramFormatError(f"template {path}: needs a 3D density map, got shape {data.shape}")
    if not np.isfinite(data).all() or not data.max() > 0:
        raise TomogramFormatError(f"template {path}: density must be finite with a positive maximum")
    return data, (vs if vs > 0 else 10.0), path.stem


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest face-connected component of a boolean mask."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def prepare_template(
    density: np.ndarray,
    *,
    source_voxel_size: float,
    voxel_size: float,
    fraction: float = 0.1,
    name: str = "template",
    source: str = "",
) -> Template:
    """Resample, normalise, recentre and crop a template density.

    Parameters
    ----------
    density : numpy.ndarray
        (z, y, x) density map, background 0.
    source_voxel_size : float
        Voxel size of ``density`` in Å.
    voxel_size : float
        Voxel size of the simulation in Å.
    fraction : float
        Mask threshold as a fraction of the maximum density.
    name, source : str
        Class name and provenance.

    Returns
    -------
    Template
    """
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"template threshold fraction must be in (0, 1), got {fraction}")
    d = np.clip(np.asarray(density, dtype=np.float32), 0.0, None)
    zoom = source_voxel_size / voxel_size
    if abs(zoom - 1.0) > 1e-6:
        d = ndimage.zoom(d, zoom, order=1, prefilter=False).astype(np.float32)
        d = np.clip(d, 0.0, None)
    dmax = float(d.max())
    if not dmax > 0:
        raise ParameterError(f"template {name}: empty after resampling to {voxel_size} Å voxels")
    mask = largest_component(d > fraction * dmax)
    if mask.sum() < 1:
        raise ParameterError(f"template {name}: empty mask")
    d = d / float(np.median(d[mask]))
    dmax = float(d.max())
    # Recentre on the mask centroid (sub-voxel shift) and crop to a cube that
    # holds the support in any orientation.
    centroid = np.array(ndimage.center_of_mass(mask))
    support = np.argwhere(d > _SUPPORT_FRACTION * dmax)
    reach = float(np.sqrt(((support - centroid) ** 2).sum(axis=1)).max())
    half = int(np.ceil(reach)) + 1
    side = 2 * half + 1
    # output index o -> input index o - half + centroid
    box = ndimage.affine_transform(
        d, np.eye(3), offset=centroid - half, output_shape=(side,) * 3, order=1, mode="constant", cval=0.0
    ).astype(np.float32)
    box[box < _SUPPORT_FRACTION * dmax] = 0.0
    threshold = fraction * dmax
    m = largest_component(box > threshold)
    pts_zyx = np.argwhere(m).astype(np.float64) - half
    deep = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1, 1:-1] >= 2.5
    core_zyx = np.argwhere(deep).astype(np.float64) - half
    return Template(
        name=name,
        density=box,
        threshold=float(threshold),
        points=pts_zyx[:, ::-1].copy(),
        core=core_zyx[:, ::-1].copy(),
        n_voxels=int(m.sum()),
        source=source,
    )


def rotation_from_euler(phi: float, theta: float, psi: float) -> Rotation:
    """Template -> particle rotation for RELION ZYZ Euler angles in degrees (acts on x, y, z)."""
    return Rotation.from_euler("ZYZ", [phi, theta, psi], degrees=True).inv()


def euler_from_rotation(rotation: Rotation) -> tuple[float, float, float]:
    """RELION ZYZ Euler angles ``(phi, theta, psi)`` in degrees of a template -> particle rotation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gimbal lock: scipy sets the third angle to 0 and warns
        phi, theta, psi = rotation.inv().as_euler("ZYZ", degrees=True)
    return float(phi), float(theta), float(psi)


@dataclass(frozen=True, eq=False)
class RenderedParticle:
    """A rotated particle on the voxel grid.

    Attributes
    ----------
    corner : tuple of int
        (z, y, x) index of the box's first voxel in the volume.
    density : numpy.ndarray
        float32 density inside the mask, 0 outside.
    mask : numpy.ndarray
        bool mask, one face-connected piece.
    """

    corner: tuple[int, int, int]
    density: np.ndarray
    mask: np.ndarray


def render_particle(template: Template, center_zyx: np.ndarray, rotation: Rotation) -> RenderedParticle:
    """Rotate a template about its centre and place that centre at ``center_zyx``.

    Parameters
    ----------
    template : Template
    center_zyx : array of 3 floats
        Particle centre in voxels (z, y, x); fractional positions are rendered
        by interpolation.
    rotation : scipy.spatial.transform.Rotation
        Template -> particle rotation acting on (x, y, z).

    Returns
    -------
    RenderedParticle
        Density and mask cropped to the mask's bounding box.

    Notes
    -----
    Trilinear interpolation; the mask is the rotated density thresholded at
    ``template.threshold``, reduced to its largest face-connected component,
    and the density is set to 0 outside it so that two particles whose masks
    do not overlap share no density.
    """
    center = np.asarray(center_zyx, dtype=np.float64)
    half = template.side // 2
    side = template.side + 1
    corner = np.floor(center).astype(np.int64) - half
    c_out = center - corner  # particle centre inside the output box
    m = _REV @ rotation.inv().as_matrix() @ _REV  # output (zyx) -> template (zyx)
    offset = np.full(3, float(half)) - m @ c_out
    dens = ndimage.affine_transform(
        template.density, m, offset=offset, output_shape=(side,) * 3, order=1, mode="constant", cval=0.0
    )
    mask = dens > template.threshold
    if not mask.any():  # pragma: no cover - a template always has voxels above its threshold
        raise ParameterError(f"template {template.name}: rotated mask is empty")
    mask = largest_component(mask)
    idx = np.nonzero(mask)
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask = mask[sl]
    dens = np.where(mask, dens[sl], 0.0).astype(np.float32)
    return RenderedParticle(
        corner=tuple(int(corner[i] + lo[i]) for i in range(3)),  # type: ignore[arg-type]
        density=dens,
        mask=mask,
    )
