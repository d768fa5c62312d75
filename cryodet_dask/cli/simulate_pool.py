"""``cryodet-dask simulate-pool``: many simulated tomograms under random imaging conditions, for training."""

from __future__ import annotations

import argparse

from .._shapes import triplet
from ._common import dataclass_defaults, int_triplet, nonneg_int, positive_int, show_progress


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    return lo, hi


def _kinds(text: str) -> tuple[str, ...]:
    from ..simulation import DISTRACTOR_KINDS

    kinds = tuple(dict.fromkeys(k.strip().lower() for k in str(text).split(",") if k.strip()))
    unknown = [k for k in kinds if k not in DISTRACTOR_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown distractor kind {unknown[0]!r}; choose among "
                                         f"{','.join(DISTRACTOR_KINDS)}")
    return kinds


def register(sub: argparse._SubParsersAction) -> None:
    from ..training import PoolRanges

    d = dataclass_defaults(PoolRanges)  # PoolRanges() would check its values, importing the simulation
    p = sub.add_parser(
        "simulate-pool",
        help="simulate a pool of training tomograms with randomized SNR, tilt, defocus, voxel size, density, "
             "membranes, templates and contrast polarity",
        description="Simulate COUNT tomograms into OUT_DIR/0000, OUT_DIR/0001, ... (the files of `cryodet-dask "
        "simulate`), each with imaging conditions drawn at random from the ranges below, and list them with "
        "their conditions in OUT_DIR/pool.json, which `cryodet-dask train --pool OUT_DIR` reads. The draw of "
        "tomogram i depends only on (--seed, i): the same command completes an interrupted pool, a larger "
        "--count extends it, and pools with different seeds (training, validation, test) share no tomogram. "
        "Units: voxels, Å, µm, degrees.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="pool folder (created)")
    p.add_argument("--count", "-n", type=nonneg_int, required=True, metavar="N", help="number of tomograms")
    p.add_argument("--seed", type=nonneg_int, default=0, metavar="N", help="pool seed (default: 0)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="tomograms simulated at once, one process each (the same files as with 1; default: 1)")
    p.add_argument("--shape", type=int_triplet, default=(64, 160, 160), metavar="Z,Y,X",
                   help="shape of every tomogram in voxels (default: 64,160,160)")
    p.add_argument("--snr", type=_range, default=d.snr, metavar="LO,HI",
                   help=f"SNR range, drawn log-uniformly (default: {d.snr[0]:g},{d.snr[1]:g})")
    p.add_argument("--tilt-range", type=_range, default=d.tilt_range, metavar="LO,HI",
                   help=f"maximum tilt range in degrees (default: {d.tilt_range[0]:g},{d.tilt_range[1]:g})")
    p.add_argument("--defocus", type=_range, default=d.defocus_um, metavar="LO,HI",
                   help=f"defocus range in µm, negative = underfocus (default: {d.defocus_um[0]:g},"
                        f"{d.defocus_um[1]:g})")
    p.add_argument("--voxel-size", type=_range, default=d.voxel_size, metavar="LO,HI",
                   help=f"voxel size range in Å (default: {d.voxel_size[0]:g},{d.voxel_size[1]:g})")
    p.add_argument("--density", type=_range, default=d.density, metavar="LO,HI",
                   help=f"particle volume fraction range (default: {d.density[0]:g},{d.density[1]:g})")
    p.add_argument("--membrane-probability", type=float, default=d.membrane_probability, metavar="P",
                   help=f"probability that a tomogram has membranes (default: {d.membrane_probability:g})")
    p.add_argument("--inverted-fraction", type=float, default=d.inverted_fraction, metavar="P",
                   help=f"probability of inverted contrast, particles bright (default: {d.inverted_fraction:g})")
    p.add_argument("--imaging", choices=("fourier", "tiltseries", "mixed"), default=d.imaging,
                   help="imaging model of the tomograms: Fourier masks, simulated tilt series with weighted "
                        "back-projection, or each tomogram either at random (recorded per tomogram in pool.json; "
                        f"default: {d.imaging})")
    p.add_argument("--tilt-step", type=_range, default=d.tilt_step, metavar="LO,HI",
                   help=f"tilt-series step range in degrees (default: {d.tilt_step[0]:g},{d.tilt_step[1]:g})")
    p.add_argument("--distractors", type=_kinds, default=d.distractors, metavar="KINDS",
                   help="distractor kinds, labelled as background, each present in a tomogram with "
                        "--distractor-probability at 0.5-1.5 times its default count: microtubule, actin, gold, "
                        "ice, edge, membrane (default: none)")
    p.add_argument("--distractor-probability", type=float, default=d.distractor_probability, metavar="P",
                   help=f"probability of each distractor kind per tomogram (default: {d.distractor_probability:g})")
    p.add_argument("--species-mix", choices=("equal", "varied"), default=d.species_mix,
                   help="proportions of each tomogram's templates: equal numbers, or random proportions per "
                        f"tomogram (each at least 2 %%; recorded per tomogram in pool.json; default: {d.species_mix})")
    p.add_argument("--size-range", type=_range, default=d.size_range, metavar="LO,HI",
                   help="size factor of each template per tomogram, log-uniform: a size augmentation (e.g. 0.6,1.8 "
                        "spans particles of about 7-40 voxels across at 10 Å; the class stays the template's; "
                        f"recorded in pool.json; default: {d.size_range[0]:g},{d.size_range[1]:g}, real sizes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import PoolRanges, simulate_pool

    shape = triplet(args.shape)
    ranges = PoolRanges(snr=args.snr, tilt_range=args.tilt_range, defocus_um=args.defocus,
                        voxel_size=args.voxel_size, density=args.density,
                        membrane_probability=args.membrane_probability, inverted_fraction=args.inverted_fraction,
                        imaging=args.imaging, tilt_step=args.tilt_step, distractors=args.distractors,
                        distractor_probability=args.distractor_probability, species_mix=args.species_mix,
                        size_range=args.size_range)
    members = simulate_pool(args.out_dir, args.count, seed=args.seed, shape=shape, ranges=ranges,
                            progress=show_progress(args), workers=args.workers)
    if not args.quiet:
        inv = sum(bool(m.conditions.get("inverted")) for m in members)
        print(f"wrote {args.out_dir}: {len(members)} tomograms of {shape} voxels ({inv} with inverted contrast); "
              f"pool.json lists their conditions")
    return 0
