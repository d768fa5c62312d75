"""Tests of the simulator (``cryodet_dask.simulation``) and ``cryodet-dask simulate``."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryodet_dask.errors import InputError, OutputExistsError, ParameterError
from cryodet_dask.simulation import (
    OUTPUT_FILES,
    PARTICLE_COLUMNS,
    ImagingParams,
    MembraneProfile,
    Sheet,
    SimulationConfig,
    center_target,
    ctf,
    electron_wavelength,
    euler_from_rotation,
    load_template,
    missing_wedge_mask,
    prepare_template,
    render_membranes,
    render_particle,
    rotation_from_euler,
    simulate,
    simulate_arrays,
)

SHAPE = (48, 96, 96)


@pytest.fixture(scope="module")
def sim():
    return simulate_arrays(shape=SHAPE, seed=3, return_clean=True)


@pytest.fixture(scope="module")
def templates():
    cfg = SimulationConfig()
    out = {}
    for name in cfg.templates:
        d, vs, stem = load_template(name)
        out[stem] = prepare_template(d, source_voxel_size=vs, voxel_size=10.0, fraction=cfg.threshold, name=stem)
    return out


def _boxes(labels):
    return ndimage.find_objects(labels)


# --- scene and ground truth ---------------------------------------------------------------------


def test_count_and_ids_match_table(sim):
    t = sim.particles
    assert list(t.columns) == PARTICLE_COLUMNS
    assert len(t) >= 10
    assert t["id"].tolist() == list(range(1, len(t) + 1))
    assert set(np.unique(sim.labels)) - {0} == set(t["id"])
    assert t["on_membrane"].sum() >= len(t) // 2  # most on membranes
    assert (~t["on_membrane"]).sum() >= 1
    counts = np.bincount(sim.labels.ravel(), minlength=len(t) + 1)
    assert np.array_equal(counts[1:], t["n_voxels"].to_numpy())
    assert np.array_equal(sim.mask, (sim.labels > 0).astype(np.uint8))
    assert set(t["class"]) <= set(SimulationConfig().templates)


def test_positions_are_particle_centres(sim):
    t = sim.particles
    ids = t["id"].to_numpy()
    com = np.array(ndimage.center_of_mass(np.ones(SHAPE), sim.labels, ids))
    table = t[["z", "y", "x"]].to_numpy()
    assert np.abs(com - table).max() < 1.0
    assert np.allclose(t["x_angst"], t["x"] * 10.0) and np.allclose(t["z_angst"], t["z"] * 10.0)
    for axis, n in zip("zyx", SHAPE):
        assert t[axis].between(0, n - 1).all()


def test_table_orientations_reproduce_labels_and_no_density_overlap(sim, templates):
    """Re-rendering every particle from its table row gives its label exactly; densities never overlap."""
    coverage = np.zeros(SHAPE, np.int16)
    density = np.zeros(SHAPE, np.float32)
    for row in sim.particles.itertuples():
        rot = rotation_from_euler(row.phi, row.theta, row.psi)
        rp = render_particle(templates[row._2], np.array([row.z, row.y, row.x]), rot)
        box = tuple(slice(c, c + s) for c, s in zip(rp.corner, rp.mask.shape))
        assert np.array_equal(rp.mask, sim.labels[box] == row.id), row.id
        coverage[box] += rp.mask
        density[box] += rp.density
        assert (rp.density[~rp.mask] == 0).all()
    assert coverage.max() == 1  # no voxel belongs to two particles
    assert not (sim.membranes.astype(bool) & (sim.labels > 0)).any()
    # the specimen density is exactly the particles' plus the membranes'
    assert np.allclose(sim.signal[sim.labels > 0], density[sim.labels > 0])


def test_neighbours_touch(sim):
    """Dense packing: at least one pair of particles (or a particle and a membrane) are face neighbours."""
    lab = sim.labels
    touching = False
    for axis in range(3):
        a = np.take(lab, np.arange(lab.shape[axis] - 1), axis=axis)
        b = np.take(lab, np.arange(1, lab.shape[axis]), axis=axis)
        m = np.take(sim.membranes, np.arange(1, lab.shape[axis]), axis=axis).astype(bool)
        touching |= bool(((a > 0) & (b > 0) & (a != b)).any() or ((a > 0) & m).any())
    assert touching


def test_membrane_bound_particles_sit_on_membranes(sim):
    dist = ndimage.distance_transform_edt(~sim.membranes.astype(bool))
    t = sim.particles
    for row in t.itertuples():
        d = dist[sim.labels == row.id].min()
        if row.on_membrane:
            assert d <= 3.0, (row.id, d)


def test_center_target_one_peak_zero_boundary(sim):
    lab, cen, t = sim.labels, sim.center, sim.particles
    assert cen.dtype == np.float32
    assert cen.min() >= 0 and cen.max() == 1.0
    assert (cen[lab == 0] == 0).all()
    peaks = np.argwhere(cen == 1.0)
    assert len(peaks) == len(t)
    assert np.array_equal(np.sort(lab[tuple(peaks.T)]), t["id"].to_numpy())
    for row, box in zip(t.itertuples(), _boxes(lab)):
        own = lab[box] == row.id
        # the peak recorded in the table is the voxel equal to 1
        assert cen[row.peak_z, row.peak_y, row.peak_x] == 1.0
        assert lab[row.peak_z, row.peak_y, row.peak_x] == row.id
        # boundary: own voxels with a face neighbour outside the particle (background or another particle)
        inner = ndimage.binary_erosion(np.pad(own, 1))[1:-1, 1:-1, 1:-1]
        boundary = own & ~inner
        assert (cen[box][boundary] == 0).all()
        # computed per particle, on its own mask only
        expected, _ = center_target(own)
        assert np.array_equal(np.where(own, cen[box], 0), expected)


def test_center_target_ties_and_small_masks():
    m = np.zeros((5, 7, 5), bool)
    m[1:4, 1:6, 1:4] = True  # deepest voxels along a line: tie broken by the centroid
    t, peak = center_target(m)
    assert peak == (2, 3, 2)
    assert (t == 1.0).sum() == 1
    assert np.isclose(t[2, 2, 2], 1.0) and t[2, 2, 2] < 1.0
    single = np.zeros((3, 3, 3), bool)
    single[1, 1, 1] = True
    t1, p1 = center_target(single)
    assert p1 == (1, 1, 1) and t1.sum() == 1.0
    with pytest.raises(ValueError):
        center_target(np.zeros((2, 2, 2), bool))


def test_reproducible_with_seed(sim):
    again = simulate_arrays(shape=SHAPE, seed=3, return_clean=True)
    for name in ("tomogram", "labels", "center", "membranes", "signal", "clean"):
        assert np.array_equal(getattr(sim, name), getattr(again, name)), name
    pd.testing.assert_frame_equal(sim.particles, again.particles)
    other = simulate_arrays(shape=SHAPE, seed=4)
    assert not np.array_equal(sim.tomogram, other.tomogram)


# --- imaging ------------------------------------------------------------------------------------


def test_missing_wedge_is_empty(sim):
    tomo = sim.tomogram.astype(np.float64)
    spec = np.abs(np.fft.rfftn(tomo))
    kz = np.fft.fftfreq(SHAPE[0])[:, None, None]
    kx = np.fft.rfftfreq(SHAPE[2])[None, None, :]
    tan = np.tan(np.deg2rad(60.0))
    wedge = np.broadcast_to(np.abs(kz) > np.abs(kx) * tan + 1e-9, spec.shape)
    kept = np.broadcast_to(np.abs(kz) < np.abs(kx) * tan - 1e-9, spec.shape)
    assert wedge.sum() > 0.2 * spec.size
    assert spec[wedge].max() < 1e-4 * np.median(spec[kept])
    # without a wedge the same region holds signal
    full = simulate_arrays(shape=SHAPE, seed=3, tilt_range=90.0)
    spec_full = np.abs(np.fft.rfftn(full.tomogram.astype(np.float64)))
    assert np.median(spec_full[wedge]) > 0.1 * np.median(spec_full[kept])


def test_wedge_mask_geometry():
    m = missing_wedge_mask((16, 4, 16), 60.0)
    assert m.shape == (16, 1, 9)
    assert m[0, 0, 0]  # the origin is measured
    assert not m[1, 0, 0]  # kx = 0, kz != 0: missing (beam along z, tilt axis y)
    assert m[0, 0, 5]  # kz = 0: measured
    assert m[1, 0, 1] and not m[2, 0, 1]  # |kz| <= |kx| tan(60°) = 1.73 |kx|
    assert missing_wedge_mask((8, 8, 8), 90.0).all()


@pytest.mark.parametrize("snr", [0.3, 1.0])
def test_measured_snr(snr):
    s = simulate_arrays(shape=SHAPE, seed=5, snr=snr, return_clean=True)
    noise = s.tomogram.astype(np.float64) - s.clean
    measured = s.clean.var() / noise.var()
    assert abs(measured - snr) <= 0.2 * snr
    assert abs(s.stats["snr"] - snr) <= 0.2 * snr


def test_blockwise_imaging_matches_global():
    """Large volumes are imaged block by block; the result stays close to the exact one."""
    exact = simulate_arrays(shape=SHAPE, seed=6, snr=0.5, return_clean=True)
    blocks = simulate_arrays(shape=SHAPE, seed=6, snr=0.5, return_clean=True, max_fft_voxels=10_000,
                             fft_block=32, fft_halo=12)
    assert np.array_equal(exact.labels, blocks.labels)
    corr = np.corrcoef(exact.clean.ravel(), blocks.clean.ravel())[0, 1]
    assert corr > 0.95
    measured = blocks.clean.var() / (blocks.tomogram.astype(np.float64) - blocks.clean).var()
    assert abs(measured - 0.5) <= 0.2 * 0.5
    assert abs(float(blocks.tomogram.mean())) < 1e-3 and abs(float(blocks.tomogram.std()) - 1) < 1e-3


def test_contrast_dark_particles():
    s = simulate_arrays(shape=SHAPE, seed=7, snr=float("inf"), n_membranes=0)
    tomo, lab = s.tomogram, s.labels
    far = ndimage.distance_transform_edt(lab == 0) > 4
    assert tomo[lab > 0].mean() < tomo[far].mean() - 0.3
    assert abs(float(tomo.mean())) < 1e-4 and abs(float(tomo.std()) - 1.0) < 1e-4


def test_ctf_formula():
    lam = electron_wavelength(300.0)
    assert abs(lam - 0.019687) < 1e-5
    p = ImagingParams(defocus_um=-3.0, amplitude_contrast=0.07, cs_mm=0.0, bfactor=0.0)
    assert np.isclose(ctf(np.array(0.0), p), -0.07)
    # first zero: pi * lam * dz * k^2 = pi - arcsin(A)   (Cs = 0)
    k0 = np.sqrt((np.pi - np.arcsin(0.07)) / (np.pi * lam * 3e4))
    assert abs(float(ctf(np.array(k0), p))) < 1e-9
    assert float(ctf(np.array(0.5 * k0), p)) < 0  # low frequencies: dense is dark


# --- building blocks ----------------------------------------------------------------------------


def test_relion_euler_convention():
    """rotation_from_euler gives RELION's Euler_angles2matrix A, and angles round-trip."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        rot, tilt, psi = rng.uniform(-180, 180), rng.uniform(0, 180), rng.uniform(-180, 180)
        a, b, g = np.deg2rad([rot, tilt, psi])
        ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
        cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
        relion = np.array([
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ])
        r = rotation_from_euler(rot, tilt, psi)
        assert np.allclose(r.as_matrix(), relion)
        assert np.allclose(rotation_from_euler(*euler_from_rotation(r)).as_matrix(), r.as_matrix())


def test_render_particle_orientation(templates):
    """A 90° rotation about z maps the template's +x side onto +y (x, y, z coordinates)."""
    t = templates["3j9i"]
    center = np.array([40.0, 40.0, 40.0])
    base = render_particle(t, center, Rotation.identity())
    turned = render_particle(t, center, Rotation.from_euler("z", 90, degrees=True))

    def cloud(rp):
        return np.argwhere(rp.mask)[:, ::-1] + np.asarray(rp.corner)[::-1] - center[::-1]  # x, y, z

    p0, p1 = cloud(base), cloud(turned)
    assert abs(len(p0) - len(p1)) < 0.05 * len(p0)
    # second moments: turning by 90° about z swaps the xx and yy moments
    m0, m1 = (p0**2).mean(axis=0), (p1**2).mean(axis=0)
    assert np.isclose(m0[0], m1[1], rtol=0.05) and np.isclose(m0[1], m1[0], rtol=0.05)


def test_template_resampling_and_errors():
    d, vs, name = load_template("1bxn")
    assert vs == 10.0 and name == "1bxn"
    t10 = prepare_template(d, source_voxel_size=vs, voxel_size=10.0, fraction=0.1)
    t20 = prepare_template(d, source_voxel_size=vs, voxel_size=20.0, fraction=0.1)
    assert 0.08 < t20.n_voxels / t10.n_voxels < 0.2
    assert t10.side % 2 == 1
    assert np.abs(t10.points.mean(axis=0)).max() < 0.6  # recentred on the mask centroid
    with pytest.raises(InputError):
        load_template("no-such-template")


def test_bilayer_profile():
    """A flat membrane is two leaflets 4 nm apart (10 Å voxels)."""
    sheet = Sheet(normal=(1.0, 0.0, 0.0), origin=(20.0, 0.0, 0.0), u=(0.0, 1.0, 0.0), v=(0.0, 0.0, 1.0),
                  amplitudes=(0.0, 0.0), wavelengths=(100.0, 100.0), phases=(0.0, 0.0))
    profile = MembraneProfile(separation=4.0, leaflet_sigma=0.8)
    dens, mask = render_membranes([sheet], (0, 4), (4, 8, 40), profile)
    line = dens[0, 0]
    peaks = [i for i in range(1, 39) if line[i] > line[i - 1] and line[i] >= line[i + 1] and line[i] > 0.5]
    assert peaks == [18, 22]
    assert mask[0, 0].sum() == 7  # |d| <= 2 + 1.5 sigma


def test_config_errors():
    with pytest.raises(ParameterError):
        SimulationConfig(snr=-1)
    with pytest.raises(ParameterError):
        SimulationConfig(n_particles=5, density=0.1)
    with pytest.raises(ParameterError):
        SimulationConfig(tilt_range=120)
    with pytest.raises(ParameterError):
        SimulationConfig(shape=(4, 64, 64))
    assert SimulationConfig(shape=64).shape == (64, 64, 64)


def test_particle_count_and_no_membranes():
    s = simulate_arrays(shape=(32, 64, 64), n_particles=6, n_membranes=0, seed=2, templates=("1bxn", "6pxm"))
    assert len(s.particles) == 6
    assert not s.particles["on_membrane"].any()
    assert s.membranes.sum() == 0
    assert set(s.particles["class"]) <= {"1bxn", "6pxm"}


# --- files and command line ---------------------------------------------------------------------


def test_simulate_writes_files(tmp_path):
    out = tmp_path / "sim"
    res = simulate(out, shape=(32, 64, 64), seed=1, n_particles=8, preview=True)
    arrays = simulate_arrays(shape=(32, 64, 64), seed=1, n_particles=8)
    for key, name in OUTPUT_FILES.items():
        assert (out / name).exists(), name
        assert res.paths[key] == out / name
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / ".simulate.partial").exists()
    with mrcfile.open(out / "tomogram.mrc") as mrc:
        assert mrc.data.dtype == np.float32
        assert np.isclose(float(mrc.voxel_size.x), 10.0)
        assert np.array_equal(mrc.data, arrays.tomogram)
    with mrcfile.open(out / "labels.mrc") as mrc:
        assert np.array_equal(mrc.data.astype(np.int32), arrays.labels)
    with mrcfile.open(out / "mask.mrc") as mrc:
        assert np.array_equal(mrc.data, arrays.mask.astype(np.int8))
    with mrcfile.open(out / "center.mrc") as mrc:
        assert np.array_equal(mrc.data, arrays.center)
    with mrcfile.open(out / "membranes.mrc") as mrc:
        assert np.array_equal(mrc.data, arrays.membranes.astype(np.int8))
    table = pd.read_csv(out / "particles.csv")
    assert list(table.columns) == PARTICLE_COLUMNS
    assert len(table) == res.n_particles == len(arrays.particles)
    assert np.allclose(table[["x", "y", "z"]], arrays.particles[["x", "y", "z"]], atol=1e-4)
    assert table["on_membrane"].dtype == bool
    with pytest.raises(OutputExistsError):
        simulate(out, shape=(32, 64, 64), seed=1, n_particles=8)
    simulate(out, shape=(32, 64, 64), seed=2, n_particles=8, overwrite=True)


def test_cli_simulate(tmp_path, capsys):
    from cryodet_dask.cli import main

    out = tmp_path / "cli"
    rc = main(["simulate", str(out), "--shape", "32,64,64", "--particles", "5", "--membranes", "2",
               "--seed", "1", "--snr", "0.5", "--tilt-range", "50", "--defocus", "-2.5",
               "--templates", "1bxn,3j9i", "--preview"])
    assert rc == 0
    assert "5 particles" in capsys.readouterr().out
    assert (out / "preview.png").exists() and (out / "tomogram.mrc").exists()
    assert set(pd.read_csv(out / "particles.csv")["class"]) <= {"1bxn", "3j9i"}
    rc = main(["simulate", str(out), "--shape", "32,64,64"])
    assert rc == 2  # exists, no --overwrite: one line on stderr
    assert "already holds" in capsys.readouterr().err
    rc = main(["simulate", str(tmp_path / "x"), "--shape", "32,64,64", "--templates", "nope"])
    assert rc == 2


def test_membrane_pose_follows_the_normal(templates):
    """Membrane-bound particles: template +z along the membrane normal (within 10°), resting on the leaflet."""
    from cryodet_dask.simulation._placement import _membrane_pose

    sheet = Sheet(normal=(1.0, 0.0, 0.0), origin=(50.0, 0.0, 0.0), u=(0.0, 1.0, 0.0), v=(0.0, 0.0, 1.0),
                  amplitudes=(0.0, 0.0), wavelengths=(100.0, 100.0), phases=(0.0, 0.0))
    profile = MembraneProfile(separation=4.0, leaflet_sigma=0.8)
    rng = np.random.default_rng(0)
    t = templates["3j9i"]
    for _ in range(20):
        c_zyx, rot = _membrane_pose(t, sheet, rng, (100, 100, 100), profile)
        side = np.sign(c_zyx[2] - 50.0)
        axis = rot @ np.array([0.0, 0.0, 1.0])
        assert np.degrees(np.arccos(np.clip(axis[0] * side, -1, 1))) <= 10.0 + 1e-6
        lowest = ((t.points @ rot.T)[:, 0] * side).min() + abs(c_zyx[2] - 50.0)
        assert np.isclose(lowest, profile.half_thickness + 0.75)
        assert np.allclose(rot @ rot.T, np.eye(3)) and np.isclose(np.linalg.det(rot), 1.0)


def test_simulate_zarr_output(tmp_path):
    from cryodet_dask.io import load
    from cryodet_dask.simulation import output_files

    out = tmp_path / "z"
    res = simulate(out, shape=(32, 64, 64), seed=1, n_particles=8, format="zarr")
    arrays = simulate_arrays(shape=(32, 64, 64), seed=1, n_particles=8)
    names = output_files("zarr")
    assert names["tomogram"] == "tomogram.zarr" and names["particles"] == "particles.csv"
    tomo = load(out / "tomogram.zarr")
    assert tomo.voxel_size == 10.0
    assert np.array_equal(tomo.data.compute(), arrays.tomogram)
    assert np.array_equal(load(res.paths["labels"]).data.compute(), arrays.labels)
    assert np.array_equal(load(res.paths["mask"]).data.compute(), arrays.mask)
    assert np.array_equal(load(res.paths["center"]).data.compute(), arrays.center)
    with pytest.raises(ParameterError):
        output_files("tiff")
