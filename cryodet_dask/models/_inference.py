"""Whole-volume inference: the plain reference that chunked prediction is compared against."""

from __future__ import annotations

import numpy as np
import torch

from .._shapes import end_padding
from ..errors import ParameterError
from ._polarity import check_polarity
from ._tta import mean_over_flips
from ._unet import UNet3D

__all__ = ["predict_array", "zscore_stats", "forward"]

def forward(model: torch.nn.Module, x: torch.Tensor, polarity: str = "as-is", tta: str = "none") -> torch.Tensor:
    """``model(x)`` in float32; with ``polarity="both"`` the mean of ``model(x)`` and ``model(-x)``; with
    ``tta="flips"`` the mean over the flips of :data:`TTA_FLIPS` (each output flipped back).

    ``x`` is the normalized input (zero mean), so ``-x`` is the normalized contrast-inverted tomogram;
    the means are pointwise operations on the outputs, so chunked prediction stays exact.
    """
    both = check_polarity(polarity) == "both"

    def run(xi: torch.Tensor) -> torch.Tensor:
        y = model(xi).float()
        return 0.5 * (y + model(-xi).float()) if both else y

    return mean_over_flips(run, x, tta, lambda t, dims: torch.flip(t, list(dims)))


def zscore_stats(volume: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the whole volume (float64 accumulation); std 0 becomes 1."""
    v = np.asarray(volume)
    mean = float(v.mean(dtype=np.float64))
    std = float(v.std(dtype=np.float64))
    return mean, (std if std > 0 else 1.0)


@torch.no_grad()
def predict_array(model: UNet3D, volume: np.ndarray, *, mean: float | None = None,
                  std: float | None = None, polarity: str = "as-is", tta: str = "none") -> np.ndarray:
    """Run ``model`` on a whole volume held in memory.

    Parameters
    ----------
    model : UNet3D
        A network (put in eval mode here).
    volume : numpy.ndarray
        Tomogram, shape (Z, Y, X), any real dtype.
    mean, std : float, optional
        Normalization statistics; default: the volume's own global mean and
        standard deviation (``config.normalization == "zscore"``).
    polarity : {"both", "as-is"}
        ``"as-is"`` (default): the plain network; ``"both"``: the mean of the outputs
        on the volume and on its contrast-inverted copy (:data:`POLARITIES`).
    tta : {"none", "flips"}
        Test-time augmentation (:data:`TTAS`): ``"flips"`` is the mean over four mirror images
        of the padded volume, each output mirrored back.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(len(model.config.heads), Z, Y, X)``; channel ``i`` is
        head ``model.config.heads[i]``.

    Notes
    -----
    The volume is normalized, then padded with zeros at the **end** of each
    axis up to a multiple of ``pool_factor`` (so padding is 0 in normalized
    units, i.e. the tomogram's mean), passed through the network on the
    model's device, and cropped back.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ParameterError(f"predict_array needs a 3D volume (z, y, x), got shape {vol.shape}")
    m, s = zscore_stats(vol) if mean is None or std is None else (float(mean), float(std))
    x = ((vol.astype(np.float32) - np.float32(m)) / np.float32(s)).astype(np.float32, copy=False)
    p = model.config.pool_factor
    pad = end_padding(x.shape, p)
    x = np.pad(x, pad)
    model.eval()
    device = next(model.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)
    y = forward(model, t, polarity, tta)[0].cpu().numpy()
    z, yy, xx = vol.shape
    return np.ascontiguousarray(y[:, :z, :yy, :xx])
