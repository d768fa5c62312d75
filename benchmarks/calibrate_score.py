"""Fit a network's pick probability (``cryodet_dask.calibration``) on validation picks, check it on test picks,
and write a copy of the checkpoint that carries it.

The picks are ``bench_score.py``'s: every pick of the network at default post-processing with
``--min-score 0`` on the validation pool ``V`` (``bench_score.py make V``: random seed 2300, mixed imaging,
every distractor kind, sizes 0.6-1.8x; no training pool's seed), true when within 5 voxels of a simulated
particle, one to one.  The model is fitted there only.  ``--test G`` (``bench_generalization.py``'s cached
maps: cross-domain, sizes, particle-free distractor sets) is the confirmation: per set, the average
precision (AP) of the probability against the raw ``score``'s, and the reliability (expected calibration
error, ECE: the mean gap between the probability and the fraction of true picks, over 10 bins, weighted
by picks).

    python benchmarks/calibrate_score.py V --weights twohead --out twohead_calibrated.pt --test G [--json out.json]

``bench_score.py score V --weights W --tag T`` must have cached the maps of ``V`` (and ``bench_generalization.py``
those of ``G``) under the same ``--tag``.
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
from bench_quality import average_precision  # noqa: E402
from bench_score import _folders, _picks  # noqa: E402

from cryodet_dask import models  # noqa: E402
from cryodet_dask.calibration import ScoreCalibration, fit_calibration  # noqa: E402


def picks(d: Path, tag: str) -> pd.DataFrame:
    """Every pick of tomogram folder ``d`` (``bench_score.py``'s): score, mask_score, n_voxels, true."""
    return _picks(d, tag).rename(columns={"mask": "mask_score"})


def ece(p: np.ndarray, true: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    gap = sum(abs(p[which == b].mean() - true[which == b].mean()) * (which == b).sum()
              for b in range(bins) if (which == b).any())
    return float(gap / max(len(p), 1))


def summary(frame: pd.DataFrame, cal: ScoreCalibration) -> dict[str, Any]:
    n_true = int(frame.groupby("folder")["n_true"].first().sum())
    true = frame["true"].to_numpy()
    prob = cal.probability(frame["score"], frame["mask_score"], frame["n_voxels"])
    return {"picks": len(frame), "true_picks": int(true.sum()), "particles": n_true,
            "ap_score": round(average_precision(frame["score"].to_numpy(), true, n_true), 4),
            "ap_probability": round(average_precision(prob, true, n_true), 4),
            "mean_probability": round(float(prob.mean()), 4) if len(prob) else None,
            "fraction_true": round(float(true.mean()), 4) if len(true) else None,
            "ece": round(ece(prob, true.astype(np.float64)), 4)}


def reliability(frame: pd.DataFrame, cal: ScoreCalibration) -> list[dict[str, Any]]:
    prob = cal.probability(frame["score"], frame["mask_score"], frame["n_voxels"])
    true = frame["true"].to_numpy(np.float64)
    rows = []
    for lo in np.arange(0.0, 1.0, 0.1):
        sel = (prob >= lo) & ((prob < lo + 0.1) if lo < 0.85 else (prob <= 1.0))
        if sel.any():
            rows.append({"bin": f"{lo:.1f}-{lo + 0.1:.1f}", "picks": int(sel.sum()),
                         "mean_probability": round(float(prob[sel].mean()), 3),
                         "fraction_true": round(float(true[sel].mean()), 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="bench_score.py's validation folder (V)")
    ap.add_argument("--weights", required=True, help="checkpoint, or 'twohead'")
    ap.add_argument("--tag", default=None, help="name of the cached maps (default: --weights)")
    ap.add_argument("--out", type=Path, required=True, help="the calibrated copy of the checkpoint to write")
    ap.add_argument("--test", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.overwrite:  # before any work: a checkpoint this run did not write stays
        ap.error(f"{a.out} exists; give --overwrite to replace it")
    tag = a.tag or a.weights
    groups = _folders(a.root)
    if a.test is not None:
        groups.update(_folders(a.test))
    frames = {k: [picks(d, tag).assign(set=k) for d in ds if (d / f"maps_{tag}.npz").exists()]
              for k, ds in groups.items()}
    every = pd.concat([f for fs in frames.values() for f in fs], ignore_index=True)
    val = every[every["set"].str.startswith("validation")]
    cal = fit_calibration(val["score"], val["mask_score"], val["n_voxels"], val["true"],
                          fitted_on=f"{len(val)} picks of bench_score.py's validation pool (random seed 2300: mixed "
                                    "imaging, every distractor kind, sizes 0.6-1.8x), min-score 0")
    result: dict[str, Any] = {"weights": a.weights, "calibration": cal.to_dict(), "sets": {}}
    for part, sel in (("validation", every["set"].str.startswith("validation")),
                      ("test", every["set"].str.startswith("test"))):
        if sel.any():
            result[part] = summary(every[sel], cal)
            result[part + "_reliability"] = reliability(every[sel], cal)
            print(part, json.dumps(result[part]), flush=True)
    for key in ("test/fourier", "test/tiltseries", "test/distractors", "test/size_scale", "test/size_voxel"):
        sel = every["set"].str.startswith(key)
        if sel.any():
            result["sets"][key] = summary(every[sel], cal)
            print(key, json.dumps(result["sets"][key]), flush=True)
    net = models.load(models.default_weights().twohead if a.weights == "twohead" else a.weights)
    net.config = net.config.replace(score_calibration=cal.to_dict())
    models.save(net, a.out)
    print(f"wrote {a.out}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
