"""pipeline.params: a DetectParams is valid from construction on (issue 16), with the API's names."""

from __future__ import annotations

import pytest

from cryodet_dask.detection import DetectParams as FromShim
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
    assert FromShim is DetectParams
    p = DetectParams.from_dict({"chunks": [64], "formats": ["csv"]})
    assert p.chunks == (64,) and p.formats == ("csv",) and DetectParams.from_dict(p.to_dict()) == p
