"""Which networks a prediction runs: checkpoints resolved to :class:`ModelSpec` s, and the checks on them
(the heads they give together, the voxel size they were trained at, their digests)."""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ParameterError
from ._engine import ModelSpec

__all__ = ["HEADS", "SHIPPED_MODELS", "file_sha256", "resolve_models", "check_model_voxel_size", "head_order",
           "check_species", "model_species", "model_species_diameters", "one_checkpoint", "shipped_models",
           "species_names", "store_maps"]

#: Models shipped in the package, by the name ``-m NAME`` takes: their checkpoint files in
#: ``cryodet_dask/data/weights`` (one file, or a SegNet and a CenterNet) and what they are for.
SHIPPED_MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    "twohead": (("twohead.pt",), "species-agnostic two-head network (the default)"),
    "pair": (("segnet.pt", "centernet.pt"), "species-agnostic SegNet + CenterNet (the original design)"),
    "general": (("general.pt",), "species-agnostic two-head network, fine-tuned also on tilt-series imaging, "
                "distractors (filaments, gold, ice, edges, membranes) and particles 0.6-1.8x the templates' size: "
                "for tomograms made elsewhere"),
    "six-species": (("six-species.pt",), "six species of the shipped templates (4v4r 70S ribosome, 4cr2 26S "
                    "proteasome, 3j9i 20S proteasome, 1bxn rubisco, 7n4y, 6pxm), trained on simulations only: "
                    "experimental, see its per-species figures"),
}

#: The maps a prediction gives, in this order (the heads of the networks together).
HEADS = ("mask", "center")
#: Output channels of a multi-species network's ``species`` head are named ``species:NAME``
#: (:attr:`~cryodet_dask.models.UNetConfig.outputs`); each is stored as the map ``species_NAME``.
SPECIES_PREFIX = "species:"


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shipped_paths(name: str) -> list[str | os.PathLike[str] | None]:
    from .. import models

    files, _ = SHIPPED_MODELS[name]
    paths: list[str | os.PathLike[str] | None] = [models.WEIGHTS_DIR / f for f in files]
    missing = [str(p) for p in paths if p is not None and not Path(p).is_file()]
    if missing:
        raise CheckpointError(f"the shipped model {name!r} is not installed in this package ({missing[0]})")
    return paths


def one_checkpoint(model: Any) -> Any:
    """A shipped model's name (no file of that name) as its one checkpoint's path; anything else unchanged.

    A shipped pair is refused: one network is needed here (``train --init``)."""
    if not isinstance(model, str) or model not in SHIPPED_MODELS or Path(model).exists():
        return model
    paths = _shipped_paths(model)
    if len(paths) != 1:
        raise ParameterError(f"--init {model}: a pair of networks; give one checkpoint (e.g. twohead)")
    return str(paths[0])


def shipped_models() -> list[dict[str, Any]]:
    """The shipped models: name, files, species, voxel size (Å), size on disk (bytes), description,
    and the figures recorded for them (``data/weights/models.json``)."""
    import json

    from .. import models

    figures_file = models.WEIGHTS_DIR / "models.json"
    figures = json.loads(figures_file.read_text()) if figures_file.is_file() else {}
    out = []
    for name, (files, what) in SHIPPED_MODELS.items():
        paths = [models.WEIGHTS_DIR / f for f in files]
        if not all(p.is_file() for p in paths):
            continue
        cfg = models.inspect_checkpoint(paths[0]).to_dict()
        species = [s["name"] for s in cfg.get("species") or [{"name": "particle"}]]
        out.append({"name": name, "files": [str(p) for p in paths], "species": species,
                    "voxel_size": cfg.get("voxel_size"), "bytes": sum(p.stat().st_size for p in paths),
                    "description": what, "figures": figures.get(name, {})})
    return out


def resolve_models(model: Any = None) -> list[ModelSpec]:
    """Checkpoints to run, as :class:`ModelSpec` s whose heads together give ``mask`` and ``center``.

    ``model`` may be ``None`` (the shipped default, ``twohead``), the name of a shipped model
    (:data:`SHIPPED_MODELS`, e.g. ``"twohead"``), one checkpoint path (a two-head network),
    or a sequence of paths (SegNet, CenterNet).  A name is taken as a shipped model only when no
    file of that name exists.
    """
    from .. import models

    paths: list[str | os.PathLike[str] | None]
    if isinstance(model, str) and model in SHIPPED_MODELS and not Path(model).exists():
        paths = _shipped_paths(model)
    elif model is None:
        # the two-head network: more accurate than the shipped pair on validation data and half the cost
        # (README, Results); the pair is -m segnet.pt -c centernet.pt
        weights = models.default_weights()
        paths = [weights.twohead] if weights.twohead else [weights.segnet, weights.centernet]
        if any(p is None for p in paths):
            raise CheckpointError("no shipped weights found in the package; give -m/-c checkpoints")
    elif isinstance(model, str | os.PathLike):
        paths = [model]
    else:
        paths = list(model)
    specs = []
    for p in paths:
        if p is None:
            continue
        path = Path(p).resolve()
        try:
            st = path.stat()
        except OSError:
            models.inspect_checkpoint(p)  # raises the one-line CheckpointError for a missing or unreadable file
            raise
        specs.append(_spec(str(path), st.st_mtime_ns, st.st_size))
    heads = [h for s in specs for h in s.heads]
    missing = [h for h in HEADS if h not in heads]
    if missing:
        raise CheckpointError(
            f"the checkpoints predict {heads}; also needed: {missing} (give a SegNet and a CenterNet, or a two-head model)"
        )
    return specs


def check_model_voxel_size(model: Any, voxel_size: float | None, rescale: bool = False) -> float | None:
    """Warn when the weights were trained at another voxel size; return that voxel size if it differs > 5 %.

    ``voxel_size`` None: the tomogram's voxel size is unknown (no header, no ``-vs``); the weights' is
    then only reported (a warning asking for ``-vs``), never compared with a guess.
    """
    found = None
    for spec in resolve_models(model):
        trained = spec.voxel_size
        if not trained:
            continue
        if voxel_size is None:
            warnings.warn(f"the weights {Path(spec.path).name} were trained at {trained:g} Å per voxel and the "
                          "tomogram's voxel size is unknown: if it differs, give -vs/--voxel-size and --rescale",
                          stacklevel=3)
            continue
        if trained and abs(trained / voxel_size - 1) > 0.05:
            if found is not None and abs(trained / found - 1) > 0.05:
                raise ParameterError(f"the networks were trained at different voxel sizes ({found:g} and "
                                     f"{trained:g} Å); give networks trained at one voxel size")
            found = trained
            if not rescale:
                warnings.warn(f"the weights {Path(spec.path).name} were trained at {trained:g} Å per voxel, the "
                              f"tomogram has {voxel_size:g} Å (factor {voxel_size / trained:.2f}): detection may "
                              f"suffer; add --rescale to predict on the tomogram resampled to {trained:g} Å",
                              stacklevel=3)
    return found


@functools.lru_cache(maxsize=16)
def _spec(path: str, mtime_ns: int, size: int) -> ModelSpec:
    """One checkpoint's :class:`ModelSpec`, read once per process for a given file version."""
    from .. import models

    cfg = models.inspect_checkpoint(path)  # checked as the workers' load checks it, without PyTorch
    return ModelSpec(path=path, heads=tuple(cfg.outputs), pool_factor=int(cfg.pool_factor),
                     receptive_field=int(cfg.receptive_field), halo=int(cfg.halo), width=int(cfg.channels[0]),
                     voxel_size=float(cfg.voxel_size) if cfg.voxel_size else None)


def species_names(specs: Sequence[ModelSpec]) -> tuple[str, ...]:
    """The species of a multi-species network among ``specs`` (empty: species-agnostic)."""
    return tuple(h[len(SPECIES_PREFIX):] for s in specs for h in s.heads if h.startswith(SPECIES_PREFIX))


def check_species(model: Any, keep: Sequence[str]) -> tuple[int, ...]:
    """Indices of the species ``keep`` among the model's (empty: all); one line for a species it does not know."""
    if not keep:
        return ()
    names = species_names(resolve_models(model))
    if not names:
        raise ParameterError(f"--species {','.join(keep)}: this model is species-agnostic (it picks 'particle'); "
                             "choose a multi-species model (train one with train --species; cryodet-dask models lists the shipped ones)")
    from ..species import SpeciesTable

    return SpeciesTable.of(names).select(list(keep))


def model_species(model: Any) -> tuple[str, ...]:
    """The species of a model (as :func:`resolve_models` takes it); empty for a species-agnostic one."""
    return species_names(resolve_models(model))


def model_species_diameters(model: Any) -> dict[str, float | None]:
    """Each species of a model with the diameter in Å its checkpoint records (None: not recorded);
    empty for a species-agnostic model."""
    out: dict[str, float | None] = {}
    for spec in resolve_models(model):
        if any(h.startswith(SPECIES_PREFIX) for h in spec.heads):
            st = Path(spec.path).stat()
            out.update(_diameters(spec.path, st.st_mtime_ns, st.st_size))
    return out


@functools.lru_cache(maxsize=16)
def _diameters(path: str, mtime_ns: int, size: int) -> dict[str, float | None]:
    from .. import models

    items = models.inspect_checkpoint(path).to_dict().get("species") or []
    return {str(s["name"]): (float(s["diameter"]) if s.get("diameter") else None) for s in items}


def store_maps(specs: Sequence[ModelSpec]) -> tuple[str, ...]:
    """The maps a prediction with ``specs`` stores: :data:`HEADS`, then ``species_NAME`` per species."""
    return HEADS + tuple(f"species_{n}" for n in species_names(specs))


def head_order(specs: Sequence[ModelSpec]) -> list[int]:
    """Where each of :func:`store_maps` lies among the output channels of ``specs`` (in their order)."""
    heads = [h for s in specs for h in s.heads]
    return [heads.index(h) for h in HEADS] + [i for i, h in enumerate(heads) if h.startswith(SPECIES_PREFIX)]
