"""Scores per species: one-to-one matching within each species, and the confusion between species.

Both tables take particle tables with ``z, y, x`` (voxels) and a ``class``
column naming the species, as ``detect`` writes them for a multi-species
model and ``simulate`` writes its ground truth.

* **Per species**: the picks of species *s* are matched one to one
  (Hungarian, within the radius) to the true particles of species *s* only;
  precision, recall, F1 and F-beta follow.  A pick of the wrong species is a
  false pick of its species and leaves its particle missed.
* **Confusion**: all picks are matched one to one to all true particles,
  whatever their species; each matched pair counts in (true species, picked
  species), unmatched true particles in the ``missed`` column and unmatched
  picks in the ``false pick`` row.  The diagonal over the row sums is the
  species-agnostic recall split by species, the off-diagonal cells are the
  species a particle was taken for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["species_scores", "pooled_species_scores", "confusion_matrix", "confusion_png", "MISSED", "FALSE_PICK"]

MISSED = "missed"
FALSE_PICK = "false pick"


def _classes(df: pd.DataFrame, what: str) -> np.ndarray:
    if "class" not in df.columns:
        raise InputError(f"{what}: per-species scores need a 'class' column (the species of each particle)")
    return df["class"].astype(str).to_numpy()


def species_scores(pred: pd.DataFrame, truth: pd.DataFrame, radius: float, *, beta: float = 4.0,
                   species: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and F-beta per species (matching within each species).

    Parameters
    ----------
    pred, truth : DataFrame
        Particle tables with ``z, y, x`` in voxels and ``class``.
    radius : float
        Matching radius in voxels.
    species : sequence of str, optional
        The species to report, in this order (default: those of either table, sorted).

    Returns
    -------
    DataFrame
        One row per species: ``species, n_true, n_pred, tp, fp, fn, precision, recall, f1, fbeta``.
        Precision is 0 where a species has no picks (and recall 0 where it has no true particle).
    """
    from .evaluation import match_centres

    pc, tc = _classes(pred, "predictions"), _classes(truth, "ground truth")
    names = list(species) if species is not None else sorted(set(pc) | set(tc))
    rows = []
    for s in names:
        p = pred.loc[pc == s, ["z", "y", "x"]].to_numpy(dtype=np.float64)
        t = truth.loc[tc == s, ["z", "y", "x"]].to_numpy(dtype=np.float64)
        sc, _ = match_centres(p, t, radius, beta=beta)
        rows.append({"species": s, "n_true": len(t), "n_pred": len(p), "tp": sc.tp, "fp": sc.fp, "fn": sc.fn,
                     "precision": sc.precision, "recall": sc.recall, "f1": sc.f1, "fbeta": sc.fbeta})
    return pd.DataFrame(rows, columns=["species", "n_true", "n_pred", "tp", "fp", "fn", "precision", "recall",
                                       "f1", "fbeta"])


def pooled_species_scores(pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]], radius: float, *,
                          species: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`species_scores` and :func:`confusion_matrix` of several (pred, truth) pairs, one per tomogram
    (particles of two tomograms never match), their counts summed; precision, recall and F1 from the sums.

    Returns the per-species table (indexed by species) and the summed confusion matrix.
    """
    cols = ["n_true", "n_pred", "tp", "fp", "fn"]
    table = pd.concat([species_scores(p, t, radius, species=species) for p, t in pairs]
                      ).groupby("species", sort=False)[cols].sum()
    table["precision"] = table["tp"] / table["n_pred"].clip(lower=1)
    table["recall"] = table["tp"] / table["n_true"].clip(lower=1)
    table["f1"] = 2 * table["tp"] / (table["n_pred"] + table["n_true"]).clip(lower=1)
    confusion = confusion_matrix(*pairs[0], radius, species=species)
    for p, t in pairs[1:]:
        confusion = confusion + confusion_matrix(p, t, radius, species=species)
    return table, confusion


def confusion_matrix(pred: pd.DataFrame, truth: pd.DataFrame, radius: float, *,
                     species: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts of (true species, picked species) over a species-agnostic one-to-one matching.

    Returns
    -------
    DataFrame
        Rows: the true species and ``false pick``; columns: the picked species and ``missed``.
        Integer counts; every true particle is counted once in its row, every pick once in its column.
    """
    from .evaluation import match_centres

    pc, tc = _classes(pred, "predictions"), _classes(truth, "ground truth")
    names = list(species) if species is not None else sorted(set(pc) | set(tc))
    extra = sorted((set(pc) | set(tc)) - set(names))
    names += extra
    _, match = match_centres(pred[["z", "y", "x"]].to_numpy(dtype=np.float64),
                             truth[["z", "y", "x"]].to_numpy(dtype=np.float64), radius)
    m = pd.DataFrame(0, index=[*names, FALSE_PICK], columns=[*names, MISSED], dtype=np.int64)
    found = np.zeros(len(truth), bool)
    for i, j in enumerate(match.tolist()):
        if j >= 0:
            m.loc[tc[j], pc[i]] += 1
            found[j] = True
        else:
            m.loc[FALSE_PICK, pc[i]] += 1
    for j in np.flatnonzero(~found).tolist():
        m.loc[tc[j], MISSED] += 1
    m.index.name, m.columns.name = "true species", "picked species"
    return m


def confusion_png(path: str | os.PathLike[str], matrix: pd.DataFrame, *, title: str = "") -> None:
    """The confusion matrix as a picture: each row normalized to its true particles, counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.to_numpy(dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n_r, n_c = counts.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n_c, 1.0 + 0.6 * n_r))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for r in range(n_r):
        for c in range(n_c):
            ax.text(c, r, f"{int(counts[r, c])}", ha="center", va="center",
                    color="white" if frac[r, c] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(n_c), [str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(n_r), [str(r) for r in matrix.index])
    ax.set_xlabel("picked species")
    ax.set_ylabel("true species")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
