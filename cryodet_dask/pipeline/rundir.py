"""The names of a run folder's files, in one place.

``detect`` writes, for a tomogram named NAME, into its output folder::

    NAME.zarr               the converted tomogram (intermediate)
    NAME_rescaled.zarr      the tomogram on the weights' grid (intermediate, --rescale)
    NAME_prediction.zarr    the predicted mask and centre maps (intermediate, resumable)
    NAME_labels.mrc         instance labels (MRC)
    NAME_labels.zarr        instance labels (OME-Zarr label image)
    NAME_centers.txt/.csv/.star   particle centres
    NAME_run.json           this tomogram's run record
    run.json                the folder's last run record
    .cryodet.lock           held while a run writes into the folder

Everything that needs one of these paths asks a :class:`RunDirectory`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunDirectory", "OUTPUT_SUFFIX", "RUN_SUFFIX", "LAST_RUN", "LOCK_NAME"]

#: File name of each output format, after the name.
OUTPUT_SUFFIX = {"mrc": "_labels.mrc", "zarr": "_labels.zarr", "txt": "_centers.txt", "csv": "_centers.csv",
                 "star": "_centers.star"}
#: A tomogram's run record, after the name.
RUN_SUFFIX = "_run.json"
#: The folder's last run record.
LAST_RUN = "run.json"
#: The advisory lock of a folder a run writes into.
LOCK_NAME = ".cryodet.lock"


@dataclass(frozen=True)
class RunDirectory:
    """The files of tomogram ``name``'s run in ``folder``."""

    folder: Path
    name: str

    @classmethod
    def of(cls, folder: str | os.PathLike[str], name: str) -> RunDirectory:
        return cls(Path(folder), name)

    @property
    def converted(self) -> Path:
        return self.folder / f"{self.name}.zarr"

    @property
    def rescaled(self) -> Path:
        return self.folder / f"{self.name}_rescaled.zarr"

    @property
    def prediction(self) -> Path:
        return self.folder / f"{self.name}_prediction.zarr"

    def output(self, fmt: str) -> Path:
        """The final output of format ``fmt`` (one of :data:`OUTPUT_SUFFIX`)."""
        return self.folder / f"{self.name}{OUTPUT_SUFFIX[fmt]}"

    def outputs(self, formats: tuple[str, ...] | list[str] | None = None) -> list[Path]:
        """The final outputs of ``formats`` (default: every format), in :data:`OUTPUT_SUFFIX` order."""
        return [self.output(f) for f in OUTPUT_SUFFIX if formats is None or f in formats]

    @property
    def record(self) -> Path:
        """This tomogram's run record."""
        return self.folder / f"{self.name}{RUN_SUFFIX}"

    @property
    def last_run(self) -> Path:
        """The folder's last run record (any tomogram)."""
        return self.folder / LAST_RUN

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_NAME

    def finals(self) -> list[Path]:
        """Every file a complete run leaves, intermediates included (what an interrupted one may have left
        half-written under a temporary name)."""
        return [self.converted, self.rescaled, *self.outputs(), self.record, self.last_run]
