"""Configuration of the 3D U-Nets: a frozen, JSON-serialisable dataclass."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..calibration import ScoreCalibration
from ..errors import ParameterError
from ..species import DEFAULT_SPECIES, SpeciesTable

__all__ = ["UNetConfig", "HEAD_ACTIVATIONS", "SPECIES_HEADS", "receptive_field", "receptive_extent"]

#: Output heads a network can have, and the activation applied to each.  ``species`` has one
#: channel per species (a softmax across them: the species of a voxel, given that it is a particle);
#: the others have one channel each.
HEAD_ACTIVATIONS = {"mask": "sigmoid", "center": "relu", "species": "softmax"}

#: How the ``species`` head is trained and read (``UNetConfig.species_head``): ``"softmax"``, a
#: cross-entropy over the species on particle voxels; ``"heatmap"``, one centre heatmap per species
#: regressed on every voxel, normalized across the species at inference.
SPECIES_HEADS: tuple[str, ...] = ("softmax", "heatmap")

_NORMALIZATIONS = ("zscore",)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture and provenance of a 3D U-Net (SegNet, CenterNet or two-head).

    The defaults are the seed's architecture: encoder 2×conv(32) → pool →
    2×conv(48) → pool → bottleneck 4×conv(64); decoder upsample → conv(64, 2³)
    → concat skip → 2×conv(48) → upsample → conv(48, 2³) → concat skip →
    2×conv(32) → conv(heads, 1³), 3³ convolutions with ReLU, no normalization
    layers (902,961 parameters with one head).

    Parameters
    ----------
    architecture : str
        Always ``"unet3d"``; stored so a checkpoint of another design is refused.
    in_channels : int
        Input channels (1: the tomogram).
    channels : tuple of int
        Feature channels per resolution level, finest first; the last entry is
        the bottleneck.  ``len(channels) - 1`` is the number of 2× poolings.
    convs_per_level : tuple of int
        3³ convolutions at each level (encoder and decoder share the count;
        the bottleneck uses the last entry).
    heads : tuple of str
        Output channels in order: ``("mask",)`` for SegNet (sigmoid),
        ``("center",)`` for CenterNet (ReLU), ``("mask", "center")`` for the
        shared two-head network.
    normalization : str
        Input normalization the network expects: ``"zscore"`` means
        ``(x - mean) / std`` with the mean and standard deviation of the
        **whole tomogram**, computed once (never per patch or per chunk).
    voxel_size : float or None
        Voxel size in Å of the tomograms it was trained on.
    center_smoothing : float
        Standard deviation (voxels) of a fixed Gaussian applied to the
        ``center`` output at inference (after its ReLU; 0 = none).  A briefly
        trained CenterNet gives bumpy maps with several local maxima per
        particle; smoothing them inside the network (rather than in the
        post-processing) keeps the post-processing semantics of the seed and
        keeps chunked prediction exact: the kernel's reach, ``ceil(3 σ)``
        voxels, is part of the receptive field and hence of the halo.
    species : SpeciesTable
        The species the network tells apart (:class:`~cryodet_dask.species.SpeciesTable`):
        one, ``particle``, for the species-agnostic networks; with two or more the network
        has the ``species`` head, whose channel ``i`` is the probability that a voxel is of
        species ``i`` given that it is a particle (a softmax over the species).  With the
        ``mask`` head (the probability of a particle) the two give the K + 1 probabilities
        of background and each species: ``1 - mask`` and ``mask * species[i]``.
    species_convs : int
        3³ convolutions (with ReLU) of the species branch, between the last decoder
        features and the species head's 1³ convolution (the mask and centre heads read
        the features directly).  They widen the receptive field (and the halo) by this
        many voxels on each side; with a frozen backbone only this branch learns.
    species_head : {"softmax", "heatmap"}
        How the species channels are learnt (:data:`SPECIES_HEADS`).  ``"softmax"``: a
        cross-entropy over the species on particle voxels, a softmax at inference.
        ``"heatmap"``: channel ``i`` regresses a centre heatmap of species ``i`` on every voxel
        (``(1 + c) / 2`` inside a particle of species ``i``, with ``c`` the centre target, 0
        elsewhere); at inference the ReLU'd heatmaps are divided by their sum (equal shares where
        all are 0), so both designs give the same kind of output: the species' shares of a voxel.
    score_calibration : dict or None
        The pick probability's logistic model
        (:class:`~cryodet_dask.calibration.ScoreCalibration` as a dict), fitted on validation picks
        after training; None: ``detect`` writes no ``probability`` column.
    training : dict
        Free description of the training (data, command, epochs, losses).
    """

    architecture: str = "unet3d"
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 48, 64)
    convs_per_level: tuple[int, ...] = (2, 2, 4)
    heads: tuple[str, ...] = ("mask",)
    normalization: str = "zscore"
    voxel_size: float | None = None
    center_smoothing: float = 0.0
    species: SpeciesTable = DEFAULT_SPECIES
    species_convs: int = 2
    species_head: str = "softmax"
    score_calibration: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    training: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "convs_per_level", tuple(int(c) for c in self.convs_per_level))
        object.__setattr__(self, "heads", tuple(str(h) for h in self.heads))
        if not isinstance(self.species, SpeciesTable):
            object.__setattr__(self, "species", SpeciesTable.from_list(self.species))
        if self.architecture != "unet3d":
            raise ParameterError(f"unknown network architecture {self.architecture!r} (expected 'unet3d')")
        if len(self.channels) < 1 or min(self.channels) < 1:
            raise ParameterError(f"channels must be positive integers, got {self.channels}")
        if len(self.convs_per_level) != len(self.channels) or min(self.convs_per_level) < 1:
            raise ParameterError(
                f"convs_per_level needs one count >= 1 per level ({len(self.channels)}), got {self.convs_per_level}")
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ParameterError(f"heads must be distinct names, got {self.heads}")
        bad = [h for h in self.heads if h not in HEAD_ACTIVATIONS]
        if bad:
            raise ParameterError(f"unknown head(s) {bad}; known: {sorted(HEAD_ACTIVATIONS)}")
        if ("species" in self.heads) != (len(self.species) > 1):
            raise ParameterError(
                f"a network with {len(self.species)} species needs "
                f"{'the' if len(self.species) > 1 else 'no'} 'species' head (heads: {list(self.heads)})")
        if "species" in self.heads and "mask" not in self.heads:
            raise ParameterError("the 'species' head needs the 'mask' head beside it")
        if "species" in self.heads and self.heads[-1] != "species":
            raise ParameterError(f"the 'species' head comes last (heads: {list(self.heads)})")
        if isinstance(self.species_convs, bool) or not isinstance(self.species_convs, int) or self.species_convs < 0:
            raise ParameterError(f"species_convs must be a whole number >= 0, got {self.species_convs!r}")
        if self.species_head not in SPECIES_HEADS:
            raise ParameterError(f"species_head must be one of {list(SPECIES_HEADS)}, got {self.species_head!r}")
        if self.score_calibration is not None:
            ScoreCalibration.from_dict(self.score_calibration)  # refused in one line if malformed
        if self.in_channels < 1:
            raise ParameterError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.normalization not in _NORMALIZATIONS:
            raise ParameterError(f"unknown input normalization {self.normalization!r}; known: {_NORMALIZATIONS}")
        if self.voxel_size is not None and not float(self.voxel_size) > 0:
            raise ParameterError(f"voxel_size must be positive, got {self.voxel_size}")
        if not float(self.center_smoothing) >= 0:
            raise ParameterError(f"center_smoothing must be >= 0 voxels, got {self.center_smoothing}")

    # -- derived -------------------------------------------------------------
    @property
    def calibration(self) -> ScoreCalibration | None:
        """The :class:`~cryodet_dask.calibration.ScoreCalibration` of :attr:`score_calibration`, or None."""
        return None if self.score_calibration is None else ScoreCalibration.from_dict(self.score_calibration)

    @property
    def depth(self) -> int:
        """Number of 2× poolings."""
        return len(self.channels) - 1

    @property
    def pool_factor(self) -> int:
        """Input sizes must be multiples of this (``2 ** depth``; 4 for the seed)."""
        return 2 ** self.depth

    @property
    def head_widths(self) -> tuple[int, ...]:
        """Output channels of each head, in ``heads`` order (``species``: one per species)."""
        return tuple(len(self.species) if h == "species" else 1 for h in self.heads)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the output channels: the heads, ``species`` expanded to ``species:NAME`` each."""
        out: list[str] = []
        for h in self.heads:
            out += [f"species:{n}" for n in self.species.names] if h == "species" else [h]
        return tuple(out)

    @property
    def species_reach(self) -> int:
        """Voxels the species branch reads beyond the decoder features on each side (0 without species)."""
        return int(self.species_convs) if "species" in self.heads else 0

    @property
    def smoothing_radius(self) -> int:
        """Reach (voxels) of the centre-map smoothing kernel: ``ceil(3 σ)``, 0 without smoothing."""
        if self.center_smoothing > 0 and "center" in self.heads:
            return int(math.ceil(3 * float(self.center_smoothing)))
        return 0

    @property
    def receptive_field(self) -> int:
        """Full width (voxels) of the receptive field of one output voxel; see :func:`receptive_field`."""
        return receptive_field(self)

    @property
    def halo(self) -> int:
        """Largest one-sided extent (voxels) of the receptive field: the halo chunked prediction needs."""
        lo, hi = receptive_extent(self)
        return max(lo, hi)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every weight of :class:`~cryodet_dask.models.UNet3D` with this configuration,
        without PyTorch (what a checkpoint's weights must match; the tests hold it equal to the network's
        ``state_dict``)."""
        shapes: dict[str, tuple[int, ...]] = {}

        def convs(prefix: str, c_in: int, c_out: int, n: int) -> None:
            for i in range(n):  # Conv3d, ReLU pairs: the convolutions are the even members
                shapes[f"{prefix}.{2 * i}.weight"] = (c_out, c_in if i == 0 else c_out, 3, 3, 3)
                shapes[f"{prefix}.{2 * i}.bias"] = (c_out,)

        ch, n, depth = self.channels, self.convs_per_level, self.depth
        c_prev = self.in_channels
        for level in range(depth):
            convs(f"encoders.{level}", c_prev, ch[level], n[level])
            c_prev = ch[level]
        convs("bottleneck", c_prev, ch[depth], n[depth])
        for j, level in enumerate(reversed(range(depth))):
            shapes[f"ups.{j}.conv.weight"] = (ch[level + 1], ch[level + 1], 2, 2, 2)
            shapes[f"ups.{j}.conv.bias"] = (ch[level + 1],)
            convs(f"decoders.{j}", ch[level + 1] + ch[level], ch[level], n[level])
        widths = self.head_widths
        has_species = "species" in self.heads
        shared = sum(widths) - (widths[-1] if has_species else 0)
        shapes["head.weight"], shapes["head.bias"] = (shared, ch[0], 1, 1, 1), (shared,)
        if has_species:
            convs("species_branch", ch[0], ch[0], self.species_convs)
            shapes["species_head.weight"], shapes["species_head.bias"] = (widths[-1], ch[0], 1, 1, 1), (widths[-1],)
        return shapes

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["convs_per_level"] = list(self.convs_per_level)
        d["heads"] = list(self.heads)
        d["species"] = self.species.to_list()
        d["training"] = json.loads(json.dumps(self.training, default=str))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ParameterError`."""
        known = {f for f in cls.__dataclass_fields__}
        extra = set(d) - known
        if extra:
            raise ParameterError(f"unknown network configuration field(s): {sorted(extra)}")
        d = dict(d)
        for k in ("channels", "convs_per_level", "heads"):
            if k in d:
                d[k] = tuple(d[k])
        d["species"] = SpeciesTable.from_list(d.get("species"))  # older checkpoints: one species, 'particle'
        return cls(**d)

    def replace(self, **changes: Any) -> UNetConfig:
        """A copy with some fields changed."""
        d = self.to_dict()
        d.update(changes)
        return UNetConfig.from_dict(d)


def receptive_extent(config: UNetConfig) -> tuple[int, int]:
    """How far (voxels) before and after an output voxel its input dependencies reach, per axis.

    Returns
    -------
    (before, after) : tuple of int
        Maximum over output positions of ``o - lo`` and ``hi - o``, where
        ``[lo, hi]`` is the interval of input voxels output voxel ``o``
        depends on (in the interior, away from zero padding).

    Notes
    -----
    Exact: each layer maps an interval of its output indices to the interval
    of its input indices it reads — a 3-conv ``[a-1, b+1]``, the 2-conv after
    upsampling (padded 0 before, 1 after) ``[a, b+1]``, 2× max pooling
    ``[2a, 2b+1]``, nearest 2× upsampling ``[a//2, b//2]`` — and a skip
    connection takes the union of its two paths.  Because the decoder's
    upsampling makes the dependency depend on the position modulo
    ``pool_factor``, every residue is evaluated and the maximum is reported.
    The axes are independent, so the 3D field is this interval in each axis.
    """

    def level(l: int, a: int, b: int) -> tuple[int, int]:
        # input interval read by the output interval [a, b] of the sub-network at level l
        n_convs = config.convs_per_level[l]
        if l == config.depth:  # bottleneck: n 3-convs
            return a - n_convs, b + n_convs
        # decoder convs at this level (after concat)
        a, b = a - n_convs, b + n_convs
        # concat: skip path = encoder convs at this level; up path = 2-conv, upsample, deeper level, pool
        ua, ub = a, b + 1  # 2-conv padded (0, 1)
        ua, ub = ua // 2, ub // 2  # nearest upsampling
        ua, ub = level(l + 1, ua, ub)  # deeper sub-network
        ua, ub = 2 * ua, 2 * ub + 1  # max pooling 2
        lo, hi = min(a, ua), max(b, ub)  # union with the skip path
        return lo - n_convs, hi + n_convs  # encoder convs at this level

    before = after = 0
    for o in range(config.pool_factor):
        lo, hi = level(0, o, o)
        before, after = max(before, o - lo), max(after, hi - o)
    # the centre-map smoothing and the species branch read further on each side (each its own output)
    r = max(config.smoothing_radius, config.species_reach)
    return before + r, after + r


def receptive_field(config: UNetConfig) -> int:
    """Full width (voxels) of the receptive field of one output voxel along each axis.

    ``before + after + 1`` from :func:`receptive_extent`: the largest window of
    input voxels any output voxel depends on (the 1³ head conv adds nothing).

    Examples
    --------
    >>> receptive_field(UNetConfig())
    66
    """
    before, after = receptive_extent(config)
    return before + after + 1
