"""Pick probability: a pick's ranking statistics mapped to the chance that it is a particle.

The centre-map peak (``score``) alone is not a probability and does not even rank monotonically: the
highest peaks are often gold beads, carbon edges or fragments of particles larger than the training
range (docs/results.md, "What the score means").  A :class:`ScoreCalibration` is a logistic model on
five features of each pick that the post-processing already has (:data:`FEATURES`): the score and its
square, the mean mask probability, and the logarithm of the particle's volume in the network's voxels
and its square.  It is fitted (:func:`fit_calibration`) on validation picks marked true or false, and
stored with the network (``UNetConfig.score_calibration``); ``detect`` then writes each pick's
``probability`` (docs/postprocessing.md, "Pick probability").

Everything here is a pure function of per-pick arrays: the probabilities are the same for any chunking,
because the statistics they are computed from are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = ["FEATURES", "ScoreCalibration", "calibration_features", "fit_calibration"]

#: The features, in order: score, score², mean mask probability, log volume (voxels of the network's
#: grid), its square.
FEATURES: tuple[str, ...] = ("score", "score^2", "mask_score", "log_n_voxels", "log_n_voxels^2")


def calibration_features(score: Any, mask_score: Any, n_voxels: Any) -> np.ndarray:
    """(N, 5) float64 features of :data:`FEATURES` from per-pick arrays; ``n_voxels`` in the network's voxels."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    m = np.asarray(mask_score, dtype=np.float64).reshape(-1)
    n = np.asarray(n_voxels, dtype=np.float64).reshape(-1)
    if not (len(s) == len(m) == len(n)):
        raise ParameterError(f"score, mask_score and n_voxels need one value per pick, got {len(s)}, {len(m)}, "
                             f"{len(n)}")
    ln = np.log(np.maximum(n, 1.0))
    return np.stack([s, s * s, m, ln, ln * ln], axis=1)


@dataclass(frozen=True)
class ScoreCalibration:
    """``probability = 1 / (1 + exp(-(intercept + sum_i weights[i] * (f_i - mean[i]) / scale[i])))``.

    Attributes
    ----------
    mean, scale : tuple of float
        Standardization of each feature of :data:`FEATURES` (from the fitting picks).
    weights : tuple of float
        The logistic weights of the standardized features.
    intercept : float
    fitted_on : str
        What the picks were (free text, for the record).
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    fitted_on: str = ""

    def __post_init__(self) -> None:
        k = len(FEATURES)
        for name in ("mean", "scale", "weights"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != k or not all(math.isfinite(x) for x in v):
                raise ParameterError(f"score calibration: {name} needs {k} finite numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if not all(x > 0 for x in self.scale):
            raise ParameterError(f"score calibration: scale must be positive, got {self.scale!r}")
        if isinstance(self.intercept, bool) or not math.isfinite(float(self.intercept)):
            raise ParameterError(f"score calibration: intercept must be a finite number, got {self.intercept!r}")
        object.__setattr__(self, "intercept", float(self.intercept))

    def probability(self, score: Any, mask_score: Any, n_voxels: Any) -> np.ndarray:
        """Per pick, the probability that it is a particle (float64 in [0, 1]); ``n_voxels`` in the
        network's voxels (a pick's voxel count times the cube of the ``--rescale`` factor)."""
        z = (calibration_features(score, mask_score, n_voxels) - np.asarray(self.mean)) / np.asarray(self.scale)
        t = self.intercept + z @ np.asarray(self.weights)
        out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * t))  # the logistic function, without overflow
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "intercept": self.intercept, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreCalibration:
        if not isinstance(d, dict):
            raise ParameterError(f"score calibration must be a mapping, got {type(d).__name__}")
        if list(d.get("features", FEATURES)) != list(FEATURES):
            raise ParameterError(f"score calibration of features {d.get('features')!r}; this version knows "
                                 f"{list(FEATURES)}")
        extra = set(d) - {"features", "mean", "scale", "weights", "intercept", "fitted_on"}
        if extra:
            raise ParameterError(f"unknown score calibration field(s): {sorted(extra)}")
        try:
            return cls(mean=tuple(d["mean"]), scale=tuple(d["scale"]), weights=tuple(d["weights"]),
                       intercept=d["intercept"], fitted_on=str(d.get("fitted_on", "")))
        except (KeyError, TypeError) as exc:
            raise ParameterError(f"score calibration is incomplete ({exc})") from None


def fit_calibration(score: Sequence[float] | np.ndarray, mask_score: Sequence[float] | np.ndarray,
                    n_voxels: Sequence[float] | np.ndarray, true: Sequence[bool] | np.ndarray,
                    l2: float = 1e-3, fitted_on: str = "") -> ScoreCalibration:
    """Fit the logistic model to picks marked ``true`` (a particle) or not, by L-BFGS on the mean log-loss
    plus ``l2 / 2 * |weights|²`` (the intercept is not penalized)."""
    from scipy.optimize import minimize

    x = calibration_features(score, mask_score, n_voxels)
    y = np.asarray(true, dtype=np.float64).reshape(-1)
    if len(y) != len(x):
        raise ParameterError(f"one true/false mark per pick is needed: {len(y)} marks for {len(x)} picks")
    if len(y) == 0 or y.min() == y.max():
        raise ParameterError("a score calibration needs both true and false picks")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.c_[np.ones(len(x)), (x - mean) / scale]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = z @ w
        p = 0.5 * (1.0 + np.tanh(0.5 * t))
        value = float(np.mean(np.logaddexp(0.0, t) - y * t) + 0.5 * l2 * np.sum(w[1:] ** 2))
        grad = z.T @ (p - y) / len(y) + l2 * np.r_[0.0, w[1:]]
        return value, grad

    w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    return ScoreCalibration(mean=tuple(mean), scale=tuple(scale), weights=tuple(w[1:]), intercept=float(w[0]),
                            fitted_on=fitted_on)
