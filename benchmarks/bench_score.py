"""What the ranking score means across imaging modes, particle sizes and distractors (generalization:
"a score that means the same everywhere").

For every pick of the shipped species-agnostic network at default post-processing, on tomograms it was
not trained on, three per-particle statistics the post-processing already computes are candidate
rankings: ``score`` (the centre-map peak over the particle, the CSV's ``score`` today), ``mask`` (the
mean mask probability over it) and their product.  Each pick is true when it lies within ``--radius``
voxels of a simulated particle, one to one.  Reported per data set and pooled: average precision (AP)
of each ranking, and the reliability of ``score`` (the fraction of true picks per score bin), which is
what a calibrated score would make equal to the bin's score.

Two data sets, never used to train or to choose a default:

* ``validation`` (``make``): 12 tomograms ``simulate-pool V/pool --count 12 --seed 2300 --imaging mixed
  --distractors microtubule,actin,gold,ice,edge,membrane --size-range 0.6,1.8`` (random seed 2300: no
  training pool's).  Any ranking or calibration would be chosen here.
* ``test`` (``--test G``): the cached maps of ``bench_generalization.py`` (cross-domain, size and
  particle-free distractor sets), the confirmation.

    python benchmarks/bench_score.py make V
    python benchmarks/bench_score.py score V --weights twohead [--tag NAME] [--test G] [--json out.json]
    python benchmarks/bench_score.py sizes V --tag twohead --grid '[{}, {"min_particle_size": 128}]'

``sizes`` re-post-processes the cached validation maps with each set of ``PostprocessParams`` fields in
``--grid`` (the others at their defaults) and prints precision, recall and F1, and recall per bin of
particle diameter (voxels across: the diameter of a ball of the particle's mask volume): whether a
post-processing setting, rather than the networks, loses a size of particle.

``score`` predicts the validation tomograms that have no cached maps (whole volume, ``as-is`` polarity,
as ``detect``'s default), post-processes every tomogram on the synchronous scheduler with the default
``PostprocessParams`` except ``min_score`` 0 (every pick, so that what the default ``--min-score``
removes is counted: ``true_picks_below_0.15``).  Use ``CRYODET_THREADS=1 OMP_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import _maps, average_precision  # noqa: E402

from cryodet_dask.evaluation import match_centres  # noqa: E402
from cryodet_dask.postprocessing import PostprocessParams, postprocess  # noqa: E402

RANKINGS = ("score", "mask", "score*mask")
CUTS = (0.0, 0.05, 0.1, 0.15, 0.2)
BINS = (-np.inf, 0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0, np.inf)


def make(root: Path) -> None:
    from cryodet_dask.training import PoolRanges, simulate_pool

    ranges = PoolRanges(imaging="mixed", distractors=("microtubule", "actin", "gold", "ice", "edge", "membrane"),
                        size_range=(0.6, 1.8))
    simulate_pool(root / "pool", 12, seed=2300, ranges=ranges, progress=True)


def _postprocess(d: Path, tag: str, params: PostprocessParams) -> tuple[Any, pd.DataFrame, float]:
    """Tomogram folder ``d``'s cached maps post-processed with ``params`` (synchronous), its true particles
    (empty without ``particles.csv``) and the maps' scale to the simulation's grid."""
    import dask
    import dask.array as da

    z = _maps(d, tag)
    with dask.config.set(scheduler="synchronous"):
        res = postprocess(da.from_array(z["mask"], chunks=128), da.from_array(z["center"], chunks=128), params)
    table = d / "particles.csv"
    truth = pd.read_csv(table) if table.exists() else pd.DataFrame(columns=["z", "y", "x", "n_voxels"])
    return res, truth, float(z.get("scale", 1.0))


def _picks(d: Path, tag: str) -> pd.DataFrame:
    """Every pick of tomogram folder ``d`` with its statistics (score, mask: mean mask probability, n_voxels)
    and whether it is true."""
    # every pick: the default cut-off is measured below
    res, t, scale = _postprocess(d, tag, PostprocessParams(min_score=0.0))
    pred = np.asarray(res.centers, dtype=np.float64).reshape(-1, 3)
    truth = t[["z", "y", "x"]].to_numpy(np.float64) * scale
    true = np.zeros(len(pred), bool)
    if len(pred) and len(truth):
        _, match = match_centres(pred, truth, RADIUS)
        true = match >= 0
    return pd.DataFrame({"score": np.asarray(res.center_scores, np.float64), "mask": np.asarray(res.scores),
                         "n_voxels": np.asarray(res.n_voxels, np.float64), "true": true, "n_true": len(truth),
                         "folder": str(d)})


def _summary(frames: list[pd.DataFrame]) -> dict[str, Any]:
    picks = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["score", "mask", "true"])
    n_true = int(sum(int(f["n_true"].iloc[0]) for f in frames if len(f))) or 1
    cut = PostprocessParams().min_score
    low = picks["score"] < cut
    out: dict[str, Any] = {"picks": len(picks), "true_picks": int(picks["true"].sum()), "particles": n_true,
                           f"true_picks_below_{cut:g}": int((picks["true"] & low).sum()),
                           f"false_picks_below_{cut:g}": int((~picks["true"] & low).sum())}
    for r in RANKINGS:
        values = picks["score"] * picks["mask"] if r == "score*mask" else picks[r]
        out[f"ap_{r}"] = round(average_precision(values.to_numpy(np.float64), picks["true"].to_numpy(), n_true), 4)
    by_cut = {}
    for c in CUTS:  # precision, recall and F1 if --min-score were c (the one-to-one matches kept)
        keep = picks["score"] >= c
        tp = int((picks["true"] & keep).sum())
        fp = int((~picks["true"] & keep).sum())
        p, r = tp / max(tp + fp, 1), tp / n_true
        by_cut[f"{c:g}"] = {"tp": tp, "fp": fp, "precision": round(p, 4), "recall": round(r, 4),
                           "f1": round(2 * p * r / max(p + r, 1e-12), 4)}
    out["min_score"] = by_cut
    rel = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (picks["score"] >= lo) & (picks["score"] < hi)
        if sel.any():
            rel.append({"bin": f"{lo:g}-{hi:g}", "picks": int(sel.sum()),
                        "fraction_true": round(float(picks.loc[sel, "true"].mean()), 3)})
    out["reliability"] = rel
    return out


def _folders(root: Path) -> dict[str, list[Path]]:
    """Validation: by imaging mode; test: bench_generalization's sets."""
    groups: dict[str, list[Path]] = {}
    pool = root / "pool" / "pool.json"
    if pool.exists():
        for m in json.loads(pool.read_text())["members"]:
            mode = m["conditions"].get("imaging", "fourier")
            groups.setdefault(f"validation/{mode}", []).append(root / "pool" / m["name"])
        return groups
    for d in sorted({p.parent for p in root.glob("**/maps_*.npz")}):  # a folder once, whatever maps it caches
        rel = d.relative_to(root).parts
        key = "/".join(rel[:3] if rel[0] == "distractors" else rel[:2] if rel[0].startswith("size") else rel[:1])
        if rel[0] == "distractors" and ("absent" in rel[2] if len(rel) > 2 else False):
            continue
        groups.setdefault("test/" + key, []).append(d)
    return groups


def score(root: Path, weights: str, test: Path | None, tag: str | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_generalization import predict

    tag = tag or weights  # the name of the cached maps (bench_generalization.py score's --tag)
    val = _folders(root)
    predict(root, [d for ds in val.values() for d in ds], weights, tag)
    groups = dict(val)
    if test is not None:
        groups.update(_folders(test))
    result: dict[str, Any] = {"weights": weights, "radius": RADIUS, "sets": {}}
    frames_by: dict[str, list[pd.DataFrame]] = {}
    for key, dirs in groups.items():
        frames = [_picks(d, tag) for d in dirs if (d / f"maps_{tag}.npz").exists()]
        frames_by[key] = frames
        result["sets"][key] = _summary(frames)
        s = result["sets"][key]
        cut = PostprocessParams().min_score
        print(f"{key:40s} picks {s['picks']:5d} true {s['true_picks']:5d} particles {s['particles']:5d}  "
              f"true<cut {s[f'true_picks_below_{cut:g}']:4d}  "
              + "  ".join(f"AP[{r}] {s['ap_' + r]:.3f}" for r in RANKINGS), flush=True)
    for part in ("validation", "test"):
        frames = [f for k, fs in frames_by.items() if k.startswith(part) for f in fs]
        if frames:
            result[part] = _summary(frames)
            print(f"{part} pooled: " + json.dumps(result[part]))
    return result


RADIUS = 5.0
SIZE_BINS = (0, 8, 10, 12, 14, 16, 20, 25, 33, 100)


def sizes(root: Path, tag: str, grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting of ``grid``: pooled precision, recall, F1 and recall per diameter bin on ``root``'s pool."""
    dirs = [d for ds in _folders(root).values() for d in ds if (d / f"maps_{tag}.npz").exists()]
    if not dirs:
        sys.exit(f"no cached maps_{tag}.npz under {root}: run 'score {root} --tag {tag}' first")
    out = []
    for params in grid:
        tp = fp = n = 0
        found_by: list[pd.DataFrame] = []
        for d in dirs:
            res, t, scale = _postprocess(d, tag, PostprocessParams(**params))
            pred = np.asarray(res.centers, np.float64).reshape(-1, 3)
            truth = t[["z", "y", "x"]].to_numpy(np.float64) * scale
            s, match = match_centres(pred, truth, RADIUS)
            found = np.zeros(len(truth), bool)
            found[match[match >= 0]] = True
            tp, fp, n = tp + s.tp, fp + s.fp, n + len(truth)
            diameter = np.cbrt(6.0 * t["n_voxels"].to_numpy(np.float64) / np.pi) * scale
            found_by.append(pd.DataFrame({"diameter": diameter, "found": found}))
        df = pd.concat(found_by, ignore_index=True)
        rec = df.groupby(pd.cut(df["diameter"], SIZE_BINS), observed=True)["found"].agg(["mean", "size"])
        p, r = tp / max(tp + fp, 1), tp / max(n, 1)
        row = {"params": params, "precision": round(p, 4), "recall": round(r, 4),
               "f1": round(2 * p * r / max(p + r, 1e-12), 4), "false_picks": fp,
               "recall_by_diameter": {str(b): [round(float(m), 3), int(k)] for b, (m, k) in rec.iterrows()}}
        out.append(row)
        print(json.dumps(params), f"precision {p:.3f} recall {r:.3f} F1 {row['f1']:.3f} false picks {fp}")
        print("    recall by diameter (voxels): " + "  ".join(f"{b} {m:.2f} ({k})" for b, (m, k) in rec.iterrows()),
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    global RADIUS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("make", "score", "sizes"))
    ap.add_argument("root", type=Path)
    ap.add_argument("--weights", default="twohead")
    ap.add_argument("--tag", default=None, help="name of the cached maps (default: --weights)")
    ap.add_argument("--test", type=Path, default=None, help="bench_generalization.py's folder (cached maps)")
    ap.add_argument("--radius", type=float, default=RADIUS)
    ap.add_argument("--grid", type=json.loads, default=[{}],
                    help="sizes: a JSON list of PostprocessParams field sets (default: the defaults only)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    RADIUS = a.radius
    if a.command == "make":
        make(a.root)
        return 0
    if a.command == "sizes":
        rows = sizes(a.root, a.tag or a.weights, a.grid)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
        return 0
    result = score(a.root, a.weights, a.test, a.tag)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
