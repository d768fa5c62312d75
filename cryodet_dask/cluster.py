"""Choosing where the Dask work runs: one way for the CLI and the Python API.

``--cluster local`` (default)  a :class:`distributed.LocalCluster` sized to the machine
``--scheduler-address``        an existing cluster (``tcp://host:8786``)
``--scheduler-file``           an existing cluster started with ``--scheduler-file``
``--cluster slurm|pbs|lsf|sge`` a dask-jobqueue cluster from the user's ``jobqueue.yaml``
``--cluster local-cuda``       one worker per GPU running :data:`GPU_TASKS` prediction tasks at once,
                               plus single-threaded CPU-only workers on the other cores
``--cluster threads``          no distributed scheduler: Dask's threads in this process

Set ``CRYODET_SLURM_NO_GRES=1`` to leave out the ``--gres=gpu:N`` directive
(a SLURM without GPU gres, as in the CI test that still gives the workers the
``GPU`` resource).

GPU workers carry the Dask resource ``GPU`` (one unit per prediction task it may
run at once); inference tasks require one unit when any worker has it, so a
mixed cluster sends the networks to the GPUs and everything else to every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ClusterError, CryodetError, ParameterError

__all__ = ["GPU_TASKS", "WORKER_ENV", "WORKER_STOP_TIMEOUT", "ClusterConfig", "add_cluster_arguments",
           "cluster_from_args", "open_client", "local_cluster_size", "local_cuda_workers"]

log = logging.getLogger("cryodet_dask")

#: Environment recommended for Dask worker processes (the post-processing's block tasks are what it helps):
#: distributed sets ``MALLOC_TRIM_THRESHOLD_``, which also freezes glibc's mmap threshold
#: at 128 KiB, so every block-sized temporary array becomes a fresh ``mmap`` paid for in
#: page faults.  Raising the threshold to glibc's maximum (32 MiB) cut the workers' minor
#: page faults 3.4x and their CPU time by 30 % in ``benchmarks/bench_postprocess.py``.
#: The trim threshold (64 KiB) also hands every freed block back to the kernel, so the next block-sized
#: array page-faults again: ``MALLOC_TOP_PAD_`` keeps 64 MiB at the top of the heap when it trims, which
#: took the workers' minor page faults from 250k to 3k per run and the post-processing's wall time down
#: 21 % (``benchmarks/bench_postprocess_real.py``); distributed's trim still returns anything above that.
#: Pass it as ``distributed.nanny.pre-spawn-environ`` (see ``cryodet-dask postprocess --workers``); batch-system
#: workers get it exported by their job script.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TOP_PAD_": str(64 * 2**20)}

#: Seconds a local worker process gets to stop by itself at shutdown before its nanny kills it.  distributed
#: gives it 4 s (``Nanny.close(timeout=5)``) and then logs "Worker process still alive after 4.0 seconds,
#: killing": on a busy machine a worker that ran torch or OpenVINO can take longer than that to exit.
WORKER_STOP_TIMEOUT = 30.0

#: Prediction tasks in flight per GPU under ``--cluster local-cuda``: while one runs its forward pass the
#: others read, normalize and write their tiles.  On one H200, 4 tasks in flight gave 3.5x the
#: prediction throughput of 1 (../shared/gpu check, README "Performance").
GPU_TASKS = 4

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
    worker_timeout: float | None = None
    #: bytes one task needs (a prediction tile): the default LocalCluster then starts fewer workers
    #: rather than workers too small for it
    task_memory: int | None = None

    def __post_init__(self) -> None:
        """Refuse what would hang or crash the cluster later (``n_workers=0``, ``memory_limit="banana"``)."""
        if self.kind not in KINDS:
            raise ParameterError(f"unknown cluster kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name, low in (("n_workers", 1), ("threads_per_worker", 1), ("jobs", 1), ("gpus_per_job", 0)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ParameterError(f"{name} must be a whole number >= {low}, got {v!r}")
        if self.memory_limit is not None:
            parse_memory_limit(self.memory_limit)
        if self.worker_timeout is not None and not (self.worker_timeout > 0 and math.isfinite(self.worker_timeout)):
            raise ParameterError(f"worker_timeout must be a positive number of seconds, got {self.worker_timeout!r}")
        if self.adapt is not None and not (1 <= self.adapt[0] <= self.adapt[1]):
            raise ParameterError(f"adapt takes MIN,MAX job counts with 1 <= MIN <= MAX, got {self.adapt!r}")

    @property
    def wait_for_workers(self) -> float:
        """Seconds a run waits while the cluster has no worker: 120, or 1 h for a batch queue."""
        if self.worker_timeout is not None:
            return self.worker_timeout
        return 3600.0 if self.kind in JOBQUEUE else 120.0


def parse_memory_limit(text: str) -> str:
    """``4GiB``, ``500MB``, ``2e9`` -> the same text, checked: a byte size Dask understands, at least 64 MiB."""
    from dask.utils import parse_bytes

    try:
        n = parse_bytes(str(text))
    except (ValueError, TypeError):
        raise ParameterError(f"--memory-limit must be a size such as 4GiB or 500MB, got {text!r}") from None
    if n < 64 * 2**20:
        raise ParameterError(f"--memory-limit {text} is below 64 MiB, too little for a Dask worker")
    return str(text)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def local_cluster_size(n_workers: int | None = None, threads_per_worker: int = 1,
                       memory_limit: str | None = None, task_memory: int | None = None) -> dict[str, Any]:
    """LocalCluster arguments sized to this machine: one single-threaded worker per core, 80 % of the
    memory shared among them.

    With ``task_memory`` (bytes one task needs) and neither ``n_workers`` nor ``memory_limit`` given,
    fewer workers are started when a core's share would be too small for one task.
    """
    import psutil

    cores = _cores()
    n = n_workers or max(1, cores // max(threads_per_worker, 1))
    if memory_limit is None:
        usable = psutil.virtual_memory().total * 0.8
        if task_memory and n_workers is None and usable / n < task_memory:
            fit = max(1, int(usable // task_memory))
            if fit < n:
                log.info("starting %d worker(s), not %d: one prediction task needs about %.1f GiB", fit, n,
                         task_memory / 2**30)
                n = fit
        memory_limit = f"{int(usable / n / 2**20)}MiB"
    return dict(n_workers=n, threads_per_worker=threads_per_worker, memory_limit=memory_limit)


def local_cuda_workers(n_gpus: int, n_workers: int | None = None, memory_limit: str | None = None,
                       cores: int | None = None, total_memory: int | None = None) -> dict[str, dict[str, Any]]:
    """Worker specs for ``--cluster local-cuda``: name -> Nanny options.

    One worker per GPU (``CUDA_VISIBLE_DEVICES`` set to it) with :data:`GPU_TASKS` threads and as many
    units of the ``GPU`` resource, and ``n_workers`` single-threaded CPU-only workers (default: one per
    core left after one core per GPU) for conversion, statistics, post-processing and export.  Memory:
    ``memory_limit`` per thread, default 80 % of ``total_memory`` shared per thread.
    """
    import psutil

    if n_gpus < 1:
        raise ParameterError("--cluster local-cuda needs a CUDA GPU, and torch sees none")
    cores = cores or _cores()
    n_cpu = n_workers if n_workers is not None else max(1, cores - n_gpus)
    if memory_limit is None:
        usable = (total_memory or psutil.virtual_memory().total) * 0.8
        memory_limit = f"{int(usable / (n_cpu + n_gpus * GPU_TASKS) / 2**20)}MiB"
    per_thread = parse_memory_limit(memory_limit)
    from dask.utils import format_bytes, parse_bytes

    gpu_memory = format_bytes(parse_bytes(per_thread) * GPU_TASKS).replace(" ", "")
    workers: dict[str, dict[str, Any]] = {}
    for g in range(n_gpus):
        workers[f"gpu-{g}"] = {"nthreads": GPU_TASKS, "resources": {"GPU": GPU_TASKS}, "memory_limit": gpu_memory,
                               "env": {**WORKER_ENV, "CUDA_VISIBLE_DEVICES": str(g)}}
    for i in range(n_cpu):
        workers[f"cpu-{i}"] = {"nthreads": 1, "memory_limit": per_thread,
                               "env": {**WORKER_ENV, "CUDA_VISIBLE_DEVICES": ""}}
    return workers


def _local_cuda_cluster(cfg: ClusterConfig) -> Any:
    import torch
    from distributed import Nanny, Scheduler, SpecCluster

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d for d in visible.split(",") if d.strip()] if visible is not None else None
    n_gpus = torch.cuda.device_count()
    specs = local_cuda_workers(n_gpus, cfg.n_workers, cfg.memory_limit)
    if ids is not None:  # keep the user's selection: worker g sees the g-th device they made visible
        for g in range(n_gpus):
            specs[f"gpu-{g}"]["env"]["CUDA_VISIBLE_DEVICES"] = ids[g]
    workers = {name: {"cls": Nanny, "options": opts} for name, opts in specs.items()}
    scheduler = {"cls": Scheduler, "options": {"dashboard": cfg.dashboard, "dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="cryodet-local-cuda")


def _jobqueue_cluster(cfg: ClusterConfig) -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:  # pragma: no cover - dependency
        raise ParameterError("--cluster slurm/pbs/lsf/sge needs dask-jobqueue: pip install 'cryodet-dask[cluster]'") from exc
    cls = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster", "sge": "SGECluster"}[cfg.kind]
    import dask

    # the job script exports WORKER_ENV (the nanny's child inherits it), after the user's own prologue lines
    prologue = list(dask.config.get(f"jobqueue.{cfg.kind}.job-script-prologue", None) or [])
    prologue += [f"export {k}={v}" for k, v in WORKER_ENV.items()]
    kwargs: dict[str, Any] = {"scheduler_options": {"dashboard_address": ":0"}, "job_script_prologue": prologue}
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
        where = cfg.scheduler_address or f"the scheduler file {cfg.scheduler_file}"
        if cfg.scheduler_file and not os.path.isfile(cfg.scheduler_file):
            raise ClusterError(f"--scheduler-file {cfg.scheduler_file} does not exist")
        before = _scheduler_setting()
        try:
            client = Client(address=cfg.scheduler_address, scheduler_file=cfg.scheduler_file)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {where} ({_first_line(exc)}); is it running? "
                               "check --scheduler-address/--scheduler-file") from None
        try:
            with _guarded(client, cfg, where):
                yield client
        finally:
            _close(client, before)
        return
    if cfg.kind == "threads":
        yield None
        return
    if cfg.kind == "local":
        import dask
        from distributed import LocalCluster

        size = local_cluster_size(cfg.n_workers, cfg.threads_per_worker, cfg.memory_limit, cfg.task_memory)
        env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()}
        with dask.config.set(env), _children_ignore_sigint():
            cluster = LocalCluster(processes=True, dashboard_address=":0" if cfg.dashboard else None, **size)
    elif cfg.kind == "local-cuda":
        cluster = _local_cuda_cluster(cfg)
    else:  # slurm, pbs, lsf, sge (ClusterConfig refused any other kind when it was made)
        cluster = _jobqueue_cluster(cfg)
    before = _scheduler_setting()
    client = Client(cluster)
    if cfg.kind in ("local", "local-cuda"):  # processes this run started: they may end without a teardown
        from ._quick_exit import QuickExit

        client.register_plugin(QuickExit())
    completed = False
    try:
        with _guarded(client, cfg, f"the {cfg.kind} cluster"):
            yield client
        completed = True
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers' tasks are cancelled as they stop, unsaid
        _quiet_workers(client)
        raise
    finally:
        _shutdown(client, cluster, before, completed)


def _silence_distributed() -> None:
    """Run on each worker: distributed's loggers there at CRITICAL ("Async instruction ... ended with
    CancelledError" for every task a stopping worker drops, "Failed to communicate with scheduler during
    heartbeat" when the scheduler stops first: no news after an interruption)."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _quiet_workers(client: Any) -> None:
    with contextlib.suppress(Exception):  # a worker that cannot be reached is stopped by the cluster anyway
        client.run(_silence_distributed)


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """SIGINT ignored while the block starts processes, which inherit that: Ctrl-C reaches the terminal's whole
    process group, and worker processes that took it each printed a KeyboardInterrupt traceback and cancelled
    tasks.  This process alone handles Ctrl-C (one line) and stops the workers itself."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _shutdown(client: Any, cluster: Any, before: tuple[bool, Any], completed: bool) -> None:
    """Close the client, then the workers, then the scheduler, with distributed's own loggers quiet: what
    they say while a cluster goes down ("Worker process still alive ...", lost connections) is no news for
    the user.  After a ``completed`` run each worker is given :data:`WORKER_STOP_TIMEOUT` to stop by itself;
    after an interruption or a failure, distributed's 4 s (a worker may be in the middle of a task)."""
    with _quiet_distributed():
        try:
            _close(client, before)
        finally:
            try:
                if completed:
                    _close_local_workers(cluster, WORKER_STOP_TIMEOUT)
            finally:
                cluster.close()  # the scheduler; any worker still up is stopped (and killed) here


def _close_local_workers(cluster: Any, timeout: float) -> None:
    """Close the nannies this process started (LocalCluster, local-cuda), letting each worker process stop
    within ``timeout`` seconds; a jobqueue cluster's workers are its jobs, closed by ``cluster.close``."""
    import asyncio

    from distributed import Nanny

    nannies = [w for w in getattr(cluster, "workers", {}).values() if isinstance(w, Nanny)]
    if not nannies:
        return

    async def close_all() -> None:
        await asyncio.gather(*(w.close(timeout=timeout) for w in nannies), return_exceptions=True)

    with contextlib.suppress(Exception):  # the cluster's own close still runs, and kills what is left
        cluster.sync(close_all, callback_timeout=2 * timeout)


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed's (and tornado's) loggers at ERROR for the duration; their levels restored after."""
    names = ["distributed", "tornado", *(n for n in logging.Logger.manager.loggerDict
                                         if n.startswith(("distributed.", "tornado.")))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.ERROR:
            lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _scheduler_setting() -> tuple[bool, Any]:
    import dask

    return "scheduler" in dask.config.config, dask.config.config.get("scheduler")


def _close(client: Any, before: tuple[bool, Any]) -> None:
    """Close ``client`` and leave Dask's default scheduler as it was ``before`` it: a client closed
    from the watchdog's thread leaves ``scheduler: dask.distributed`` behind, and the next plain
    ``dask.compute`` in this process would then fail."""
    import dask
    from distributed.client import _get_global_client

    client.close()
    if _get_global_client() is None and _scheduler_setting() != before:
        had, value = before
        if had:
            dask.config.config["scheduler"] = value
        else:
            dask.config.config.pop("scheduler", None)


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - an exception whose str() fails still gets its line
        text = []
    return text[0] if text else type(exc).__name__


class _Watchdog(threading.Thread):
    """Ends a run that cannot finish: no worker for ``wait`` seconds, or the scheduler lost for 30 s.

    It closes the client, which cancels every pending future at once; :func:`_guarded` then turns
    the cancellation into a :class:`ClusterError` carrying :attr:`reason`.
    """

    def __init__(self, client: Any, wait: float, where: str, poll: float = 1.0, lost_after: float = 30.0) -> None:
        super().__init__(name="cryodet-cluster-watchdog", daemon=True)
        self.client, self.wait, self.where, self.poll, self.lost_after = client, wait, where, poll, lost_after
        self.reason: str | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        no_workers_since: float | None = None
        lost_since: float | None = None
        while not self._stop_event.wait(self.poll):
            now = time.monotonic()
            try:
                if self.client.status != "running":
                    raise OSError(self.client.status)
                n = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
                lost_since = None
            except Exception:  # the scheduler does not answer
                lost_since = lost_since or now
                if now - lost_since >= self.lost_after:
                    self._abort(f"lost the connection to the Dask scheduler at {self.where} for "
                                f"{self.lost_after:.0f} s; finished "
                                "chunks are kept: run the same command again once the cluster is back")
                    return
                continue
            if n:
                no_workers_since = None
            else:
                no_workers_since = no_workers_since or now
                if now - no_workers_since >= self.wait:
                    self._abort(f"{self.where} has had no worker for {self.wait:.0f} s (all workers gone or none "
                                "started); start workers or raise --worker-timeout, then run the same command "
                                "again to resume")
                    return

    def _abort(self, reason: str) -> None:
        self.reason = reason
        log.error("%s", reason)
        with contextlib.suppress(Exception):
            self.client.close()


@contextlib.contextmanager
def _guarded(client: Any, cfg: ClusterConfig, where: str) -> Iterator[None]:
    """Announce the client, watch it, and turn cluster failures into one-line :class:`ClusterError`."""
    from distributed.scheduler import KilledWorker

    _announce(client)
    dog = _Watchdog(client, cfg.wait_for_workers, where)
    dog.start()
    try:
        yield
    except KilledWorker as exc:
        limit = f" (--memory-limit {cfg.memory_limit})" if cfg.memory_limit else ""
        raise ClusterError(f"Dask workers died {_killed_times()} times in a row running one task, most often "
                           f"because it needs more memory than a worker may use{limit}: raise --memory-limit or "
                           f"lower -ps/--chunks, then run the same command again ({_first_line(exc)[:120]}...)"
                           ) from None
    except CryodetError:
        raise
    except Exception as exc:
        if dog.reason is not None:
            raise ClusterError(dog.reason) from None
        if client.status != "running":
            raise ClusterError(f"lost the Dask scheduler at {where} ({_first_line(exc)}); finished chunks are "
                               "kept: run the same command again once the cluster is back") from None
        raise
    finally:
        dog.stop()


def _killed_times() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures", 3)) + 1


def _announce(client: Any) -> None:
    link = getattr(client, "dashboard_link", None)
    n = len(client.scheduler_info().get("workers", {}))
    # one line, through logging, so that -q silences it
    log.info("Dask: %d workers; dashboard %s", n, link)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster options shared by every subcommand that computes."""
    g = parser.add_argument_group("cluster (where the work runs)")
    g.add_argument("--cluster", choices=KINDS, default="local",
                   help="local: LocalCluster sized to this machine (default); threads: no distributed "
                   "scheduler; slurm/pbs/lsf/sge: dask-jobqueue from your jobqueue.yaml; local-cuda: "
                   "one worker per GPU running 4 prediction tasks at once, plus CPU-only workers")
    g.add_argument("--scheduler-address", default=None, metavar="URL",
                   help="connect to a running scheduler, e.g. tcp://10.0.0.1:8786")
    g.add_argument("--scheduler-file", default=None, metavar="JSON", help="connect via a scheduler file")
    g.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="LocalCluster workers (default: one per core); local-cuda: CPU-only workers (default: one per "
                   "core left after one per GPU)")
    g.add_argument("--threads-per-worker", type=_positive, default=1, metavar="N", help="(default: 1)")
    g.add_argument("--memory-limit", type=_memory, default=None, metavar="SIZE",
                   help="memory per LocalCluster worker, e.g. 4GiB (local-cuda: per CPU-only worker, 4x that for "
                   "a GPU worker); a run refuses a limit below what one CPU prediction task needs (default: "
                   "80%% of RAM shared)")
    g.add_argument("--worker-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="give up (exit 69) when the cluster has had no worker for this long (default: 120; "
                   "slurm/pbs/lsf/sge: 3600, for the queue)")
    g.add_argument("--jobs", type=_positive, default=1, metavar="N", help="jobqueue: worker jobs to submit (default: 1)")
    g.add_argument("--gpus-per-job", type=_nonneg, default=0, metavar="N",
                   help="jobqueue: GPUs per job; workers get the Dask resource GPU=N (default: 0)")
    g.add_argument("--queue", default=None, help="jobqueue: queue/partition")
    g.add_argument("--walltime", default=None, metavar="HH:MM:SS", help="jobqueue: walltime per job")
    g.add_argument("--adapt", default=None, metavar="MIN,MAX", help="jobqueue: adaptive scaling between MIN and MAX jobs")


def _whole(text: str, low: int) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
    return v


def _positive(text: str) -> int:
    return _whole(text, 1)


def _nonneg(text: str) -> int:
    return _whole(text, 0)


def _memory(text: str) -> str:
    try:
        return parse_memory_limit(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--memory-limit ")) from None


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = float("nan")
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


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
        worker_timeout=getattr(args, "worker_timeout", None),
    )


@contextlib.contextmanager
def cluster_from_args(args: argparse.Namespace, task_memory: int | None = None) -> Iterator[Any]:
    """:func:`open_client` for parsed command-line options (``task_memory``: see :class:`ClusterConfig`)."""
    import dataclasses

    with open_client(dataclasses.replace(config_from_args(args), task_memory=task_memory)) as client:
        yield client
