"""The 3D U-Net of SegNet, CenterNet and the shared two-head network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from ._config import HEAD_ACTIVATIONS, UNetConfig

__all__ = ["UNet3D", "heatmap_shares"]


def _convs(c_in: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Nearest 2× upsampling, then a 2³ convolution (the seed's ``UpSampling3D`` + ``Conv3D(k=2, 'same')``).

    An even kernel cannot be centred, so the input is padded by 0 voxels
    before and 1 after on each axis (TensorFlow's ``'same'`` convention, as in
    the seed): output voxel ``i`` reads upsampled voxels ``i`` and ``i + 1``,
    i.e. coarse voxels ``i // 2`` and ``(i + 1) // 2``.  The output has the
    upsampled shape, so it aligns voxel for voxel with the skip connection.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel_size=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.pad(x, (0, 1, 0, 1, 0, 1))
        return F.relu(self.conv(x))


def _gaussian_smooth(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian smoothing (normalized kernel of half-width ``radius``, zero padding) of (B, 1, Z, Y, X)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    k = (k / k.sum()).to(dtype=x.dtype, device=x.device)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0, 0]
        pad[axis] = radius
        x = F.conv3d(x, k.reshape(shape), padding=tuple(pad))
    return x


def heatmap_shares(logits: torch.Tensor) -> torch.Tensor:
    """Per-species heatmaps (channel axis 1, before their ReLU) as each species' share of a voxel.

    ``relu(h_i) / sum_j relu(h_j)``; where every heatmap is 0, each species gets ``1 / K``.
    """
    h = F.relu(logits)
    total = h.sum(dim=1, keepdim=True)
    return torch.where(total > 0, h / total.clamp_min(torch.finfo(h.dtype).tiny), 1.0 / h.shape[1])


class UNet3D(nn.Module):
    """3D U-Net with same-padded convolutions; output shape = input shape.

    Parameters
    ----------
    config : UNetConfig
        Architecture; :class:`UNetConfig()` is the seed's SegNet.

    Notes
    -----
    ``forward(x)`` takes float32 ``(B, in_channels, Z, Y, X)`` with ``Z, Y, X``
    multiples of ``config.pool_factor`` and returns ``(B, len(config.outputs), Z, Y,
    X)`` with each head's activation applied (sigmoid for ``"mask"``, ReLU for
    ``"center"``, a softmax across the species channels for ``"species"``, or with
    ``config.species_head == "heatmap"`` the species heatmaps' shares, :func:`heatmap_shares`).
    The input must be normalized as ``config.normalization``
    says (z-score with the whole tomogram's mean and standard deviation).

    Examples
    --------
    >>> import torch
    >>> net = UNet3D(UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center")))
    >>> net(torch.zeros(1, 1, 8, 8, 8)).shape
    torch.Size([1, 2, 8, 8, 8])
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else UNetConfig()
        ch, n = self.config.channels, self.config.convs_per_level
        depth = self.config.depth
        self.encoders = nn.ModuleList()
        c_prev = self.config.in_channels
        for level in range(depth):
            self.encoders.append(_convs(c_prev, ch[level], n[level]))
            c_prev = ch[level]
        self.bottleneck = _convs(c_prev, ch[depth], n[depth])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(_Up(ch[level + 1]))
            self.decoders.append(_convs(ch[level + 1] + ch[level], ch[level], n[level]))
        widths = self.config.head_widths
        has_species = "species" in self.config.heads  # the last head: its own branch of 3³ convolutions
        self.head = nn.Conv3d(ch[0], sum(widths) - (widths[-1] if has_species else 0), kernel_size=1)
        if has_species:
            self.species_branch = _convs(ch[0], ch[0], self.config.species_convs)
            self.species_head = nn.Conv3d(ch[0], widths[-1], kernel_size=1)
        starts = [sum(widths[:i]) for i in range(len(widths))]
        # a heatmap species head gives the heatmaps' shares instead of a softmax
        acts = ["shares" if h == "species" and self.config.species_head == "heatmap" else HEAD_ACTIVATIONS[h]
                for h in self.config.heads]
        self._activations = list(zip(acts, starts, widths))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input → last decoder features (before the 1³ heads)."""
        p = self.config.pool_factor
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ParameterError(
                f"network input must be (batch, {self.config.in_channels}, z, y, x), got {tuple(x.shape)}")
        if any(s % p for s in x.shape[2:]):
            raise ParameterError(f"network input sizes {tuple(x.shape[2:])} must be multiples of {p}")
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottleneck(x)
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Head outputs before their activations (for numerically stable losses).

        The 1³ output convolution runs in float32 even under autocast: in
        bfloat16 (8 bits of mantissa) the centre map is quantized to steps of
        ~0.004 near 1, which creates plateaus and removes strict maxima, and
        mask values move across the threshold.
        """
        f = self.features(x)
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.to(self.head.weight.dtype)
            out = self.head(f)
            if "species" in self.config.heads:
                out = torch.cat([out, self.species_head(self.species_branch(f))], dim=1)
            return out

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply each head's activation to its channel of ``logits``."""
        outs = []
        for act, start, width in self._activations:
            y = logits[:, start : start + width]
            outs.append(torch.sigmoid(y) if act == "sigmoid" else torch.softmax(y, dim=1) if act == "softmax"
                        else heatmap_shares(y) if act == "shares" else F.relu(y))
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        # activations and the centre-map smoothing in float32 too (see logits)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            y = self.activate(logits)
            r = self.config.smoothing_radius
            if r:
                i = self.head_index("center")
                y = torch.cat([y[:, :i], _gaussian_smooth(y[:, i : i + 1], self.config.center_smoothing, r),
                               y[:, i + 1 :]], dim=1)
        return y

    def head_index(self, name: str) -> int:
        """First output channel of head ``name`` (the ``species`` head has one channel per species)."""
        try:
            i = self.config.heads.index(name)
        except ValueError:
            raise ParameterError(f"this network has no {name!r} output (heads: {self.config.heads})") from None
        return sum(self.config.head_widths[:i])

    def extra_repr(self) -> str:
        c = self.config
        return f"channels={c.channels}, convs_per_level={c.convs_per_level}, heads={c.heads}"
