"""Block tasks read their own blocks of stored maps (``block_ref``): nothing but tables crosses between workers,
and the results are those of the whole-volume reference."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from cryodet_dask._progress import block_ref, block_summaries
from cryodet_dask.postprocessing import postprocess, postprocess_reference
from cryodet_dask.postprocessing._synthetic import blob_maps

PARAMS = {"mask_threshold": 0.1, "center_threshold": 0.1, "remove_min_size": 64, "center_min_distance": 4.0,
          "min_particle_size": 0, "min_score": 0.0}


def _stored(tmp_path, name, a, chunks):
    z = zarr.create_array(str(tmp_path / f"{name}.zarr"), shape=a.shape, dtype=a.dtype, chunks=chunks)
    z[...] = a
    return z


def test_a_stored_block_is_read_inline_and_anything_else_is_a_key(tmp_path):
    a = np.arange(24 * 24 * 24, dtype=np.float32).reshape(24, 24, 24)
    stored = da.from_array(_stored(tmp_path, "a", a, (8, 8, 8)), chunks=(8, 8, 8))
    ref = block_ref(stored, (1, 0, 2))
    assert not isinstance(ref, tuple)  # the read itself, run inside the task that uses it
    assert ref.dependencies == {f"original-{stored.name}"}
    derived = stored + 1  # a computation stays a task of its own: computed once, whoever needs it
    assert block_ref(derived, (1, 0, 2)) == (derived.name, 1, 0, 2)
    rechunked = stored.rechunk(12)
    assert block_ref(rechunked, (1, 0, 1)) == (rechunked.name, 1, 0, 1)
    # both kinds give the block's values
    sums = block_summaries(lambda x, y: float(x.sum() + y.sum()), [stored, derived])
    expect = [float(2 * a[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8, k * 8:(k + 1) * 8].sum() + 512)
              for i in range(3) for j in range(3) for k in range(3)]
    assert sums == expect


def test_distributed_post_processing_moves_no_map_block_between_workers(tmp_path):
    distributed = pytest.importorskip("distributed")
    mask, center, _ = blob_maps((48, 64, 64), 40, seed=5)
    m = da.from_array(_stored(tmp_path, "mask", mask, (24, 32, 32)), chunks=(24, 32, 32))
    c = da.from_array(_stored(tmp_path, "center", center, (24, 32, 32)), chunks=(24, 32, 32))
    ref = postprocess_reference(mask, center, **PARAMS)

    def moved(dask_worker):
        return [str(k) for e in dask_worker.transfer_incoming_log for k in e["keys"]]

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        det = postprocess(m, c, **PARAMS)
        labels = det.labels.compute()
        keys = [k for ks in client.run(moved).values() for k in ks]
    assert np.array_equal(labels, ref.labels) and np.array_equal(det.centers, ref.centers)
    assert len(ref.centers) > 10
    blocks = [k for k in keys if k.startswith((f"('{m.name}'", f"('{c.name}'"))]  # the array handles may move
    assert keys and not blocks, blocks
