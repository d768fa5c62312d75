"""The pick probability: a logistic model on per-pick statistics, fitted on validation picks, carried by
the checkpoint, written by detect the same for any chunking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryodet_dask.calibration import FEATURES, ScoreCalibration, calibration_features, fit_calibration
from cryodet_dask.errors import ParameterError


def _picks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Picks whose chance of being true is a known function of the score (rising, then falling above 0.4,
    as gold beads score high) and of the size (too small is false)."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 0.8, n)
    mask = rng.uniform(0.5, 1.0, n)
    n_vox = np.exp(rng.uniform(np.log(200), np.log(8000), n))
    logit = 8 * score - 12 * score**2 + 1.5 * (np.log(n_vox) - np.log(800))
    p = 1 / (1 + np.exp(-logit))
    return score, mask, n_vox, p, rng.random(n) < p


def test_the_fitted_probability_recovers_a_known_probability_and_ranks_better_than_the_score():
    score, mask, n_vox, p, true = _picks(20000, 0)
    cal = fit_calibration(score, mask, n_vox, true, fitted_on="synthetic")
    got = cal.probability(score, mask, n_vox)
    assert got.shape == (20000,) and got.min() >= 0 and got.max() <= 1
    assert np.abs(got - p).mean() < 0.03  # the true probability, learnt from true/false marks alone
    # calibrated: in each decile of the probability, the fraction of true picks is that probability
    order = np.argsort(got)
    for part in np.array_split(order, 10):
        assert abs(got[part].mean() - true[part].mean()) < 0.05
    # on fresh picks it ranks better than the raw score, which is not monotone in the truth
    s2, m2, n2, _, t2 = _picks(5000, 1)
    assert _ap(cal.probability(s2, m2, n2), t2) > _ap(s2, t2) + 0.05


def _ap(ranking: np.ndarray, true: np.ndarray) -> float:
    """Average precision: the mean of the precision at each true pick, picks ranked by ``ranking``."""
    hit = true[np.argsort(-ranking, kind="stable")]
    precision = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float(precision[hit].mean())


def test_a_calibration_round_trips_and_a_malformed_one_is_refused():
    cal = ScoreCalibration(mean=(0.1,) * 5, scale=(1.0,) * 5, weights=(1, 0, 0, 0, 0), intercept=-0.5, fitted_on="x")
    assert ScoreCalibration.from_dict(cal.to_dict()) == cal
    assert cal.to_dict()["features"] == list(FEATURES)
    np.testing.assert_allclose(cal.probability([0.6], [1.0], [100]), 1 / (1 + np.exp(-(-0.5 + 0.5))))
    for bad in ({**cal.to_dict(), "weights": [1, 2]}, {**cal.to_dict(), "scale": [0, 1, 1, 1, 1]},
                {**cal.to_dict(), "features": ["score"]}, {**cal.to_dict(), "bias": 1},
                {k: v for k, v in cal.to_dict().items() if k != "intercept"},
                {**cal.to_dict(), "intercept": float("nan")}):
        with pytest.raises(ParameterError, match="score calibration"):
            ScoreCalibration.from_dict(bad)
    with pytest.raises(ParameterError, match="both true and false"):
        fit_calibration([0.1, 0.2], [1, 1], [100, 200], [True, True])
    with pytest.raises(ParameterError, match="one value per pick"):
        calibration_features([0.1, 0.2], [1], [100, 200])
    from cryodet_dask.models import UNetConfig

    with pytest.raises(ParameterError, match="score calibration"):
        UNetConfig(score_calibration={"mean": [0]})
    assert UNetConfig(score_calibration=cal.to_dict()).calibration == cal
    assert UNetConfig().calibration is None


def test_the_shipped_default_network_carries_a_calibration_read_without_torch():
    from cryodet_dask.models import default_weights, inspect_checkpoint

    cal = inspect_checkpoint(default_weights().twohead).calibration
    assert isinstance(cal, ScoreCalibration) and "validation pool" in cal.fitted_on


@pytest.mark.parametrize("chunks", ["36", "40,36,36"])
def test_detect_writes_the_probability_of_each_pick_for_any_chunking(tmp_path, small_mrc, net, chunks):
    from cryodet_dask import models
    from cryodet_dask.cli import main

    src, _ = small_mrc
    score, mask, n_vox, _, true = _picks(2000, 2)
    cal = fit_calibration(score, mask, n_vox, true)
    m = models.load(net)
    m.config = m.config.replace(score_calibration=cal.to_dict())
    ckpt = models.save(m, tmp_path / "calibrated.pt")
    base = ["-q", "detect", str(src), "-m", str(ckpt), "--cluster", "threads", "--device", "cpu", "--engine", "torch",
            "-mt", "0.3", "-ct", "0", "-rs", "0", "--min-particle-size", "0", "--min-score", "0"]
    assert main([*base, "-o", str(tmp_path / "a"), "-ps", chunks]) == 0
    assert main([*base, "-o", str(tmp_path / "b"), "-ps", "64"]) == 0
    a = pd.read_csv(tmp_path / "a" / "small_centers.csv")
    b = pd.read_csv(tmp_path / "b" / "small_centers.csv")
    assert len(a) > 0 and "probability" in a.columns
    # (the CSV holds 6 significant digits)
    np.testing.assert_allclose(a["probability"], cal.probability(a["score"], a["mask_score"], a["n_voxels"]),
                               rtol=0, atol=2e-6)
    pd.testing.assert_frame_equal(a, b)
    # the same network without a calibration: no column
    assert main([*base, "-o", str(tmp_path / "c"), "-m", str(net)]) == 0
    assert "probability" not in pd.read_csv(tmp_path / "c" / "small_centers.csv").columns
    # nor with --tta flips or --polarity both, whose averaged maps the calibration was not fitted on, nor with
    # --magnify, whose maps come back resampled from another grid
    for name, flag in (("d", ["--tta", "flips"]), ("e", ["--polarity", "both"]), ("f", ["--magnify", "1.25"])):
        assert main([*base, "-o", str(tmp_path / name), "-ps", chunks, *flag]) == 0
        d = pd.read_csv(tmp_path / name / "small_centers.csv")
        assert len(d) > 0 and "probability" not in d.columns and "score" in d.columns


def test_a_network_trained_from_a_calibrated_one_carries_no_calibration(tmp_path, small_mrc):
    from cryodet_dask import models
    from cryodet_dask.training import train

    _, data = small_mrc
    labels = np.zeros(data.shape, np.int32)
    labels[4:12, 8:18, 10:20] = 1
    start = models.UNet3D(models.UNetConfig(channels=(4, 6), convs_per_level=(1, 1), heads=("mask", "center")))
    cal = ScoreCalibration(mean=(0.0,) * 5, scale=(1.0,) * 5, weights=(1, 0, 0, 0, 0), intercept=0.0)
    start.config = start.config.replace(score_calibration=cal.to_dict())
    init = models.save(start, tmp_path / "calibrated.pt")
    train(data, labels, tmp_path / "tuned.pt", init=init, epochs=1, steps_per_epoch=1, validation_batches=1,
          patch_size=16, batch_size=1, validation_fraction=0.4, progress=False)
    assert models.load(tmp_path / "tuned.pt").config.score_calibration is None
