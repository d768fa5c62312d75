"""Species: per-species picking quality of a multi-species network on held-out simulated tomograms.

Data: a pool of randomized simulations (``simulate-pool``) whose random seed is
used neither for training (1000) nor for validation (2000) nor for choosing any
default: seed 3000, 8 tomograms of 64 x 160 x 160 (``make``).  Every particle's
species is its template (the simulator's ``class`` column).

Predictions are whole-volume forward passes (``models.predict_array``, equal
to the chunked ``predict`` to float rounding); the post-processing is the
chunked ``postprocess`` with ``detect``'s defaults (``DetectParams.resolve_postprocess``:
with species, each species' fusion distance and minimum size from the diameter its
checkpoint records, at the tomogram's voxel size) on the synchronous scheduler
(equal to the whole-volume reference voxel for voxel).  Scores,
pooled over the tomograms:

* per species, one to one within the species (Hungarian, radius 5 voxels):
  precision, recall, F1;
* per species, the CZ cryo-ET challenge's counting: a true particle is found
  when a pick of its species lies within half its radius (the radius of a
  ball of its mask volume), FP = picks - TP, F-beta with beta = 4;
* the confusion matrix between species (a species-agnostic one-to-one
  matching, then (true, picked) counts);
* species-agnostic precision, recall and F1 (classes ignored), to compare
  with a species-agnostic network on the same tomograms.

Commands::

    python benchmarks/bench_species.py make DIR [--count 24]     # the held-out pool (seed 3000; 8 by default)
    python benchmarks/bench_species.py score DIR --weights six-species.pt [--json OUT] [--png CONFUSION] [--tta flips]
    python benchmarks/bench_species.py score DIR --weights twohead     # species-agnostic comparison
    python benchmarks/bench_species.py score DIR --weights W --min-score 1bxn:0.05,7n4y:0.08   # detect's syntax
    python benchmarks/bench_species.py score DIR --weights W --sweep 0.02,0.05,0.1,0.15,0.2

``DIR`` is the folder ``make`` wrote (its pool in ``DIR/pool``) or any ``simulate-pool`` folder.
``--sweep T1,T2,...`` post-processes once at the lowest threshold and then, for each threshold, keeps
the picks whose score reaches it: each species' precision, recall, F1 and CZII F4 per threshold (a
species' scores depend on its own picks only).  It is for choosing per-species thresholds on a
validation pool; ``--min-score`` then measures the choice exactly.

``calibrate`` fits the network's pick probability (``cryodet_dask.calibration``, the logistic model the
species-agnostic networks carry) on every pick (``--min-score 0``) of the pool ``V``, a pick true when it
matches a particle of any species one to one within 5 voxels, checks it on the pool ``--test`` (average
precision of the probability against the raw score, calibration error over 10 bins), and writes a copy of
the checkpoint that carries it::

    python benchmarks/bench_species.py calibrate V --weights six-species.pt --out calibrated.pt --test Q [--json OUT]

``probability`` checks the probability a checkpoint already carries on another pool, the same way, for
example under ``--tta flips`` (whose averaged maps the probability was not fitted on)::

    python benchmarks/bench_species.py probability DIR --weights six-species.pt [--tta flips] [--polarity both] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryodet_dask import models
from cryodet_dask.cli._common import min_score_arg
from cryodet_dask.evaluation import match_centres
from cryodet_dask.evaluation_species import confusion_png, pooled_species_scores
from cryodet_dask.postprocessing import postprocess, quantize_species

HELD_OUT_SEED, HELD_OUT_COUNT, HELD_OUT_SHAPE = 3000, 8, (64, 160, 160)
RADIUS = 5.0


def make(root: Path, count: int = HELD_OUT_COUNT) -> None:
    from cryodet_dask.training import simulate_pool

    # tomogram i depends only on (seed, i): a larger count extends the same pool
    simulate_pool(root / "pool", count, seed=HELD_OUT_SEED, shape=HELD_OUT_SHAPE, progress=True)


def _weights(spec: str) -> str:
    if spec == "twohead":
        return str(models.default_weights().twohead)
    return spec


def _postprocessed(net: Any, d: Path, tta: str = "none", min_score: float | dict[str, float] | None = None,
                   polarity: str = "as-is") -> tuple[Any, np.ndarray | None, dict[str, Any], Any]:
    """One tomogram predicted whole and post-processed as detect would: the detections, the quantized
    species map (None for one species), the post-processing keywords and the per-species parameters."""
    import dask
    import dask.array as da
    import mrcfile

    from cryodet_dask.pipeline import DetectParams

    with mrcfile.open(d / "tomogram.mrc") as m:
        vol = np.array(m.data, dtype=np.float32)
        voxel_size = float(m.voxel_size.x)
    y = models.predict_array(net, vol, tta=tta, polarity=polarity)
    cfg = net.config
    species = None
    if len(cfg.species) > 1:
        i = net.head_index("species")
        species = quantize_species(y[i : i + len(cfg.species)])
    # detect's defaults: with species, each species' fusion distance and minimum size from its diameter
    diameters = {s.name: s.diameter for s in cfg.species} if species is not None else {}
    params = DetectParams() if min_score is None else DetectParams(min_score=min_score)
    kw, sp = params.resolve_postprocess(voxel_size, diameters)
    with dask.config.set(scheduler="synchronous"):
        det = postprocess(da.from_array(y[net.head_index("mask")], chunks=128),
                          da.from_array(y[net.head_index("center")], chunks=128),
                          species=species, species_names=cfg.species.names, species_params=sp, **kw)
    return det, species, kw, sp


def _detect(net: Any, d: Path, tta: str = "none", min_score: float | dict[str, float] | None = None,
            polarity: str = "as-is") -> pd.DataFrame:
    table = _postprocessed(net, d, tta, min_score, polarity)[0].to_dataframe()
    if "class" not in table.columns:
        table["class"] = net.config.species.names[0]
    return table


def _czii(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, tuple[int, int, int]]:
    """Per species (tp, fp, fn) with the CZ challenge's counting (radius: a ball of the mask volume)."""
    from scipy.spatial import cKDTree

    out = {}
    radii = np.cbrt(3.0 * truth["n_voxels"].to_numpy(np.float64) / (4.0 * np.pi))
    for s in sorted(set(truth["class"]) | set(pred["class"])):
        t = truth["class"].to_numpy() == s
        p = pred.loc[pred["class"] == s, ["z", "y", "x"]].to_numpy(np.float64)
        if not t.any() or len(p) == 0:
            out[s] = (0, len(p), int(t.sum()))
            continue
        hits = cKDTree(p).query_ball_point(truth.loc[t, ["z", "y", "x"]].to_numpy(np.float64), r=0.5 * radii[t])
        tp = int(sum(1 for h in hits if h))
        out[s] = (tp, len(p) - tp, int(t.sum()) - tp)
    return out


def _f(p: float, r: float, beta: float) -> float:
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r) if (b2 * p + r) > 0 else 0.0


def _pool(root: Path) -> list[Path]:
    """The simulated tomograms under ``root/pool`` (``make``'s layout), else under ``root``."""
    base = root / "pool" if (root / "pool").is_dir() else root
    found = sorted(p.parent for p in base.rglob("simulation.json"))
    if not found:
        sys.exit(f"no simulated tomograms (simulation.json) under {base}")
    return found


def _per_species(preds: list[pd.DataFrame], truths: list[pd.DataFrame],
                 every: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per species: counts, precision, recall and F1 (one to one within the species) and CZII F4; and the
    confusion matrix."""
    table, conf = pooled_species_scores(list(zip(preds, truths)), RADIUS, species=every)
    cz = pd.DataFrame([_czii(p, t) for p, t in zip(preds, truths)])
    cz_sum = {s: tuple(int(sum(c[k] for c in cz[s] if isinstance(c, tuple))) for k in range(3)) for s in cz.columns}
    table["czii_f4"] = [
        _f(cz_sum[s][0] / max(cz_sum[s][0] + cz_sum[s][1], 1), cz_sum[s][0] / max(cz_sum[s][0] + cz_sum[s][2], 1), 4)
        if s in cz_sum else 0.0 for s in table.index]
    return table, conf


def sweep(preds: list[pd.DataFrame], truths: list[pd.DataFrame], names: list[str], every: list[str],
          thresholds: list[float]) -> pd.DataFrame:
    """Each species' F1 and CZII F4 at each threshold (picks with ``score`` >= it), one row per threshold."""
    rows = []
    for t in thresholds:
        table, _ = _per_species([p[p["score"] >= t] for p in preds], truths, every)
        for s in names:
            r = table.loc[s]
            rows.append({"min_score": t, "species": s, "precision": r["precision"], "recall": r["recall"],
                         "f1": r["f1"], "czii_f4": r["czii_f4"]})
    return pd.DataFrame(rows)


def _load(spec: str) -> Any:
    import torch

    torch.set_num_threads(int(os.environ.get("CRYODET_THREADS", "2")))
    return models.load(_weights(spec))


def _picks_and_truth(root: Path, net: Any, tta: str = "none", min_score: float | dict[str, float] | None = None,
                     polarity: str = "as-is") -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Each tomogram's picks (detect's defaults but ``min_score``) and its simulated particles."""
    preds, truths = [], []
    for d in _pool(root):
        pred = _detect(net, d, tta, min_score, polarity).assign(tomogram=d.name)
        truth = pd.read_csv(d / "particles.csv").assign(tomogram=d.name)
        preds.append(pred)
        truths.append(truth)
        print(f"{d.name}: {len(pred)} picks, {len(truth)} particles", flush=True)
    return preds, truths


def score(root: Path, spec: str, json_out: Path | None, png: Path | None, tta: str = "none",
          min_score: float | dict[str, float] | None = None, thresholds: list[float] | None = None) -> dict[str, Any]:
    net = _load(spec)
    names = list(net.config.species.names)
    t0 = time.perf_counter()
    if thresholds:
        min_score = min(thresholds)
    preds, truths = _picks_and_truth(root, net, tta, min_score)
    seconds = time.perf_counter() - t0
    # per-species one-to-one and confusion: per tomogram, then summed (particles of two tomograms never match)
    every = sorted(set().union(*(set(t["class"]) for t in truths)) | set(names))
    table, conf = _per_species(preds, truths, every)
    # species-agnostic
    marked = _marked(preds, truths)
    tp = int(marked["true"].sum())
    fp, fn = len(marked) - tp, sum(len(t) for t in truths) - tp
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    agnostic = dict(tp=tp, fp=fp, fn=fn, precision=prec, recall=rec, f1=_f(prec, rec, 1))
    result = {"weights": spec, "tta": tta, "min_score": min_score, "species": names, "seconds": round(seconds, 1),
              "per_species": table.reset_index().to_dict(orient="records"),
              "mean_czii_f4": float(table.loc[[s for s in names if s in table.index], "czii_f4"].mean()),
              "agnostic": agnostic, "confusion": conf.to_dict() if isinstance(conf, pd.DataFrame) else {}}
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table)
        if isinstance(conf, pd.DataFrame):
            print(conf)
    print(f"species-agnostic: precision {prec:.3f} recall {rec:.3f} F1 {agnostic['f1']:.3f}; "
          f"mean per-species CZII F4 {result['mean_czii_f4']:.3f}")
    if thresholds:
        sw = sweep(preds, truths, names, every, sorted(thresholds))
        result["sweep"] = sw.to_dict(orient="records")
        with pd.option_context("display.width", 160, "display.precision", 3):
            print(sw.pivot(index="min_score", columns="species", values="czii_f4").rename_axis(
                "CZII F4 at min_score"))
            print(sw.pivot(index="min_score", columns="species", values="f1").rename_axis("F1 at min_score"))
            print(sw.groupby("min_score")["czii_f4"].mean().rename("mean CZII F4"))
    if json_out:
        json_out.write_text(json.dumps(result, indent=1, default=float))
    if png and isinstance(conf, pd.DataFrame):
        confusion_png(png, conf, title=f"{Path(spec).name}: held-out pool (seed 3000), counts")
    return result


def _marked(preds: list[pd.DataFrame], truths: list[pd.DataFrame]) -> pd.DataFrame:
    """Every pick with ``true``: it matches a particle of any species one to one within ``RADIUS``."""
    out = []
    for p, t in zip(preds, truths):
        _, match = match_centres(p[["z", "y", "x"]].to_numpy(np.float64), t[["z", "y", "x"]].to_numpy(np.float64),
                                 RADIUS)
        # n_true and folder: the columns calibrate_score.summary reads
        out.append(p.assign(true=match >= 0, n_true=len(t), folder=p["tomogram"]))
    return pd.concat(out, ignore_index=True)


def _check(frame: pd.DataFrame, cal: Any) -> dict[str, Any]:
    """How well ``cal``'s probability ranks and means what it says on the marked picks ``frame`` (every pick,
    ``--min-score 0``), and on those that ``detect``'s default cut-off keeps."""
    from calibrate_score import ece, reliability, summary

    from cryodet_dask.pipeline import DetectParams

    kept = frame[frame["score"] >= DetectParams().min_score]  # what detect keeps at its default cut-off
    prob = cal.probability(kept["score"], kept["mask_score"], kept["n_voxels"])
    return {**summary(frame, cal), "ece_default_cut": round(ece(prob, kept["true"].to_numpy(np.float64)), 4),
            "mean_probability_default_cut": round(float(prob.mean()), 4),
            "fraction_true_default_cut": round(float(kept["true"].mean()), 4),
            "reliability": reliability(frame, cal)}


def probability(root: Path, spec: str, tta: str, json_out: Path | None, polarity: str = "as-is") -> dict[str, Any]:
    """Check the pick probability a checkpoint already carries on ``root``'s picks, under ``tta`` and ``polarity``."""
    net = _load(spec)
    cal = net.config.calibration
    if cal is None:
        raise SystemExit(f"{spec} carries no pick probability (bench_species.py calibrate writes one)")
    result = {"weights": spec, "tta": tta, "polarity": polarity, "pool": str(root),
              **_check(_marked(*_picks_and_truth(root, net, tta, min_score=0.0, polarity=polarity)), cal)}
    print(json.dumps(result), flush=True)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))
    return result


def calibrate(root: Path, spec: str, out: Path, test: Path | None, json_out: Path | None) -> dict[str, Any]:
    """Fit the pick probability on ``root``'s picks, check it on ``test``'s, write the calibrated checkpoint."""
    from cryodet_dask.calibration import fit_calibration

    net = _load(spec)
    val = _marked(*_picks_and_truth(root, net, min_score=0.0))
    cal = fit_calibration(val["score"], val["mask_score"], val["n_voxels"], val["true"],
                          fitted_on=f"{len(val)} picks of the pool {root.name} (bench_species.py calibrate), min-score 0")
    result: dict[str, Any] = {"weights": spec, "calibration": cal.to_dict()}
    sets = {"validation": val}
    if test is not None:
        sets["test"] = _marked(*_picks_and_truth(test, net, min_score=0.0))
    for name, frame in sets.items():
        result[name] = _check(frame, cal)
        print(name, json.dumps(result[name]), flush=True)
    net.config = net.config.replace(score_calibration=cal.to_dict())
    models.save(net, out)
    print(f"wrote {out}")
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("root", type=Path)
    m.add_argument("--count", type=int, default=HELD_OUT_COUNT,
                   help="tomograms (default %(default)s; more extend the same pool: its first 8 are the default's)")
    s = sub.add_parser("score")
    s.add_argument("root", type=Path)
    s.add_argument("--weights", required=True)
    s.add_argument("--json", type=Path, default=None)
    s.add_argument("--png", type=Path, default=None)
    s.add_argument("--tta", choices=("none", "flips"), default="none", help="test-time augmentation (detect --tta)")
    s.add_argument("--min-score", type=min_score_arg, default=None, metavar="SCORE|NAME:SCORE,...",
                   help="detect --min-score (default: detect's default)")
    s.add_argument("--sweep", type=lambda t: [float(v) for v in t.split(",")], default=None, metavar="T1,T2,...",
                   help="per-species scores at each of these thresholds (see above)")
    c = sub.add_parser("calibrate")
    c.add_argument("root", type=Path, help="the pool the probability is fitted on (a validation pool)")
    c.add_argument("--weights", required=True)
    c.add_argument("--out", type=Path, required=True, help="the calibrated copy of the checkpoint to write")
    c.add_argument("--test", type=Path, default=None, help="a pool to check it on (used for no fit)")
    c.add_argument("--json", type=Path, default=None)
    c.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    pr = sub.add_parser("probability")
    pr.add_argument("root", type=Path, help="a pool to check the checkpoint's pick probability on")
    pr.add_argument("--weights", required=True)
    pr.add_argument("--tta", choices=("none", "flips"), default="none", help="test-time augmentation (detect --tta)")
    pr.add_argument("--polarity", choices=("as-is", "both"), default="as-is", help="detect --polarity")
    pr.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.cmd == "make":
        make(a.root, a.count)
    elif a.cmd == "probability":
        probability(a.root, a.weights, a.tta, a.json, a.polarity)
    elif a.cmd == "calibrate":
        if a.out.exists() and not a.overwrite:  # before any work: a checkpoint this run did not write stays
            ap.error(f"{a.out} exists; give --overwrite to replace it")
        calibrate(a.root, a.weights, a.out, a.test, a.json)
    else:
        if a.sweep and a.min_score is not None:
            ap.error("--sweep and --min-score do not go together")
        score(a.root, a.weights, a.json, a.png, a.tta, a.min_score, a.sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
