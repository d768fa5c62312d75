"""Evaluation against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryodet_dask.evaluation import evaluate, match_centres, overlap_counts, overlap_scores, read_particles


def test_match_centres_hand_case():
    true = np.array([[0, 0, 0], [0, 0, 10], [0, 0, 20], [50, 50, 50]], float)
    pred = np.array([[0, 0, 1], [0, 0, 9], [0, 0, 15.5], [90, 90, 90], [0, 0, 11]], float)
    s, match = match_centres(pred, true, radius=5.0)
    # 0->0 (d=1), 1->1 (d=1), 2->2 (d=4.5), 4 (d=1 to #1) loses to 1, 3 too far
    assert list(match) == [0, 1, 2, -1, -1]
    assert (s.tp, s.fp, s.fn) == (3, 2, 1)
    assert s.precision == pytest.approx(3 / 5)
    assert s.recall == pytest.approx(3 / 4)
    assert s.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    b2 = 16
    assert s.fbeta == pytest.approx((1 + b2) * 0.6 * 0.75 / (b2 * 0.6 + 0.75))


def test_hungarian_beats_greedy():
    # greedy by distance would pair p0-t1 (0.9) and leave p1 (1.2 from t1, 3 from t0) unmatched
    true = np.array([[0, 0, 0.0], [0, 0, 2.0]])
    pred = np.array([[0, 0, 1.1], [0, 0, 3.2]])
    s, match = match_centres(pred, true, radius=1.5)
    assert s.tp == 2 and list(match) == [0, 1]


def test_empty_inputs():
    s, m = match_centres(np.zeros((0, 3)), np.zeros((0, 3)), 3)
    assert (s.tp, s.fp, s.fn, s.precision, s.recall, s.f1) == (0, 0, 0, 0.0, 0.0, 0.0)
    s, m = match_centres(np.ones((2, 3)), np.zeros((0, 3)), 3)
    assert s.fp == 2 and list(m) == [-1, -1]


def test_per_class_recall():
    true = np.array([[0, 0, 0], [0, 0, 10], [0, 0, 20]], float)
    pred = np.array([[0, 0, 0], [0, 0, 10]], float)
    s, _ = match_centres(pred, true, 2, true_classes=["a", "b", "b"])
    assert s.per_class_recall == {"a": 1.0, "b": 0.5}


def test_overlap_scores_hand_case():
    true = np.zeros((4, 4, 12), np.uint16)
    pred = np.zeros_like(true)
    true[:, :, 0:3] = 1  # 48 voxels
    true[:, :, 4:7] = 2
    true[:, :, 8:10] = 3
    pred[:, :, 0:7] = 5  # merges 1 and 2 (covers both wholly)
    pred[:, :, 9:12] = 6  # a third of it on 3: half of particle 3
    counts = overlap_counts(true, pred)
    row = counts[(counts.true == 1) & (counts.pred == 5)]
    assert int(row.voxels.iloc[0]) == 48
    s = overlap_scores(counts, 0.5)
    assert s.n_true == 3 and s.n_pred == 2
    assert s.recall == pytest.approx(3 / 3)  # 1, 2 in pred 5; half of 3 in pred 6
    assert s.precision == pytest.approx(0 / 2)  # pred 5: 96 of 112 on two particles, at most 48 on one
    assert s.merged_rate == pytest.approx(1 / 2)


def test_overlap_counts_chunked_equals_whole(rng):
    import dask.array as da

    t = rng.integers(0, 5, size=(10, 12, 14))
    p = rng.integers(0, 7, size=(10, 12, 14))
    a = overlap_counts(t, p)
    b = overlap_counts(da.from_array(t, chunks=(3, 5, 4)), da.from_array(p, chunks=(4, 4, 4)))
    pd.testing.assert_frame_equal(a, b)
    assert a.voxels.sum() == (t.size - ((t == 0) & (p == 0)).sum())


def test_read_particles_formats(tmp_path):
    (tmp_path / "a.csv").write_text("id,x,y,z,score\n1,1.5,2.5,3.5,0.9\n")
    df = read_particles(tmp_path / "a.csv")
    assert df[["z", "y", "x"]].to_numpy().tolist() == [[3.5, 2.5, 1.5]]
    (tmp_path / "b.txt").write_text(
        "PositionX\tPositionY\tPositionZ\tVolumeX\tVolumeY\tVolumeZ\tOffsetFromFace\n30\t20\t10\t3\t2\t1\t0\n")
    df = read_particles(tmp_path / "b.txt")
    assert df[["z", "y", "x"]].to_numpy().tolist() == [[1, 2, 3]]


def test_evaluate_with_pr_curve():
    truth = pd.DataFrame({"z": [0.0, 0, 0], "y": [0.0, 0, 0], "x": [0.0, 10, 20]})
    pred = pd.DataFrame({"z": [0.0, 0, 0], "y": [0.0, 0, 0], "x": [0.5, 10.5, 40], "score": [0.9, 0.8, 0.1]})
    res = evaluate(pred, truth, radius=2)
    assert res["centres"]["tp"] == 2
    curve = res["pr_curve"]
    assert curve.precision.iloc[-1] == 1.0  # only the best-scored particle kept
    assert curve.recall.iloc[0] == pytest.approx(2 / 3)
