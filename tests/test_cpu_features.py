"""trainer.cpu_features (native bf16 detection) and the precision rule built on it."""

from __future__ import annotations

import pytest
import torch

from trainer import cpu_features
from trainer.cpu_features import cpuinfo_flags, native_bf16_source
from trainer.inference import resolve_precision

CPU = torch.device("cpu")

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16\n"


@pytest.mark.parametrize(
    ("text", "native"),
    [(ZEN3, False), (SAPPHIRE, True), (GRAVITON, False), ("processor\t: 0\n", None)],
)
def test_cpuinfo_flags_decide_when_torch_cannot_tell(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    answer, source = native_bf16_source({}, path)
    if native is None:
        assert cpuinfo_flags(path) is None
        assert (answer, source) == (False, "unknown")
        return
    assert answer is native
    found = "avx512_bf16, amx_bf16" if native else "none of avx512_bf16, amx_bf16"
    assert source == f"{path}: {found}"


def test_only_the_first_processor_is_read(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN3)
    assert cpuinfo_flags(path) == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert cpuinfo_flags(tmp_path / "missing") is None


def test_torch_query_wins_over_cpuinfo(tmp_path):
    # torch says no although the flags say yes: torch's CPUID probe is the better witness
    path = tmp_path / "cpuinfo"
    path.write_text(SAPPHIRE)
    assert native_bf16_source({"avx2": True}, path)[0] is False
    assert native_bf16_source({"amx_bf16": True}, tmp_path / "missing") == (True, "torch: amx_bf16")
    # values that are not True (vector lengths, names) do not count
    assert native_bf16_source({"avx512_bf16": 1, "amx_bf16": "yes"}, path)[0] is False


def test_this_machine_agrees_with_its_cpuinfo():
    flags = cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags here")
    expected = any(f in flags for f in cpu_features.NATIVE_BF16_FLAGS)
    assert cpu_features.has_native_bf16() is expected


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(cpu_features, "has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    # an explicit choice is kept either way; fp16 is CUDA-only
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.warns(UserWarning, match="fp16 autocast needs CUDA"):
        assert resolve_precision("fp16", CPU) == "fp32"
