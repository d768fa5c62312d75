"""``cryodet-dask detect``: the whole pipeline, with the seed's flags."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import yaml

from ..errors import InputError, ParameterError
from ._common import (
    finite_nonneg_float,
    fraction,
    int_triplet,
    nonneg_float,
    nonneg_int,
    positive_float,
    show_progress,
    str2bool,
)

#: CLI destination -> DetectParams field, for every parameter flag.
PARAMS = ("segnet", "centernet", "chunks", "voxel_size", "mask_threshold", "center_threshold", "remove_min_size",
          "check_center", "filter_outlier", "neighbor_number", "distance_threshold", "connectivity",
          "center_min_distance", "min_particle_size", "min_score", "particle_diameter", "halo",
          "device", "batch_size", "keep_intermediate", "formats", "rescale")


def _bool_pair(g: argparse._ArgumentGroup, name: str, seed_flag: str, on: str, off: str) -> None:
    dest = name.replace("-", "_")
    g.add_argument(f"--{name}", dest=dest, action="store_const", const=True, default=argparse.SUPPRESS,
                   help=f"{on} (default)")
    g.add_argument(f"--no-{name}", dest=dest, action="store_const", const=False, default=argparse.SUPPRESS,
                   help=off)
    g.add_argument(seed_flag, dest=dest, type=str2bool, nargs="?", const=True, default=argparse.SUPPRESS,
                   metavar="true|false", help=f"seed spelling of --{name}/--no-{name}")


def register(sub: argparse._SubParsersAction) -> None:
    from ..postprocessing import PostprocessParams

    d = PostprocessParams()  # the defaults, stated once there
    p = sub.add_parser(
        "detect",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
        help="find and instance-label particles: convert -> predict -> postprocess -> export",
        description="Find and instance-label particles in one or more tomograms on a Dask cluster "
        "(default: a LocalCluster sized to this machine). Writes <name>_labels.mrc, <name>_centers.txt "
        "(seed format), <name>_centers.csv, <name>_centers.star (RELION 5), <name>_labels.zarr "
        "(OME-Zarr label image) and run.json into OUT_DIR. Distances and sizes are in voxels unless "
        "marked Å. The seed's flags (-tomo, -m, -c, -o, -ps, -vs, -mt, -ct, -rs, -check_center, "
        "-filter_outlier, -nn, -dt) work with their meaning and defaults.",
    )
    p.add_argument("tomograms", nargs="*", default=[], metavar="TOMO",
                   help="tomograms (MRC or Zarr; globs allowed); several = batch, one folder each")
    p.add_argument("-tomo", "--tomogram", dest="tomo_flag", action="append", default=[], metavar="TOMO",
                   help="a tomogram (the seed's flag; repeatable)")
    p.add_argument("-o", "--out", dest="out", default="./results", metavar="OUT_DIR",
                   help="output folder (default: ./results)")
    g = p.add_argument_group("networks")
    g.add_argument("-m", "--segnet", metavar="CKPT", help="SegNet checkpoint, or one two-head checkpoint "
                   "(default: the shipped demo weights)")
    g.add_argument("-c", "--centernet", metavar="CKPT", help="CenterNet checkpoint (default: shipped weights)")
    g.add_argument("-ps", "--chunks", type=int_triplet, metavar="N|Z,Y,X",
                   help="chunk (patch) size in voxels for inference and post-processing (default: 128)")
    g.add_argument("--halo", type=int_triplet, metavar="N|Z,Y,X",
                   help="inference halo in voxels (default: half the receptive field)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the networks run (default: auto)")
    g.add_argument("--batch-size", type=int, metavar="N", help="chunks per forward call (default: 1)")
    g.add_argument("-vs", "--voxel-size", type=positive_float, metavar="ANGSTROM",
                   help="voxel size in Å (default: from the file header; 14.08 with a warning if absent)")
    g.add_argument("--rescale", action="store_const", const=True,
                   help="when the weights were trained at a voxel size more than 5%% away from the tomogram's, "
                   "predict on the tomogram resampled (linear, lazily) to the weights' voxel size; labels and "
                   "centres stay on the tomogram's grid")
    g = p.add_argument_group("post-processing (sizes and distances in voxels)")
    g.add_argument("-mt", "--mask-threshold", type=fraction, metavar="[0-1]",
                   help=f"foreground = mask probability > this (default: {d.mask_threshold:g})")
    g.add_argument("-ct", "--center-threshold", type=fraction, metavar="[0-1]",
                   help=f"centre-map values below this are ignored (default: {d.center_threshold:g})")
    g.add_argument("-rs", "--remove-min-size", type=nonneg_int, metavar="VOXELS",
                   help="remove connected components smaller than this many voxels, before the check_center "
                   f"split (default: {d.remove_min_size}, or from --particle-diameter)")
    g.add_argument("--center-min-distance", type=finite_nonneg_float, metavar="VOXELS",
                   help="centre fusion: a centre-map maximum is a centre only if no voxel within this Euclidean "
                   "distance is larger (equal values: the first in raster order wins); below 2 only the 26 "
                   f"neighbours count (default: {d.center_min_distance:g}, or from --particle-diameter)")
    g.add_argument("--min-particle-size", type=nonneg_int, metavar="VOXELS",
                   help="remove particles smaller than this many voxels after the check_center split, before the "
                   f"outlier filter (default: {d.min_particle_size})")
    g.add_argument("--min-score", type=finite_nonneg_float, metavar="SCORE",
                   help="remove particles whose score (the centre-map peak over the particle, 0-1) is below this, "
                   f"before the outlier filter (default: {d.min_score:g})")
    g.add_argument("--particle-diameter", type=positive_float, metavar="ANGSTROM",
                   help="particle diameter in Å: sets --center-min-distance to half of it and -rs to the volume of "
                   "a sphere of half of it (in voxels, from the voxel size) unless those are given")
    _bool_pair(g, "check-center", "-check_center",
               "split a connected component only by the centres inside it, and only if it holds 2 or more",
               "assign every foreground voxel to its nearest centre, wherever it is")
    _bool_pair(g, "filter-outlier", "-filter_outlier",
               "remove particles with fewer than -nn other particles within -dt voxels",
               "keep isolated particles")
    g.add_argument("-nn", "--neighbor-number", type=nonneg_int, metavar="N",
                   help=f"filter_outlier: particles needed within the distance (default: {d.neighbor_number})")
    g.add_argument("-dt", "--distance-threshold", type=nonneg_float, metavar="VOXELS",
                   help=f"filter_outlier: neighbour distance in voxels (default: {d.distance_threshold:g})")
    g.add_argument("--connectivity", type=int, choices=(1, 2, 3),
                   help="voxel connectivity of components: 1 faces, 2 +edges, 3 +corners "
                   f"(default: {d.connectivity})")
    g = p.add_argument_group("outputs and runs")
    g.add_argument("--formats", type=lambda s: tuple(v for v in s.split(",") if v), metavar="LIST",
                   help="outputs among mrc,txt,csv,star,zarr (default: all)")
    g.add_argument("--keep-intermediate", dest="keep_intermediate", type=str2bool, metavar="true|false",
                   help="keep the converted tomogram and predicted maps (Zarr) for resuming (default: true)")
    g.add_argument("--config", metavar="YAML", help="read parameters from a YAML file (flags override it)")
    g.add_argument("--save-config", metavar="YAML", help="write the effective parameters to a YAML file")
    g.add_argument("--overwrite", action="store_true", default=False, help="recompute everything")
    from ..cluster import add_cluster_arguments

    add_cluster_arguments(p)
    p.set_defaults(func=run)


def _expand(patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]
        if not hits:
            raise InputError(f"{pat}: no tomogram matches")
        out += [Path(h) for h in hits]
    return out


def params_from_args(args: argparse.Namespace):
    from ..detection import DetectParams

    values: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ParameterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ParameterError(f"{path}: expected a mapping of parameter: value")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for name in PARAMS:
        if hasattr(args, name):
            values[name] = getattr(args, name)
    try:
        return DetectParams.from_dict(values)
    except TypeError as exc:
        raise ParameterError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from ..cluster import cluster_from_args
    from ..detection import check_chunks, detect
    params = params_from_args(args)
    params.validate()
    if getattr(args, "save_config", None):
        Path(args.save_config).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
        print(f"wrote {args.save_config}", file=sys.stderr)
    tomos = _expand(list(args.tomograms) + list(args.tomo_flag))
    if not tomos:
        if getattr(args, "save_config", None):
            return 0
        raise ParameterError("no tomogram given (positional TOMO or -tomo)")
    for t in tomos:
        if not t.exists():
            raise InputError(f"{t}: no such file or directory")
    check_chunks(params)  # also loads the checkpoints: a wrong or corrupt one fails here, before any work
    out = Path(args.out)
    batch = len(tomos) > 1
    progress = show_progress(args)
    with cluster_from_args(args) as client:
        for t in tomos:
            name = t.name.removesuffix(".zarr").rsplit(".", 1)[0] if t.suffix != ".zarr" else t.stem
            target = (out / name) if batch else out
            if batch and not _inside(target, out):
                raise InputError(f"{t}: its output folder {target} would lie outside {out}; rename the tomogram")
            if batch and not args.overwrite and _complete(target, params):
                print(f"{t}: outputs complete in {target}, skipped")
                continue
            res = detect(t, target, params, name=name, client=client, overwrite=args.overwrite,
                         progress=progress)
            if not args.quiet:
                tm = ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items())
                pr = res.prediction
                print(f"{t}: {len(res.particles)} particles -> {target} ({tm}; chunks computed "
                      f"{pr.chunks_computed}, skipped {pr.chunks_skipped})")
    return 0


def _inside(path: Path, folder: Path) -> bool:
    """True if ``path`` resolves to ``folder`` or below it (no ``..`` or symlink escapes)."""
    return path.resolve().is_relative_to(folder.resolve())


def _complete(target: Path, params) -> bool:
    run_json = target / "run.json"
    if not run_json.exists():
        return False
    try:
        run = json.loads(run_json.read_text())
    except (OSError, ValueError):
        return False
    return run.get("parameters") == params.to_dict() and all(Path(f).exists() for f in run.get("outputs", {}).values())
