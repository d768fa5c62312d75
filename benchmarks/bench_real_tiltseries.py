"""False picks on a real tomogram: the slabs of ice and vacuum above and below the specimen.

No registry package ships a real particle-free tomogram crop (85 PyPI packages were searched; see
docs/results.md).  ``warpylib`` 1.1.2 (MIT) ships a real tilt series for its tests,
``testdata/00254.stack.mrc`` (41 tilts, +-60 degrees in 3 degree steps, 10 A per pixel, from EMPIAR-10499:
a *Mycoplasma pneumoniae* cell), with its IMOD alignment (``xf_import/00254.xf``, ``.tlt``).  This
benchmark downloads that package from PyPI, reconstructs three 300-slice crops by weighted
back-projection (the IMOD alignment, a Hamming-tapered ramp filter, no CTF correction, no local
alignment: a crude reconstruction of our own, with streaks from the gold beads), runs ``cryodet-dask
detect`` on each with default flags and counts the picks in the slabs that hold no macromolecule
(z < 60 and z >= 245: outside the specimen, which lies between the two layers of gold beads), leaving
out a 12-voxel margin at the crops' x and y faces.  Measurement only: nothing here trains or chooses
a default, and no data is shipped.

    python benchmarks/bench_real_tiltseries.py DIR [--polarity as-is|both] [--min-score S] [-m MODEL] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGE = "warpylib==1.1.2"
#: crops of the aligned tilt series (y0, y1, x0, x1 in pixels): mostly ice (A, B) and the cell (C)
CROPS = {"iceA": (380, 600, 30, 222), "iceB": (30, 330, 494, 622), "cellC": (200, 440, 300, 492)}
NZ, SLAB_LO, SLAB_HI, MARGIN = 300, 60, 245, 12


def fetch(root: Path) -> Path:
    """The package's test data folder (downloaded from PyPI once)."""
    dl = root / "dl"
    if not list(dl.glob("warpylib-*.tar.gz")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        PACKAGE, "-d", str(dl)], check=True)
    sdist = next(dl.glob("warpylib-*.tar.gz"))
    out = root / "src"
    if not (out / sdist.name.removesuffix(".tar.gz")).exists():
        with tarfile.open(sdist) as t:
            t.extractall(out, filter="data")
    return out / sdist.name.removesuffix(".tar.gz") / "testdata"


def aligned_filtered(data: Path) -> np.ndarray:
    """The tilt series aligned with its IMOD transforms, normalized per tilt and ramp-filtered along x."""
    import mrcfile
    from scipy import ndimage

    stack = mrcfile.read(data / "00254.stack.mrc").astype(np.float32)
    xf = np.loadtxt(data / "xf_import" / "00254.xf")
    nt, ny, nx = stack.shape
    c = np.array([(ny - 1) / 2, (nx - 1) / 2])
    ali = np.empty_like(stack)
    for t in range(nt):
        a = xf[t, :4].reshape(2, 2)[::-1, ::-1]  # IMOD's (x, y) matrix in (y, x) order
        inv = np.linalg.inv(a)
        d = xf[t, 4:][::-1]
        s = (stack[t] - stack[t].mean()) / stack[t].std()
        ali[t] = ndimage.affine_transform(s, inv, offset=c - inv @ (c + d), order=1, mode="constant", cval=0.0)
    f = np.fft.rfftfreq(2 * nx)
    ramp = np.abs(f) * (0.54 + 0.46 * np.cos(np.pi * f / f.max()))
    padded = np.pad(ali, ((0, 0), (0, 0), (0, nx)))
    out: np.ndarray = np.fft.irfft(np.fft.rfft(padded, axis=2) * ramp, axis=2)[:, :, :nx].astype(np.float32)
    return out


def back_project(p: np.ndarray, tilts: np.ndarray, crop: tuple[int, int, int, int], nz: int) -> np.ndarray:
    """Weighted back-projection of the filtered series ``p`` into the crop (tilt axis along y)."""
    y0, y1, x0, x1 = crop
    n = p.shape[2]
    x = np.arange(x0, x1) - (n - 1) / 2
    z = np.arange(nz) - (nz - 1) / 2
    vol = np.zeros((nz, y1 - y0, x1 - x0), np.float32)
    for t, angle in enumerate(np.deg2rad(tilts)):
        xp = x[None, :] * np.cos(angle) + z[:, None] * np.sin(angle) + (n - 1) / 2
        i0 = np.floor(xp).astype(int)
        w = (xp - i0).astype(np.float32)
        ok = (i0 >= 0) & (i0 + 1 < n)
        i0 = np.clip(i0, 0, n - 2)
        rows = p[t, y0:y1]
        for k in range(nz):
            vol[k] += (rows[:, i0[k]] * (1 - w[k]) + rows[:, i0[k] + 1] * w[k]) * ok[k]
    return (vol - vol.mean()) / vol.std()


def slab_picks(csv: Path, shape: tuple[int, ...]) -> dict[str, float]:
    picks = pd.read_csv(csv)
    z, y, x = (picks[c].to_numpy(np.float64) for c in ("z", "y", "x"))
    inner = (y >= MARGIN) & (y < shape[1] - MARGIN) & (x >= MARGIN) & (x < shape[2] - MARGIN)
    slab = (z < SLAB_LO) | (z >= SLAB_HI)
    n_vox = (SLAB_LO + shape[0] - SLAB_HI) * (shape[1] - 2 * MARGIN) * (shape[2] - 2 * MARGIN)
    k = int((slab & inner).sum())
    return {"picks": len(picks), "voxels": int(np.prod(shape)), "slab_picks": k, "slab_voxels": n_vox,
            "slab_picks_per_1e6": round(k / n_vox * 1e6, 1),
            "picks_per_1e6": round(float(len(picks) / np.prod(shape) * 1e6), 1)}


def main(argv: list[str] | None = None) -> int:
    import mrcfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--polarity", default="as-is", choices=("as-is", "both"))
    ap.add_argument("--min-score", default=None, help="detect's --min-score (default: detect's default)")
    ap.add_argument("--model", "-m", default=None, help="detect's -m (default: the shipped default model)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    a.root.mkdir(parents=True, exist_ok=True)
    data = fetch(a.root)
    tilts = np.loadtxt(data / "xf_import" / "00254.tlt")
    filtered = None
    rows = {}
    for name, crop in CROPS.items():
        vol_path = a.root / f"00254_{name}.mrc"
        if not vol_path.exists():
            filtered = aligned_filtered(data) if filtered is None else filtered
            with mrcfile.new(vol_path, overwrite=True) as m:
                m.set_data(back_project(filtered, tilts, crop, NZ))
                m.voxel_size = 10.0
        tag = "" if a.model is None else "_" + Path(a.model).stem
        out = a.root / f"out_{name}_{a.polarity}_{a.min_score or 'default'}{tag}"
        extra = ["--min-score", a.min_score] if a.min_score is not None else []
        extra += ["-m", a.model] if a.model is not None else []
        subprocess.run([sys.executable, "-m", "cryodet_dask", "-q", "detect", str(vol_path), "-o", str(out),
                        "--polarity", a.polarity, "--formats", "csv", "--cluster", "threads", "--overwrite", *extra],
                       check=True)
        shape = mrcfile.mmap(vol_path, mode="r").data.shape
        rows[name] = slab_picks(next(out.glob("*_centers.csv")), shape)
        print(name, rows[name], flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
