"""Directories of noise or room-impulse-response files, indexed once, read per utterance.

:func:`audio_bank` walks a directory (recursively: the MUSAN layout ``noise/free-sound/*.wav``
or any folder of audio) and reads every file's *header* once per process (cached on the
directory's path and modification time), so a bad directory fails before any extraction
starts: missing, unreadable, holding no audio, or holding a file libsndfile cannot open or
an empty one, each a :class:`~featstore.errors.ConfigError` naming the directory or file.
Files are read only when drawn (:func:`read_excerpt`, :func:`read_whole`): a large MUSAN copy
is not held in memory by every worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from featstore.errors import AudioError, ConfigError
from featstore.signal import SAMPLE_RATE, resample

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff", ".au", ".sph")
"""File name endings taken as audio (case-insensitive); other files (MUSAN's ``ANNOTATIONS``,
``LICENSE``) are ignored."""


@dataclass(frozen=True)
class BankFile:
    """One audio file of a bank, as its header describes it.

    Attributes
    ----------
    path : str
        The file.
    frames : int
        Samples per channel at ``sample_rate``.
    sample_rate : int
        The file's own rate (Hz); reads are resampled to 16 kHz.
    """

    path: str
    frames: int
    sample_rate: int

    @property
    def frames_16k(self) -> int:
        """Length once resampled to 16 kHz."""
        return int(self.frames * SAMPLE_RATE // self.sample_rate)


def audio_bank(directory: str | os.PathLike, what: str = "noise_dir") -> tuple[BankFile, ...]:
    """Index the audio files under ``directory`` (cached per process).

    Parameters
    ----------
    directory : str or os.PathLike
        A folder of audio files, searched recursively.
    what : str, default "noise_dir"
        The parameter it came from, for messages (``"rir_dir"``).

    Returns
    -------
    tuple of BankFile
        Sorted by path (the order, and so the draws, do not depend on the file system).

    Raises
    ------
    ConfigError
        Missing or unreadable directory, no audio file in it, or a file that cannot be
        decoded or holds no samples.

    Examples
    --------
    >>> audio_bank("/data/musan/noise")  # doctest: +SKIP
    (BankFile(path='/data/musan/noise/free-sound/noise-free-sound-0000.wav', ...), ...)
    """
    path = Path(directory)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such directory") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise ConfigError(f"{what} {path}: not a directory")
    return _index(str(path.resolve()), stamp, what)


@lru_cache(maxsize=16)
def _index(directory: str, stamp: int, what: str) -> tuple[BankFile, ...]:
    files = []
    errors: list[OSError] = []
    for root, dirs, names in os.walk(directory, onerror=errors.append):
        dirs.sort()
        files.extend(
            os.path.join(root, n) for n in sorted(names) if n.lower().endswith(AUDIO_SUFFIXES)
        )
    if errors:
        exc = errors[0]
        raise ConfigError(
            f"{what} {exc.filename or directory}: cannot read ({exc.strerror or exc})"
        )
    if not files:
        raise ConfigError(
            f"{what} {directory}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found in it"
        )
    bank = []
    for file in sorted(files):
        try:
            info = sf.info(file)
        except (RuntimeError, sf.SoundFileError, OSError) as exc:
            raise ConfigError(f"{what} {directory}: cannot decode {file}: {exc}") from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise ConfigError(f"{what} {directory}: {file} holds no audio samples")
        bank.append(BankFile(file, int(info.frames), int(info.samplerate)))
    return tuple(bank)


def _read(file: BankFile, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` at the file's rate, mono float64, or :class:`AudioError`."""
    try:
        data = sf.read(file.path, start=start, stop=stop, dtype="float64", always_2d=True)[0]
    except (RuntimeError, sf.SoundFileError, OSError) as exc:
        raise AudioError(file.path, f"cannot read: {exc}") from None
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(file.path, "holds NaN or infinite samples")
    return mono


def read_whole(file: BankFile) -> np.ndarray:
    """The whole file, mono float64 at 16 kHz (resampled with soxr where needed)."""
    return resample(_read(file, 0, file.frames), file.sample_rate, SAMPLE_RATE)


def read_excerpt(
    file: BankFile, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, object]]:
    """A random ``n``-sample excerpt of ``file`` at 16 kHz.

    A file at another rate is read at its rate and resampled; a file shorter than ``n``
    samples (at 16 kHz) is looped from a random start.

    Returns
    -------
    excerpt : np.ndarray
        float64, exactly ``n`` samples.
    drawn : dict
        ``{"file", "start" (seconds into the file), "looped" (bool)}``.
    """
    sr = file.sample_rate
    need = int(np.ceil(n * sr / SAMPLE_RATE)) + (0 if sr == SAMPLE_RATE else 64)
    if file.frames >= need:
        start = int(rng.integers(0, file.frames - need + 1))
        excerpt = resample(_read(file, start, start + need), sr, SAMPLE_RATE)
        looped = False
    else:
        whole = read_whole(file)
        if whole.size == 0:
            raise AudioError(file.path, "holds no samples once resampled to 16 kHz")
        offset = int(rng.integers(0, whole.size))
        start = offset * sr // SAMPLE_RATE
        reps = -(-(offset + n) // whole.size)
        excerpt = np.tile(whole, reps)[offset:]
        looped = True
    if excerpt.size < n:  # resampling rounded down by a sample or two
        excerpt = np.pad(excerpt, (0, n - excerpt.size), mode="wrap")
    return excerpt[:n], {"file": file.path, "start": start / sr, "looped": looped}
