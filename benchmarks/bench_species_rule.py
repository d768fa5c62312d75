"""Which rule gives a particle its species: a majority of per-voxel votes, or the highest mean probability.

    python benchmarks/bench_species_rule.py POOL [POOL ...] [--weights six-species.pt] [--fit POOL]

Each tomogram of each pool (``simulate-pool`` or ``bench_species.py make`` layout) is predicted once
(the whole volume, one pass) and post-processed with detect's defaults but with every species-dependent
filter switched off, so that every particle is listed with its label.  Per particle the voxel votes (the
argmax of the quantized probabilities, ties to the lower index) and the sums of the quantized
probabilities are then counted from the labels, and each rule's picks are rebuilt: the species, then
detect's per-species minimum size and score cut-off.  Printed per pool and rule: the mean per-species
CZII F-beta(4), and each species' CZII F4 and F1 (``bench_species.py``'s scoring).

``--fit POOL`` also fits one weight per species on the mean probabilities of that pool (coordinate
ascent of the mean CZII F4 over log-weights -0.5..0.5) and scores the weighted rule on every pool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_species as B  # noqa: E402

import cryodet_dask.postprocessing._core as core  # noqa: E402
from cryodet_dask.postprocessing._species import score_keep  # noqa: E402

Rule = Callable[[dict[str, Any]], np.ndarray]


def particles(net: Any, d: Path) -> dict[str, Any]:
    """Every particle of one tomogram (no species-dependent filter) with its votes and quantized sums."""
    import dask

    saved = core.species_size_keep, core.score_keep
    core.species_size_keep = lambda s, c, p, m: np.ones(len(s), bool)  # every particle, whatever its species
    core.score_keep = lambda s, m: np.ones(len(s), bool)
    try:
        det, q, kw, sp = B._postprocessed(net, d)
        with dask.config.set(scheduler="synchronous"):
            labels = np.asarray(det.labels.compute()).ravel()
    finally:
        core.species_size_keep, core.score_keep = saved
    n, k = len(det.centers), q.shape[0]
    fg = labels > 0
    lab, qf = labels[fg].astype(np.int64), q.reshape(k, -1)[:, fg]
    sums = np.stack([np.bincount(lab, weights=qf[s], minlength=n + 1)[1:] for s in range(k)], axis=1)
    votes = np.bincount(lab * k + np.argmax(qf, axis=0), minlength=(n + 1) * k).reshape(n + 1, k)[1:]
    return {"centers": det.centers, "count": det.n_voxels, "score": det.center_scores, "votes": votes,
            "sums": sums, "mins": np.asarray(sp.min_particle_size), "min_score": kw["min_score"],
            "names": list(net.config.species.names), "truth": pd.read_csv(d / "particles.csv").assign(tomogram=d.name),
            "tomogram": d.name}


def picks(t: dict[str, Any], species: np.ndarray) -> pd.DataFrame:
    """detect's picks under a species rule: its species, then its species' minimum size and the cut-off."""
    keep = (t["count"] >= t["mins"][species]) & score_keep(np.nan_to_num(t["score"], nan=-np.inf), t["min_score"])
    c = t["centers"][keep]
    return pd.DataFrame({"z": c[:, 0], "y": c[:, 1], "x": c[:, 2], "class": np.asarray(t["names"])[species[keep]],
                         "score": t["score"][keep], "tomogram": t["tomogram"]})


def evaluate(tables: list[dict[str, Any]], rule: Rule) -> tuple[float, pd.DataFrame]:
    preds = [picks(t, rule(t)) for t in tables]
    truths = [t["truth"] for t in tables]
    names = tables[0]["names"]
    every = sorted(set().union(*(set(x["class"]) for x in truths)) | set(names))
    table, _ = B._per_species(preds, truths, every)
    return float(table.loc[names, "czii_f4"].mean()), table


def votes(t: dict[str, Any]) -> np.ndarray:
    return np.argmax(t["votes"], axis=1)


def mean(t: dict[str, Any]) -> np.ndarray:
    return np.argmax(t["sums"], axis=1)


def weighted(w: np.ndarray) -> Rule:
    return lambda t: np.argmax(t["sums"] * w[None, :], axis=1)


def fit(tables: list[dict[str, Any]]) -> np.ndarray:
    k = len(tables[0]["names"])
    logw = np.zeros(k)
    best = evaluate(tables, weighted(np.exp(logw)))[0]
    for _ in range(3):
        changed = False
        for s in range(k):
            for g in np.round(np.arange(-0.5, 0.51, 0.1), 2):
                trial = logw.copy()
                trial[s] = g
                f = evaluate(tables, weighted(np.exp(trial)))[0]
                if f > best + 1e-9:
                    best, logw, changed = f, trial, True
        if not changed:
            break
    print(f"fitted weights (mean CZII F4 {best:.4f} on the pool they were fitted on): "
          f"{dict(zip(tables[0]['names'], np.exp(logw).round(3)))}")
    return np.exp(logw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pools", nargs="+", type=Path)
    ap.add_argument("--weights", default="cryodet_dask/data/weights/six-species.pt")
    ap.add_argument("--fit", type=Path, default=None, help="also fit per-species weights on this pool")
    a = ap.parse_args(argv)
    net = B._load(a.weights)
    pools = list(dict.fromkeys([*([a.fit] if a.fit else []), *a.pools]))
    tables = {p: [particles(net, d) for d in B._pool(p)] for p in pools}
    rules: dict[str, Rule] = {"votes": votes, "mean probability": mean}
    if a.fit:
        rules["weighted mean (fitted on " + a.fit.name + ")"] = weighted(fit(tables[a.fit]))
    for p in pools:
        for name, rule in rules.items():
            f, table = evaluate(tables[p], rule)
            print(f"{p.name}: {name}: mean CZII F4 {f:.4f}; F4 {table['czii_f4'].round(3).to_dict()}; "
                  f"F1 {table['f1'].round(3).to_dict()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
