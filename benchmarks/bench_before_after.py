"""End-to-end `cryodet-dask detect` timings of this checkout against an earlier commit (issue 16: the
redesign must not slow anything down).

    python benchmarks/bench_before_after.py [--before 246fc8c] [--shape 64,256,256] [--repeats 3]

The earlier commit is checked out into a temporary git worktree; both run the same command on the same
simulated tomogram (`--cluster local --workers 2`, CPU, shipped weights), alternating before/after so
that both see the same load.  Reported: the median wall time of the command and of each stage
(convert, predict, post-processing, export) from the run folder's run.json, and the particle count
(which must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("convert", "predict", "postprocess", "export")


def _run(checkout: Path, tomo: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "cryodet_dask", "-q", "detect", str(tomo), "-o", str(out), "--cluster", "local",
           "--workers", "2", "--device", "cpu", "--overwrite"]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=checkout)
    wall = time.perf_counter() - t
    record = json.loads((out / "run.json").read_text())
    return {"wall": wall, **{s: record["timings_s"][s] for s in STAGES}, "particles": record["particles"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="246fc8c", help="the earlier commit (default: the last one before issue 16)")
    ap.add_argument("--shape", default="64,256,256")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryodet-ba-") as tmp:
        work = Path(tmp)
        old = work / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before], check=True,
                       capture_output=True)
        try:
            sim = work / "sim"
            subprocess.run([sys.executable, "-m", "cryodet_dask", "-q", "simulate", "--shape", args.shape, "--seed",
                            "4242", str(sim)], check=True, cwd=REPO)
            tomo = sim / "tomogram.mrc"
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            for r in range(args.repeats):
                for name, checkout in (("before", old), ("after", REPO)):
                    res = _run(checkout, tomo, work / f"out-{name}")
                    runs[name].append(res)
                    print(f"[{name} {r + 1}/{args.repeats}] " + ", ".join(
                        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    print(f"\n{args.shape} voxels, --cluster local --workers 2, median of {args.repeats} (s); before = {args.before}")
    print("| version | command | convert | predict | post-processing | export | particles |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("wall", *STAGES)}
        parts = sorted({r["particles"] for r in rs})
        print(f"| {name} | {med['wall']:.1f} | " + " | ".join(f"{med[s]:.2f}" for s in STAGES) +
              f" | {', '.join(map(str, parts))} |")
    b, a = (statistics.median(r["wall"] for r in runs[k]) for k in ("before", "after"))
    print(f"after / before, command wall time: {a / b:.2f}")


if __name__ == "__main__":
    main()
