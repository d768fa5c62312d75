"""``cryodet-dask demo``: simulate a tomogram, detect its particles with the shipped weights, score them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .._shapes import triplet
from ._common import int_triplet, positive_float, show_progress

#: Simulation seed of the demo tomogram; the shipped weights were trained on other seeds.
DEMO_SEED = 2026


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: simulate a tomogram, detect with the shipped weights, evaluate",
        description="Simulate a tomogram with ground truth (held out from the training of the shipped "
        "weights), run the full detection on a LocalCluster, score it against the ground truth and write "
        "a PNG report. Takes a few minutes on 2 cores.",
    )
    p.add_argument("out", nargs="?", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--shape", type=int_triplet, default=(96, 256, 256), metavar="Z,Y,X",
                   help="demo tomogram shape in voxels (default: 96,256,256)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"simulation seed (default: {DEMO_SEED})")
    p.add_argument("--chunks", "-ps", type=int_triplet, default=(128,), metavar="N|Z,Y,X",
                   help="chunk size in voxels (default: 128)")
    p.add_argument("--radius", type=positive_float, default=None, metavar="VOXELS",
                   help="matching radius for precision/recall, voxels (default: 5, as evaluate)")
    from ..cluster import add_cluster_arguments

    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cluster import cluster_from_args
    from ..pipeline import detect
    from ..evaluation import DEFAULT_RADIUS, evaluate, read_particles, report_png
    from ..io import load
    from ..simulation import simulate

    out = Path(args.out)
    progress = show_progress(args)
    shape = triplet(args.shape)
    timings = {}
    t = time.perf_counter()
    sim_dir = out / "simulated"
    sim = simulate(sim_dir, shape=tuple(shape), seed=args.seed, preview=True, overwrite=True, progress=progress)
    timings["simulate"] = time.perf_counter() - t
    with cluster_from_args(args) as client:
        res = detect(sim_dir / "tomogram.mrc", out / "detection", name="demo", chunks=tuple(args.chunks),
                     client=client, overwrite=True, progress=progress)
    timings.update(res.timings)
    t = time.perf_counter()
    truth = read_particles(sim_dir / "particles.csv")
    scores = evaluate(res.particles, truth, radius=args.radius or DEFAULT_RADIUS, pred_labels=res.labels,
                      true_labels=load(sim_dir / "labels.mrc").data)
    tomo = load(sim_dir / "tomogram.mrc").data
    report = report_png(out / "report.png", tomo, res.particles, truth, scores["match"], scores.get("pr_curve"))
    timings["evaluate"] = time.perf_counter() - t
    c, o = scores["centres"], scores.get("overlap", {})
    rows = [
        ("tomogram (z, y, x)", f"{tuple(shape)} voxels at {res.voxel_size:g} Å"),
        ("particles simulated", f"{len(truth)}"),
        ("particles found", f"{len(res.particles)}"),
        ("precision", f"{c['precision']:.3f}"),
        ("recall", f"{c['recall']:.3f}"),
        ("F1", f"{c['f1']:.3f}"),
        (f"F{c['beta']:g}", f"{c['fbeta']:.3f}"),
        ("overlap precision / recall / merged", f"{o.get('precision', float('nan')):.3f} / "
         f"{o.get('recall', float('nan')):.3f} / {o.get('merged_rate', float('nan')):.3f}"),
    ] + [(f"time: {k}", f"{v:.1f} s") for k, v in timings.items()]
    width = max(len(r[0]) for r in rows)
    print()
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    print(f"\n  outputs: {res.out_dir}\n  report:  {report}\n  preview: {sim.paths.get('preview', '')}")
    summary = {"centres": c, "overlap": o, "timings_s": timings, "n_true": len(truth), "n_found": len(res.particles)}
    (out / "demo_scores.json").write_text(json.dumps(summary, indent=1, default=float))
    return 0
