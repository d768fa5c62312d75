"""Tomogram input and output: MRC and (OME-)Zarr, lazily and chunk by chunk."""

from __future__ import annotations

from ._atomic import atomic_output, partial_path, remove_path
from ._convert import conversion_reusable, convert
from ._integrity import (INTEGRITY_ATTRS, WRITE_CONFIG, CheckedArray, chunk_digest, content_identity, has_checksum,
                         open_for_write, source_identity, verify_array)
from ._load import Tomogram, load, open_zarr_image
from ._mrc import MRC_SUFFIXES, SUPPORTED_MODES, MrcHeaderInfo, MrcVolume, read_mrc_header
from ._mrc_write import write_mrc
from ._readers import ArrayReader, lazy_array
from ._zarr import (CODECS, DEFAULT_CODEC, create_image_group, make_compressor, normalize_chunks, ome_multiscales,
                    stored_codecs, write_blocks)

__all__ = [
    "ArrayReader",
    "CheckedArray",
    "conversion_reusable",
    "source_identity",
    "verify_array",
    "lazy_array",
    "CODECS",
    "DEFAULT_CODEC",
    "MRC_SUFFIXES",
    "SUPPORTED_MODES",
    "MrcHeaderInfo",
    "MrcVolume",
    "Tomogram",
    "atomic_output",
    "convert",
    "create_image_group",
    "make_compressor",
    "load",
    "normalize_chunks",
    "ome_multiscales",
    "open_zarr_image",
    "partial_path",
    "read_mrc_header",
    "write_blocks",
    "write_mrc",
    "remove_path",
    "INTEGRITY_ATTRS",
    "WRITE_CONFIG",
    "chunk_digest",
    "content_identity",
    "has_checksum",
    "open_for_write",
    "stored_codecs",
]
