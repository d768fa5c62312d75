"""Tilt-series imaging and distractors of the simulator (issue 26, items 1 and 2)."""

from __future__ import annotations

import json
import time

import mrcfile
import numpy as np
import pytest

from cryodet_dask.simulation import (
    DISTRACTOR_CODES,
    DistractorPlacementError,
    ImagingParams,
    SimulationConfig,
    TiltSeriesParams,
    acquisition_order,
    exposure_filter,
    image_tiltseries,
    image_volume,
    parse_distractors,
    simulate_arrays,
    tilt_angles,
)
from cryodet_dask.errors import ParameterError

INF = float("inf")
# no CTF to speak of: in focus, no Cs, no envelope, amplitude contrast ~1 -> CTF = -0.999 everywhere
NO_CTF = dict(defocus_um=0.0, cs_mm=0.0, bfactor=0.0, amplitude_contrast=0.999, snr=INF)
NO_DOSE = TiltSeriesParams(tilt_step=2.0, total_dose=0.0, defocus_gradient=False)


def _sphere(shape, center, radius):
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2)
    return np.clip(radius + 0.5 - r, 0, 1).astype(np.float32)


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# --- acquisition ---------------------------------------------------------------------------------


def test_tilt_angles_and_orders():
    a = tilt_angles(60, 3)
    assert a[0] == -60 and a[-1] == 60 and len(a) == 41 and 0.0 in a
    assert tilt_angles(40, 3)[-1] == 39  # never beyond the range
    for scheme in ("dose-symmetric", "bidirectional", "unidirectional"):
        order = acquisition_order(a, scheme)
        assert sorted(order.tolist()) == list(range(len(a)))  # every tilt once
    ds = acquisition_order(a, "dose-symmetric")
    assert ds[20] == 0  # 0° first
    # dose-symmetric: the high tilts of both sides come last, so they carry the most damage
    assert ds[0] >= len(a) - 2 and ds[-1] >= len(a) - 4
    assert acquisition_order(a, "unidirectional")[0] == 0
    with pytest.raises(ParameterError):
        tilt_angles(60, 0)


def test_exposure_filter_damages_high_frequencies_with_dose():
    k = np.array([0.0, 0.01, 0.05])
    f0, f1, f2 = exposure_filter(k, 0.0), exposure_filter(k, 30.0), exposure_filter(k, 120.0)
    assert np.allclose(f0, 1) and f1[0] == 1 and f2[0] == 1
    assert f2[2] < f1[2] < 1 and f2[2] < f2[1]


# --- reconstruction properties -------------------------------------------------------------------


def test_reconstruction_of_a_sphere_matches_input():
    shape = (32, 8, 48)
    sphere = _sphere(shape, (16, 4, 24), 5)
    out = np.zeros(shape, np.float32)
    image_tiltseries(sphere, out, ImagingParams(tilt_range=89, **NO_CTF), NO_DOSE, 0)
    assert _corr(out, -sphere) > 0.97  # full angular range: the sphere itself (CTF -1 makes it dark)
    # within the tilt range: the input seen through the same missing wedge (the Fourier-mask model)
    out60 = np.zeros(shape, np.float32)
    image_tiltseries(sphere, out60, ImagingParams(tilt_range=60, **NO_CTF), NO_DOSE, 0)
    wedge = np.zeros(shape, np.float32)
    image_volume(sphere, wedge, ImagingParams(tilt_range=60, **NO_CTF), 0)
    assert _corr(out60, wedge) > 0.95
    assert _corr(out60, -sphere) > 0.8
    # a point lands where it was: (z, x) geometry of the projector and back-projector agree
    point = np.zeros(shape, np.float32)
    point[10, 4, 30] = 1
    rec = np.zeros(shape, np.float32)
    image_tiltseries(point, rec, ImagingParams(tilt_range=89, **NO_CTF), NO_DOSE, 0)
    assert np.unravel_index(np.argmin(rec), shape) == (10, 4, 30)


@pytest.mark.parametrize("shape", [(32, 2, 48), (33, 2, 47), (48, 2, 20)])
def test_points_reconstruct_at_their_voxel_corners_included(shape):
    nz, _, nx = shape
    for z, x in ((2, 2), (nz - 3, nx - 3), (2, nx - 3), (nz // 2, nx // 3)):
        point = np.zeros(shape, np.float32)
        point[z, 1, x] = 1
        rec = np.zeros(shape, np.float32)
        image_tiltseries(point, rec, ImagingParams(tilt_range=89, **NO_CTF), NO_DOSE, 0)
        assert np.unravel_index(np.argmin(rec), shape) == (z, 1, x)


def test_missing_wedge_in_fourier_space():
    shape = (48, 4, 48)
    rng = np.random.default_rng(0)
    signal = rng.random(shape, dtype=np.float32)
    out = np.zeros(shape, np.float32)
    image_tiltseries(signal, out, ImagingParams(tilt_range=45, **NO_CTF), NO_DOSE, 0)
    power = np.abs(np.fft.fftn(out, axes=(0, 2))) ** 2
    kz = np.abs(np.fft.fftfreq(shape[0]))[:, None, None]
    kx = np.abs(np.fft.fftfreq(shape[2]))[None, None, :]
    k = np.sqrt(kz**2 + kx**2)
    ang = np.degrees(np.arctan2(kz, kx))  # 0° along kx, 90° along kz
    band = (k > 0.08) & (k < 0.45)
    measured = power[np.broadcast_to(band & (ang < 35), power.shape)].mean()
    missing = power[np.broadcast_to(band & (ang > 55), power.shape)].mean()
    assert missing < 0.03 * measured


def test_chunked_equals_unchunked_and_threads():
    shape = (24, 10, 32)
    rng = np.random.default_rng(1)
    signal = (rng.random(shape) > 0.9).astype(np.float32)
    params = ImagingParams(tilt_range=50, snr=0.5)
    results = []
    for slab, workers in ((None, 1), (3, 1), (1, 2)):
        out = np.zeros(shape, np.float32)
        tilt = TiltSeriesParams(tilt_step=2.5, slab=slab, workers=workers)
        stats = image_tiltseries(signal, out, params, tilt, 7)
        results.append((out, stats["snr"]))
    for out, snr in results[1:]:
        assert np.array_equal(out, results[0][0]) and snr == results[0][1]


def test_snr_is_matched_and_dose_removes_high_frequencies():
    shape = (32, 24, 40)
    signal = _sphere(shape, (16, 12, 14), 4) + _sphere(shape, (14, 10, 28), 3)
    out = np.zeros(shape, np.float32)
    clean = np.zeros(shape, np.float32)
    stats = image_tiltseries(signal, out, ImagingParams(snr=0.5), TiltSeriesParams(), 3, clean=clean)
    measured = clean.var() / (out - clean).var()
    assert abs(measured / 0.5 - 1) < 0.15 and abs(stats["snr"] / 0.5 - 1) < 0.15
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    assert _corr(clean, -signal) > 0.3  # dense objects dark

    def high_power(dose):
        o = np.zeros(shape, np.float32)
        image_tiltseries(signal, o, ImagingParams(snr=INF, defocus_um=-1.0),
                         TiltSeriesParams(total_dose=dose, defocus_gradient=False), 0)
        spec = np.abs(np.fft.fftn(o)) ** 2
        f = np.sqrt(sum(np.meshgrid(*(np.fft.fftfreq(n) ** 2 for n in shape), indexing="ij")))
        return spec[f > 0.25].sum() / spec[(f > 0) & (f < 0.1)].sum()

    assert high_power(200.0) < 0.7 * high_power(0.0)


def test_simulate_arrays_tiltseries_mode():
    sim = simulate_arrays(shape=(32, 48, 48), seed=2, n_particles=6, n_membranes=1, imaging="tiltseries",
                          tilt_step=3.0, return_clean=True)
    assert sim.tomogram.shape == (32, 48, 48) and np.isfinite(sim.tomogram).all()
    assert sim.stats["n_tilts"] == 41 and sim.stats["tilt_angles"][0] == -60
    assert abs(sim.stats["snr"] / 0.3 - 1) < 0.15
    again = simulate_arrays(shape=(32, 48, 48), seed=2, n_particles=6, n_membranes=1, imaging="tiltseries",
                            tilt_step=3.0)
    assert np.array_equal(sim.tomogram, again.tomogram)  # same seed, same tomogram
    # the scene does not depend on the imaging mode
    fourier = simulate_arrays(shape=(32, 48, 48), seed=2, n_particles=6, n_membranes=1)
    assert np.array_equal(fourier.labels, sim.labels) and np.array_equal(fourier.signal, sim.signal)


def test_full_tilt_range_stays_finite():
    # ±90°: the slab is edge-on at the last tilts; path length and defocus gradient are capped at 80°
    sim = simulate_arrays(shape=(24, 32, 32), seed=1, n_particles=2, n_membranes=0, imaging="tiltseries",
                          tilt_range=90, tilt_step=10)
    assert np.isfinite(sim.tomogram).all() and sim.stats["n_tilts"] == 19 and 0.2 < sim.stats["snr"] < 0.4


# --- distractors ---------------------------------------------------------------------------------


def test_parse_distractors():
    assert parse_distractors("gold:3, microtubule") == (("microtubule", -1), ("gold", 3))
    assert parse_distractors({"ice": 2}) == (("ice", 2),)
    assert parse_distractors(None) == ()
    for bad in ("plasma:2", "gold:x", "gold:-3", "gold:1,gold:2"):
        with pytest.raises(ParameterError):
            parse_distractors(bad)


def test_distractors_in_density_not_in_labels():
    spec = "microtubule:1,actin:2,gold:4,ice:1,edge:1,membrane:1"
    sim = simulate_arrays(shape=(48, 96, 96), seed=4, distractors=spec, return_clean=True)
    d = sim.distractors
    assert d is not None and d.dtype == np.uint8
    for kind, code in DISTRACTOR_CODES.items():
        assert (d == code).sum() > 0, kind
        assert sim.stats["n_distractors"][kind] >= 1
    assert not ((sim.labels > 0) & (d > 0)).any()  # never labelled, never overlapping a particle
    assert len(sim.particles) > 0
    # in the density: beads are very dense, the lamella/carbon edge is not empty
    assert sim.signal[d == DISTRACTOR_CODES["gold"]].max() > 5
    assert np.abs(sim.signal[d == DISTRACTOR_CODES["microtubule"]]).mean() > 0.3
    assert np.abs(sim.signal[d == DISTRACTOR_CODES["edge"]]).mean() > 1
    # the membrane distractor is a membrane too; the others are not in the membrane mask
    assert sim.membranes[d == DISTRACTOR_CODES["membrane"]].all()
    assert not sim.membranes[(d > 0) & (d != DISTRACTOR_CODES["membrane"])].any()
    # and they show in the tomogram: a bead is among the darkest things there
    bead = d == DISTRACTOR_CODES["gold"]
    assert sim.clean[bead].mean() < sim.clean[sim.labels > 0].mean()
    # the particles of a scene without distractors are the same draw
    plain = simulate_arrays(shape=(48, 96, 96), seed=4)
    assert plain.distractors is None and len(plain.particles) >= len(sim.particles)


def test_microtubule_is_a_hollow_tube():
    sim = simulate_arrays(shape=(64, 96, 96), seed=5, n_particles=0, n_membranes=0, distractors="microtubule:1",
                          snr=INF)
    mt = sim.distractors == DISTRACTOR_CODES["microtubule"]
    rec = sim.stats["distractors"][0]
    d = np.asarray(rec["direction_xyz"])[::-1]  # z, y, x
    p = np.asarray(rec["point_xyz"])[::-1]
    zz, yy, xx = np.nonzero(mt)
    q = np.stack([zz, yy, xx], 1) - p
    r = np.linalg.norm(q - (q @ d)[:, None] * d, axis=1)
    assert 6.5 < r.min() < 8.5 and 11.5 < r.max() < 13.5  # 25 nm across, 5 nm walls, at 10 Å/voxel


def test_distractors_that_do_not_fit_are_refused():
    t0 = time.perf_counter()
    with pytest.raises(DistractorPlacementError, match="would fill"):
        SimulationConfig(shape=(16, 32, 32), distractors="gold:500")  # refused before anything is placed
    # passes the up-front estimate but jams: a clear error after a bounded number of tries
    with pytest.raises(DistractorPlacementError, match="could not fit gold"):
        simulate_arrays(shape=(32, 64, 64), n_particles=0, n_membranes=0, distractors="gold:120", snr=INF)
    assert time.perf_counter() - t0 < 30
    # a pool's random counts: as many as fit, recorded
    sim = simulate_arrays(shape=(32, 64, 64), n_particles=0, n_membranes=0, distractors="gold:120", snr=INF,
                          allow_fewer_distractors=True)
    assert 50 < sim.stats["n_distractors"]["gold"] < 120 == sim.stats["distractors_asked"]["gold"]


# --- command line and pools ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--imaging", "xray"],
    ["--tilt-range", "95"],
    ["--tilt-range", "0"],
    ["--tilt-step", "0"],
    ["--imaging", "tiltseries", "--tilt-range", "40", "--tilt-step", "45"],
    ["--distractors", "gold:100000"],
    ["--distractors", "plasma"],
])
def test_cli_bad_input_one_line_nothing_written(tmp_path, capsys, args):
    from cryodet_dask.cli import main

    out = tmp_path / "sim"
    try:
        rc = main(["simulate", str(out), "--shape", "16,32,32", *args])
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert not out.exists()


def test_cli_tiltseries_with_distractors(tmp_path, capsys):
    from cryodet_dask.cli import main

    out = tmp_path / "ts"
    rc = main(["simulate", str(out), "--shape", "24,48,48", "--particles", "4", "--membranes", "1",
               "--imaging", "tiltseries", "--tilt-range", "50", "--tilt-step", "2.5", "--tilt-scheme",
               "bidirectional", "--dose", "80", "--distractors", "gold:2,actin:1"])
    assert rc == 0 and "tiltseries imaging" in capsys.readouterr().out
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["config"]["imaging"] == "tiltseries" and meta["config"]["tilt_step"] == 2.5
    assert meta["config"]["distractors"] == {"actin": 1, "gold": 2}
    assert meta["stats"]["n_tilts"] == 41 and meta["stats"]["n_distractors"] == {"actin": 1, "gold": 2}
    with mrcfile.open(out / "distractors.mrc") as m, mrcfile.open(out / "labels.mrc") as lab:
        d = np.asarray(m.data)
        assert set(np.unique(d)) == {0, DISTRACTOR_CODES["actin"], DISTRACTOR_CODES["gold"]}
        assert not ((np.asarray(lab.data) > 0) & (d > 0)).any()


def test_pool_imaging_and_distractors(tmp_path, capsys):
    from cryodet_dask.cli import main
    from cryodet_dask.training import PoolRanges, draw_conditions

    plain = draw_conditions(0, 3, PoolRanges())
    assert not {"imaging", "distractors", "tilt_step"} & set(plain)  # old pools keep their conditions
    mixed = PoolRanges(imaging="mixed", distractors=("gold", "microtubule"), distractor_probability=1.0)
    conds = [draw_conditions(0, i, mixed) for i in range(12)]
    assert {c["imaging"] for c in conds} == {"fourier", "tiltseries"}
    assert all(1 <= c["tilt_step"] <= 3 for c in conds if c["imaging"] == "tiltseries")
    assert all(set(c["distractors"]) == {"gold", "microtubule"} for c in conds)
    for i in range(12):  # the other conditions do not move with these options
        base = draw_conditions(0, i, PoolRanges())
        assert {k: conds[i][k] for k in base} == base
    with pytest.raises(ParameterError):
        PoolRanges(imaging="xray")
    with pytest.raises(ParameterError):
        PoolRanges(imaging="tiltseries", tilt_step=(0.0, 2.0))

    pool = tmp_path / "pool"
    rc = main(["-q", "simulate-pool", str(pool), "-n", "2", "--shape", "24,48,48", "--imaging", "tiltseries",
               "--distractors", "gold,actin", "--distractor-probability", "1"])
    assert rc == 0
    members = json.loads((pool / "pool.json").read_text())["members"]
    assert [m["conditions"]["imaging"] for m in members] == ["tiltseries", "tiltseries"]
    assert all((pool / m["name"] / "distractors.mrc").exists() for m in members)
    try:
        rc = main(["simulate-pool", str(tmp_path / "bad"), "-n", "1", "--imaging", "xray"])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2 and not (tmp_path / "bad").exists()
