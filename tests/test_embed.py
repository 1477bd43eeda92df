"""Utterance embeddings: the model contract (``model.embed``, ``model.embedding_dim``),
``trainer.embed`` / ``trainer embed`` (ids, labels and attacks in score's order, the file read
back, the scores they give), back-end fit -> score -> metrics end to end, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from corpus_fixture import make_corpus, protocol_path
from soundfile import write as write_audio

import featstore
import trainer
from trainer.cli import main
from trainer.embeddings import read_embeddings
from trainer.models import build_model
from trainer.scorefiles import read_cm_scores

pytestmark = pytest.mark.filterwarnings("ignore:.*were quarantined:UserWarning")

SHORT = "LA_E_SHORT01"  # 10 ms of audio: quarantined by the build
FAST = dict(epochs=1, batch_size=4, workers=0, threads=1, progress=False, lr=1e-3, warmup=0.0)
RUNS = {
    # whole utterances (eval_window None)
    "lcnn": dict(model="lcnn", model_kwargs={"n_bins": 20, "train_frames": 24}),
    # fixed windows of 32 frames every 16, averaged
    "grcnn-logmel": dict(
        model="grcnn-logmel",
        crop_frames=32,
        model_kwargs={"n_bins": 32, "embedding_size": 16, "eval_window": 32, "eval_hop": 16},
    ),
}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# --- the model contract -----------------------------------------------------------------------


def _last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    head = model.classifier
    return head[-1] if isinstance(head, torch.nn.Sequential) else head


CONTRACT = {
    # name: (kwargs, frames, embedding_dim)
    "grcnn": ({"n_bins": 32}, 50, 960),  # two streams of 480 at the default embedding_size
    "grcnn-mgd": ({"n_bins": 32}, 40, 480),
    "vgg10": ({}, 17 + 3 * 8 + 2, 1024),  # several windows: the mean over windows
    "lcnn": ({}, 70, 96),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_forward_is_the_last_linear_layer_of_embed(name):
    kwargs, frames, dim = CONTRACT[name]
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    x = {f: torch.randn(3, frames, model.n_bins[f], generator=g) for f in model.features}
    with torch.no_grad():
        e = model.embed(**x)
        logits = model(**x)
    assert model.embedding_dim == dim and e.shape == (3, dim)
    torch.testing.assert_close(logits, _last_linear(model)(e), rtol=1e-5, atol=1e-6)


def test_vgg10_embedding_of_a_long_input_is_the_mean_of_its_windows():
    torch.manual_seed(0)
    model = build_model("vgg10").eval()
    x = torch.randn(2, 17 + 2 * 8, 64)
    with torch.no_grad():
        whole = model.embed(fbank=x)
        windows = torch.stack([model.embed(fbank=x[:, s : s + 17]) for s in (0, 8, 16)])
    torch.testing.assert_close(whole, windows.mean(0), rtol=1e-5, atol=1e-6)


def test_grcnn_embedding_is_the_streams_embeddings_concatenated():
    torch.manual_seed(0)
    model = build_model("grcnn", n_bins=32).eval()
    x = {f: torch.randn(2, 40, 32) for f in model.features}
    with torch.no_grad():
        e = model.embed(**x)
        parts = [model.streams[f](x[f]) for f in ("mgd", "logmel")]
    torch.testing.assert_close(e, torch.cat(parts, dim=1))


def test_a_model_without_embed_is_refused_with_an_error():
    from trainer.embedding_extraction import _check_embeds
    from trainer.models import ModelError

    with pytest.raises(ModelError, match=r"has no utterance embedding.*embed\(\*\*features\)"):
        _check_embeds(torch.nn.Linear(2, 2), "mine")


def test_public_api_exports():
    from trainer import backends, embedding_extraction, embeddings

    assert trainer.embed is embedding_extraction.embed
    assert trainer.read_embeddings is embeddings.read_embeddings
    assert trainer.write_embeddings is embeddings.write_embeddings
    assert trainer.fit_backend is backends.fit_backend
    assert trainer.score_embeddings is backends.score_embeddings


# --- trainer.embed on a tiny store and run ----------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A keyed store (train/dev/eval, one eval utterance quarantined), one tiny run per model
    and an lfcc-gmm run."""
    root = tmp_path_factory.mktemp("embed")
    corpus = make_corpus(root / "corpus", {"train": 12, "dev": 6, "eval": 8}, (0.3, 0.6))
    with open(protocol_path(corpus, "eval"), "a") as fh:
        fh.write(f"LA_0001 {SHORT} - A01 spoof\n")
    write_audio(corpus / "flac" / f"{SHORT}.flac", np.full(160, 0.1), 16000, subtype="PCM_16")
    store = root / "store.zarr"
    build = dict(features=["logmel", "lfcc"], jobs=1, quiet=True, fsync=False)
    featstore.build(corpus / "protocols", corpus, store, **build)
    runs = {}
    for name, settings_ in RUNS.items():
        out = root / "runs" / f"{name}-20261122-000000"
        trainer.fit(str(store), out=out, **FAST, **settings_)
        runs[name] = out
    gmm = root / "runs" / "lfcc-gmm-x"
    trainer.fit(str(store), model="lfcc-gmm", out=gmm, model_kwargs={"n_components": 2}, **FAST)
    return {"root": root, "store": store, "runs": runs, "gmm": gmm}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_embeddings_in_score_order_with_labels_attacks_and_the_scores(world, tmp_path, name):
    """Same utterances, order and keys as the score file; the run's last linear layer on the
    embeddings gives its scores (same normalisation, windowing: the mean over windows)."""
    run = world["runs"][name]
    path = trainer.embed(run, split="eval", out=tmp_path / "e.npz", progress=False)
    emb = read_embeddings(path)
    scores = read_cm_scores(trainer.score(run=run, out=tmp_path / "s.txt", progress=False))
    assert emb.utt_id.tolist() == list(scores.utt_ids) and SHORT not in emb.utt_id
    index = featstore.open_store(world["store"]).index("eval")
    assert emb.utt_id.tolist() == [str(u) for u in index["utt_id"]]
    assert emb.label.tolist() == index["label"].tolist()
    assert emb.attack.tolist() == [
        str(s) if k == 0 else "-" for s, k in zip(index["system"], index["label"], strict=True)
    ]
    assert {a for a in emb.attack.tolist() if a != "-"} <= {f"A0{i}" for i in range(1, 7)}
    state = torch.load(run / "best.pt", weights_only=True)
    net = build_model(state["config"]["model"]["name"], **state["config"]["model"]["kwargs"])
    net.load_state_dict(state["model"])
    with torch.no_grad():
        logits = _last_linear(net)(torch.tensor(emb.vectors))
    np.testing.assert_allclose((logits[:, 1] - logits[:, 0]).numpy(), scores.scores, atol=1e-4)
    assert emb.dim == net.embedding_dim
    meta = emb.meta
    assert meta["model"] == name and meta["run"] == str(run.resolve())
    assert meta["split"] == "eval" and meta["dim"] == emb.dim
    assert meta["fingerprint"] == featstore.open_store(world["store"]).fingerprint
    assert meta["store"] == str(world["store"].resolve())
    assert meta["normalisation"] == "checkpoint" and meta["quarantined"] == [SHORT]
    assert meta["unembedded"] == [] and meta["checkpoint"]["path"] == str(run / "best.pt")
    assert meta["eval_window"] == (None if name == "lcnn" else 32)


def test_default_path_is_zarr_in_the_run_and_equals_the_npz(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["runs"]["lcnn"], run)
    path = trainer.embed(run, split="dev", progress=False)
    assert path == run / "embeddings_dev.zarr" and path.is_dir()
    npz = trainer.embed(run, split="dev", out=tmp_path / "dev.npz", progress=False)
    a, b = read_embeddings(path), read_embeddings(npz)
    assert a.utt_id.tolist() == b.utt_id.tolist() and a.label.tolist() == b.label.tolist()
    assert a.attack.tolist() == b.attack.tolist()
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert trainer.embed(run, split="dev", progress=False) == path  # same run/store/split: ok


def test_batch_size_does_not_change_the_embeddings(world, tmp_path):
    run = world["runs"]["grcnn-logmel"]
    a = read_embeddings(trainer.embed(run, out=tmp_path / "a.npz", progress=False))
    b = read_embeddings(trainer.embed(run, out=tmp_path / "b.npz", batch_size=1, progress=False))
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["logreg", "plda"])
def test_cli_embed_backend_fit_score_and_metrics_end_to_end(world, tmp_path, capsys, kind):
    run = str(world["runs"]["lcnn"])
    files = {}
    for split in ("train", "dev", "eval"):
        files[split] = tmp_path / f"{split}.zarr"
        args = ["embed", "--run", run, "--split", split, "--out", str(files[split]), "--quiet"]
        rc, out, err = run_cli(args, capsys)
        assert rc == 0, err
        assert f"wrote {files[split]} (" in out and "dims of split" in out
    assert "warning: 1 utterance(s) of split 'eval' were quarantined" in err
    backend = tmp_path / "b.npz"
    rc, out, err = run_cli(
        ["backend", "fit", "--kind", kind, str(files["train"]), "--dev", str(files["dev"]),
         "--out", str(backend)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    scores = tmp_path / "scores.txt"
    rc, out, err = run_cli(
        ["backend", "score", str(backend), str(files["eval"]), "--out", str(scores)], capsys
    )
    assert rc == 0, err
    rc, out, err = run_cli(["metrics", str(scores)], capsys)
    assert rc == 0, err
    assert "EER" in out
    ids = [str(u) for u in featstore.open_store(world["store"]).index("eval")["utt_id"]]
    assert list(read_cm_scores(scores).utt_ids) == ids


# --- bad input --------------------------------------------------------------------------------


def test_gmm_baseline_has_no_embedding(world, tmp_path, capsys):
    out = tmp_path / "e.zarr"
    rc, _, err = run_cli(["embed", "--run", str(world["gmm"]), "--out", str(out)], capsys)
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "lfcc-gmm GMM baseline: it has no utterance embedding" in err
    assert not out.exists()


def test_unknown_split_and_no_run(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "e.zarr"
    args = ["embed", "--run", str(world["runs"]["lcnn"]), "--split", "nope", "--out", str(out)]
    rc, _, err = run_cli(args, capsys)
    assert rc == 2 and "no split 'nope'" in err and not out.exists()
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(["embed"], capsys)
    assert rc == 2 and err.startswith("error: ")


def test_never_replaces_what_is_not_an_embedding_file(world, tmp_path, capsys):
    run = str(world["runs"]["lcnn"])
    victim = tmp_path / "notes.npz"
    victim.write_bytes(b"precious")
    for force in ([], ["--force"]):
        rc, _, err = run_cli(["embed", "--run", run, "--out", str(victim), *force], capsys)
        assert rc == 2 and "is not an embedding file; not replacing it" in err
        assert victim.read_bytes() == b"precious"
    store_copy = tmp_path / "store.zarr"  # e.g. --out pointing at a feature store
    shutil.copytree(world["store"], store_copy)
    rc, _, err = run_cli(["embed", "--run", run, "--out", str(store_copy)], capsys)
    assert rc == 2 and "not an embedding file" in err
    assert featstore.open_store(store_copy).fingerprint


def test_replaces_embeddings_of_another_split_only_with_force(world, tmp_path, capsys):
    run = str(world["runs"]["lcnn"])
    out = tmp_path / "e.npz"
    trainer.embed(run, split="dev", out=out, progress=False)
    before = out.read_bytes()
    rc, _, err = run_cli(["embed", "--run", run, "--split", "eval", "--out", str(out)], capsys)
    assert rc == 2 and "holds embeddings of split 'dev'" in err and "--force" in err
    assert out.read_bytes() == before
    rc, _, err = run_cli(["embed", "--run", run, "--out", str(out), "--force", "--quiet"], capsys)
    assert rc == 0, err
    assert read_embeddings(out).meta["split"] == "eval"


def test_utterance_without_frames_is_left_out_with_a_warning(world, tmp_path, monkeypatch):
    from trainer import embedding_extraction

    real = embedding_extraction.extract_embeddings

    def losing_one(*args, **kwargs):
        vectors = real(*args, **kwargs)
        vectors[2] = np.nan  # what extraction gives an utterance without frames
        return vectors

    monkeypatch.setattr(embedding_extraction, "extract_embeddings", losing_one)
    run = world["runs"]["lcnn"]
    with pytest.warns(UserWarning, match=r"1 utterance\(s\).*no frames.*left out"):
        path = trainer.embed(run, out=tmp_path / "e.npz", progress=False)
    emb = read_embeddings(path)
    ids = [str(u) for u in featstore.open_store(world["store"]).index("eval")["utt_id"]]
    assert emb.utt_id.tolist() == ids[:2] + ids[3:]
    assert emb.meta["unembedded"] == [ids[2]]


def test_disk_full_is_an_environment_fault_exit_1(world, tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    out = tmp_path / "e.npz"
    args = ["embed", "--run", str(world["runs"]["lcnn"]), "--out", str(out), "--quiet"]
    rc, _, err = run_cli(args, capsys)
    assert rc == 1 and err.startswith("error: ") and "No space left on device" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
