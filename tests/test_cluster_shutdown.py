"""A local cluster goes down quietly after a completed run: no "Worker process still alive after 4.0 seconds,
killing" (a worker slow to stop is given :data:`~cryodet_dask.cluster.WORKER_STOP_TIMEOUT`), and no raw
``distributed`` warning or traceback on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from cryodet_dask.testing import make_mrc

#: What distributed's loggers print (its own format: "2026-... - distributed.nanny - WARNING - ...").
RAW = ("still alive after", " - distributed.", " - tornado.", "Traceback", "distributed.nanny", "CommClosedError")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _raw_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if any(r in line for r in RAW)]


def test_detect_on_a_local_cluster_ends_without_distributed_warnings(tmp_path, net):
    rng = np.random.default_rng(0)
    src = make_mrc(tmp_path / "t.mrc", rng.normal(size=(32, 48, 48)).astype(np.float32), voxel_size=10.0)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "cryodet_dask", "detect", str(src), "-o", str(out), "-m", str(net),
                        "--cluster", "local", "--workers", "2", "--chunks", "48", "--formats", "csv"],
                       capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "t_centers.csv").exists()
    assert _raw_lines(r.stderr) == [], r.stderr


def test_a_worker_slow_to_stop_is_waited_for_not_killed(tmp_path):
    """A worker whose shutdown takes 6 s (a plugin's teardown; torch or OpenVINO on a busy machine can
    take as long) is waited for: distributed alone kills it after 4 s with a warning."""
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import logging, sys, time

        from distributed import WorkerPlugin


        class SlowStop(WorkerPlugin):
            name = "slow-stop"

            def teardown(self, worker):
                time.sleep(6)


        if __name__ == "__main__":
            logging.basicConfig(level=logging.INFO, stream=sys.stderr)
            from cryodet_dask.cluster import ClusterConfig, open_client

            with open_client(ClusterConfig(kind="local", n_workers=2, dashboard=False)) as client:
                client.register_plugin(SlowStop())
                assert sum(client.gather(client.map(abs, range(4)))) == 6
            print("closed", file=sys.stderr)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=_env(),
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "closed"
    assert [line for line in r.stderr.splitlines() if "still alive" in line or "WARNING" in line] == [], r.stderr
