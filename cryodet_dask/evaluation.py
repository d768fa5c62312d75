"""Evaluation of detections against ground truth.

Two families of scores:

* **Overlap-based instance matching** (the seed's evaluation), from label
  images: for every ground-truth particle *g* and predicted particle *p*, the
  number of voxels they share.  The pair counts are one reduction over the
  volume, chunk by chunk (never a loop over particles):

  - *recall*: fraction of ground-truth particles of which at least
    ``min_overlap`` (default 50 %) of the voxels lie in **one** predicted
    particle;
  - *precision*: fraction of predicted particles of which at least
    ``min_overlap`` of the voxels lie in **one** ground-truth particle;
  - *merged rate*: fraction of predicted particles that hold at least
    ``min_overlap`` of two or more ground-truth particles (touching particles
    detected as one).

* **One-to-one matching of centres** (the default metric): predicted and
  true centres are paired one to one by the Hungarian algorithm on their
  distances, pairs farther than ``radius`` are not matches; precision,
  recall, F1 and F-beta (beta = 4 weighs recall 16 times as much as
  precision).  Per class when the ground-truth table has a ``class`` column
  (recall per class; a predicted particle has no class).  A pick can find at
  most one particle.

* **The CZII metric** (:func:`czii_score`, ``evaluate --metric czii``), the
  official score of the CZ cryo-ET object identification challenge: per
  class, a true particle is a TP when *any* pick of that class lies within
  ``distance_multiplier x radius`` (0.5 x the class radius in Å); FP = picks
  - TP, FN = truth - TP; TP, FP and FN are summed over tomograms
  (experiments); per-class F-beta (beta = 4); the score is
  sum(weight x F-beta) / sum(weights).  One pick near two particles finds
  both (the one-to-one metric counts one).

An empty prediction is a result, not an error: no picks score precision 0
(strictly undefined, 0 / 0, and reported as 0, as the CZII metric does),
recall 0 and F-scores 0.  With several tomograms named on both sides
(``tomo_name``: ``rlnTomoName``, CZII ``experiment``, copick ``run_name``) a
pick is matched within its own tomogram only; names that differ only in case
between the prediction and the ground truth are different tomograms, and a
warning says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ._progress import block_summaries
from .errors import ParameterError

__all__ = [
    "CentreScores",
    "OverlapScores",
    "CZII_RADII",
    "CZII_WEIGHTS",
    "DEFAULT_RADIUS",
    "czii_score",
    "match_centres",
    "overlap_counts",
    "overlap_scores",
    "evaluate",
    "pr_curve",
    "read_particles",
]

log = logging.getLogger("cryodet_dask")

#: Default matching radius of the one-to-one metric, in voxels: one number for ``evaluate``, ``demo``
#: and the README's tables (50 Å at 10 Å per voxel, less than the radius of the smallest shipped template).
DEFAULT_RADIUS = 5.0


@dataclass(frozen=True)
class CentreScores:
    """Distance-based detection scores."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    fbeta: float
    beta: float
    radius: float
    per_class_recall: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OverlapScores:
    """Overlap-based (seed) instance scores."""

    n_true: int
    n_pred: int
    recall: float
    precision: float
    merged_rate: float
    min_overlap: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe(a: float, b: float) -> float:
    """``a / b``, and 0 where it is undefined (``b == 0``: e.g. the precision of no picks)."""
    return float(a) / float(b) if b else 0.0


def warn_case_only_names(pred_names: Any, true_names: Any) -> list[tuple[str, str]]:
    """Warn (one line) about prediction and ground-truth tomogram names that differ only in case.

    They are scored as different tomograms (the picks of one find nothing in the other), which is
    almost always a naming slip (``ts_01`` vs ``TS_01``).  Returns the (prediction, truth) pairs.
    """
    pred_set, true_set = {str(n) for n in pred_names}, {str(n) for n in true_names}
    folded: dict[str, list[str]] = {}
    for n in sorted(true_set):
        folded.setdefault(n.casefold(), []).append(n)
    pairs = [(n, t) for n in sorted(pred_set - true_set) for t in folded.get(n.casefold(), []) if t not in pred_set]
    if pairs:
        shown = ", ".join(f"{a!r} vs {b!r}" for a, b in pairs[:4]) + (", ..." if len(pairs) > 4 else "")
        log.warning("%d tomogram name(s) of the prediction differ from the ground truth's only in case (%s): "
                    "they are scored as different tomograms; rename them to match", len(pairs), shown)
    return pairs


def match_centres(
    pred_zyx: np.ndarray,
    true_zyx: np.ndarray,
    radius: float,
    *,
    true_classes: Sequence[str] | None = None,
    beta: float = 4.0,
) -> tuple[CentreScores, np.ndarray]:
    """One-to-one matching of predicted to true centres within ``radius`` (same units as the coordinates).

    Returns the scores and an integer array ``match`` with, for every
    predicted centre, the index of its true centre or -1.
    """
    pred = np.asarray(pred_zyx, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true_zyx, dtype=np.float64).reshape(-1, 3)
    match = np.full(len(pred), -1, dtype=np.int64)
    if len(pred) and len(true):
        tree = cKDTree(true)
        pairs = tree.query_ball_point(pred, r=radius)
        rows = np.repeat(np.arange(len(pred)), [len(p) for p in pairs])
        cols = np.fromiter((c for p in pairs for c in p), dtype=np.int64, count=len(rows))
        if len(rows):
            # Hungarian assignment on the candidate pairs only (a sparse problem, solved per connected group)
            d = np.linalg.norm(pred[rows] - true[cols], axis=1)
            big = radius * 10 + 1.0
            ur, ri = np.unique(rows, return_inverse=True)
            uc, ci = np.unique(cols, return_inverse=True)
            if len(ur) * len(uc) <= 25_000_000:
                cost = np.full((len(ur), len(uc)), big)
                cost[ri, ci] = d
                r, c = linear_sum_assignment(cost)
                ok = cost[r, c] <= radius
                match[ur[r[ok]]] = uc[c[ok]]
            else:  # very large problems: greedy by distance
                order = np.argsort(d, kind="stable")
                used_p, used_t = set(), set()
                for k in order:
                    if rows[k] not in used_p and cols[k] not in used_t:
                        used_p.add(rows[k])
                        used_t.add(cols[k])
                        match[rows[k]] = cols[k]
    tp = int((match >= 0).sum())
    fp = len(pred) - tp
    fn = len(true) - tp
    precision = _safe(tp, tp + fp)
    recall = _safe(tp, tp + fn)
    f1 = _safe(2 * precision * recall, precision + recall)
    b2 = beta * beta
    fbeta = _safe((1 + b2) * precision * recall, b2 * precision + recall)
    per_class: dict[str, float] = {}
    if true_classes is not None and len(true):
        classes = np.asarray(true_classes)
        found = np.zeros(len(true), bool)
        found[match[match >= 0]] = True
        for c in np.unique(classes):
            sel = classes == c
            per_class[str(c)] = float(found[sel].mean())
    return CentreScores(tp, fp, fn, precision, recall, f1, fbeta, beta, float(radius), per_class), match


def _pair_counts_block(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(true id, predicted id, shared voxels) for one block, over voxels where either is non-zero."""
    t = true.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    keep = (t > 0) | (p > 0)
    if not keep.any():
        return np.zeros((0, 3), np.int64)
    t, p = t[keep], p[keep]
    if t.max() < 2**31 and p.max() < 2**32 and min(t.min(), p.min()) >= 0:  # one int64 key per pair: a 1-D unique
        keys, counts = np.unique((t << 32) | p, return_counts=True)
        return np.stack([keys >> 32, keys & 0xFFFFFFFF, counts], axis=1)
    pairs, counts = np.unique(np.stack([t, p], axis=1), axis=0, return_counts=True)
    return np.concatenate([pairs, counts[:, None]], axis=1)


def overlap_counts(true_labels: Any, pred_labels: Any) -> pd.DataFrame:
    """Voxel counts of every (true id, predicted id) pair, id 0 meaning background.

    Works block by block on dask arrays (same shape; rechunked to match): one task
    per block pair counts its pairs into a small table, and the tables are summed
    on the driver, so no task ever holds more than one block of each label image.
    """
    t = true_labels if isinstance(true_labels, da.Array) else da.from_array(np.asarray(true_labels), chunks=128)
    p = pred_labels if isinstance(pred_labels, da.Array) else da.from_array(np.asarray(pred_labels), chunks=t.chunks)
    if t.shape != p.shape:
        raise ValueError(f"label images differ in shape: {t.shape} vs {p.shape}")
    p = p.rechunk(t.chunks)
    parts = block_summaries(_pair_counts_block, [t, p])  # one task per block pair
    allp = np.concatenate([np.asarray(x).reshape(-1, 3) for x in parts]) if parts else np.zeros((0, 3), np.int64)
    df = pd.DataFrame(allp, columns=["true", "pred", "voxels"])
    # as_index=False: a DataFrame (pandas-stubs types the selected column's sum as a Series)
    return cast(pd.DataFrame, df.groupby(["true", "pred"], as_index=False)["voxels"].sum())


def overlap_scores(counts: pd.DataFrame, min_overlap: float = 0.5) -> OverlapScores:
    """Seed-style recall, precision and merged rate from :func:`overlap_counts`."""
    size_t = counts.groupby("true")["voxels"].sum()
    size_p = counts.groupby("pred")["voxels"].sum()
    inner = counts[(counts["true"] > 0) & (counts["pred"] > 0)]
    true_ids = size_t.index[size_t.index > 0]
    pred_ids = size_p.index[size_p.index > 0]
    frac_t = inner["voxels"].to_numpy() / size_t.loc[inner["true"]].to_numpy() if len(inner) else np.zeros(0)
    frac_p = inner["voxels"].to_numpy() / size_p.loc[inner["pred"]].to_numpy() if len(inner) else np.zeros(0)
    found_t = set(inner["true"].to_numpy()[frac_t >= min_overlap])
    good_p = set(inner["pred"].to_numpy()[frac_p >= min_overlap])
    holders = inner["pred"].to_numpy()[frac_t >= min_overlap]
    ids, n_held = np.unique(holders, return_counts=True) if len(holders) else (np.zeros(0), np.zeros(0))
    merged = int((n_held >= 2).sum())
    return OverlapScores(
        n_true=len(true_ids),
        n_pred=len(pred_ids),
        recall=_safe(len(found_t), len(true_ids)),
        precision=_safe(len(good_p), len(pred_ids)),
        merged_rate=_safe(merged, len(pred_ids)),
        min_overlap=min_overlap,
    )


def pr_curve(pred_zyx: np.ndarray, scores: np.ndarray, true_zyx: np.ndarray, radius: float,
             n: int = 21) -> pd.DataFrame:
    """Precision and recall of the particles whose score is at least each of ``n`` thresholds."""
    rows = []
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    for thr in np.linspace(lo, hi, n):
        keep = scores >= thr
        s, _ = match_centres(pred_zyx[keep], true_zyx, radius)
        rows.append({"threshold": thr, "precision": s.precision, "recall": s.recall, "f1": s.f1,
                     "n_pred": int(keep.sum())})
    return pd.DataFrame(rows)


def read_particles(path: str | os.PathLike[str], voxel_size: float | None = None, **kwargs: Any) -> pd.DataFrame:
    """A particle table with columns ``z, y, x`` (voxels) first, then what the file has (``class``, ``score`` ...).

    Kept for existing callers: reads every format through
    :func:`cryodet_dask.particles.read_particles` (same keyword arguments:
    ``tomogram``, ``tomogram_name``, ``binning``, ``allow_empty`` ...).
    """
    from .particles import read_particles as _read

    df = _read(path, voxel_size=voxel_size, **kwargs)
    cols = ["z", "y", "x"] + [c for c in df.columns if c not in ("z", "y", "x")]
    out = df[cols]
    out.attrs.update(df.attrs)
    return out


#: CZII challenge particle radii (Å) and weights
CZII_RADII = {"apo-ferritin": 60.0, "beta-amylase": 65.0, "beta-galactosidase": 90.0, "ribosome": 150.0,
              "thyroglobulin": 130.0, "virus-like-particle": 135.0}
CZII_WEIGHTS = {"apo-ferritin": 1.0, "beta-amylase": 0.0, "beta-galactosidase": 2.0, "ribosome": 1.0,
                "thyroglobulin": 2.0, "virus-like-particle": 1.0}


def _czii_counts(ref: np.ndarray, cand: np.ndarray, radius: float) -> tuple[int, int, int]:
    """TP (true particles with any pick within ``radius``), FP = picks - TP, FN = truth - TP."""
    if len(ref) == 0:
        return 0, len(cand), 0
    if len(cand) == 0:
        return 0, 0, len(ref)
    hits = cKDTree(cand).query_ball_tree(cKDTree(ref), r=radius)
    tp = len({j for h in hits for j in h})
    return tp, len(cand) - tp, len(ref) - tp


def _angstrom(df: pd.DataFrame, what: str) -> np.ndarray:
    if {"x_angst", "y_angst", "z_angst"} <= set(df.columns):
        a = df[["x_angst", "y_angst", "z_angst"]].to_numpy(np.float64)
        if np.isfinite(a).all():
            return a
    raise ParameterError(f"the CZII metric works in Å and the {what} have no Å coordinates; "
                         "give the voxel size (--voxel-size)")


def czii_score(pred: pd.DataFrame, truth: pd.DataFrame, *, radii: dict[str, float] | None = None,
               weights: dict[str, float] | None = None, distance_multiplier: float = 0.5,
               beta: float = 4.0, default_classes: bool = True) -> dict[str, Any]:
    """The official CZII challenge score of picks against ground truth.

    Exactly the challenge's counting: a true particle is a TP when any pick of its
    class lies within ``distance_multiplier x radius``; FP = picks - TP (so, as in
    the official metric, a pick close to two particles counts two TPs, and FP can
    even be negative when picks are fewer than the particles they find).

    Parameters
    ----------
    pred, truth : DataFrame
        ``x_angst, y_angst, z_angst`` (Å), ``class`` (particle type) and, to score
        several tomograms, ``tomo_name`` (the CZII ``experiment``).
    radii, weights : dict, optional
        Per class radius (Å) and weight; default :data:`CZII_RADII` and
        :data:`CZII_WEIGHTS`, updated with what is given (weight 1 for a class
        that has a radius but no weight).
    distance_multiplier : float
        A pick finds a particle within ``distance_multiplier x radius``.
    beta : float
        F-beta weight of recall.
    default_classes : bool
        Start from the six CZII classes (True, the official metric) or score only
        the classes of ``radii``.

    Returns
    -------
    dict
        ``per_class``: for each class the metric knows, ``tp, fp, fn, precision,
        recall, fbeta`` (TP, FP, FN summed over tomograms); ``score``: sum(weight x
        F-beta) / sum(weights) over those classes -- as in the official metric a
        class with neither truth nor picks has F-beta 0 and still counts in the
        weights (give it weight 0 to leave it out); and the parameters used.
    """
    r = dict(CZII_RADII) if default_classes else {}
    r.update(radii or {})
    if not r:
        raise ParameterError("the CZII metric has no class to score: give class radii (--class-radius NAME=ANGSTROM)")
    w = {k: CZII_WEIGHTS.get(k, 1.0) for k in r}
    w.update(weights or {})
    if "class" not in pred.columns and len(pred) == 0:  # no picks: their class does not matter
        pred = pred.assign(**{"class": pd.Series([], dtype=object)})
    for name, df in (("picks", pred), ("ground truth", truth)):
        if "class" not in df.columns:
            raise ParameterError(f"the CZII metric scores per class and the {name} have no class "
                                 "(particle_type) column")
        unknown = sorted(set(df["class"].astype(str)) - set(r))
        if unknown:
            raise ParameterError(f"class {unknown[0]!r} of the {name} is unknown to the CZII metric "
                                 f"(known: {', '.join(sorted(r))}); give its radius with --class-radius "
                                 f"{unknown[0]}=ANGSTROM")
    pa, ta = _angstrom(pred, "picks"), _angstrom(truth, "ground truth")
    pc, tc = pred["class"].astype(str).to_numpy(), truth["class"].astype(str).to_numpy()
    if "tomo_name" in pred.columns and "tomo_name" in truth.columns:
        pe, te = pred["tomo_name"].astype(str).to_numpy(), truth["tomo_name"].astype(str).to_numpy()
        warn_case_only_names(pe, te)
    else:
        pe, te = np.zeros(len(pred), dtype=object), np.zeros(len(truth), dtype=object)
    experiments = sorted(set(pe) | set(te), key=str)
    classes = sorted(r)  # as the official metric: every class it knows, found or not, counts in sum(weights)
    b2 = beta * beta
    per_class: dict[str, dict[str, float]] = {}
    for c in classes:
        tp = fp = fn = 0
        for e in experiments:
            a, b, d = _czii_counts(ta[(tc == c) & (te == e)], pa[(pc == c) & (pe == e)], r[c] * distance_multiplier)
            tp, fp, fn = tp + a, fp + b, fn + d
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        fbeta = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0
        per_class[c] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "fbeta": fbeta,
                        "radius_angst": r[c], "weight": w.get(c, 1.0)}
    wsum = sum(per_class[c]["weight"] for c in classes)
    score = sum(per_class[c]["weight"] * per_class[c]["fbeta"] for c in classes) / wsum if wsum else 0.0
    return {"metric": "czii", "score": float(score), "per_class": per_class, "beta": beta,
            "distance_multiplier": distance_multiplier, "experiments": len(experiments)}


def evaluate(
    pred: Any,
    truth: Any,
    *,
    radius: float | None = None,
    radius_angst: float | None = None,
    voxel_size: float | None = None,
    beta: float = 4.0,
    min_overlap: float = 0.5,
    pred_labels: Any = None,
    true_labels: Any = None,
    metric: str = "one-to-one",
    class_radius: dict[str, float] | None = None,
    class_weight: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Score predicted particles against the ground truth.

    ``metric="czii"`` returns :func:`czii_score` (``class_radius``,
    ``class_weight`` as its ``radii``, ``weights``) under the key ``czii``
    instead of the one-to-one scores.

    Parameters
    ----------
    pred, truth : DataFrame or path
        Particle tables with columns ``z, y, x`` in voxels (CSV/TXT/STAR paths
        are read with :func:`read_particles`); ``truth`` may carry ``class``,
        ``pred`` a ``score``.
    radius : float, optional
        Matching radius in voxels.  Default: ``radius_angst / voxel_size``,
        else 10 voxels.
    pred_labels, true_labels : array-like, optional
        Label images for the overlap-based scores.

    Returns
    -------
    dict
        ``centres`` (:class:`CentreScores` as dict), ``overlap`` (if labels
        were given), ``match`` (per predicted particle, the matched true
        index or -1).
    """
    # no picks is a result (precision 0, recall 0); no ground truth is nothing to score against
    p = pred if isinstance(pred, pd.DataFrame) else read_particles(pred, voxel_size=voxel_size, allow_empty=True)
    t = truth if isinstance(truth, pd.DataFrame) else read_particles(truth, voxel_size=voxel_size)
    if metric == "czii":
        return {"czii": czii_score(p, t, radii=class_radius, weights=class_weight, beta=beta)}
    if metric != "one-to-one":
        raise ParameterError(f"unknown metric {metric!r}; one of one-to-one, czii")
    if radius is None:
        radius = radius_angst / voxel_size if radius_angst and voxel_size else DEFAULT_RADIUS
    classes = t["class"].astype(str).tolist() if "class" in t.columns else None
    pz, tz = _per_tomogram(p, t, radius)
    scores, match = match_centres(pz, tz, radius, true_classes=classes, beta=beta)
    out: dict[str, Any] = {"centres": scores.as_dict(), "match": match}
    if pred_labels is not None and true_labels is not None:
        out["overlap"] = overlap_scores(overlap_counts(true_labels, pred_labels), min_overlap).as_dict()
    if "score" in p.columns and len(p):
        out["pr_curve"] = pr_curve(pz, p["score"].to_numpy(), tz, radius)
    return out


def _per_tomogram(p: pd.DataFrame, t: pd.DataFrame, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) of the picks and the true particles, each tomogram moved far from the others along z when
    both tables name several tomograms, so that a pick is matched within its own tomogram only.

    With one name on each side (or none), the names are not compared: a detect output and a
    simulator's table name the same tomogram differently.
    """
    pz = p[["z", "y", "x"]].to_numpy(np.float64)
    tz = t[["z", "y", "x"]].to_numpy(np.float64)
    if "tomo_name" not in p.columns or "tomo_name" not in t.columns:
        return pz, tz
    pn, tn = p["tomo_name"].astype(str).to_numpy(), t["tomo_name"].astype(str).to_numpy()
    if max(len(set(pn)), len(set(tn))) <= 1:
        return pz, tz
    warn_case_only_names(pn, tn)
    index = {n: k for k, n in enumerate(sorted(set(pn) | set(tn)))}
    extent = max(float(np.abs(pz).max()) if len(pz) else 0.0, float(np.abs(tz).max()) if len(tz) else 0.0)
    step = 2.0 * extent + 4.0 * float(radius) + 1.0  # no two tomograms come within the radius
    pz, tz = pz.copy(), tz.copy()
    pz[:, 0] += np.array([index[n] for n in pn], np.float64) * step
    tz[:, 0] += np.array([index[n] for n in tn], np.float64) * step
    return pz, tz


def report_png(path: str | os.PathLike[str], tomogram: Any, pred: pd.DataFrame, truth: pd.DataFrame,
               match: np.ndarray, curve: pd.DataFrame | None = None, slab: int = 4) -> Path:
    """PNG: precision-recall curve and central XY/XZ slices with hits, misses and false positives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol = tomogram
    zc, yc = vol.shape[0] // 2, vol.shape[1] // 2
    xy = np.asarray(vol[zc])
    xz = np.asarray(vol[:, yc, :])
    hit_t = np.zeros(len(truth), bool)
    hit_t[match[match >= 0]] = True
    fp = match < 0
    fig, axes = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [1, 1.6, 1.6]})
    ax = axes[0]
    if curve is not None and len(curve):
        ax.plot(curve["recall"], curve["precision"], "o-", color="k")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall over score thresholds")
    tz, ty, tx = (truth[c].to_numpy() for c in "zyx")
    pz, py, px = (pred[c].to_numpy() for c in "zyx")
    for ax, img, title, (a_t, b_t, a_p, b_p, sel_t, sel_p) in (
        (axes[1], xy, f"XY slice z={zc} (±{slab} voxels)",
         (tx, ty, px, py, np.abs(tz - zc) <= slab, np.abs(pz - zc) <= slab)),
        (axes[2], xz, f"XZ slice y={yc} (±{slab} voxels)",
         (tx, tz, px, pz, np.abs(ty - yc) <= slab, np.abs(py - yc) <= slab)),
    ):
        lo, hi = np.percentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        s = sel_t & hit_t
        ax.scatter(a_t[s], b_t[s], s=40, facecolors="none", edgecolors="lime", label="hit")
        s = sel_t & ~hit_t
        ax.scatter(a_t[s], b_t[s], s=40, facecolors="none", edgecolors="red", label="miss")
        s = sel_p & fp
        ax.scatter(a_p[s], b_p[s], s=30, marker="x", color="orange", label="false positive")
        ax.set_title(title)
        ax.set_xlabel("x (voxels)")
        ax.legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel("y (voxels)")
    axes[2].set_ylabel("z (voxels)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
