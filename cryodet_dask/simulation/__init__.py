"""Realistic synthetic cryo-electron tomograms with ground truth.

A scene of membranes (thylakoid-like stacks of gently curved sheets, closed
vesicles; each a bilayer of two leaflets 4 nm apart) and densely packed
particles drawn from real macromolecule templates, most anchored on
membranes, the others free, none overlapping; optionally distractors that
are not particles (filaments, gold beads, ice, edges, membranes at any
angle), in the density but not the labels; imaged with a CTF, a missing
wedge and noise at a chosen SNR, either as Fourier masks (``fourier``) or
through a simulated tilt series and weighted back-projection
(``tiltseries``).  Ground truth: instance labels, binary mask,
CenterNet target (normalised distance to each particle's own boundary),
membrane mask and a particle table.

* :func:`simulate` writes a folder (``tomogram.mrc``, ``labels.mrc``,
  ``mask.mrc``, ``center.mrc``, ``membranes.mrc``, ``particles.csv``).
* :func:`simulate_arrays` is the in-memory core.
* The building blocks (templates, membranes, imaging, targets) are pure
  functions on arrays, exported below.

Conventions: arrays are (z, y, x); the table's ``x, y, z`` are voxels (x the
last axis), ``*_angst`` = voxels × voxel size; Euler angles are RELION ZYZ
``(phi, theta, psi)`` in degrees; the tomogram has zero mean, unit variance
and dense objects dark (low values).  See ``docs/simulation.md``.

The names are imported on first use (importing the package stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._distractors import (
        DISTRACTOR_CODES,
        DISTRACTOR_KINDS,
        DistractorPlacementError,
        default_distractor_count,
        parse_distractors,
        place_distractors,
    )
    from ._imaging import (
        ImagingParams,
        ctf,
        electron_wavelength,
        image_volume,
        imaging_filter,
        missing_wedge_mask,
    )
    from ._membranes import (
        MembraneProfile,
        Sheet,
        Vesicle,
        plan_membranes,
        render_membranes,
        signed_distance,
    )
    from ._placement import (
        PARTICLE_COLUMNS,
        place_particles,
    )
    from ._simulate import (
        DEFAULT_DENSITY,
        DISTRACTORS_FILE,
        FORMATS,
        IMAGING_MODES,
        OUTPUT_FILES,
        SimulatedTomogram,
        SimulationConfig,
        SimulationResult,
        simulate,
        output_files,
        simulate_arrays,
        write_simulation,
    )
    from ._targets import (
        center_target,
    )
    from ._tiltseries import (
        RECONSTRUCTION_FILTERS,
        TILT_SCHEMES,
        TiltSeriesParams,
        acquisition_order,
        exposure_filter,
        image_tiltseries,
        tilt_angles,
    )
    from ..templates import (
        SHIPPED_TEMPLATES,
        Template,
        euler_from_rotation,
        load_template,
        prepare_template,
        render_particle,
        rotation_from_euler,
        template_path,
    )
    from ._variants import (
        POOL_IMAGING,
        check_pool_variants,
        draw_variants,
    )

__all__ = [
    "DEFAULT_DENSITY",
    "DISTRACTOR_CODES",
    "DISTRACTOR_KINDS",
    "DISTRACTORS_FILE",
    "DistractorPlacementError",
    "IMAGING_MODES",
    "RECONSTRUCTION_FILTERS",
    "TILT_SCHEMES",
    "TiltSeriesParams",
    "acquisition_order",
    "default_distractor_count",
    "exposure_filter",
    "image_tiltseries",
    "parse_distractors",
    "place_distractors",
    "tilt_angles",
    "FORMATS",
    "ImagingParams",
    "MembraneProfile",
    "OUTPUT_FILES",
    "PARTICLE_COLUMNS",
    "SHIPPED_TEMPLATES",
    "Sheet",
    "SimulatedTomogram",
    "SimulationConfig",
    "SimulationResult",
    "Template",
    "Vesicle",
    "center_target",
    "ctf",
    "electron_wavelength",
    "euler_from_rotation",
    "image_volume",
    "imaging_filter",
    "load_template",
    "missing_wedge_mask",
    "output_files",
    "place_particles",
    "plan_membranes",
    "prepare_template",
    "render_membranes",
    "render_particle",
    "rotation_from_euler",
    "signed_distance",
    "simulate",
    "simulate_arrays",
    "template_path",
    "write_simulation",
    "POOL_IMAGING",
    "check_pool_variants",
    "draw_variants",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, {
        "._distractors": ("DISTRACTOR_CODES", "DISTRACTOR_KINDS", "DistractorPlacementError", "default_distractor_count", "parse_distractors", "place_distractors"),
        "._imaging": ("ImagingParams", "ctf", "electron_wavelength", "image_volume", "imaging_filter", "missing_wedge_mask"),
        "._membranes": ("MembraneProfile", "Sheet", "Vesicle", "plan_membranes", "render_membranes", "signed_distance"),
        "._placement": ("PARTICLE_COLUMNS", "place_particles"),
        "._simulate": ("DEFAULT_DENSITY", "DISTRACTORS_FILE", "FORMATS", "IMAGING_MODES", "OUTPUT_FILES", "SimulatedTomogram", "SimulationConfig", "SimulationResult", "simulate", "output_files", "simulate_arrays", "write_simulation"),
        "._targets": ("center_target",),
        "._tiltseries": ("RECONSTRUCTION_FILTERS", "TILT_SCHEMES", "TiltSeriesParams", "acquisition_order", "exposure_filter", "image_tiltseries", "tilt_angles"),
        "..templates": ("SHIPPED_TEMPLATES", "Template", "euler_from_rotation", "load_template", "prepare_template", "render_particle", "rotation_from_euler", "template_path"),
        "._variants": ("POOL_IMAGING", "check_pool_variants", "draw_variants"),
    })
