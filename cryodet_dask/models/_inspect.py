"""A checkpoint's configuration, checked, for the process that plans a run: without PyTorch when it can."""

from __future__ import annotations

import os

from ._archive import check_payload, check_state_dict, config_of, read_archive
from ._config import UNetConfig

__all__ = ["inspect_checkpoint"]


def inspect_checkpoint(path: str | os.PathLike[str]) -> UNetConfig:
    """The configuration of the checkpoint at ``path``, checked as :func:`~cryodet_dask.models.load`
    checks it (a readable, undamaged cryodet-dask checkpoint whose weights fit its architecture), without
    loading the weights and, for any file ``torch.save`` wrote with plain data, without importing PyTorch."""
    payload = read_archive(path)
    if payload is None:
        from ._checkpoint import read_checkpoint  # imports PyTorch

        payload = read_checkpoint(path)
    payload = check_payload(path, payload)
    config = config_of(path, payload)
    check_state_dict(config, payload["state_dict"], path)
    return config
