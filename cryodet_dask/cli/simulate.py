"""``cryodet-dask simulate``: a synthetic tomogram with its ground truth."""

from __future__ import annotations

import argparse

from .._shapes import triplet
from ._common import deprecated_alias, fraction, int_triplet, nonneg_int, positive_float, show_progress

_DEFAULT_TEMPLATES = "4v4r,4cr2,3j9i,1bxn,7n4y,6pxm"


def _templates(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected template names or MRC paths separated by commas")
    return names


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _dose(text: str) -> float:
    v = _number(text)
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a dose >= 0 in e/Å², got {text!r}")
    return v


def _tilt(text: str) -> float:
    v = _number(text)
    if not 0 < v <= 90:
        raise argparse.ArgumentTypeError(f"expected a tilt range in (0, 90] degrees, got {text!r}")
    return v


def _tilt_step(text: str) -> float:
    v = _number(text)
    if not 0 < v <= 90:
        raise argparse.ArgumentTypeError(f"expected a tilt step in (0, 90] degrees, got {text!r}")
    return v


def _distractors(text: str) -> tuple[tuple[str, int], ...]:
    """``microtubule:2,gold:10,ice`` -> ((kind, count), ...); a kind alone gets its default count (-1)."""
    from ..errors import ParameterError
    from ..simulation import parse_distractors

    try:
        return parse_distractors(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a tomogram with ground truth (labels, mask, CenterNet target, particle table)",
        description=(
            "Simulate a cellular cryo-electron tomogram with its ground truth: membranes (a stack of gently "
            "curved sheets and closed vesicles, each a bilayer with leaflets 4 nm apart) and densely packed "
            "particles from real macromolecule templates (most anchored on membranes, the rest free, none "
            "overlapping), imaged with a CTF, a missing wedge (tilt axis y, beam z) and noise, either as Fourier masks "
            "or through a simulated tilt series and weighted back-projection (--imaging tiltseries); optionally "
            "distractors (filaments, gold beads, ice, edges, membranes at any angle) labelled as background. Writes "
            "tomogram.mrc, labels.mrc, mask.mrc, center.mrc, membranes.mrc, particles.csv and simulation.json "
            "into OUT_DIR. Units: sizes and coordinates in voxels, voxel size in Å, defocus in µm, angles in "
            "degrees. The tomogram has zero mean and unit variance, particles dark (low values)."
        ),
        epilog=(
            "example: cryodet-dask simulate sim --shape 128,384,384 --snr 0.3 --particles 300 --preview\n"
            "shipped templates: 4v4r (70S ribosome), 4cr2 (26S proteasome), 3j9i (20S proteasome), "
            "1bxn (rubisco), 7n4y, 6pxm (PolNet, Apache-2.0)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    g = p.add_argument_group("scene")
    g.add_argument("--shape", type=int_triplet, default=(128, 256, 256), metavar="Z,Y,X",
                   help="volume shape in voxels, z,y,x (default: 128,256,256)")
    g.add_argument("--voxel-size", type=positive_float, default=10.0, metavar="ANGSTROM",
                   help="voxel size in Å; templates (10 Å) are resampled to it (default: 10)")
    g.add_argument("--seed", type=nonneg_int, default=0, metavar="N",
                   help="random seed; the same seed and options give identical files (default: 0)")
    n = g.add_mutually_exclusive_group()
    n.add_argument("--particles", type=nonneg_int, default=None, metavar="N",
                   help="number of particles to place (default: from --density)")
    n.add_argument("--density", type=fraction, default=None, metavar="FRACTION",
                   help="fraction of the volume to fill with particles, 0-0.5; the count is this times the volume "
                        "over the templates' mean volume (default: 0.1)")
    g.add_argument("--templates", type=_templates, default=None, metavar="NAMES",
                   help=f"particle species, comma-separated shipped template names or MRC file paths "
                        f"(default: {_DEFAULT_TEMPLATES})")
    g.add_argument("--abundance", type=_numbers, default=(), metavar="W,W,...",
                   help="relative number of particles of each template, in the order of --templates, e.g. 3,1,1 "
                        "(default: equal)")
    g.add_argument("--template-scale", type=_numbers, default=(), metavar="S,S,...",
                   help="size factor of each template, in the order of --templates, 0.1-10: particles rendered that "
                        "many times their real size (default: real sizes)")
    g.add_argument("--membranes", type=nonneg_int, default=None, metavar="N",
                   help="number of membranes: half (if >= 2, at most 8) as one stack of curved sheets, the rest "
                        "vesicles (default: 4 per 256x256 voxels of XY area, 4 to 48)")
    g.add_argument("--membrane-fraction", type=fraction, default=0.8, metavar="FRACTION",
                   help="fraction of the particles anchored on membranes, 0-1 (default: 0.8)")
    g.add_argument("--threshold", type=fraction, default=0.1, metavar="FRACTION",
                   help="particle mask threshold, fraction of the template's maximum density (default: 0.1)")
    g.add_argument("--distractors", type=_distractors, default=(), metavar="KIND[:COUNT],...",
                   help="structures that are not particles, in the density but labelled background: microtubule, "
                        "actin, gold, ice, edge, membrane, each with an optional count (default count per 256x256 "
                        "voxels of XY area: 2, 6, 8, 2, 1, 1); they also go into OUT_DIR/distractors.mrc "
                        "(default: none)")
    m = p.add_argument_group("imaging")
    m.add_argument("--snr", type=positive_float, default=0.3, metavar="RATIO",
                   help="signal-to-noise ratio, variance of the noise-free tomogram over variance of the noise, "
                        "whole volume ('inf' for no noise; default: 0.3)")
    m.add_argument("--tilt-range", type=_tilt, default=60.0, metavar="DEGREES",
                   help="maximum tilt angle in degrees (±); the missing wedge is the rest, 90 = none (default: 60)")
    m.add_argument("--defocus", type=_number, default=-3.0, metavar="MICROMETRES",
                   help="defocus in µm, negative = underfocus (default: -3)")
    m.add_argument("--amplitude-contrast", type=fraction, default=0.07, metavar="FRACTION",
                   help="amplitude contrast fraction (default: 0.07)")
    m.add_argument("--voltage-kv", dest="voltage", type=positive_float, default=300.0, metavar="KV",
                   help="acceleration voltage in kV (default: 300)")
    deprecated_alias(m, "--voltage", "--voltage-kv", "voltage", parse=positive_float)
    m.add_argument("--cs", type=_number, default=2.7, metavar="MM",
                   help="spherical aberration in mm (default: 2.7)")
    m.add_argument("--bfactor", type=_number, default=200.0, metavar="ANGSTROM2",
                   help="B-factor of the CTF envelope in Å² (default: 200)")
    m.add_argument("--imaging", choices=("fourier", "tiltseries"), default="fourier",
                   help="fourier: CTF and missing wedge applied as masks in Fourier space (fast); tiltseries: "
                        "the density projected at each tilt, CTF, dose and noise per projection, weighted "
                        "back-projection (default: fourier)")
    t = p.add_argument_group("tilt series (--imaging tiltseries)")
    t.add_argument("--tilt-step", type=_tilt_step, default=3.0, metavar="DEGREES",
                   help="angular step between tilts (default: 3)")
    t.add_argument("--tilt-scheme", choices=("dose-symmetric", "bidirectional", "unidirectional"),
                   default="dose-symmetric", help="acquisition order, which sets the dose each tilt received before "
                                                   "it (default: dose-symmetric)")
    t.add_argument("--dose", type=_dose, default=120.0, metavar="E_PER_A2",
                   help="total electron dose over the series in e/Å², spread evenly over the tilts; later tilts "
                        "lose high frequencies (0: no radiation damage; default: 120)")
    t.add_argument("--no-defocus-gradient", dest="defocus_gradient", action="store_false",
                   help="one defocus per tilted image instead of one varying across it")
    t.add_argument("--reconstruction-filter", choices=("ramp", "shepp-logan", "cosine", "hamming", "hann"),
                   default="ramp", help="weighted back-projection filter (default: ramp)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=("mrc", "zarr"), default="mrc",
                   help="volume format: MRC files, or OME-Zarr v3 stores (tomogram.zarr, ...) for large volumes "
                        "(default: mrc)")
    o.add_argument("--preview", action="store_true",
                   help="also write OUT_DIR/preview.png: central XY and XZ slices and the label overlay")
    o.add_argument("--overwrite", action="store_true", help="replace existing output files in OUT_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..simulation import SHIPPED_TEMPLATES, simulate

    shape = triplet(args.shape)
    result = simulate(
        args.out_dir,
        shape=shape,
        voxel_size=args.voxel_size,
        seed=args.seed,
        snr=args.snr,
        tilt_range=args.tilt_range,
        defocus_um=args.defocus,
        amplitude_contrast=args.amplitude_contrast,
        voltage_kv=args.voltage,
        cs_mm=args.cs,
        bfactor=args.bfactor,
        n_particles=args.particles,
        density=args.density,
        templates=args.templates or tuple(SHIPPED_TEMPLATES),
        abundance=args.abundance,
        template_scale=args.template_scale,
        n_membranes=args.membranes,
        membrane_fraction=args.membrane_fraction,
        threshold=args.threshold,
        imaging=args.imaging,
        tilt_step=args.tilt_step,
        tilt_scheme=args.tilt_scheme,
        total_dose=args.dose,
        defocus_gradient=args.defocus_gradient,
        reconstruction_filter=args.reconstruction_filter,
        distractors=args.distractors,
        preview=args.preview,
        format=args.format,
        overwrite=args.overwrite,
        progress=show_progress(args) and args.verbose > 0,
    )
    if not args.quiet:
        print(
            f"wrote {result.out_dir}: tomogram (z,y,x) {result.shape} at {result.voxel_size:g} Å, "
            f"{result.n_particles} particles ({result.n_on_membrane} on membranes), {result.n_membranes} membranes, "
            f"SNR {result.snr:.3g}, {args.imaging} imaging, {result.seconds:.1f} s"
        )
    return 0
