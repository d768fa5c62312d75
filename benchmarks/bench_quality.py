"""Detection quality: validation sweeps that choose the defaults, and held-out robustness (issue 13).

Data sets (all simulated; none of their seeds is used by a training pool, which
use seeds 1000 (training) and 2000 (validation loss), see docs/models.md):

* ``validation``: two default-condition tomograms 96 x 256 x 256 (seeds 301,
  302; 302 with inverted contrast) and the 8 tomograms of the validation pool
  (seed 2000, random conditions).  Only these choose post-processing defaults.
* ``test``: three held-out default-condition tomograms 96 x 256 x 256 (seeds
  4242, 4243, 4244; SNR 0.3, +-60 degrees, -3 um), for the Results table.
* ``robustness``: held-out 64 x 192 x 192 tomograms, one per row of SNR {0.1,
  0.3, 1} x tilt {40, 60} x defocus {-1.5, -5} x polarity {as simulated,
  inverted}, and voxel size {7, 14} Å resampled to 10 Å (``--rescale``), seeds
  7000 + row.

Commands (each caches what it computes in DIR)::

    python benchmarks/bench_quality.py make DIR [--sets validation,test,robustness] [--replicates 3]
    python benchmarks/bench_quality.py predict DIR --set validation --weights pair|twohead|SEG,CEN|TWOHEAD \
        [--polarity both|as-is] [--tag NAME]
    python benchmarks/bench_quality.py sweep DIR --weights pair [--json out.json] [--png curves.png]
    python benchmarks/bench_quality.py table DIR --set test        # the README's Results table
    python benchmarks/bench_quality.py around DIR --weights twohead --png docs/img/validation_curves.png
    python benchmarks/bench_quality.py score DIR --set robustness --weights pair [--params JSON]
    python benchmarks/bench_quality.py curve DIR --weights 'out/twohead.epoch*.pt' [--params JSON]

Predictions are whole-volume forward passes (``models.predict_array``, with ``--polarity``
as ``detect``'s: ``both`` averages the outputs on the tomogram and on its inverted contrast; equal to
the chunked ``predict`` to float rounding) and post-processing is the
chunked ``postprocess`` on the synchronous scheduler (equal to the
whole-volume reference voxel for voxel, and 2x faster); both are tested
elsewhere.  A prediction is a TP when its
centroid lies within ``--radius`` voxels (default 5) of a true centre, one to
one (Hungarian); F-beta uses beta = 4.  AP is the average precision of the
particles ranked by their ``score``.  ``cz_f4`` counts as the CZ cryo-ET
challenge does, with one class: a true particle is found when any pick lies
within half its radius (radius of a ball of its mask volume), FP = picks - TP,
F-beta with beta = 4 over the pooled counts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryodet_dask import models
from cryodet_dask.evaluation import match_centres
from cryodet_dask.postprocessing import PostprocessParams, postprocess

VALIDATION_SEEDS = (301, 302)
TEST_SEEDS = (4242, 4243, 4244)
VALIDATION_POOL = dict(count=8, seed=2000, shape=(64, 160, 160))
ROBUST_SHAPE = (64, 192, 192)


def _robustness_rows(replicate: int = 0) -> list[dict[str, Any]]:
    """The robustness rows; ``replicate`` k > 0 gives another tomogram per row (seeds 7000 + 100 k + row)."""
    rows = []
    for snr, tilt, defocus, inverted in itertools.product((0.1, 0.3, 1.0), (40.0, 60.0), (-1.5, -5.0),
                                                          (False, True)):
        rows.append(dict(snr=snr, tilt_range=tilt, defocus_um=defocus, inverted=inverted, voxel_size=10.0))
    for vs in (7.0, 14.0):
        rows.append(dict(snr=0.3, tilt_range=60.0, defocus_um=-3.0, inverted=False, voxel_size=vs))
    for i, r in enumerate(rows):
        r["seed"] = 7000 + 100 * replicate + i
        r["name"] = f"r{i:02d}"
    return rows


def make(root: Path, sets: list[str], replicates: int = 1) -> None:
    from cryodet_dask.simulation import simulate
    from cryodet_dask.training import invert_polarity, simulate_pool

    if "validation" in sets:
        for s in VALIDATION_SEEDS:
            d = root / "validation" / f"v{s}"
            if not (d / "simulation.json").exists():
                simulate(d, shape=(96, 256, 256), seed=s, overwrite=True)
                if s == 302:
                    invert_polarity(d / "tomogram.mrc")
        simulate_pool(root / "validation" / "pool", VALIDATION_POOL["count"], seed=VALIDATION_POOL["seed"],
                      shape=VALIDATION_POOL["shape"])
    if "test" in sets:
        for s in TEST_SEEDS:
            d = root / "test" / f"t{s}"
            if not (d / "simulation.json").exists():
                simulate(d, shape=(96, 256, 256), seed=s, overwrite=True)
    if "robustness" in sets:
        rows = [(k, r) for k in range(replicates) for r in _robustness_rows(k)]
        for k, r in rows:
            d = root / ("robustness" if k == 0 else f"robustness_rep{k}") / r["name"]
            if (d / "simulation.json").exists():
                continue
            shape = tuple(int(round(s * 10.0 / r["voxel_size"])) for s in ROBUST_SHAPE)
            simulate(d, shape=shape, seed=r["seed"], snr=r["snr"], tilt_range=r["tilt_range"],
                     defocus_um=r["defocus_um"], voxel_size=r["voxel_size"], overwrite=True)
            if r["inverted"]:
                invert_polarity(d / "tomogram.mrc")
            (d / "row.json").write_text(json.dumps(r))


def _tomograms(root: Path, which: str) -> list[Path]:
    """Tomogram folders of the sets (or sub-folders) named in ``which``, comma-separated."""
    return sorted(p.parent for w in which.split(",") for p in (root / w).rglob("simulation.json"))


def _weights(spec: str) -> tuple[Any, ...]:
    w = models.default_weights()
    if spec == "pair":
        return (w.segnet, w.centernet)
    if spec == "twohead":
        return (w.twohead,)
    return tuple(spec.split(","))


def _rescaled(vol: np.ndarray, voxel_size: float, target: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.zoom(vol, voxel_size / target, order=1)


def predict(root: Path, which: str, spec: str, tag: str, polarity: str = "as-is", invert: bool = False) -> None:
    import mrcfile
    import torch

    torch.set_num_threads(int(__import__("os").environ.get("CRYODET_THREADS", "2")))
    nets = [models.load(p) for p in _weights(spec)]
    for d in _tomograms(root, which):
        out = d / f"maps_{tag}.npz"
        if out.exists():
            continue
        t = time.perf_counter()
        with mrcfile.open(d / "tomogram.mrc") as m:
            vol = np.array(m.data, dtype=np.float32)
            vs = float(m.voxel_size.x)
        target = nets[0].config.voxel_size or vs
        if abs(vs - target) > 0.01 * target:
            vol = _rescaled(vol, vs, target)
        if invert:  # the same tomogram with its contrast inverted
            vol = -vol
        maps: dict[str, np.ndarray] = {}
        for net in nets:
            y = models.predict_array(net, vol, polarity=polarity)
            for i, h in enumerate(net.config.heads):
                maps[h] = y[i]
        np.savez(out, mask=maps["mask"], center=maps["center"], scale=np.float64(vs / target))
        print(f"{d.relative_to(root)}: predicted in {time.perf_counter() - t:.1f} s", flush=True)


def _truth(d: Path, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """True centres (z, y, x) and radii, in voxels of the predicted maps."""
    df = pd.read_csv(d / "particles.csv")
    radius = np.cbrt(3.0 * df["n_voxels"].to_numpy(np.float64) / (4.0 * np.pi))
    return df[["z", "y", "x"]].to_numpy(np.float64) * scale, radius * scale


def czii_counts(pred: np.ndarray, truth: np.ndarray, radii: np.ndarray, multiplier: float = 0.5) -> tuple[int, ...]:
    """The CZ challenge's counting with one class: a true particle is found when any pick lies within
    ``multiplier`` x its radius (here the radius of a ball of its mask volume); FP = picks - TP."""
    from scipy.spatial import cKDTree

    if len(truth) == 0 or len(pred) == 0:
        return 0, len(pred), len(truth)
    hits = cKDTree(pred).query_ball_point(truth, r=multiplier * radii)
    tp = int(sum(1 for h in hits if h))
    return tp, len(pred) - tp, len(truth) - tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_true: int) -> float:
    """Area under the precision-recall curve of picks ranked by score (all-point interpolation)."""
    if n_true == 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hit = tp[order].astype(np.float64)
    cum = np.cumsum(hit)
    precision = cum / np.arange(1, len(hit) + 1)
    # precision envelope, then sum over recall steps
    env = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(env * hit) / n_true)


_MAPS: dict[tuple[Path, str], dict[str, np.ndarray]] = {}


def _maps(d: Path, tag: str) -> dict[str, np.ndarray]:
    key = (d, tag)
    if key not in _MAPS:
        if len(_MAPS) > 24:
            _MAPS.clear()
        with np.load(d / f"maps_{tag}.npz") as z:
            _MAPS[key] = {k: z[k] for k in z.files}
    return _MAPS[key]


def score_one(d: Path, tag: str, params: dict[str, Any], radius: float) -> dict[str, Any]:
    z = _maps(d, tag)
    scale = float(z["scale"])
    import dask
    import dask.array as da

    with dask.config.set(scheduler="synchronous"):  # the chunked implementation, equal to the reference
        res = postprocess(da.from_array(z["mask"], chunks=128), da.from_array(z["center"], chunks=128), **params)
    pred = res.centers
    truth, radii = _truth(d, scale)
    s, match = match_centres(pred, truth, radius)
    ctp, cfp, cfn = czii_counts(pred, truth, radii)
    ranking = getattr(res, "center_scores", None)
    rank = np.asarray(ranking if ranking is not None else res.scores, dtype=np.float64)
    ap = average_precision(rank, match >= 0, len(truth))
    return dict(tomogram=d.name, n_true=len(truth), n_pred=len(pred), tp=s.tp, fp=s.fp, fn=s.fn,
                precision=s.precision, recall=s.recall, f1=s.f1, fbeta=s.fbeta, ap=ap,
                cz_tp=ctp, cz_fp=cfp, cz_fn=cfn)


def _pooled(rows: list[dict[str, Any]]) -> dict[str, float]:
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    p = tp / max(tp + fp, 1)
    rc = tp / max(tp + fn, 1)
    f1 = 2 * p * rc / max(p + rc, 1e-12)
    f4 = 17 * p * rc / max(16 * p + rc, 1e-12)
    ctp, cfp, cfn = (sum(r[k] for r in rows) for k in ("cz_tp", "cz_fp", "cz_fn"))
    cp, cr = ctp / max(ctp + cfp, 1), ctp / max(ctp + cfn, 1)
    cz_f4 = 17 * cp * cr / max(16 * cp + cr, 1e-12)
    return dict(precision=p, recall=rc, f1=f1, fbeta=f4, cz_f4=cz_f4,
                mean_f1=float(np.mean([r["f1"] for r in rows])), ap=float(np.mean([r["ap"] for r in rows])))


def sweep(root: Path, tag: str, radius: float, rounds: int = 1, objective: str = "mean_f1") -> dict[str, Any]:
    """Coordinate search on the validation set; returns every curve and the chosen parameters."""
    tomos = _tomograms(root, "validation")
    base = dict(mask_threshold=0.1, center_threshold=0.1, remove_min_size=64, check_center=True,
                filter_outlier=False, center_min_distance=0.0, min_particle_size=0, min_score=0.0)
    # structural parameters first (they decide how many picks a particle gives), then the thresholds
    grids = {
        "center_min_distance": [0.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "min_particle_size": [0, 32, 64, 128, 256, 384, 512, 768],
        "mask_threshold": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        "center_threshold": [0.05, 0.1, 0.2, 0.3],
        "min_score": [0.0, 0.1, 0.15, 0.2, 0.25, 0.3],
        "remove_min_size": [32, 64, 128],
        "filter_outlier": [False, True],
    }
    curves: dict[str, list[dict[str, Any]]] = {}
    best = dict(base)
    for rnd in range(rounds):
        for name, values in grids.items():
            curve = []
            for v in values:
                p = {**best, name: v}
                rows = [score_one(d, tag, p, radius) for d in tomos]
                pooled = _pooled(rows)
                curve.append({"value": v, **pooled, "per_tomogram": rows})
                print(f"round {rnd + 1} {name}={v}: F1 {pooled['f1']:.3f} mean F1 {pooled['mean_f1']:.3f} "
                      f"P {pooled['precision']:.3f} "
                      f"R {pooled['recall']:.3f} AP {pooled['ap']:.3f}", flush=True)
            top = max(curve, key=lambda c: (round(c[objective], 3), -values.index(c["value"])))
            best[name] = top["value"]
            curves[f"{name} (round {rnd + 1})"] = [{k: c[k] for k in c if k != "per_tomogram"} for c in curve]
    final = [score_one(d, tag, best, radius) for d in tomos]
    # ranking score: mean mask probability against the centre-map peak, on the chosen parameters
    return {"weights": tag, "radius": radius, "objective": objective, "chosen": best, "validation": _pooled(final),
            "per_tomogram": final, "curves": curves}


def around(root: Path, tag: str, radius: float, params: dict[str, Any]) -> dict[str, Any]:
    """Each parameter varied alone around ``params`` (the chosen defaults), the others held there."""
    tomos = _tomograms(root, "validation")
    grids = {
        "center_min_distance": [0.0, 2.0, 4.0, 6.0, 7.0, 8.0, 10.0],
        "min_particle_size": [0, 64, 128, 256, 384, 512, 768, 1024],
        "min_score": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25],
        "mask_threshold": [0.1, 0.3, 0.5, 0.7],
        "center_threshold": [0.02, 0.05, 0.1, 0.2],
        "filter_outlier": [False, True],
    }
    curves = {}
    for name, values in grids.items():
        curve = []
        for v in values:
            pooled = _pooled([score_one(d, tag, {**params, name: v}, radius) for d in tomos])
            curve.append({"value": v, **pooled})
            print(f"{name}={v}: F1 {pooled['f1']:.3f} mean F1 {pooled['mean_f1']:.3f}", flush=True)
        curves[f"{name} (round 1)"] = curve
    return {"weights": tag, "radius": radius, "chosen": params, "curves": curves,
            "validation": _pooled([score_one(d, tag, params, radius) for d in tomos])}


SEED = dict(mask_threshold=0.1, center_threshold=0.1, remove_min_size=64, check_center=True, filter_outlier=True,
            center_min_distance=0.0, min_particle_size=0, min_score=0.0)

#: The rows of the README's Results table: (networks tag, label, parameters); ``None`` = the defaults.
RESULT_ROWS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("old_pair", "seed defaults (check_center + filter_outlier)", SEED),
    ("old_pair", "new defaults", None),
    ("new_pair", "seed defaults (check_center + filter_outlier)", SEED),
    ("new_pair", "new defaults", None),
    ("new_pair", "tuned for the pair on validation (`-mt 0.2 -ct 0.05 --center-min-distance 6 "
                 "--min-particle-size 768 --min-score 0`)",
     dict(mask_threshold=0.2, center_threshold=0.05, center_min_distance=6.0, min_particle_size=768,
          min_score=0.0)),
    ("new_twohead", "baseline (no check_center, no filter_outlier)", {**SEED, "check_center": False,
                                                                     "filter_outlier": False}),
    ("new_twohead", "check_center", {**SEED, "filter_outlier": False}),
    ("new_twohead", "filter_outlier", {**SEED, "check_center": False}),
    ("new_twohead", "seed defaults (check_center + filter_outlier)", SEED),
    ("new_twohead", "new defaults without centre fusion (`--center-min-distance 0`)", {"center_min_distance": 0.0}),
    ("new_twohead", "new defaults without the fragment filter (`--min-particle-size 0`)", {"min_particle_size": 0}),
    ("new_twohead", "new defaults without the score filter (`--min-score 0`)", {"min_score": 0.0}),
    ("new_twohead", "new defaults + filter_outlier", {"filter_outlier": True}),
    ("new_twohead", "**new defaults**", None),
    ("sym_twohead", "new defaults, `--polarity both` (maps averaged over both contrasts)", None),
]


def results_table(root: Path, which: str, radius: float) -> list[dict[str, Any]]:
    rows = []
    defaults = dict(PostprocessParams().__dict__)
    for tag, label, params in RESULT_ROWS:
        p = {**defaults, **(params or {})}
        tomos = _tomograms(root, which)
        if not all((d / f"maps_{tag}.npz").exists() for d in tomos):
            continue
        pooled = _pooled([score_one(d, tag, p, radius) for d in tomos])
        rows.append({"networks": tag, "post-processing": label, **pooled})
        print(f"| {tag} | {label} | {pooled['precision']:.3f} | {pooled['recall']:.3f} | {pooled['f1']:.3f} | "
              f"{pooled['fbeta']:.3f} | {pooled['cz_f4']:.3f} | {pooled['ap']:.3f} |", flush=True)
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = max(int(k.split("round ")[1].rstrip(")")) for k in result["curves"])
    names = [k for k in result["curves"] if k.endswith(f"(round {last})")]
    ncol = (len(names) + 1) // 2
    fig, axes = plt.subplots(2, ncol, figsize=(3.3 * ncol, 5.6), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        c = result["curves"][name]
        xs = [float(v["value"]) for v in c]
        for key, style in (("f1", "-o"), ("mean_f1", "-s"), ("precision", "--"), ("recall", ":")):
            ax.plot(xs, [v[key] for v in c], style, label=key, ms=3)
        chosen = result["chosen"][name.split(" (")[0]]
        ax.axvline(float(chosen), color="grey", lw=0.8)
        ax.set_title(name.split(" (")[0], fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"validation set ({result['weights']}, match within {result['radius']:g} voxels): each parameter "
                 "varied, the others at the chosen defaults (grey line)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("make", "predict", "sweep", "around", "score", "curve", "table"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--sets", default="validation,test,robustness")
    ap.add_argument("--replicates", type=int, default=1,
                    help="make: tomograms per robustness row (replicate k > 0 goes to robustness_repK/, seeds "
                         "7000 + 100 k + row); score --set robustness,robustness_rep1,... pools each row's counts")
    ap.add_argument("--set", default="validation")
    ap.add_argument("--weights", default="pair", help="pair, twohead, or checkpoint paths SEG,CEN or TWOHEAD")
    ap.add_argument("--tag", default=None, help="name of the cached maps (default: from --weights)")
    ap.add_argument("--radius", type=float, default=5.0, help="matching radius in voxels (default 5)")
    ap.add_argument("--params", default="{}", help="post-processing parameters as JSON (score)")
    ap.add_argument("--objective", choices=("mean_f1", "f1"), default="mean_f1",
                    help="sweep: what the defaults maximize: the mean of the per-tomogram F1 (each imaging "
                         "condition counts the same; default) or the F1 of the pooled counts")
    ap.add_argument("--rounds", type=int, default=1, help="sweep: passes over the parameters (default 1)")
    ap.add_argument("--polarity", choices=("both", "as-is"), default="as-is",
                    help="predict, curve: the networks on the tomogram and its inverted contrast, averaged (the "
                         "default of detect), or as-is (the tags old_*, new_* and twohead_epoch* of the README)")
    ap.add_argument("--invert", action="store_true",
                    help="predict: on each tomogram with its contrast inverted (the polarity gap, same tomograms)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args(argv)
    tag = args.tag or args.weights.replace("/", "_").replace(",", "+")
    if args.command == "make":
        make(args.dir, args.sets.split(","), args.replicates)
    elif args.command == "predict":
        predict(args.dir, args.set, args.weights, tag, args.polarity, args.invert)
    elif args.command == "sweep":
        res = sweep(args.dir, tag, args.radius, args.rounds, args.objective)
        print(json.dumps({"chosen": res["chosen"], "validation": res["validation"]}, indent=1))
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=float))
        if args.png:
            plot(res, args.png)
    elif args.command == "table":
        rows = results_table(args.dir, args.set, args.radius)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, default=float))
    elif args.command == "around":
        params = {**PostprocessParams().__dict__, **json.loads(args.params)}
        res = around(args.dir, tag, args.radius, params)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=float))
        if args.png:
            plot(res, args.png)
    elif args.command == "curve":
        import glob

        import torch

        params = {**PostprocessParams().__dict__, **json.loads(args.params)}
        rows = []
        for ck in sorted(glob.glob(args.weights)):
            t = Path(ck).stem.replace(".", "_")
            predict(args.dir, args.set, ck, t, args.polarity)
            info = torch.load(ck, weights_only=True)["config"]["training"]
            pooled = _pooled([score_one(d, t, params, args.radius) for d in _tomograms(args.dir, args.set)])
            rows.append({"checkpoint": ck, "epoch": info.get("epochs"), "steps": info.get("steps"),
                         "validation_loss": info.get("validation_loss", info.get("best_validation_loss")),
                         **pooled})
            print(json.dumps(rows[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"params": params, "rows": rows}, indent=1, default=float))
    else:
        params = {**PostprocessParams().__dict__, **json.loads(args.params)}
        rows = []
        for d in _tomograms(args.dir, args.set):
            r = score_one(d, tag, params, args.radius)
            meta = d / "row.json"
            if meta.exists():
                row = json.loads(meta.read_text())
                r.update({k: v for k, v in row.items() if k != "name"}, row=row["name"])
            rows.append(r)
            print(json.dumps(r), flush=True)
        out: dict[str, Any] = {"weights": tag, "params": params, "rows": rows, "pooled": _pooled(rows)}
        names = sorted({r["row"] for r in rows if "row" in r})
        if any(sum(r.get("row") == n for r in rows) > 1 for n in names):  # replicates: counts pooled per row
            out["by_row"] = {n: _pooled([r for r in rows if r.get("row") == n]) for n in names}
            for n, pooled in out["by_row"].items():
                print(json.dumps({"row": n, **pooled}))
        print(json.dumps(out["pooled"]))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
