"""Augmented views in the store (issue 13, section 2): ``featstore build --augment --views``.

View ``k`` of utterance ``u`` is ``augment(signal, view_rng(seed, u, k), recipe)`` extracted
with the store's features; its bytes do not depend on ``--jobs``, the backend (the Dask
test is in ``test_dask_build.py``) or a crash and resume. Views can be added to a finished
store (also a format-version-1 one) without touching its clean view.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixture import assert_stores_equal, make_corpus

import featstore
from featstore import extraction
from featstore.audio import load_audio
from featstore.augment import Recipe, augment, parse_recipe, view_rng
from featstore.errors import AudioError, ConfigError, StoreError
from featstore.features.registry import get_feature
from featstore.store.inspect import store_info, verify_store
from featstore.store.journal import SplitJournal
from featstore.store.zarr_backend import ZarrSink

SMALL = {"features": "lfcc", "chunk_frames": 16, "shard_frames": 64, "fsync": False}
RECIPE = "gain|bandlimit+codec(codecs='mulaw,alaw')|rawboost-isd"
VIEWS = {"augment": RECIPE, "views": 2}
V1 = Path(__file__).resolve().parent / "data" / "v1-store"


class Crash(Exception):
    """Stands in for the process dying."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(
        tmp_path_factory.mktemp("corpus"), {"train": 6, "dev": 3}, seconds=(0.4, 0.9), seed=7
    )


def _build(corpus: Path, out: Path, **kw) -> featstore.BuildSummary:
    args = {"jobs": 1, "quiet": True, **SMALL, **kw}
    return featstore.build(corpus / "protocols", corpus, out, **args)


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Zarr store with 2 views of train, built in this process, uninterrupted."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    _build(corpus, out, **VIEWS)
    return out


@pytest.fixture(scope="module")
def clean(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same store without views."""
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    _build(corpus, out)
    return out


def _same_content(a: Path, b: Path) -> None:
    """Stores of two formats (their fingerprints differ) hold the same views and records."""
    sa, sb = featstore.open_store(a), featstore.open_store(b)
    assert sa.metadata["splits"] == sb.metadata["splits"] and sa.augmentation == sb.augmentation
    for split in sa.splits:
        va, vb = sa.view_columns(split), sb.view_columns(split)
        assert list(va) == list(vb)
        for name in va:
            np.testing.assert_array_equal(va[name], vb[name])
        for view in range(sa.n_views(split)):
            xa, xb = sa.array(split, "lfcc", view)[:], sb.array(split, "lfcc", view)[:]
            assert xa.tobytes() == xb.tobytes()


def _files(store: Path) -> dict[str, bytes]:
    """Every data file of a Zarr store's splits (shards, index chunks, array metadata)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for split in ("dev", "train")
        for p in sorted((store / split).rglob("*"))
        if p.is_file()
    }


# -- the reader API ----------------------------------------------------------------------------


def test_store_api_for_views(reference: Path, clean: Path) -> None:
    st = featstore.open_store(reference)
    assert st.n_views("train") == 3 and st.n_views("dev") == 1
    mask = st.view_mask("train")
    assert mask.dtype == bool and mask.shape == (6, 3) and mask.all()
    assert st.view_mask("dev").shape == (3, 1)
    aug = st.augmentation
    assert aug["seed"] == 0 and aug["views"] == 2 and aug["splits"] == ["train"]
    assert aug["recipe"] == parse_recipe(RECIPE).to_json()
    assert str(Recipe.from_json(aug["recipe"])) == aug["recipe_text"]
    offsets, _ = st.frames("train", "lfcc")
    clean_rows = st.array("train", "lfcc")[:]
    for view in (1, 2):
        rows = st.array("train", "lfcc", view)[:]
        assert rows.shape == clean_rows.shape and not np.array_equal(rows, clean_rows)
        uid = str(st.index("train")["utt_id"][1])
        part = st.read("train", "lfcc", uid, 2, 5, view=view)
        start = int(offsets[1])
        assert part.tobytes() == rows[start + 2 : start + 5].tobytes()
    with pytest.raises(StoreError, match=r"no view 3 in split 'train'; it has views 0\.\.2"):
        st.array("train", "lfcc", 3)
    with pytest.raises(StoreError, match="no view 1 in split 'dev'; it has only the clean view 0"):
        st.read("dev", "lfcc", str(st.index("dev")["utt_id"][0]), view=1)
    # the clean view, its statistics and the fingerprint are those of a build without views
    plain = featstore.open_store(clean)
    assert st.fingerprint == plain.fingerprint
    for split in ("dev", "train"):
        np.testing.assert_array_equal(st.stats("lfcc", split)[0], plain.stats("lfcc", split)[0])
        np.testing.assert_array_equal(st.stats("lfcc", split)[1], plain.stats("lfcc", split)[1])
        assert st.array(split, "lfcc")[:].tobytes() == plain.array(split, "lfcc")[:].tobytes()
    assert plain.n_views("train") == 1 and plain.augmentation is None
    assert plain.view_mask("train").shape == (6, 1)


def test_a_view_is_the_recipe_applied_with_its_own_generator(reference: Path, corpus: Path):
    st = featstore.open_store(reference)
    recipe = Recipe.from_json(st.augmentation["recipe"])
    spec = get_feature("lfcc")
    for row in (0, 4):
        uid = str(st.index("train")["utt_id"][row])
        x = load_audio(corpus / "flac" / f"{uid}.flac").signal
        for view in (1, 2):
            y = augment(x, view_rng(0, uid, view), recipe)
            expected = np.ascontiguousarray(spec.function(y, **spec.defaults), dtype="<f4")
            assert st.read("train", "lfcc", uid, view=view).tobytes() == expected.tobytes()
        chains = st.view_columns("train")
        assert chains["chain.1"][row] in {str(c) for c in recipe.chains}


def test_hdf5_and_other_jobs_give_the_same_bytes(corpus: Path, reference: Path, tmp_path: Path):
    _build(corpus, tmp_path / "views.h5", **VIEWS)
    _same_content(reference, tmp_path / "views.h5")
    _build(corpus, tmp_path / "jobs2.zarr", jobs=2, batch_size=1, **VIEWS)
    assert_stores_equal(reference, tmp_path / "jobs2.zarr")
    assert _files(reference) == _files(tmp_path / "jobs2.zarr")


def test_augment_splits_and_seed(corpus: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "both.zarr"
    _build(corpus, out, augment_splits="train,dev", augment_seed=3, **VIEWS)
    st, ref = featstore.open_store(out), featstore.open_store(reference)
    assert st.n_views("dev") == 3 and st.augmentation["splits"] == ["dev", "train"]
    assert _build(corpus, out, augment_splits="dev,train", augment_seed=3, **VIEWS).noop
    assert st.array("train", "lfcc", 1)[:].tobytes() != ref.array("train", "lfcc", 1)[:].tobytes()
    assert verify_store(out) == []


def test_views_zero_is_a_store_without_views(corpus: Path, clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "zero.zarr"
    _build(corpus, out, augment=RECIPE, views=0)
    assert featstore.open_store(out).augmentation is None
    assert_stores_equal(clean, out)


# -- resume ------------------------------------------------------------------------------------


def _crash_on_views_commit(monkeypatch, n: int) -> None:
    """Crash at the ``n``-th commit of a views journal (data written, commit not recorded)."""
    original = SplitJournal.commit
    calls = {"n": 0}

    def commit(self, progress):
        if self.journal_path.name.startswith("views@"):
            calls["n"] += 1
            if calls["n"] >= n:
                raise Crash(f"views commit {calls['n']}")
        return original(self, progress)

    monkeypatch.setattr(SplitJournal, "commit", commit)


def _crash_on_view_shard(monkeypatch, n: int) -> None:
    """Crash at the ``n``-th shard write of a view array."""
    original = ZarrSink.write
    calls = {"n": 0}

    def write(self, start, data):
        if "views" in self.directory.parts:
            calls["n"] += 1
            if calls["n"] >= n:
                raise Crash(f"view shard write {calls['n']}")
        return original(self, start, data)

    monkeypatch.setattr(ZarrSink, "write", write)


@pytest.mark.parametrize("crash", [(_crash_on_views_commit, 2), (_crash_on_view_shard, 3)])
def test_crash_while_making_views_then_resume_is_byte_identical(
    crash, corpus: Path, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    inject, n = crash
    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        inject(m, n)
        with pytest.raises(Crash):
            _build(corpus, out, **VIEWS)
    progress = out / ".spoofstore-build" / "views@train.progress.json"
    with pytest.raises(StoreError, match="incomplete"):
        featstore.open_store(out)
    summary = _build(corpus, out, **VIEWS)
    assert summary.skipped == {"dev": 3, "train": 6}  # the clean view was done before
    if progress.exists():  # pragma: no branch - depends on where the crash hit
        assert summary.views_written["train"] + summary.views_skipped["train"] == 6
    assert_stores_equal(reference, out)
    assert _files(reference) == _files(out)
    assert _build(corpus, out, **VIEWS).noop


def test_other_views_do_not_resume_an_unfinished_build(corpus: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        _crash_on_views_commit(m, 1)
        with pytest.raises(Crash):
            _build(corpus, out, **VIEWS)
    with pytest.raises(StoreError, match="unfinished build with a different augmentation"):
        _build(corpus, out, augment=RECIPE, views=3)
    with pytest.raises(StoreError, match="unfinished build with a different augmentation"):
        _build(corpus, out)


def _views_committed(state: Path) -> int:
    total = 0
    for p in state.glob("views@*.progress.json"):
        try:
            total += json.loads(p.read_text())["committed"]
        except (OSError, ValueError, KeyError):
            pass
    return total


@pytest.mark.slow
def test_sigkill_while_making_views_then_resume_is_byte_identical(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "corpus", {"train": 40, "dev": 4}, seconds=(0.4, 1.0), seed=4)
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "featstore", "build", "--manifest", str(root / "protocols")]
    cmd += ["--audio-root", str(root), "--out", str(out), "--features", "lfcc", "--jobs", "1"]
    cmd += ["--augment", "gain|bandlimit", "--views", "3", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    toml = tmp_path / "small.toml"
    toml.write_text("chunk_frames = 16\nshard_frames = 32\nfsync = false\n")
    cmd += ["--config", str(toml)]
    kills = 0
    for threshold in (1, 20):  # kill early in the views, then again later in the resumed run
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _views_committed(out / ".spoofstore-build") >= threshold:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        proc.wait()
    assert kills >= 1, "the build finished before it could be killed; make the corpus bigger"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    whole = tmp_path / "whole.zarr"
    featstore.build(
        root / "protocols", root, whole, features="lfcc", jobs=1, config=toml, quiet=True,
        augment="gain|bandlimit", views=3,
    )  # fmt: skip
    assert_stores_equal(whole, out)
    assert _files(whole) == _files(out)
    assert not list(out.rglob(".*.tmp"))


# -- adding views to a finished store ----------------------------------------------------------


def test_views_added_to_a_clean_store_equal_a_build_with_views(
    corpus: Path, clean: Path, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "added.zarr"
    shutil.copytree(clean, out)
    before = {k: v for k, v in _files(out).items() if "/views/" not in k}
    with monkeypatch.context() as m:  # interrupted: the store stays readable as it was
        _crash_on_view_shard(m, 2)
        with pytest.raises(Crash):
            _build(corpus, out, **VIEWS)
    assert featstore.open_store(out).n_views("train") == 1
    summary = _build(corpus, out, **VIEWS)  # resumes the addition
    assert summary.skipped == {"dev": 3, "train": 6} and not summary.written  # clean kept
    assert summary.views_written["train"] + summary.views_skipped["train"] == 6
    assert_stores_equal(reference, out)
    assert _files(reference) == _files(out)
    assert {k: v for k, v in _files(out).items() if k in before} == before  # clean untouched
    st = featstore.open_store(out)
    assert st.metadata["created"] == featstore.open_store(clean).metadata["created"]
    assert _build(corpus, out, **VIEWS).noop
    assert _build(corpus, out).noop  # a plain build accepts the store with views


def test_views_added_to_an_hdf5_store(corpus: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "added.h5"
    _build(corpus, out)
    _build(corpus, out, **VIEWS)
    _same_content(reference, out)
    assert verify_store(out) == []


def test_an_abandoned_addition_of_views_is_dropped_by_a_plain_build(
    corpus: Path, clean: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "s.zarr"
    shutil.copytree(clean, out)
    with monkeypatch.context() as m:
        _crash_on_view_shard(m, 2)
        with pytest.raises(Crash):
            _build(corpus, out, **VIEWS)
    with pytest.raises(StoreError, match="unfinished addition of augmented views made another"):
        _build(corpus, out, augment="gain", views=2)
    assert _build(corpus, out).noop
    assert not (out / "train" / "views").exists() and not (out / ".spoofstore-build").exists()
    assert_stores_equal(clean, out)


def test_other_views_on_a_store_with_views_are_refused(corpus: Path, reference: Path) -> None:
    for other in ({"augment": RECIPE, "views": 3}, {"augment": "gain", "views": 2}):
        with pytest.raises(StoreError, match="already holds augmented views made another way"):
            _build(corpus, reference, **other)
    with pytest.raises(StoreError, match="already holds augmented views"):
        _build(corpus, reference, augment_seed=1, **VIEWS)


# -- version-1 stores --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["store.v1", "store.v1.hdf5"])
def test_version_1_stores_are_read_and_get_views(name: str, tmp_path: Path) -> None:
    original = V1 / name
    st = featstore.open_store(original)
    assert st.metadata["format_version"] == 1 and "augmentation" not in st.metadata
    assert st.n_views("train") == 1 and st.augmentation is None
    assert st.view_mask("train").tolist() == [[True]] * 3
    assert st.array("train", "lfcc")[:].shape[0] == int(st.frames("train", "lfcc")[1].sum())
    assert verify_store(original) == []
    assert "views: clean only (no augmented views)" in store_info(original).lines()
    copy = tmp_path / name
    (shutil.copytree if original.is_dir() else shutil.copy)(original, copy)
    corpus = V1 / "corpus"
    kw = {"features": "lfcc", "chunk_frames": 16, "shard_frames": 64, "fsync": False}
    assert featstore.build(corpus / "protocols", corpus, copy, quiet=True, **kw).noop
    featstore.build(corpus / "protocols", corpus, copy, quiet=True, jobs=1, **kw, **VIEWS)
    new = featstore.open_store(copy)
    assert new.metadata["format_version"] == 2 and new.fingerprint == st.fingerprint
    assert new.n_views("train") == 3 and new.n_views("dev") == 1
    for split in ("dev", "train"):
        assert new.array(split, "lfcc")[:].tobytes() == st.array(split, "lfcc")[:].tobytes()
        assert new.metadata["splits"][split]["features"] == st.metadata["splits"][split]["features"]
    assert verify_store(copy) == []
    fresh = tmp_path / ("fresh.h5" if name.endswith("hdf5") else "fresh.zarr")
    featstore.build(corpus / "protocols", corpus, fresh, quiet=True, jobs=1, **kw, **VIEWS)
    assert_stores_equal(fresh, copy)


# -- quarantined views -------------------------------------------------------------------------


def _failing_chain(fail_sizes: set[int], views_failing: set[int] | None = None):
    """``apply_chain`` failing (like a silent noise excerpt) for signals of the given sizes."""
    original = extraction.apply_chain
    seen: dict[int, int] = {}

    def apply_chain(x, rng, chain):
        seen[x.size] = seen.get(x.size, 0) + 1
        if x.size in fail_sizes and (views_failing is None or seen[x.size] in views_failing):
            raise AudioError("noise/n1.wav", "silent: the drawn excerpt is all zeros")
        return original(x, rng, chain)

    return apply_chain


def test_a_failed_view_is_quarantined_and_the_clean_view_survives(
    corpus: Path, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    ref = featstore.open_store(reference)
    uid = str(ref.index("train")["utt_id"][2])
    size = load_audio(corpus / "flac" / f"{uid}.flac").signal.size
    out = tmp_path / "q.zarr"
    with monkeypatch.context() as m:
        m.setattr(extraction, "apply_chain", _failing_chain({size}, {2}))
        summary = _build(corpus, out, **VIEWS)
    reason = "view 2 ("
    assert [q[:3] for q in summary.view_quarantine] == [("train", uid, 2)]
    assert reason in summary.view_quarantine[0][3] and "silent" in summary.view_quarantine[0][3]
    assert f"train/{uid} view 2: view 2 (" in summary.report()
    st = featstore.open_store(out)
    mask = st.view_mask("train")
    assert not mask[2, 2] and mask.sum() == mask.size - 1
    clean_rows = st.read("train", "lfcc", uid)
    assert st.read("train", "lfcc", uid, view=2).tobytes() == clean_rows.tobytes()
    assert (
        st.read("train", "lfcc", uid, view=1).tobytes()
        == ref.read("train", "lfcc", uid, view=1).tobytes()
    )
    assert st.view_columns("train")["chain.2"][2] == ""
    assert st.metadata["view_quarantine"] == [["train", uid, 2, summary.view_quarantine[0][3]]]
    assert st.metadata["splits"]["train"]["views"]["n_quarantined"] == 1
    assert st.quarantine == [] and st.n_utterances("train") == 6
    assert verify_store(out) == []
    info = store_info(out)
    assert any(f"train/{uid} view 2: view 2 (" in line for line in info.lines())
    assert info.to_dict()["quarantined_views"][0]["view"] == 2


def test_strict_stops_at_the_first_failed_view(corpus: Path, tmp_path: Path, monkeypatch):
    uid = "LA_T_1000002"
    size = load_audio(corpus / "flac" / f"{uid}.flac").signal.size
    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        m.setattr(extraction, "apply_chain", _failing_chain({size}, {1}))
        with pytest.raises(AudioError, match=f"train/{uid}: view 1 .*--strict: stopping"):
            _build(corpus, out, strict=True, **VIEWS)
    _build(corpus, out, **VIEWS)  # without --strict the same build resumes and finishes
    assert featstore.open_store(out).view_mask("train").all()


def test_views_that_all_fail_stop_the_build_and_keep_the_store(
    corpus: Path, clean: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "s.zarr"
    shutil.copytree(clean, out)
    sizes = {load_audio(p).signal.size for p in (corpus / "flac").glob("LA_T_*.flac")}
    with monkeypatch.context() as m:
        m.setattr(extraction, "apply_chain", _failing_chain(sizes))
        with pytest.raises(AudioError, match="all 12 augmented views of split train failed"):
            _build(corpus, out, **VIEWS)
    assert featstore.open_store(out).n_views("train") == 1  # as it was, still readable
    _build(corpus, out, **VIEWS)  # a re-run makes them again
    assert featstore.open_store(out).view_mask("train").all()


# -- verify and info ---------------------------------------------------------------------------


def test_verify_finds_a_damaged_view(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad.zarr"
    shutil.copytree(reference, out)
    shard = out / "train" / "views" / "1" / "lfcc" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_store(out)
    assert len(problems) == 1, problems
    assert problems[0].startswith("train/lfcc view 1: checksum mismatch: LA_T_1000000 (rows 0..")
    (out / "train" / "views" / "2" / "lfcc" / "c" / "0" / "0").unlink()
    with pytest.raises(StoreError, match="damaged store: train/views/2/lfcc/c/0/0 is missing"):
        featstore.open_store(out)


def test_verify_finds_a_quarantined_view_that_is_not_a_clean_copy(reference: Path, tmp_path):
    import zarr

    out = tmp_path / "bad.zarr"
    shutil.copytree(reference, out)
    ok = zarr.open_array(out / "train" / "views" / "index" / "ok.1", mode="r+")
    ok[0] = 0
    problems = verify_store(out)
    assert "train/lfcc view 1: quarantined view does not hold the clean rows: LA_T_1000000" in (
        problems
    )
    assert (
        "train: quarantined view missing from the metadata's view_quarantine: LA_T_1000000 view 1"
        in problems
    )


def test_info_lists_views_and_the_recipe(reference: Path) -> None:
    info = store_info(reference)
    text = "\n".join(info.lines())
    assert f"views: clean view 0 + 2 augmented by {RECIPE!r}"[:40] in text
    assert "seed 0, in split(s) train" in text
    assert "  train    3 views, 0 quarantined" in text
    d = info.to_dict()
    assert d["format_version"] == 2 and d["augmentation"]["views"] == 2
    assert d["splits"]["train"]["views"] == 3 and d["splits"]["dev"]["views"] == 1
    json.dumps(d)


# -- bad input: one error line, exit 2, before any extraction ----------------------------------


def _cli(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus),
        "--out", str(out), "--features", "lfcc", "--jobs", "1", "--quiet", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--views", "2"], "--views needs --augment RECIPE"),
        (["--noise-dir", "x"], "--noise-dir needs --augment RECIPE"),
        (["--augment", "gain|nosuch", "--views", "2"], "unknown augmentation 'nosuch'"),
        (["--augment", "noise(snr=3)"], "augmentation 'noise' has no parameter(s) snr"),
        (["--augment", "gain(min_db=x)"], "min_db"),
        (["--augment", "noise", "--noise-dir", "EMPTY"], "no audio files"),
        (["--augment", "noise", "--noise-dir", "MISSING"], "no such directory"),
        (["--augment", "reverb", "--rir-dir", "EMPTY"], "rir_dir"),
        (["--augment", "gain", "--noise-dir", "NOISE"], "the recipe 'gain' has no noise step"),
        (["--augment", "gain", "--views", "-1"], "--views must be from 0 to 64, got -1"),
        (["--augment", "gain", "--augment-splits", "trian"], "has no split 'trian'"),
        (["--augment", "gain", "--augment-seed", "-2"], "--augment-seed must be a non-negative"),
    ],
)
def test_bad_augmentation_options_exit_2_before_extraction(
    extra, message, corpus: Path, tmp_path: Path, capsys
) -> None:
    from featstore.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "noise").mkdir()
    sf.write(tmp_path / "noise" / "n.wav", np.full(1600, 0.1), 16000)
    paths = {"EMPTY": tmp_path / "empty", "MISSING": tmp_path / "missing"}
    paths["NOISE"] = tmp_path / "noise"
    extra = [str(paths.get(e, e)) for e in extra]
    out = tmp_path / "s.zarr"
    with pytest.raises(SystemExit) as exc:
        main(_cli(corpus, out, *extra))
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_views_without_augment_in_the_api() -> None:
    with pytest.raises(ConfigError, match="--views needs --augment"):
        featstore.build("p", "a", "o.zarr", views=3)


def test_cli_build_with_noise_dir_records_it(corpus: Path, tmp_path: Path, capsys) -> None:
    from featstore.cli import main

    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "n.wav", np.random.default_rng(0).uniform(-0.3, 0.3, 8000), 16000)
    out = tmp_path / "s.zarr"
    with pytest.raises(SystemExit) as exc:
        main(_cli(corpus, out, "--augment", "noise", "--views", "1", "--noise-dir", str(noise)))
    assert exc.value.code == 0
    assert "augmented views: 1 view(s) of train by 'noise(" in capsys.readouterr().out
    st = featstore.open_store(out)
    recipe = Recipe.from_json(st.augmentation["recipe"])
    assert recipe.chains[0].steps[0].params["noise_dir"] == str(noise.resolve())
    assert verify_store(out) == []


# -- stores at URLs ----------------------------------------------------------------------------


def test_views_at_a_url_are_uploaded_and_read_through_the_cache(
    corpus: Path, reference: Path, clean: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fsspec")
    import uuid

    from featstore.remote import upload_store

    url = f"memory://spoofstore-tests/{uuid.uuid4().hex[:8]}/views.zarr"
    summary = _build(corpus, url, cache_dir=tmp_path / "staging", **VIEWS)
    assert summary.out == url and summary.views_written == {"train": 6}
    assert_stores_equal(reference, url)  # direct reads through zarr
    cached = featstore.open_store(url, cache_dir=tmp_path / "cache")
    assert cached.array("train", "lfcc", 2).memmapped
    for view in range(3):
        ref = featstore.open_store(reference).array("train", "lfcc", view)[:]
        assert cached.array("train", "lfcc", view)[:].tobytes() == ref.tobytes()
    # a clean store at a URL gets views only by a rebuild
    other = f"memory://spoofstore-tests/{uuid.uuid4().hex[:8]}/clean.zarr"
    upload_store(clean, other)
    with pytest.raises(StoreError, match=r"^memory://.*cannot add augmented views.*--overwrite"):
        _build(corpus, other, cache_dir=tmp_path / "staging", **VIEWS)
    assert featstore.open_store(other).n_views("train") == 1
    _build(corpus, other, cache_dir=tmp_path / "staging", overwrite=True, **VIEWS)
    assert_stores_equal(reference, other)
