"""pipeline.params: a DetectParams is valid from construction on (issue 16), with the API's names."""

from __future__ import annotations

import pytest

import cryodet_dask.pipeline
from cryodet_dask.errors import ParameterError
from cryodet_dask.pipeline.params import DetectParams


@pytest.mark.parametrize("kwargs, message", [
    ({"mask_threshold": 2.0}, "mask_threshold"),
    ({"formats": ("csv", "stra")}, "formats must be among"),
    ({"chunks": (0,)}, "chunks must be one or three whole numbers"),
    ({"voxel_size": float("inf")}, "voxel size"),
    ({"polarity": "inverted"}, "polarity"),
    ({"nan_policy": "ignore"}, "nan_policy"),
    ({"tomogram_name": "TS 01"}, "rlnTomoName"),
    ({"rescale": "false"}, "rescale must be true or false"),
    ({"particle_diameter": -5.0}, "diameter"),
])
def test_bad_values_fail_when_the_parameters_are_made(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        DetectParams(**kwargs)


def test_one_class_for_the_api_and_the_pipeline():
    assert cryodet_dask.pipeline.DetectParams is DetectParams
    p = DetectParams.from_dict({"chunks": [64], "formats": ["csv"]})
    assert p.chunks == (64,) and p.formats == ("csv",) and DetectParams.from_dict(p.to_dict()) == p


def test_the_cli_offers_the_librarys_choices():
    """The CLI spells some choices out (importing the library at ``--help`` would load torch and dask):
    they must stay the library's."""
    import argparse

    from cryodet_dask.cli import build_parser
    from cryodet_dask.cli._flags import FLAGS, NETWORK_FLAGS
    from cryodet_dask.models import POLARITIES
    from cryodet_dask.prediction import ENGINE_CHOICES
    from cryodet_dask.training import CENTER_TARGETS

    flags = {f.name: f for f in (*FLAGS, *NETWORK_FLAGS)}
    for name, allowed in [("engine", ENGINE_CHOICES), ("polarity", POLARITIES)]:
        flag = flags[name]
        assert set(flag.metavar.strip("{}").split(",")) == set(allowed), name
        assert [flag.parse(v) for v in allowed] == list(allowed)
        assert DetectParams(**{name: allowed[-1]}).to_dict()[name] == allowed[-1]
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    (target,) = [a for a in train._actions if a.dest == "center_target"]
    assert isinstance(target, argparse.Action) and tuple(target.choices) == CENTER_TARGETS
