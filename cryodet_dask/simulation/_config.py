"""The parameters of a simulated tomogram: one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError
from ._distractors import check_distractors, parse_distractors
from ._imaging import ImagingParams
from ._membranes import MembraneProfile
from ._tiltseries import TiltSeriesParams, check_tiltseries
from ..templates import SHIPPED_TEMPLATES

__all__ = ["SimulationConfig", "IMAGING_MODES", "DEFAULT_DENSITY"]

#: Imaging models: ``fourier`` (CTF and missing wedge as Fourier masks) or ``tiltseries``
#: (projection, CTF, dose and noise per tilt, weighted back-projection).
IMAGING_MODES = ("fourier", "tiltseries")
#: Particle volume fraction used when neither ``n_particles`` nor ``density`` is given.
DEFAULT_DENSITY = 0.1


@dataclass(frozen=True)
class SimulationConfig:
    """All parameters of a simulated tomogram.

    Attributes
    ----------
    shape : tuple of int
        Volume shape (z, y, x) in voxels.
    voxel_size : float
        Å per voxel; templates are resampled when it is not 10 Å.
    seed : int
        Seed of every random draw: same seed and parameters, same files, bit for bit.
    snr : float
        Signal-to-noise ratio, ``var(noise-free tomogram) / var(noise)`` over the
        whole volume, both through the missing wedge; ``inf`` for no noise.
    tilt_range : float
        Maximum tilt in degrees (±); the missing wedge is the rest (90: none).
    defocus_um : float
        Defocus in µm, negative for underfocus.
    amplitude_contrast : float
        Amplitude contrast fraction.
    voltage_kv : float
        Acceleration voltage, kV.
    cs_mm : float
        Spherical aberration, mm.
    bfactor : float
        Envelope B-factor, Å².
    n_particles : int, optional
        Number of particles asked for; exclusive with ``density``.
    density : float, optional
        Fraction of the volume to fill with particle masks (0-0.5); the count is
        this times the volume over the templates' mean mask volume.  Default
        :data:`DEFAULT_DENSITY` when neither is given.
    templates : tuple of str
        Template names (shipped: 4v4r, 4cr2, 3j9i, 1bxn, 7n4y, 6pxm) or MRC paths.
    abundance : tuple of float
        Relative abundance of each template, in the order of ``templates``
        (numbers of particles, not volumes; normalized); empty: equal.
    template_scale : tuple of float
        Size factor of each template, in the order of ``templates`` (0.1-10):
        the particle is rendered that many times its real size (a size
        augmentation for training; the class name stays the template's);
        empty: real sizes.
    n_membranes : int, optional
        Membranes: half of them (if >= 2) in one stack of curved sheets, the rest
        vesicles (at most 8 sheets).  Default: 4 per 256 × 256 voxels of XY area,
        at least 4 and at most 48.
    membrane_fraction : float
        Fraction of the particles anchored on membranes.
    threshold : float
        Particle mask threshold as a fraction of the template's maximum density.
    leaflet_separation : float
        Distance between the two leaflets of a bilayer, Å.
    leaflet_sigma : float
        Standard deviation of each leaflet's Gaussian profile, Å.
    membrane_density : float
        Peak leaflet density relative to the median protein density (1).
    max_fft_voxels : int
        Largest volume imaged in one FFT; larger ones are imaged in blocks.
    fft_block, fft_halo : int
        Core and halo of those blocks, voxels.
    imaging : str
        ``fourier`` (the CTF and the missing wedge as masks in Fourier space) or
        ``tiltseries`` (each tilt projected, given its CTF, dose and noise,
        then weighted back-projection); see :data:`IMAGING_MODES`.
    tilt_step : float
        Tilt-series step, degrees (``tiltseries`` only).
    tilt_scheme : str
        Tilt-series acquisition order: ``dose-symmetric``, ``bidirectional`` or
        ``unidirectional`` (``tiltseries`` only).
    total_dose : float
        Electrons per Å² over the tilt series (radiation damage; ``tiltseries`` only).
    defocus_gradient : bool
        Vary the defocus across each tilted image (``tiltseries`` only).
    reconstruction_filter : str
        Weighted back-projection filter: ramp, shepp-logan, cosine, hamming, hann.
    distractors : tuple of (str, int)
        Structures that are not particles, in the density but not the labels:
        ``(kind, count)`` pairs (count -1: the default for the volume), kinds
        microtubule, actin, gold, ice, edge, membrane.  A string
        ``"gold:10,actin"`` or a mapping is accepted too.
    allow_fewer_distractors : bool
        Place as many distractors of a kind as fit, with a warning, instead of
        failing when they do not all fit (pools, whose counts are random).
    """

    shape: tuple[int, int, int] = (128, 256, 256)
    voxel_size: float = ImagingParams.voxel_size
    seed: int = 0
    snr: float = ImagingParams.snr
    tilt_range: float = ImagingParams.tilt_range
    defocus_um: float = ImagingParams.defocus_um
    amplitude_contrast: float = ImagingParams.amplitude_contrast
    voltage_kv: float = ImagingParams.voltage_kv
    cs_mm: float = ImagingParams.cs_mm
    bfactor: float = ImagingParams.bfactor
    n_particles: int | None = None
    density: float | None = None
    templates: tuple[str, ...] = tuple(SHIPPED_TEMPLATES)
    abundance: tuple[float, ...] = ()
    template_scale: tuple[float, ...] = ()
    n_membranes: int | None = None
    membrane_fraction: float = 0.8
    threshold: float = 0.1
    leaflet_separation: float = 40.0
    leaflet_sigma: float = 8.0
    membrane_density: float = 1.0
    max_fft_voxels: int = 2**26
    fft_block: int = 256
    fft_halo: int = 32
    imaging: str = "fourier"
    tilt_step: float = 3.0
    tilt_scheme: str = "dose-symmetric"
    total_dose: float = 120.0
    defocus_gradient: bool = True
    reconstruction_filter: str = "ramp"
    distractors: tuple[tuple[str, int], ...] = ()
    allow_fewer_distractors: bool = False

    def __post_init__(self) -> None:
        raw = (self.shape,) if isinstance(self.shape, (int, np.integer)) else tuple(self.shape)
        shape = tuple(int(s) for s in (raw * 3 if len(raw) == 1 else raw))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "templates", tuple(str(t) for t in self.templates))
        object.__setattr__(self, "distractors", parse_distractors(self.distractors))
        object.__setattr__(self, "abundance", tuple(float(a) for a in self.abundance))
        if self.abundance and (len(self.abundance) != len(self.templates)
                               or not all(np.isfinite(a) and a >= 0 for a in self.abundance)
                               or not sum(self.abundance) > 0):
            raise ParameterError(f"abundance must be one number >= 0 per template ({len(self.templates)}), not all 0, "
                                 f"got {list(self.abundance)}")
        object.__setattr__(self, "template_scale", tuple(float(a) for a in self.template_scale))
        if self.template_scale and (len(self.template_scale) != len(self.templates)
                                    or not all(0.1 <= a <= 10 for a in self.template_scale)):
            raise ParameterError(f"template scale must be one factor in 0.1-10 per template ({len(self.templates)}), "
                                 f"got {list(self.template_scale)}")
        if self.imaging not in IMAGING_MODES:
            raise ParameterError(f"imaging must be one of {', '.join(IMAGING_MODES)}, got {self.imaging!r}")
        if len(shape) != 3 or min(shape) < 8:
            raise ParameterError(f"shape must be three sizes (z, y, x) of at least 8 voxels, got {self.shape}")
        checks = [
            (self.voxel_size > 0, f"voxel size must be positive (Å), got {self.voxel_size}"),
            (self.snr > 0, f"SNR must be positive (use inf for no noise), got {self.snr}"),
            (0 < self.tilt_range <= 90, f"tilt range must be in (0, 90] degrees, got {self.tilt_range}"),
            (0 <= self.amplitude_contrast < 1, f"amplitude contrast must be in [0, 1), got {self.amplitude_contrast}"),
            (self.voltage_kv > 0, f"voltage must be positive (kV), got {self.voltage_kv}"),
            (self.cs_mm >= 0, f"spherical aberration must be >= 0 (mm), got {self.cs_mm}"),
            (self.bfactor >= 0, f"B-factor must be >= 0 (Å²), got {self.bfactor}"),
            (self.n_particles is None or self.density is None, "give either a particle count or a density, not both"),
            (self.n_particles is None or self.n_particles >= 0, f"particle count must be >= 0, got {self.n_particles}"),
            (self.density is None or 0 <= self.density <= 0.5,
             f"density (volume fraction of particles) must be in [0, 0.5], got {self.density}"),
            (len(self.templates) > 0, "at least one template is needed"),
            (self.n_membranes is None or self.n_membranes >= 0,
             f"membrane count must be >= 0, got {self.n_membranes}"),
            (0 <= self.membrane_fraction <= 1, f"membrane fraction must be in [0, 1], got {self.membrane_fraction}"),
            (0 < self.threshold < 1, f"threshold must be a fraction of the maximum in (0, 1), got {self.threshold}"),
            (self.leaflet_separation > 0 and self.leaflet_sigma > 0, "leaflet separation and width must be positive"),
            (self.fft_block >= 8 and self.fft_halo >= 0, "FFT blocks need at least 8 voxels and a halo >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(message)
        check_tiltseries(self.tilt_step, self.tilt_scheme, self.total_dose, self.reconstruction_filter,
                         self.tilt_range if self.imaging == "tiltseries" else None)
        if self.distractors:
            check_distractors(self.distractors, self.shape, self.voxel_size)

    @property
    def membrane_count(self) -> int:
        """``n_membranes``, or its default for this shape."""
        if self.n_membranes is not None:
            return int(self.n_membranes)
        return min(48, max(4, int(round(4 * self.shape[1] * self.shape[2] / 256**2))))

    @property
    def imaging_params(self) -> ImagingParams:
        return ImagingParams(
            voxel_size=self.voxel_size, defocus_um=self.defocus_um, amplitude_contrast=self.amplitude_contrast,
            voltage_kv=self.voltage_kv, cs_mm=self.cs_mm, bfactor=self.bfactor, tilt_range=self.tilt_range,
            snr=self.snr,
        )

    @property
    def tiltseries(self) -> TiltSeriesParams:
        return TiltSeriesParams(tilt_step=self.tilt_step, scheme=self.tilt_scheme, total_dose=self.total_dose,
                                defocus_gradient=self.defocus_gradient, filter_name=self.reconstruction_filter)

    @property
    def membrane_profile(self) -> MembraneProfile:
        return MembraneProfile(separation=self.leaflet_separation / self.voxel_size,
                               leaflet_sigma=self.leaflet_sigma / self.voxel_size,
                               amplitude=self.membrane_density)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["templates"] = list(self.templates)
        d["abundance"] = list(self.abundance)
        d["template_scale"] = list(self.template_scale)
        d["distractors"] = {k: n for k, n in self.distractors}
        return d
