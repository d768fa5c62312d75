"""The cost of species: a multi-species network's forward pass and the post-processing with a species map,
each against the species-agnostic two-head network on the same input (ratios, same process, interleaved).

* Network: multiply-accumulates per output voxel (counted from the convolutions' shapes, exact) and the
  wall time of ``models.predict_array`` on one tomogram, shipped two-head network against the same
  network with a six-species branch of ``--species-convs`` 3³ convolutions (random species weights:
  the cost does not depend on them).
* Post-processing: ``postprocess`` with default parameters on the two-head network's maps of a simulated
  tomogram, without and with a six-species map (uint8), synchronous scheduler, best of ``--repeats``.

    python benchmarks/bench_species_cost.py [--shape 96,256,256] [--repeats 3] [--species-convs 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import dask
import dask.array as da
import numpy as np
import torch

from cryodet_dask import models
from cryodet_dask.postprocessing import postprocess, quantize_species
from cryodet_dask.prediction import resolve_models
from cryodet_dask.species import SpeciesTable

SPECIES = ("4v4r", "4cr2", "3j9i", "1bxn", "7n4y", "6pxm")


def macs_per_voxel(net: models.UNet3D) -> float:
    """Multiply-accumulates of all convolutions per input voxel (a 2× pooling level counts 1/8 per voxel)."""
    total = 0.0
    scale = {}
    x = torch.zeros(1, 1, 16, 16, 16)
    hooks = []

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        k = int(np.prod(mod.kernel_size))  # type: ignore[attr-defined]
        scale[id(mod)] = out.shape[2] * out.shape[3] * out.shape[4] * k * mod.in_channels * mod.out_channels  # type: ignore[attr-defined]

    for m in net.modules():
        if isinstance(m, torch.nn.Conv3d):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    total = float(sum(scale.values()))
    return total / 16**3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="96,256,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--species-convs", type=int, default=2)
    a = ap.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(","))
    torch.set_num_threads(1)
    base = models.load(resolve_models("twohead")[0].path)
    cfg = base.config.replace(heads=["mask", "center", "species"], species=SpeciesTable.of(SPECIES).to_list(),
                              species_convs=a.species_convs)
    torch.manual_seed(0)
    multi = models.UNet3D(cfg)
    state = multi.state_dict()
    state.update({k: v for k, v in base.state_dict().items()})
    multi.load_state_dict(state)
    multi.eval()
    m0, m1 = macs_per_voxel(base), macs_per_voxel(multi)
    print(f"MACs per voxel: two-head {m0:,.0f}, six species ({a.species_convs} convs) {m1:,.0f}: {m1 / m0:.3f}x")

    from cryodet_dask.simulation import simulate_arrays

    sim = simulate_arrays(shape=shape, seed=11)
    vol = np.asarray(sim.tomogram, dtype=np.float32)
    times: dict[str, list[float]] = {"two-head": [], "six-species": []}
    outs = {}
    for _ in range(a.repeats):  # interleaved, so that load from elsewhere hits both alike
        for name, net in (("two-head", base), ("six-species", multi)):
            t = time.perf_counter()
            outs[name] = models.predict_array(net, vol)
            times[name].append(time.perf_counter() - t)
    t0, t1 = min(times["two-head"]), min(times["six-species"])
    print(f"forward pass on {shape}, 1 thread, best of {a.repeats}: two-head {t0:.1f} s, six species {t1:.1f} s: "
          f"{t1 / t0:.3f}x")
    y = outs["six-species"]
    mask, center = y[multi.head_index("mask")], y[multi.head_index("center")]
    species = quantize_species(y[multi.head_index("species"):])
    pp: dict[str, list[float]] = {"agnostic": [], "species": []}
    with dask.config.set(scheduler="synchronous"):
        for _ in range(a.repeats):
            for name in pp:
                t = time.perf_counter()
                det = postprocess(da.from_array(mask, chunks=64), da.from_array(center, chunks=64),
                                  species=None if name == "agnostic" else da.from_array(species, chunks=(6, 64, 64, 64)),
                                  species_names=() if name == "agnostic" else SPECIES)
                det.labels.compute()
                pp[name].append(time.perf_counter() - t)
    p0, p1 = min(pp["agnostic"]), min(pp["species"])
    n = float(np.prod(shape))
    print(f"post-processing, default parameters, {len(det.centers)} particles, synchronous, best of {a.repeats}: "
          f"agnostic {n / p0 / 1e6:.1f} M voxels/s, with the species map {n / p1 / 1e6:.1f} M voxels/s "
          f"(throughput ratio {p0 / p1:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
