"""Where a build's feature extraction runs: local worker processes (loky) or a Dask cluster.

:func:`parallel_backend` is a context manager around joblib's ``parallel_config``. Inside it,
every ``joblib.Parallel`` (the one :func:`featstore.build` runs) dispatches its tasks to the
chosen backend:

``"loky"``
    ``jobs`` local worker processes (joblib's default).
``"dask"``
    A ``distributed`` cluster: the scheduler at ``scheduler`` (``tcp://HOST:PORT``), or,
    without an address, a ``LocalCluster`` of ``jobs`` single-threaded worker processes on
    127.0.0.1 started here and stopped on exit. Workers only compute features; results come
    back to this process, which writes the store in manifest order, so the store is
    byte-identical to a local build. With a ``LocalCluster`` the client fetches results
    straight from the workers; with a remote scheduler it follows the Dask configuration
    (``distributed.client.direct-to-workers``; by default results are relayed by the
    scheduler, which works whenever the scheduler is reachable, at twice the traffic).

Worker death
    When a worker process dies, the scheduler re-runs the tasks it held on another worker
    (``distributed.scheduler.allowed-failures`` times per task, 3 by default) and the nanny
    restarts the process. Each joblib task is one Dask future whose result reaches the
    build exactly once, and the build commits results strictly in manifest order, so a retry
    can neither lose nor duplicate an utterance. If a task exhausts its retries the build
    stops with ``KilledWorker``; re-running the same command resumes from the last commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from featstore.errors import FeatureError, SpoofstoreError

__all__ = ["BACKENDS", "ParallelInfo", "parallel_backend"]

BACKENDS = ("loky", "dask")
"""Names accepted by :func:`parallel_backend` (and ``featstore build --backend``)."""


@dataclass(frozen=True)
class ParallelInfo:
    """What :func:`parallel_backend` set up.

    Attributes
    ----------
    backend : str
        ``"loky"`` or ``"dask"``.
    workers : int
        Worker slots (processes for loky, total worker threads of the Dask cluster).
    address : str or None
        The Dask scheduler address (None for loky).
    client : Any
        The ``distributed.Client`` (None for loky).
    """

    backend: str
    workers: int
    address: str | None = None
    client: Any = None


LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.work-stealing": False,
}
"""Dask settings of the ``LocalCluster`` that :func:`parallel_backend` starts.

- Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches
  off glibc's dynamic mmap threshold: every large NumPy temporary of the feature kernels is
  then a fresh ``mmap`` + page faults + ``munmap``, and extraction costs **2x the CPU** it
  costs in a plain process (measured: 0.75 s against 0.38 s for the same 40 files). Unset.
- Dask's defaults poll often (statistical profiler every 10 ms, event-loop ticks every 20 ms,
  system and memory monitors, work stealing every 100 ms): ~15% of a core while idle for a
  2-worker cluster, paid for the whole build. Extraction tasks are uniform, single-threaded
  and long enough that none of it helps; these settings cut the idle cost ~7x.

Use the same settings for a cluster you start yourself (a ``distributed.yaml`` on the
worker machines; at least ``distributed: nanny: pre-spawn-environ: MALLOC_TRIM_THRESHOLD_:
null``).
"""


def _local_workers(jobs: int) -> int:
    return (os.cpu_count() or 1) if jobs == -1 else max(1, jobs)


def _dask_client(jobs: int, scheduler: str | None, stack: contextlib.ExitStack) -> Any:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SpoofstoreError(
            "--backend dask needs dask.distributed; pip install 'spoofstore[scale]'"
        ) from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SpoofstoreError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}"
            ) from None
        stack.callback(client.close)
        return client
    import dask

    with dask.config.set(LOCAL_CLUSTER_CONFIG):  # read by the scheduler, nannies, workers
        cluster = LocalCluster(
            n_workers=_local_workers(jobs),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        stack.callback(cluster.close)
        # results straight from the workers, not relayed by the scheduler (half the bytes)
        client = Client(cluster, set_as_default=False, direct_to_workers=True)
        stack.callback(client.close)
    return client


@contextlib.contextmanager
def parallel_backend(
    backend: str = "loky", jobs: int = 2, scheduler: str | None = None
) -> Iterator[ParallelInfo]:
    """Run the ``joblib.Parallel`` calls inside the block on local processes or on Dask.

    Parameters
    ----------
    backend : {"loky", "dask"}, default "loky"
        Where tasks run.
    jobs : int, default 2
        loky: worker processes (-1: one per core). dask without ``scheduler``: worker
        processes of the ``LocalCluster`` started here. Ignored with ``scheduler`` (the
        cluster's workers decide).
    scheduler : str, optional
        Address of a running Dask scheduler, ``tcp://HOST:PORT`` (dask only).

    Yields
    ------
    ParallelInfo
        Backend, worker slots, scheduler address and client.

    Raises
    ------
    FeatureError
        Unknown backend, or a scheduler address with the loky backend.
    SpoofstoreError
        ``distributed`` is not installed, or the scheduler cannot be reached.

    Examples
    --------
    >>> from joblib import Parallel, delayed
    >>> with parallel_backend("loky", jobs=1) as info:
    ...     Parallel(n_jobs=info.workers)(delayed(abs)(x) for x in (-1, -2))
    [1, 2]
    """
    if backend not in BACKENDS:
        raise FeatureError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    from joblib import parallel_config  # heavy: only when a build runs

    if backend == "loky":
        if scheduler:
            raise FeatureError("--scheduler needs --backend dask")
        yield ParallelInfo("loky", _local_workers(jobs))  # joblib's default: nothing to set
        return
    with contextlib.ExitStack() as stack:
        client = _dask_client(jobs, scheduler, stack)
        workers = sum(client.nthreads().values())
        from featstore.joblib_dask_adapter import ReportingDaskBackend  # imports distributed

        dask_backend = ReportingDaskBackend(client=client, wait_for_workers_timeout=60)
        with parallel_config(backend=dask_backend):
            yield ParallelInfo("dask", workers, client.scheduler.address, client)
