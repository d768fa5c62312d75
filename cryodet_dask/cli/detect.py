"""``cryodet-dask detect``: the whole pipeline, with the seed's flags."""

from __future__ import annotations

import argparse
import glob
import hashlib
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import InputError, ParameterError
from ._common import (
    format_list,
    positive_float,
    show_progress,
    str2bool,
    voxel_size_angst,
)
from ._batch import inside, outputs_complete
from ._copick import SKIPPED_RUNS_EXIT, copick_inputs, copick_status, write_copick
from ._flags import (BOOL_FLAGS, FLAGS, NETWORK_FLAGS, add_network_flags, add_postprocess_flags,
                                 choice, nonempty_text)


#: CLI destination -> DetectParams field, for every parameter flag.
PARAMS = ("segnet", "centernet", "chunks", "voxel_size", "mask_threshold", "center_threshold", "remove_min_size",
          "check_center", "filter_outlier", "neighbor_number", "distance_threshold", "connectivity",
          "center_min_distance", "min_particle_size", "min_score", "particle_diameter", "halo",
          "tile", "device", "batch_size", "keep_intermediate", "formats", "rescale", "magnify", "nan_policy", "tomogram_name",
          "polarity", "tta", "engine", "species")


def magnification(text: str) -> float:
    """A number in :data:`~cryodet_dask.pipeline.params.MAGNIFY_RANGE` (``--magnify``)."""
    from ..pipeline.params import MAGNIFY_RANGE

    v, (lo, hi) = positive_float(text), MAGNIFY_RANGE
    if not lo <= v <= hi:
        raise argparse.ArgumentTypeError(f"expected a number from {lo:g} to {hi:g}, got {text!r}")
    return v


def species_list(text: str) -> tuple[str, ...]:
    """``A,B``: species names (copick-safe), in the order given; empty (a YAML ``[]``): every species."""
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


#: The parser of every parameter, shared by its command-line flag and its YAML config key.
TYPES: dict[str, Callable[[str], Any]] = {
    **{f.name: f.parse for f in NETWORK_FLAGS}, "voxel_size": voxel_size_angst,
    "rescale": str2bool, "magnify": magnification, **{f.name: f.parse for f in FLAGS}, **{name: str2bool for name, _, _ in BOOL_FLAGS},
    "formats": format_list, "keep_intermediate": str2bool, "nan_policy": choice("error", "zero"),
    "tomogram_name": nonempty_text, "species": species_list,
}
assert set(TYPES) == set(PARAMS)



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
        help="find and instance-label particles: convert -> predict -> postprocess -> export",
        description="Find and instance-label particles in one or more tomograms on a Dask cluster "
        "(default: a LocalCluster sized to this machine). Writes <name>_labels.mrc, <name>_centers.txt "
        "(seed format), <name>_centers.csv, <name>_centers.star (RELION 5), <name>_labels.zarr "
        "(OME-Zarr label image) and <name>_run.json (what ran, where, when; run.json is the folder's last run) into OUT_DIR. Distances and sizes are in voxels unless "
        "marked Å. The seed's flags (-tomo, -m, -c, -o, -ps, -vs, -mt, -ct, -rs, -check_center, "
        "-filter_outlier, -nn, -dt) work with their meaning and defaults.",
    )
    p.add_argument("tomograms", nargs="*", default=[], metavar="TOMO",
                   help="tomograms (MRC or Zarr; globs allowed); several = batch, one folder each, named by the "
                   "file's stem, or <stem>-<8 hex digits from its resolved path> when stems collide; a batch rerun "
                   "skips a tomogram whose <name>_run.json records the same input content, weights and parameters")
    p.add_argument("-tomo", "--tomogram", dest="tomo_flag", action="append", default=[], metavar="TOMO",
                   help="a tomogram (the seed's flag; repeatable)")
    p.add_argument("-o", "--out", dest="out", default="./results", metavar="OUT_DIR",
                   help="output folder (default: ./results); one run at a time: a run holds the lock "
                   "OUT_DIR/.cryodet.lock, and a second run into the same folder exits at once with status 75, "
                   "naming the holder's PID and host")
    g = p.add_argument_group("networks")
    add_network_flags(g, suppress=True)
    g.add_argument("-vs", "--voxel-size", type=TYPES["voxel_size"], metavar="ANGSTROM",
                   help="voxel size in Å, 0.1-1000 (default: from the file header; never guessed: without either, "
                   "the outputs in Å (txt, star, copick) are refused and --formats mrc,zarr,csv runs)")
    g.add_argument("--rescale", action="store_const", const=True,
                   help="when the weights were trained at a voxel size more than 5%% away from the tomogram's, "
                   "predict on the tomogram resampled (linear, lazily) to the weights' voxel size; labels and "
                   "centres stay on the tomogram's grid; the CSV then has no pick probability (its calibration "
                   "was fitted on maps of the tomogram's own grid)")
    g.add_argument("--magnify", type=TYPES["magnify"], metavar="M",
                   help="predict on the tomogram magnified M times (0.25-4; with --rescale, relative to the "
                   "weights' voxel size), so that particles smaller than the training's (under ~12 voxels at the "
                   "networks' voxel size) are seen at a size they know; labels and centres stay on the "
                   "tomogram's grid. 1.5 found 10-voxel particles at recall 0.87 instead of 0.46, with more "
                   "false picks; the CSV then has no pick probability (default: 1)")
    g.add_argument("--species", type=TYPES["species"], metavar="NAME,...",
                   help="keep only these species of a multi-species model, e.g. 4v4r,1bxn (`cryodet-dask models` "
                   "lists each model's species; default: all)")
    g.add_argument("--nan-policy", type=TYPES["nan_policy"], metavar="{error,zero}",
                   help="NaN or infinite voxels in the tomogram: refuse it with one line (default), or read them "
                   "as 0 (a Zarr input is then copied, with the replacement, into OUT_DIR/<name>.zarr)")
    g = p.add_argument_group("post-processing (sizes and distances in voxels)")
    add_postprocess_flags(g, suppress=True)
    g = p.add_argument_group("outputs and runs")
    g.add_argument("--tomogram-name", type=TYPES["tomogram_name"], metavar="NAME",
                   help="rlnTomoName written to the STAR file, e.g. TS_01 for rec_TS_01.mrc: the tilt series' "
                   "name in the RELION 5 project (default: the output name; one tomogram only)")
    g.add_argument("--formats", type=TYPES["formats"], metavar="LIST",
                   help="outputs among mrc,txt,csv,star,zarr (default: all)")
    g.add_argument("--keep-intermediate", dest="keep_intermediate", type=TYPES["keep_intermediate"], metavar="true|false",
                   help="keep the converted tomogram and predicted maps (Zarr) for resuming (default: true)")
    g.add_argument("--config", metavar="YAML", help="read parameters from a YAML file (flags override it); keys are the long flags' names, "
                   "each value is checked by its flag's parser (booleans: true/false, yes/no, 1/0)")
    g.add_argument("--save-config", metavar="YAML", help="write the effective parameters to a YAML file")
    g.add_argument("--overwrite", action="store_true", default=False,
                   help="recompute everything; with --copick, also replace the run's existing picks and instance "
                   "segmentation of the same user, session and object")
    g = p.add_argument_group("copick projects (CZ cryoET Data Portal); local filesystem")
    g.add_argument("--copick", dest="copick", default=None, metavar="CONFIG.json",
                   help="read the tomogram(s) from this copick project instead of TOMO, and write the picks and "
                   "the instance labels back into its overlay (Picks/USER_SESSION_OBJECT.json, "
                   "InstanceSegmentations/SPACING_USER_SESSION_OBJECT.zarr); the usual outputs go to OUT_DIR "
                   "(one folder per run when there are several). Existing picks or segmentations of the same "
                   "user, session and object are refused (--overwrite replaces them; or give a new "
                   "--copick-session). Run, user, session and object names must be copick-safe: letters, "
                   "digits, - and _")
    g.add_argument("--run", dest="copick_run", action="append", default=[], metavar="NAME",
                   help="copick run to process (repeatable; a run named twice is processed once)")
    g.add_argument("--copick-runs", dest="copick_runs", default=None, metavar="all|NAME,NAME",
                   help="copick runs to process: all, or a comma-separated list (a run named twice is processed "
                   f"once). With all, a run without the tomogram is skipped with a warning, the others are "
                   f"processed, and the command exits with status {SKIPPED_RUNS_EXIT} at the end")
    g.add_argument("--voxel-spacing", dest="copick_voxel_spacing", type=positive_float, default=10.0,
                   metavar="ANGSTROM", help="copick voxel spacing of the tomogram, Å (default: 10). It is the "
                   "voxel size of the run: a tomogram whose own metadata says otherwise is read at the folder's "
                   "spacing, with a warning, and the run record's copick section says so; -vs must agree with it")
    g.add_argument("--tomo-type", dest="copick_tomo_type", default="wbp", metavar="TYPE",
                   help="copick tomogram type (default: wbp)")
    g.add_argument("--copick-array", dest="copick_array", default=None, metavar="NAME",
                   help="the array of the tomogram's Zarr group to read, for a group without OME multiscales "
                   "metadata and with several arrays (default: the multiscales' first level, else the only array)")
    g.add_argument("--copick-object", dest="copick_object", default=None, metavar="NAME",
                   help="pickable object name of the picks and labels written back (default: the config's only "
                   "object, else required)")
    g.add_argument("--copick-user", dest="copick_user", default="cryodet-dask", metavar="ID",
                   help="copick user_id of what is written back (default: cryodet-dask)")
    g.add_argument("--copick-session", dest="copick_session", default="0", metavar="ID",
                   help="copick session_id of what is written back (default: 0)")

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


def _config_value(path: Path, key: str, value: Any) -> Any:
    """One YAML value through the parser of its command-line flag (None: the default, where that is None)."""
    from ..pipeline import DetectParams

    if value is None:
        default = {f.name: f.default for f in DetectParams.__dataclass_fields__.values()}[key]
        if default is None:
            return None
        raise ParameterError(f"{path}: {key}: needs a value (remove the line to use the default {default!r})")
    if isinstance(value, dict) and key in ("particle_diameter", "min_score"):  # per species, as --save-config writes it
        value = ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, dict):
        raise ParameterError(f"{path}: {key}: expected a value, got a mapping")
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict | list | tuple | bool) or v is None for v in value):
            raise ParameterError(f"{path}: {key}: expected a list of plain values, got {value!r}")
        text = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    try:
        return TYPES[key](text)
    except argparse.ArgumentTypeError as exc:
        raise ParameterError(f"{path}: {key}: {exc}") from None


def params_from_args(args: argparse.Namespace):
    from ..pipeline import DetectParams

    values: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ParameterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot be read ({exc})") from None
        if not isinstance(loaded, dict):
            raise ParameterError(f"{path}: expected a mapping of parameter: value")
        loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - set(TYPES))
        if unknown:
            raise ParameterError(f"{path}: unknown parameter(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(TYPES))}")
        values.update({k: _config_value(path, k, v) for k, v in loaded.items()})
    for name in PARAMS:
        if hasattr(args, name):
            values[name] = getattr(args, name)
    try:
        return DetectParams.from_dict(values)
    except TypeError as exc:
        raise ParameterError(str(exc)) from None


def _batch_names(tomos: list[Path]) -> list[str]:
    """The output name (folder and file stem) of each tomogram of a batch.

    The file's stem, unless two tomograms of the batch share it (``a/tomo.mrc``, ``b/tomo.mrc``; compared
    case-insensitively): then ``<stem>-<8 hex digits of the SHA-1 of its resolved path>``, stable across runs.
    """
    stems = [_stem(t) for t in tomos]
    count: dict[str, int] = {}
    for n in stems:
        count[n.casefold()] = count.get(n.casefold(), 0) + 1
    return [n if count[n.casefold()] == 1 else
            f"{n}-{hashlib.sha1(str(t.resolve()).encode()).hexdigest()[:8]}" for n, t in zip(stems, tomos)]


def _stem(t: Path) -> str:
    return t.name.removesuffix(".zarr").rsplit(".", 1)[0] if t.suffix != ".zarr" else t.stem


def _precheck(tomos: list[Path], names: list[str], params) -> None:
    """Everything about the inputs that can be checked without work: readable headers, voxel sizes, names."""
    from ..io import load
    from ..pipeline import check_known_voxel_size, check_tomo_name, resolve_voxel_size

    for t, name in zip(tomos, names):
        if "star" in params.formats:
            check_tomo_name(name, str(t))
        tomo = load(t)
        # a header voxel size outside 0.1-1000 Å: one line, before any work; None: unknown, never guessed
        voxel_size = resolve_voxel_size(tomo, params.voxel_size)
        if params.particle_diameter is not None and voxel_size is None:
            raise ParameterError(f"--particle-diameter needs the voxel size: {t} has none in its header; "
                                 "give -vs/--voxel-size")
        check_known_voxel_size(voxel_size, params.formats, str(t), rescale=params.rescale,
                               magnify=params.magnify)  # outputs in Å need it
        params.check_plan(tomo.shape, voxel_size)  # blocks and fusion distance the task graph can hold


def _check_device(params, args: argparse.Namespace) -> None:
    """``--device cuda`` on this machine's cluster needs a GPU here (remote workers are checked there)."""
    if not str(params.device).startswith("cuda"):
        return
    remote = getattr(args, "scheduler_address", None) or getattr(args, "scheduler_file", None) or \
        getattr(args, "cluster", "local") not in ("local", "threads", "local-cuda")
    if remote:
        return
    import torch

    if not torch.cuda.is_available():
        raise ParameterError("--device cuda was asked for but no CUDA GPU is visible on this machine; "
                             "use --device cpu (or auto)")


def _check_local_memory(tomos: list[Path], params, args: argparse.Namespace) -> int | None:
    """The memory one prediction task needs on a LocalCluster this command starts (bytes), after
    refusing an explicit ``--memory-limit`` below it, or a machine too small for it, before any work."""
    import psutil
    from dask.utils import parse_bytes

    from ..io import load
    from ..pipeline import memory_refusal, prediction_memory

    local = args.cluster == "local" and not (args.scheduler_address or args.scheduler_file)
    if not local or str(params.device).startswith("cuda"):
        return None
    shapes = [load(t).shape for t in tomos]
    need = max(prediction_memory(params, s)[0] for s in shapes)
    limit = parse_bytes(args.memory_limit) if args.memory_limit else int(psutil.virtual_memory().total * 0.8)
    for s in shapes:
        reason = memory_refusal(params, s, limit)
        if reason:
            if not args.memory_limit:
                reason = reason.replace("a Dask worker may use", "this machine offers Dask").replace(
                    " (--memory-limit)", " (80% of its memory)").replace("raise --memory-limit", "use a larger machine")
            raise ParameterError(reason)
    return need


def run(args: argparse.Namespace) -> int:
    from ..cluster import cluster_from_args, config_from_args
    from ..pipeline import check_chunks, detect, output_lock
    params = params_from_args(args)  # a DetectParams is validated when made
    config_from_args(args)  # the cluster options too, before any work
    copick = copick_inputs(args, params)
    if copick is not None:
        params = copick.params  # the voxel size is the copick folder's
    tomos = _expand(list(args.tomograms) + list(args.tomo_flag)) if copick is None else list(copick.stores)
    if not tomos:
        if getattr(args, "save_config", None):
            Path(args.save_config).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
            print(f"wrote {args.save_config}", file=sys.stderr)
            return 0
        raise ParameterError("no tomogram given (positional TOMO or -tomo)")
    for t in tomos:
        if not t.exists():
            raise InputError(f"{t}: no such file or directory")
    unique: dict[Path, Path] = {}
    for t in tomos:  # the same file named twice (a/t.mrc, ./a/t.mrc) is processed once
        unique.setdefault(t.resolve(), t)
    if len(unique) < len(tomos):
        print(f"{len(tomos) - len(unique)} tomogram(s) given more than once: each is processed once",
              file=sys.stderr)
    tomos = list(unique.values())
    out = Path(args.out)
    batch = len(tomos) > 1
    if batch and params.tomogram_name is not None:
        raise ParameterError("--tomogram-name names one tomogram; a batch's STAR files take their output names")
    names = _batch_names(tomos) if batch else [_stem(tomos[0])]
    if copick is not None:  # each tomogram keeps its own run's name
        run_of = {st.resolve(): r for st, r in zip(copick.stores, copick.runs)}
        names = [run_of[t.resolve()] for t in tomos]
    targets = [(out / n) if batch else out for n in names]
    for t, target in zip(tomos, targets):
        if batch and not inside(target, out):
            raise InputError(f"{t}: its output folder {target} would lie outside {out}; rename the tomogram")
    _precheck(tomos, names, params)
    _check_device(params, args)
    check_chunks(params)  # also loads the checkpoints: a wrong or corrupt one fails here, before any work
    task_memory = _check_local_memory(tomos, params, args)
    if getattr(args, "save_config", None):
        Path(args.save_config).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
        print(f"wrote {args.save_config}", file=sys.stderr)
    progress = show_progress(args)
    with output_lock(out):  # one run per output folder: a second one stops here, naming this one
        pending = []
        for t, name, target in zip(tomos, names, targets):
            if batch and not args.overwrite and outputs_complete(target, t, name, params):
                print(f"{t}: outputs complete in {target} for this input and these parameters, skipped")
                if copick is not None:
                    write_copick(copick, args, name, target)
                continue
            pending.append((t, name, target))
        if not pending:
            return copick_status(copick)
        with cluster_from_args(args, task_memory=task_memory) as client:
            for t, name, target in pending:
                res = detect(t, target, params, name=name, client=client, overwrite=args.overwrite,
                             progress=progress)
                if copick is not None:
                    write_copick(copick, args, name, target)
                if not args.quiet:
                    tm = ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items())
                    pr = res.prediction
                    print(f"{t}: {len(res.particles)} particles -> {target} ({tm}; chunks computed "
                          f"{pr.chunks_computed}, skipped {pr.chunks_skipped})")
    return copick_status(copick)
