"""The training loop: patches → augmentation → loss → Adam, with validation, early stopping and resume."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import CheckpointError, ParameterError
from ..models import UNet3D, UNetConfig, check_widening, read_checkpoint, save, widen
from ..species import SpeciesTable
from ._augment import augment
from ._config import TrainingConfig, TrainResult
from ._resume import (LEARNING_SETTINGS, RESUME_RECORD_FORMAT, learning_settings, legacy_differences, record_differences,
                      species_identity, species_to_train, volume_identity, with_new_species)
from ._sampler import Region, TrainingVolume, open_training_volume, read_patch, sample_origins, split_region

__all__ = ["TrainingConfig", "TrainResult", "train", "soft_dice_loss", "species_heatmap_target", "species_cross_entropy",
           "last_checkpoint_path", "LEARNING_SETTINGS"]

log = logging.getLogger("cryodet_dask")


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - (2 Σ p t + eps) / (Σ p + Σ t + eps)`` over the whole batch (the seed's mask loss)."""
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def species_heatmap_target(code: torch.Tensor, center: torch.Tensor | None, k: int) -> torch.Tensor:
    """The ``heatmap`` species head's target, (B, K, z, y, x) from species codes (B, z, y, x).

    Channel ``i`` is ``(1 + c) / 2`` on the voxels of species ``i`` (code ``i + 1``), with ``c`` the
    centre target (1 without one), so a particle's heatmap is 1/2 on its boundary and 1 at its centre;
    0 on every other voxel.
    """
    c = code.round().long()
    onehot = torch.stack([(c == s + 1) for s in range(k)], dim=1).to(code.dtype)
    level = torch.ones_like(code) if center is None else 0.5 * (1.0 + center)
    return onehot * level[:, None]


def species_cross_entropy(logits: torch.Tensor, code: torch.Tensor, balanced: bool) -> torch.Tensor:
    """Cross-entropy of species logits (B, K, z, y, x) against species codes (B, z, y, x): 0..K-1 on
    particle voxels, -1 elsewhere (ignored).  ``balanced``: the mean over the species present of each
    species' mean over its voxels (class weights ``1 / count``), else the mean over all particle voxels."""
    weight = None
    if balanced:  # an absent species has no voxels, so its weight is never used
        weight = 1.0 / torch.bincount(code[code >= 0], minlength=logits.shape[1]).clamp(min=1).to(logits.dtype)
    return F.cross_entropy(logits, code, weight=weight, ignore_index=-1)


def _loss(model: UNet3D, logits: torch.Tensor, target: torch.Tensor, center_weight: float,
          species_loss: str = "voxel") -> torch.Tensor:
    total = logits.new_zeros(())
    for i, h in enumerate(model.config.heads):  # target channel i is head i; its logits start at head_index
        j = model.head_index(h)
        if h == "mask":
            total = total + soft_dice_loss(torch.sigmoid(logits[:, j]), target[:, i])
        elif h == "species" and model.config.species_head == "heatmap":
            # one centre heatmap per species, regressed (MSE of the pre-ReLU output) on every voxel
            k = len(model.config.species)
            heat = species_heatmap_target(target[:, i], target[:, model.config.heads.index("center")]
                                          if "center" in model.config.heads else None, k)
            total = total + center_weight * k * F.mse_loss(logits[:, j : j + k], heat)
        elif h == "species":
            # cross-entropy over the species, on particle voxels only (code k + 1; background 0 is ignored)
            k = len(model.config.species)
            code = target[:, i].round().long() - 1
            if bool((code >= 0).any()):
                total = total + species_cross_entropy(logits[:, j : j + k], code, species_loss == "balanced")
        else:
            # MSE on the pre-activation: the ReLU is applied at inference only, so a unit whose output went
            # negative still gets a gradient (with MSE on relu(logits) the centre head can die at 0).
            total = total + center_weight * F.mse_loss(logits[:, j], target[:, i])
    return total


def last_checkpoint_path(output: str | os.PathLike[str]) -> Path:
    """Where :func:`train` keeps its resumable state for the checkpoint ``output``."""
    output = Path(output)
    return output.with_name(output.stem + ".last" + (output.suffix or ".pt"))


def _as_list(obj: Any) -> list[Any]:
    if obj is None:
        return []
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return [obj]


def _batches(vols: list[TrainingVolume], regions: list[Any], n: int, cfg: TrainingConfig, heads: tuple[str, ...],
             rng: np.random.Generator, aug: bool) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for _ in range(n):
        k = int(rng.integers(len(vols)))
        start = sample_origins(vols[k], regions[k], cfg.patch_size, 1, rng, cfg.jitter, cfg.background_fraction)[0]
        x, y = read_patch(vols[k], start, cfg.patch_size, heads, center_target=cfg.center_target)
        if aug:
            x, y = augment(x, y, rng, rotate=cfg.rotate, flip=cfg.flip, intensity=cfg.intensity,
                           invert=cfg.invert)
        xs.append(x)
        ys.append(y)
    return np.stack(xs)[:, None], np.stack(ys)


def train(
    tomograms: Any,
    labels: Any,
    output: str | os.PathLike[str],
    *,
    centers: Any = None,
    validation: Sequence[tuple[Any, ...]] | None = None,
    model: UNetConfig | None = None,
    config: TrainingConfig | None = None,
    heads: Sequence[str] | None = None,
    channels: Sequence[int] | None = None,
    convs_per_level: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
    threads: int | None = None,
    command: str | None = None,
    init: str | os.PathLike[str] | None = None,
    provenance: dict[str, Any] | None = None,
    species: SpeciesTable | Sequence[str] | None = None,
    particle_species: Any = None,
    replace_species: bool = False,
    species_convs: int | None = None,
    species_head: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a SegNet, CenterNet or two-head network on (tomogram, label map) pairs.

    Parameters
    ----------
    tomograms : path-like or array, or a list of them
        Training tomograms (MRC or Zarr paths, or arrays), (z, y, x).
    labels : path-like or array, or a list of them
        Instance label maps of the same shapes (0 = background, one id per
        particle), e.g. the simulator's ``labels.mrc`` or ``cryodet-dask labels``.
    output : path-like
        Checkpoint file to write (the best epoch); the resumable state goes
        next to it (:func:`last_checkpoint_path`).
    centers : path-like or array, or a list of them, optional
        Precomputed centre targets (e.g. the simulator's ``center.mrc``);
        default: computed from ``labels`` per particle.  Used with
        ``center_target="distance"`` only (ignored for ``"gaussian"``).
    validation : list of (tomogram, labels) or (tomogram, labels, particle species), optional
        Validation pairs; default: the last ``validation_fraction`` of each
        training tomogram (along y or x) is held out.
    species : SpeciesTable or sequence of str, optional
        Train a multi-species network on these species (two or more): the
        ``species`` head is added, and every particle needs its species.
        Default: the ``init`` checkpoint's species, else species-agnostic.
    particle_species : mapping, path-like or a list of them, optional
        Per training tomogram, the species of each particle id of its label map:
        a ``{id: name}`` mapping or a CSV with ``id`` and ``class`` columns (the
        simulator's ``particles.csv``).
    replace_species : bool
        With ``init`` of other species: a new species branch and output layer (the
        backbone and the mask and centre outputs keep their weights); recorded.
    species_convs : int, optional
        3³ convolutions of the species branch (default: the model's, 2).
    species_head : {"softmax", "heatmap"}, optional
        How the species channels are learnt (:attr:`~cryodet_dask.models.UNetConfig.species_head`;
        default: the model's, ``"softmax"``).  Changing it needs a new species branch
        (``replace_species``).
    model : UNetConfig, optional
        Architecture (default: the seed's, with ``heads``/``channels``/
        ``convs_per_level`` applied if given).
    config : TrainingConfig, optional
        Training settings; keyword ``overrides`` replace single fields
        (e.g. ``epochs=5``).
    heads : sequence of str, optional
        ``("mask",)`` (SegNet, default), ``("center",)`` (CenterNet) or
        ``("mask", "center")`` (shared two-head network).
    device : str
        ``"cpu"`` or a CUDA device (``"cuda"``, ``"cuda:1"``); mixed precision
        is used on CUDA when ``config.amp``.
    resume : bool
        Continue from the resumable state next to ``output`` if it exists.
    progress : bool
        Progress bar with the running loss.
    threads : int, optional
        CPU threads for torch.
    command : str, optional
        The command line that started training, stored in the checkpoint.
    init : path-like, optional
        Start from the weights of this checkpoint (fine-tuning); its
        architecture (and voxel size and centre smoothing) is used, and must
        have the requested ``heads``.  Its path and SHA-256 are recorded.
        With ``channels`` wider than the checkpoint's (as many levels, none
        narrower), training starts from the same function in the wider
        network (:func:`cryodet_dask.models.widen`, seeded by the training
        seed), and the checkpoint records ``widened_from``.
    provenance : dict, optional
        More to record under ``training`` in the checkpoint (e.g. the
        training pools and their imaging-condition ranges).

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    cfg = config or TrainingConfig()
    if overrides:
        known = {f.name for f in fields(TrainingConfig)}
        unknown = set(overrides) - known
        if unknown:
            raise ParameterError(f"unknown training parameter(s): {sorted(unknown)}")
        cfg = TrainingConfig(**{**asdict(cfg), **overrides})
    init_state = None
    init_record: dict[str, Any] | None = None
    widen_to: tuple[int, ...] | None = None
    if init is not None:  # a shipped model's name (-m twohead, ...): its checkpoint file
        from ..prediction import one_checkpoint

        init = one_checkpoint(init)
    if init is not None:
        import hashlib

        init_state = read_checkpoint(init)
        init_cfg = UNetConfig.from_dict(init_state["config"])
        if heads is not None and tuple(heads) != tuple(init_cfg.heads):
            raise ParameterError(f"{init}: holds a network with heads {list(init_cfg.heads)}, not {list(heads)}")
        if model is not None or convs_per_level is not None:
            raise ParameterError("with init weights the architecture is the checkpoint's: give no model or "
                                 "convs_per_level (only wider channels)")
        # a pick probability was fitted to the start network's picks, not to the network trained here
        model = init_cfg.replace(training={}, score_calibration=None)
        init_record = {"path": str(Path(init).resolve()),
                       "sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest(),
                       "training_command": (init_cfg.training or {}).get("command")}
        if channels is not None and tuple(int(c) for c in channels) != init_cfg.channels:
            try:
                widen_to = check_widening(init_cfg.channels, channels)
            except ParameterError as exc:
                raise ParameterError(f"{init}: {exc}") from None
            init_record["widened_from"] = list(init_cfg.channels)
            model = model.replace(channels=list(widen_to))
        channels = None
    mcfg = model or UNetConfig()
    changes: dict[str, Any] = {}
    if heads is not None:
        changes["heads"] = list(heads)
    table = species_to_train(species, mcfg.species, init, replace_species)
    if table != mcfg.species:
        base = [h for h in (changes.get("heads") or mcfg.heads) if h != "species"]
        changes["heads"] = base + (["species"] if len(table) > 1 else [])
        changes["species"] = table
        if init_record is not None:
            init_record["species_replaced_from"] = list(mcfg.species.names)
    if species_convs is not None:
        changes["species_convs"] = int(species_convs)
    if species_head is not None:
        changes["species_head"] = str(species_head)
    if channels is not None:
        changes["channels"] = list(channels)
        if convs_per_level is None and len(channels) != len(mcfg.convs_per_level):
            changes["convs_per_level"] = [2] * (len(channels) - 1) + [4]
    if convs_per_level is not None:
        changes["convs_per_level"] = list(convs_per_level)
    if changes:
        mcfg = mcfg.replace(**changes)
    if any(s % mcfg.pool_factor for s in cfg.patch_size):
        raise ParameterError(f"patch_size {cfg.patch_size} must be multiples of {mcfg.pool_factor} for this network")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r} requested but CUDA is not available")
    if threads:
        torch.set_num_threads(int(threads))
    output = Path(output)
    last_path = last_checkpoint_path(output)

    tomo_list, lab_list = _as_list(tomograms), _as_list(labels)
    cen_list = _as_list(centers) or [None] * len(tomo_list)
    if not tomo_list or len(tomo_list) != len(lab_list) or len(cen_list) != len(tomo_list):
        raise ParameterError(
            f"give one label map (and centre target, if any) per tomogram: {len(tomo_list)} tomograms, "
            f"{len(lab_list)} label maps")
    if cfg.center_target != "distance" and any(c is not None for c in cen_list):
        log.info("centre target %r: the precomputed centre targets are not used (computed from the labels)",
                 cfg.center_target)
        cen_list = [None] * len(tomo_list)
    multi = mcfg.species if len(mcfg.species) > 1 else None
    sp_list = _as_list(particle_species) if not isinstance(particle_species, Mapping) else [particle_species]
    if multi is not None and len(sp_list) != len(tomo_list):
        raise ParameterError(f"a multi-species training needs the species of the particles of every tomogram: "
                             f"{len(sp_list)} particle species tables for {len(tomo_list)} tomograms")
    sp_list = sp_list if multi is not None else [None] * len(tomo_list)
    vols = [open_training_volume(t, lab, c, species_of=s_of, species=multi)
            for t, lab, c, s_of in zip(tomo_list, lab_list, cen_list, sp_list)]
    if validation:
        if multi is not None and any(len(v) != 3 for v in validation):
            raise ParameterError("a multi-species training needs (tomogram, labels, particle species) "
                                 "validation triples")
        val_vols = [open_training_volume(v[0], v[1], species_of=v[2] if len(v) > 2 else None, species=multi)
                    for v in validation]
        validation = [(v[0], v[1]) for v in validation]
        train_regions = [split_region(v.shape, 0.0, 1)[0] for v in vols]
        val_regions = [split_region(v.shape, 0.0, 1)[0] for v in val_vols]
    else:
        if cfg.validation_fraction <= 0:
            raise ParameterError("training needs validation data: give validation tomograms or a "
                                 "validation_fraction > 0")
        splits = [split_region(v.shape, cfg.validation_fraction, max(cfg.patch_size[1:])) for v in vols]
        train_regions = [s[0] for s in splits]
        # validation_fraction > 0 (checked above): split_region returns a validation region for each
        val_vols, val_regions = vols, cast("list[Region]", [s[1] for s in splits])
    vsizes = {v.voxel_size for v in vols if v.voxel_size}
    if len(vsizes) > 1:
        tied = (f"the network records {mcfg.voxel_size:g} Å" if mcfg.voxel_size
                else "the network will be tied to none of them")
        log.warning("training tomograms have %d different voxel sizes, %.4g to %.4g Å; %s", len(vsizes),
                    min(vsizes), max(vsizes), tied)
    if mcfg.voxel_size is None and len(vsizes) == 1:
        mcfg = mcfg.replace(voxel_size=float(next(iter(vsizes))))

    torch.manual_seed(cfg.seed)
    net = UNet3D(mcfg).to(dev)
    if init_state is not None:
        start = UNet3D(init_cfg)
        try:
            start.load_state_dict(init_state["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{init}: weights do not fit the network ({exc})") from None
        if widen_to is not None:  # the same function in the wider network (Net2WiderNet)
            start = widen(start, widen_to, seed=cfg.seed)
        net.load_state_dict(with_new_species(start, net))
    if cfg.species_loss != "voxel" and ("species" not in mcfg.heads or mcfg.species_head != "softmax"):
        raise ParameterError(f"species_loss={cfg.species_loss!r} weighs a species cross-entropy: train a "
                             "multi-species network with the softmax species head")
    if cfg.freeze_backbone:  # only the species branch learns: the mask and centre outputs stay the init's
        if "species" not in mcfg.heads:
            raise ParameterError("freeze_backbone trains the species branch alone: train a multi-species network")
        for pname, param in net.named_parameters():
            param.requires_grad_(pname.startswith("species_"))
    opt = torch.optim.Adam([q for q in net.parameters() if q.requires_grad], lr=cfg.learning_rate)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    step_sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if cfg.lr_schedule == "cosine":
        step_sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps)))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor,
                                                       patience=cfg.lr_patience)
    use_amp = bool(cfg.amp and dev.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    description = {
        "data": [{"tomogram": v.name, "shape": list(v.shape), "particles": int(v.particles["ids"].size),
                  "voxel_size": v.voxel_size} for v in vols],
        "validation": ("held-out tomograms: " + ", ".join(v.name for v in val_vols)) if validation else
        f"last {cfg.validation_fraction:g} of each training tomogram along its longest in-plane axis",
        "losses": "soft-Dice of sigmoid (mask) + MSE of the pre-ReLU output (center)"
                  + ("" if "species" not in mcfg.heads else " + MSE of the pre-ReLU species heatmaps"
                     if mcfg.species_head == "heatmap" else " + cross-entropy of the species on particle voxels"
                     + (", each species present weighing the same" if cfg.species_loss == "balanced" else "")),
        "center_target": cfg.center_target if "center" in mcfg.heads else None,
        "optimizer": "Adam",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "command": command,
        "cryodet_dask_version": __version__,
        "torch_version": torch.__version__,
        "init": init_record,
        **(provenance or {}),
    }

    # what this run learns from, kept in the resumable state: a resume with other data or settings is refused
    train_ids = [volume_identity(v, t, lab, c) for v, t, lab, c in zip(vols, tomo_list, lab_list, cen_list)]
    record: dict[str, Any] = {
        "format": RESUME_RECORD_FORMAT,
        "training_data": train_ids,
        "validation_data": [volume_identity(v, t, lab) for v, (t, lab) in zip(val_vols, validation)]
        if validation else None,
        "settings": learning_settings(cfg, mcfg.heads, not validation),
        "network": {"channels": list(mcfg.channels), "convs_per_level": list(mcfg.convs_per_level),
                    "heads": list(mcfg.heads)},
        "species": list(mcfg.species.names) if len(mcfg.species) > 1 else None,
        "particle_species": [species_identity(s_of) for s_of in sp_list] if multi is not None else None,
        "init": init_record["sha256"] if init_record else None,
    }
    start_epoch, best, bad, history, finished = 0, math.inf, 0, [], False
    if resume and last_path.exists():
        state = read_checkpoint(last_path)
        stored = UNetConfig.from_dict(state["config"])
        if (stored.channels, stored.convs_per_level, stored.heads) != (mcfg.channels, mcfg.convs_per_level, mcfg.heads):
            raise CheckpointError(
                f"{last_path}: a training run of another network (channels {stored.channels}, heads "
                f"{stored.heads}) is there; delete it or train without resuming")
        # runs from before the option trained the distance target
        stored_target = ((stored.training or {}).get("settings") or {}).get("center_target", "distance")
        if "center" in mcfg.heads and stored_target != cfg.center_target:
            raise CheckpointError(
                f"{last_path}: a training run with the {stored_target!r} centre target is there, not "
                f"{cfg.center_target!r}; train it with center_target={stored_target!r}, delete it or train "
                "without resuming")
        stored_record = state.get("resume_record")
        if isinstance(stored_record, dict):
            why = record_differences(stored_record, record)
        else:  # a state from before resume records: what it stored about its run must match
            why = legacy_differences(state, description, record["settings"], asdict(TrainingConfig()))
            if why is None:
                log.warning("%s: written before training states recorded their data's identity; resuming as "
                            "its data names, shapes, particle counts and settings match (file contents "
                            "unchecked)", last_path)
        if why is not None:
            raise CheckpointError(
                f"{last_path}: cannot resume, this run has {why}; to start afresh give --no-resume (replaces "
                f"it), delete or rename it, or choose another output; to fine-tune what it learnt, train "
                f"another output with --init {output}")
        try:
            net.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if step_sched is not None:
                step_sched.load_state_dict(state["step_scheduler"])
            if use_amp and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{last_path}: cannot resume from this training state ({exc})") from exc
        start_epoch = int(state["epoch"])
        best, bad = float(state["best"]), int(state["bad_epochs"])
        history = list(state.get("history", []))
        finished = bool(state.get("finished", False))
        log.info("resuming training from %s at epoch %d", last_path, start_epoch + 1)

    heads_t = mcfg.heads
    vrng = np.random.default_rng([cfg.seed, 7919])
    val_set = [_batches(val_vols, val_regions, cfg.batch_size, cfg, heads_t, vrng, aug=False)
               for _ in range(cfg.validation_batches)]

    def _evaluate() -> float:
        net.eval()
        losses = []
        with torch.no_grad():
            for xb, yb in val_set:
                xt, yt = torch.from_numpy(xb).to(dev), torch.from_numpy(yb).to(dev)
                with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                    out = net.logits(xt)
                losses.append(float(_loss(net, out.float(), yt, cfg.center_weight, cfg.species_loss)))
        return float(np.mean(losses))

    t_start = time.monotonic()
    epoch = start_epoch
    stopped_early = finished
    while not finished and epoch < cfg.epochs:
        rng = np.random.default_rng([cfg.seed, epoch])
        net.train()
        t0 = time.monotonic()
        running = []
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=True, dynamic_ncols=True)
        for _ in bar:
            xb, yb = _batches(vols, train_regions, cfg.batch_size, cfg, heads_t, rng, aug=True)
            xt, yt = torch.from_numpy(xb).to(dev), torch.from_numpy(yb).to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                out = net.logits(xt)
            loss = _loss(net, out.float(), yt, cfg.center_weight, cfg.species_loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if step_sched is not None:
                step_sched.step()
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
        bar.close()
        val_loss = _evaluate()
        if step_sched is None:
            sched.step(val_loss)
        epoch += 1
        history.append({"epoch": epoch, "train_loss": float(np.mean(running)), "validation_loss": val_loss,
                        "lr": float(opt.param_groups[0]["lr"]), "seconds": time.monotonic() - t0})
        # one line per epoch, also in a log file where the progress bar is off
        log.info("epoch %d: train loss %.4f, validation loss %.4f", epoch, history[-1]["train_loss"], val_loss)
        if val_loss < best - cfg.min_delta:
            best, bad = val_loss, 0
            net.config = mcfg.replace(training={**description, "epochs": epoch, "best_validation_loss": best})
            save(net, output)
        else:
            bad += 1
        if bad >= cfg.patience:
            finished = stopped_early = True
        if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
            net.config = mcfg.replace(training={**description, "epochs": epoch, "validation_loss": val_loss,
                                                "steps": epoch * cfg.steps_per_epoch})
            save(net, output.with_name(f"{output.stem}.epoch{epoch:03d}{output.suffix or '.pt'}"))
        out_of_time = cfg.max_minutes is not None and (time.monotonic() - t_start) / 60 >= cfg.max_minutes
        net.config = mcfg.replace(training={**description, "epochs": epoch, "best_validation_loss": best})
        save(net, last_path, extra={
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "step_scheduler": step_sched.state_dict() if step_sched is not None else None,
            "epoch": epoch, "best": best, "bad_epochs": bad, "history": history,
            "finished": finished, "resume_record": record})
        if out_of_time:
            log.info("stopping after epoch %d: time limit of %g min reached", epoch, cfg.max_minutes)
            break
    if not output.exists():
        raise CheckpointError(f"{output}: no checkpoint was written (no epoch completed)")
    return TrainResult(output, last_path, best, epoch, history, stopped_early)
