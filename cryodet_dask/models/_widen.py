"""Widen a trained U-Net without changing what it computes (Net2WiderNet).

A wider network can then start from the same function as a narrower trained
one, so that a width ablation compares like with like (same start, same data,
same schedule) instead of a run from scratch against a fine-tuned one.

Each convolution's output channels are mapped onto the old ones: the first
``old`` channels are themselves, each added channel copies a randomly chosen
old one (same incoming weights and bias, so the same activation after the
ReLU).  The next convolution reads every copy of an old channel with that
channel's weights times a split factor, the split factors of one old channel's
copies summing to one, so the sum over the copies is the old input.  The split
factors are random (not equal), so the copies get different gradients and grow
apart when training goes on; with equal factors they would stay identical.
Every other operation in :class:`UNet3D` (ReLU, max pooling, nearest
upsampling, concatenation) acts per channel, so the widened network's output
equals the old one's to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ParameterError
from ._unet import UNet3D

__all__ = ["check_widening", "widen"]

# (new channel -> old channel, split factor of each new channel)
_Map = tuple[np.ndarray, np.ndarray]


def _identity(n: int) -> _Map:
    return np.arange(n), np.ones(n)


def _grow(n_old: int, n_new: int, rng: np.random.Generator) -> _Map:
    """Map ``n_new`` channels onto ``n_old``: themselves first, then random copies; random splits summing to 1."""
    src = np.concatenate([np.arange(n_old), rng.integers(0, n_old, n_new - n_old)])
    weight = rng.uniform(0.5, 1.5, n_new)
    total = np.bincount(src, weights=weight, minlength=n_old)
    return src, weight / total[src]


@torch.no_grad()
def _copy_conv(old: nn.Conv3d, new: nn.Conv3d, inputs: _Map, outputs: np.ndarray) -> None:
    src_in, split = inputs
    w = old.weight[torch.as_tensor(outputs)][:, torch.as_tensor(src_in)]
    shape = (1, -1) + (1,) * (w.ndim - 2)
    new.weight.copy_(w * torch.as_tensor(split, dtype=w.dtype).reshape(shape))
    assert old.bias is not None and new.bias is not None  # every conv of UNet3D has one
    new.bias.copy_(old.bias[torch.as_tensor(outputs)])


def _convs(module: nn.Module) -> list[nn.Conv3d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv3d)]


def _copy_stack(old: nn.Module, new: nn.Module, inputs: _Map, rng: np.random.Generator) -> _Map:
    """Widen the chain of convolutions (each followed by a ReLU) in ``old``; returns the last one's mapping."""
    for o, n in zip(_convs(old), _convs(new), strict=True):
        outputs = _grow(o.out_channels, n.out_channels, rng)
        _copy_conv(o, n, inputs, outputs[0])
        inputs = outputs
    return inputs


def check_widening(channels: Sequence[int], to: Sequence[int]) -> tuple[int, ...]:
    """``to`` as a tuple if a network with ``channels`` can be widened to it (as many levels, none
    narrower); else :class:`ParameterError`."""
    new = tuple(int(c) for c in to)
    if len(new) != len(channels) or any(n < o for n, o in zip(new, channels)):
        raise ParameterError(f"channels {list(channels)} can be widened to as many levels with no fewer channels "
                             f"each, not to {list(new)}")
    return new


def widen(net: UNet3D, channels: Sequence[int], *, seed: int = 0) -> UNet3D:
    """A wider copy of ``net`` that computes the same function.

    Parameters
    ----------
    net : UNet3D
        The trained network.
    channels : sequence of int
        New channels per level, one per level of ``net`` and none fewer than
        its own; depth, convolutions per level and heads stay.
    seed : int
        Seed for the choice of copied channels and their split factors.

    Returns
    -------
    UNet3D
        On the CPU, in float32; ``widen(net, c)(x)`` equals ``net(x)`` to
        float rounding.

    Examples
    --------
    >>> import torch
    >>> from cryodet_dask.models import UNet3D, UNetConfig
    >>> net = UNet3D(UNetConfig(channels=(4, 8), convs_per_level=(1, 1))).eval()
    >>> wide = widen(net, (6, 12)).eval()
    >>> x = torch.randn(1, 1, 8, 8, 8)
    >>> bool(torch.allclose(net(x), wide(x), atol=1e-5))
    True
    """
    old_cfg = net.config
    new_channels = check_widening(old_cfg.channels, channels)
    rng = np.random.default_rng(seed)
    old = UNet3D(old_cfg)
    old.load_state_dict({k: v.detach().cpu().float() for k, v in net.state_dict().items()})
    wide = UNet3D(old_cfg.replace(channels=list(new_channels)))

    current = _identity(old_cfg.in_channels)
    skips = []
    for enc_old, enc_new in zip(old.encoders, wide.encoders):
        current = _copy_stack(enc_old, enc_new, current, rng)
        skips.append(current)
    current = _copy_stack(old.bottleneck, wide.bottleneck, current, rng)
    for up_old, up_new, dec_old, dec_new in zip(old.ups, wide.ups, old.decoders, wide.decoders):
        up = _copy_stack(up_old, up_new, current, rng)
        skip_src, skip_split = skips.pop()
        # the decoder reads cat([upsampled, skip]): the skip's old channels follow the upsampled ones
        n_up = _convs(up_old)[-1].out_channels
        joined = (np.concatenate([up[0], skip_src + n_up]), np.concatenate([up[1], skip_split]))
        current = _copy_stack(dec_old, dec_new, joined, rng)
    _copy_conv(old.head, wide.head, current, _identity(old.head.out_channels)[0])
    return wide
