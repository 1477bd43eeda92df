"""Write a tiny ASVspoof-2019-LA-layout corpus (protocols + FLAC) for build tests and benches.

``make_corpus(root, {"train": 6, "dev": 4})`` writes ``root/protocols/ASVspoof2019.LA.cm.
<split>.<trn|trl>.txt`` and ``root/flac/LA_<T|D|E>_<n>.flac`` (16 kHz mono 16-bit): tones with
a syllable-like envelope plus noise, deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

SR = 16000
_SUFFIX = {"train": "trn", "dev": "trl", "eval": "trl"}
_LETTER = {"train": "T", "dev": "D", "eval": "E"}


def speechlike(rng: np.random.Generator, seconds: float, sr: int = SR) -> np.ndarray:
    """Harmonic tone with a 4 Hz syllable envelope and a little noise, in [-0.5, 0.5]."""
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    x = 0.25 * env * voiced + 0.01 * rng.standard_normal(n)
    return np.clip(x, -0.5, 0.5)


def utt_id(split: str, i: int) -> str:
    """The id of the ``i``-th utterance of ``split``."""
    return f"LA_{_LETTER.get(split, 'E')}_{1000000 + i:07d}"


def protocol_path(root: Path, split: str) -> Path:
    """Where the protocol of ``split`` is written."""
    return root / "protocols" / f"ASVspoof2019.LA.cm.{split}.{_SUFFIX.get(split, 'trl')}.txt"


def make_corpus(
    root: str | Path,
    counts: Mapping[str, int],
    seconds: tuple[float, float] = (0.5, 2.0),
    seed: int = 0,
) -> Path:
    """Write the corpus and return ``root``.

    Parameters
    ----------
    root : str or Path
        Output directory (created).
    counts : Mapping[str, int]
        Utterances per split.
    seconds : (float, float)
        Range of utterance durations.
    seed : int
        Random seed.

    Returns
    -------
    Path
        ``root`` (use it as both ``--manifest root/protocols`` and ``--audio-root root``).
    """
    import soundfile as sf

    root = Path(root)
    (root / "protocols").mkdir(parents=True, exist_ok=True)
    (root / "flac").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        lines = []
        for i in range(n):
            uid = utt_id(split, i)
            spoof = i % 3 != 0
            system = f"A0{1 + i % 6}" if spoof else "-"
            key = "spoof" if spoof else "bonafide"
            lines.append(f"LA_{i % 4:04d} {uid} - {system} {key}")
            x = speechlike(rng, rng.uniform(*seconds))
            sf.write(root / "flac" / f"{uid}.flac", x, SR, subtype="PCM_16")
        protocol_path(root, split).write_text("\n".join(lines) + "\n")
    return root


def add_utterance(
    root: Path, split: str, uid: str, key: str = "bonafide", write: bool = True
) -> Path:
    """Append one protocol line for ``uid``; return where its FLAC belongs (``flac/uid.flac``)."""
    path = protocol_path(root, split)
    system = "-" if key == "bonafide" else "A01"
    with open(path, "a") as fh:
        fh.write(f"LA_0001 {uid} - {system} {key}\n")
    return root / "flac" / f"{uid}.flac"


def assert_stores_equal(a: str | Path, b: str | Path) -> None:
    """Two stores hold byte-identical frame arrays (augmented views too), index and view
    columns, statistics, checksums and augmentation records."""
    from featstore.store import open_store

    sa, sb = open_store(a), open_store(b)
    assert sa.splits == sb.splits
    assert sa.fingerprint == sb.fingerprint
    assert sa.quarantine == sb.quarantine
    assert sa.augmentation == sb.augmentation
    assert sa.metadata.get("view_quarantine") == sb.metadata.get("view_quarantine")
    for split in sa.splits:
        ra, rb = sa.metadata["splits"][split], sb.metadata["splits"][split]
        assert ra == rb  # counts, columns, per-feature n_frames, sha256, mean, std, views
        ia, ib = sa._columns(split), sb._columns(split)
        assert list(ia) == list(ib)
        for name in ia:
            np.testing.assert_array_equal(ia[name], ib[name], err_msg=f"{split} index {name}")
        va, vb = sa.view_columns(split), sb.view_columns(split)
        assert list(va) == list(vb)
        for name in va:
            np.testing.assert_array_equal(va[name], vb[name], err_msg=f"{split} views {name}")
        assert sa.n_views(split) == sb.n_views(split)
        for feature in sa.features:
            for view in range(sa.n_views(split)):
                xa, xb = sa.array(split, feature, view)[:], sb.array(split, feature, view)[:]
                assert xa.tobytes() == xb.tobytes(), f"{split}/{feature} view {view} differs"
