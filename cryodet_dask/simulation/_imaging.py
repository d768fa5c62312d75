"""Imaging model: CTF, missing wedge and noise, applied in Fourier space.

A projection-free approximation of a reconstructed tomogram::

    tomogram = W · ( CTF · E · F[signal] + F[noise] )

* ``signal`` is the specimen's excess density (particles and membranes,
  >= 0, background 0).
* ``CTF(k) = -( sqrt(1 - A²) sin χ(k) + A cos χ(k) )`` with
  ``χ(k) = π λ Δz k² - π/2 Cs λ³ k⁴``, ``Δz`` the underfocus
  (``Δz = -defocus``, so ``defocus = -3 µm`` is 3 µm underfocus), ``A``
  the amplitude contrast, ``λ`` the relativistic electron wavelength and
  ``k = |k|`` the spatial frequency in 1/Å (isotropic: the CTF of every
  tilt is approximated by the untilted one).  At low frequency the CTF is
  negative, so dense objects come out *dark* (lower values) on a brighter
  background, like real tomograms.
* ``E(k) = exp(-B k² / 4)`` a B-factor envelope (B in Å²).
* ``W`` is the missing wedge: the tilt axis is y and the beam z, so the
  Fourier coefficients with ``|kz| > |kx| tan(tilt_range)`` are set to 0.
  The noise goes through ``W`` too (in a real tomogram it comes from the
  projections), so the wedge region of the final tomogram is empty.
* ``noise`` is white Gaussian noise, scaled so that
  ``SNR = var(W·CTF·E·signal) / var(W·noise)`` over the whole volume.

The result is normalised to zero mean and unit variance.

Fourier filters are global.  A volume of at most ``max_fft_voxels`` voxels
is filtered in one FFT (exact, periodic boundaries).  A larger one is
filtered in blocks: each block is read with a halo (mirrored at the volume
border), filtered, and only its core written, so memory is bounded by one
padded block; the wedge's point-spread function extends beyond the halo,
so the result is an approximation close to the exact one (the wedge is
exact only within a block), and each block draws its own noise from a seed
derived from the simulation seed and the block index.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from scipy import fft as sfft

__all__ = [
    "ImagingParams",
    "electron_wavelength",
    "ctf",
    "frequency_grid",
    "missing_wedge_mask",
    "imaging_filter",
    "image_volume",
]


@dataclass(frozen=True)
class ImagingParams:
    """Microscope and reconstruction parameters.

    Attributes
    ----------
    voxel_size : float
        Å per voxel.
    defocus_um : float
        Defocus in µm, negative = underfocus.
    amplitude_contrast : float
        Fraction of amplitude contrast (0-1).
    voltage_kv : float
        Acceleration voltage in kV.
    cs_mm : float
        Spherical aberration in mm.
    bfactor : float
        Envelope B-factor in Å².
    tilt_range : float
        Maximum tilt angle in degrees (±); 90 means no missing wedge.
    snr : float
        Signal-to-noise ratio (variance ratio); ``inf`` for no noise.
    """

    voxel_size: float = 10.0
    defocus_um: float = -3.0
    amplitude_contrast: float = 0.07
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    bfactor: float = 200.0
    tilt_range: float = 60.0
    snr: float = 0.3


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at ``voltage_kv`` kV (0.0197 Å at 300 kV)."""
    v = voltage_kv * 1e3
    return float(12.2643 / np.sqrt(v * (1.0 + 0.978466e-6 * v)))


def ctf(k: np.ndarray, params: ImagingParams) -> np.ndarray:
    """Contrast transfer function at spatial frequencies ``k`` (1/Å), with the B-factor envelope.

    Examples
    --------
    >>> round(float(ctf(np.array(0.0), ImagingParams(amplitude_contrast=0.07))), 3)
    -0.07
    """
    lam = electron_wavelength(params.voltage_kv)
    dz = -params.defocus_um * 1e4  # underfocus in Å
    cs = params.cs_mm * 1e7
    a = params.amplitude_contrast
    k2 = np.asarray(k, dtype=np.float64) ** 2
    chi = np.pi * lam * dz * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    envelope = np.exp(-params.bfactor * k2 / 4.0)
    return -(np.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi)) * envelope


def frequency_grid(shape: tuple[int, int, int], voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse (kz, ky, kx) frequency grids in 1/Å for an ``rfftn`` of ``shape`` (last axis halved)."""
    kz = sfft.fftfreq(shape[0], d=voxel_size)[:, None, None]
    ky = sfft.fftfreq(shape[1], d=voxel_size)[None, :, None]
    kx = sfft.rfftfreq(shape[2], d=voxel_size)[None, None, :]
    return kz, ky, kx


def missing_wedge_mask(shape: tuple[int, int, int], tilt_range: float) -> np.ndarray:
    """Boolean ``rfftn`` mask, False in the missing wedge ``|kz| > |kx| tan(tilt_range)``.

    Tilt axis y, beam along z: the wedge lies in the kz-kx plane and is the
    same for every ky.  Shape ``(nz, 1, nx // 2 + 1)`` (broadcasts over ky).
    """
    kz, _, kx = frequency_grid(shape, 1.0)
    if tilt_range >= 90.0:
        return np.ones((shape[0], 1, shape[2] // 2 + 1), bool)
    t = np.tan(np.deg2rad(tilt_range))
    return np.abs(kz) <= np.abs(kx) * t + 1e-12


def _filter_plane(iz: int, shape: tuple[int, int, int], params: ImagingParams, with_ctf: bool,
                  grids: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Filter of one kz plane, float32 (ny, nx // 2 + 1)."""
    kz, kyx2, wedge = grids
    plane = np.broadcast_to(wedge[iz], (shape[1], shape[2] // 2 + 1))
    if not with_ctf:
        return plane.astype(np.float32)
    return (ctf(np.sqrt(kz[iz] ** 2 + kyx2), params) * plane).astype(np.float32)


def _grids(shape: tuple[int, int, int], params: ImagingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kz (1D), ky² + kx² (2D) in 1/Å², and the wedge mask of an rfftn of ``shape``."""
    kz, ky, kx = frequency_grid(shape, params.voxel_size)
    wedge = missing_wedge_mask(shape, params.tilt_range)
    return kz[:, 0, 0], ky[0] ** 2 + kx[0] ** 2, wedge


def imaging_filter(shape: tuple[int, int, int], params: ImagingParams) -> tuple[np.ndarray, np.ndarray]:
    """Fourier filters for a block of ``shape``: (``W · CTF · E`` float32, ``W`` bool), rfftn layout."""
    grids = _grids(shape, params)
    filt = np.stack([_filter_plane(iz, shape, params, True, grids) for iz in range(shape[0])])
    wedge = np.broadcast_to(grids[2], filt.shape)
    return filt, wedge


def _filter(block: np.ndarray, params: ImagingParams, with_ctf: bool) -> np.ndarray:
    """``irfftn(filter · rfftn(block))`` in float32, the filter built one kz plane at a time.

    ``with_ctf`` False applies the missing wedge only (for the noise).
    """
    shape = tuple(int(v) for v in block.shape)
    spec = sfft.rfftn(np.asarray(block, dtype=np.float32), workers=-1)
    grids = _grids(shape, params)  # type: ignore[arg-type]
    for iz in range(shape[0]):
        spec[iz] *= _filter_plane(iz, shape, params, with_ctf, grids)  # type: ignore[arg-type]
    out = sfft.irfftn(spec, s=shape, workers=-1)
    del spec
    return out.astype(np.float32, copy=False)


def _moments(a: Any) -> tuple[float, float, float]:
    """Sum, sum of squares and count of an array, in float64, a few planes at a time."""
    step = max(1, 4_000_000 // max(1, int(np.prod(a.shape[1:]))))
    s = s2 = 0.0
    for z0 in range(0, a.shape[0], step):
        part = np.asarray(a[z0 : z0 + step], dtype=np.float64)
        s += float(part.sum())
        s2 += float(np.square(part).sum())
    return s, s2, float(np.prod(a.shape))


def _var(a: Any) -> float:
    s, s2, n = _moments(a)
    return max(s2 / n - (s / n) ** 2, 0.0)


def _wedge_power_fraction(shape: tuple[int, int, int], wedge: np.ndarray) -> float:
    """Fraction of white-noise variance a wedge mask keeps (rfftn layout, Hermitian weights)."""
    w = np.ones(shape[2] // 2 + 1)
    w[1 : (shape[2] + 1) // 2] = 2.0
    kept = (np.broadcast_to(wedge, (shape[0], shape[1], len(w))) * w).sum()
    return float(kept / np.prod(shape))


def _blocks(shape: tuple[int, ...], block: int) -> list[tuple[slice, ...]]:
    ranges = [[(a, min(a + block, n)) for a in range(0, n, block)] for n in shape]
    return [tuple(slice(a, b) for a, b in combo) for combo in itertools.product(*ranges)]


def image_volume(
    signal: Any,
    out: Any,
    params: ImagingParams,
    seed: int | np.random.SeedSequence,
    *,
    clean: Any | None = None,
    max_fft_voxels: int = 2**26,
    block: int = 256,
    halo: int = 32,
    exclude: Any | None = None,
) -> dict[str, float]:
    """Image ``signal`` into ``out`` (both (z, y, x) arrays or memory maps, float32).

    Parameters
    ----------
    signal : array-like
        Specimen density.
    out : array-like
        Receives the normalised tomogram (may not be ``signal``).
    params : ImagingParams
    seed : int or numpy.random.SeedSequence
        Seed of the noise.
    clean : array-like, optional
        If given, receives the noise-free tomogram ``W·CTF·E·signal`` on the
        same normalised scale (``out - clean`` is then the filtered noise).
    max_fft_voxels : int
        Volumes up to this size are filtered in one FFT; larger ones in blocks.
    block, halo : int
        Core and halo of the blocks, voxels.
    exclude : array-like, optional
        Voxels (nonzero) left out of the signal variance that sets the noise
        level: the distractors, so that a gold bead or an edge does not drown
        the particles in noise.

    Returns
    -------
    dict
        ``signal_var`` and ``noise_var`` (before normalisation), ``snr`` as
        measured, ``mean`` and ``std`` used for the normalisation.
    """
    shape = tuple(int(s) for s in signal.shape)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    noisy = np.isfinite(params.snr)
    if int(np.prod(shape)) <= max_fft_voxels:
        tomo = _filter(np.asarray(signal), params, True)
        kept = tomo if exclude is None else tomo[np.asarray(exclude) == 0]
        signal_var = _var(kept if kept.size else tomo)
        del kept
        noise_var = 0.0
        if clean is not None:
            clean[...] = tomo
        if noisy:
            rng = np.random.default_rng(ss)
            noise = _filter(rng.standard_normal(shape, dtype=np.float32), params, False)
            raw = _var(noise)
            noise *= np.float32(np.sqrt(signal_var / params.snr / raw) if raw > 0 else 0.0)
            noise_var = _var(noise)
            tomo += noise
            del noise
        s, s2, n = _moments(tomo)
        mean = s / n
        std = float(np.sqrt(max(s2 / n - mean**2, 0.0))) or 1.0
        tomo -= np.float32(mean)
        tomo /= np.float32(std)
        out[...] = tomo
        if clean is not None:
            for z in range(shape[0]):
                clean[z] = (np.asarray(clean[z]) - np.float32(mean)) / np.float32(std)
        return {"signal_var": signal_var, "noise_var": noise_var,
                "snr": signal_var / noise_var if noise_var > 0 else float("inf"), "mean": mean, "std": std}

    # Block-wise: pass 1 filters the signal, pass 2 adds filtered noise, pass 3 normalises.
    blocks = _blocks(shape, block)
    acc = np.zeros(2)
    n_kept = 0
    padded_blocks = []
    for core in blocks:
        lo = [max(s.start - halo, 0) for s in core]
        hi = [min(s.stop + halo, n) for s, n in zip(core, shape)]
        before = [halo - (s.start - a) for s, a in zip(core, lo)]
        after = [halo - (b - s.stop) for s, b in zip(core, hi)]
        sizes = [(s.stop - s.start) + 2 * halo for s in core]
        fast_sizes = [sfft.next_fast_len(n, real=True) for n in sizes]
        after = [a + (f - n) for a, f, n in zip(after, fast_sizes, sizes)]
        pad = list(zip(before, after))
        padded_blocks.append((core, lo, hi, pad, cast(tuple[int, int, int], tuple(fast_sizes))))  # 3D
        data = np.asarray(signal[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
        data = np.pad(data, pad, mode="reflect" if min(data.shape) > 1 else "edge")
        res = _filter(data, params, True)
        inner = tuple(slice(halo, halo + (s.stop - s.start)) for s in core)
        piece = res[inner]
        out[core] = piece
        if exclude is not None:
            piece = piece[np.asarray(exclude[core]) == 0]
            n_kept += piece.size
        acc += (piece.sum(dtype=np.float64), np.square(piece, dtype=np.float64).sum())
    n = float(np.prod(shape))
    n_s = float(n_kept) if exclude is not None else n
    mean_s = acc[0] / max(n_s, 1.0)
    signal_var = float(acc[1] / max(n_s, 1.0) - mean_s**2)
    noise_var = 0.0
    if clean is not None:
        for core, *_ in padded_blocks:
            clean[core] = out[core]
    if noisy:
        sigma = None
        acc_n = np.zeros(2)
        for index, (core, lo, hi, pad, fast) in enumerate(padded_blocks):
            if sigma is None:
                frac = _wedge_power_fraction(fast, missing_wedge_mask(fast, params.tilt_range))
                sigma = float(np.sqrt(signal_var / params.snr / max(frac, 1e-12)))
            rng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, index)))
            noise = rng.standard_normal(fast, dtype=np.float32) * np.float32(sigma)
            res = _filter(noise, params, False)
            inner = tuple(slice(halo, halo + (s.stop - s.start)) for s in core)
            piece = res[inner]
            out[core] = np.asarray(out[core]) + piece
            acc_n += (piece.sum(dtype=np.float64), np.square(piece, dtype=np.float64).sum())
        mean_n = acc_n[0] / n
        noise_var = float(acc_n[1] / n - mean_n**2)
    acc = np.zeros(2)
    for core in blocks:
        piece = np.asarray(out[core], dtype=np.float64)
        acc += (piece.sum(), np.square(piece).sum())
    mean = float(acc[0] / n)
    std = float(np.sqrt(max(acc[1] / n - mean**2, 0.0))) or 1.0
    for core in blocks:
        out[core] = ((np.asarray(out[core]) - mean) / std).astype(np.float32)
        if clean is not None:
            clean[core] = ((np.asarray(clean[core]) - mean) / std).astype(np.float32)
    return {"signal_var": signal_var, "noise_var": noise_var,
            "snr": signal_var / noise_var if noise_var > 0 else float("inf"), "mean": mean, "std": std}
