"""The one use of joblib's private Dask backend (``joblib._dask``), adapted to report tasks
that fail *in Dask*.

joblib's ``DaskDistributedBackend`` hands each task's result to ``joblib.Parallel`` through a
completion callback that it calls only for tasks that finished (an exception raised by the
task function is part of the result). A task that Dask itself gives up on -- its workers died
more often than ``distributed.scheduler.allowed-failures`` -- never reaches the callback, and
``Parallel`` would wait for it forever. :class:`ReportingDaskBackend` also passes such
failures to the callback, so ``Parallel`` raises them (``KilledWorker``).

``joblib._dask`` is private: ``tests/test_joblib_dask_adapter.py`` pins the upstream behaviour
this class relies on, so a joblib release that changes it fails there instead of hanging or
double-reporting a build. Importing this module imports ``dask.distributed`` (optional:
``pip install 'spoofstore[scale]'``); :mod:`featstore.parallel` imports it only for
``--backend dask``.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from joblib._dask import DaskDistributedBackend

__all__ = ["ReportingDaskBackend"]


class ReportingDaskBackend(DaskDistributedBackend):
    """joblib's Dask backend, whose completion callback also receives Dask-level failures.

    Parameters
    ----------
    client : distributed.Client
        Where tasks run.
    wait_for_workers_timeout : float, default 10
        Seconds ``Parallel`` waits for a first worker.

    Examples
    --------
    >>> from joblib import parallel_config  # doctest: +SKIP
    >>> with parallel_config(backend=ReportingDaskBackend(client=client)):  # doctest: +SKIP
    ...     Parallel(n_jobs=-1)(delayed(abs)(x) for x in (-1, -2))
    [1, 2]
    """

    def submit(self, func: Any, callback: Any = None) -> Future:
        """Submit one joblib batch; ``callback(exc)`` also runs when Dask fails the task."""
        future = super().submit(func, callback)
        if callback is not None:

            def report_failure(done: Future) -> None:
                exc = done.exception()
                if exc is not None:
                    callback(exc)  # joblib records the error and raises it to the caller

            future.add_done_callback(report_failure)
        return future
