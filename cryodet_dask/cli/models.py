"""``cryodet-dask models``: the shipped models, their species and how good they are."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the shipped models (-m NAME): species, voxel size, size, validation figures",
        description="List the models shipped in the package, by the name detect/predict take with -m NAME: "
        "their species (in network order: rlnClassNumber 1, 2, ...), the voxel size in Å they were trained at, "
        "their size on disk and the figures measured on held-out simulated tomograms (docs/results.md says how).",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..prediction import shipped_models

    found = shipped_models()
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    for m in found:
        vs = f"{m['voxel_size']:g} Å" if m["voxel_size"] else "unknown"
        print(f"{m['name']}: {m['description']}")
        print(f"  species ({len(m['species'])}): {', '.join(m['species'])}")
        print(f"  trained at {vs} per voxel; {m['bytes'] / 2**20:.1f} MiB")
        for key, value in m["figures"].items():
            print(f"  {key}: {value}")
    return 0
