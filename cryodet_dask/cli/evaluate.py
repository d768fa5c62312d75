"""``cryodet-dask evaluate``: precision, recall, F1/F-beta against ground truth, with a PNG report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._common import deprecated_alias, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score detections against ground truth (distance matching and label overlap)",
        description="Score detected particles against ground truth. --metric one-to-one (default): "
        "centres paired one to one (Hungarian) within a radius, each pick finds at most one particle "
        "(precision, recall, F1, F-beta with beta=4, recall per class); given label images, also the seed's "
        "overlap-based recall, precision and merged rate. --metric czii: the official CZ cryo-ET object "
        "identification challenge score: per class a true particle is found when any pick of its class lies "
        "within 0.5 x the class radius (Å), FP = picks - TP, counts summed over tomograms (experiments), "
        "F-beta (beta=4) per class, score = sum(weight x F-beta) / sum(weights). PRED and GT are particle "
        "lists in any format `picks convert` reads (the CZII submission/solution CSV experiment, "
        "particle_type, x, y, z in Å included) or folders: a detect output folder (its *_centers.csv) and a "
        "simulate folder (particles.csv). An empty prediction (no picks) is scored, not refused: precision 0 "
        "(undefined, reported as 0), recall 0. With several tomograms named on both sides (rlnTomoName, "
        "experiment, run_name) picks are matched within their own tomogram; names that differ only in case "
        "are different tomograms, with a warning.",
    )
    p.add_argument("pred", help="detected particles: table or detect output folder")
    p.add_argument("truth", help="ground truth: table or simulate output folder")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--radius", type=positive_float, default=None, metavar="VOXELS",
                   help="matching radius in voxels (default: 5, or from --radius-angstrom)")
    r.add_argument("--radius-angstrom", dest="radius_angst", type=positive_float, default=None, metavar="ANGSTROM",
                   help="matching radius in Å (needs the voxel size)")
    deprecated_alias(p, "--radius-angst", "--radius-angstrom", "radius_angst", parse=positive_float)
    p.add_argument("--voxel-size", type=positive_float, default=None, metavar="ANGSTROM",
                   help="Å per voxel (default: from the tomogram or the run.json)")
    p.add_argument("--metric", choices=("one-to-one", "czii"), default="one-to-one",
                   help="one-to-one: Hungarian matching within --radius (default); czii: the CZII challenge metric")
    p.add_argument("--class-radius", action="append", default=[], type=_name_value, metavar="NAME=ANGSTROM",
                   help="czii: particle radius of a class in Å (repeatable; default: the six CZII classes: "
                   "apo-ferritin 60, beta-amylase 65, beta-galactosidase 90, ribosome 150, thyroglobulin 130, "
                   "virus-like-particle 135)")
    p.add_argument("--class-weight", action="append", default=[], type=_name_value, metavar="NAME=W",
                   help="czii: weight of a class in the score (repeatable; CZII defaults 1, 0, 2, 1, 2, 1 in the "
                   "order above; 1 for other classes)")
    p.add_argument("--no-default-classes", dest="default_classes", action="store_false",
                   help="czii: score only the classes given with --class-radius, not the six CZII classes")
    p.add_argument("--pick-class", default=None, metavar="NAME",
                   help="czii: the class of every pick, for picks without a class column (cryodet-dask's own)")
    p.add_argument("--distance-multiplier", type=positive_float, default=0.5, metavar="F",
                   help="czii: a pick finds a particle within F x the class radius (default: 0.5)")
    p.add_argument("--beta", type=positive_float, default=4.0, help="F-beta weight of recall (default: 4)")
    p.add_argument("--pred-labels", default=None, metavar="MRC|ZARR", help="predicted label image")
    p.add_argument("--true-labels", default=None, metavar="MRC|ZARR", help="ground-truth label image")
    p.add_argument("--min-overlap", type=float, default=0.5,
                   help="overlap scores: fraction of a particle's voxels that must lie in one partner "
                   "(default: 0.5)")
    p.add_argument("--confusion", default=None, metavar="PNG",
                   help="one-to-one metric with species (a class column in both tables): the confusion matrix "
                   "between species as a picture (the per-species table and the matrix are always printed)")
    p.add_argument("--tomogram", default=None, help="tomogram for the slice overlays of the report")
    p.add_argument("--report", default=None, metavar="PNG", help="write a PNG report (PR curve, slices)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the scores as JSON")
    p.set_defaults(func=run)


_NO_PICKS = ("no picks: precision is undefined (0 / 0) and reported as 0; recall and the F-scores are 0 "
             "(an empty prediction is a result, not an error)")


def _name_value(text: str) -> tuple[str, float]:
    name, sep, value = str(text).rpartition("=")
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if not sep or not name or v < 0:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (a number >= 0), got {text!r}")
    return name, v


def _read_table(path: Path, voxel_size: float | None, kind: str):
    """The prediction may be empty (no picks is a result: precision 0, recall 0); the ground truth may not."""
    from ..evaluation import read_particles

    df = read_particles(path, voxel_size=voxel_size, allow_empty=True)
    if kind == "truth" and len(df) == 0:
        raise InputError(f"{path}: the ground truth holds no particle; there is nothing to score against")
    return df


def _read_for_czii(path: Path, voxel_size: float | None, kind: str):
    """A table for the CZII metric: Å coordinates; a file in Å needs no voxel size for that."""
    from ..errors import ParameterError

    try:
        return _read_table(path, voxel_size, kind)
    except ParameterError:
        if voxel_size:
            raise
        df = _read_table(path, 1.0, kind)  # x, y, z then equal the Å the file holds; only Å is used
        if df.attrs.get("unit") != "angstrom":
            raise
        return df


def run_czii(args: argparse.Namespace, pred_path: Path, true_path: Path, vs: float | None) -> int:
    from ..evaluation import czii_score

    pred = _read_for_czii(pred_path, vs, "pred")
    truth = _read_for_czii(true_path, vs, "truth")
    if args.pick_class:
        pred = pred.assign(**{"class": args.pick_class})
    res = czii_score(pred, truth, radii=dict(args.class_radius), weights=dict(args.class_weight),
                     distance_multiplier=args.distance_multiplier, beta=args.beta,
                     default_classes=args.default_classes)
    print(f"CZII metric: {len(pred)} picks, {len(truth)} true particles, {res['experiments']} tomogram(s); "
          f"a pick finds a particle within {args.distance_multiplier:g} x its class radius")
    print(f"{'class':<22}{'radius Å':>9}{'weight':>7}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>10}{'recall':>8}"
          f"{'F' + format(args.beta, 'g'):>7}")
    for c, v in res["per_class"].items():
        print(f"{c:<22}{v['radius_angst']:>9g}{v['weight']:>7g}{v['tp']:>6}{v['fp']:>6}{v['fn']:>6}"
              f"{v['precision']:>10.3f}{v['recall']:>8.3f}{v['fbeta']:>7.3f}")
    print(f"score (sum weight x F{args.beta:g} / sum weights): {res['score']:.4f}")
    if len(pred) == 0:
        print(_NO_PICKS)
    if args.json:
        from ..io import atomic_output

        with atomic_output(Path(args.json), overwrite=True) as tmp:
            tmp.write_text(json.dumps(res, indent=1, default=float))
    return 0


def _resolve(path: str, kind: str) -> tuple[Path, dict]:
    """Table path and any label/tomogram/voxel size found beside it."""
    p = Path(path)
    extra: dict = {}
    if p.is_dir():
        if kind == "truth" and (p / "particles.csv").exists():
            extra = {"labels": p / "labels.mrc", "tomogram": p / "tomogram.mrc"}
            return p / "particles.csv", extra
        from ..pipeline import OUTPUT_SUFFIX, RunDirectory

        csvs = sorted(p.glob(f"*{OUTPUT_SUFFIX['csv']}"))
        if csvs:  # a detect output folder: the first tomogram's files (by name)
            rd = RunDirectory(p, csvs[0].name.removesuffix(OUTPUT_SUFFIX["csv"]))
            if rd.output("mrc").exists():
                extra["labels"] = rd.output("mrc")
            for run in (rd.record, rd.last_run):
                if run.exists():
                    extra["voxel_size"] = json.loads(run.read_text()).get("voxel_size_angst")
                    break
            return csvs[0], extra
        raise InputError(f"{p}: no particles.csv or *_centers.csv in this folder")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return p, extra


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, report_png
    from ..io import load

    pred_path, pred_extra = _resolve(args.pred, "pred")
    true_path, true_extra = _resolve(args.truth, "truth")
    vs = args.voxel_size or pred_extra.get("voxel_size")
    if args.metric == "czii":
        return run_czii(args, pred_path, true_path, vs)
    pred = _read_table(pred_path, vs, "pred")
    truth = _read_table(true_path, vs, "truth")
    pl = args.pred_labels or pred_extra.get("labels")
    tl = args.true_labels or true_extra.get("labels")
    labels = (load(pl).data, load(tl).data) if pl and tl and Path(pl).exists() and Path(tl).exists() else (None, None)
    res = evaluate(pred, truth, radius=args.radius, radius_angst=args.radius_angst, voxel_size=vs, beta=args.beta,
                   min_overlap=args.min_overlap, pred_labels=labels[0], true_labels=labels[1])
    c = res["centres"]
    print(f"particles: {len(pred)} detected, {len(truth)} true; matching radius {c['radius']:g} voxels")
    print(f"centres:  precision {c['precision']:.3f}  recall {c['recall']:.3f}  F1 {c['f1']:.3f}  "
          f"F{c['beta']:g} {c['fbeta']:.3f}  (TP {c['tp']}, FP {c['fp']}, FN {c['fn']})")
    if len(pred) == 0:
        print(_NO_PICKS)
    if c["per_class_recall"]:
        print("recall per class: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["per_class_recall"].items())))
    species = _species_tables(pred, truth, c["radius"], args)
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
        if species is not None:
            out["species"] = species[0].to_dict(orient="records")
            out["confusion"] = species[1].to_dict()
        if "pr_curve" in res:
            out["pr_curve"] = res["pr_curve"].to_dict(orient="list")
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


def _species_tables(pred, truth, radius: float, args: argparse.Namespace):
    """Per-species scores and the confusion matrix, printed, when both tables name species (``class``)."""
    if "class" not in pred.columns or "class" not in truth.columns or len(pred) == 0:
        return None
    from ..evaluation_species import confusion_png, pooled_species_scores

    names = sorted(set(truth["class"].astype(str)) | set(pred["class"].astype(str)))
    pairs = [(pred, truth)]
    if "tomogram" in pred.columns and "tomogram" in truth.columns:  # particles of two tomograms never match
        pairs = [(pred[pred["tomogram"] == t], truth[truth["tomogram"] == t]) for t in sorted(set(truth["tomogram"]))]
    table, confusion = pooled_species_scores(pairs, radius, species=names)
    print(f"per species (matched within their species; radius {radius:g} voxels):")
    print(f"{'species':<22}{'true':>6}{'picks':>6}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>10}{'recall':>8}{'F1':>7}")
    for s, r in table.iterrows():
        print(f"{s:<22}{r['n_true']:>6}{r['n_pred']:>6}{r['tp']:>6}{r['fp']:>6}{r['fn']:>6}{r['precision']:>10.3f}"
              f"{r['recall']:>8.3f}{r['f1']:>7.3f}")
    print("confusion (rows: true species, columns: picked species):")
    print(confusion.to_string())
    if args.confusion:
        confusion_png(args.confusion, confusion, title=f"{Path(args.pred).name} vs {Path(args.truth).name}")
        print(f"wrote {args.confusion}")
    return table.reset_index(), confusion


class _Slices:
    """The two central slices of a tomogram, indexable like the volume for :func:`report_png`."""

    def __init__(self, slices: dict, shape: tuple[int, ...]):
        self.slices = slices
        self.shape = shape

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.slices["xy"]
        return self.slices["xz"]
