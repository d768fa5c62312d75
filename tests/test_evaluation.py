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


# --- the CZII challenge metric -----------------------------------------------------------------


def _czii_tables():
    """Hand case in Å.  E1: ribosomes R1 (0,0,0), R2 (100,0,0), apo-ferritin (1000,1000,1000); E2: one ribosome."""
    truth = pd.DataFrame({"tomo_name": ["E1", "E1", "E1", "E2"],
                          "class": ["ribosome", "ribosome", "apo-ferritin", "ribosome"],
                          "x_angst": [0.0, 100, 1000, 0], "y_angst": [0.0, 0, 1000, 0], "z_angst": [0.0, 0, 1000, 0]})
    pred = pd.DataFrame({"tomo_name": ["E1", "E1", "E1", "E2", "E2"],
                         "class": ["ribosome", "ribosome", "apo-ferritin", "ribosome", "apo-ferritin"],
                         # P1 50 Å from both ribosomes (< 0.5 x 150); P2 far; apo 40 Å off (> 0.5 x 60);
                         # E2: ribosome 10 Å off; an apo-ferritin where E1 has one but E2 has none
                         "x_angst": [50.0, 5000, 1000, 10, 1000], "y_angst": [0.0, 0, 1000, 0, 1000],
                         "z_angst": [0.0, 0, 1040, 0, 1000]})
    return pred, truth


def test_czii_hand_case():
    from cryodet_dask.evaluation import czii_score

    pred, truth = _czii_tables()
    res = czii_score(pred, truth)
    rib, apo = res["per_class"]["ribosome"], res["per_class"]["apo-ferritin"]
    # ribosome: E1 TP 2 (one pick near both counts both), FP 2 - 2 = 0, FN 0; E2 TP 1 -> summed 3, 0, 0
    assert (rib["tp"], rib["fp"], rib["fn"]) == (3, 0, 0)
    assert rib["fbeta"] == pytest.approx(1.0)
    # apo-ferritin: E1 TP 0, FP 1, FN 1; E2 FP 1 (picks do not count across tomograms) -> 0, 2, 1
    assert (apo["tp"], apo["fp"], apo["fn"]) == (0, 2, 1)
    assert apo["fbeta"] == 0.0
    # weights 1, 0, 2, 1, 2, 1: only ribosome (weight 1) scores 1
    assert res["score"] == pytest.approx(1 / 7)
    assert evaluate(pred, truth, metric="czii")["czii"]["score"] == pytest.approx(1 / 7)
    assert set(res["per_class"]) == {"apo-ferritin", "beta-amylase", "beta-galactosidase", "ribosome",
                                     "thyroglobulin", "virus-like-particle"}


def test_czii_against_one_to_one_when_a_pick_is_near_two_particles():
    from cryodet_dask.evaluation import czii_score

    truth = pd.DataFrame({"class": ["ribosome"] * 2, "x_angst": [0.0, 100], "y_angst": [0.0, 0], "z_angst": [0.0, 0]})
    pred = pd.DataFrame({"class": ["ribosome"] * 2, "x_angst": [50.0, 900], "y_angst": [0.0, 0], "z_angst": [0.0, 0]})
    c = czii_score(pred, truth)["per_class"]["ribosome"]
    assert (c["tp"], c["fp"], c["fn"]) == (2, 0, 0)
    s, _ = match_centres(pred[["z_angst", "y_angst", "x_angst"]].to_numpy(),
                         truth[["z_angst", "y_angst", "x_angst"]].to_numpy(), radius=75.0)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)


def test_czii_custom_classes_weights_and_unknown_class():
    from cryodet_dask.errors import ParameterError
    from cryodet_dask.evaluation import czii_score

    truth = pd.DataFrame({"class": ["ves"], "x_angst": [0.0], "y_angst": [0.0], "z_angst": [0.0]})
    pred = pd.DataFrame({"class": ["ves"], "x_angst": [30.0], "y_angst": [0.0], "z_angst": [0.0]})
    with pytest.raises(ParameterError, match="'ves' .*unknown.*--class-radius ves="):
        czii_score(pred, truth)
    zero = {k: 0.0 for k in ("apo-ferritin", "beta-amylase", "beta-galactosidase", "ribosome", "thyroglobulin",
                             "virus-like-particle")}
    assert czii_score(pred, truth, radii={"ves": 100}, weights=zero)["score"] == pytest.approx(1.0)
    assert czii_score(pred, truth, radii={"ves": 50}, weights=zero)["score"] == 0.0  # 30 Å > 0.5 x 50
    only = czii_score(pred, truth, radii={"ves": 100}, default_classes=False)
    assert set(only["per_class"]) == {"ves"} and only["score"] == pytest.approx(1.0)


def test_cli_evaluate_czii_csv_layout(tmp_path, capsys):
    import json

    from cryodet_dask.cli import main

    pred, truth = _czii_tables()
    for name, df in (("sub.csv", pred), ("sol.csv", truth)):
        pd.DataFrame({"id": range(len(df)), "experiment": df["tomo_name"], "particle_type": df["class"],
                      "x": df["x_angst"], "y": df["y_angst"], "z": df["z_angst"]}).to_csv(tmp_path / name, index=False)
    assert main(["evaluate", str(tmp_path / "sub.csv"), str(tmp_path / "sol.csv"), "--metric", "czii",
                 "--json", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["score"] == pytest.approx(1 / 7)
    assert {k: res["per_class"]["ribosome"][k] for k in ("tp", "fp", "fn")} == {"tp": 3, "fp": 0, "fn": 0}
    assert {"precision", "recall", "fbeta"} <= set(res["per_class"]["apo-ferritin"])
    bad = pred.assign(**{"class": ["ribosome", "ribosome", "apo-ferritin", "ribosome", "ferritin-xl"]})
    pd.DataFrame({"experiment": bad["tomo_name"], "particle_type": bad["class"], "x": bad["x_angst"],
                  "y": bad["y_angst"], "z": bad["z_angst"]}).to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "bad.csv"), str(tmp_path / "sol.csv"), "--metric", "czii"]) != 0
    err = capsys.readouterr().err.strip()
    assert "ferritin-xl" in err and "\n" not in err


# --- overlap counts per block pair ---------------------------------------------------------------


def test_overlap_counts_per_block_pair_equals_the_whole_volume_count(rng, monkeypatch):
    """Against the old whole-volume definition (np.unique over every voxel pair), and no task sees two blocks."""
    import dask.array as da

    from cryodet_dask import evaluation

    t = rng.integers(0, 5, size=(12, 10, 14))
    p = rng.integers(0, 6, size=(12, 10, 14))
    keep = (t > 0) | (p > 0)
    pairs, counts = np.unique(np.stack([t[keep], p[keep]], axis=1), axis=0, return_counts=True)
    old = pd.DataFrame({"true": pairs[:, 0], "pred": pairs[:, 1], "voxels": counts})
    td, pd_ = da.from_array(t, chunks=(5, 4, 7)), da.from_array(p, chunks=(5, 4, 7))
    new = overlap_counts(td, pd_)
    pd.testing.assert_frame_equal(new.astype(np.int64), old.astype(np.int64))
    seen = []
    original = evaluation._pair_counts_block

    def spy(bt, bp):  # each task gets one block of each image, never the concatenated volumes
        seen.append((bt.shape, bp.shape))
        return original(bt, bp)

    monkeypatch.setattr(evaluation, "_pair_counts_block", spy)
    again = overlap_counts(td, pd_)
    pd.testing.assert_frame_equal(again, new)
    assert len(seen) == td.npartitions
    assert all(a == b and all(n <= c for n, c in zip(a, (5, 4, 7))) for a, b in seen)


# --- issue 27: empty predictions, tomogram names ---------------------------------------------------


def _truth_csv(path, names=("TS_01", "TS_01", "TS_02")):
    pd.DataFrame({"x": [10.0, 30, 10], "y": [10.0, 30, 10], "z": [5.0, 5, 5], "tomo_name": list(names)}).to_csv(
        path, index=False)


@pytest.mark.parametrize("content", ["x,y,z\n", "", "x,y,z,tomo_name\n"])
def test_cli_evaluate_an_empty_prediction_scores_zero(tmp_path, capsys, content):
    """No picks is a result: precision 0 (undefined, reported as 0), recall 0, exit 0 (was: an error pointing to
    an --allow-empty that evaluate does not have)."""
    import json

    from cryodet_dask.cli import main

    (tmp_path / "pred.csv").write_text(content)
    _truth_csv(tmp_path / "truth.csv")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pred.csv"), str(tmp_path / "truth.csv"),
                 "--json", str(tmp_path / "s.json")]) == 0
    out, err = capsys.readouterr()
    assert "--allow-empty" not in out + err and "undefined" in out
    c = json.loads((tmp_path / "s.json").read_text())["centres"]
    assert (c["tp"], c["fp"], c["fn"]) == (0, 0, 3)
    assert c["precision"] == 0 and c["recall"] == 0 and c["f1"] == 0 and c["fbeta"] == 0
    # the CZII metric too: every class with truth has recall 0
    sol = tmp_path / "sol.csv"
    pd.DataFrame({"experiment": ["TS_01"], "particle_type": ["ribosome"], "x": [100.0], "y": [100.0],
                  "z": [50.0]}).to_csv(sol, index=False)
    assert main(["evaluate", str(tmp_path / "pred.csv"), str(sol), "--metric", "czii",
                 "--json", str(tmp_path / "c.json")]) == 0
    r = json.loads((tmp_path / "c.json").read_text())["per_class"]["ribosome"]
    assert (r["tp"], r["fn"], r["precision"], r["recall"]) == (0, 1, 0, 0)
    # an empty ground truth is nothing to score against: one line, no hint to a flag evaluate lacks
    (tmp_path / "none.csv").write_text("x,y,z\n")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "truth.csv"), str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ground truth holds no particle" in err and "--allow-empty" not in err and "\n" not in err


def test_evaluate_matches_within_each_tomogram_and_warns_on_names_differing_in_case(tmp_path, caplog):
    import logging

    truth = pd.DataFrame({"z": [5.0, 5, 5], "y": [10.0, 30, 10], "x": [10.0, 30, 10],
                          "tomo_name": ["TS_01", "TS_01", "TS_02"]})
    # TS_02's pick lies where TS_01's first particle is: it must not find it
    pred = pd.DataFrame({"z": [5.0, 5.0], "y": [30.0, 10.0], "x": [30.0, 10.0], "tomo_name": ["TS_01", "TS_02"]})
    c = evaluate(pred, truth, radius=3)["centres"]
    assert (c["tp"], c["fp"], c["fn"]) == (2, 0, 1)
    moved = pred.assign(tomo_name=["TS_01", "TS_03"])
    c = evaluate(moved, truth, radius=3)["centres"]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 1, 2)
    # names that differ only in case are other tomograms, with one warning line
    lower = pred.assign(tomo_name=["TS_01", "ts_02"])
    with caplog.at_level(logging.WARNING, logger="cryodet_dask"):
        c = evaluate(lower, truth, radius=3)["centres"]
    assert (c["tp"], c["fp"]) == (1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'ts_02' vs 'TS_02'" in warnings[0] and "only in case" in warnings[0]
    # the CZII metric (per experiment, always): the same warning
    from cryodet_dask.evaluation import czii_score

    ang = {"x_angst": [100.0], "y_angst": [100.0], "z_angst": [50.0], "class": ["ribosome"]}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cryodet_dask"):
        res = czii_score(pd.DataFrame({**ang, "tomo_name": ["ts_01"]}), pd.DataFrame({**ang, "tomo_name": ["TS_01"]}))
    assert res["per_class"]["ribosome"]["tp"] == 0
    assert any("'ts_01' vs 'TS_01'" in r.getMessage() for r in caplog.records)
    # one name on each side: not compared (a detect output and a simulator's table name one tomogram differently)
    c = evaluate(pred.assign(tomo_name="tomogram"), truth.iloc[:2].assign(tomo_name="sim"), radius=3)["centres"]
    assert (c["tp"], c["fp"], c["fn"]) == (2, 0, 0)
