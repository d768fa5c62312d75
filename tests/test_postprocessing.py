"""Post-processing: the chunked implementation against the whole-volume definition."""

from __future__ import annotations

import itertools
import time

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from cryodet_dask.errors import ParameterError
from cryodet_dask.postprocessing import (
    Detections,
    PostprocessParams,
    label,
    outlier_keep,
)
from cryodet_dask.postprocessing import postprocess as _postprocess
from cryodet_dask.postprocessing import postprocess_reference as _postprocess_reference

#: The seed's parameters, no fusion, no fragment or score filter: the semantics these tests were written
#: for.  The shipped defaults (chosen on validation tomograms for the shipped network, PostprocessParams)
#: would remove the small synthetic blobs; each test overrides what it is about.
SEED_PARAMS = dict(mask_threshold=0.1, center_threshold=0.1, remove_min_size=64, check_center=True,
                   filter_outlier=True, center_min_distance=0.0, min_particle_size=0, min_score=0.0)


def postprocess(mask, center, params=None, **kw):
    if params is not None:
        return _postprocess(mask, center, params, **kw)
    return _postprocess(mask, center, **{**SEED_PARAMS, **kw})


def postprocess_reference(mask, center, params=None, **kw):
    if params is not None:
        return _postprocess_reference(mask, center, params, **kw)
    return _postprocess_reference(mask, center, **{**SEED_PARAMS, **kw})
from cryodet_dask.postprocessing._assign import candidate_centres, nearest_among, nearest_in_segments
from cryodet_dask.postprocessing._centres import (
    assemble_padded,
    ball_maxima,
    ball_offsets,
    block_slabs,
    halo_width,
    strict_maxima,
)
from cryodet_dask.postprocessing._components import (
    block_faces,
    drop_small_interior,
    label_binary,
    encode,
    face_pairs,
    in_plane_offsets,
    label_block,
)
from cryodet_dask.postprocessing._reference import fused_peaks
from cryodet_dask.postprocessing._synthetic import blob_maps

#: fusion distances the equality tests run with (D < 2 is the plain 26-neighbour test)
DISTANCES = (0.0, 1.5, 2.5, 4.0, 7.0)

FP26 = np.ones((3, 3, 3), bool)
FP26[1, 1, 1] = False


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def run_chunked(mask, center, chunks, **kw) -> tuple[Detections, np.ndarray]:
    det = postprocess(da.from_array(mask, chunks=chunks), da.from_array(center, chunks=chunks), **kw)
    lab = det.labels.compute()
    return det, lab


def assert_same(mask, center, chunks, **kw):
    ref = postprocess_reference(mask, center, **kw)
    det, lab = run_chunked(mask, center, chunks, **kw)
    assert lab.dtype == np.uint32 and lab.shape == mask.shape
    assert det.labels.chunks == da.from_array(mask, chunks=chunks).chunks
    np.testing.assert_array_equal(lab, ref.labels)
    np.testing.assert_array_equal(det.centers, ref.centers)
    np.testing.assert_array_equal(det.n_voxels, ref.n_voxels)
    np.testing.assert_allclose(det.scores, ref.scores, rtol=1e-12)
    np.testing.assert_array_equal(det.center_scores, ref.center_scores)  # a max: exact across chunkings
    assert det.center_scores.dtype == np.float64 and det.center_scores.shape == det.n_voxels.shape
    p = PostprocessParams.from_kwargs(None, **{**SEED_PARAMS, **kw})
    ref_peaks = ref.peaks
    if p.check_center:  # only centres on kept components can take voxels; the chunked version keeps only those
        comp, _ = ndi.label(mask > p.mask_threshold, structure=ndi.generate_binary_structure(3, p.connectivity))
        size = np.bincount(comp.ravel())
        on = comp[tuple(ref_peaks.T)]
        ref_peaks = ref_peaks[(on > 0) & (size[on] >= p.remove_min_size)]
    np.testing.assert_array_equal(det.peaks, ref_peaks)
    assert det.centers.shape == (len(det.n_voxels), 3) and det.centers.dtype == np.float64
    return ref, det


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("kw", [
    {"mask_threshold": 1.5}, {"center_threshold": -0.1}, {"remove_min_size": -1}, {"neighbor_number": -2},
    {"distance_threshold": -1.0}, {"distance_threshold": float("nan")}, {"connectivity": 0},
    {"connectivity": 4}, {"check_center": "yes"}, {"nonsense": 1},
    {"center_min_distance": -1.0}, {"center_min_distance": float("nan")}, {"center_min_distance": float("inf")},
    {"center_min_distance": "4"}, {"center_min_distance": True}, {"min_particle_size": -1},
    {"min_particle_size": 2.5}, {"min_score": -0.1}, {"min_score": float("nan")}, {"min_score": "0.5"},
])
def test_invalid_parameters_raise_parameter_error(kw):
    with pytest.raises(ParameterError):
        PostprocessParams.from_kwargs(None, **kw)


def test_default_parameters_are_the_validated_ones():
    # chosen on the validation set by benchmarks/bench_quality.py (README, Results); the seed's were
    # 0.1, 0.1, 64, True, True, 3, 30 and no fusion, fragment or score filter
    p = PostprocessParams()
    assert (p.mask_threshold, p.center_threshold, p.remove_min_size, p.check_center, p.filter_outlier,
            p.neighbor_number, p.distance_threshold, p.connectivity) == (0.5, 0.05, 32, True, False, 3, 30.0, 1)
    assert (p.center_min_distance, p.min_particle_size, p.min_score) == (7.0, 384, 0.1)


# --------------------------------------------------------------------------- kernels


def test_strict_maxima_matches_maximum_filter_mirror_including_plateaus():
    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = tuple(int(v) for v in rng.integers(1, 9, 3))
        if trial % 3 == 0:
            x = (rng.integers(0, 4, shape) / 4).astype(np.float32)  # plateaus
        elif trial % 3 == 1:
            x = rng.random(shape).astype(np.float32)
        else:
            x = np.zeros(shape, np.float32)
            x[tuple(rng.integers(0, s) for s in shape)] = 1.0
        th = float(rng.choice([0.0, 0.1, 0.5]))
        if trial % 7 == 0:
            x[tuple(rng.integers(0, s) for s in shape)] = np.nan  # NaN counts as below threshold
            x[tuple(rng.integers(0, s) for s in shape)] = -0.5
        c = np.where(x >= th, x, 0).astype(np.float32)
        expected = np.argwhere(c > ndi.maximum_filter(c, footprint=FP26, mode="mirror"))
        np.testing.assert_array_equal(strict_maxima(np.pad(x, 1, mode="reflect"), th), expected)


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_assembled_halo_equals_the_volume_and_mirror_ring(width):
    rng = np.random.default_rng(1)
    for shape, ch in [((7, 9, 11), (3, 4, 5)), ((1, 5, 6), (1, 2, 3)), ((5, 1, 4), (2, 1, 4)), ((6, 6, 6), (2, 2, 2)),
                      ((9, 8, 7), (1, 3, 2))]:
        vol = rng.random(shape)
        mirror = np.pad(vol, 1, mode="reflect")
        b = [list(range(0, s, c)) + [s] for s, c in zip(shape, ch)]
        grid = [len(x) - 1 for x in b]
        for idx in itertools.product(*[range(g) for g in grid]):
            box = [(b[a][idx[a]], b[a][idx[a] + 1]) for a in range(3)]
            nbs = []
            for j in itertools.product(*[range(g) for g in grid]):
                jbox = [(b[a][j[a]], b[a][j[a] + 1]) for a in range(3)]
                near = all(jbox[a][0] < box[a][1] + width and jbox[a][1] > box[a][0] - width for a in range(3))
                if j != idx and near:
                    nbs.append((jbox, block_slabs(vol[tuple(slice(*x) for x in jbox)], width)))
            core = vol[tuple(slice(*x) for x in box)]
            got = assemble_padded(core, box, nbs, shape, width)
            h = width
            # every voxel of the volume within the halo
            src = tuple(slice(max(0, x[0] - h), min(s, x[1] + h)) for x, s in zip(box, shape))
            dst = tuple(slice(sl.start - x[0] + h, sl.stop - x[0] + h) for sl, x in zip(src, box))
            np.testing.assert_array_equal(got[dst], vol[src])
            # the one-voxel ring: the mirror padding (what the 26-neighbour test reads)
            ring = got[tuple(slice(h - 1, h + x[1] - x[0] + 1) for x in box)]
            np.testing.assert_array_equal(ring, mirror[tuple(slice(x[0], x[1] + 2) for x in box)])
            assert got.flags.c_contiguous


def test_ball_offsets():
    assert len(ball_offsets(0)) == len(ball_offsets(1.5)) == len(ball_offsets(1.99)) == 0
    assert halo_width(0) == halo_width(1.5) == 1 and halo_width(2.5) == 2 and halo_width(7.0) == 7
    o = ball_offsets(2.5)
    d2 = (o ** 2).sum(1)
    assert (d2 <= 6.25).all() and (np.abs(o).max(1) >= 2).all() and (np.diff(d2) >= 0).all()
    g = np.arange(-7, 8)
    full = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    inside = full[((full ** 2).sum(1) <= 49) & (np.abs(full).max(1) >= 2)]
    assert sorted(map(tuple, ball_offsets(7.0))) == sorted(map(tuple, inside))  # a ball, not a cube


def _fused_brute(c, peaks, D):
    """Every pair: peak p loses to q within D if c[q] > c[p], or equal and q first in raster order."""
    pts = np.argwhere(np.ones(c.shape, bool))
    vals = c.ravel()
    out = []
    for pk in peaks:
        d2 = ((pts - pk) ** 2).sum(1)
        me = np.ravel_multi_index(tuple(pk), c.shape)
        near = (d2 > 0) & (d2 <= D * D)
        v = c[tuple(pk)]
        if not (near & ((vals > v) | ((vals == v) & (np.arange(len(vals)) < me)))).any():
            out.append(pk)
    return np.array(out, dtype=np.int64).reshape(-1, 3)


@pytest.mark.parametrize("D", DISTANCES + (3.0, 2.0))
def test_fusion_kernel_and_reference_match_brute_force(D):
    rng = np.random.default_rng(int(D * 10))
    for trial in range(12):
        shape = tuple(int(v) for v in rng.integers(3, 13, 3))
        x = rng.random(shape).astype(np.float32)
        if trial % 2:
            x = (np.round(x * 3) / 3).astype(np.float32)  # plateaus and ties at a distance
        if trial % 4 == 3:
            x[tuple(rng.integers(0, s) for s in shape)] = np.nan
        th = float(rng.choice([0.0, 0.3]))
        c = np.where(x >= th, x, 0).astype(np.float32)
        peaks = np.argwhere(c > ndi.maximum_filter(c, footprint=FP26, mode="mirror")).astype(np.int64)
        expected = _fused_brute(c, peaks, D)
        np.testing.assert_array_equal(fused_peaks(c, peaks, D), expected)
        h = halo_width(D)
        padded = np.pad(x, h, mode="reflect") if min(shape) > h else np.pad(np.pad(x, 1, mode="reflect"), h - 1)
        got = ball_maxima(padded, strict_maxima(padded, th, h), th, ball_offsets(D), (0, 0, 0), shape, h)
        np.testing.assert_array_equal(got, expected)


def test_fusion_semantics_by_hand():
    c = np.zeros((5, 5, 12), np.float32)
    c[2, 2, 3] = 0.9
    c[2, 2, 6] = 0.8  # 3 voxels away
    c[2, 2, 9] = 0.8  # 3 voxels from the second: equal values, the first in raster order wins
    m = np.zeros_like(c)
    m[1:4, 1:4, 1:11] = 1
    kw = dict(remove_min_size=1, filter_outlier=False)
    for D, expected in [(0.0, 3), (2.5, 3), (2.99, 3), (3.0, 1), (5.9, 1)]:
        ref = postprocess_reference(m, c, center_min_distance=D, **kw)
        assert len(ref.peaks) == expected, D
    # D = 3: the 0.9 peak suppresses x = 6 but not x = 9 (6 away); x = 6 then no longer
    # counts -- no chain: x = 9 still loses to x = 6, which is as large and first in raster order
    np.testing.assert_array_equal(postprocess_reference(m, c, center_min_distance=3.0, **kw).peaks, [[2, 2, 3]])
    c[2, 2, 9] = 0.85
    np.testing.assert_array_equal(postprocess_reference(m, c, center_min_distance=3.0, **kw).peaks,
                                  [[2, 2, 3], [2, 2, 9]])
    # the ball, not a cube: (2, 2, 2) away is 3.46 > 3
    c = np.zeros((7, 7, 7), np.float32)
    c[1, 1, 1], c[3, 3, 3] = 0.5, 0.9
    assert len(postprocess_reference(c, c, center_min_distance=3.0, **kw).peaks) == 2
    assert len(postprocess_reference(c, c, center_min_distance=3.5, **kw).peaks) == 1
    for D in DISTANCES:
        for chunks in ((2, 2, 2), (2, 3, 1), (7, 7, 7)):
            assert_same(c, c, chunks, center_min_distance=D, **kw)


def _brute(points, centres):
    d = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    return np.argmin(d, axis=1)


def test_nearest_centre_is_exact_with_raster_order_ties():
    rng = np.random.default_rng(2)
    for m in (1, 2, 5, 17, 60):
        centres = rng.integers(0, 12, (m, 3))  # small box: many exact ties
        centres = centres[np.lexsort(centres.T[::-1])]
        pts = rng.integers(-5, 17, (2000, 3))
        expected = _brute(pts, centres)
        np.testing.assert_array_equal(nearest_among(pts, centres), expected)
        np.testing.assert_array_equal(
            nearest_in_segments(pts, np.zeros(len(pts), int), np.full(len(pts), m), centres), expected)


def test_nearest_in_segments_uses_only_the_segment():
    rng = np.random.default_rng(3)
    centres = rng.integers(0, 20, (30, 3))
    start = rng.integers(0, 25, 500)
    length = rng.integers(1, 6, 500)
    length = np.minimum(length, 30 - start)
    pts = rng.integers(0, 20, (500, 3))
    got = nearest_in_segments(pts, start, length, centres)
    for i in range(500):
        seg = centres[start[i] : start[i] + length[i]]
        assert got[i] == start[i] + _brute(pts[i : i + 1], seg)[0]


def test_nearest_in_segments_mixes_short_and_long_segments_exactly():
    """Segments of 1-60 centres, some sharing a start, in a small box full of exact ties: the long ones
    take the KD-tree path, and every answer is the brute force's (lowest index on ties)."""
    rng = np.random.default_rng(5)
    centres = rng.integers(0, 10, (120, 3))
    start = rng.integers(0, 100, 3000)
    length = np.minimum(rng.choice([1, 3, 16, 17, 40, 60], 3000), 120 - start)
    pts = rng.integers(-3, 13, (3000, 3))
    got = nearest_in_segments(pts, start, length, centres)
    for i in range(3000):
        seg = centres[start[i] : start[i] + length[i]]
        assert got[i] == start[i] + _brute(pts[i : i + 1], seg)[0]


def test_nearest_in_segments_exact_beyond_int32_distances():
    """Coordinates tens of thousands of voxels apart (squared distances past int32): still the exact
    nearest, lowest index on ties."""
    rng = np.random.default_rng(6)
    centres = rng.integers(0, 4, (12, 3)) * 30_000 + 7
    start = rng.integers(0, 8, 800)
    length = np.minimum(rng.integers(1, 6, 800), 12 - start)
    pts = rng.integers(0, 4, (800, 3)) * 30_000 + rng.integers(-2, 3, (800, 3))
    got = nearest_in_segments(pts, start, length, centres)
    for i in range(800):
        seg = centres[start[i] : start[i] + length[i]]
        assert got[i] == start[i] + _brute(pts[i : i + 1], seg)[0]


def test_candidate_centres_are_sufficient():
    rng = np.random.default_rng(4)
    for _ in range(50):
        centres = rng.integers(-20, 60, (int(rng.integers(1, 40)), 3))
        lo = rng.integers(0, 30, 3)
        box = [(int(a), int(a + rng.integers(1, 10))) for a in lo]
        pts = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in box], indexing="ij"), -1).reshape(-1, 3)
        cand = candidate_centres(box, centres)
        assert np.array_equal(cand[_brute(pts, centres[cand])], _brute(pts, centres))


def test_face_pairs_find_diagonal_neighbours_across_an_edge():
    plane = np.zeros((2, 2), np.int64)
    plane[1, 1] = 7  # block A's upper z face, corner voxel (y=1, x=1)
    other = np.zeros((2, 2), np.int64)
    other[0, 0] = 9  # block beyond diagonally in y and x: voxel (y=2, x=2)
    box = [(0, 2), (0, 2), (0, 2)]
    beyond = [(other, [(2, 4), (2, 4), (2, 4)])]
    assert len(face_pairs(plane, box, 0, beyond, 1)) == 0
    assert len(face_pairs(plane, box, 0, beyond, 2)) == 0
    np.testing.assert_array_equal(face_pairs(plane, box, 0, beyond, 3), [[7, 9]])
    assert len(in_plane_offsets(1)) == 1 and len(in_plane_offsets(2)) == 5 and len(in_plane_offsets(3)) == 9


def test_faces_are_sparse_and_decode_to_provisional_ids():
    rng = np.random.default_rng(3)
    lab = (rng.integers(1, 6, (6, 7, 8)) * (rng.random((6, 7, 8)) < 0.2)).astype(np.int32)
    planes = [lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]]
    for face, plane in zip(block_faces(lab, 5), planes):
        np.testing.assert_array_equal(face.provisional(), encode(plane, 5))
        assert face.nbytes == 8 * np.count_nonzero(plane)


def test_label_binary_numbers_components_as_scipy_does():
    """cc3d labels the blocks: the same components and numbers as scipy.ndimage.label, thin shapes included."""
    rng = np.random.default_rng(5)
    for trial in range(600):
        shape = tuple(int(v) for v in rng.integers(1, 9, 3)) if trial < 500 else (40, 50, 60)
        b = rng.random(shape) > rng.random()
        for conn in (1, 2, 3):
            expected, n = ndi.label(b, structure=ndi.generate_binary_structure(3, conn))
            got, m = label_binary(b, conn)
            assert m == n and got.dtype == np.int32
            np.testing.assert_array_equal(got, expected)


def test_small_specks_inside_a_block_are_dropped_there():
    m = np.zeros((9, 9, 9), bool)
    m[0, 2, 2] = m[1, 2, 2] = True          # 2 voxels touching the lower z face: kept (may continue beyond)
    m[4, 4, 4] = True                       # 1-voxel speck inside: dropped
    m[3:6, 6:8, 1:4] = True                 # 18 voxels inside: kept
    m[8, 8, 8] = True                       # corner speck on three faces: kept
    lab, n = label_block(m.astype(np.float32), 0.5, 1)
    assert n == 4
    out, n2, sizes = drop_small_interior(lab, n, 5)
    assert n2 == 3 and out.dtype == np.int32
    np.testing.assert_array_equal(sizes, [0, 2, 18, 1])
    assert out[4, 4, 4] == 0 and out[0, 2, 2] == 1 and out[3, 6, 1] == 2 and out[8, 8, 8] == 3
    same, n3, _ = drop_small_interior(lab, n, 0)
    assert n3 == n and same is lab


def test_outlier_keep_matches_brute_force_and_handles_few_particles():
    rng = np.random.default_rng(5)
    c = rng.uniform(0, 50, (200, 3))
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    for nn, dt in [(0, 5.0), (1, 5.0), (3, 10.0), (6, 12.5)]:
        expected = ((d <= dt).sum(1) - 1) >= nn
        np.testing.assert_array_equal(outlier_keep(c, nn, dt), expected)
    assert outlier_keep(np.zeros((2, 3)), 3, 30.0).tolist() == [False, False]
    assert outlier_keep(np.zeros((0, 3)), 3, 30.0).shape == (0,)


def test_label_alone_equals_scipy_label():
    rng = np.random.default_rng(6)
    for _ in range(15):
        shape = tuple(int(v) for v in rng.integers(5, 30, 3))
        x = ndi.gaussian_filter(rng.random(shape), 1.2)
        th = float(np.quantile(x, rng.uniform(0.3, 0.8)))
        conn = int(rng.integers(1, 4))
        expected, n = ndi.label(x > th, ndi.generate_binary_structure(3, conn))
        lab, m = label(da.from_array(x, chunks=tuple(int(v) for v in rng.integers(2, 12, 3))), th, conn)
        assert m == n
        np.testing.assert_array_equal(lab.compute(), expected)


# --------------------------------------------------------------------------- semantics (reference)


def _cube_pair():
    """Two 6x6x6 cubes touching along x: one component, two centre-map peaks."""
    mask = np.zeros((10, 10, 20), np.float32)
    mask[2:8, 2:8, 2:14] = 1.0
    center = np.zeros_like(mask)
    center[4, 4, 4] = 1.0
    center[5, 5, 11] = 0.9
    return mask, center


def test_two_centres_split_one_component():
    mask, center = _cube_pair()
    ref = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False)
    assert len(ref.centers) == 2
    assert ref.labels[4, 4, 4] == 1 and ref.labels[5, 5, 11] == 2
    # voxel x=7 is 3 from x=4 and 4 from x=11 -> first particle; x=8 is equidistant in x only when y,z agree
    assert ref.n_voxels.sum() == (mask > 0.1).sum()
    det, lab = run_chunked(mask, center, (3, 4, 5), remove_min_size=1, filter_outlier=False)
    np.testing.assert_array_equal(lab, ref.labels)


def test_ties_go_to_the_raster_first_centre():
    mask = np.zeros((3, 3, 9), np.float32)
    mask[1, 1, :] = 1
    center = np.zeros_like(mask)
    center[1, 1, 2] = 1.0
    center[1, 1, 6] = 1.0  # voxel x=4 is equidistant: goes to the centre at x=2 (first in raster order)
    ref = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False)
    assert ref.labels[1, 1].tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 2]
    for chunks in ((1, 1, 1), (3, 3, 4), (2, 2, 5)):
        _, lab = run_chunked(mask, center, chunks, remove_min_size=1, filter_outlier=False)
        np.testing.assert_array_equal(lab, ref.labels)


def test_check_center_ignores_centres_outside_the_component():
    mask = np.zeros((5, 5, 20), np.float32)
    mask[1:4, 1:4, 1:9] = 1  # a component without a centre of its own
    center = np.zeros_like(mask)
    center[2, 2, 3] = 1.0  # inside
    center[2, 2, 15] = 1.0  # outside any component
    on = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False, check_center=True)
    off = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False, check_center=False)
    assert len(on.centers) == 1 and len(off.centers) == 1  # all voxels nearer to x=3 than x=15 ... except x>=9
    mask[1:4, 1:4, 9:13] = 1
    on = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False, check_center=True)
    off = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False, check_center=False)
    assert len(on.centers) == 1  # one centre inside: stays whole
    assert len(off.centers) == 2  # voxels x >= 9 are nearer the outside centre
    for cc in (True, False):
        assert_same(mask, center, (2, 3, 7), remove_min_size=1, filter_outlier=False, check_center=cc)


def test_disconnected_part_of_a_cell_becomes_its_own_instance():
    # a U-shaped component whose two arms are nearest to the same centre but connected only through
    # voxels nearest to the other centre
    mask = np.zeros((3, 12, 12), np.float32)
    mask[1, 1:11, 1] = 1
    mask[1, 1:11, 10] = 1
    mask[1, 10, 1:11] = 1
    center = np.zeros_like(mask)
    center[1, 2, 5] = 1.0  # outside the component, between the arm tops (check_center=False)
    center[1, 10, 5] = 0.9  # on the bottom bar
    ref = postprocess_reference(mask, center, remove_min_size=1, filter_outlier=False, check_center=False)
    assert len(ref.centers) == 3
    assert_same(mask, center, (3, 5, 4), remove_min_size=1, filter_outlier=False, check_center=False)


def _fragment_case():
    """One component split by two centres; the second centre's Voronoi cell also holds a
    one-voxel arm that touches the rest of that cell only through the first cell: a fragment."""
    mask = np.zeros((5, 9, 20), np.float32)
    mask[1:4, 1:4, 1:15] = 1  # a bar
    mask[2, 4, 10] = 1  # a one-voxel bump, nearest to the centre at x=12 ...
    mask[2, 5, 10] = 1
    mask[2, 6, 8] = mask[2, 6, 9] = mask[2, 6, 10] = 1  # ... joined to the bar via voxels nearer to x=4
    mask[2, 5, 8] = 1
    center = np.zeros_like(mask)
    center[2, 2, 4] = 1.0
    center[2, 2, 12] = 0.9
    return mask, center


def test_min_particle_size_removes_split_fragments_that_remove_min_size_keeps():
    mask, center = _fragment_case()
    kw = dict(remove_min_size=10, filter_outlier=False)
    ref = postprocess_reference(mask, center, **kw)
    assert ref.n_voxels.min() < 5 and len(ref.centers) >= 3  # -rs does not remove the split's fragments
    big = postprocess_reference(mask, center, min_particle_size=5, **kw)
    assert big.n_voxels.min() >= 5 and len(big.centers) == int((ref.n_voxels >= 5).sum())
    assert big.labels.max() == len(big.centers)  # renumbered 1..N
    assert ((big.labels > 0) == np.isin(ref.labels, np.flatnonzero(ref.n_voxels >= 5) + 1)).all()
    for chunks in ((2, 3, 4), (1, 1, 1), (5, 9, 20)):
        assert_same(mask, center, chunks, min_particle_size=5, **kw)


def test_removed_fragments_are_nobodys_neighbours():
    # three 3x3x3 particles in a row (4 apart) and a single-voxel speck near the middle one
    mask = np.zeros((5, 5, 20), np.float32)
    center = np.zeros_like(mask)
    for x in (2, 6, 10):
        mask[1:4, 1:4, x - 1 : x + 2] = 1
        center[2, 2, x] = 1.0
    mask[2, 2, 16] = 1
    center[2, 2, 16] = 1.0
    kw = dict(remove_min_size=1, check_center=True, filter_outlier=True, neighbor_number=2, distance_threshold=6.5)
    without = postprocess_reference(mask, center, **kw)
    np.testing.assert_allclose(without.centers, [[2, 2, 6], [2, 2, 10]])  # the speck is x=10's second neighbour
    ref, det = assert_same(mask, center, (2, 2, 3), min_particle_size=2, **kw)
    np.testing.assert_allclose(det.centers, [[2, 2, 6]])  # x=2 and x=10 now have one neighbour each


def test_outlier_removal_is_by_label():
    # R: a ring (shell) whose centroid (10, 10, 10) lies inside sphere S centred at (10, 10, 12);
    # T: a sphere outside the ring.  With nn=2, dt=10.5 only S has two neighbours (R at 2, T at 10).
    # Looking up the label at R's rounded centroid (the seed's bug) would erase S instead of R.
    z, y, x = np.ogrid[:21, :21, :26]
    d0 = np.sqrt((z - 10) ** 2 + (y - 10) ** 2 + (x - 10) ** 2)
    s_ball = np.sqrt((z - 10) ** 2 + (y - 10) ** 2 + (x - 12) ** 2) < 3
    t_ball = np.sqrt((z - 10) ** 2 + (y - 10) ** 2 + (x - 22) ** 2) < 3
    ring = (d0 > 6) & (d0 < 8) & ~t_ball
    mask = (ring | s_ball | t_ball).astype(np.float32)
    assert ndi.label(mask)[1] == 3
    center = np.zeros_like(mask)
    center[10, 10, 10] = 1
    kw = dict(remove_min_size=1, check_center=False, neighbor_number=2, distance_threshold=10.5)
    all3 = postprocess_reference(mask, center, **{**kw, "filter_outlier": False})
    assert len(all3.centers) == 3
    ref, det = assert_same(mask, center, (7, 8, 9), **kw)
    assert len(det.centers) == 1
    lab = det.labels.compute()
    np.testing.assert_array_equal(lab > 0, s_ball)
    np.testing.assert_allclose(det.centers[0], [10, 10, 12])


def test_fewer_particles_than_neighbor_number_does_not_crash():
    m, c, _ = blob_maps((20, 20, 20), 2, radius=(3, 4), seed=1)
    ref, det = assert_same(m, c, (7, 8, 9), remove_min_size=1, neighbor_number=3)
    assert len(det.centers) == 0 and det.labels.compute().max() == 0


def test_empty_volume():
    z = np.zeros((9, 10, 11), np.float32)
    ref, det = assert_same(z, z, (4, 4, 4))
    assert len(det.centers) == 0 and det.centers.shape == (0, 3)


def test_single_particle_straddling_a_chunk_corner():
    z, y, x = np.ogrid[:24, :24, :24]
    mask = (((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2) < 25).astype(np.float32)
    center = np.exp(-(((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2) / 8.0)).astype(np.float32)
    for cc in (True, False):
        ref, det = assert_same(mask, center, (12, 12, 12), check_center=cc, filter_outlier=False)
        assert len(det.centers) == 1
        np.testing.assert_allclose(det.centers[0], [12, 12, 12])
        assert det.n_voxels[0] == int(mask.sum())


def test_size_filter_counts_particles_cut_by_chunks_whole():
    mask = np.zeros((8, 8, 8), np.float32)
    mask[2:6, 2:6, 2:6] = 1  # 64 voxels, cut into 8 pieces of 8
    ref, det = assert_same(mask, mask, (4, 4, 4), remove_min_size=64, filter_outlier=False)
    assert len(det.centers) == 1
    ref, det = assert_same(mask, mask, (4, 4, 4), remove_min_size=65, filter_outlier=False)
    assert len(det.centers) == 0


def test_with_a_distributed_client_and_scratch(tmp_path):
    distributed = pytest.importorskip("distributed")
    m, c, _ = blob_maps((24, 40, 36), 25, radius=(2, 5), elongation=2.0, seed=11)
    ref = postprocess_reference(m, c)
    with dask.config.set(scheduler=None), distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                                                                  dashboard_address=None) as client:
        det = postprocess(da.from_array(m, chunks=(10, 13, 16)), da.from_array(c, chunks=(10, 13, 16)),
                          scratch=tmp_path)
        # every block result went to this process and was released: nothing is left on the cluster
        # (releases reach the scheduler asynchronously: allow them a few seconds)
        left = [client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))]
        for _ in range(50):
            if left[-1] == 0:
                break
            time.sleep(0.1)
            left.append(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))
        assert left[-1] == 0
        lab = det.labels.compute()
    np.testing.assert_array_equal(lab, ref.labels)
    assert (tmp_path / "pieces.zarr").exists()


def test_to_dataframe():
    m, c, _ = blob_maps((20, 30, 40), 12, seed=3)
    det, _ = run_chunked(m, c, 16, remove_min_size=1, filter_outlier=False)
    df = det.to_dataframe(2.0)
    assert list(df.columns) == ["id", "x", "y", "z", "x_angst", "y_angst", "z_angst", "n_voxels", "score",
                                "mask_score"]
    assert df["id"].tolist() == list(range(1, len(det.centers) + 1))
    np.testing.assert_array_equal(df["x"], det.centers[:, 2])
    np.testing.assert_allclose(df["z_angst"], det.centers[:, 0] * 2.0)
    assert ((df["mask_score"] > 0.1) & (df["mask_score"] <= 1)).all()
    np.testing.assert_array_equal(df["score"], det.center_scores)
    np.testing.assert_array_equal(df["mask_score"], det.scores)
    lab = det.labels.compute()
    for i in range(len(det.centers)):  # score = the centre-map peak over the particle
        assert df["score"][i] == c[lab == i + 1].max()
    assert df["x_angst"].isna().all() if len(det.to_dataframe(None)) == 0 else det.to_dataframe(None)["x_angst"].isna().all()


def test_mismatched_shapes_raise():
    with pytest.raises(ParameterError):
        postprocess(da.zeros((4, 4, 4), chunks=2), da.zeros((4, 4, 5), chunks=2))


# --------------------------------------------------------------------------- randomized equality


def _at_most_6_per_axis(shape, chunks):
    """Chunks at least shape / 6: thin chunks with a wide fusion halo make (blocks x neighbours) grow fast."""
    return tuple(max(int(c), -(-int(s) // 6)) for c, s in zip(chunks, shape))


@pytest.mark.parametrize("D", DISTANCES)
@pytest.mark.parametrize("seed", range(8))
def test_random_maps_equal_reference_for_any_chunking(seed, D):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(v) for v in rng.integers(12, 36, 3))
    m, c, _ = blob_maps(shape, int(rng.integers(1, 40)), radius=(1.5, 5.0), elongation=float(rng.uniform(1, 3)),
                        seed=seed, noise=float(rng.choice([0.0, 0.12])))
    if seed % 3 == 0:
        c = np.round(c * 4) / 4  # plateaus in the centre map
    elif seed % 3 == 1:  # a bumpy centre map: several maxima per particle, for the fusion to merge
        c = np.clip(c + 0.15 * _smooth_field(rng, shape, 0.8), 0, 1).astype(np.float32)
    conn = int(rng.integers(1, 4))
    kw = dict(connectivity=conn, check_center=bool(seed % 2), remove_min_size=int(rng.integers(0, 30)),
              neighbor_number=int(rng.integers(0, 4)), distance_threshold=float(rng.uniform(3, 20)),
              filter_outlier=bool(rng.integers(0, 2)), center_min_distance=D,
              min_particle_size=int(rng.choice([0, 1, 5, 20])), min_score=float(rng.choice([0.0, 0.0, 0.5, 0.8])))
    small = _at_most_6_per_axis(shape, (1, 1, 1))  # thinner than the fusion halo of D = 7
    for chunks in [(7, 9, 11), tuple(int(v) for v in rng.integers(3, 20, 3)), small, shape]:
        assert_same(m, c, chunks, **kw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(st.integers(4, 18), st.integers(4, 18), st.integers(4, 18)),
    chunks=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    n=st.integers(0, 12),
    seed=st.integers(0, 2**16),
    conn=st.sampled_from([1, 2, 3]),
    check_center=st.booleans(),
    filter_outlier=st.booleans(),
    D=st.sampled_from(DISTANCES),
    min_particle_size=st.sampled_from([0, 2, 6]),
    min_score=st.sampled_from([0.0, 0.3, 0.7]),
    bumpy=st.booleans(),
)
def test_hypothesis_equal_reference(shape, chunks, n, seed, conn, check_center, filter_outlier, D,
                                    min_particle_size, min_score, bumpy):
    m, c, _ = blob_maps(shape, n, radius=(1.0, 4.0), elongation=2.5, seed=seed)
    chunks = _at_most_6_per_axis(shape, chunks)
    if bumpy:
        c = np.round(np.clip(c + 0.3 * _smooth_field(np.random.default_rng(seed), shape, 0.7), 0, 1) * 8) / 8
    assert_same(m, c, chunks, connectivity=conn, check_center=check_center, filter_outlier=filter_outlier,
                remove_min_size=3, neighbor_number=1, distance_threshold=6.0, center_min_distance=D,
                min_particle_size=min_particle_size, min_score=min_score)


def test_elongated_particles_with_two_centres_are_split_consistently():
    m, c, _ = blob_maps((30, 40, 40), 15, radius=(2.5, 4.0), elongation=3.5, seed=21)
    ref = postprocess_reference(m, c, filter_outlier=False, remove_min_size=1)
    comps, n = ndi.label(m > 0.1)
    assert len(ref.centers) > n  # some components hold two or more centres and were split
    for chunks in ((8, 8, 8), (13, 7, 19)):
        assert_same(m, c, chunks, filter_outlier=False, remove_min_size=1)


def _smooth_field(rng, shape, sigma):
    f = ndi.gaussian_filter(rng.random(shape), sigma)
    f -= f.min()
    return (f / max(f.max(), 1e-12)).astype(np.float32)


@pytest.mark.parametrize("seed", range(10))
def test_independent_random_fields_equal_reference(seed):
    # mask and centre map unrelated: peaks in the background, in removed components, many per component
    rng = np.random.default_rng(300 + seed)
    shape = tuple(int(v) for v in rng.integers(6, 26, 3))
    mask = _smooth_field(rng, shape, float(rng.uniform(0.7, 2.0)))
    center = _smooth_field(rng, shape, float(rng.uniform(0.5, 1.5)))
    if seed % 2:
        center = np.round(center * 5) / 5  # plateaus
    kw = dict(mask_threshold=float(rng.uniform(0.2, 0.8)), center_threshold=float(rng.uniform(0.0, 0.6)),
              remove_min_size=int(rng.integers(0, 40)), connectivity=int(rng.integers(1, 4)),
              check_center=bool(seed % 3 != 0), filter_outlier=bool(seed % 4 == 0), neighbor_number=1,
              distance_threshold=5.0, center_min_distance=DISTANCES[seed % len(DISTANCES)],
              min_particle_size=int(rng.integers(0, 12)), min_score=float(rng.uniform(0.0, 0.9)))
    for chunks in [tuple(int(v) for v in rng.integers(2, 10, 3)), (5, 6, 7), _at_most_6_per_axis(shape, (1, 2, 3))]:
        assert_same(mask, center, chunks, **kw)


def test_centres_without_foreground():
    mask = np.zeros((10, 10, 10), np.float32)
    mask[:2, :2, :2] = 1  # one small component, removed by the size filter
    center = np.zeros_like(mask)
    center[5, 5, 5] = 1
    center[0, 0, 0] = 1
    for cc in (True, False):
        ref, det = assert_same(mask, center, (4, 4, 4), check_center=cc, remove_min_size=64)
        assert len(det.centers) == 0 and len(det.peaks) == (0 if cc else 2)


def test_min_score_removes_particles_by_their_centre_peak():
    m, c, _ = blob_maps((24, 32, 32), 12, radius=(2.0, 4.0), seed=5)
    lab, n = ndi.label(m > 0.1)
    factor = np.random.default_rng(0).uniform(0.3, 1.0, size=n + 1).astype(np.float32)
    c = (c * factor[lab]).astype(np.float32)  # each particle's centre peak at another height
    kw = dict(filter_outlier=False, remove_min_size=1)
    allp = postprocess_reference(m, c, **kw)
    thr = float(np.median(allp.center_scores))
    some = postprocess_reference(m, c, min_score=thr, **kw)
    assert 0 < len(some.centers) < len(allp.centers)
    assert np.all(some.center_scores >= thr)
    kept = {tuple(np.round(x, 6)) for x in some.centers}
    expect = {tuple(np.round(x, 6)) for x, s in zip(allp.centers, allp.center_scores) if s >= thr}
    assert kept == expect  # exactly the particles at or above the score, nothing else changes
    for chunks in ((8, 8, 8), (5, 11, 7)):
        assert_same(m, c, chunks, min_score=thr, **kw)


def test_min_score_zero_keeps_a_particle_whose_centre_peak_is_negative():
    """min_score 0 is no score filter (docs/postprocessing.md, step 5): a particle whose centre map is negative
    over all its voxels (the network's centre output can dip below 0) stays, in the chunked result and the
    reference alike, on every chunking; any min_score > 0 removes it."""
    mask = np.zeros((16, 24, 24), np.float32)
    center = np.full(mask.shape, -0.25, np.float32)
    mask[3:10, 3:10, 3:10] = 0.9  # particle A: centre map negative everywhere on it
    mask[3:10, 13:20, 13:20] = 0.9  # particle B: a positive centre peak
    center[6, 16, 16] = 0.8
    kw = dict(filter_outlier=False, remove_min_size=8)
    for min_score, n in ((0.0, 2), (1e-6, 1), (0.5, 1)):
        for chunks in ((16, 24, 24), (8, 12, 12), (5, 7, 9)):
            ref, det = assert_same(mask, center, chunks, min_score=min_score, **kw)
            assert len(det.centers) == len(ref.centers) == n, (min_score, chunks)
        if n == 2:
            assert sorted(ref.center_scores) == pytest.approx([-0.25, 0.8])
        else:
            assert ref.center_scores == pytest.approx([0.8])
