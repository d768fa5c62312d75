"""Run every benchmark command in turn (``make bench``); each prints its own table."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
COMMANDS = [
    ["bench_convert.py"],
    ["bench_models.py", "throughput", "--threads", "2"],
    ["bench_predict.py"],
    ["bench_postprocess.py", "--memory-test"],
    ["bench_detection.py"],
    ["bench_graph.py"],
    ["bench_scaling.py"],
    ["bench_reliability.py"],
    ["bench_end_to_end.py"],
]

if __name__ == "__main__":
    failed = []
    for cmd in COMMANDS:
        if not (HERE / cmd[0]).exists():
            continue
        print(f"\n===== {' '.join(cmd)}", flush=True)
        if subprocess.run([sys.executable, *cmd], cwd=HERE).returncode:
            failed.append(cmd[0])
    sys.exit(1 if failed else 0)
