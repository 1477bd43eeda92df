"""Lossy codec round trips through libsndfile (python-soundfile), in memory.

- ``mp3`` (MPEG-1/2 Layer III, constant bitrate), ``vorbis`` and ``opus`` (Ogg) at a bitrate
  drawn in ``[min_kbps, max_kbps]``; libsndfile sets bitrates through a "compression level"
  in [0, 1], mapped here from the wanted bitrate by a table measured on libsndfile 1.2.2 at
  16 kHz mono (the drawn target, the level and the bitrate actually produced are reported).
  Each codec only spans part of 8-128 kbit/s at 16 kHz mono: MP3 8-160 (MPEG-2 steps),
  Opus 6-256, Vorbis about 33-73 (quality-driven); targets outside a codec's span get its
  nearest setting.
- ``mulaw`` and ``alaw``: G.711-style telephone channel: resampled to 8 kHz, band-limited to
  300-3400 Hz, companded to 8 bits (libsndfile's G.711 tables), back to 16 kHz.
- ``gsm`` (not in the default list): GSM 06.10 full rate at 8 kHz, same telephone band.

Codecs the installed libsndfile lacks are skipped (:func:`available_codecs`); naming only
missing ones is a :class:`~featstore.errors.ConfigError`. Every codec's delay (encoder
priming, resampling) is measured once per setting on a probe signal and removed, so the
output stays aligned with the input; its length is the input's.
"""

from __future__ import annotations

import inspect
import io
from functools import lru_cache
from typing import Any

import numpy as np
import soundfile as sf

from featstore.augment._params import check_input, check_range, split_names
from featstore.augment.filtering import fir_aligned
from featstore.augment.levels import fit_to_range
from featstore.augment.tracing import returns_signal
from featstore.errors import ConfigError, FeatureError
from featstore.signal import SAMPLE_RATE, resample

CODECS = ("mp3", "vorbis", "opus", "mulaw", "alaw", "gsm")
"""Every codec this module knows (whether or not the installed libsndfile has it)."""

# codec -> (container format, subtype, sample rate it runs at, lossy bitrate-controlled?)
_FORMATS = {
    "mp3": ("MP3", "MPEG_LAYER_III", SAMPLE_RATE, True),
    "vorbis": ("OGG", "VORBIS", SAMPLE_RATE, True),
    "opus": ("OGG", "OPUS", SAMPLE_RATE, True),
    "mulaw": ("WAV", "ULAW", 8000, False),
    "alaw": ("WAV", "ALAW", 8000, False),
    "gsm": ("WAV", "GSM610", 8000, False),
}

# Measured bitrate (kbit/s, 16 kHz mono) at libsndfile compression levels: (kbps, level)
# pairs with kbps increasing. MP3 is constant bitrate; Vorbis/Opus libsndfile's default mode.
_LEVELS = {
    "mp3": (
        (8.0, 0.97),
        (16.0, 0.94),
        (24.0, 0.9),
        (32.0, 0.85),
        (40.0, 0.78),
        (48.0, 0.72),
        (64.0, 0.6),
        (80.0, 0.5),
        (112.0, 0.3),
        (160.0, 0.0),
    ),
    "vorbis": ((33.1, 1.0), (38.7, 0.75), (45.8, 0.5), (59.8, 0.25), (73.1, 0.0)),
    "opus": ((9.3, 0.99), (256.0, 0.0)),
}
_TELEPHONE_BAND = (300.0, 3400.0)
_FIXED_KBPS = {"mulaw": 64.0, "alaw": 64.0, "gsm": 13.0}


def _has_compression_level() -> bool:
    return "compression_level" in inspect.signature(sf.SoundFile.__init__).parameters


@lru_cache(maxsize=1)
def available_codecs() -> tuple[str, ...]:
    """The codecs of :data:`CODECS` the installed libsndfile (and soundfile) can round-trip.

    Asked of libsndfile once per process (the answer cannot change; asking costs ~3 ms,
    more than a G.711 round trip).

    Examples
    --------
    >>> set(available_codecs()) <= set(CODECS)
    True
    """
    formats = sf.available_formats()
    found = []
    for name, (fmt, subtype, _, bitrate) in _FORMATS.items():
        if fmt not in formats or subtype not in sf.available_subtypes(fmt):
            continue
        if bitrate and not _has_compression_level():  # soundfile < 0.13
            continue
        found.append(name)
    return tuple(found)


def _level_for(codec: str, kbps: float) -> float:
    """The compression level giving about ``kbps`` (rounded to 0.01: few delay probes)."""
    table = _LEVELS[codec]
    level = float(np.interp(kbps, [k for k, _ in table], [lv for _, lv in table]))
    return round(level, 2)


def _encode_decode(x: np.ndarray, codec: str, level: float | None) -> tuple[np.ndarray, int]:
    """One round trip of ``x`` (at the codec's rate): decoded samples and encoded bytes."""
    fmt, subtype, sr, _ = _FORMATS[codec]
    kwargs: dict[str, Any] = {}
    if level is not None:
        kwargs["compression_level"] = level
        if codec == "mp3":
            kwargs["bitrate_mode"] = "CONSTANT"
    buffer = io.BytesIO()
    try:
        sf.write(buffer, x, sr, format=fmt, subtype=subtype, **kwargs)
        size = buffer.tell()
        buffer.seek(0)
        y, _ = sf.read(buffer, dtype="float64", always_2d=True)
    except (RuntimeError, sf.SoundFileError, TypeError) as exc:
        raise FeatureError(f"codec {codec} round trip failed: {exc}") from None
    return y[:, 0], size


@lru_cache(maxsize=512)
def codec_delay(codec: str, level: float | None) -> int:
    """Samples (at the codec's rate) by which a round trip delays its input, measured once.

    A fixed probe (1 s of band-limited noise bursts) is encoded and decoded; the delay is the
    lag, within +-4096 samples, of the largest cross-correlation between output and probe.
    (Gapless decoders report 0; libsndfile's MP3 at 32 kbit/s and below does not.)

    Examples
    --------
    >>> codec_delay("mulaw", None)
    0
    """
    sr = _FORMATS[codec][2]
    rng = np.random.default_rng(12345)
    probe = rng.standard_normal(sr) * np.repeat(rng.random(20) > 0.4, sr // 20)
    probe = 0.3 * probe / np.max(np.abs(probe))
    padded = np.concatenate([probe, np.zeros(8192)])
    import scipy.signal

    out, _ = _encode_decode(padded, codec, level)
    corr = scipy.signal.correlate(out, probe, mode="full")  # index i: lag i - (n - 1)
    zero = probe.size - 1
    window = corr[max(zero - 4096, 0) : zero + 4097]
    return int(np.argmax(window)) - min(4096, zero)


def _align(y: np.ndarray, delay: int, n: int) -> np.ndarray:
    """``y`` shifted back by ``delay`` samples and cut/zero-padded to ``n``."""
    y = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay), y])
    if y.size < n:
        y = np.concatenate([y, np.zeros(n - y.size)])
    return y[:n]


def _telephone_band(x8k: np.ndarray) -> np.ndarray:
    import scipy.signal

    b = scipy.signal.firwin(129, list(_TELEPHONE_BAND), pass_zero=False, fs=8000)
    return fir_aligned(x8k, b)


def _check_codec(codecs: str = "mp3,vorbis,opus,mulaw,alaw", min_kbps=8.0, max_kbps=128.0):
    check_range("codec", "min_kbps", min_kbps, "max_kbps", max_kbps, minimum=1)
    names = split_names("codec", "codecs", codecs, CODECS)
    usable = [c for c in names if c in available_codecs()]
    if not usable:
        raise ConfigError(
            f"augmentation 'codec': none of codecs={codecs!r} is supported by the installed "
            f"libsndfile {sf.__libsndfile_version__} (available: "
            f"{', '.join(available_codecs()) or 'none'})"
        )
    return usable


def _codec(
    signal: np.ndarray,
    rng: np.random.Generator,
    codecs: str = "mp3,vorbis,opus,mulaw,alaw",
    min_kbps: float = 8.0,
    max_kbps: float = 128.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A lossy codec round trip, the codec and bitrate drawn at random.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of every random draw.
    codecs : str, default "mp3,vorbis,opus,mulaw,alaw"
        Comma-separated codecs to draw from (uniformly), among :data:`CODECS`; those the
        installed libsndfile lacks are skipped.
    min_kbps, max_kbps : float, default 8, 128
        Range of the target bitrate (kbit/s) of mp3, vorbis and opus (drawn uniformly).

    Returns
    -------
    np.ndarray
        float64, same length, aligned with the input (codec delay removed), in [-1, 1).

    Raises
    ------
    ConfigError
        Unknown codec, bad bitrate range, or none of the codecs available.

    Examples
    --------
    >>> x = 0.1 * np.sin(np.arange(16000) * 0.05)
    >>> y, drawn = codec.with_params(x, np.random.default_rng(0), codecs="mulaw")
    >>> y.shape, drawn["codec"]
    ((16000,), 'mulaw')
    """
    usable = _check_codec(codecs, min_kbps, max_kbps)
    x = check_input(signal, rng)
    name = usable[int(rng.integers(len(usable)))]
    kbps = float(rng.uniform(min_kbps, max_kbps))
    drawn: dict[str, Any] = {"codec": name}
    if x.size == 0:
        return x.copy(), drawn
    rate = _FORMATS[name][2]
    source = fit_to_range(resample(x, SAMPLE_RATE, rate))
    if rate != SAMPLE_RATE:
        source = fit_to_range(_telephone_band(source))
    level = _level_for(name, kbps) if name in _LEVELS else None
    decoded, size = _encode_decode(source, name, level)
    y = _align(decoded, codec_delay(name, level), source.size)
    y = _align(resample(y, rate, SAMPLE_RATE), 0, x.size)
    drawn.update(
        target_kbps=kbps if level is not None else _FIXED_KBPS[name],
        level=level,
        kbps=size * 8 / 1000 / (source.size / rate),
    )
    return fit_to_range(y), drawn


codec = returns_signal(_codec, _check_codec)
