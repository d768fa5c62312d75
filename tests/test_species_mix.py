"""Species in varied proportions: ``simulate`` abundance and ``simulate-pool --species-mix varied``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryodet_dask.errors import ParameterError
from cryodet_dask.simulation import SimulationConfig, simulate
from cryodet_dask.training import PoolRanges, draw_conditions


def test_an_equal_mix_draws_what_older_pools_drew_and_a_varied_one_adds_proportions():
    for i in range(6):
        equal = draw_conditions(1000, i)
        assert "abundance" not in equal
        assert equal == draw_conditions(1000, i, PoolRanges(species_mix="equal"))
        varied = draw_conditions(1000, i, PoolRanges(species_mix="varied"))
        assert {k: v for k, v in varied.items() if k != "abundance"} == equal  # nothing else moves
        w = np.asarray(varied["abundance"])
        assert len(w) == len(equal["templates"]) and abs(w.sum() - 1) < 1e-3 and w.min() >= 0.019
    spreads = [np.ptp(draw_conditions(7, i, PoolRanges(species_mix="varied"))["abundance"]) for i in range(20)]
    assert max(spreads) > 0.3  # proportions really vary between tomograms
    with pytest.raises(ParameterError, match="species mix"):
        PoolRanges(species_mix="random")


def test_abundance_sets_the_proportions_of_the_species(tmp_path):
    res = simulate(tmp_path / "a", shape=(48, 96, 96), seed=3, n_particles=24, n_membranes=0,
                   templates=("1bxn", "6pxm"), abundance=(1.0, 0.0))
    table = pd.read_csv(res.paths["particles"])
    assert len(table) > 10 and set(table["class"]) == {"1bxn"}
    with pytest.raises(ParameterError, match="abundance"):
        SimulationConfig(templates=("1bxn", "6pxm"), abundance=(1.0,))
    with pytest.raises(ParameterError, match="abundance"):
        SimulationConfig(templates=("1bxn", "6pxm"), abundance=(0.0, 0.0))


def test_cli_abundance_is_checked_before_any_work(tmp_path, capsys):
    from cryodet_dask.cli import main

    assert main(["simulate", str(tmp_path / "s"), "--templates", "1bxn,6pxm", "--abundance", "1,2,3"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_template_scale_renders_particles_larger_and_pools_draw_it_per_tomogram(tmp_path):
    from cryodet_dask.io import load

    sizes = {}
    for scale in (1.0, 1.6):
        res = simulate(tmp_path / str(scale), shape=(48, 96, 96), seed=5, n_particles=6, n_membranes=0,
                       templates=("1bxn",), template_scale=(scale,))
        labels = load(res.paths["labels"]).data.compute()
        counts = np.bincount(labels.ravel())[1:]
        sizes[scale] = float(np.median(counts[counts > 0]))
    assert 1.6 ** 3 * 0.7 < sizes[1.6] / sizes[1.0] < 1.6 ** 3 * 1.3  # volume grows as the cube
    cond = draw_conditions(1000, 0, PoolRanges(size_range=(0.6, 1.8)))
    base = draw_conditions(1000, 0)
    assert {k: v for k, v in cond.items() if k != "template_scale"} == base
    assert len(cond["template_scale"]) == len(base["templates"])
    assert all(0.6 <= s <= 1.8 for s in cond["template_scale"])
    with pytest.raises(ParameterError, match="size range"):
        PoolRanges(size_range=(0.05, 2.0))
    with pytest.raises(ParameterError, match="template scale"):
        SimulationConfig(templates=("1bxn",), template_scale=(20.0,))


def test_a_pool_made_by_several_processes_is_the_pool_made_by_one(tmp_path):
    import filecmp
    import json

    from cryodet_dask.training import simulate_pool

    ranges = PoolRanges(density=(0.05, 0.05), species_mix="varied", size_range=(0.8, 1.2))
    one = simulate_pool(tmp_path / "one", 3, seed=4, shape=(24, 48, 48), ranges=ranges)
    two = simulate_pool(tmp_path / "two", 3, seed=4, shape=(24, 48, 48), ranges=ranges, workers=2)
    for a, b in zip(one, two):
        for f in ("tomogram", "labels", "center"):
            assert filecmp.cmp(getattr(a, f), getattr(b, f), shallow=False)
    manifest = lambda p: json.loads((p / "pool.json").read_text())["members"]  # noqa: E731
    assert manifest(tmp_path / "one") == manifest(tmp_path / "two")
    assert all("abundance" in m["conditions"] and "template_scale" in m["conditions"]
               for m in manifest(tmp_path / "two"))
    with pytest.raises(ParameterError, match="workers"):
        simulate_pool(tmp_path / "x", 1, workers=0)
