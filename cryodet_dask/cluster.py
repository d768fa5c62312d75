"""Choosing where the Dask work runs: one way for the CLI and the Python API.

``--cluster local`` (default)  a :class:`distributed.LocalCluster` sized to the machine
``--scheduler-address``        an existing cluster (``tcp://host:8786``)
``--scheduler-file``           an existing cluster started with ``--scheduler-file``
``--cluster slurm|pbs|lsf|sge`` a dask-jobqueue cluster from the user's ``jobqueue.yaml``
``--cluster local-cuda``       dask-cuda's ``LocalCUDACluster`` (one worker per GPU)
``--cluster threads``          no distributed scheduler: Dask's threads in this process

Set ``CRYODET_SLURM_NO_GRES=1`` to leave out the ``--gres=gpu:N`` directive
(a SLURM without GPU gres, as in the CI test that still gives the workers the
``GPU`` resource).

GPU workers are started with the Dask resource ``GPU=1``; inference tasks
require it when any worker has it, so a mixed cluster sends the networks to
the GPUs and everything else to every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError

__all__ = ["ClusterConfig", "add_cluster_arguments", "cluster_from_args", "open_client", "local_cluster_size"]

log = logging.getLogger("cryodet_dask")

JOBQUEUE = ("slurm", "pbs", "lsf", "sge")
KINDS = ("local", "threads", "local-cuda", *JOBQUEUE)


@dataclass(frozen=True)
class ClusterConfig:
    """How to obtain a Dask client (see module docstring)."""

    kind: str = "local"
    scheduler_address: str | None = None
    scheduler_file: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | None = None
    jobs: int = 1
    gpus_per_job: int = 0
    queue: str | None = None
    walltime: str | None = None
    adapt: tuple[int, int] | None = None
    dashboard: bool = True


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def local_cluster_size(n_workers: int | None = None, threads_per_worker: int = 1,
                       memory_limit: str | None = None) -> dict[str, Any]:
    """LocalCluster arguments sized to this machine: one single-threaded worker per core, memory shared."""
    import psutil

    cores = _cores()
    n = n_workers or max(1, cores // max(threads_per_worker, 1))
    if memory_limit is None:
        memory_limit = f"{int(psutil.virtual_memory().total * 0.8 / n / 2**20)}MiB"
    return dict(n_workers=n, threads_per_worker=threads_per_worker, memory_limit=memory_limit)


def _jobqueue_cluster(cfg: ClusterConfig) -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:  # pragma: no cover - dependency
        raise ParameterError("--cluster slurm/pbs/lsf/sge needs dask-jobqueue (pip install dask-jobqueue)") from exc
    cls = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster", "sge": "SGECluster"}[cfg.kind]
    kwargs: dict[str, Any] = {"scheduler_options": {"dashboard_address": ":0"}}
    if cfg.queue:
        kwargs["queue"] = cfg.queue
    if cfg.walltime:
        kwargs["walltime"] = cfg.walltime
    if cfg.gpus_per_job:
        kwargs["worker_extra_args"] = [f"--resources GPU={cfg.gpus_per_job}"]
        if cfg.kind == "slurm" and not os.environ.get("CRYODET_SLURM_NO_GRES"):
            kwargs["job_extra_directives"] = [f"--gres=gpu:{cfg.gpus_per_job}"]
    cluster = getattr(dask_jobqueue, cls)(**kwargs)
    if cfg.adapt:
        cluster.adapt(minimum_jobs=cfg.adapt[0], maximum_jobs=cfg.adapt[1])
    else:
        cluster.scale(jobs=cfg.jobs)
    return cluster


@contextlib.contextmanager
def open_client(cfg: ClusterConfig | None = None) -> Iterator[Any]:
    """Context manager: a :class:`distributed.Client` for ``cfg`` (``None`` for ``kind="threads"``).

    If a client is already the default (the caller made one), it is used as it is.
    """
    cfg = cfg or ClusterConfig()
    from distributed import Client

    from ._progress import current_client

    existing = current_client()
    if existing is not None and cfg.scheduler_address is None and cfg.scheduler_file is None:
        yield existing
        return
    if cfg.scheduler_address or cfg.scheduler_file:
        client = Client(address=cfg.scheduler_address, scheduler_file=cfg.scheduler_file)
        try:
            _announce(client)
            yield client
        finally:
            client.close()
        return
    if cfg.kind == "threads":
        yield None
        return
    if cfg.kind == "local":
        import dask
        from distributed import LocalCluster

        from .postprocessing import WORKER_ENV

        size = local_cluster_size(cfg.n_workers, cfg.threads_per_worker, cfg.memory_limit)
        env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()}
        with dask.config.set(env):
            cluster = LocalCluster(processes=True, dashboard_address=":0" if cfg.dashboard else None, **size)
    elif cfg.kind == "local-cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise ParameterError("--cluster local-cuda needs dask-cuda (pip install dask-cuda)") from exc
        cluster = LocalCUDACluster(resources={"GPU": 1})
    elif cfg.kind in JOBQUEUE:
        cluster = _jobqueue_cluster(cfg)
    else:
        raise ParameterError(f"unknown cluster kind {cfg.kind!r}; choose one of {', '.join(KINDS)}")
    client = Client(cluster)
    try:
        _announce(client)
        yield client
    finally:
        client.close()
        cluster.close()


def _announce(client: Any) -> None:
    link = getattr(client, "dashboard_link", None)
    n = len(client.scheduler_info().get("workers", {}))
    log.info("Dask: %d workers; dashboard %s", n, link)
    if link:
        print(f"[cryodet-dask] Dask dashboard: {link}", file=sys.stderr, flush=True)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster options shared by every subcommand that computes."""
    g = parser.add_argument_group("cluster (where the work runs)")
    g.add_argument("--cluster", choices=KINDS, default="local",
                   help="local: LocalCluster sized to this machine (default); threads: no distributed "
                   "scheduler; slurm/pbs/lsf/sge: dask-jobqueue from your jobqueue.yaml; local-cuda: "
                   "one worker per GPU (dask-cuda)")
    g.add_argument("--scheduler-address", default=None, metavar="URL",
                   help="connect to a running scheduler, e.g. tcp://10.0.0.1:8786")
    g.add_argument("--scheduler-file", default=None, metavar="JSON", help="connect via a scheduler file")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster workers (default: one per core)")
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="N", help="(default: 1)")
    g.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="memory per LocalCluster worker, e.g. 4GiB (default: 80%% of RAM shared)")
    g.add_argument("--jobs", type=int, default=1, metavar="N", help="jobqueue: worker jobs to submit (default: 1)")
    g.add_argument("--gpus-per-job", type=int, default=0, metavar="N",
                   help="jobqueue: GPUs per job; workers get the Dask resource GPU=N (default: 0)")
    g.add_argument("--queue", default=None, help="jobqueue: queue/partition")
    g.add_argument("--walltime", default=None, metavar="HH:MM:SS", help="jobqueue: walltime per job")
    g.add_argument("--adapt", default=None, metavar="MIN,MAX", help="jobqueue: adaptive scaling between MIN and MAX jobs")


def config_from_args(args: argparse.Namespace) -> ClusterConfig:
    adapt = None
    if getattr(args, "adapt", None):
        try:
            lo, hi = (int(v) for v in args.adapt.split(","))
        except ValueError:
            raise ParameterError(f"--adapt takes MIN,MAX job counts, got {args.adapt!r}") from None
        adapt = (lo, hi)
    return ClusterConfig(
        kind=args.cluster,
        scheduler_address=args.scheduler_address,
        scheduler_file=args.scheduler_file,
        n_workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit,
        jobs=args.jobs,
        gpus_per_job=args.gpus_per_job,
        queue=args.queue,
        walltime=args.walltime,
        adapt=adapt,
    )


@contextlib.contextmanager
def cluster_from_args(args: argparse.Namespace) -> Iterator[Any]:
    """:func:`open_client` for parsed command-line options."""
    with open_client(config_from_args(args)) as client:
        yield client
