"""``cryodet-dask train``: train SegNet, CenterNet or the two-head network."""

from __future__ import annotations

import argparse
import shlex

from .._shapes import triplet
from ._common import add_bool_flag, fraction, int_triplet, nonneg_int, positive_float, show_progress


def _heads(text: str) -> tuple[str, ...]:
    t = text.strip().lower()
    table = {"segnet": ("mask",), "mask": ("mask",), "centernet": ("center",), "center": ("center",),
             "twohead": ("mask", "center"), "two-head": ("mask", "center"), "both": ("mask", "center")}
    if t not in table:
        raise argparse.ArgumentTypeError(f"expected segnet, centernet or twohead, got {text!r}")
    return table[t]


def _ints(text: str) -> tuple[int, ...]:
    try:
        v = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return v


def _species(text: str) -> object:
    from ..errors import ParameterError
    from ..species import parse_species

    try:
        table = parse_species(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(table) < 2:
        raise argparse.ArgumentTypeError(f"a multi-species network needs two or more species, got {text!r}")
    return table


def _pair(text: str) -> tuple[str, str]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected TOMOGRAM,LABELS, got {text!r}")
    return parts[0], parts[1]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a SegNet (mask), CenterNet (centre map) or two-head network on labelled tomograms",
        description="Train a 3D U-Net on (tomogram, instance label map) pairs in MRC or Zarr — the simulator's "
        "output or your own labels (see `cryodet-dask labels`). Patches are read from the chunked files around "
        "the particles; training is resumable: run the same command again to continue. From picks in one "
        "command: --tomogram T --picks PICKS (repeat) with --species NAME:DIAMETER_A,... (or a copick project: "
        "--copick CONFIG --runs A,B) builds the label maps itself, chunk by chunk, into OUT_labels/ beside OUT "
        "(one sphere of its species' diameter per pick; OUT_labels/NAME_labels.mrc and NAME_labels_species.csv), "
        "then trains.",
    )
    p.add_argument("output", help="checkpoint file to write (.pt); the resumable state goes next to it")
    p.add_argument("--tomogram", "-t", action="append", default=[], metavar="FILE",
                   help="training tomogram (repeat for several)")
    p.add_argument("--labels", "-l", action="append", default=[], metavar="FILE",
                   help="instance label map of the tomogram given at the same position (repeat)")
    p.add_argument("--picks", action="append", default=[], metavar="FILE",
                   help="instead of --labels: the picks of the tomogram given at the same position (repeat), in any "
                        "format `picks convert` reads (RELION STAR, copick JSON, CZII CSV, CSV, IMOD ...); each pick "
                        "is painted as a sphere of its species' diameter (--species) or of --particle-diameter, "
                        "into OUT_labels/ beside OUT. For --species, the picks' class column (rlnClassNumber, "
                        "copick object, CZII particle_type, CSV class) names each pick's species; a file of "
                        "several tomograms gives the rows of the one named like the tomogram file")
    p.add_argument("--class-names", default=None, metavar="CLASS=NAME,...",
                   help="with --picks or --copick: species names for the picks' classes, e.g. 1=ribosome,"
                        "2=proteasome for RELION rlnClassNumber (class numbers need names), or a rename of a class "
                        "or copick object that is not copick-safe (ribosome_70S=ribosome-70S)")
    p.add_argument("--particle-diameter", type=positive_float, default=None, metavar="ANGSTROM",
                   help="with --picks and no --species: sphere diameter in Å of every pick (a species-agnostic "
                        "network)")
    p.add_argument("--voxel-size", "-vs", type=positive_float, default=None, metavar="ANGSTROM",
                   help="with --picks: voxel size in Å of the tomograms (default: each file's header)")
    p.add_argument("--pool", action="append", default=[], metavar="DIR",
                   help="a training pool made by `cryodet-dask simulate-pool` (repeat; its tomograms, labels "
                        "and centre targets are added to --tomogram/--labels)")
    p.add_argument("--validation-pool", action="append", default=[], metavar="DIR",
                   help="a pool of validation tomograms (repeat; added to --validation)")
    p.add_argument("--species", type=_species, default=None, metavar="NAME[:DIAMETER_A],...",
                   help="train a multi-species network on these species (two or more; names of letters, digits "
                        "and '-', optional diameters in Å, e.g. 4v4r:280,1bxn:120); every particle needs its "
                        "species: the pools' particles.csv, --particle-species per --tomogram, or the class "
                        "column of --picks (which paints each pick at its species' diameter). Default: the "
                        "--init checkpoint's species, else one species-agnostic 'particle'")
    p.add_argument("--particle-species", action="append", default=[], metavar="CSV",
                   help="the species of each particle of the label map given at the same position: a CSV with "
                        "columns id (the label) and class (the species name), as the simulator's particles.csv "
                        "(repeat)")
    add_bool_flag(p, "freeze-backbone", False, "train only the species branch of a multi-species network "
                  "(with --init: the mask and centre outputs, hence the particles found, stay exactly the start "
                  "network's; only which species each particle is gets learnt)")
    p.add_argument("--species-convs", type=nonneg_int, default=None, metavar="N",
                   help="3^3 convolutions of the species branch between the last decoder features and the species "
                        "output (default: 2; each widens the halo by one voxel)")
    p.add_argument("--species-head", choices=("softmax", "heatmap"), default=None,
                   help="how the species are learnt: softmax (a cross-entropy over the species on particle "
                        "voxels; the default) or heatmap (one centre heatmap per species, regressed on every voxel)")
    p.add_argument("--species-loss", choices=("voxel", "balanced"), default="voxel",
                   help="the softmax head's species cross-entropy on particle voxels: voxel (averaged over the "
                        "voxels, so large and common species weigh most) or balanced (averaged per species present "
                        "in the batch, each species weighing the same) (default: voxel)")
    add_bool_flag(p, "replace-species", False, "with --init of other species: a new species output layer "
                  "(the mask and centre outputs keep their weights; recorded in the checkpoint)")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from these weights (fine-tuning); the architecture is the checkpoint's, or "
                        "with --channels a wider one that starts from the same function")
    p.add_argument("--center", action="append", default=None, metavar="FILE",
                   help="precomputed centre target per tomogram (e.g. the simulator's center.mrc); "
                        "default: computed from the labels")
    p.add_argument("--validation", action="append", type=_pair, default=None, metavar="TOMOGRAM,LABELS",
                   help="validation pair (repeat); default: hold out part of each training tomogram")
    p.add_argument("--network", type=_heads, default=None, metavar="segnet|centernet|twohead",
                   help="which network: segnet (mask), centernet (centre map) or twohead (both, shared; "
                        "half the inference cost); default: segnet, or the --init checkpoint's")
    p.add_argument("--channels", type=_ints, default=None, metavar="C0,C1,...",
                   help="channels per level, finest first, last = bottleneck (default: 32,48,64, the seed; "
                        "with --init: the checkpoint's, or wider ones to widen it to)")
    p.add_argument("--convs-per-level", type=_ints, default=None, metavar="N0,N1,...",
                   help="3^3 convolutions per level (default: 2,2,4, the seed)")
    p.add_argument("--patch-size", type=int_triplet, default=(56,), metavar="N|Z,Y,X",
                   help="training patch size in voxels (default: 56)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="patches per step (default: 4)")
    p.add_argument("--epochs", type=int, default=50, metavar="N", help="maximum epochs (default: 50)")
    p.add_argument("--steps-per-epoch", type=int, default=100, metavar="N", help="steps per epoch (default: 100)")
    p.add_argument("--validation-fraction", type=fraction, default=0.2, metavar="F",
                   help="part of each training tomogram held out for validation without --validation "
                        "(default: 0.2)")
    p.add_argument("--validation-batches", type=int, default=8, metavar="N", help="validation batches (default: 8)")
    p.add_argument("--learning-rate", "--lr", type=positive_float, default=1e-3, metavar="LR",
                   help="initial Adam learning rate (default: 0.001), halved when validation stalls")
    p.add_argument("--patience", type=int, default=6, metavar="N",
                   help="stop after N epochs without validation improvement (default: 6)")
    p.add_argument("--jitter", type=nonneg_int, default=5, metavar="VOXELS",
                   help="random shift of patch centres around particles (default: 5)")
    p.add_argument("--background-fraction", type=fraction, default=0.1, metavar="F",
                   help="fraction of patches at random positions (default: 0.1)")
    p.add_argument("--intensity", type=float, default=0.1, metavar="A",
                   help="intensity jitter amplitude in normalized units (default: 0.1; 0 = off)")
    add_bool_flag(p, "rotate", True, "random 90° rotations about the tilt axis (y)")
    add_bool_flag(p, "flip", True, "random flips of each axis")
    p.add_argument("--center-weight", type=positive_float, default=1.0, metavar="W",
                   help="weight of the centre MSE loss against the mask Dice loss (two-head; default 1)")
    p.add_argument("--center-target", choices=("distance", "gaussian"), default="distance",
                   help="what the centre head learns per particle: distance (normalized distance to the particle's "
                        "boundary, the seed's; uses --center targets if given) or gaussian (exp(-d^2/2s^2) around "
                        "its centroid, s = half its equivalent radius; always made from the labels) "
                        "(default: distance)")
    p.add_argument("--invert", type=fraction, default=0.5, metavar="P",
                   help="probability of negating a patch, so both contrast polarities are learnt (default: 0.5)")
    p.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau",
                   help="plateau: halve the learning rate when validation stalls; cosine: decay it per step to "
                        "1%% over --epochs x --steps-per-epoch (default: plateau)")
    g = p.add_argument_group("training from a copick project (local filesystem)")
    g.add_argument("--copick", default=None, metavar="CONFIG.json",
                   help="train on the tomograms and picks of --runs of this copick project: the species are "
                        "--species (diameters default to twice the config's radius), else every particle object "
                        "with picks in these runs, at twice its radius; label maps go into OUT_labels/RUN_labels.mrc")
    g.add_argument("--runs", default=None, metavar="A,B,...", help="with --copick: the runs to train on")
    g.add_argument("--voxel-spacing", dest="copick_voxel_spacing", type=positive_float, default=10.0,
                   metavar="ANGSTROM", help="with --copick: voxel spacing of the tomograms, Å (default: 10)")
    g.add_argument("--tomo-type", dest="copick_tomo_type", default="wbp", metavar="TYPE",
                   help="with --copick: tomogram type (default: wbp)")
    g.add_argument("--copick-array", default=None, metavar="NAME",
                   help="with --copick: the array of a tomogram's Zarr group without multiscales metadata")
    g.add_argument("--copick-user", default=None, metavar="ID",
                   help="with --copick: use the picks of this user_id only (needed where several users picked "
                        "the same object in a run)")
    g.add_argument("--copick-session", default=None, metavar="ID",
                   help="with --copick: use the picks of this session_id only")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add_bool_flag(p, "amp", True, "mixed precision on CUDA devices")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    p.add_argument("--max-minutes", type=positive_float, default=None, metavar="MIN",
                   help="stop after the epoch that passes this wall-clock time")
    p.add_argument("--snapshot-every", type=nonneg_int, default=0, metavar="N",
                   help="also keep the weights every N epochs as OUT.epochNNN.pt, for learning curves (default: 0, "
                        "never)")
    add_bool_flag(p, "resume", True, "continue from the state left by an earlier run of the same command "
                  "(OUT.last.pt; it records its data's content identities and the settings that change what is "
                  "learnt, and a run with other data or settings is refused; --epochs, --patience, "
                  "--max-minutes, --snapshot-every, --amp and --device may change); --no-resume starts afresh "
                  "and replaces it")
    p.set_defaults(func=run)


def _plan_picks(args: argparse.Namespace) -> list:
    """The label maps to paint from --picks or --copick (everything read and checked, nothing written); the
    planned label maps and species tables become --labels and --particle-species."""
    from ..annotations import parse_class_names
    from ..errors import ParameterError

    if not args.picks and not args.copick:
        given = [f for f, v in (("--class-names", args.class_names), ("--particle-diameter", args.particle_diameter),
                                ("--voxel-size", args.voxel_size), ("--runs", args.runs)) if v is not None]
        if given:
            raise ParameterError(f"{given[0]} goes with --picks or --copick")
        return []
    if args.labels or args.particle_species:
        raise ParameterError("give --picks (label maps built from the picks) or --labels/--particle-species, "
                             "not both")
    if args.picks and args.copick:
        raise ParameterError("give --picks with --tomogram, or --copick with --runs, not both")
    class_names = parse_class_names(args.class_names)
    if args.species is None and args.init and args.particle_diameter is None:
        from ..models import inspect_checkpoint

        start = inspect_checkpoint(args.init).species
        if len(start) > 1:  # train's default: the --init checkpoint's species (their diameters paint the picks)
            args.species = start
    if args.copick:
        from ..training import plan_from_copick

        if args.tomogram:
            raise ParameterError("--copick reads the runs' tomograms: leave out --tomogram")
        if args.runs is None:
            raise ParameterError("--copick needs the runs to train on: --runs A,B")
        runs = [r.strip() for r in args.runs.split(",") if r.strip()]
        jobs, table, _ = plan_from_copick(
            args.copick, runs, args.output, species=args.species, class_names=class_names,
            voxel_spacing=args.copick_voxel_spacing, tomo_type=args.copick_tomo_type, array=args.copick_array,
            user=args.copick_user, session=args.copick_session)
        args.species = table
        args.tomogram = [j.tomogram for j in jobs]
    else:
        from ..training import plan_from_picks

        if len(args.picks) != len(args.tomogram):
            raise ParameterError(f"give one --picks per --tomogram ({len(args.tomogram)} vs {len(args.picks)})")
        if args.species is not None and args.particle_diameter is not None:
            raise ParameterError("--particle-diameter is for a species-agnostic training; with --species the "
                                 "diameters are the species' (NAME:DIAMETER_A)")
        jobs = plan_from_picks(list(zip(args.tomogram, args.picks)), args.output, species=args.species,
                               class_names=class_names, voxel_size=args.voxel_size,
                               particle_diameter=args.particle_diameter)
    args.labels = [str(j.labels) for j in jobs]
    if args.species is not None:
        args.particle_species = [str(j.species_csv) for j in jobs]
    return jobs


def run(args: argparse.Namespace) -> int:
    from ..errors import ParameterError
    from ..training import TrainingConfig, train

    from ..training import read_pool

    if args.init:  # a shipped model's name: its checkpoint file
        from ..prediction import one_checkpoint

        args.init = one_checkpoint(args.init)
    jobs = _plan_picks(args)
    if len(args.tomogram) != len(args.labels):
        raise ParameterError(f"give one --labels per --tomogram ({len(args.tomogram)} vs {len(args.labels)})")
    tomograms, labels = list(args.tomogram), list(args.labels)
    centers = list(args.center) if args.center else None
    if centers is not None and len(centers) != len(tomograms):
        raise ParameterError(f"give one --center per --tomogram ({len(tomograms)} vs {len(centers)})")
    if args.particle_species and len(args.particle_species) != len(args.tomogram):
        raise ParameterError(f"give one --particle-species per --tomogram ({len(args.tomogram)} vs "
                             f"{len(args.particle_species)})")
    species_of: list[str | None] = list(args.particle_species) or [None] * len(tomograms)
    pools = [(d, read_pool(d)) for d in args.pool]
    vpools = [(d, read_pool(d)) for d in args.validation_pool]
    for _, members in pools:
        tomograms += [str(m.tomogram) for m in members]
        labels += [str(m.labels) for m in members]
        species_of += [str(m.particles) if m.particles else None for m in members]
        if centers is not None:
            centers += [str(m.center) for m in members]
    if not tomograms:
        raise ParameterError("no training data: give --tomogram/--labels pairs or --pool")
    validation: list[tuple[str, ...]] = list(args.validation or []) + [
        (str(m.tomogram), str(m.labels), *([str(m.particles)] if args.species and m.particles else []))
        for _, ms in vpools for m in ms]
    if args.species is not None:
        missing = [t for t, s in zip(tomograms, species_of) if s is None]
        if missing:
            raise ParameterError(f"{missing[0]}: a multi-species training needs the species of its particles "
                                 f"(--particle-species CSV with id and class columns)")
        if any(len(v) != 3 for v in validation):
            raise ParameterError("a multi-species training validates on pools (--validation-pool) or on held-out "
                                 "parts of the training tomograms, not on --validation pairs")
    provenance = {"pools": [{"path": str(d), "tomograms": len(ms), "conditions": [m.conditions for m in ms]}
                            for d, ms in pools],
                  "validation_pools": [{"path": str(d), "tomograms": len(ms)} for d, ms in vpools]}
    ps = triplet(args.patch_size)
    cfg = TrainingConfig(
        patch_size=ps, batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        validation_fraction=args.validation_fraction, validation_batches=args.validation_batches,
        learning_rate=args.learning_rate, patience=args.patience, jitter=args.jitter,
        background_fraction=args.background_fraction, rotate=args.rotate, flip=args.flip,
        intensity=args.intensity, center_weight=args.center_weight, center_target=args.center_target,
        invert=args.invert, species_loss=args.species_loss,
        lr_schedule=args.lr_schedule, seed=args.seed, amp=args.amp,
        max_minutes=args.max_minutes, snapshot_every=args.snapshot_every, freeze_backbone=args.freeze_backbone,
    )
    if jobs:
        from ..training import build_labels

        build_labels(jobs, progress=show_progress(args))
        provenance["picks"] = [{"tomogram": j.tomogram, "picks": j.table.source, "labels": str(j.labels),
                                "particles": len(j.table), "voxel_size": j.voxel_size} for j in jobs]
    result = train(
        tomograms, labels, args.output, centers=centers, validation=validation or None,
        config=cfg, heads=args.network or (None if args.init else ("mask",)),
        channels=args.channels,
        convs_per_level=args.convs_per_level, init=args.init, provenance=provenance,
        species=args.species, particle_species=species_of if args.species is not None else None,
        replace_species=args.replace_species, species_convs=args.species_convs,
        species_head=args.species_head,
        device=args.device, resume=args.resume, progress=show_progress(args), threads=args.threads,
        command="cryodet-dask " + " ".join(shlex.quote(a) for a in args.argv),
    )
    if not args.quiet:
        print(f"wrote {result.checkpoint}: best validation loss {result.best_validation_loss:.4f} after "
              f"{result.epochs} epoch(s){' (stopped early)' if result.stopped_early else ''}")
    return 0
