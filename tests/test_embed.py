"""Utterance embeddings: the model contract (``model.embed``, ``model.embedding_dim``),
``trainer.embed`` / ``trainer embed`` (ids, labels and attacks in score's order, the file read
back, the scores they give), back-end fit -> score -> metrics end to end, and bad input."""

from __future__ import annotations

import pytest
import torch

from trainer.cli import main
from trainer.models import build_model

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
