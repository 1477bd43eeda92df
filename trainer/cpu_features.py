"""What this CPU can do natively: the one place that decides whether bf16 is fast here.

bf16 autocast only pays on a CPU whose instructions compute in bf16: AVX-512 BF16
(``vdpbf16ps``; Intel Cooper Lake and later, AMD Zen 4 and later) or AMX BF16 (Intel Sapphire
Rapids and later). Elsewhere oneDNN emulates bf16 through float32 and autocast only adds
conversions, so the trainer's ``precision="auto"`` stays in fp32 there.

Detection never guesses from a CPU's name: it asks torch (``torch.cpu.get_capabilities()``
of recent releases, from the cpuinfo library's CPUID probe) and, where that query is
missing, the kernel's ``/proc/cpuinfo`` flags (Linux). Neither available: not native.

This module imports torch only inside :func:`torch_cpu_capabilities`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "NATIVE_BF16_FLAGS",
    "cpuinfo_flags",
    "has_native_bf16",
    "native_bf16_source",
    "torch_cpu_capabilities",
]

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU features (the names of ``/proc/cpuinfo`` and of torch's capability query alike) that
compute bf16 natively."""

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_flags(path: str | os.PathLike = CPUINFO) -> frozenset[str] | None:
    """The feature flags of the first processor in a ``/proc/cpuinfo``-style file.

    Parameters
    ----------
    path : str or os.PathLike, default "/proc/cpuinfo"
        The file to read.

    Returns
    -------
    frozenset of str or None
        The flags of the first ``flags`` (x86) or ``Features`` (arm) line; None when the
        file cannot be read or has no such line (not Linux, a sandbox).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cpuinfo"
    >>> _ = p.write_text("processor\\t: 0\\nflags\\t\\t: fpu avx2 avx512_bf16\\n")
    >>> sorted(cpuinfo_flags(p))
    ['avx2', 'avx512_bf16', 'fpu']
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def torch_cpu_capabilities() -> Mapping[str, object] | None:
    """torch's own view of the CPU (``torch.cpu.get_capabilities()``); None where missing."""
    import torch

    query = getattr(torch.cpu, "get_capabilities", None)
    if query is None:
        return None
    try:
        return query()
    except RuntimeError:
        return None


def native_bf16_source(
    capabilities: Mapping[str, object] | None = None,
    cpuinfo: str | os.PathLike = CPUINFO,
) -> tuple[bool, str]:
    """Whether the CPU computes bf16 natively, and how that was found out.

    Parameters
    ----------
    capabilities : mapping, optional
        torch's capability mapping; default :func:`torch_cpu_capabilities`. Empty: torch
        cannot tell.
    cpuinfo : str or os.PathLike, default "/proc/cpuinfo"
        Read (:func:`cpuinfo_flags`) only when torch cannot tell.

    Returns
    -------
    (bool, str)
        The answer and its source, e.g. ``(True, "torch: avx512_bf16, amx_bf16")``,
        ``(False, "/proc/cpuinfo: none of avx512_bf16, amx_bf16")`` or
        ``(False, "unknown")``.

    Examples
    --------
    >>> native_bf16_source({"avx512_bf16": True, "amx_bf16": False})
    (True, 'torch: avx512_bf16')
    >>> native_bf16_source({"avx2": True})
    (False, 'torch: none of avx512_bf16, amx_bf16')
    """
    if capabilities is None:
        capabilities = torch_cpu_capabilities()
    if capabilities:
        found = [f for f in NATIVE_BF16_FLAGS if capabilities.get(f) is True]
        return _answer("torch", found)
    flags = cpuinfo_flags(cpuinfo)
    if flags is not None:
        return _answer(os.fspath(cpuinfo), [f for f in NATIVE_BF16_FLAGS if f in flags])
    return False, "unknown"


def _answer(source: str, found: list[str]) -> tuple[bool, str]:
    if found:
        return True, f"{source}: {', '.join(found)}"
    return False, f"{source}: none of {', '.join(NATIVE_BF16_FLAGS)}"


def has_native_bf16() -> bool:
    """True on a CPU with AVX-512 BF16 or AMX BF16 (see :func:`native_bf16_source`)."""
    return native_bf16_source()[0]
