"""The resumable prediction store: what identifies it (the fingerprint), the per-chunk markers that an
interrupted run leaves, the verification of every chunk before reuse, and the repair of damaged ones.

A stored prediction is a Zarr group with the arrays :data:`~._models.HEADS`; while it is written it is
``.<name>.partial`` with a marker ``.done/<z.y.x>`` per finished chunk (the digests of its values), and
when complete the markers' digests move into its ``cryodet`` attributes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr

from ..io import INTEGRITY_ATTRS, WRITE_CONFIG, has_checksum, partial_path, stored_codecs, verify_array
from ._engine import ModelSpec
from ._models import HEADS, file_sha256, species_names, store_maps
from ._tiling import ChunkPlan

__all__ = ["MAPS_CODEC", "store_fingerprint", "existing_complete", "verify_complete", "reopen_for_repair",
           "read_attrs", "resume_stats", "write_marker", "open_partial", "seal_store"]

log = logging.getLogger("cryodet_dask")

#: The maps are stored uncompressed (the crc32c checksum stays): network outputs carry noise in every
#: mantissa bit and do not compress (1.00x with LZ4 + bit-shuffle on the shipped network's maps), and
#: uncompressed chunks read 1.7-3.8x and write 1.5-1.8x faster (README, Performance: post-processing).
MAPS_CODEC = "none"


def store_fingerprint(ident: str, plan: ChunkPlan, specs: Sequence[ModelSpec], dtype: str, polarity: str,
                      tta: str, engine: str, bf16: bool) -> dict[str, Any]:
    """What a stored prediction is recognized by: its input, grid, networks and numerics."""
    return {
        "input": ident,
        "shape": list(plan.shape),
        "chunks": list(plan.chunk_shape),
        "halo": list(plan.halo),
        "models": [file_sha256(s.path) for s in specs],
        "dtype": dtype,
        "polarity": polarity,
        "tta": tta,
        # another engine's maps differ by float rounding: a store is never resumed with the other engine
        "engine": engine,
        # bf16 maps differ from fp32 ones: a store is never resumed in the other precision
        "bf16": bf16,
    }


def maps_of(attrs: dict[str, Any] | None) -> tuple[str, ...]:
    """The maps a store holds (its attributes' ``maps``; :data:`HEADS` for stores written before species)."""
    maps = (attrs or {}).get("maps")
    return tuple(str(m) for m in maps) if isinstance(maps, list) and maps else HEADS


def _key(idx: Sequence[int]) -> str:
    return ".".join(str(int(i)) for i in idx)


def _parse_key(name: str) -> tuple[int, ...] | None:
    try:
        idx = tuple(int(v) for v in name.split("."))
    except ValueError:
        return None
    return idx if len(idx) == 3 else None


def _read_markers(store: Path) -> dict[tuple[int, ...], dict[str, int] | None]:
    """Finished chunks of a partial store and the digests their markers record (``None``: no digest)."""
    done: dict[tuple[int, ...], dict[str, int] | None] = {}
    folder = store / ".done"
    if not folder.is_dir():
        return done
    maps = maps_of(read_attrs(store))
    for p in folder.iterdir():
        idx = _parse_key(p.name)
        if idx is None:  # a marker being written (".<key>.tmp") when the run was killed
            continue
        try:
            digests = json.loads(p.read_text() or "null")
        except (OSError, ValueError):
            digests = None
        ok = isinstance(digests, dict) and all(isinstance(digests.get(h), int) for h in maps)
        done[idx] = digests if ok else None
    return done


def _verify_chunks(store: Path, done: dict[tuple[int, ...], dict[str, int] | None]) -> dict[tuple[int, ...], str] | None:
    """Chunks of ``done`` that fail verification in ``store``, with the reason; ``None`` if the arrays are unusable.

    A chunk passes if, in both maps, its file exists, decodes (the ``crc32c``
    codec's checksum matches) and the decoded values have the digest its
    marker recorded when it was written.
    """
    try:
        group = zarr.open_group(str(store), mode="r")
        maps = maps_of(read_attrs(store))
        arrays = {h: group[h] for h in maps}
    except Exception:  # noqa: BLE001 - unreadable metadata: the whole store is damaged
        return None
    if not all(isinstance(a, zarr.Array) and has_checksum(a) for a in arrays.values()):
        return None
    bad: dict[tuple[int, ...], str] = {}
    for h in maps:
        digests = {idx: d[h] for idx, d in done.items() if d is not None}
        # every entry was checked to be a zarr.Array above
        checked = verify_array(cast("zarr.Array[Any]", arrays[h]), list(done), digests=digests, threads=True)
        for idx, reason in checked.items():
            bad.setdefault(idx, f"{h} {reason}")
    return bad


def verify_complete(out: Path, attrs: dict[str, Any]) -> dict[tuple[int, ...], str] | None:
    """Verify every chunk of a complete store against the digests recorded in its attributes."""
    recorded = attrs.get("chunk_digests")
    if not isinstance(recorded, dict):
        return None  # written without digests (an older cryodet-dask)
    done: dict[tuple[int, ...], dict[str, int] | None] = {}
    maps = maps_of(attrs)
    for k, v in recorded.items():
        idx = _parse_key(k)
        if idx is not None:
            done[idx] = dict(zip(maps, v)) if isinstance(v, list) and len(v) == len(maps) else None
    bad = _verify_chunks(out, done)
    if bad is None:
        return None
    grid = _grid_of(out)
    if grid is not None:  # chunks with no recorded digest at all
        for idx in itertools.product(*(range(n) for n in grid)):
            if idx not in done:
                bad[idx] = "no recorded digest"
    return bad


def _grid_of(store: Path) -> tuple[int, ...] | None:
    try:
        # a head is an array in the stores written here; a group lacks .shape and lands in except
        arr = cast("zarr.Array[Any]", zarr.open_group(str(store), mode="r")[HEADS[0]])
        return tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks))
    except Exception:  # noqa: BLE001
        return None


def _remove_chunks(store: Path, indices: Sequence[tuple[int, ...]]) -> None:
    """Delete the chunk files of ``indices`` in both maps (they are about to be recomputed)."""
    try:
        group = zarr.open_group(str(store), mode="r")
        for h in maps_of(read_attrs(store)):
            # a head is an array in the stores written here; a group lacks .metadata.encode_chunk_key
            # and lands in except
            arr = cast("zarr.Array[Any]", group[h])
            for idx in indices:
                key = arr.metadata.encode_chunk_key(tuple(idx))
                path = store / h / key
                if path.is_file():
                    path.unlink()
    except Exception:  # noqa: BLE001 - they are overwritten anyway
        pass


def _describe(bad: dict[tuple[int, ...], str]) -> str:
    first = next(iter(sorted(bad.items())))
    return f"{len(bad)} chunk(s) failed verification (first: chunk {_key(first[0])}, {first[1]})"


def reopen_for_repair(out: Path, plan: ChunkPlan, attrs: dict[str, Any],
                       bad: dict[tuple[int, ...], str] | None) -> int:
    """Turn a complete store with damaged chunks back into a resumable one; return how many chunks to recompute."""
    tmp = partial_path(out)
    if tmp.exists():
        shutil.rmtree(tmp)  # stale: the complete store for these parameters supersedes it
    total = int(np.prod(plan.grid))
    if bad is None:
        reason = ("written without chunk digests (by an older cryodet-dask)" if "chunk_digests" not in attrs
                  else "its arrays cannot be read")
        log.warning("%s is %s: predicting all %d chunks again", out, reason, total)
        shutil.rmtree(out)
        return total
    log.warning("%s: %s: recomputing them", out, _describe(bad))
    os.replace(out, tmp)
    _remove_chunks(tmp, list(bad))
    (tmp / ".done").mkdir(exist_ok=True)
    for k, v in attrs.get("chunk_digests", {}).items():
        idx = _parse_key(k)
        if idx is not None and idx not in bad:
            (tmp / ".done" / k).write_text(json.dumps(dict(zip(maps_of(attrs), v))))
    group = zarr.open_group(str(tmp), mode="r+")
    new = {k: v for k, v in attrs.items() if k != "chunk_digests"}
    new["complete"] = False
    group.attrs["cryodet"] = new
    return len(bad)


def read_attrs(store: Path) -> dict[str, Any] | None:
    try:
        # the "cryodet" attribute is a JSON object; anything else fails in dict() and lands in except
        return dict(cast(dict[str, Any], zarr.open_group(str(store), mode="r").attrs.get("cryodet", {})))
    except Exception:
        return None


def existing_complete(out: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """Attributes of ``out`` if it is a complete prediction for this fingerprint."""
    if not out.exists():
        return None
    attrs = read_attrs(out)
    if attrs and attrs.get("fingerprint") == fingerprint and attrs.get("complete"):
        return attrs
    return None


def resume_stats(partial: Path, fingerprint: dict[str, Any]) -> tuple[float, float] | None:
    attrs = read_attrs(partial) if partial.exists() else None
    if attrs and attrs.get("fingerprint") == fingerprint:
        return float(attrs["mean"]), float(attrs["std"])
    return None


def write_marker(store: str | os.PathLike[str], idx: Sequence[int], digests: dict[str, int]) -> None:
    """Mark chunk ``idx`` of the partial store done, with the digests of what its maps hold (written
    only after both maps are written; checked before any reuse)."""
    marker = Path(store) / ".done" / ".".join(map(str, idx))
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps(digests))
    os.replace(tmp, marker)


def open_partial(out: Path, plan: ChunkPlan, fingerprint: dict[str, Any], mean: float, std: float,
                 specs: Sequence[ModelSpec], voxel_size: float | None, dtype: str, *, repaired: int = 0,
                 verified: bool = False) -> tuple[Path, dict[tuple[int, ...], dict[str, int] | None], int]:
    """The partial store of ``out`` to write into: ``(its path, the chunks already done, repaired)``.

    An interrupted run's store for this fingerprint is resumed (every finished chunk verified first
    unless ``verified``, failures removed and counted in ``repaired``); anything else is replaced by a
    new, empty store.
    """
    tmp = partial_path(out)
    attrs = read_attrs(tmp) if tmp.exists() else None
    done: dict[tuple[int, ...], dict[str, int] | None] = {}
    if attrs is not None and attrs.get("fingerprint") == fingerprint:
        done = _read_markers(tmp)
        if done and not verified:  # every finished chunk is checked before it is reused
            bad = _verify_chunks(tmp, done)
            if bad is None:
                log.warning("%s: the interrupted prediction's arrays cannot be read: starting it again", out)
                repaired += len(done)
                attrs, done = None, {}
            elif bad:
                log.warning("%s: %s in the interrupted prediction: recomputing them", out, _describe(bad))
                _remove_chunks(tmp, list(bad))
                for idx in bad:
                    (tmp / ".done" / _key(idx)).unlink(missing_ok=True)
                    done.pop(idx, None)
                repaired += len(bad)
    elif tmp.exists() and attrs is None and (tmp / ".done").is_dir() and any((tmp / ".done").iterdir()):
        log.warning("%s: the interrupted prediction's metadata cannot be read: starting it again", out)
        repaired += sum(1 for p in (tmp / ".done").iterdir() if _parse_key(p.name) is not None)
    if attrs is None or attrs.get("fingerprint") != fingerprint:
        if tmp.exists():
            shutil.rmtree(tmp)  # stale, damaged, or from other inputs/parameters
        group = zarr.open_group(str(tmp), mode="w")
        for h in store_maps(specs):  # species maps: probabilities quantized to uint8 (postprocessing.quantize_species)
            dt = dtype if h in HEADS else "uint8"
            group.create_array(h, shape=plan.shape, chunks=plan.chunk_shape, dtype=dt, fill_value=0,
                               compressors=stored_codecs(MAPS_CODEC, np.dtype(dt)) or None,
                               dimension_names=("z", "y", "x"), config=WRITE_CONFIG)
        attrs = {
            "fingerprint": fingerprint,
            "mean": mean,
            "std": std,
            "voxel_size": voxel_size,
            "halo": list(plan.halo),
            "chunks": list(plan.chunk_shape),
            "pool_factor": plan.pool_factor,
            "models": [{"path": s.path, "heads": list(s.heads), "receptive_field": s.receptive_field}
                       for s in specs],
            "integrity": dict(INTEGRITY_ATTRS),
            "complete": False,
            "maps": list(store_maps(specs)),
            "species": list(species_names(specs)),
        }
        group.attrs["cryodet"] = attrs
        (tmp / ".done").mkdir()
        done = {}
    return tmp, done, repaired


def seal_store(out: Path, tmp: Path, plan: ChunkPlan) -> dict[str, Any]:
    """Complete the partial store ``tmp`` (every chunk marked: the markers' digests move into its
    attributes) and move it to ``out``; return its attributes."""
    markers = _read_markers(tmp)
    missing = [idx for idx in plan.indices() if markers.get(idx) is None]
    if missing:  # a task finished without marking its chunk: never call such a store complete
        raise RuntimeError(f"{out}: chunks {missing[:3]} have no marker after prediction")
    group = zarr.open_group(str(tmp), mode="r+")
    attrs = dict(cast(dict[str, Any], group.attrs["cryodet"]))  # the JSON object this run wrote
    attrs["complete"] = True
    attrs["chunk_digests"] = {_key(idx): [markers[idx][h] for h in maps_of(attrs)]  # type: ignore[index]
                              for idx in sorted(markers)}
    group.attrs["cryodet"] = attrs
    shutil.rmtree(tmp / ".done")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return attrs
