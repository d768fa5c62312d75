"""Run the stages one by one on a LocalCluster, keeping everything lazy until it is needed.

    python examples/stages_with_dask.py [OUT_DIR]
"""

import sys
import tempfile
from pathlib import Path

from distributed import Client, LocalCluster

import cryodet_dask as cd

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())

if __name__ == "__main__":
    cd.simulate(out / "sim", shape=(48, 128, 128), seed=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        zarr_path = cd.convert(out / "sim" / "tomogram.mrc", out / "tomogram.zarr", chunks=64)
        tomo = cd.load(zarr_path)                               # lazy, chunked 64³
        print("tomogram", tomo.shape, "voxel size", tomo.voxel_size, "Å")

        pred = cd.predict(tomo, out=out / "pred.zarr", chunks=64, device="cpu")
        print("prediction chunks", pred.plan.chunk_shape, "halo", pred.plan.halo)

        det = cd.postprocess(pred.mask, pred.center, mask_threshold=0.1, check_center=True)
        print(f"{len(det.centers)} particles; labels are lazy: {det.labels}")

        # composes with other dask code: voxels per label, computed on the cluster
        foreground = int((det.labels > 0).sum().compute())
        print("foreground voxels", foreground, "=", int(det.n_voxels.sum()))

        files = cd.export(det, out / "results", "tomogram", voxel_size=tomo.voxel_size)
        print("wrote", ", ".join(p.name for p in files.values()))
