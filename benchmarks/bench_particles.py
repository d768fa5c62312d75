"""Throughput of the particle-table reader and writer (issue 14): a RELION 5 STAR of 1 million rows.

Writes a synthetic RELION 5 particle STAR (``rlnTomoName``, ``rlnCoordinateX/Y/Z``, three angles, a
figure of merit; 2 tomograms), then times :func:`cryodet_dask.read_particles` on it (with the
selection of one tomogram and without), and :func:`cryodet_dask.write_particles` back to STAR and
CSV.  Every read is checked: the row count and the coordinates equal what was written.  Median of
``--repeats`` runs; rows per second.

    .venv/bin/python benchmarks/bench_particles.py [--rows 1000000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _util import report


def _star(path: Path, n: int, rng: np.random.Generator) -> pd.DataFrame:
    xyz = rng.uniform(0, 1000, size=(n, 3)).round(3)
    df = pd.DataFrame({
        "rlnTomoName": np.where(np.arange(n) % 2 == 0, "TS_01", "TS_02"),
        "rlnCoordinateX": xyz[:, 0], "rlnCoordinateY": xyz[:, 1], "rlnCoordinateZ": xyz[:, 2],
        "rlnAngleRot": rng.uniform(-180, 180, n).round(2), "rlnAngleTilt": rng.uniform(0, 180, n).round(2),
        "rlnAnglePsi": rng.uniform(-180, 180, n).round(2), "rlnAutopickFigureOfMerit": rng.random(n).round(4),
    })
    with open(path, "w") as f:  # RELION's own layout: header, then one row per line
        f.write("\n# version 50001\n\ndata_particles\n\nloop_\n")
        for i, c in enumerate(df.columns, 1):
            f.write(f"_{c} #{i}\n")
        df.to_csv(f, sep=" ", header=False, index=False, float_format="%.3f")
    return df


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import cryodet_dask as cd

    rng = np.random.default_rng(0)
    results: dict[str, object] = {"rows": args.rows, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        star = Path(tmp) / "particles.star"
        truth = _star(star, args.rows, rng)
        results["file_mib"] = round(star.stat().st_size / 2**20, 1)

        t, df = _time(lambda: cd.read_particles(star, voxel_size=10.0), args.repeats)
        assert len(df) == args.rows and np.allclose(df["x"].to_numpy(), truth["rlnCoordinateX"], atol=1e-3)
        results["read_all_s"], results["read_all_rows_per_s"] = round(t, 3), round(args.rows / t)

        t, one = _time(lambda: cd.read_particles(star, voxel_size=10.0, tomogram_name="TS_02"), args.repeats)
        assert len(one) == args.rows // 2
        results["read_one_tomogram_s"] = round(t, 3)

        t, _ = _time(lambda: cd.write_particles(df, Path(tmp) / "out.star", overwrite=True), args.repeats)
        results["write_star_s"], results["write_star_rows_per_s"] = round(t, 3), round(args.rows / t)
        back = cd.read_particles(Path(tmp) / "out.star", voxel_size=10.0)
        assert len(back) == args.rows

        t, _ = _time(lambda: cd.write_particles(df, Path(tmp) / "out.csv", overwrite=True), args.repeats)
        results["write_csv_s"] = round(t, 3)
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
