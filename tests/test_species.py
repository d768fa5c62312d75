"""Species: the table, the multi-species network's outputs, and the exact per-species post-processing."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from cryodet_dask.errors import ParameterError
from cryodet_dask.models import UNet3D, UNetConfig, load, save
from cryodet_dask.postprocessing import SpeciesParams, postprocess, postprocess_reference, quantize_species
from cryodet_dask.postprocessing._synthetic import blob_maps
from cryodet_dask.species import DEFAULT_SPECIES, Species, SpeciesTable, parse_species, parse_species_weights

KW = dict(mask_threshold=0.1, center_threshold=0.1, remove_min_size=3, filter_outlier=False,
          center_min_distance=0.0, min_particle_size=0, min_score=0.0)


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# --------------------------------------------------------------------------- the table


def test_species_table_round_trip_and_lookups():
    t = SpeciesTable.of([Species("ribosome", 280.0, "#112233"), "proteasome"])
    assert SpeciesTable.from_list(t.to_list()) == t
    assert t.names == ("ribosome", "proteasome") and t.diameters == (280.0, None)
    assert t.colours()[0] == "#112233" and t.colours()[1].startswith("#")
    assert t.select(["proteasome"]) == (1,)
    assert SpeciesTable.from_list(None) == DEFAULT_SPECIES and DEFAULT_SPECIES.names == ("particle",)


@pytest.mark.parametrize("bad", ["ribo some", "../x", "a_b", "", "-x", "é"])
def test_species_names_must_be_copick_safe(bad):
    with pytest.raises(ParameterError, match="copick-safe"):
        Species(bad)


def test_duplicate_and_unknown_species_are_refused():
    with pytest.raises(ParameterError, match="named twice"):
        SpeciesTable.of(["a", "b", "a"])
    t = SpeciesTable.of(["a", "b"])
    with pytest.raises(ParameterError, match="knows a, b"):
        t.index("c")
    with pytest.raises(ParameterError, match="named twice"):
        t.select(["a", "a"])


def test_parse_species_notation():
    t = parse_species("ribosome:280,apo-ferritin:120:2,beta")
    assert t.names == ("ribosome", "apo-ferritin", "beta") and t.diameters == (280.0, 120.0, None)
    assert parse_species_weights("ribosome:280,apo-ferritin:120:2") == {"ribosome": 1.0, "apo-ferritin": 2.0}
    for bad in ("a:x", "a:1:0", "a,,b", "a:1:2:3", "a:-5"):
        with pytest.raises(ParameterError):
            parse_species(bad)


# --------------------------------------------------------------------------- the network


def test_multi_species_network_outputs_and_checkpoint(tmp_path):
    cfg = UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center", "species"),
                     species=SpeciesTable.of(["a", "b", "c"]))
    assert cfg.outputs == ("mask", "center", "species:a", "species:b", "species:c")
    net = UNet3D(cfg)
    y = net(torch.randn(2, 1, 8, 8, 8))
    assert y.shape == (2, 5, 8, 8, 8)
    np.testing.assert_allclose(y[:, 2:].sum(1).detach().numpy(), 1.0, rtol=1e-5)  # a softmax over species
    assert net.head_index("species") == 2
    path = save(net, tmp_path / "m.pt")
    back = load(path)
    assert back.config.species.names == ("a", "b", "c")
    torch.testing.assert_close(back(torch.ones(1, 1, 8, 8, 8)), net.eval()(torch.ones(1, 1, 8, 8, 8)))


def test_species_head_and_species_count_must_agree():
    with pytest.raises(ParameterError, match="needs the 'species' head"):
        UNetConfig(heads=("mask", "center"), species=SpeciesTable.of(["a", "b"]))
    with pytest.raises(ParameterError, match="needs no 'species' head"):
        UNetConfig(heads=("mask", "center", "species"))
    with pytest.raises(ParameterError, match="needs the 'mask' head"):
        UNetConfig(heads=("center", "species"), species=SpeciesTable.of(["a", "b"]))


def test_the_heatmap_species_head_by_hand_and_through_a_checkpoint(tmp_path):
    from cryodet_dask.models._unet import heatmap_shares
    from cryodet_dask.training import species_heatmap_target

    # the heatmaps' shares: ReLU, divided by their sum; equal shares where every heatmap is 0
    h = torch.tensor([[2.0, -1.0, 0.0], [1.0, 1.0, 2.0], [-1.0, -2.0, 0.0]]).T.reshape(1, 3, 3, 1, 1)
    got = heatmap_shares(h).reshape(3, 3).T.numpy()
    np.testing.assert_allclose(got, [[1, 0, 0], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    # the target: (1 + c) / 2 on the voxels of each species, 0 elsewhere
    code = torch.tensor([[0.0, 1.0, 2.0, 1.0]])
    center = torch.tensor([[0.7, 0.0, 1.0, 0.4]])
    t = species_heatmap_target(code, center, 2)
    np.testing.assert_allclose(t[0].numpy(), [[0, 0.5, 0, 0.7], [0, 0, 1.0, 0]], rtol=1e-6)
    np.testing.assert_allclose(species_heatmap_target(code, None, 2)[0].numpy(), [[0, 1, 0, 1], [0, 0, 1, 0]])
    with pytest.raises(ParameterError, match="species_head"):
        UNetConfig(species_head="argmax")
    d = UNetConfig(heads=("mask", "center")).to_dict()
    del d["species_head"]  # an older checkpoint: the softmax head
    assert UNetConfig.from_dict(d).species_head == "softmax"
    cfg = UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center", "species"),
                     species=SpeciesTable.of(["a", "b", "c"]), species_head="heatmap")
    net = UNet3D(cfg).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        y = net(x)
        np.testing.assert_allclose(y[:, 2:].sum(1).numpy(), 1.0, rtol=1e-5)  # shares of the species
        torch.testing.assert_close(y[:, 2:], heatmap_shares(net.logits(x)[:, 2:]))
    back = load(save(net, tmp_path / "h.pt"))
    assert back.config.species_head == "heatmap"
    with torch.no_grad():
        torch.testing.assert_close(back(x), y)


def test_training_the_heatmap_species_head(tmp_path):
    from cryodet_dask.training import train

    torch.set_num_threads(1)
    img, lab, kinds = _two_species()
    kw = dict(heads=("mask", "center"), channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2,
              steps_per_epoch=4, validation_batches=2, validation_fraction=0.34, learning_rate=3e-3, seed=0,
              progress=False, species=["small", "big"], particle_species=[kinds])
    r = train(img, lab, tmp_path / "h.pt", epochs=1, species_head="heatmap", **kw)
    net = load(tmp_path / "h.pt")
    assert net.config.species_head == "heatmap" and "heatmaps" in net.config.training["losses"]
    assert all(np.isfinite(h["validation_loss"]) for h in r.history)
    # the same start with the other head: the species branch is trained afresh, the rest is kept
    del kw["heads"], kw["channels"], kw["convs_per_level"]
    train(img, lab, tmp_path / "s.pt", epochs=1, init=tmp_path / "h.pt", species_head="softmax",
          **{**kw, "learning_rate": 1e-12})
    soft = load(tmp_path / "s.pt")
    assert soft.config.species_head == "softmax"
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(soft(x)[:, :2], net(x)[:, :2], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(soft.species_head.weight, net.species_head.weight)


def test_an_older_checkpoint_config_is_one_species_particle():
    d = UNetConfig(heads=("mask", "center")).to_dict()
    del d["species"]
    assert UNetConfig.from_dict(d).species == DEFAULT_SPECIES


# --------------------------------------------------------------------------- post-processing


def _species_map(labels: np.ndarray, k: int, seed: int, noise: float) -> np.ndarray:
    """Quantized species probabilities: each blob leans to one species, voxel noise flips some voxels."""
    rng = np.random.default_rng(seed)
    n = int(labels.max())
    lean = rng.integers(0, k, n + 1)
    logits = rng.normal(0, noise, (k, *labels.shape)).astype(np.float32)
    logits[lean[labels], *np.indices(labels.shape)] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    if seed % 2:
        p = np.round(p * 4) / 4  # ties between species
    return quantize_species(p)


def _assert_same(mask, center, species, chunks, sp=None, **kw):
    ref = postprocess_reference(mask, center, species=species, species_params=sp, **{**KW, **kw})
    det = postprocess(da.from_array(mask, chunks=chunks), da.from_array(center, chunks=chunks),
                      species=da.from_array(species, chunks=(species.shape[0], *chunks)),
                      species_names=[f"s{i}" for i in range(species.shape[0])], species_params=sp,
                      **{**KW, **kw})
    np.testing.assert_array_equal(det.labels.compute(), ref.labels)
    np.testing.assert_array_equal(det.species, ref.species)
    np.testing.assert_array_equal(det.class_scores, ref.class_scores)  # integer sums: exact
    np.testing.assert_array_equal(det.centers, ref.centers)
    lut = np.concatenate([[0], ref.species + 1]).astype(np.uint8)
    np.testing.assert_array_equal(det.species_labels().compute(), lut[ref.labels])
    return det, ref


@pytest.mark.parametrize("seed", range(6))
def test_species_equal_reference_for_any_chunking(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(14, 30, 3))
    m, c, lab = blob_maps(shape, int(rng.integers(3, 25)), radius=(1.5, 4.5), elongation=2.0, seed=seed)
    k = int(rng.integers(2, 5))
    s = _species_map(ndi.label(m > 0.1)[0], k, seed, noise=float(rng.choice([0.3, 2.0])))
    sp = SpeciesParams(min_particle_size=tuple(int(v) for v in rng.integers(0, 30, k)),
                       keep=tuple(range(k)) if seed % 3 else (0, k - 1),
                       center_min_distance=tuple(float(v) for v in rng.choice([0.0, 1.5, 2.5, 4.2], k))
                       if seed % 2 == 0 else (),
                       min_score=tuple(float(v) for v in rng.choice([0.0, 0.3, 0.6, 0.8], k)) if seed % 3 != 2 else ())
    for chunks in [(5, 7, 9), tuple(int(v) for v in rng.integers(3, 15, 3)), shape]:
        det, ref = _assert_same(m, c, s, chunks, sp, connectivity=int(rng.integers(1, 4)),
                                check_center=bool(seed % 2), center_min_distance=float(rng.choice([0.0, 2.5])))
    assert len(ref.species) > 0
    if sp.keep == (0, k - 1):
        assert set(ref.species.tolist()) <= {0, k - 1}
    mins = np.asarray(sp.min_particle_size)[ref.species]
    assert np.all(ref.n_voxels >= mins)
    if sp.min_score:  # every particle kept scores at least its own species' threshold
        assert np.all(ref.center_scores >= np.asarray(sp.min_score)[ref.species])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.tuples(st.integers(4, 16), st.integers(4, 16), st.integers(4, 16)),
       chunks=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9)),
       n=st.integers(0, 10), k=st.integers(2, 4), seed=st.integers(0, 2**16), conn=st.sampled_from([1, 2, 3]),
       fusion=st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.5, 5.0]), min_size=4, max_size=4) | st.none(),
       scores=st.lists(st.sampled_from([0.0, 0.4, 0.7]), min_size=4, max_size=4) | st.none())
def test_hypothesis_species_equal_reference(shape, chunks, n, k, seed, conn, fusion, scores):
    m, c, _ = blob_maps(shape, n, radius=(1.0, 4.0), elongation=2.5, seed=seed)
    s = _species_map(ndi.label(m > 0.1)[0], k, seed, noise=1.0)
    sp = SpeciesParams(center_min_distance=tuple(fusion[:k]) if fusion else (),
                       min_score=tuple(scores[:k]) if scores else ()) if fusion or scores else None
    _assert_same(m, c, s, chunks, sp, connectivity=conn)


def test_per_species_fusion_distance_by_hand():
    """Two pairs of centre peaks 4 voxels apart: the species whose fusion distance reaches 4 fuses its
    pair into one particle, the other keeps two; the species at each peak voxel decides."""
    shape = (12, 12, 30)
    mask = np.zeros(shape, np.float32)
    mask[3:9, 3:9, 2:12] = 1  # species 0: peaks at x 5 and 9
    mask[3:9, 3:9, 16:26] = 1  # species 1: peaks at x 19 and 23
    center = np.zeros(shape, np.float32)
    for x, v in ((5, 0.9), (9, 0.8), (19, 0.9), (23, 0.8)):
        center[6, 6, x] = v
    prob = np.zeros((2, *shape), np.float32)
    prob[0, ..., :14], prob[1, ..., 14:] = 1, 1
    s = quantize_species(prob)
    kw = {**KW, "check_center": True, "remove_min_size": 1}
    sp = SpeciesParams(center_min_distance=(5.0, 2.0))
    ref = postprocess_reference(mask, center, species=s, species_params=sp, **kw)
    assert ref.species.tolist() == [0, 1, 1]  # species 0 fused (one particle), species 1 split in two
    swapped = postprocess_reference(mask, center, species=s, species_params=SpeciesParams(center_min_distance=(2.0, 5.0)),
                                    **kw)
    assert swapped.species.tolist() == [0, 0, 1]
    for chunks in [(4, 5, 6), (12, 12, 7)]:
        _assert_same(mask, center, s, chunks, sp, **kw)
    with pytest.raises(ParameterError, match="3 per-species centre fusion distances for 2 species"):
        postprocess(mask, center, species=s, species_params=SpeciesParams(center_min_distance=(1, 2, 3)))


def test_per_species_score_threshold_by_hand():
    """Two particles of each species, peaks 0.9 and 0.5: a threshold of 0.6 for species 0 alone removes its
    weaker particle and leaves species 1's; 0 keeps all (as the run-wide threshold does)."""
    shape = (12, 12, 48)
    mask = np.zeros(shape, np.float32)
    center = np.zeros(shape, np.float32)
    for x0, v in ((2, 0.9), (13, 0.5), (25, 0.9), (36, 0.5)):
        mask[3:9, 3:9, x0:x0 + 8] = 1
        center[6, 6, x0 + 4] = v
    prob = np.zeros((2, *shape), np.float32)
    prob[0, ..., :24], prob[1, ..., 24:] = 1, 1
    s = quantize_species(prob)
    kw = {**KW, "check_center": True, "remove_min_size": 1, "filter_outlier": False}
    sp = SpeciesParams(min_score=(0.6, 0.0))
    ref = postprocess_reference(mask, center, species=s, species_params=sp, **kw)
    assert ref.species.tolist() == [0, 1, 1] and ref.center_scores.tolist() == pytest.approx([0.9, 0.9, 0.5])
    both = postprocess_reference(mask, center, species=s, species_params=SpeciesParams(min_score=(0.6, 0.6)), **kw)
    assert both.species.tolist() == [0, 1]
    for chunks in [(4, 5, 6), (12, 12, 11)]:
        _assert_same(mask, center, s, chunks, sp, **kw)
    with pytest.raises(ParameterError, match="3 per-species minimum scores for 2 species"):
        postprocess(mask, center, species=s, species_params=SpeciesParams(min_score=(0.1, 0.2, 0.3)))
    with pytest.raises(ParameterError, match="minimum scores must be finite"):
        SpeciesParams(min_score=(-0.1, 0.2))


def test_species_of_highest_mean_probability_and_ties_by_hand():
    mask = np.zeros((4, 4, 8), np.float32)
    mask[1:3, 1:3, 1:7] = 1  # one particle of 24 voxels
    center = np.zeros_like(mask)
    center[1, 1, 3] = 1
    prob = np.zeros((3, *mask.shape), np.float32)
    prob[1, :, :, :4] = 1.0  # x < 4: species 1 (12 voxels)
    prob[2, :, :, 4:] = 1.0  # x >= 4: species 2 (12 voxels): a tie, the lower index wins
    s = quantize_species(prob)
    ref = postprocess_reference(mask, center, species=s, **KW)
    assert ref.species.tolist() == [1] and ref.class_scores.tolist() == [0.5]
    det = postprocess(da.from_array(mask, chunks=(2, 2, 3)), da.from_array(center, chunks=(2, 2, 3)),
                      species=da.from_array(s, chunks=(3, 2, 2, 3)), species_names=["a", "b", "c"], **KW)
    assert det.species.tolist() == [1]
    table = det.to_dataframe(10.0)
    assert table["class"].tolist() == ["b"] and table["class_score"].tolist() == [0.5]
    # the mean, not a majority of voxels: species 2 now leads in 13 of the 24 voxels, but only just
    # (0.6 against 0.4), and species 1 leads in the other 11 with 1.0: its mean is the higher
    prob[1, :, :, 4:], prob[2, :, :, 4:] = 0.4, 0.6
    prob[1, 1, 1, 3], prob[2, 1, 1, 3] = 0.4, 0.6
    q = quantize_species(prob)
    ref = postprocess_reference(mask, center, species=q, **KW)
    assert ref.species.tolist() == [1]
    assert ref.class_scores.tolist() == [(11 * 255 + 13 * 102) / (255 * 24)]
    det = postprocess(da.from_array(mask, chunks=(2, 2, 3)), da.from_array(center, chunks=(2, 2, 3)),
                      species=da.from_array(q, chunks=(3, 2, 2, 3)), **KW)
    assert det.species.tolist() == [1] and det.class_scores.tolist() == ref.class_scores.tolist()
    prob[1, :, :, :4], prob[2, :, :, :4] = 0.3, 0.7  # now species 2 has the higher mean everywhere
    assert postprocess_reference(mask, center, species=quantize_species(prob), **KW).species.tolist() == [2]


def test_one_species_map_changes_nothing_but_adds_the_columns():
    m, c, _ = blob_maps((20, 24, 24), 10, radius=(2.0, 4.0), seed=3)
    plain = postprocess(da.from_array(m, chunks=8), da.from_array(c, chunks=8), **KW)
    s = np.full((1, *m.shape), 255, np.uint8)
    one = postprocess(da.from_array(m, chunks=8), da.from_array(c, chunks=8), species=s, species_names=["x"], **KW)
    np.testing.assert_array_equal(plain.labels.compute(), one.labels.compute())
    np.testing.assert_array_equal(plain.centers, one.centers)
    assert set(one.to_dataframe()["class"]) <= {"x"} and np.all(one.class_scores == 1.0)
    assert plain.species is None and "class" not in plain.to_dataframe().columns


def test_bad_species_maps_are_refused():
    m = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ParameterError, match="uint8"):
        postprocess(m, m, species=np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(ParameterError, match="species names"):
        postprocess(m, m, species=np.zeros((2, 8, 8, 8), np.uint8), species_names=["a"])
    with pytest.raises(ParameterError, match="out of range"):
        postprocess(m, m, species=np.zeros((2, 8, 8, 8), np.uint8), species_params=SpeciesParams(keep=(2,)))


# --------------------------------------------------------------------------- training


def _two_species(shape=(24, 48, 48), n=12, seed=0):
    """Balls of two sizes (species 'small' and 'big') with a contrast per species, and their species table."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    zz, yy, xx = np.indices(shape)
    kinds = {}
    for k in range(1, n + 1):
        big = bool(k % 2)
        c = rng.uniform([6, 6, 6], np.array(shape) - 6)
        r = 4.5 if big else 2.5
        m = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        lab[m & (lab == 0)] = k
        kinds[k] = "big" if big else "small"
    img = np.zeros(shape, np.float32)
    for k, name in kinds.items():
        img[lab == k] = -1.0 if name == "big" else -2.0
    img += rng.normal(0, 0.3, shape).astype(np.float32)
    return img, lab, kinds


def test_multi_species_training_learns_species_and_guards_its_inputs(tmp_path):
    from cryodet_dask.errors import CheckpointError, InputError
    from cryodet_dask.training import read_patch, open_training_volume, train

    torch.set_num_threads(1)
    img, lab, kinds = _two_species()
    vol = open_training_volume(img, lab, species_of=kinds, species=SpeciesTable.of(["small", "big"]))
    _, y = read_patch(vol, np.zeros(3, int), (24, 48, 48), ("mask", "species"))
    expect = np.vectorize(lambda v: 0 if v == 0 else (1 if kinds[v] == "small" else 2))(lab)
    np.testing.assert_array_equal(y[1], expect)  # the species code of every voxel, 0 = background
    kw = dict(heads=("mask", "center"), channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2,
              steps_per_epoch=6, validation_batches=2, validation_fraction=0.34, learning_rate=3e-3, seed=0,
              progress=False, species=["small", "big"])
    out = tmp_path / "sp.pt"
    r = train(img, lab, out, epochs=2, particle_species=[kinds], **kw)
    net = load(out)
    assert net.config.species.names == ("small", "big") and net.config.heads == ("mask", "center", "species")
    assert all(np.isfinite(h["validation_loss"]) for h in r.history)
    # every particle needs a species of the table
    with pytest.raises(InputError, match="no species"):
        train(img, lab, tmp_path / "x.pt", epochs=1, particle_species=[{1: "big"}], **kw)
    with pytest.raises(InputError, match="not among the species"):
        train(img, lab, tmp_path / "x.pt", epochs=1, particle_species=[{**kinds, 1: "huge"}], **kw)
    with pytest.raises(ParameterError, match="species of the particles"):
        train(img, lab, tmp_path / "x.pt", epochs=1, **kw)
    # another species list where a run was left: refused
    with pytest.raises(CheckpointError):
        train(img, lab, out, epochs=3, particle_species=[{k: ("big" if v == "big" else "tiny") for k, v in
                                                           kinds.items()}], **{**kw, "species": ["tiny", "big"]})
    # fine-tuning to other species needs a new output layer, asked for; the mask and centre rows are kept
    renamed = {k: ("huge" if v == "big" else "tiny") for k, v in kinds.items()}
    ft = dict(kw, species=["tiny", "huge", "mid"])
    del ft["heads"], ft["channels"], ft["convs_per_level"]
    with pytest.raises(ParameterError, match="replace-species"):
        train(img, lab, tmp_path / "ft.pt", epochs=1, init=out, particle_species=[renamed], **ft)
    train(img, lab, tmp_path / "ft.pt", epochs=1, init=out, particle_species=[renamed], replace_species=True,
          learning_rate=1e-12, **{k: v for k, v in ft.items() if k != "learning_rate"})
    a, b = load(out), load(tmp_path / "ft.pt")
    assert b.config.species.names == ("tiny", "huge", "mid")
    assert b.config.training["init"]["species_replaced_from"] == ["small", "big"]
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(b(x)[:, :2], a(x)[:, :2], rtol=1e-4, atol=1e-5)  # mask and centre kept


# --------------------------------------------------------------------------- evaluation


def test_species_scores_and_confusion_by_hand(tmp_path):
    import pandas as pd

    from cryodet_dask.evaluation_species import FALSE_PICK, MISSED, confusion_matrix, confusion_png, species_scores

    truth = pd.DataFrame({"z": [0, 20, 40, 60], "y": 0, "x": 0, "class": ["a", "a", "b", "b"]})
    pred = pd.DataFrame({"z": [1, 21, 41, 80], "y": 0, "x": 0, "class": ["a", "b", "b", "a"]})
    s = species_scores(pred, truth, 3.0).set_index("species")
    assert s.loc["a", ["tp", "fp", "fn"]].tolist() == [1, 1, 1]  # the pick at 21 is of the wrong species
    assert s.loc["b", ["tp", "fp", "fn"]].tolist() == [1, 1, 1]
    assert s.loc["a", "precision"] == 0.5 and s.loc["b", "recall"] == 0.5
    m = confusion_matrix(pred, truth, 3.0)
    assert m.loc["a", "a"] == 1 and m.loc["a", "b"] == 1 and m.loc["b", "b"] == 1
    assert m.loc["b", MISSED] == 1 and m.loc[FALSE_PICK, "a"] == 1
    assert m.to_numpy().sum() == len(truth) + 1  # every true particle once, plus the one false pick
    confusion_png(tmp_path / "c.png", m)
    assert (tmp_path / "c.png").stat().st_size > 1000
    empty = species_scores(pred.iloc[:0], truth, 3.0).set_index("species")
    assert empty["precision"].tolist() == [0.0, 0.0] and empty["recall"].tolist() == [0.0, 0.0]


# --------------------------------------------------------------------------- prediction


def test_prediction_stores_the_quantized_species_maps(tmp_path):
    import mrcfile

    from cryodet_dask.models import predict_array
    from cryodet_dask.prediction import predict

    torch.manual_seed(0)
    cfg = UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center", "species"),
                     species=SpeciesTable.of(["a", "b", "c"]), voxel_size=10.0)
    net = UNet3D(cfg)
    ckpt = save(net, tmp_path / "sp.pt")
    vol = np.random.default_rng(0).normal(size=(24, 40, 36)).astype(np.float32)
    ref = predict_array(net.eval(), vol)
    expect = quantize_species(ref[2:])
    lazy = predict(vol, ckpt, chunks=16, device="cpu")
    assert lazy.species_names == ("a", "b", "c") and lazy.species.dtype == np.uint8
    assert np.abs(lazy.species.compute().astype(int) - expect).max() <= 1  # float rounding at a quantization step
    with mrcfile.new(tmp_path / "v.mrc") as m:
        m.set_data(vol)
        m.voxel_size = 10.0
    stored = predict(tmp_path / "v.mrc", ckpt, out=tmp_path / "p.zarr", chunks=16, device="cpu")
    assert stored.species_names == ("a", "b", "c") and stored.attrs["maps"][2:] == ["species_a", "species_b",
                                                                                    "species_c"]
    assert np.abs(stored.species.compute().astype(int) - expect).max() <= 1
    again = predict(tmp_path / "v.mrc", ckpt, out=tmp_path / "p.zarr", chunks=16, device="cpu")
    assert again.chunks_computed == 0 and again.chunks_skipped > 0  # complete and verified: reused
    np.testing.assert_array_equal(again.species.compute(), stored.species.compute())
    # a damaged species chunk is found by verification and recomputed, never used
    chunk = next(p for p in (tmp_path / "p.zarr" / "species_b").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    repaired = predict(tmp_path / "v.mrc", ckpt, out=tmp_path / "p.zarr", chunks=16, device="cpu")
    assert repaired.chunks_repaired == 1
    np.testing.assert_array_equal(repaired.species.compute(), stored.species.compute())


def test_shipped_models_by_name(capsys, tmp_path, monkeypatch):
    from cryodet_dask.cli import main
    from cryodet_dask.errors import CheckpointError
    from cryodet_dask.prediction import SHIPPED_MODELS, resolve_models, shipped_models

    listed = {m["name"]: m for m in shipped_models()}
    assert "twohead" in listed and listed["twohead"]["species"] == ["particle"]
    assert listed["general"]["species"] == ["particle"] and listed["general"]["voxel_size"] == 10.0
    assert "caution" in listed["general"]["figures"]  # its real-data weakness is listed with it
    assert listed["six-species"]["species"] == ["4v4r", "4cr2", "3j9i", "1bxn", "7n4y", "6pxm"]
    assert [s.path for s in resolve_models("twohead")] == [s.path for s in resolve_models(None)]
    assert len(resolve_models("pair")) == 2
    assert main(["models"]) == 0
    assert "twohead" in capsys.readouterr().out
    monkeypatch.setitem(SHIPPED_MODELS, "missing-model", (("nothing.pt",), "not shipped"))
    with pytest.raises(CheckpointError, match="not installed"):
        resolve_models("missing-model")
    monkeypatch.chdir(tmp_path)  # a file of that name wins over the shipped name
    with pytest.raises(CheckpointError):
        (tmp_path / "twohead").write_bytes(b"not a checkpoint")
        resolve_models("twohead")


# --------------------------------------------------------------------------- outputs


def test_export_writes_species_columns_class_numbers_and_species_label_images(tmp_path):

    import starfile
    import zarr

    from cryodet_dask.exports import export
    from cryodet_dask.io import load

    m, c, _ = blob_maps((20, 28, 28), 10, radius=(2.0, 4.0), seed=5)
    s = _species_map(ndi.label(m > 0.1)[0], 3, 4, noise=0.3)
    det = postprocess(da.from_array(m, chunks=10), da.from_array(c, chunks=10),
                      species=da.from_array(s, chunks=(3, 10, 10, 10)), species_names=["ribo", "prot", "rbc"], **KW)
    files = export(det, tmp_path, "tomo", voxel_size=10.0, formats=("mrc", "zarr", "csv", "star"))
    assert {"species_mrc", "species_zarr"} <= set(files)
    labels = load(files["mrc"]).data.compute()
    species = load(files["species_mrc"]).data.compute()
    lut = np.concatenate([[0], det.species + 1])
    np.testing.assert_array_equal(species, lut[labels])
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(files["species_zarr"]))["0"]), species)
    ome = dict(zarr.open_group(str(files["species_zarr"])).attrs["ome"])
    assert [p["species"] for p in ome["image-label"]["properties"]] == ["ribo", "prot", "rbc"]
    csv = pd_read(files["csv"])
    assert list(csv["class"]) == [["ribo", "prot", "rbc"][k] for k in det.species]
    star = starfile.read(files["star"])
    assert list(star["rlnClassNumber"]) == list(det.species + 1)


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


def test_detect_with_a_multi_species_model_end_to_end(tmp_path):
    import json

    import pandas as pd

    from cryodet_dask.cli import main
    from cryodet_dask.io import load

    from cryodet_dask.testing import tiny_species_setup

    ckpt, _ = tiny_species_setup(tmp_path, ["ribo", "prot"])
    base = ["-q", "detect", str(tmp_path / "t.mrc"), "-m", str(ckpt), "--cluster", "threads", "--device", "cpu",
            "-ps", "16", "-mt", "0", "-ct", "0", "-rs", "0", "--min-particle-size", "0", "--min-score", "0",
            "--center-min-distance", "0", "--engine", "torch"]
    # a species the model does not know, or a species filter for a species-agnostic model: one line, nothing written
    assert main([*base, "-o", str(tmp_path / "bad"), "--species", "ribo,rubisco"]) == 2
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    assert main([*base[:3], "-o", str(tmp_path / "bad2"), "--species", "ribo", "--cluster", "threads"]) == 2
    assert main([*base, "-o", str(tmp_path / "all")]) == 0
    out = tmp_path / "all"
    table = pd.read_csv(out / "t_centers.csv")
    assert len(table) > 0 and set(table["class"]) <= {"ribo", "prot"}
    labels = load(out / "t_labels.mrc").data.compute()
    species = load(out / "t_species.mrc").data.compute()
    code = {"ribo": 1, "prot": 2}
    for pid, cls in zip(table["id"], table["class"]):
        assert set(np.unique(species[labels == pid])) == {code[cls]}
    assert json.loads((out / "t_run.json").read_text())["species"] == {"1": "ribo", "2": "prot"}
    assert main([*base, "-o", str(tmp_path / "one"), "--species", "prot"]) == 0
    kept = pd.read_csv(tmp_path / "one" / "t_centers.csv")
    assert set(kept["class"]) <= {"prot"} and len(kept) == int((table["class"] == "prot").sum())


def test_cli_evaluate_prints_per_species_scores_and_the_confusion(tmp_path, capsys):
    import json

    import pandas as pd

    from cryodet_dask.cli import main

    truth = pd.DataFrame({"id": [1, 2, 3, 4], "x": 0.0, "y": 0.0, "z": [0.0, 20, 40, 60],
                          "class": ["a", "a", "b", "b"]})
    pred = pd.DataFrame({"id": [1, 2, 3, 4], "x": 0.0, "y": 0.0, "z": [1.0, 21, 41, 80],
                         "class": ["a", "b", "b", "a"], "score": 0.5})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    pred.to_csv(tmp_path / "pred.csv", index=False)
    assert main(["evaluate", str(tmp_path / "pred.csv"), str(tmp_path / "truth.csv"), "--radius", "3",
                 "--voxel-size", "10", "--confusion", str(tmp_path / "c.png"), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "per species" in out and "confusion" in out
    r = json.loads((tmp_path / "r.json").read_text())
    per = {row["species"]: row for row in r["species"]}
    assert (per["a"]["tp"], per["a"]["fp"], per["a"]["fn"]) == (1, 1, 1)
    assert r["confusion"]["b"]["a"] == 1  # a true 'a' picked as 'b'
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_frozen_backbone_keeps_the_particles_of_the_start_network(tmp_path):
    from cryodet_dask.errors import ParameterError as PE
    from cryodet_dask.training import train

    torch.set_num_threads(1)
    img, lab, kinds = _two_species()
    kw = dict(channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2, steps_per_epoch=4,
              validation_batches=1, validation_fraction=0.34, learning_rate=3e-3, seed=0, progress=False)
    start = tmp_path / "agnostic.pt"
    train(img, lab, start, heads=("mask", "center"), epochs=1, **kw)
    del kw["channels"], kw["convs_per_level"]
    out = tmp_path / "frozen.pt"
    train(img, lab, out, init=start, species=["small", "big"], replace_species=True, particle_species=[kinds],
          freeze_backbone=True, species_convs=1, epochs=2, **kw)
    a, b = load(start), load(out)
    assert b.config.species_convs == 1 and b.config.halo == a.config.halo + 1
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(b(x)[:, :2], a(x)[:, :2], rtol=0, atol=0)  # exactly the start's maps
    changed = [k for k, v in b.state_dict().items() if k in a.state_dict() and not torch.equal(v, a.state_dict()[k])]
    assert changed == []  # nothing but the (new) species branch and head moved
    with pytest.raises(PE, match="multi-species"):
        train(img, lab, tmp_path / "x.pt", init=start, freeze_backbone=True, epochs=1, **kw)


def test_the_balanced_species_loss_by_hand_and_in_training(tmp_path):
    from cryodet_dask.training import SPECIES_LOSSES, species_cross_entropy, train
    from cryodet_dask.cli import build_parser

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6)
    code = torch.randint(-1, 2, (2, 4, 5, 6))  # species 0 and 1 present, species 2 absent, -1 background
    per_voxel = torch.nn.functional.cross_entropy(logits, code.clamp(min=0), reduction="none")
    by_species = [float(per_voxel[code == c].mean()) for c in (0, 1)]
    assert abs(float(species_cross_entropy(logits, code, balanced=True)) - np.mean(by_species)) < 1e-5
    assert abs(float(species_cross_entropy(logits, code, balanced=False)) - float(per_voxel[code >= 0].mean())) < 1e-5
    # one species present: both averagings are its mean
    one = torch.where(code >= 0, 1, -1)
    torch.testing.assert_close(species_cross_entropy(logits, one, True), species_cross_entropy(logits, one, False))
    # the command line offers exactly the configuration's choices
    action = next(a for sp in build_parser()._subparsers._group_actions for name, p in sp.choices.items()
                  if name == "train" for a in p._actions if a.dest == "species_loss")
    assert tuple(action.choices) == SPECIES_LOSSES and action.default == "voxel"

    torch.set_num_threads(1)
    img, lab, kinds = _two_species()
    kw = dict(channels=(4, 8), convs_per_level=(1, 1), patch_size=16, batch_size=2, steps_per_epoch=3,
              validation_batches=2, validation_fraction=0.34, learning_rate=3e-3, seed=0, progress=False, epochs=1)
    train(img, lab, tmp_path / "b.pt", species=["small", "big"], particle_species=[kinds], species_loss="balanced",
          **kw)
    rec = load(tmp_path / "b.pt").config.training
    assert rec["settings"]["species_loss"] == "balanced" and "each species present weighing the same" in rec["losses"]
    with pytest.raises(ParameterError, match="multi-species"):  # a species-agnostic network has no species loss
        train(img, lab, tmp_path / "a.pt", species_loss="balanced", **kw)
    with pytest.raises(ParameterError, match="species_loss"):
        train(img, lab, tmp_path / "a.pt", species_loss="median", **kw)
