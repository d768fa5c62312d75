"""What a batch run of ``detect`` reuses: the output folders whose outputs are complete for this input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["inside", "outputs_complete"]


def inside(path: Path, folder: Path) -> bool:
    """True if ``path`` resolves to ``folder`` or below it (no ``..`` or symlink escapes)."""
    return path.resolve().is_relative_to(folder.resolve())


def outputs_complete(target: Path, tomo: Path, name: str, params: Any) -> bool:
    """True if ``target`` holds complete outputs of this input's content with these parameters and weights.

    Recognized by its run record (``<name>_run.json``): the input's content identity and the weights' digests (recomputed now), the
    parameters and the name, and every output of the current ``--formats`` present; never by name alone.
    """
    from ..pipeline import RunDirectory, read_run, run_identity

    run = read_run(target, name)
    if run is None or run.get("name") != name or run.get("parameters") != params.to_dict():
        return False
    try:
        fp = run["stages"]["export"]["fingerprint"]
    except (KeyError, TypeError):
        return False
    rd = RunDirectory(target, name)  # the outputs of every format (a species label image too, if the run had species)
    species = [rd.species_output(f) for f in params.formats if f in ("mrc", "zarr")] if run.get("species") else []
    if not fp or not all(p.exists() for p in [*(rd.output(f) for f in params.formats), *species]):
        return False
    return run.get("identity") == run_identity(tomo, params)
