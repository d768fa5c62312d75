"""Tomogram input and output: MRC and (OME-)Zarr, lazily and chunk by chunk.

The names are imported on first use: :data:`CODECS` comes without zarr or dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._atomic import atomic_output, partial_path, remove_path
    from ._codecs import CODECS, DEFAULT_CODEC
    from ._convert import conversion_reusable, convert, stored_statistics
    from ._integrity import (INTEGRITY_ATTRS, WRITE_CONFIG, CheckedArray, chunk_digest, content_identity,
                             has_checksum, open_for_write, source_identity, verify_array)
    from ._load import Tomogram, load, open_zarr_image
    from ._moments import MOMENTS_FIELDS, Moments, block_moments, combine_moments, moments_array
    from ._mrc import MRC_SUFFIXES, SUPPORTED_MODES, MrcHeaderInfo, MrcVolume, read_mrc_header
    from ._mrc_write import PendingMRC, pending_mrc, write_mrc
    from ._readers import ArrayReader, lazy_array
    from ._zarr import (create_image_group, make_compressor, normalize_chunks, ome_multiscales, stored_codecs,
                        write_blocks)

__all__ = [
    "ArrayReader",
    "CheckedArray",
    "conversion_reusable",
    "stored_statistics",
    "Moments",
    "block_moments",
    "combine_moments",
    "moments_array",
    "MOMENTS_FIELDS",
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
    "pending_mrc",
    "PendingMRC",
    "remove_path",
    "INTEGRITY_ATTRS",
    "WRITE_CONFIG",
    "chunk_digest",
    "content_identity",
    "has_checksum",
    "open_for_write",
    "stored_codecs",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, {
        "._atomic": ("atomic_output", "partial_path", "remove_path"),
        "._codecs": ("CODECS", "DEFAULT_CODEC"),
        "._convert": ("conversion_reusable", "convert", "stored_statistics"),
        "._integrity": ("INTEGRITY_ATTRS", "WRITE_CONFIG", "CheckedArray", "chunk_digest", "content_identity",
                        "has_checksum", "open_for_write", "source_identity", "verify_array"),
        "._load": ("Tomogram", "load", "open_zarr_image"),
        "._moments": ("MOMENTS_FIELDS", "Moments", "block_moments", "combine_moments", "moments_array"),
        "._mrc": ("MRC_SUFFIXES", "SUPPORTED_MODES", "MrcHeaderInfo", "MrcVolume", "read_mrc_header"),
        "._mrc_write": ("PendingMRC", "pending_mrc", "write_mrc"),
        "._readers": ("ArrayReader", "lazy_array"),
        "._zarr": ("create_image_group", "make_compressor", "normalize_chunks", "ome_multiscales", "stored_codecs",
                   "write_blocks"),
    })
