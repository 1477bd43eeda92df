"""Tests of trainer.models: registry, attributes, shapes, gradients, GRCNN vs a reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from featstore.errors import SpoofstoreError
from trainer.models import MODELS, ModelConfigError, ModelError, ModelSpec, build_model
from trainer.models.grcnn import GRCNN, frame_windows, n_windows
from trainer.models.maxout import Maxout, maxout
from trainer.models.registry import wrap_frames

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_grcnn.py"

ATTRIBUTES = {
    # name: (features, n_bins, train_frames, eval_window, eval_hop)
    "grcnn": (("mgd", "logmel"), {"mgd": 256, "logmel": 256}, 256, None, None),
    "grcnn-mgd": (("mgd",), {"mgd": 256}, 256, None, None),
    "grcnn-logmel": (("logmel",), {"logmel": 256}, 256, None, None),
    "vgg10": (("fbank",), {"fbank": 64}, 17, 17, 8),
    "lcnn": (("lfcc",), {"lfcc": 60}, 400, None, None),
}


def _grcnn_params(streams: int) -> int:
    cells = 0
    for c_in, width, k in ((1, 16, 5), (8, 32, 3), (16, 16, 3)):
        state = width // 2
        cells += c_in * 3 * width * k * k + 3 * width + state * 3 * width * k * k
    return streams * (cells + 8192 * 960 + 960) + 480 * streams * 2 + 2


PARAMETERS = {
    "grcnn": _grcnn_params(2),
    "grcnn-mgd": _grcnn_params(1),
    "grcnn-logmel": _grcnn_params(1),
    "vgg10": 1_125_766,
    "lcnn": 269_826,
}


def _inputs(model, n_frames: int, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(batch, n_frames, model.n_bins[f], generator=g) for f in model.features}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tiny problems gain nothing from two, and on a loaded
    machine OpenMP threads waiting for each other cost several times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NETWORKS = sorted(name for name, spec in MODELS.items() if spec.family == "neural")
"""The registered neural networks (the GMM baselines are tested in test_gmm_baseline.py)."""


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    return {name: build_model(name) for name in NETWORKS}


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_grcnn", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- registry ---------------------------------------------------------------------------------


def test_registry_names_and_specs():
    assert set(NETWORKS) == set(ATTRIBUTES)
    assert set(MODELS) - set(NETWORKS) == {"lfcc-gmm", "cqcc-gmm"}
    for name in NETWORKS:
        spec = MODELS[name]
        assert isinstance(spec, ModelSpec)
        assert spec.name == name
        assert spec.features == ATTRIBUTES[name][0]
        assert spec.description
        assert callable(spec.constructor)


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_attributes(models, name):
    model = models[name]
    features, n_bins, train_frames, eval_window, eval_hop = ATTRIBUTES[name]
    assert isinstance(model, torch.nn.Module)
    assert model.features == features
    assert model.n_bins == n_bins
    assert model.train_frames == train_frames
    assert model.eval_window == eval_window
    assert model.eval_hop == eval_hop


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts(models, name):
    assert sum(p.numel() for p in models[name].parameters()) == PARAMETERS[name]


def test_unknown_model_lists_available():
    with pytest.raises(
        ModelError, match="unknown model 'resnet'; available: cqcc-gmm, grcnn, grcnn-logmel"
    ):
        build_model("resnet")
    assert issubclass(ModelError, ValueError)
    assert issubclass(ModelError, SpoofstoreError)


def test_unknown_and_bad_parameters():
    with pytest.raises(ModelError, match=r"no parameter.*colour.*valid: .*gate_dropout"):
        build_model("grcnn", colour=3)
    with pytest.raises(ModelError, match=r"no parameter.*streams"):
        build_model("grcnn-mgd", streams=("logmel",))
    with pytest.raises(ModelError, match="dropout"):
        build_model("vgg10", dropout=1.5)
    with pytest.raises(ModelError, match="dropout"):
        build_model("grcnn", gate_dropout=-0.1)


def test_parameters_are_passed():
    model = build_model("vgg10", eval_hop=1)
    assert model.eval_hop == 1
    model = build_model("grcnn", eval_window=256)
    assert (model.eval_window, model.eval_hop) == (256, 128)
    assert build_model("lcnn", train_frames=600).train_frames == 600


# --- inputs -----------------------------------------------------------------------------------


def test_input_errors(models):
    model = models["grcnn"]
    x = torch.zeros(2, 40, 256)
    with pytest.raises(ModelError, match="missing logmel"):
        model(mgd=x)
    with pytest.raises(ModelError, match="unexpected fbank"):
        model(mgd=x, logmel=x, fbank=x)
    with pytest.raises(
        ModelError, match=r"mgd must be \(batch, n_frames, 256\), got \(2, 40, 257\)"
    ):
        model(mgd=torch.zeros(2, 40, 257), logmel=x)
    with pytest.raises(ModelError, match="no frames"):
        model(mgd=torch.zeros(2, 0, 256), logmel=x)
    with pytest.raises(ModelError, match="batch sizes differ"):
        model(mgd=x, logmel=torch.zeros(3, 40, 256))
    with pytest.raises(ModelError):
        models["lcnn"](lfcc=torch.zeros(40, 60))


def test_wrap_frames():
    x = torch.arange(6.0).view(1, 3, 2)
    assert torch.equal(wrap_frames(x, 2), x)
    out = wrap_frames(x, 7)
    assert out.shape == (1, 7, 2)
    assert out[0, :, 0].tolist() == [0.0, 2.0, 4.0, 0.0, 2.0, 4.0, 0.0]


# --- shapes, gradients, determinism -------------------------------------------------------------

CROPS = {
    "grcnn": (1, 45),
    "grcnn-mgd": (52,),
    "grcnn-logmel": (33,),
    "vgg10": (3, 17, 40),
    "lcnn": (5, 16, 77),
}


@pytest.mark.parametrize("name", sorted(CROPS))
def test_output_shapes_for_crop_lengths(models, name):
    model = models[name].eval()
    with torch.no_grad():
        for n_frames in CROPS[name]:
            out = model(**_inputs(model, n_frames, batch=2))
            assert out.shape == (2, 2)
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NETWORKS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(1)
    small = {"n_bins": 32} if name.startswith("grcnn") else {}  # same structure, cheaper
    model = build_model(name, **small).train()
    n_frames = {"vgg10": 17, "lcnn": 48}.get(name, 52)  # grcnn: 3 windows
    y = torch.tensor([0, 1, 1])
    F.cross_entropy(model(**_inputs(model, n_frames, batch=3)), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["grcnn-mgd", "vgg10", "lcnn"])
def test_eval_is_deterministic_and_train_is_not(models, name):
    model = build_model(name, n_bins=32) if name == "grcnn-mgd" else models[name]
    x = _inputs(model, model.min_frames + 10, batch=2)
    with torch.no_grad():
        model.eval()
        a, b = model(**x), model(**x)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(0)
        c = model(**x)
        d = model(**x)
        model.eval()
    assert not torch.equal(c, d)  # dropout is active in training mode


def test_vgg10_long_input_is_mean_of_window_logits(models):
    model = models["vgg10"].eval()
    x = torch.randn(2, 17 + 2 * 8 + 5, 64)  # 3 windows at hop 8; the last 5 frames unused
    with torch.no_grad():
        whole = model(fbank=x)
        windows = [model(fbank=x[:, s : s + 17]) for s in (0, 8, 16)]
    torch.testing.assert_close(whole, torch.stack(windows).mean(0), atol=1e-5, rtol=1e-5)


def test_grcnn_short_input_is_wrapped():
    model = build_model("grcnn-mgd", n_bins=32).eval()
    x = torch.randn(1, 12, 32)
    with torch.no_grad():
        a = model(mgd=x)
        b = model(mgd=x[:, torch.arange(32) % 12])
    torch.testing.assert_close(a, b)


def test_grcnn_ignores_frames_after_the_last_window():
    model = build_model("grcnn-mgd", n_bins=32).eval()
    x = torch.randn(1, 51, 32)  # windows cover frames 0-31 and 10-41; 42-50 are unused
    y = x.clone()
    y[:, 42:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(model(mgd=x), model(mgd=y))


@pytest.mark.parametrize("name", ["grcnn-mgd", "vgg10", "lcnn"])
def test_under_bf16_autocast(name):
    model = build_model(name, n_bins=32) if name == "grcnn-mgd" else build_model(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.train()(**_inputs(model, 42))
        out.float().sum().backward()
        with torch.no_grad():
            out = model.eval()(**_inputs(model, 42))
    assert out.shape == (2, 2)
    assert torch.isfinite(out.float()).all()


# --- GRCNN pieces and the reference implementation ----------------------------------------------


def test_n_windows_and_frame_windows():
    assert [n_windows(t) for t in (1, 31, 32, 41, 42, 256)] == [1, 1, 1, 1, 2, 23]
    x = torch.randn(2, 256, 8)
    w = frame_windows(x)
    assert w.shape == (23, 2, 1, 8, 32)
    assert torch.equal(w[4, 1, 0], x[1, 40:72].T)


def test_grcnn_equals_window_by_window_reference():
    bench = _load_bench()
    torch.manual_seed(3)
    model = GRCNN(("mgd", "logmel"), n_bins=32).eval()  # 32 bins: same structure, cheaper
    ref = bench.ReferenceGRCNN(n_bins=32).load_from(model).eval()
    x = _inputs(model, 52, batch=2, seed=4)  # 3 windows: the recurrence is exercised
    y = torch.tensor([1, 0])
    out, out_ref = model(**x), ref(**x)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    # Gradients are compared in float64: in float32 some input-convolution weight gradients
    # (|g| ~ 1e-3) are sums with heavy cancellation and the two summation orders differ by up
    # to ~7e-5 on some CPUs; in float64 the implementations agree to ~1e-18.
    model, ref = model.double(), ref.double()
    x = {k: v.double() for k, v in x.items()}
    out, out_ref = model(**x), ref(**x)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for f in ("mgd", "logmel"):
        for cell, rcell in zip(model.streams[f].cells, ref.cells[f], strict=True):
            w = cell.width
            gx = cell.input_conv.weight.grad
            for i, g in enumerate("zrc"):
                ref_grad = getattr(rcell, f"x_{g}").weight.grad
                torch.testing.assert_close(gx[i * w : (i + 1) * w], ref_grad, atol=1e-12, rtol=0)
            hz = torch.cat([rcell.h_z.weight.grad, rcell.h_r.weight.grad])
            torch.testing.assert_close(cell.state_conv.weight.grad, hz, atol=1e-12, rtol=0)
            torch.testing.assert_close(
                cell.candidate_conv.weight.grad, rcell.h_c.weight.grad, atol=1e-12, rtol=0
            )


def test_grcnn_input_convolution_chunking_does_not_change_results():
    torch.manual_seed(5)
    x = torch.randn(2, 72, 32)  # 5 windows
    outs = []
    for per in (None, 1, 2, 100):
        torch.manual_seed(6)
        model = build_model("grcnn-mgd", n_bins=32, windows_per_conv=per).eval()
        with torch.no_grad():
            outs.append(model(mgd=x))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=0)
    with pytest.raises(ModelError, match="windows_per_conv"):
        build_model("grcnn", windows_per_conv=0)


def _train_step_grads(model, x, y, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks
    out = model(**x)
    F.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("windows_per_conv", [1, None])
def test_checkpoint_windows_gives_the_same_gradients(windows_per_conv):
    # float64 and dropout on: checkpointed windows must recompute exactly what was kept
    torch.manual_seed(0)
    model = build_model(
        "grcnn", n_bins=32, embedding_size=32, windows_per_conv=windows_per_conv
    ).double()
    model.train()
    g = torch.Generator().manual_seed(1)
    x = {f: torch.randn(3, 72, 32, generator=g, dtype=torch.float64) for f in model.features}
    y = torch.tensor([0, 1, 1])
    assert model.checkpoint_windows is False
    out, grads = _train_step_grads(model, x, y, seed=7)
    model.checkpoint_windows = True
    assert all(c.checkpoint_windows for s in model.streams.values() for c in s.cells)
    out_ck, grads_ck = _train_step_grads(model, x, y, seed=7)
    torch.testing.assert_close(out_ck, out, atol=1e-12, rtol=0)
    assert grads_ck.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ck[name], grad, atol=1e-12, rtol=0, msg=name)
    # the window segments really are checkpoints: fewer tensors kept for the backward pass
    kept = _saved_bytes(model, x, checkpointed=False)
    assert _saved_bytes(model, x, checkpointed=True) < kept / 3


def _saved_bytes(model, x, checkpointed: bool) -> int:
    model.checkpoint_windows = checkpointed
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**x)
    return sum(saved)


def test_checkpoint_windows_is_off_in_eval_and_without_grad():
    torch.manual_seed(0)
    model = build_model("grcnn-mgd", n_bins=32, embedding_size=32).eval()
    x = torch.randn(2, 52, 32)
    with torch.no_grad():
        plain = model(mgd=x)
        model.checkpoint_windows = True
        assert torch.equal(model(mgd=x), plain)


def test_checkpoint_windows_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("grcnn-mgd", n_bins=32, embedding_size=32).train()
    x = {"mgd": torch.randn(2, 52, 32)}
    y = torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = _train_step_grads(model, x, y, seed=3)
        model.checkpoint_windows = True
        out_ck, grads_ck = _train_step_grads(model, x, y, seed=3)
    assert out_ck.dtype == torch.bfloat16
    torch.testing.assert_close(out_ck, out, atol=0, rtol=0)
    for name, grad in grads.items():  # per-window weight-gradient pieces: other bf16 rounding
        scale = grad.abs().max().item()
        torch.testing.assert_close(grads_ck[name], grad, atol=0.02 * scale, rtol=0, msg=name)


def test_reference_maxout_function_matches_maxout():
    bench = _load_bench()
    x = torch.randn(3, 8, 5, 4, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    a = bench._PairMaxout.apply(x)
    b = maxout(x2)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    assert torch.equal(x.grad, x2.grad)


# --- maxout -----------------------------------------------------------------------------------


def test_maxout_values_and_errors():
    x = torch.tensor([[1.0, 3.0, 5.0, 2.0]])
    assert maxout(x).tolist() == [[3.0, 5.0]]
    assert maxout(x.T, dim=0).tolist() == [[3.0], [5.0]]
    assert Maxout()(torch.zeros(2, 6, 3, 3)).shape == (2, 3, 3, 3)
    with pytest.raises(ValueError, match="even"):
        maxout(torch.zeros(2, 3))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_maxout_is_max_of_adjacent_pairs(batch, pairs, length, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2 * pairs, length, generator=g)
    torch.testing.assert_close(maxout(x), torch.maximum(x[:, 0::2], x[:, 1::2]), rtol=0, atol=0)


def _maxout_by_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The definition: unflatten the pairs and take ``max`` over each (first index on ties)."""
    return x.unflatten(dim, (x.shape[dim] // 2, 2)).max(dim=dim + 1).values


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [1, -1])
def test_maxout_values_and_gradients_equal_the_max_definition(dtype, dim):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, 4, generator=g).round().to(dtype)  # rounded: many exact ties
    x[0, :2] = 0.0  # whole tied channel pairs
    x_ref = x.clone().requires_grad_()
    x_new = x.clone().requires_grad_()
    ref, new = _maxout_by_max(x_ref, dim % 4), maxout(x_new, dim)
    assert torch.equal(ref, new)
    upstream = torch.randn(ref.shape, generator=g).to(dtype)
    ref.backward(upstream)
    new.backward(upstream)
    assert torch.equal(x_ref.grad, x_new.grad)  # a tie's gradient goes to the first, as in max
    with torch.no_grad():
        assert torch.equal(maxout(x, dim), ref.detach())


def test_maxout_gradient_of_a_strided_upstream_gradient():
    """The backward writes into the interleaved input gradient whatever the layout of the
    gradient it receives (here a transposed view)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, 4, 6, generator=g)
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn(3, 6, 4, 4, generator=g).transpose(1, 3)  # (3, 4, 4, 6), strided
    assert not upstream.is_contiguous()
    _maxout_by_max(x_ref, 1).backward(upstream)
    maxout(x_new, 1).backward(upstream)
    assert torch.equal(x_ref.grad, x_new.grad)


# --- chosen features as input channels --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "frames"),
    [("lcnn", {"n_bins": 32, "train_frames": 32}, 32), ("vgg10", {"n_bins": 32, "hidden": 16}, 40)],
)
def test_features_are_input_channels(name, kwargs, frames):
    torch.manual_seed(0)
    net = build_model(name, features=["mgd", "logmel"], **kwargs).eval()
    assert net.features == ("mgd", "logmel") and net.n_bins == {"mgd": 32, "logmel": 32}
    assert net.unused_bins == {"mgd": 1}  # MGD's Nyquist bin, as in the GRCNN
    a, b = torch.randn(2, frames, 32), torch.randn(2, frames, 32)
    with torch.no_grad():
        out = net(mgd=a, logmel=b)
        assert out.shape == (2, 2)
        assert not torch.equal(out, net(mgd=b, logmel=a))  # two channels, not one summed input
    one = build_model(name, features=["mgd"], **kwargs)
    assert one.features == ("mgd",) and one.unused_bins == {"mgd": 1}
    assert build_model(name, **kwargs).unused_bins == {}


def test_vgg10_trains_on_many_windows_per_utterance():
    assert build_model("vgg10").train_crops_per_utt == 32
    assert build_model("lcnn").train_crops_per_utt == build_model("grcnn").train_crops_per_utt == 1


@pytest.mark.parametrize("features", [[], ["mgd", "mgd"], [""]])
def test_bad_feature_lists_are_model_config_errors(features):
    with pytest.raises(ModelConfigError, match="features must be distinct feature names"):
        build_model("lcnn", features=features)


# --- inference memory format ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"), [("lcnn", torch.channels_last), ("grcnn", torch.contiguous_format)]
)
def test_trained_model_weights_take_the_inference_memory_format(name, expected):
    from trainer.inference import build_trained_model
    from trainer.runs import ModelRecord

    net = build_model(name)
    loaded = build_trained_model(ModelRecord.of(name, {}, net), net.state_dict(), "test")
    convs = [m for m in loaded.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = next(c for c in convs if c.in_channels > 1 and c.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=expected)
    assert not conv.weight.is_contiguous(
        memory_format=torch.contiguous_format
        if expected == torch.channels_last
        else torch.channels_last
    )
    assert loaded.inference_memory_format == expected


def test_lcnn_scores_agree_in_either_memory_format():
    torch.manual_seed(0)
    net = build_model("lcnn").eval()
    x = torch.randn(2, 120, 60)
    with torch.inference_mode():
        contiguous = net(lfcc=x)
        channels_last = net.to(memory_format=torch.channels_last)(lfcc=x)
    torch.testing.assert_close(channels_last, contiguous, rtol=0, atol=1e-5)


# --- GRCNN dropout ----------------------------------------------------------------------------


def test_grcnn_dropout_is_inverted_dropout():
    from trainer.models.grcnn import dropout

    torch.manual_seed(0)
    x = torch.full((200_000,), 2.0, requires_grad=True)
    y = dropout(x, 0.3)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.005  # 200k draws: the std of the fraction is 0.001
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the gradient takes the same mask
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), 0.3), y.detach())  # seeded by torch's generator
    assert torch.equal(dropout(x, 0.3, training=False), x)
    assert torch.equal(dropout(x, 0.0), x)
    with pytest.raises(ValueError, match="dropout"):
        dropout(x, 1.0)
    bf16 = dropout(torch.ones(10, dtype=torch.bfloat16), 0.5)
    assert bf16.dtype == torch.bfloat16
