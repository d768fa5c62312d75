"""How to train, and what training gave: frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ._targets import CENTER_TARGETS

__all__ = ["TrainingConfig", "TrainResult", "SPECIES_LOSSES"]

#: The species cross-entropy's averaging (:attr:`TrainingConfig.species_loss`; ``train --species-loss``).
SPECIES_LOSSES = ("voxel", "balanced")


@dataclass(frozen=True)
class TrainingConfig:
    """How to train (the network's architecture is a :class:`~cryodet_dask.models.UNetConfig`).

    Parameters
    ----------
    patch_size : tuple of int
        Training patch (z, y, x) in voxels; multiples of the network's pool factor.
    batch_size : int
        Patches per optimisation step.
    epochs : int
        Maximum number of epochs.
    steps_per_epoch : int
        Optimisation steps per epoch.
    validation_fraction : float
        Fraction of each training tomogram (last part of its longest in-plane
        axis) held out for validation when no validation tomograms are given.
    validation_batches : int
        Batches in the fixed validation set.
    learning_rate : float
        Initial Adam learning rate.
    lr_factor, lr_patience : float, int
        Multiply the learning rate by ``lr_factor`` when the validation loss
        has not improved for ``lr_patience`` epochs.
    patience : int
        Stop early after this many epochs without improvement.
    min_delta : float
        Smallest decrease of the validation loss that counts as improvement.
    jitter : int
        Patch centres are particle centres ± ``jitter`` voxels (uniform).
    background_fraction : float
        Fraction of patches placed at random positions instead of on particles.
    rotate, flip : bool
        90° rotations about the tilt axis (y); flips of each axis.
    intensity : float
        Intensity jitter amplitude (normalized units), see :func:`augment`.
    center_weight : float
        Weight of the centre-map MSE relative to the mask soft-Dice loss.
    center_target : {"distance", "gaussian"}
        What the centre head learns, per particle: ``"distance"`` (the seed's,
        :func:`~cryodet_dask.training.center_target`: normalized distance to
        the particle's boundary, 1 at its centre, 0 on its boundary; a
        precomputed centre target given to :func:`train` is used as is) or
        ``"gaussian"`` (:func:`~cryodet_dask.training.gaussian_center_target`:
        ``exp(-|x - c|^2 / (2 sigma^2))`` around the centroid ``c``, ``sigma``
        half the particle's equivalent radius; always computed from the labels,
        precomputed centre targets are ignored).  The centre map's value scale
        differs between the two: tune the post-processing for the network.
    invert : float
        Probability of negating a training patch (both contrast polarities).
    species_loss : {"voxel", "balanced"}
        The species cross-entropy of a multi-species network (``softmax`` head), on particle voxels:
        ``"voxel"`` averages it over the batch's particle voxels, so a species weighs by its voxels
        (large and common species most); ``"balanced"`` averages it per species present in the batch,
        then over those species, so each species present weighs the same.
    lr_schedule : {"plateau", "cosine"}
        ``plateau``: multiply the learning rate by ``lr_factor`` when validation
        stalls; ``cosine``: decay it per step along a half cosine from
        ``learning_rate`` to 1 % of it over ``epochs * steps_per_epoch`` steps
        (a fixed budget; validation then only chooses the best epoch).
    seed : int
        Random seed (patches, augmentation, initial weights).
    amp : bool
        Mixed precision (float16 autocast + gradient scaling) on CUDA devices.
    max_minutes : float, optional
        Stop after the epoch during which this much wall-clock time was spent.
    snapshot_every : int
        Also keep the weights after every this many epochs as
        ``OUT.epochNNN.pt`` (for learning curves); 0 = never.
    freeze_backbone : bool
        Train only the species branch (:attr:`~cryodet_dask.models.UNetConfig.species_convs`) of a
        multi-species network: the backbone and the mask and centre heads keep the start weights
        (``init``), so the species-agnostic picks are exactly the start network's.
    """

    patch_size: tuple[int, int, int] = (56, 56, 56)
    batch_size: int = 4
    epochs: int = 50
    steps_per_epoch: int = 100
    validation_fraction: float = 0.2
    validation_batches: int = 8
    learning_rate: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 2
    patience: int = 6
    min_delta: float = 1e-4
    jitter: int = 5
    background_fraction: float = 0.1
    rotate: bool = True
    flip: bool = True
    intensity: float = 0.1
    center_weight: float = 1.0
    center_target: str = "distance"
    invert: float = 0.5
    species_loss: str = "voxel"
    lr_schedule: str = "plateau"
    seed: int = 0
    amp: bool = True
    max_minutes: float | None = None
    snapshot_every: int = 0
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        ps: tuple[int, ...] = self.patch_size
        ps = (int(ps),) * 3 if isinstance(ps, (int, np.integer)) else tuple(int(v) for v in ps)
        if len(ps) == 1:
            ps = ps * 3
        object.__setattr__(self, "patch_size", ps)
        if len(ps) != 3 or min(ps) < 1:
            raise ParameterError(f"patch_size must be one or three positive integers, got {self.patch_size}")
        for name in ("batch_size", "epochs", "steps_per_epoch", "validation_batches"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.validation_fraction < 1:
            raise ParameterError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not self.learning_rate > 0:
            raise ParameterError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.background_fraction <= 1:
            raise ParameterError(f"background_fraction must be in [0, 1], got {self.background_fraction}")
        if not 0 <= self.invert <= 1:
            raise ParameterError(f"invert must be a probability in [0, 1], got {self.invert}")
        if self.center_target not in CENTER_TARGETS:
            raise ParameterError(f"center_target must be one of {list(CENTER_TARGETS)}, got {self.center_target!r}")
        if self.species_loss not in SPECIES_LOSSES:
            raise ParameterError(f"species_loss must be one of {list(SPECIES_LOSSES)}, got {self.species_loss!r}")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ParameterError(f"lr_schedule must be 'plateau' or 'cosine', got {self.lr_schedule!r}")
        if self.jitter < 0 or self.patience < 1 or self.lr_patience < 0:
            raise ParameterError("jitter must be >= 0, patience >= 1 and lr_patience >= 0")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    checkpoint : Path
        Best checkpoint (lowest validation loss).
    last : Path
        Resumable state after the last epoch.
    best_validation_loss : float
    epochs : int
        Epochs completed in total (including resumed ones).
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``validation_loss``, ``lr``, ``seconds``.
    stopped_early : bool
    """

    checkpoint: Path
    last: Path
    best_validation_loss: float
    epochs: int
    history: list[dict[str, float]]
    stopped_early: bool
