"""How long the command line takes to answer: ``--help``, ``--version`` and a few commands' ``--help``.

Each is ``cryodet_dask.cli.main(ARGV)`` in a fresh interpreter, timed from outside; the figure is the
median of ``--runs`` runs, beside ``python -c pass`` on the same machine.  ``--tree DIR`` times the
package in DIR instead of the installed one, e.g. an older commit's::

    git archive HEAD~1 cryodet_dask | tar -x -C /tmp/before
    python benchmarks/bench_startup.py --tree /tmp/before
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["--version"], ["detect", "--help"], ["predict", "--help"], ["train", "--help"],
            ["picks", "convert", "--help"])
CODE = ("import sys\n{path}import cryodet_dask.cli\ntry:\n    cryodet_dask.cli.main({argv!r})\n"
        "except SystemExit:\n    pass\n")


def median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tree", default=None, help="a folder holding the cryodet_dask package to time")
    a = ap.parse_args()
    path = f"sys.path.insert(0, {os.path.abspath(a.tree)!r})\n" if a.tree else ""
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; median of {a.runs} runs")
    base = median_seconds([sys.executable, "-c", "pass"], a.runs)
    print(f"| `python -c pass` | {base:.3f} s | 1 |")
    for argv in COMMANDS:
        took = median_seconds([sys.executable, "-c", CODE.format(path=path, argv=argv)], a.runs)
        print(f"| `cryodet-dask {' '.join(argv)}` | {took:.3f} s | {took / base:.1f} |")


if __name__ == "__main__":
    main()
