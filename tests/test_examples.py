"""The examples in examples/ run as they are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "particles" in r.stdout or "precision" in r.stdout


def test_examples_are_there():
    # an empty or missing examples/ would make the parametrized test above vanish silently
    assert {p.name for p in EXAMPLES} >= {"detect_simulated.py", "stages_with_dask.py"}
