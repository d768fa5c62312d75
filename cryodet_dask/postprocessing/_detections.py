"""The result of the post-processing: labels (lazy), per-particle tables and the species."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from ..errors import ParameterError
from ._params import PostprocessParams
from ._species import species_lookup

__all__ = ["Detections"]


@dataclass(frozen=True)
class Detections:
    """Result of :func:`postprocess`.

    Attributes
    ----------
    labels : dask.array.Array of uint32
        Instance label image (z, y, x), same shape and chunks as the input maps;
        0 = background, 1..N.  Lazy: computing it runs the relabel pass.
    centers : ndarray of float64, shape (N, 3)
        Centroid (mean voxel coordinate) of each particle, z, y, x in voxels;
        row ``i`` belongs to label ``i + 1``.
    n_voxels : ndarray of int64, shape (N,)
        Voxel count of each particle.
    scores : ndarray of float64, shape (N,)
        Mean mask probability over the particle's voxels (``mask_score`` in the tables).
    center_scores : ndarray of float64, shape (N,)
        Largest value of the (unthresholded) centre map over the particle's voxels:
        the ranking score (``score`` in the tables, ``rlnAutopickFigureOfMerit`` in
        STAR).  NaN values of the map are ignored.
    peaks : ndarray of int64, shape (K, 3)
        The centres (centre-map maxima after fusion; z, y, x voxel indices) in raster order that can
        take voxels: with ``check_center`` only those on a component of the
        thresholded mask that passed the size filter.
    params : PostprocessParams
        The parameters used.
    species : ndarray of int64, shape (N,), or None
        With a species map: each particle's species index (the highest mean probability over its
        voxels, ties to the lower index; see :mod:`~cryodet_dask.postprocessing._species`); None without one.
    class_scores : ndarray of float64, shape (N,), or None
        The mean probability of that species over the particle's voxels.
    species_names : tuple of str
        The names of the species indices (empty without a species map).
    probabilities : ndarray of float64, shape (N,), or None
        Each pick's probability of being a particle, from the network's score calibration
        (:mod:`cryodet_dask.calibration`); None when the network has none.
    """

    labels: da.Array
    centers: np.ndarray
    n_voxels: np.ndarray
    scores: np.ndarray
    peaks: np.ndarray
    params: PostprocessParams
    stats: dict[str, Any] = field(default_factory=dict)
    center_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    species: np.ndarray | None = None
    class_scores: np.ndarray | None = None
    species_names: tuple[str, ...] = ()
    probabilities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.centers)

    @property
    def n_particles(self) -> int:
        return len(self.centers)

    def to_dataframe(self, voxel_size: float | Sequence[float] | None = None) -> Any:
        """Particle table: ``id, x, y, z`` (voxels), ``x_angst, y_angst, z_angst``, ``n_voxels, score, mask_score``,
        with a calibrated network ``probability``, and with species ``class`` (the species name) and ``class_score``.

        ``score`` is the centre-map peak over the particle (:attr:`center_scores`, the
        ranking score), ``mask_score`` the mean mask probability (:attr:`scores`).
        ``voxel_size`` is in Å, one value or (z, y, x); Å columns are NaN when it is unknown.
        """
        import pandas as pd

        vs = _voxel_size_zyx(voxel_size)
        c = self.centers.reshape(-1, 3)
        table = pd.DataFrame({
            "id": np.arange(1, len(c) + 1, dtype=np.int64),
            "x": c[:, 2], "y": c[:, 1], "z": c[:, 0],
            "x_angst": c[:, 2] * vs[2], "y_angst": c[:, 1] * vs[1], "z_angst": c[:, 0] * vs[0],
            "n_voxels": self.n_voxels.astype(np.int64),
            "score": self.center_scores.astype(np.float64),
            "mask_score": self.scores.astype(np.float64),
        })
        if self.probabilities is not None:
            table["probability"] = np.asarray(self.probabilities, dtype=np.float64)
        if self.species is not None:
            names = np.asarray(self.species_names, dtype=object)
            table["class"] = names[self.species] if len(self.species) else np.zeros(0, dtype=object)
            table["class_score"] = np.asarray(self.class_scores, dtype=np.float64)
        return table

    def species_labels(self) -> da.Array:
        """Lazy species label image (uint8, same chunks as ``labels``): 0 background, ``k + 1`` for species ``k``.

        Raises :class:`ParameterError` without a species map.
        """
        if self.species is None:
            raise ParameterError("these detections have no species (the network is species-agnostic)")
        lut = species_lookup(self.species)
        out: da.Array = da.map_blocks(np.take, lut, self.labels, dtype=np.uint8)
        return out


def _voxel_size_zyx(voxel_size: float | Sequence[float] | None) -> np.ndarray:
    if voxel_size is None:
        return np.full(3, np.nan)
    v = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3:
        raise ParameterError(f"voxel size must be one value or three (z, y, x), got {voxel_size!r}")
    return np.where(v > 0, v, np.nan)
