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

    python benchmarks/bench_species.py make DIR                  # the held-out pool (seed 3000)
    python benchmarks/bench_species.py score DIR --weights six-species.pt [--json OUT] [--png CONFUSION] [--tta flips]
    python benchmarks/bench_species.py score DIR --weights twohead     # species-agnostic comparison
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
from cryodet_dask.evaluation import match_centres
from cryodet_dask.evaluation_species import confusion_png, pooled_species_scores
from cryodet_dask.postprocessing import postprocess, quantize_species

HELD_OUT_POOL = dict(count=8, seed=3000, shape=(64, 160, 160))
RADIUS = 5.0


def make(root: Path) -> None:
    from cryodet_dask.training import simulate_pool

    simulate_pool(root / "pool", progress=True, **HELD_OUT_POOL)  # type: ignore[arg-type]


def _weights(spec: str) -> str:
    if spec == "twohead":
        return str(models.default_weights().twohead)
    return spec


def _detect(net: Any, d: Path, tta: str = "none") -> pd.DataFrame:
    import dask
    import dask.array as da
    import mrcfile

    from cryodet_dask.pipeline import DetectParams

    with mrcfile.open(d / "tomogram.mrc") as m:
        vol = np.array(m.data, dtype=np.float32)
        voxel_size = float(m.voxel_size.x)
    y = models.predict_array(net, vol, tta=tta)
    cfg = net.config
    species = None
    if len(cfg.species) > 1:
        i = net.head_index("species")
        species = quantize_species(y[i : i + len(cfg.species)])
    # detect's defaults: with species, each species' fusion distance and minimum size from its diameter
    diameters = {s.name: s.diameter for s in cfg.species} if species is not None else {}
    kw, sp = DetectParams().resolve_postprocess(voxel_size, diameters)
    with dask.config.set(scheduler="synchronous"):
        det = postprocess(da.from_array(y[net.head_index("mask")], chunks=128),
                          da.from_array(y[net.head_index("center")], chunks=128),
                          species=species, species_names=cfg.species.names, species_params=sp, **kw)
    table = det.to_dataframe()
    if "class" not in table.columns:
        table["class"] = cfg.species.names[0]
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


def score(root: Path, spec: str, json_out: Path | None, png: Path | None, tta: str = "none") -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(os.environ.get("CRYODET_THREADS", "2")))
    net = models.load(_weights(spec))
    names = list(net.config.species.names)
    preds, truths = [], []
    t0 = time.perf_counter()
    for d in sorted(p.parent for p in (root / "pool").rglob("simulation.json")):
        pred = _detect(net, d, tta).assign(tomogram=d.name)
        truth = pd.read_csv(d / "particles.csv").assign(tomogram=d.name)
        preds.append(pred)
        truths.append(truth)
        print(f"{d.name}: {len(pred)} picks, {len(truth)} particles", flush=True)
    seconds = time.perf_counter() - t0
    # per-species one-to-one and confusion: per tomogram, then summed (particles of two tomograms never match)
    every = sorted(set().union(*(set(t["class"]) for t in truths)) | set(names))
    table, conf = pooled_species_scores(list(zip(preds, truths)), RADIUS, species=every)
    cz = pd.DataFrame([_czii(p, t) for p, t in zip(preds, truths)])
    cz_sum = {s: tuple(int(sum(c[k] for c in cz[s] if isinstance(c, tuple))) for k in range(3)) for s in cz.columns}
    table["czii_f4"] = [
        _f(cz_sum[s][0] / max(cz_sum[s][0] + cz_sum[s][1], 1), cz_sum[s][0] / max(cz_sum[s][0] + cz_sum[s][2], 1), 4)
        if s in cz_sum else 0.0 for s in table.index]
    # species-agnostic
    tp = fp = fn = 0
    for p, t in zip(preds, truths):
        s, _ = match_centres(p[["z", "y", "x"]].to_numpy(), t[["z", "y", "x"]].to_numpy(), RADIUS)
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    agnostic = dict(tp=tp, fp=fp, fn=fn, precision=prec, recall=rec, f1=_f(prec, rec, 1))
    result = {"weights": spec, "tta": tta, "species": names, "seconds": round(seconds, 1),
              "per_species": table.reset_index().to_dict(orient="records"),
              "mean_czii_f4": float(table.loc[[s for s in names if s in table.index], "czii_f4"].mean()),
              "agnostic": agnostic, "confusion": conf.to_dict() if isinstance(conf, pd.DataFrame) else {}}
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table)
        if isinstance(conf, pd.DataFrame):
            print(conf)
    print(f"species-agnostic: precision {prec:.3f} recall {rec:.3f} F1 {agnostic['f1']:.3f}; "
          f"mean per-species CZII F4 {result['mean_czii_f4']:.3f}")
    if json_out:
        json_out.write_text(json.dumps(result, indent=1, default=float))
    if png and isinstance(conf, pd.DataFrame):
        confusion_png(png, conf, title=f"{Path(spec).name}: held-out pool (seed 3000), counts")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("root", type=Path)
    s = sub.add_parser("score")
    s.add_argument("root", type=Path)
    s.add_argument("--weights", required=True)
    s.add_argument("--json", type=Path, default=None)
    s.add_argument("--png", type=Path, default=None)
    s.add_argument("--tta", choices=("none", "flips"), default="none", help="test-time augmentation (detect --tta)")
    a = ap.parse_args(argv)
    if a.cmd == "make":
        make(a.root)
    else:
        score(a.root, a.weights, a.json, a.png, a.tta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
