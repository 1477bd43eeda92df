"""Decode one audio file into the float64 mono 16 kHz signal the feature kernels expect.

:func:`load_audio` reads FLAC/WAV (anything libsndfile reads) with soundfile as float64, which
scales integer PCM by its full scale (``int16 / 32768``, like audioread and MATLAB's
``audioread``), averages the channels of multi-channel files, resamples other rates with soxr
(:func:`featstore.signal.resample`) and says what it did in :attr:`Audio.notes`.

Bad files raise :class:`~featstore.errors.AudioError` naming the file: missing, empty (0 bytes
or 0 samples), undecodable or corrupt, truncated (fewer samples decoded than the header
announces), or holding NaN/infinite samples (the first bad sample is named).

All-zero audio and audio shorter than one analysis frame are *not* errors here: the feature
kernels return zeros / 0 frames for them, and the build pipeline decides what to keep.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from featstore.errors import AudioError
from featstore.signal import SAMPLE_RATE, as_float_signal, resample

_TOP = np.nextafter(1.0, 0.0)  # the largest float64 below 1

FULL_SCALE = 32767 / 32768
"""A sample at or beyond this magnitude is at full scale (16-bit PCM's positive limit)."""

CLIPPED_FRACTION = 0.01
"""Audio with more than this fraction of its samples at full scale is noted as clipped."""

CLIPPED_NOTE = "at full scale"
"""Text of the note of clipped audio (``"clipped: N of M samples (P %) at full scale"``)."""


@dataclass(frozen=True)
class Audio:
    """A decoded utterance.

    Attributes
    ----------
    signal : np.ndarray
        float64, mono, at the target rate (16 kHz by default), in [-1, 1).
    sample_rate : int
        The file's **original** sample rate in Hz.
    channels : int
        The file's **original** channel count.
    notes : tuple of str
        What was done to it, e.g. ``("downmixed 2 channels", "resampled 44100->16000")``.
    """

    signal: np.ndarray
    sample_rate: int
    channels: int
    notes: tuple[str, ...] = ()


def _check_file(path: Path) -> None:
    """A missing, unreadable or 0-byte file as :class:`AudioError`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(path, "no such file") from None
    except OSError as exc:
        raise AudioError(path, f"cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _open(path: Path):
    """An open ``soundfile.SoundFile``, or :class:`AudioError`."""
    _check_file(path)
    try:
        return sf.SoundFile(str(path))
    except (RuntimeError, sf.SoundFileError) as exc:
        raise AudioError(path, f"cannot decode audio: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    # soundfile prefixes "Error opening 'PATH': "; the path is already in our message
    if text.startswith("Error opening") and "': " in text:
        text = text.split("': ", 1)[1]
    return text or type(exc).__name__


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header announces in its ``data`` chunk (None if unknown).

    libsndfile silently shortens a truncated WAV's frame count to what the file holds, so
    ``info.frames`` cannot reveal the truncation; the header's chunk size can.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 16:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):  # unknown / streaming
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def _clipped_note(data: np.ndarray) -> str | None:
    """A note when more than :data:`CLIPPED_FRACTION` of the samples are at full scale.

    Counted over every channel of the decoded file, before downmixing and resampling (which
    hide clipping). NaN samples count as not clipped (they are refused later).

    Examples
    --------
    >>> _clipped_note(np.array([[1.0], [-1.0], [0.1], [0.2]]))
    'clipped: 2 of 4 samples (50.0 %) at full scale'
    >>> _clipped_note(np.zeros((4, 1))) is None
    True
    """
    if data.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        n = int(np.count_nonzero(np.abs(data) >= FULL_SCALE))
    if n <= CLIPPED_FRACTION * data.size:
        return None
    return f"clipped: {n} of {data.size} samples ({100 * n / data.size:.1f} %) {CLIPPED_NOTE}"


def load_audio(path: str | os.PathLike, target_sr: int = SAMPLE_RATE) -> Audio:
    """Decode an audio file to float64 mono at ``target_sr``, validating it.

    Parameters
    ----------
    path : str or os.PathLike
        A FLAC or WAV file (any format libsndfile reads).
    target_sr : int, default 16000
        Sample rate of the returned signal in Hz.

    Returns
    -------
    Audio
        The signal (float64, mono, ``target_sr``, in [-1, 1)), the original sample rate and
        channel count, and notes on any downmix, resampling or clipping.

    Raises
    ------
    AudioError
        Missing file, empty file (0 bytes or 0 samples), undecodable/corrupt data, a
        truncated file (fewer samples than its header says), or NaN/infinite samples.

    Notes
    -----
    Audio with more than 1 % of its samples at full scale (``|x| >= 32767/32768``) is
    kept with the note ``"clipped: N of M samples (P %) at full scale"``.
    Multi-channel audio is averaged over channels. Float files with samples outside
    [-1, 1), and resampling overshoot, are clipped into [-1, 1) with a note counting the
    clipped samples. All-zero audio and very short audio are returned as they are.

    Examples
    --------
    >>> a = load_audio("flac/LA_D_1000265.flac")  # doctest: +SKIP
    >>> a.signal.dtype, a.sample_rate, a.channels, a.notes  # doctest: +SKIP
    (dtype('float64'), 16000, 1, ())
    """
    p = Path(path)
    with _open(p) as f:
        declared, sr, file_format = f.frames, f.samplerate, f.format
        try:
            data = f.read(dtype="float64", always_2d=True)
        except (RuntimeError, sf.SoundFileError) as exc:
            raise AudioError(p, f"corrupt or truncated audio: {_reason(exc)}") from None
    n = data.shape[0]
    notes: list[str] = []
    clipped = _clipped_note(data)
    if clipped:
        notes.append(clipped)
    if file_format in ("WAV", "WAVEX"):
        declared = max(declared, _wav_declared_frames(p) or 0)
    if n < declared:
        raise AudioError(
            p, f"truncated audio: the header announces {declared} samples, decoded only {n}"
        )
    if n == 0:
        raise AudioError(p, "no audio samples (0 frames)")
    channels = data.shape[1]
    if channels > 1:
        mono = data.mean(axis=1)
        notes.append(f"downmixed {channels} channels")
    else:
        mono = data[:, 0]
    try:
        signal = as_float_signal(mono)
    except ValueError as exc:
        raise AudioError(p, str(exc).replace("signal holds", "audio holds")) from None
    if sr != target_sr:
        signal = resample(signal, sr, target_sr)
        notes.append(f"resampled {sr}->{target_sr}")
    if signal.size and (signal.min() < -1.0 or signal.max() > _TOP):  # two passes, no copy
        outside = int(np.count_nonzero((signal < -1.0) | (signal > _TOP)))
        signal = np.clip(signal, -1.0, _TOP)
        notes.append(f"clipped {outside} samples into [-1, 1)")
    return Audio(
        signal=np.ascontiguousarray(signal, dtype=np.float64),
        sample_rate=int(sr),
        channels=int(channels),
        notes=tuple(notes),
    )


def audio_duration(path: str | os.PathLike) -> float:
    """Duration of an audio file in seconds, from its header only (cheap).

    Parameters
    ----------
    path : str or os.PathLike
        An audio file.

    Returns
    -------
    float
        ``frames / sample_rate`` as the header says (a truncated file is only detected by
        :func:`load_audio`).

    Raises
    ------
    AudioError
        Missing, empty or undecodable file.

    Examples
    --------
    >>> audio_duration("flac/LA_D_1000265.flac")  # doctest: +SKIP
    1.468
    """
    with _open(Path(path)) as f:
        return f.frames / f.samplerate
