"""featstore.build: determinism across --jobs, real data, bad input, configuration, re-runs."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixture import add_utterance, assert_stores_equal, make_corpus, speechlike
from processes import alive

import featstore
from featstore import extraction, shared_rows
from featstore.build import BuildConfig, BuildSummary
from featstore.errors import (
    AudioError,
    ConfigError,
    FeatureError,
    LocatedError,
    ManifestError,
    StoreError,
)
from featstore.extraction import Task, extract_batch, received
from featstore.features.registry import compute_feature, get_feature
from featstore.shared_rows import SharedRows
from featstore.store import open_store
from featstore.store.inspect import verify_store
from featstore.store.layout import split_checksum

SMALL = {"chunk_frames": 32, "shard_frames": 128}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 8, "dev": 5}, seed=3)


@pytest.fixture(scope="module")
def clean_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    return out


def test_jobs_1_and_2_give_identical_bytes(corpus: Path, clean_store: Path, tmp_path: Path):
    out = tmp_path / "jobs2.zarr"
    summary = featstore.build(
        corpus / "protocols", corpus, out, jobs=2, batch_size=2, quiet=True, **SMALL
    )
    assert summary.written == {"dev": 5, "train": 8}
    assert_stores_equal(clean_store, out)
    for split in ("dev", "train"):  # the shard files themselves are identical too
        for path in sorted((clean_store / split).rglob("*")):
            if path.is_file():
                assert path.read_bytes() == (out / path.relative_to(clean_store)).read_bytes()


def _arena_dirs() -> list[str]:
    """This process's shared-memory arena directories (a build must leave none)."""
    prefix = f"featstore-rows-{os.getpid()}-"
    return [p for p in os.listdir("/dev/shm") if p.startswith(prefix)] if HAS_SHM else []


HAS_SHM = shared_rows.supported() and os.path.isdir("/dev/shm")


@pytest.mark.skipif(not HAS_SHM, reason="shared-memory arenas: Linux x86-64 with /dev/shm")
def test_jobs_2_with_rows_partly_inline_gives_identical_bytes(
    corpus: Path, clean_store: Path, tmp_path: Path, monkeypatch
) -> None:
    """A ring so small that the workers send some arrays through it and the others inline
    (too large for it, or it is full of their own batch): the store is still the same."""
    monkeypatch.setattr(shared_rows, "DEFAULT_CAPACITY", 320 * 1024)  # 14 inline, 12 shared
    out = tmp_path / "mixed.zarr"
    featstore.build(corpus / "protocols", corpus, out, jobs=2, batch_size=3, quiet=True, **SMALL)
    assert_stores_equal(clean_store, out)
    assert _arena_dirs() == []


def test_rows_travel_through_the_arena_released_batch_by_batch(tmp_path: Path, monkeypatch):
    """In-process: a worker's results carry SharedRows, the build side sees the same arrays
    as without an arena, and a batch's space is released before the next batch is computed
    (a ring that holds one batch serves every batch without waiting)."""
    if not shared_rows.supported():
        pytest.skip("arenas: Linux x86-64 only")
    root = make_corpus(tmp_path / "c", {"dev": 6}, seconds=(1.0, 1.0), seed=4)
    files = sorted((root / "flac").glob("*.flac"))
    specs = (("logmel", get_feature("logmel").resolve()),)
    tasks = [Task(i, str(f), None) for i, f in enumerate(files)]
    expected = extract_batch(tasks, specs)
    one = expected[0].feats["logmel"].nbytes
    assert all(r.feats["logmel"].nbytes == one for r in expected)
    monkeypatch.setattr(shared_rows, "WAIT_SECONDS", 0.05)  # no release: inline, fast
    with shared_rows.arenas(root=str(tmp_path), capacity=3 * (-(-one // 64) * 64)) as reader:
        sent: list[list] = []

        def worker():
            for start in range(0, len(tasks), 2):  # each batch needs the previous one's space
                sent.append(extract_batch(tasks[start : start + 2], specs, arena=reader.spec))
                yield sent[-1]

        got = [
            {k: v.copy() for k, v in r.feats.items()}
            for batch in received(worker(), reader)
            for r in batch
        ]
    assert all(isinstance(r.feats["logmel"], SharedRows) for batch in sent for r in batch)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g["logmel"], e.feats["logmel"])


def test_summary_and_rerun_is_noop(corpus: Path, clean_store: Path) -> None:
    again = featstore.build(corpus / "protocols", corpus, clean_store, jobs=1, quiet=True, **SMALL)
    assert isinstance(again, BuildSummary) and again.noop
    assert again.skipped == {"dev": 5, "train": 8}
    assert "already complete" in str(again) and "nothing to do" in str(again)


def test_reconcile_states(corpus: Path, clean_store: Path, tmp_path: Path) -> None:
    from featstore.build import _make_writer, _plan, _reconcile, _resolve_config, _StoreStatus

    def state(out: Path, overwrite: bool = False, **overrides):
        plan = _plan(corpus / "protocols", out, _resolve_config(None, {**SMALL, **overrides}))
        return _reconcile(_make_writer(plan.out, plan.fmt, False), plan, overwrite)

    assert state(tmp_path / "new.zarr").status is _StoreStatus.FRESH
    done = state(clean_store)
    assert done.status is _StoreStatus.COMPLETE and done.metadata["complete"]
    other = state(clean_store, features="mgd")
    assert other.status is _StoreStatus.CONFLICT
    assert "different configuration" in other.conflict
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "notes.txt").write_text("mine")
    junk = state(tmp_path / "junk.zarr")
    assert junk.status is _StoreStatus.CONFLICT and "not a spoofstore" in junk.conflict
    assert (tmp_path / "junk.zarr" / "notes.txt").exists()  # refused, not touched


def test_different_config_is_refused_then_overwritten(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    kw = {"jobs": 1, "quiet": True, **SMALL}
    featstore.build(corpus / "protocols", corpus, out, features="logmel", **kw)
    with pytest.raises(StoreError, match=r"different configuration.*--overwrite"):
        featstore.build(corpus / "protocols", corpus, out, features="mgd", **kw)
    with pytest.raises(StoreError, match="different configuration"):
        featstore.build(
            corpus / "protocols",
            corpus,
            out,
            features="logmel",
            feature_params={"logmel": {"n_mels": 64}},
            **kw,
        )
    assert list(open_store(out).features) == ["logmel"]
    featstore.build(corpus / "protocols", corpus, out, features="mgd", overwrite=True, **kw)
    assert list(open_store(out).features) == ["mgd"]


def test_different_manifest_is_refused(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    kw = {"jobs": 1, "quiet": True, "features": "logmel", **SMALL}
    featstore.build(corpus / "protocols", corpus, out, **kw)
    one = corpus / "protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    with pytest.raises(StoreError, match="different manifest"):
        featstore.build(one, corpus, out, **kw)


def test_refuses_to_touch_a_foreign_directory(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious.zarr"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not a spoofstore feature store"):
            featstore.build(
                corpus / "protocols", corpus, out, jobs=1, quiet=True, overwrite=overwrite
            )
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_hdf5_by_suffix_equals_zarr(corpus: Path, clean_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    summary = featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    assert summary.format == "hdf5" and out.is_file()
    assert not out.with_name("s.h5.build").exists()  # staging removed
    st = open_store(out)
    assert st.format == "hdf5"
    ref = open_store(clean_store)
    for split in ref.splits:
        for f in ref.features:
            assert st.array(split, f)[:].tobytes() == ref.array(split, f)[:].tobytes()
            assert st.checksum(split, f) == ref.checksum(split, f)
    forced = tmp_path / "forced.store"
    featstore.build(
        corpus / "protocols", corpus, forced, jobs=1, quiet=True, format="hdf5", **SMALL
    )
    assert open_store(forced).format == "hdf5"


def test_real_la_mini_matches_compute_feature(la_mini: Path, tmp_path: Path) -> None:
    out = tmp_path / "la.zarr"
    summary = featstore.build(la_mini / "protocols", la_mini, out, jobs=1, quiet=True)
    assert summary.written == {"dev": 25} and not summary.quarantine
    assert summary.audio_seconds == pytest.approx(75.35, abs=0.05)
    st = open_store(out)
    ix = st.index("dev")
    assert len(ix) == 25 and set(ix["key"]) == {"bonafide", "spoof"}
    for row in (0, 12, 24):
        uid = str(ix["utt_id"][row])
        x, sr = sf.read(la_mini / "flac" / f"{uid}.flac", dtype="float64")
        for feature in ("mgd", "logmel"):
            np.testing.assert_array_equal(
                st.read("dev", feature, uid), compute_feature(feature, x, sr)
            )
    assert verify_store(out) == []


# -- bad input --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_corpus(tmp_path_factory.mktemp("bad"), {"dev": 3}, seed=5)
    rng = np.random.default_rng(9)
    add_utterance(root, "dev", "LA_D_MISSING")
    good = speechlike(rng, 1.0)
    path = add_utterance(root, "dev", "LA_D_TRUNC")
    sf.write(path, good, 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    add_utterance(root, "dev", "LA_D_EMPTY").write_bytes(b"")
    sf.write(add_utterance(root, "dev", "LA_D_SHORT"), good[:200], 16000, subtype="PCM_16")
    sf.write(add_utterance(root, "dev", "LA_D_SILENT"), np.zeros(16000), 16000, subtype="PCM_16")
    nan = good.astype(np.float32).copy()
    nan[100] = np.nan
    wav = add_utterance(root, "dev", "LA_D_NAN").with_suffix(".wav")
    sf.write(wav, nan, 16000, subtype="FLOAT")
    sf.write(
        add_utterance(root, "dev", "LA_D_44K"), speechlike(rng, 1.0, 44100), 44100, subtype="PCM_16"
    )
    stereo = np.stack([good, 0.5 * good], axis=1)
    sf.write(add_utterance(root, "dev", "LA_D_STEREO"), stereo, 16000, subtype="PCM_16")
    add_utterance(root, "dev", "LA_D_LAST")
    sf.write(root / "flac" / "LA_D_LAST.flac", good, 16000, subtype="PCM_16")
    return root


def test_bad_utterances_are_quarantined_with_reasons(bad_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad.zarr"
    summary = featstore.build(bad_corpus / "protocols", bad_corpus, out, jobs=1, quiet=True)
    reasons = {utt: reason for _, utt, reason in summary.quarantine}
    assert set(reasons) == {
        "LA_D_MISSING",
        "LA_D_TRUNC",
        "LA_D_EMPTY",
        "LA_D_SHORT",
        "LA_D_SILENT",
        "LA_D_NAN",
    }
    assert "no audio file" in reasons["LA_D_MISSING"]
    assert "LA_D_TRUNC.flac" in reasons["LA_D_TRUNC"]
    assert "LA_D_EMPTY.flac" in reasons["LA_D_EMPTY"]
    assert "too short: 200 samples" in reasons["LA_D_SHORT"]
    assert "silent" in reasons["LA_D_SILENT"]
    assert "NaN" in reasons["LA_D_NAN"]
    assert summary.written == {"dev": 6} and summary.quarantined == {"dev": 6}
    assert "6 utterance(s) quarantined" in str(summary)
    st = open_store(out)
    assert sorted(u for _, u, _ in st.quarantine) == sorted(reasons)
    ix = st.index("dev")
    assert list(ix["utt_id"]) == [
        "LA_D_1000000",
        "LA_D_1000001",
        "LA_D_1000002",
        "LA_D_44K",
        "LA_D_STEREO",
        "LA_D_LAST",
    ]
    row = {u: i for i, u in enumerate(ix["utt_id"])}
    assert ix["sample_rate"][row["LA_D_44K"]] == 44100
    assert "resampled 44100->16000" in ix["notes"][row["LA_D_44K"]]
    assert ix["duration"][row["LA_D_44K"]] == pytest.approx(1.0, abs=1e-3)
    assert ix["channels"][row["LA_D_STEREO"]] == 2
    assert "downmixed 2 channels" in ix["notes"][row["LA_D_STEREO"]]
    x, _ = sf.read(bad_corpus / "flac" / "LA_D_STEREO.flac", dtype="float64")
    np.testing.assert_array_equal(
        st.read("dev", "mgd", "LA_D_STEREO"), compute_feature("mgd", x.mean(axis=1))
    )
    assert verify_store(out) == []


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_split_with_every_utterance_quarantined_fails_then_a_rerun_retries(
    tmp_path: Path, suffix: str
) -> None:
    root = make_corpus(tmp_path / "c", {"train": 2})
    add_utterance(root, "dev", "LA_D_GONE1")
    add_utterance(root, "dev", "LA_D_GONE2", key="spoof")
    out = tmp_path / f"s{suffix}"
    kw = {"jobs": 1, "quiet": True, **SMALL}
    with pytest.raises(
        AudioError,
        match=r"all 2 utterances of split dev were quarantined \(2 x no audio file for "
        r"utterance '\*'.*check --audio-root",
    ):
        featstore.build(root / "protocols", root, out, **kw)
    with pytest.raises(StoreError, match="incomplete"):  # not marked complete
        open_store(out)
    rng = np.random.default_rng(1)  # the audio is found: the same command retries the split
    for uid in ("LA_D_GONE1", "LA_D_GONE2"):
        sf.write(root / "flac" / f"{uid}.flac", speechlike(rng, 1.0), 16000, subtype="PCM_16")
    summary = featstore.build(root / "protocols", root, out, **kw)
    assert not summary.noop and summary.written == {"dev": 2, "train": 2}
    assert summary.quarantine == []
    assert summary.labels["dev"] == {"bonafide": 1, "spoof": 1}
    assert verify_store(out) == []
    clean = tmp_path / f"clean{suffix}"
    featstore.build(root / "protocols", root, clean, **kw)
    assert_stores_equal(clean, out)


def test_max_quarantine_fraction(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 3})
    add_utterance(root, "dev", "LA_D_GONE1")
    add_utterance(root, "dev", "LA_D_GONE2")
    kw = {"jobs": 1, "quiet": True, **SMALL}
    summary = featstore.build(root / "protocols", root, tmp_path / "a.zarr", **kw)  # 2/5 <= 0.5
    assert summary.quarantined == {"dev": 2}
    with pytest.raises(
        AudioError,
        match=r"2 of 5 utterances of split dev were quarantined, more than "
        r"--max-quarantine 0.3 of them \(2 x no audio file",
    ):
        featstore.build(root / "protocols", root, tmp_path / "b.zarr", max_quarantine=0.3, **kw)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(tmp_path / "b.zarr")
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ConfigError, match="max_quarantine"):
            BuildConfig(max_quarantine=bad)


def test_retry_quarantined_of_an_unfinished_and_of_a_complete_store(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 3})
    add_utterance(root, "dev", "LA_D_GONE")  # 1 of 4 in dev: passes
    add_utterance(root, "train", "LA_T_GONE")  # 1 of 1 in train: fails the build
    kw = {"jobs": 1, "quiet": True, **SMALL}
    out = tmp_path / "s.zarr"
    with pytest.raises(AudioError, match="split train"):
        featstore.build(root / "protocols", root, out, **kw)
    rng = np.random.default_rng(2)
    for uid in ("LA_D_GONE", "LA_T_GONE"):
        sf.write(root / "flac" / f"{uid}.flac", speechlike(rng, 1.0), 16000, subtype="PCM_16")
    clean = tmp_path / "clean.zarr"
    featstore.build(root / "protocols", root, clean, **kw)
    # unfinished: the finished split dev keeps its quarantined utterance unless asked
    summary = featstore.build(root / "protocols", root, out, **kw)
    assert summary.written == {"train": 1} and summary.skipped["dev"] == 4
    assert [u for _, u, _ in summary.quarantine] == ["LA_D_GONE"]
    # complete: a plain re-run is a no-op; --retry-quarantined rebuilds it
    assert featstore.build(root / "protocols", root, out, **kw).noop
    summary = featstore.build(root / "protocols", root, out, retry_quarantined=True, **kw)
    assert not summary.noop and summary.quarantine == [] and summary.written["dev"] == 4
    assert_stores_equal(clean, out)
    assert featstore.build(root / "protocols", root, out, retry_quarantined=True, **kw).noop


def test_retry_quarantined_resumes_an_unfinished_build(tmp_path: Path, monkeypatch) -> None:
    from featstore.store.zarr_backend import ZarrWriter

    root = make_corpus(tmp_path / "c", {"dev": 3, "train": 2})
    add_utterance(root, "dev", "LA_D_GONE")
    kw = {"jobs": 1, "quiet": True, **SMALL}
    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:  # killed after dev, before the store is complete
        m.setattr(ZarrWriter, "finish", lambda self, metadata: (_ for _ in ()).throw(KeyError))
        with pytest.raises(KeyError):
            featstore.build(root / "protocols", root, out, **kw)
    sf.write(root / "flac" / "LA_D_GONE.flac", speechlike(np.random.default_rng(3), 1.0), 16000)
    summary = featstore.build(root / "protocols", root, out, retry_quarantined=True, **kw)
    assert summary.written == {"dev": 4} and summary.skipped == {"dev": 0, "train": 2}
    assert summary.quarantine == []
    clean = tmp_path / "clean.zarr"
    featstore.build(root / "protocols", root, clean, **kw)
    assert_stores_equal(clean, out)


@pytest.mark.parametrize("jobs", [1, 2])
def test_strict_stops_at_first_bad_utterance(bad_corpus: Path, tmp_path: Path, jobs: int) -> None:
    with pytest.raises(AudioError, match=r"LA_D_MISSING.*--strict"):
        featstore.build(
            bad_corpus / "protocols",
            bad_corpus,
            tmp_path / "s.zarr",
            jobs=jobs,
            batch_size=1,
            quiet=True,
            strict=True,
        )
    assert _arena_dirs() == []  # the workers' rings are gone with the failed build


def test_strict_stop_with_batches_in_flight_prints_only_the_error(bad_corpus: Path, tmp_path):
    """Abandoning the workers' batches on purpose is not worth joblib's advice on stderr."""
    argv = ["build", "--manifest", str(bad_corpus / "protocols"), "--audio-root", str(bad_corpus)]
    argv += ["--out", str(tmp_path / "s.zarr"), "--jobs", "2", "--strict", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "featstore", *argv], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: dev/LA_D_MISSING") and proc.stderr.count("\n") == 1


def test_manifest_errors(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 2})
    proto = root / "protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    good = proto.read_text()
    proto.write_text(good + "LA_0001 LA_D_X spoof\n")
    with pytest.raises(ManifestError, match=r"ASVspoof2019.LA.cm.dev.trl.txt:3"):
        featstore.build(root / "protocols", root, tmp_path / "a.zarr", jobs=1, quiet=True)
    proto.write_text(good + good.splitlines()[0] + "\n")
    with pytest.raises(ManifestError, match="LA_D_1000000"):
        featstore.build(root / "protocols", root, tmp_path / "b.zarr", jobs=1, quiet=True)
    proto.write_text(good + "LA_0001 ../../etc/passwd - - bonafide\n")
    with pytest.raises(ManifestError, match="unsafe utterance id"):
        featstore.build(root / "protocols", root, tmp_path / "c.zarr", jobs=1, quiet=True)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "c.zarr").exists()


# -- configuration ------------------------------------------------------------------------------


def test_toml_config_sets_fields_and_feature_params(corpus: Path, tmp_path: Path) -> None:
    toml = tmp_path / "featstore.toml"
    toml.write_text(
        "jobs = 1\nchunk_frames = 32\nshard_frames = 128\n\n"
        "[features.mgd]\nrho = 0.2\n\n[features.logmel]\nn_mels = 40\n"
    )
    cfg = BuildConfig.from_toml(toml)
    assert cfg.features == ("mgd", "logmel") and cfg.jobs == 1 and cfg.shard_frames == 128
    assert cfg.feature_params == {"mgd": {"rho": 0.2}, "logmel": {"n_mels": 40}}
    assert cfg.fingerprint("zarr") != BuildConfig(**SMALL).fingerprint("zarr")
    assert cfg.fingerprint("zarr") != cfg.fingerprint("hdf5")
    assert BuildConfig(jobs=1).fingerprint("zarr") == BuildConfig(jobs=2).fingerprint("zarr")
    out = tmp_path / "s.zarr"
    featstore.build(corpus / "protocols", corpus, out, config=toml, quiet=True)
    st = open_store(out)
    assert st.features["mgd"]["rho"] == 0.2 and st.features["logmel"]["n_bins"] == 40
    assert st.fingerprint == cfg.fingerprint("zarr")
    x, sr = sf.read(corpus / "flac" / "LA_D_1000001.flac", dtype="float64")
    np.testing.assert_array_equal(
        st.read("dev", "mgd", "LA_D_1000001"), compute_feature("mgd", x, sr, rho=0.2)
    )
    # explicit arguments override the file
    out2 = tmp_path / "s2.zarr"
    featstore.build(corpus / "protocols", corpus, out2, features="mgd", config=toml, quiet=True)
    assert list(open_store(out2).features) == ["mgd"]
    assert open_store(out2).features["mgd"]["rho"] == 0.2


def test_toml_list_form_and_errors(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text('features = ["logmel"]\nstrict = true\n')
    assert BuildConfig.from_toml(toml).features == ("logmel",)
    toml.write_text("jobz = 3\n")
    with pytest.raises(LocatedError, match=r"unknown key.*jobz"):
        BuildConfig.from_toml(toml)
    toml.write_text("[features.mgd]\nrhoo = 1\n")
    with pytest.raises(FeatureError, match="rhoo"):
        BuildConfig.from_toml(toml)
    toml.write_text("jobs = \n")
    with pytest.raises(LocatedError, match="invalid TOML"):
        BuildConfig.from_toml(toml)
    with pytest.raises(LocatedError, match="no such configuration file"):
        BuildConfig.from_toml(tmp_path / "nope.toml")


def test_config_validation() -> None:
    with pytest.raises(FeatureError, match="unknown feature"):
        BuildConfig(features=("mfcc",))
    with pytest.raises(FeatureError, match="multiple of chunk_frames"):
        BuildConfig(chunk_frames=100, shard_frames=250)
    with pytest.raises(FeatureError, match="jobs"):
        BuildConfig(jobs=0)
    with pytest.raises(FeatureError, match="format"):
        BuildConfig(format="npy")
    record = BuildConfig().fingerprint_record("zarr")
    assert json.loads(json.dumps(record)) == record
    assert record["features"]["mgd"]["n_bins"] == 257


def test_invalid_config_values_raise_config_error() -> None:
    from featstore.errors import ConfigError

    for bad in ({"jobs": 0}, {"batch_size": 0}, {"format": "npy"}, {"features": ()}):
        with pytest.raises(ConfigError):
            BuildConfig(**bad)
    with pytest.raises(ConfigError, match="listed twice"):
        BuildConfig(features=("mgd", "mgd"))
    with pytest.raises(ConfigError, match="multiple of chunk_frames"):
        BuildConfig(chunk_frames=100, shard_frames=250)


def test_split_checksum_is_sha256_of_digests() -> None:
    import hashlib

    d = [hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()]
    expected = hashlib.sha256(bytes.fromhex(d[0]) + bytes.fromhex(d[1])).hexdigest()
    assert split_checksum(d) == expected


def test_store_layer_does_not_import_the_build_layer() -> None:
    import ast

    store_dir = Path(featstore.__file__).parent / "store"
    offenders = []
    for path in sorted(store_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("featstore.build")]
    assert offenders == []


def test_featstore_build_attribute_stays_the_function() -> None:

    module = importlib.import_module("featstore.build")  # importing the submodule again
    assert featstore.build is module.build  # ... does not shadow the API function
    assert module.BuildConfig is BuildConfig


def test_worker_memory_tuning_sets_glibc_thresholds_once(monkeypatch) -> None:
    import ctypes

    calls = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    extraction._keep_freed_memory.cache_clear()
    try:
        extraction._keep_freed_memory()
        extraction._keep_freed_memory()  # once per process
        assert calls == [(-3, 32 << 20), (-1, 512 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    finally:
        extraction._keep_freed_memory.cache_clear()


_CHILD = """
import sys, time
from featstore import extraction
extraction._exit_with_parent(0.05)
print("ready", flush=True)
time.sleep(60)
"""

_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_worker_process_ends_when_its_parent_is_killed() -> None:
    """A build killed with SIGKILL must not leave its workers running (holding memory)."""
    import signal
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        parent.kill()


def test_a_batch_run_in_the_build_process_does_not_set_it_up_as_a_worker(monkeypatch) -> None:
    """joblib runs batches in the caller when it has one worker (``jobs = -1`` on one core):
    the build process must not tune its allocator or exit when *its* parent goes away."""
    calls = []
    monkeypatch.setattr(extraction, "_set_up_worker_process", lambda: calls.append(1))
    extract_batch([], (), build_pid=os.getpid())
    assert calls == []
    extract_batch([], (), build_pid=os.getpid() + 1)  # as in a worker process
    assert calls == [1]


def test_worker_memory_tuning_is_a_no_op_without_mallopt(monkeypatch) -> None:
    import ctypes

    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    extraction._keep_freed_memory.cache_clear()
    try:
        extraction._keep_freed_memory()  # no error
    finally:
        extraction._keep_freed_memory.cache_clear()
