"""Orientation conventions: RELION ZYZ Euler angles <-> rotation matrices and Dynamo ZXZ angles.

RELION's (rot, tilt, psi) are intrinsic ZYZ angles, in degrees, of the rotation
that takes a particle onto the reference; the matrix that places the reference
onto the particle (copick's ``transformation_``) is its inverse.  Dynamo's
(tdrot, tilt, narot) are extrinsic zxz angles of the reference-to-particle
rotation (checked against a published pair: Dynamo (-47.273, 1.1777, -132.3)
is RELION (137.7, 1.1777, 42.727)).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["relion_to_matrices", "matrices_to_relion", "relion_to_dynamo", "dynamo_to_relion"]


def relion_to_matrices(angles: np.ndarray) -> np.ndarray:
    """(n, 3) RELION rot, tilt, psi (degrees) -> (n, 3, 3) reference-to-particle rotation matrices."""
    return Rotation.from_euler("ZYZ", np.asarray(angles, float).reshape(-1, 3), degrees=True).inv().as_matrix()


def matrices_to_relion(mats: np.ndarray) -> np.ndarray:
    """(n, 3, 3) reference-to-particle rotation matrices -> (n, 3) RELION rot, tilt, psi (degrees)."""
    with warnings.catch_warnings():  # tilt 0 or 180: rot and psi are not separable; psi is set to 0
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_matrix(np.asarray(mats, float).reshape(-1, 3, 3)).inv().as_euler("ZYZ", degrees=True)


def dynamo_to_relion(angles: np.ndarray) -> np.ndarray:
    """(n, 3) Dynamo tdrot, tilt, narot -> RELION rot, tilt, psi (degrees)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_euler("zxz", np.asarray(angles, float).reshape(-1, 3), degrees=True).as_euler(
            "ZYZ", degrees=True)


def relion_to_dynamo(angles: np.ndarray) -> np.ndarray:
    """(n, 3) RELION rot, tilt, psi -> Dynamo tdrot, tilt, narot (degrees)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_euler("ZYZ", np.asarray(angles, float).reshape(-1, 3), degrees=True).as_euler(
            "zxz", degrees=True)
