"""Detect the particles of a small simulated tomogram with the shipped weights, and score them.

    python examples/detect_simulated.py [OUT_DIR]
"""

import sys
import tempfile
from pathlib import Path

import cryodet_dask as cd
from cryodet_dask.evaluation import read_particles

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())

# 1. a tomogram with ground truth (48 x 128 x 128 voxels at 10 Å)
sim = cd.simulate(out / "sim", shape=(48, 128, 128), seed=7)
print(f"simulated {sim.n_particles} particles")

# 2. the whole pipeline; without a client, Dask's threads in this process do the work
res = cd.detect(out / "sim" / "tomogram.mrc", out / "detection", device="cpu")
print(res.particles[["id", "x", "y", "z", "x_angst", "n_voxels", "score"]].head())
print("files:", sorted(p.name for p in res.files.values()))

# 3. precision and recall against the simulated particle table (centres within 6 voxels)
scores = cd.evaluate(res.particles, read_particles(out / "sim" / "particles.csv"), radius=6)
c = scores["centres"]
print(f"precision {c['precision']:.2f}  recall {c['recall']:.2f}  F1 {c['f1']:.2f}")
