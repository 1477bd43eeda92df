"""featstore.joblib_dask_adapter: pins the private joblib behaviour the Dask backend relies on.

If a joblib release changes ``joblib._dask`` (names, the completion callback, how failed
tasks are reported), a test here fails: re-check ``ReportingDaskBackend`` against the new
upstream code before relaxing it. The end-to-end check (a task whose workers keep dying
fails the build with ``KilledWorker``) is ``tests/test_dask_build.py`` (slow).
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import Future

import pytest

pytest.importorskip("distributed")

from joblib._dask import DaskDistributedBackend

from featstore.joblib_dask_adapter import ReportingDaskBackend


class _DaskFuture:
    def __init__(self, status: str):
        self.status = status


class _OneResult:
    """Stands in for the backend's ``as_completed`` queue: yields one result, then stops."""

    def __init__(self, backend, future, result):
        self.backend, self.items = backend, [(future, result)]

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.items:
            self.backend._continue = False
            raise StopAsyncIteration
        return self.items.pop()


def _collect_one(status: str, result) -> tuple[Future, list]:
    """Run upstream's result collector on one Dask future; what reached the joblib side."""
    backend = DaskDistributedBackend.__new__(DaskDistributedBackend)
    calls: list = []
    dask_future, cf_future = _DaskFuture(status), Future()
    backend._results = {dask_future: cf_future}
    backend._callbacks = {dask_future: calls.append}
    backend.waiting_futures = _OneResult(backend, dask_future, result)
    backend._continue = True
    asyncio.run(backend._collect())
    return cf_future, calls


def test_upstream_submit_signature_is_the_one_we_override():
    params = list(inspect.signature(DaskDistributedBackend.submit).parameters)
    assert params == ["self", "func", "callback"]
    assert issubclass(ReportingDaskBackend, DaskDistributedBackend)
    init = inspect.signature(DaskDistributedBackend.__init__).parameters
    assert "client" in init and "wait_for_workers_timeout" in init


def test_upstream_calls_the_callback_for_finished_tasks_only():
    """The gap the adapter fills: a task failed by Dask never reaches the callback upstream."""
    done, calls = _collect_one("finished", "result")
    assert done.result() == "result" and calls == ["result"]
    error = RuntimeError("KilledWorker stand-in")
    failed, calls = _collect_one("error", (RuntimeError, error, None))
    assert failed.exception() is error
    assert calls == [], "joblib now reports Dask failures itself: drop ReportingDaskBackend"


def test_adapter_reports_dask_failures_to_the_callback(monkeypatch):
    futures: list[Future] = []

    def upstream_submit(self, func, callback=None):
        futures.append(Future())
        return futures[-1]

    monkeypatch.setattr(DaskDistributedBackend, "submit", upstream_submit)
    backend = ReportingDaskBackend.__new__(ReportingDaskBackend)
    calls: list = []
    backend.submit(object(), calls.append)
    futures[-1].set_result("ok")
    assert calls == []  # successes reach the callback through upstream's collector
    backend.submit(object(), calls.append)
    error = RuntimeError("worker died")
    futures[-1].set_exception(error)
    assert calls == [error]
    backend.submit(object())  # no callback: nothing to report
    futures[-1].set_exception(error)
