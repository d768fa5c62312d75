"""Small particles: ``detect --magnify M`` on ``bench_generalization.py``'s size sets.

Each tomogram of ``DIR/size_scale/dD_i`` holds one template (4v4r) rescaled to D voxels across, at
10 Å per voxel (``bench_generalization.py make DIR --sets size_scale``; random seeds no training pool
uses).  For each magnification, ``detect`` runs with default flags (the threaded scheduler, one thread
for torch) and its picks are matched one to one to the true centres within 5 voxels of the tomogram's
grid: recall, precision and F1 per tomogram.  Then, per magnification, whether the pick probability would
mean what it says (the network's calibration was fitted on maps of the tomogram's own grid, so ``detect``
writes none with ``--magnify`` or ``--rescale``): the calibration applied to every pick anyway, its voxel
count taken to the network's grid (times the cube of the resampling factor), and the picks, the fraction
of them that are true, their mean probability and the calibration error (ECE, 10 bins).

    python benchmarks/bench_magnify.py DIR --sizes 10,12,14,16 --magnify 1,1.25,1.5 [--weights twohead] [--json out.json]
    python benchmarks/bench_magnify.py DIR --set size_voxel --sizes 12,16,24,32 --magnify 1 --rescale

``--set size_voxel`` takes ``DIR/size_voxel/dD*`` instead (the unscaled template at 219 Å / D per voxel),
and ``--rescale`` runs detect with ``--rescale`` (to the weights' 10 Å).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from cryodet_dask.evaluation import match_centres
from cryodet_dask.models import inspect_checkpoint
from cryodet_dask.prediction import resolve_models
from cryodet_dask.pipeline.detect import detect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_score import ece  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--sizes", default="10,12,14,16")
    ap.add_argument("--magnify", default="1,1.25,1.5")
    ap.add_argument("--set", choices=("size_scale", "size_voxel"), default="size_scale")
    ap.add_argument("--rescale", action="store_true", help="detect --rescale (to the weights' voxel size)")
    ap.add_argument("--weights", default=None, help="a checkpoint or shipped model name (default: the default model)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    config = inspect_checkpoint(resolve_models(a.weights or "twohead")[0].path)
    rows, marked = [], []
    for size in (int(s) for s in a.sizes.split(",")):
        for d in sorted({*(a.root / a.set).glob(f"d{size:02d}"), *(a.root / a.set).glob(f"d{size:02d}_*")}):
            truth = pd.read_csv(d / "particles.csv")[["z", "y", "x"]].to_numpy(np.float64)
            for m in (float(x) for x in a.magnify.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    res = detect(d / "tomogram.mrc", tmp, segnet=a.weights, magnify=m, rescale=a.rescale,
                                 device="cpu", formats=("csv",), keep_intermediate=False)
                picks = res.particles[["z", "y", "x"]].to_numpy(np.float64)
                s, match = match_centres(picks, truth, 5.0)
                if config.calibration is not None:
                    with mrcfile.open(d / "tomogram.mrc", header_only=True) as f:
                        vs = float(f.voxel_size.x)
                    factor = m * (vs / config.voxel_size if a.rescale and config.voxel_size else 1.0)
                    t = res.particles
                    prob = config.calibration.probability(t["score"], t["mask_score"], t["n_voxels"] * factor ** 3)
                    marked.append(pd.DataFrame({"magnify": m, "true": np.asarray(match) >= 0, "probability": prob}))
                p, r = s.tp / max(len(picks), 1), s.tp / max(len(truth), 1)
                rows.append({"tomogram": d.name, "diameter_voxels": size, "magnify": m, "particles": len(truth),
                             "picks": len(picks), "recall": round(r, 3), "precision": round(p, 3),
                             "f1": round(2 * p * r / max(p + r, 1e-12), 3)})
                print(json.dumps(rows[-1]), flush=True)
    calibration = []
    if marked:
        frame = pd.concat(marked, ignore_index=True)
        for m, g in frame.groupby("magnify"):
            t, p = g["true"].to_numpy(np.float64), g["probability"].to_numpy(np.float64)
            calibration.append({"magnify": float(m), "picks": len(g), "fraction_true": round(float(t.mean()), 3),
                                "mean_probability": round(float(p.mean()), 3), "ece": round(ece(p, t), 3)})
            print(json.dumps(calibration[-1]), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "probability": calibration}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
