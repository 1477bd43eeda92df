"""Builds on Dask: byte-identical to local builds, killed workers lose/duplicate nothing.

Two ``LocalCluster`` starts in all: one module cluster (2 worker processes on 127.0.0.1,
``allowed-failures=1``) reached by its address like a remote scheduler, and one started by
``featstore build --backend dask`` itself. Workers are killed with SIGKILL from inside a task
by a worker plugin, at a chosen task, so the test does not depend on timing.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from corpus_fixture import assert_stores_equal, make_corpus

import featstore
from featstore.errors import FeatureError
from featstore.parallel import parallel_backend

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

pytestmark = pytest.mark.slow

SMALL = {"chunk_frames": 32, "shard_frames": 128, "quiet": True}
COUNTS = {"train": 6, "dev": 3}


class KillOnExecute(distributed.WorkerPlugin):
    """SIGKILL the worker process when it starts executing a chosen task.

    The ``nth`` task execution seen by any worker (counted with files in ``flag_dir``, so
    the count spans processes and restarts) is the victim. ``every_time=False``: kill once.
    ``every_time=True``: kill every worker that starts the victim task again (its retries),
    so it exhausts ``allowed-failures`` and the build fails with ``KilledWorker``.
    """

    def __init__(self, flag_dir: str, nth: int, every_time: bool = False):
        self.flag_dir = flag_dir
        self.nth = nth
        self.every_time = every_time

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing":
            return
        victim = os.path.join(self.flag_dir, "victim")
        if os.path.exists(victim):
            with open(victim) as fh:
                if self.every_time and fh.read() == str(key):
                    self._die()
            return
        seen = os.path.join(self.flag_dir, "seen")
        with open(seen, "a") as fh:
            fh.write("x")
        if os.path.getsize(seen) < self.nth:
            return
        try:
            fd = os.open(victim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(key).encode())
        os.close(fd)
        self._die()

    def _die(self) -> None:
        with open(os.path.join(self.flag_dir, "kills"), "a") as fh:
            fh.write("x")
        os.kill(os.getpid(), signal.SIGKILL)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), COUNTS, seconds=(0.4, 1.2), seed=5)


@pytest.fixture(scope="module")
def local_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    featstore.build(corpus / "protocols", corpus, out, jobs=1, **SMALL)
    return out


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        lc = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=50,
        )
    try:
        yield lc
    finally:
        lc.close()


def _same_files(a: Path, b: Path) -> None:
    for path in sorted(a.rglob("*")):
        if path.is_file() and path.name != "zarr.json":
            assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path


def _build(corpus: Path, out: Path, scheduler: str, **kw):
    return featstore.build(
        corpus / "protocols", corpus, out, batch_size=1, backend="dask", scheduler=scheduler,
        **SMALL, **kw,
    )  # fmt: skip


def test_cli_dask_build_on_its_own_local_cluster_equals_local_build(
    corpus, local_store, tmp_path, capsys
):
    from featstore.cli import main

    out = tmp_path / "dask.zarr"
    (tmp_path / "small.toml").write_text("chunk_frames = 32\nshard_frames = 128\nbatch_size = 2\n")
    args = ["build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus)]
    args += ["--out", str(out), "--backend", "dask", "--jobs", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--config", str(tmp_path / "small.toml")])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert "featstore build" in captured.err and "9/9" in captured.err  # client-side progress
    assert "dev: 3 written" in captured.out and "train: 6 written" in captured.out
    assert_stores_equal(local_store, out)
    _same_files(local_store, out)


def test_parallel_backend_dask_reports_the_cluster(cluster):
    with parallel_backend("dask", scheduler=cluster.scheduler_address) as info:
        assert info.backend == "dask" and info.workers == 2
        assert info.address == cluster.scheduler_address


def test_killed_worker_loses_and_duplicates_nothing(corpus, local_store, cluster, tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(2, timeout=120)
    client.register_plugin(KillOnExecute(str(flags), nth=3), name="kill-once")
    try:
        out = tmp_path / "dask.zarr"
        summary = _build(corpus, out, cluster.scheduler_address)
    finally:
        client.unregister_worker_plugin("kill-once")
        client.close()
    assert (flags / "kills").read_text() == "x"  # one worker really died mid-task
    assert summary.written == COUNTS
    assert_stores_equal(local_store, out)
    _same_files(local_store, out)


def test_task_that_kills_every_worker_fails_then_rerun_resumes(
    corpus, local_store, cluster, tmp_path
):
    flags = tmp_path / "flags"
    flags.mkdir()
    out = tmp_path / "dask.zarr"
    client = distributed.Client(cluster, set_as_default=False)
    # both workers up (the previous test killed one; its nanny may still be restarting it),
    # so the build plans its batches for two workers and reaches the 5th task
    client.wait_for_workers(2, timeout=120)
    client.register_plugin(KillOnExecute(str(flags), nth=5, every_time=True), name="kill-all")
    try:
        with pytest.raises(distributed.KilledWorker):
            _build(corpus, out, cluster.scheduler_address)
    finally:
        client.unregister_worker_plugin("kill-all")
        client.wait_for_workers(2, timeout=120)
        client.close()
    assert len((flags / "kills").read_text()) == 2  # killed, retried once, killed again
    summary = _build(corpus, out, cluster.scheduler_address)
    total = {s: summary.written.get(s, 0) + summary.skipped.get(s, 0) for s in COUNTS}
    assert total == COUNTS  # every utterance exactly once: done before + done now
    assert sum(summary.skipped.values()) > 0  # the re-run resumed
    assert_stores_equal(local_store, out)
    _same_files(local_store, out)


def test_backend_arguments_are_checked():
    with pytest.raises(FeatureError, match="backend must be one of"):
        with parallel_backend("spark"):
            pass
    with pytest.raises(FeatureError, match="--scheduler needs --backend dask"):
        with parallel_backend("loky", scheduler="tcp://127.0.0.1:1"):
            pass


def test_augmented_views_on_dask_equal_a_local_build(corpus, cluster, tmp_path):
    """Views are made by the workers from (seed, utterance, view) alone: the same bytes."""
    views = {"augment": "gain|bandlimit+codec(codecs=mulaw)|rawboost-isd", "views": 2}
    local = tmp_path / "local.zarr"
    featstore.build(corpus / "protocols", corpus, local, jobs=1, **SMALL, **views)
    out = tmp_path / "dask.zarr"
    summary = _build(corpus, out, cluster.scheduler_address, **views)
    assert summary.views_written == {"train": COUNTS["train"]}
    assert featstore.open_store(out).n_views("train") == 3
    assert_stores_equal(local, out)
    _same_files(local, out)
