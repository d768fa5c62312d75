"""``cryodet-dask evaluate``: precision, recall, F1/F-beta against ground truth, with a PNG report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._common import positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score detections against ground truth (distance matching and label overlap)",
        description="Score detected particles against ground truth: one-to-one matching of centres "
        "within a radius (precision, recall, F1, F-beta with beta=4 as in the CZ cryo-ET benchmark, "
        "recall per class), and, given label images, the seed's overlap-based recall, precision and "
        "merged rate. PRED and GT are particle tables (CSV with x,y,z in voxels, the seed's TXT, RELION "
        "STAR) or folders: a detect output folder (its *_centers.csv) and a simulate folder "
        "(particles.csv).",
    )
    p.add_argument("pred", help="detected particles: table or detect output folder")
    p.add_argument("truth", help="ground truth: table or simulate output folder")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--radius", type=positive_float, default=None, metavar="VOXELS",
                   help="matching radius in voxels (default: 10, or from --radius-angst)")
    r.add_argument("--radius-angst", type=positive_float, default=None, metavar="ANGSTROM",
                   help="matching radius in Å (needs the voxel size)")
    p.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="Å per voxel (default: from the tomogram or the run.json)")
    p.add_argument("--beta", type=positive_float, default=4.0, help="F-beta weight of recall (default: 4)")
    p.add_argument("--pred-labels", default=None, metavar="MRC|ZARR", help="predicted label image")
    p.add_argument("--true-labels", default=None, metavar="MRC|ZARR", help="ground-truth label image")
    p.add_argument("--min-overlap", type=float, default=0.5,
                   help="overlap scores: fraction of a particle's voxels that must lie in one partner "
                   "(default: 0.5)")
    p.add_argument("--tomogram", default=None, help="tomogram for the slice overlays of the report")
    p.add_argument("--report", default=None, metavar="PNG", help="write a PNG report (PR curve, slices)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the scores as JSON")
    p.set_defaults(func=run)


def _resolve(path: str, kind: str) -> tuple[Path, dict]:
    """Table path and any label/tomogram/voxel size found beside it."""
    p = Path(path)
    extra: dict = {}
    if p.is_dir():
        if kind == "truth" and (p / "particles.csv").exists():
            extra = {"labels": p / "labels.mrc", "tomogram": p / "tomogram.mrc"}
            return p / "particles.csv", extra
        csvs = sorted(p.glob("*_centers.csv"))
        if csvs:
            labels = sorted(p.glob("*_labels.mrc"))
            if labels:
                extra["labels"] = labels[0]
            run = p / "run.json"
            if run.exists():
                extra["voxel_size"] = json.loads(run.read_text()).get("voxel_size_angst")
            return csvs[0], extra
        raise InputError(f"{p}: no particles.csv or *_centers.csv in this folder")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return p, extra


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, read_particles, report_png
    from ..io import load

    pred_path, pred_extra = _resolve(args.pred, "pred")
    true_path, true_extra = _resolve(args.truth, "truth")
    vs = args.voxel_size or pred_extra.get("voxel_size")
    pred = read_particles(pred_path, voxel_size=vs)
    truth = read_particles(true_path, voxel_size=vs)
    pl = args.pred_labels or pred_extra.get("labels")
    tl = args.true_labels or true_extra.get("labels")
    labels = (load(pl).data, load(tl).data) if pl and tl and Path(pl).exists() and Path(tl).exists() else (None, None)
    res = evaluate(pred, truth, radius=args.radius, radius_angst=args.radius_angst, voxel_size=vs, beta=args.beta,
                   min_overlap=args.min_overlap, pred_labels=labels[0], true_labels=labels[1])
    c = res["centres"]
    print(f"particles: {len(pred)} detected, {len(truth)} true; matching radius {c['radius']:g} voxels")
    print(f"centres:  precision {c['precision']:.3f}  recall {c['recall']:.3f}  F1 {c['f1']:.3f}  "
          f"F{c['beta']:g} {c['fbeta']:.3f}  (TP {c['tp']}, FP {c['fp']}, FN {c['fn']})")
    if c["per_class_recall"]:
        print("recall per class: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["per_class_recall"].items())))
    if "overlap" in res:
        o = res["overlap"]
        print(f"overlap:  precision {o['precision']:.3f}  recall {o['recall']:.3f}  merged rate "
              f"{o['merged_rate']:.3f}  (min overlap {o['min_overlap']:g})")
    if args.report:
        tomo_path = args.tomogram or true_extra.get("tomogram")
        if not tomo_path or not Path(tomo_path).exists():
            raise InputError("--report needs the tomogram (--tomogram) for the slice overlays")
        tomo = load(tomo_path).data
        zc, yc = tomo.shape[0] // 2, tomo.shape[1] // 2
        small = {"xy": tomo[zc].compute(), "xz": tomo[:, yc, :].compute()}
        report_png(args.report, _Slices(small, tomo.shape), pred, truth, res["match"], res.get("pr_curve"))
        print(f"wrote {args.report}")
    if args.json:
        out = {k: v for k, v in res.items() if k in ("centres", "overlap")}
        if "pr_curve" in res:
            out["pr_curve"] = res["pr_curve"].to_dict(orient="list")
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


class _Slices:
    """The two central slices of a tomogram, indexable like the volume for :func:`report_png`."""

    def __init__(self, slices: dict, shape: tuple[int, ...]):
        self.slices = slices
        self.shape = shape

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.slices["xy"]
        return self.slices["xz"]
