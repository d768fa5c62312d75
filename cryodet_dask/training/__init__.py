"""Training SegNet, CenterNet and the two-head network from (tomogram, label map) pairs.

Patches are sampled around annotated particles from the chunked stores (only
the patch is read), targets are made per patch from the instance labels,
augmented, and fed to Adam with a validation split, learning-rate schedule,
early stopping and a resumable state.

The names are imported on first use: :class:`PoolRanges` comes without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._augment import augment
    from ._from_picks import PicksJob, build_labels, labels_folder, plan_from_copick, plan_from_picks, species_radii
    from ._config import SPECIES_LOSSES, TrainingConfig, TrainResult
    from ._loop import last_checkpoint_path, soft_dice_loss, species_cross_entropy, species_heatmap_target, train
    from ._pool import (POOL_MANIFEST, PoolMember, PoolRanges, draw_conditions, invert_polarity, read_pool,
                        simulate_pool)
    from ._sampler import (TrainingVolume, open_training_volume, particle_table, read_patch, sample_origins,
                           split_region)
    from ._targets import CENTER_TARGETS, center_target, gaussian_center_target, make_center_target, mask_target

__all__ = [
    "CENTER_TARGETS",
    "POOL_MANIFEST",
    "SPECIES_LOSSES",
    "PoolMember",
    "PoolRanges",
    "draw_conditions",
    "invert_polarity",
    "read_pool",
    "simulate_pool",
    "TrainResult",
    "TrainingConfig",
    "TrainingVolume",
    "augment",
    "PicksJob",
    "build_labels",
    "labels_folder",
    "plan_from_copick",
    "plan_from_picks",
    "species_radii",
    "center_target",
    "gaussian_center_target",
    "last_checkpoint_path",
    "make_center_target",
    "mask_target",
    "open_training_volume",
    "particle_table",
    "read_patch",
    "sample_origins",
    "soft_dice_loss",
    "species_cross_entropy",
    "species_heatmap_target",
    "split_region",
    "train",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, {
        "._augment": ("augment",),
        "._from_picks": ("PicksJob", "build_labels", "labels_folder", "plan_from_copick", "plan_from_picks",
                         "species_radii"),
        "._config": ("SPECIES_LOSSES", "TrainingConfig", "TrainResult"),
        "._loop": ("last_checkpoint_path", "soft_dice_loss", "species_cross_entropy", "species_heatmap_target",
                   "train"),
        "._pool": ("POOL_MANIFEST", "PoolMember", "PoolRanges", "draw_conditions", "invert_polarity", "read_pool",
                   "simulate_pool"),
        "._sampler": ("TrainingVolume", "open_training_volume", "particle_table", "read_patch", "sample_origins",
                      "split_region"),
        "._targets": ("CENTER_TARGETS", "center_target", "gaussian_center_target", "make_center_target",
                      "mask_target"),
    })
