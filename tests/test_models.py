"""Tests of cryodet_dask.models: shapes, receptive field, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryodet_dask.errors import CheckpointError, ParameterError
from cryodet_dask.species import SpeciesTable
from cryodet_dask.models import (
    UNet3D,
    UNetConfig,
    default_weights,
    load,
    predict_array,
    receptive_extent,
    receptive_field,
    save,
    widen,
)

torch.set_num_threads(1)

TINY = UNetConfig(channels=(4, 6, 8), convs_per_level=(1, 1, 2))


def test_seed_architecture_parameter_count():
    # the seed's SegNet: 902,961 parameters
    net = UNet3D(UNetConfig())
    assert sum(p.numel() for p in net.parameters()) == 902_961
    assert UNetConfig().pool_factor == 4


def test_two_head_adds_one_output_channel_only():
    seg = sum(p.numel() for p in UNet3D(UNetConfig()).parameters())
    two = sum(p.numel() for p in UNet3D(UNetConfig(heads=("mask", "center"))).parameters())
    assert two - seg == 32 + 1


@pytest.mark.parametrize("heads", [("mask",), ("center",), ("mask", "center")])
def test_forward_shape_and_activation_ranges(heads):
    torch.manual_seed(0)
    net = UNet3D(TINY.replace(heads=list(heads))).eval()
    x = torch.randn(2, 1, 8, 12, 16)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, len(heads), 8, 12, 16)
    for i, h in enumerate(heads):
        if h == "mask":
            assert float(y[:, i].min()) >= 0 and float(y[:, i].max()) <= 1
        else:
            assert float(y[:, i].min()) >= 0


def test_input_not_multiple_of_pool_factor_is_refused():
    net = UNet3D(TINY)
    with pytest.raises(ParameterError, match="multiples of 4"):
        net(torch.zeros(1, 1, 8, 10, 8))


def test_config_validation_and_round_trip():
    cfg = UNetConfig(channels=(8, 16, 24, 32), convs_per_level=(1, 2, 2, 3), heads=("center",), voxel_size=13.5,
                     training={"data": "x"})
    assert cfg.pool_factor == 8 and cfg.depth == 3
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ParameterError):
        UNetConfig(heads=("bogus",))
    with pytest.raises(ParameterError):
        UNetConfig(channels=(8, 16), convs_per_level=(1, 2, 3))
    with pytest.raises(ParameterError):
        UNetConfig(architecture="resnet")


def _positive_net(cfg: UNetConfig) -> UNet3D:
    """A network whose every path is active (positive weights and biases), in float64."""
    net = UNet3D(cfg).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand_like(p) * 0.1 + 0.01)
    return net


@pytest.mark.parametrize("cfg", [
    UNetConfig(channels=(2, 2, 2), convs_per_level=(2, 2, 4)),  # seed layout, narrow
    UNetConfig(channels=(2, 2), convs_per_level=(1, 3)),
    UNetConfig(channels=(2, 2, 2, 2), convs_per_level=(1, 1, 2, 1)),
])
def test_receptive_field_matches_impulse_response(cfg):
    # With positive weights and biases every ReLU is active, and a large impulse at input position p
    # raises every value it reaches (through max pooling too), so output o changes iff o depends on p.
    before, after = receptive_extent(cfg)
    n = 2 * (before + after + 1) + 4 * cfg.pool_factor
    n -= n % cfg.pool_factor
    net = _positive_net(cfg).eval()
    p = cfg.pool_factor
    x = torch.zeros(n + 1, 1, n, p, p, dtype=torch.float64)
    for i in range(n):
        x[i + 1, 0, i, :, :] = 1e3  # batch 0 is the baseline
    with torch.no_grad():
        y = net.logits(x)[:, 0, :, 0, 0]
    dep = (y[1:] != y[0]).numpy()  # dep[p, o]: output o changed by an impulse at p
    seen_before = seen_after = 0
    for o in range(n // 2 - p, n // 2 + p):
        ps = np.nonzero(dep[:, o])[0]
        seen_before = max(seen_before, o - int(ps.min()))
        seen_after = max(seen_after, int(ps.max()) - o)
    assert (seen_before, seen_after) == (before, after)
    assert receptive_field(cfg) == before + after + 1 == cfg.receptive_field


def test_seed_receptive_field_value():
    # documented in docs/models.md; halo = max one-sided extent
    assert receptive_field(UNetConfig()) == 66
    assert UNetConfig().halo == 34


def test_output_is_shift_equivariant_by_pool_factor():
    torch.manual_seed(1)
    net = UNet3D(TINY).eval()
    x = torch.randn(1, 1, 48, 8, 8)
    with torch.no_grad():
        y = net(x)
        y2 = net(x[:, :, 4:])
    # away from the borders (by the receptive field), shifting the input by 4 shifts the output by 4
    h = TINY.halo + 4
    assert torch.allclose(y[0, 0, 4 + h:48 - h], y2[0, 0, h:44 - h], atol=1e-6)


def test_checkpoint_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(3)
    cfg = TINY.replace(heads=["mask", "center"], voxel_size=10.0, training={"data": "synthetic"})
    net = UNet3D(cfg).eval()
    path = save(net, tmp_path / "net.pt")
    back = load(path)
    assert not back.training
    assert back.config == cfg and back.config.training == {"data": "synthetic"}
    x = torch.randn(1, 1, 8, 8, 12)
    with torch.no_grad():
        assert torch.equal(net(x), back(x))
    load(path, expect_heads=("center",))
    with pytest.raises(CheckpointError, match="predicts"):
        load(save(UNet3D(TINY), tmp_path / "seg.pt"), expect_heads=("center",))


def _inspect(path):
    from cryodet_dask.models import inspect_checkpoint

    return inspect_checkpoint(path)


@pytest.mark.parametrize("reader", [load, _inspect], ids=["load", "inspect_checkpoint"])
def test_bad_checkpoints_give_clear_errors(tmp_path, reader):
    """``load`` and the torch-free ``inspect_checkpoint`` refuse the same files with the same lines."""
    with pytest.raises(CheckpointError, match="not found"):
        reader(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable network checkpoint"):
        reader(tmp_path / "garbage.pt")
    good = save(UNet3D(TINY), tmp_path / "good.pt")
    assert _inspect(good) == load(good).config
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        reader(tmp_path / "truncated.pt")
    # weights of another architecture under a config that does not match them
    payload = torch.load(good, weights_only=True)
    payload["config"]["channels"] = [5, 6, 8]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        reader(tmp_path / "mismatch.pt")
    # a stored configuration for a huge network is refused before any memory is allocated for it
    import tracemalloc

    payload["config"]["channels"] = [512, 1024, 2048]  # ~ 2.4 G parameters, ~ 10 GB as float32
    torch.save(payload, tmp_path / "huge.pt")
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        reader(tmp_path / "huge.pt")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    import resource

    assert peak < 50 * 2**20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20  # KiB: the process never held 4 GiB
    payload["config"]["channels"] = [5, 6, 8]
    payload["config"]["architecture"] = "transformer"
    torch.save(payload, tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match="unsupported network configuration"):
        reader(tmp_path / "arch.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a cryodet-dask network checkpoint"):
        reader(tmp_path / "foreign.pt")


@pytest.mark.parametrize("reader", [load, _inspect], ids=["load", "inspect_checkpoint"])
def test_loading_never_unpickles_code(tmp_path, reader):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"format": "cryodet-dask-checkpoint", "config": {}, "state_dict": {}, "x": Evil()},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        reader(tmp_path / "evil.pt")


def test_inspect_checkpoint_finds_a_damaged_weight(tmp_path):
    """One byte of a weight changed inside the archive: its CRC-32 no longer matches."""
    import struct
    import zipfile

    good = save(UNet3D(TINY), tmp_path / "good.pt")
    data = good.read_bytes()
    with zipfile.ZipFile(good) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 16)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the local header's own lengths (torch pads it)
    damaged = bytearray(data)
    damaged[start + 5] ^= 0xFF
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="corrupt"):
        _inspect(tmp_path / "damaged.pt")


def test_predict_array_pads_and_crops():
    torch.manual_seed(0)
    net = UNet3D(TINY.replace(heads=["mask", "center"])).eval()
    rng = np.random.default_rng(0)
    vol = rng.normal(5.0, 2.0, size=(9, 13, 16)).astype(np.float32)
    out = predict_array(net, vol, polarity="as-is")
    assert out.shape == (2, 9, 13, 16) and out.dtype == np.float32
    # identical to a manual forward of the normalized, end-padded volume
    x = (vol - vol.mean(dtype=np.float64)) / vol.std(dtype=np.float64)
    x = np.pad(x.astype(np.float32), [(0, 3), (0, 3), (0, 0)])
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[None, None])[0].numpy()[:, :9, :13, :16]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # global normalization: an affine change of the input leaves the output unchanged
    np.testing.assert_allclose(predict_array(net, vol * 3 + 7, polarity="as-is"), out, atol=1e-4)
    # polarity "both" (the default): the mean over the volume and its inverted contrast, the same for either
    assert np.array_equal(predict_array(net, vol), out)  # as-is is the default
    both = predict_array(net, vol, polarity="both")
    flipped = predict_array(net, -vol, polarity="as-is")
    np.testing.assert_allclose(both, 0.5 * (out + flipped), atol=1e-5)
    np.testing.assert_allclose(predict_array(net, -vol, polarity="both"), both, atol=1e-5)


def test_default_weights_load_and_are_small():
    w = default_weights()
    shipped = [p for p in w if p is not None]
    assert shipped, "no demo weights shipped"
    for p in shipped:
        assert p.stat().st_size < 3 * 2**20
        net = load(p)
        assert net.config.voxel_size == pytest.approx(10.0)
    if w.segnet is not None:
        assert load(w.segnet).config.heads == ("mask",)
    if w.centernet is not None:
        assert load(w.centernet).config.heads == ("center",)
    if w.twohead is not None:
        assert load(w.twohead).config.heads == ("mask", "center")


def test_heads_activations_and_smoothing_run_in_float32_under_autocast():
    import torch

    from cryodet_dask.models import UNet3D, UNetConfig

    torch.manual_seed(0)
    net = UNet3D(UNetConfig(channels=(4, 8), convs_per_level=(1, 1), heads=("mask", "center"),
                            center_smoothing=1.0)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
            feats = net.features(x)
        assert feats.dtype == torch.bfloat16  # the body did run in bfloat16
        assert y.dtype == torch.float32
        # the head, activation and smoothing on those bfloat16 features, all in float32: identical
        expect = net.activate(net.head(feats.float()))
        r = net.config.smoothing_radius
        from cryodet_dask.models._unet import _gaussian_smooth

        expect = torch.cat([expect[:, :1], _gaussian_smooth(expect[:, 1:], 1.0, r)], dim=1)
    torch.testing.assert_close(y, expect, rtol=0, atol=0)
    # and close to the float32 pass (the body's rounding only)
    assert float((y - ref).abs().max()) < 0.1


@pytest.mark.parametrize("heads", [("mask",), ("mask", "center")])
def test_widen_computes_the_same_function(heads):
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(channels=(4, 6, 8), convs_per_level=(2, 1, 2), heads=heads)).eval()
    wide = widen(net, (7, 6, 13), seed=3).eval()
    assert wide.config.channels == (7, 6, 13) and wide.config.heads == heads
    assert wide.config.convs_per_level == net.config.convs_per_level
    x = torch.randn(2, 1, 16, 20, 12)
    with torch.no_grad():
        a, b = net(x), wide(x)
    assert float(a.abs().max()) > 0.1
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_widened_copies_get_different_gradients():
    # equal split factors would keep a channel and its copy identical through training
    torch.manual_seed(1)
    net = UNet3D(UNetConfig(channels=(2, 4), convs_per_level=(1, 1)))
    wide = widen(net, (4, 4), seed=0)
    first = wide.encoders[0][0]
    w = first.weight.detach()
    copies = [(i, j) for i in range(2) for j in range(2, 4) if torch.equal(w[i], w[j])]
    assert copies, "an added channel copies an old one"
    wide(torch.randn(1, 1, 8, 8, 8)).sum().backward()
    g = first.weight.grad
    assert g is not None
    assert all(not torch.allclose(g[i], g[j]) for i, j in copies)


def test_widen_refuses_narrower_or_other_depth():
    net = UNet3D(UNetConfig(channels=(4, 6, 8), convs_per_level=(1, 1, 1)))
    for bad in [(3, 6, 8), (4, 6), (4, 6, 8, 8)]:
        with pytest.raises(ParameterError, match="widen"):
            widen(net, bad)


@pytest.mark.parametrize("cfg", [
    UNetConfig(),
    TINY.replace(heads=["mask", "center"]),
    UNetConfig(channels=(6, 8, 10, 12), convs_per_level=(2, 1, 3, 2), heads=("mask", "center", "species"),
               species=SpeciesTable.of(["a", "b", "c"]), species_convs=0),
    UNetConfig(channels=(6, 8, 10), heads=("mask", "center", "species"), species=SpeciesTable.of(["a", "b"]),
               species_convs=2, in_channels=2),
])
def test_parameter_shapes_are_the_networks(cfg):
    """The torch-free description of the weights (what checkpoints are checked against) is the network's."""
    with torch.device("meta"):
        net = {k: tuple(v.shape) for k, v in UNet3D(cfg).state_dict().items()}
    assert cfg.parameter_shapes() == net


def test_inspect_checkpoint_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom cryodet_dask.models import default_weights, inspect_checkpoint\n"
            "c = inspect_checkpoint(default_weights().twohead)\nprint(c.heads, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "('mask', 'center') False"
