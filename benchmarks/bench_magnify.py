"""Small particles: ``detect --magnify M`` on ``bench_generalization.py``'s size sets.

Each tomogram of ``DIR/size_scale/dD_i`` holds one template (4v4r) rescaled to D voxels across, at
10 Å per voxel (``bench_generalization.py make DIR --sets size_scale``; random seeds no training pool
uses).  For each magnification, ``detect`` runs with default flags (the threaded scheduler, one thread
for torch) and its picks are matched one to one to the true centres within 5 voxels of the tomogram's
grid: recall, precision and F1 per tomogram.

    python benchmarks/bench_magnify.py DIR --sizes 10,12,14,16 --magnify 1,1.25,1.5 [--weights twohead] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cryodet_dask.evaluation import match_centres
from cryodet_dask.pipeline.detect import detect


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--sizes", default="10,12,14,16")
    ap.add_argument("--magnify", default="1,1.25,1.5")
    ap.add_argument("--weights", default=None, help="a checkpoint or shipped model name (default: the default model)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        for d in sorted((a.root / "size_scale").glob(f"d{size:02d}_*")):
            truth = pd.read_csv(d / "particles.csv")[["z", "y", "x"]].to_numpy(np.float64)
            for m in (float(x) for x in a.magnify.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    res = detect(d / "tomogram.mrc", tmp, segnet=a.weights, magnify=m, device="cpu",
                                 formats=("csv",), keep_intermediate=False)
                picks = res.particles[["z", "y", "x"]].to_numpy(np.float64)
                s, _ = match_centres(picks, truth, 5.0)
                p, r = s.tp / max(len(picks), 1), s.tp / max(len(truth), 1)
                rows.append({"tomogram": d.name, "diameter_voxels": size, "magnify": m, "particles": len(truth),
                             "picks": len(picks), "recall": round(r, 3), "precision": round(p, 3),
                             "f1": round(2 * p * r / max(p + r, 1e-12), 3)})
                print(json.dumps(rows[-1]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
