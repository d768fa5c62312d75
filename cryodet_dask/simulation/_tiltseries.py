"""Tilt-series imaging: project at each tilt, CTF, dose and noise per projection, back-project.

The physical alternative to the Fourier-mask model of :mod:`._imaging`:

1. **Projection.**  The tilt axis is y and the beam runs along z, so every
   xz-slice (fixed y) is an independent 2D parallel-beam problem.  Each slice
   is projected at every tilt with scikit-image's :func:`skimage.transform.radon`
   (rotate and sum, bilinear interpolation), giving the tilt series
   ``(n_tilts, ny, n_det)``; ``n_det`` is the slice's diagonal, so no ray
   misses the volume.
2. **Per projection** (a 2D (y, detector) image, the whole of it, exactly):
   the exposure filter of the dose received before it (Grant & Grigorieff
   2015, radiation damage: later tilts lose high frequencies), the CTF of
   :func:`._imaging.ctf` (with the B-factor envelope) at that tilt's defocus,
   optionally varying across the image perpendicular to the tilt axis
   (the tilted specimen's height ``s · tan θ``, applied in strips of at most
   50 nm of defocus), then white Gaussian noise whose standard deviation grows
   as the electrons transmitted through the tilted slab (path
   ``thickness / cos θ``, inelastic mean free path 350 nm) fall.
3. **Reconstruction** by filtered (weighted) back-projection,
   :func:`skimage.transform.iradon` per slice (ramp filter by default), and the
   volume's rectangle is cut out of each reconstructed square.

Steps 1 and 3 run over y-slabs independently (any slab size gives the same
result, bit for bit); step 2 works on the whole tilt series, which is small
(``n_tilts × ny × n_det`` float32, 12 MB for 128×256×256 at 41 tilts).

SNR: as in the Fourier-mask model, ``var(noise-free tomogram) / var(noise
in the tomogram)``.  Both are linear in the tilt series, so they are
measured on every 8th y-slice (signal and noise reconstructed apart there),
the noise scaled to the asked SNR, and signal plus noise reconstructed once
for the whole volume.  The SNR written to ``simulation.json`` is measured on
the result: ``(var(tomogram) - var(noise)) / var(noise)``, ``var(noise)``
from the sampled slices (the noise is stationary along y).

Geometry (checked in the tests): detector coordinate ``s = x cos θ - z sin θ``
(voxels from the volume's centre), so the specimen's mid-plane is at height
``s tan θ`` along the beam; z points towards the electron source and a point
higher up is further underfocused.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft

from ..errors import ParameterError
from ._imaging import ImagingParams, ctf

__all__ = [
    "TiltSeriesParams",
    "TILT_SCHEMES",
    "RECONSTRUCTION_FILTERS",
    "tilt_angles",
    "acquisition_order",
    "exposure_filter",
    "image_tiltseries",
]

#: Orders in which the tilts are acquired (they set the dose each tilt has received before it).
TILT_SCHEMES = ("dose-symmetric", "bidirectional", "unidirectional")
#: Filters of the weighted back-projection (scikit-image's names).
RECONSTRUCTION_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")

_MEAN_FREE_PATH = 3500.0  # Å, inelastic mean free path in vitreous ice at 300 kV (zero-loss filtered)
_STRIP_DEFOCUS = 500.0  # Å, the largest defocus change within one CTF strip
_SNR_ROW_STEP = 8  # y-slices sampled to measure the signal and noise variances


@dataclass(frozen=True)
class TiltSeriesParams:
    """Acquisition and reconstruction of a simulated tilt series.

    The tilt range, defocus, voltage and SNR come from :class:`ImagingParams`.

    Attributes
    ----------
    tilt_step : float
        Angular step in degrees; the tilts are ``0, ±step, ±2 step, ...`` up to
        the tilt range.
    scheme : str
        Acquisition order: ``dose-symmetric`` (Hagen et al. 2017: 0°, then
        groups of two tilts alternating sides), ``bidirectional`` (0° to +max,
        then -step to -max) or ``unidirectional`` (-max to +max).
    total_dose : float
        Electrons per Å² over the whole series, spread evenly over the tilts;
        0 for no radiation damage.
    defocus_gradient : bool
        Vary the defocus across each tilted image (perpendicular to the tilt axis).
    filter_name : str
        Back-projection filter, one of :data:`RECONSTRUCTION_FILTERS`.
    slab : int or None
        y-slices per chunk of the projection and reconstruction; ``None`` picks
        about 4 M voxels per chunk.  Does not change the result.
    workers : int
        Threads over the chunks.
    """

    tilt_step: float = 3.0
    scheme: str = "dose-symmetric"
    total_dose: float = 120.0
    defocus_gradient: bool = True
    filter_name: str = "ramp"
    slab: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        check_tiltseries(self.tilt_step, self.scheme, self.total_dose, self.filter_name)
        if self.slab is not None and self.slab < 1:
            raise ParameterError(f"tilt-series slab must be at least one y-slice, got {self.slab}")


def check_tiltseries(tilt_step: float, scheme: str, total_dose: float, filter_name: str,
                     tilt_range: float | None = None) -> None:
    """Raise :class:`ParameterError` for a tilt step, scheme, dose or filter out of range."""
    if not (math.isfinite(tilt_step) and tilt_step > 0):
        raise ParameterError(f"tilt step must be a positive number of degrees, got {tilt_step}")
    if tilt_range is not None and tilt_step > tilt_range:
        raise ParameterError(f"tilt step ({tilt_step:g}°) must not exceed the tilt range ({tilt_range:g}°)")
    if scheme not in TILT_SCHEMES:
        raise ParameterError(f"tilt scheme must be one of {', '.join(TILT_SCHEMES)}, got {scheme!r}")
    if not (math.isfinite(total_dose) and total_dose >= 0):
        raise ParameterError(f"total dose must be >= 0 electrons/Å², got {total_dose}")
    if filter_name not in RECONSTRUCTION_FILTERS:
        raise ParameterError(f"reconstruction filter must be one of {', '.join(RECONSTRUCTION_FILTERS)}, "
                             f"got {filter_name!r}")


def tilt_angles(tilt_range: float, step: float) -> np.ndarray:
    """Tilt angles in degrees, ascending: ``step · k`` for ``|step · k| <= tilt_range``.

    Examples
    --------
    >>> tilt_angles(60, 20).tolist()
    [-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0]
    """
    if not step > 0:
        raise ParameterError(f"tilt step must be positive, got {step}")
    n = int(math.floor(tilt_range / step + 1e-9))
    return step * np.arange(-n, n + 1, dtype=np.float64)


def acquisition_order(angles: np.ndarray, scheme: str = "dose-symmetric") -> np.ndarray:
    """Position of each tilt in the acquisition (0 = first), for ``angles`` ascending.

    Examples
    --------
    >>> acquisition_order(np.array([-6.0, -3.0, 0.0, 3.0, 6.0]), "dose-symmetric").tolist()
    [4, 3, 0, 1, 2]
    """
    angles = np.asarray(angles, dtype=np.float64)
    zero = int(np.argmin(np.abs(angles)))
    plus = [i for i in range(zero + 1, len(angles))]
    minus = [i for i in range(zero - 1, -1, -1)]
    if scheme == "dose-symmetric":
        sequence = [zero]
        for g in range(0, max(len(plus), len(minus)), 2):
            sequence += plus[g : g + 2] + minus[g : g + 2]
    elif scheme == "bidirectional":
        sequence = [zero] + plus + minus
    elif scheme == "unidirectional":
        sequence = list(range(len(angles)))
    else:
        raise ParameterError(f"tilt scheme must be one of {', '.join(TILT_SCHEMES)}, got {scheme!r}")
    order = np.empty(len(angles), dtype=np.int64)
    order[np.asarray(sequence, dtype=np.int64)] = np.arange(len(sequence))
    return order


def exposure_filter(k: np.ndarray, dose: float, voltage_kv: float = 300.0) -> np.ndarray:
    """Amplitude left after ``dose`` e/Å² at spatial frequencies ``k`` (1/Å): ``exp(-dose / (2 Ne(k)))``.

    ``Ne(k) = 0.245 k^-1.665 + 2.81`` e/Å² is the critical exposure measured by
    Grant & Grigorieff (eLife 2015) at 300 kV; 0.8 times that below 250 kV.
    """
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ne = 0.245 * np.power(np.abs(k), -1.665) + 2.81  # infinite at k = 0: no damage there
    if voltage_kv < 250:
        ne = 0.8 * ne
    return np.exp(-dose / (2.0 * ne))


def _detector(shape_zx: tuple[int, int]) -> tuple[int, int, int]:
    """Side ``d`` of the square each xz-slice is padded into and the slice's offsets (z, x) in it.

    The square's inscribed circle (scikit-image's ``circle=True``) holds the whole slice.
    """
    nz, nx = shape_zx
    d = max(nz, nx)
    while True:
        z0, x0, c, r = (d - nz) // 2, (d - nx) // 2, d // 2, d // 2
        corners = [(z - c) ** 2 + (x - c) ** 2 for z in (z0, z0 + nz - 1) for x in (x0, x0 + nx - 1)]
        if max(corners) <= r * r:
            return d, z0, x0
        d += 1


def _project_rows(signal: Any, ys: range, angles: np.ndarray, geometry: tuple[int, int, int]) -> np.ndarray:
    """Sinograms of the xz-slices ``ys``: (n_tilts, len(ys), n_det) float32."""
    from skimage.transform import radon

    d, z0, x0 = geometry
    block = np.asarray(signal[:, ys.start : ys.stop, :], dtype=np.float64)
    nz, _, nx = block.shape
    out = np.empty((len(angles), len(ys), d), np.float32)
    pad = np.zeros((d, d), np.float64)
    for j in range(len(ys)):
        pad[z0 : z0 + nz, x0 : x0 + nx] = block[:, j, :]
        out[:, j, :] = radon(pad, angles, circle=True, preserve_range=True).T
    return out


def _reconstruct_rows(series: np.ndarray, ys: Any, angles: np.ndarray, geometry: tuple[int, int, int],
                      shape_zx: tuple[int, int], filter_name: str) -> np.ndarray:
    """Filtered back-projection of the y-rows ``ys`` of ``series`` (n_tilts, ny, n_det): (nz, len, nx)."""
    from skimage.transform import iradon

    d, z0, x0 = geometry
    nz, nx = shape_zx
    # iradon reconstructs a square of side m centred on the rotation centre (pixel m // 2 is the
    # sinogram's centre d // 2): the smallest square that holds the slice, not the whole padded one
    # (circle=False: no mask outside the square's inscribed circle, no padding of the sinogram)
    m = max(nz, nx)
    while True:
        r0, q0 = z0 - d // 2 + m // 2, x0 - d // 2 + m // 2
        if (r0 >= 0 and q0 >= 0 and r0 + nz <= m and q0 + nx <= m) or m >= d:
            break
        m += 1
    if m >= d:
        m, r0, q0 = d, z0, x0
    ys = list(ys)
    out = np.empty((nz, len(ys), nx), np.float32)
    for j, y in enumerate(ys):
        sino = np.asarray(series[:, y, :], dtype=np.float64).T
        rec = iradon(sino, angles, output_size=m, filter_name=filter_name, circle=False, preserve_range=True)
        out[:, j, :] = rec[r0 : r0 + nz, q0 : q0 + nx]
    return out


def _slabs(ny: int, slab: int) -> list[range]:
    return [range(y0, min(y0 + slab, ny)) for y0 in range(0, ny, slab)]


def _map(fn: Any, items: list[Any], workers: int) -> list[Any]:
    if workers <= 1 or len(items) <= 1:
        return [fn(it) for it in items]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


def _transfer(series: np.ndarray, angles: np.ndarray, order: np.ndarray, params: ImagingParams,
              tilt: TiltSeriesParams) -> None:
    """Dose (exposure filter) and CTF applied to each projection of ``series`` in place."""
    n_tilts, ny, d = series.shape
    vs = params.voxel_size
    pad_y = min(ny - 1, 16)
    ky = sfft.fftfreq(ny + 2 * pad_y, d=vs)[:, None]
    ks = sfft.rfftfreq(d, d=vs)[None, :]
    k = np.sqrt(ky**2 + ks**2)
    dose_per_tilt = tilt.total_dose / n_tilts
    s = (np.arange(d) - d // 2) * vs  # detector coordinate, Å from the tilt axis
    for i, theta in enumerate(angles):
        image = np.pad(series[i].astype(np.float64), ((pad_y, pad_y), (0, 0)), mode="reflect")
        spec = sfft.rfft2(image)
        damage = exposure_filter(k, (order[i] + 0.5) * dose_per_tilt, params.voltage_kv)
        # the mid-plane's height s tan θ, θ capped at ±80° (at 90° the tilted slab is edge-on)
        slope = math.tan(math.radians(float(np.clip(theta, -80.0, 80.0))))
        height = s * slope if tilt.defocus_gradient else np.zeros(d)
        span = float(height.max() - height.min())
        n_strips = min(d, max(1, int(math.ceil(span / _STRIP_DEFOCUS))))
        edges = np.linspace(0, d, n_strips + 1).round().astype(int)
        result = np.empty((ny, d), np.float64)
        for a, b in zip(edges[:-1], edges[1:]):
            h = float(height[a:b].mean())
            p = dataclasses.replace(params, defocus_um=params.defocus_um - h * 1e-4)
            filtered = sfft.irfft2(spec * (ctf(k, p) * damage), s=image.shape)
            result[:, a:b] = filtered[pad_y : pad_y + ny, a:b]
        series[i] = result.astype(np.float32)


def _noise_sigmas(angles: np.ndarray, thickness: float) -> np.ndarray:
    """Relative noise standard deviation per tilt: ``1 / sqrt(transmitted fraction)`` relative to 0°."""
    # the path through the slab grows as 1 / cos θ; capped at 80° (at 90° a slab has no finite path)
    cos = np.maximum(np.cos(np.deg2rad(angles)), math.cos(math.radians(80.0)))
    transmitted = np.exp(-thickness * (1.0 / cos - 1.0) / _MEAN_FREE_PATH)
    return (1.0 / np.sqrt(transmitted)).astype(np.float64)


def _moments(a: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float, float]:
    x = np.asarray(a, dtype=np.float64)
    if mask is not None and not mask.all():  # all excluded: fall back to every voxel
        x = x[~mask]
    return float(x.sum()), float(np.square(x).sum()), float(x.size)


def _var(m: tuple[float, float, float]) -> float:
    s, s2, n = m
    return max(s2 / n - (s / n) ** 2, 0.0) if n else 0.0


def image_tiltseries(
    signal: Any,
    out: Any,
    params: ImagingParams,
    tilt: TiltSeriesParams,
    seed: int | np.random.SeedSequence,
    *,
    clean: Any | None = None,
    exclude: Any | None = None,
) -> dict[str, Any]:
    """Image ``signal`` through a simulated tilt series into ``out`` (both (z, y, x), float32).

    Parameters
    ----------
    signal : array-like
        Specimen density (numpy array or memory map).
    out : array-like
        Receives the normalised tomogram (zero mean, unit variance).
    params : ImagingParams
        Tilt range (±degrees), defocus, voltage, Cs, amplitude contrast,
        B-factor, voxel size and SNR (``inf``: no noise).
    tilt : TiltSeriesParams
    seed : int or numpy.random.SeedSequence
        Seed of the noise; projection ``i`` draws its own from it.
    clean : array-like, optional
        Receives the noise-free tomogram on the same normalised scale (one more
        reconstruction pass).
    exclude : array-like, optional
        Voxels (nonzero) left out of the signal variance (distractors), as in
        :func:`._imaging.image_volume`.

    Returns
    -------
    dict
        ``signal_var``, ``noise_var`` (before normalisation), ``snr`` as
        measured, ``mean``, ``std`` and the tilt series' ``tilt_angles``,
        ``acquisition_order`` and ``dose_per_tilt``.
    """
    shape = tuple(int(s) for s in signal.shape)
    nz, ny, nx = shape
    check_tiltseries(tilt.tilt_step, tilt.scheme, tilt.total_dose, tilt.filter_name, params.tilt_range)
    angles = tilt_angles(params.tilt_range, tilt.tilt_step)
    order = acquisition_order(angles, tilt.scheme)
    geometry = _detector((nz, nx))
    d = geometry[0]
    slab = tilt.slab or max(1, (1 << 22) // (nz * nx))
    slabs = _slabs(ny, slab)

    # 1. projection, slab by slab
    series = np.empty((len(angles), ny, d), np.float32)

    def project(ys: range) -> None:
        series[:, ys.start : ys.stop, :] = _project_rows(signal, ys, angles, geometry)

    _map(project, slabs, tilt.workers)
    # 2. dose and CTF per projection
    _transfer(series, angles, order, params, tilt)

    # 3. noise per projection, scaled to the SNR measured on sampled slices
    rows = list(range(min(_SNR_ROW_STEP // 2, ny - 1), ny, _SNR_ROW_STEP))
    sig_rows = _reconstruct_rows(series, rows, angles, geometry, (nz, nx), tilt.filter_name)
    excl_rows = None if exclude is None else (np.asarray(exclude[:, rows, :]) != 0)
    signal_var = _var(_moments(sig_rows, excl_rows))
    noisy = math.isfinite(params.snr)
    signal_series = series.copy() if (noisy and clean is not None) else series
    noise_var = 0.0
    scale = 0.0
    if noisy:
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        sigmas = _noise_sigmas(angles, nz * params.voxel_size)
        noise = np.empty_like(series)
        for i, child in enumerate(ss.spawn(len(angles))):
            noise[i] = np.random.default_rng(child).standard_normal((ny, d), dtype=np.float32) * np.float32(sigmas[i])
        noise_rows = _reconstruct_rows(noise, rows, angles, geometry, (nz, nx), tilt.filter_name)
        raw = _var(_moments(noise_rows))
        scale = math.sqrt(signal_var / params.snr / raw) if raw > 0 and signal_var > 0 else 0.0
        noise_var = raw * scale * scale
        if signal_series is series:
            series += noise * np.float32(scale)
        else:
            series = series + noise * np.float32(scale)
        del noise

    # 4. reconstruction, slab by slab
    acc = np.zeros(2)
    kept = np.zeros(3)  # moments outside the distractors

    def reconstruct(ys: range) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        rec = _reconstruct_rows(series, ys, angles, geometry, (nz, nx), tilt.filter_name)
        out[:, ys.start : ys.stop, :] = rec
        excl = None if exclude is None else np.asarray(exclude[:, ys.start : ys.stop, :]) != 0
        return _moments(rec), (_moments(rec, excl) if excl is not None and not excl.all() else (0.0, 0.0, 0.0))

    for whole, outside in _map(reconstruct, slabs, tilt.workers):
        acc += whole[:2]
        kept += outside
    n = float(nz * ny * nx)
    mean = float(acc[0] / n)
    total_var = max(float(acc[1] / n) - mean**2, 0.0)
    std = math.sqrt(total_var) or 1.0
    if clean is not None:
        def reconstruct_clean(ys: range) -> None:
            clean[:, ys.start : ys.stop, :] = _reconstruct_rows(signal_series, ys, angles, geometry, (nz, nx),
                                                                tilt.filter_name)

        _map(reconstruct_clean, slabs, tilt.workers)
    for ys in slabs:
        sl = (slice(None), slice(ys.start, ys.stop), slice(None))
        out[sl] = (np.asarray(out[sl]) - np.float32(mean)) / np.float32(std)
        if clean is not None:
            clean[sl] = (np.asarray(clean[sl]) - np.float32(mean)) / np.float32(std)
    # the variance of the result (outside distractors) less the noise's, which is stationary along y
    result_var = _var((kept[0], kept[1], kept[2])) if kept[2] > 0 else total_var
    signal_var = max(result_var - noise_var, 0.0)
    return {
        "signal_var": signal_var,
        "noise_var": noise_var,
        "snr": (signal_var / noise_var) if noise_var > 0 else float("inf"),
        "mean": mean,
        "std": std,
        "tilt_angles": [float(a) for a in angles],
        "acquisition_order": [int(o) for o in order],
        "dose_per_tilt": tilt.total_dose / len(angles),
        "n_tilts": len(angles),
    }
