"""How much species information a network's last decoder features carry: a linear probe.

A logistic regression (one linear layer, full-batch Adam) is fitted on the features of particle voxels
of training-pool tomograms, their species being the simulator's template, and scored on the
validation pool's.  If a linear read-out of the features cannot beat the majority class, a species head
on those features alone (a frozen backbone) cannot learn the species either.

    python benchmarks/probe_species_features.py POOLS [--weights twohead] [--voxels 20000]

POOLS holds ``train`` and ``val`` made by ``cryodet-dask simulate-pool`` (random seeds 1000 and 2000,
docs/models.md); tomograms 0000-0003, 0005, 0007 of ``train`` and 0000, 0003 of ``val`` are used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryodet_dask import models
from cryodet_dask.prediction import resolve_models

SPECIES = ("4v4r", "4cr2", "3j9i", "1bxn", "7n4y", "6pxm")
MEMBERS = {"train": ("0000", "0001", "0002", "0003", "0005", "0007"), "val": ("0000", "0003")}


def features(net: models.UNet3D, folder: Path, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Last-decoder features and species of ``n`` random particle voxels of one pool tomogram."""
    vol = mrcfile.read(folder / "tomogram.mrc").astype(np.float32)
    lab = mrcfile.read(folder / "labels.mrc")
    table = pd.read_csv(folder / "particles.csv")
    code = np.zeros(int(lab.max()) + 1, int)
    code[table["id"]] = [SPECIES.index(c) for c in table["class"]]
    x = torch.from_numpy((vol - vol.mean()) / vol.std())[None, None]
    with torch.no_grad():
        f = net.features(x)[0].numpy()
    fg = np.flatnonzero(lab.ravel() > 0)
    fg = rng.choice(fg, min(len(fg), n), replace=False)
    return f.reshape(f.shape[0], -1)[:, fg].T, code[lab.ravel()[fg]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pools", type=Path)
    ap.add_argument("--weights", default="twohead")
    ap.add_argument("--voxels", type=int, default=20000, help="particle voxels sampled per tomogram")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = models.load(resolve_models(a.weights)[0].path)
    rng = np.random.default_rng(0)
    data = {s: [features(net, a.pools / s / m, a.voxels, rng) for m in ms] for s, ms in MEMBERS.items()}
    xtr, ytr = (np.concatenate(v) for v in zip(*data["train"]))
    xva, yva = (np.concatenate(v) for v in zip(*data["val"]))
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a_tr = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    a_va = torch.tensor((xva - mu) / sd, dtype=torch.float32)
    b_tr, b_va = torch.tensor(ytr), torch.tensor(yva)
    lin = torch.nn.Linear(a_tr.shape[1], len(SPECIES))
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(a_tr), b_tr)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc_tr = float((lin(a_tr).argmax(1) == b_tr).float().mean())
        acc_va = float((lin(a_va).argmax(1) == b_va).float().mean())
    print(f"weights {a.weights}: voxel species accuracy of a linear probe: training {acc_tr:.3f}, "
          f"validation {acc_va:.3f}; majority class of validation {np.bincount(yva).max() / len(yva):.3f}; "
          f"training cross-entropy {float(loss):.3f} (uniform: {np.log(len(SPECIES)):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
