"""A small synthetic corpus in the exact ASVspoof 2019 LA layout, for the demo and the tests.

Bona fide utterances come from a source-filter speech synthesiser (Rosenberg glottal pulses
with jitter and shimmer on a natural F0 contour, aspiration noise, time-varying formants with
smooth transitions, fricatives and pauses, several synthetic speakers). Spoofed utterances are
the same kind of speech passed through vocoder-style resynthesis chains (:data:`ATTACKS`):
train and dev hold attacks A01-A03, eval holds A04-A06 only, which are never seen in training
(as in ASVspoof, where most evaluation attacks are unknown). Both classes then go through the
same channel: leading/trailing silence, a random band-limit, loudness normalisation to a random
active-speech level and background noise at a random SNR, so that level, bandwidth and
silence do not separate them.

The layout and protocols are those of the real download, so the demo runs the same code::

    OUT/ASVspoof2019_LA_{train,dev,eval}/flac/LA_{T,D,E}_NNNNNNN.flac   (16 kHz, 16-bit FLAC)
    OUT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
    OUT/corpus.json                                                    (config + version)

Protocol lines are ``SPEAKER UTT - SYSTEM KEY`` (``SYSTEM`` is ``-`` for bona fide).
Everything is a function of :class:`CorpusConfig` (seed included): the same config gives
byte-identical files, whatever the number of worker processes.

Command line::

    python -m pipelines.demo_corpus --out demo_out/corpus --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

from featstore.augment import augment, parse_recipe
from featstore.features.framing import frame_signal

SAMPLE_RATE = 16000
"""Sample rate of every file (Hz)."""

GENERATOR_VERSION = 2
"""Bumped whenever the audio a given config produces changes (recorded in ``corpus.json``)."""

_HOP = 128  # control-track / synthesis-filter frame step (8 ms)
_WIN = 256  # synthesis window (periodic Hann, sums to one at _HOP)
_NFFT = 1024  # room for the impulse-response tails of the resonators
_N_BINS = _NFFT // 2 + 1
_FREQS = np.arange(_N_BINS) * SAMPLE_RATE / _NFFT

ATTACKS: Mapping[str, str] = MappingProxyType(
    {
        "A01": "80-band mel spectrogram inverted by Griffin-Lim (8 iterations)",
        "A02": "STFT resynthesis with a smoothed magnitude and random phase above 1-3 kHz",
        "A03": "LPC vocoder: order-18 envelope, impulse/noise excitation on a smoothed F0",
        "A04": "cepstral envelope, minimum-phase pulse + band-aperiodic noise (WORLD-like)",
        "A05": "harmonic-plus-noise model with phase-locked harmonics (sinusoidal vocoder)",
        "A06": "40-band mel-smoothed magnitude with the original phase (spectral smoothing)",
    }
)
"""Spoofing chains by system id."""

TRAIN_ATTACKS = ("A01", "A02", "A03")
"""Attacks in train and dev."""
EVAL_ATTACKS = ("A04", "A05", "A06")
"""Attacks in eval only (unseen in training)."""

PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"

DEMO_EVAL_CHANNEL = "codec(codecs='mp3,opus,mulaw,alaw')+noise(snr_min=10,snr_max=30)"
"""The eval-only channel ``make demo`` uses: a lossy codec round trip, then additive noise."""

_EVAL_CHANNEL_STREAM = 0xEC
"""Extra entropy word of the eval channel's random stream (kept apart from the utterance's)."""


@dataclass(frozen=True)
class SplitLayout:
    """Where one split lives and what it contains."""

    name: str
    letter: str
    protocol: str
    attacks: tuple[str, ...]
    first_speaker: int

    @property
    def audio_dir(self) -> str:
        """Directory of the split's FLAC files, relative to the corpus root."""
        return f"ASVspoof2019_LA_{self.name}/flac"


SPLITS: tuple[SplitLayout, ...] = (
    SplitLayout("train", "T", "ASVspoof2019.LA.cm.train.trn.txt", TRAIN_ATTACKS, 79),
    SplitLayout("dev", "D", "ASVspoof2019.LA.cm.dev.trl.txt", TRAIN_ATTACKS, 69),
    SplitLayout("eval", "E", "ASVspoof2019.LA.cm.eval.trl.txt", EVAL_ATTACKS, 1),
)
"""The three splits, in the official layout (speakers are disjoint across splits)."""


@dataclass(frozen=True)
class CorpusConfig:
    """Everything the corpus is a function of.

    Parameters
    ----------
    seed : int
        Master seed; every utterance has its own stream derived from it.
    n_train, n_dev, n_eval : int
        Utterances per split.
    bonafide_fraction : float
        Fraction of bona fide utterances in every split (rounded); spoofs are spread evenly
        over the split's attacks.
    n_speakers : tuple of int
        Synthetic speakers in (train, dev, eval); disjoint across splits.
    min_duration, max_duration : float
        Utterance duration range in seconds (uniform), silences included.
    level_dbfs : tuple of float
        Range of the active-speech RMS level (dBFS), drawn per utterance for both classes.
    snr_db : tuple of float
        Range of the background-noise SNR (dB), drawn per utterance for both classes.
    lowpass_hz : tuple of float
        Range of the channel's low-pass cut-off (Hz), drawn per utterance for both classes.
    silence_s : tuple of float
        Range of the leading and trailing silence (s), drawn per utterance for both classes.
    eval_channel : str
        An augmentation recipe (``featstore build --augment`` syntax, e.g.
        :data:`DEMO_EVAL_CHANNEL`) applied to every eval utterance, bona fide and spoof, after
        the common channel: a channel never seen in training or dev. Its random draws come
        from the utterance's own seed, so the corpus stays a function of the config.
        Empty (the default): no eval channel, the files of earlier corpora.
    """

    seed: int = 0
    n_train: int = 400
    n_dev: int = 120
    n_eval: int = 400
    bonafide_fraction: float = 0.4
    n_speakers: tuple[int, int, int] = (8, 4, 8)
    min_duration: float = 1.0
    max_duration: float = 5.0
    level_dbfs: tuple[float, float] = (-30.0, -22.0)
    snr_db: tuple[float, float] = (20.0, 45.0)
    lowpass_hz: tuple[float, float] = (5000.0, 7800.0)
    silence_s: tuple[float, float] = (0.05, 0.35)
    eval_channel: str = ""

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev", "n_eval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0.0 <= self.bonafide_fraction <= 1.0:
            raise ValueError("bonafide_fraction must be in [0, 1]")
        if len(self.n_speakers) != 3 or min(self.n_speakers) < 1:
            raise ValueError("n_speakers must be three positive counts (train, dev, eval)")
        if not 0.5 <= self.min_duration <= self.max_duration:
            raise ValueError("need 0.5 <= min_duration <= max_duration")
        if 2 * self.silence_s[1] > self.min_duration - 0.3:
            raise ValueError("silence_s too long for min_duration")
        if self.eval_channel:
            parse_recipe(self.eval_channel)  # ConfigError (a ValueError) names the fault

    def size(self, split: str) -> int:
        """Number of utterances in ``split``."""
        return int(getattr(self, f"n_{split}"))

    def to_json(self) -> dict:
        """JSON-ready record (what ``corpus.json`` stores, with the generator version).

        ``eval_channel`` is recorded only when set, so corpora written before it existed
        (same files) are still reused.
        """
        record = {"generator_version": GENERATOR_VERSION, **asdict(self)}
        if not self.eval_channel:
            del record["eval_channel"]
        return record


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: voice-source and vocal-tract parameters."""

    speaker_id: str
    f0_mean: float
    accent_st: float
    formant_scale: float
    jitter: float
    shimmer: float
    breathiness: float
    open_phase: float
    closing_phase: float
    syllable_rate: float


@dataclass(frozen=True)
class UtterancePlan:
    """One utterance to render (decided up front from the split's random stream)."""

    split: str
    index: int
    utt_id: str
    speaker: Speaker
    system: str  # "-" for bona fide
    duration: float
    entropy: tuple[int, ...] = field(repr=False)

    @property
    def key(self) -> str:
        """``"bonafide"`` or ``"spoof"``."""
        return "bonafide" if self.system == "-" else "spoof"

    def protocol_line(self) -> str:
        """The protocol line ``SPEAKER UTT - SYSTEM KEY``."""
        return f"{self.speaker.speaker_id} {self.utt_id} - {self.system} {self.key}"


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`generate` did."""

    root: Path
    config: CorpusConfig
    counts: Mapping[str, Mapping[str, int]]
    reused: bool
    seconds: float


# --- planning -----------------------------------------------------------------------------

# Average adult (male-scaled) formants F1-F4 of ten vowels (Hz), after Peterson & Barney.
_VOWELS = np.array(
    [
        [270, 2290, 3010, 3500],
        [390, 1990, 2550, 3550],
        [530, 1840, 2480, 3500],
        [660, 1720, 2410, 3450],
        [730, 1090, 2440, 3400],
        [570, 840, 2410, 3350],
        [440, 1020, 2240, 3300],
        [300, 870, 2240, 3350],
        [640, 1190, 2390, 3400],
        [490, 1350, 1690, 3300],
    ],
    dtype=np.float64,
)
_F5 = 4500.0
_BANDWIDTHS = np.array([70.0, 100.0, 150.0, 220.0, 300.0])


def _speakers(rng: np.random.Generator, first: int, count: int) -> list[Speaker]:
    out = []
    for i in range(count):
        female = bool(i % 2)
        out.append(
            Speaker(
                speaker_id=f"LA_{first + i:04d}",
                f0_mean=float(rng.uniform(170, 240) if female else rng.uniform(95, 140)),
                accent_st=float(rng.uniform(1.5, 4.0)),
                formant_scale=float(rng.uniform(1.1, 1.22) if female else rng.uniform(0.93, 1.05)),
                jitter=float(rng.uniform(0.004, 0.015)),
                shimmer=float(rng.uniform(0.03, 0.09)),
                breathiness=float(rng.uniform(0.05, 0.2) if female else rng.uniform(0.02, 0.1)),
                open_phase=float(rng.uniform(0.35, 0.5)),
                closing_phase=float(rng.uniform(0.1, 0.2)),
                syllable_rate=float(rng.uniform(3.5, 5.5)),
            )
        )
    return out


def plan_corpus(config: CorpusConfig) -> dict[str, list[UtterancePlan]]:
    """Decide every utterance (id, speaker, system, duration, random stream) of the corpus.

    Parameters
    ----------
    config : CorpusConfig
        Sizes, class balance and seed.

    Returns
    -------
    dict
        Split name -> utterance plans, in protocol order (sorted by speaker, then id).

    Examples
    --------
    >>> plans = plan_corpus(CorpusConfig(n_train=10, n_dev=0, n_eval=0))
    >>> sum(p.key == "bonafide" for p in plans["train"])
    4
    """
    plans: dict[str, list[UtterancePlan]] = {}
    for split_index, layout in enumerate(SPLITS):
        rng = np.random.default_rng([config.seed, split_index])
        speakers = _speakers(rng, layout.first_speaker, config.n_speakers[split_index])
        n = config.size(layout.name)
        n_bona = round(n * config.bonafide_fraction)
        systems = ["-"] * n_bona + [
            layout.attacks[i % len(layout.attacks)] for i in range(n - n_bona)
        ]
        order = rng.permutation(n)
        numbers = 1_000_000 + rng.choice(9_000_000, size=n, replace=False)
        durations = rng.uniform(config.min_duration, config.max_duration, size=n)
        speaker_of = rng.integers(0, len(speakers), size=n)
        items = []
        for i in range(n):
            items.append(
                UtterancePlan(
                    split=layout.name,
                    index=i,
                    utt_id=f"LA_{layout.letter}_{numbers[i]:07d}",
                    speaker=speakers[speaker_of[i]],
                    system=systems[order[i]],
                    duration=round(float(durations[i]), 4),
                    entropy=(config.seed, split_index, i),
                )
            )
        items.sort(key=lambda p: (p.speaker.speaker_id, p.utt_id))
        plans[layout.name] = items
    return plans


# --- the bona fide synthesiser --------------------------------------------------------------


@dataclass(frozen=True)
class Tracks:
    """Frame-rate control tracks (one value every 8 ms) of a synthesised utterance."""

    f0: np.ndarray  # Hz, defined everywhere (interpolated through unvoiced parts)
    voiced: np.ndarray  # voiced amplitude, 0..1
    unvoiced: np.ndarray  # frication amplitude, 0..1


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving Hann average along axis 0 with edge padding (``width`` frames)."""
    if width <= 1:
        return x
    w = np.hanning(width + 2)[1:-1]
    w /= w.sum()
    pad = width // 2
    xp = np.pad(x, [(pad, width - 1 - pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(xp, width, axis=0)
    return view @ w


def _plan_segments(
    rng: np.random.Generator, speaker: Speaker, n_frames: int
) -> tuple[Tracks, np.ndarray, np.ndarray, np.ndarray]:
    """Segment an utterance into fricatives, vowels and pauses; return the control tracks.

    Returns the :class:`Tracks`, formant frequencies ``(n_frames, 5)``, and the fricative
    centre frequency and bandwidth per frame.
    """
    fps = SAMPLE_RATE / _HOP
    av = np.zeros(n_frames)
    an = np.zeros(n_frames)
    formants = np.full((n_frames, 5), np.nan)
    fric_fc = np.full(n_frames, 4500.0)
    fric_bw = np.full(n_frames, 1500.0)
    phrase_t = np.zeros(n_frames)  # seconds since the phrase began (declination)
    accents = np.zeros(n_frames)
    t = 0
    phrase_start = 0
    syllable = 1.0 / speaker.syllable_rate
    frames = np.arange(n_frames)
    while t < n_frames:
        if rng.random() < 0.45:  # a fricative onset
            d = max(2, int(rng.uniform(0.04, 0.11) * fps))
            an[t : t + d] = rng.uniform(0.4, 1.0)
            fric_fc[t : t + d] = rng.uniform(2500, 6500)
            fric_bw[t : t + d] = rng.uniform(800, 2500)
            t += d
        d = max(4, int(syllable * rng.uniform(0.45, 0.9) * fps))
        vowels = rng.choice(len(_VOWELS), size=2)
        target = np.concatenate([_VOWELS[vowels], np.full((2, 1), _F5)], axis=1)
        target *= speaker.formant_scale * rng.uniform(0.97, 1.03, size=(2, 5))
        seg = slice(t, min(t + d, n_frames))
        if rng.random() < 0.3:  # diphthong
            half = t + d // 2
            formants[t:half] = target[0]
            formants[half : t + d] = target[1]
        else:
            formants[seg] = target[0]
        shape = np.sin(np.linspace(0.15, np.pi - 0.15, d))[: max(0, n_frames - t)]
        av[seg] = rng.uniform(0.6, 1.0) * (0.55 + 0.45 * shape)
        if rng.random() < 0.45:
            centre = t + d / 2
            width = d / 2.5
            accents += rng.uniform(0.4, 1.0) * np.exp(-0.5 * ((frames - centre) / width) ** 2)
        t += d
        if rng.random() < 0.12 and t < n_frames - 0.4 * fps:  # a pause ends the phrase
            pause = int(rng.uniform(0.08, 0.3) * fps)
            phrase_t[phrase_start:t] = (np.arange(t - phrase_start)) / fps
            t += pause
            phrase_start = t
    phrase_t[phrase_start:] = np.arange(n_frames - phrase_start) / fps
    valid = ~np.isnan(formants[:, 0])
    if not valid.any():
        formants[:] = np.append(_VOWELS[4], _F5) * speaker.formant_scale
    else:
        for j in range(5):
            formants[:, j] = np.interp(frames, frames[valid], formants[valid, j])
    formants = _smooth(formants, 7)
    av = _smooth(av, 4)
    an = _smooth(an, 3)
    drift = _smooth(np.cumsum(rng.normal(0.0, 0.12, n_frames)), 25)
    drift = np.clip(drift - drift.mean(), -1.5, 1.5)
    semitones = (
        rng.uniform(1.0, 3.0)
        - rng.uniform(1.5, 3.5) * np.minimum(phrase_t, 3.0)
        + speaker.accent_st * accents
        + drift
    )
    f0 = np.clip(speaker.f0_mean * 2.0 ** (semitones / 12.0), 60.0, 420.0)
    return Tracks(f0=f0, voiced=av, unvoiced=an), formants, fric_fc, fric_bw


def _resonators(freqs: np.ndarray, bandwidths: np.ndarray, dc_gain: bool = True) -> np.ndarray:
    """Complex response on the FFT grid of a cascade of two-pole resonators per frame.

    ``freqs`` and ``bandwidths`` are ``(n_frames, n_res)``; returns ``(n_frames, _N_BINS)``.
    The denominator polynomial is multiplied out and evaluated with one FFT per frame.
    """
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    c = 2.0 * r * np.cos(2.0 * np.pi * freqs / SAMPLE_RATE)
    n_frames, n_res = freqs.shape
    poly = np.zeros((n_frames, 2 * n_res + 1))
    poly[:, 0] = 1.0
    for j in range(n_res):  # multiply by (1 - c z^-1 + r^2 z^-2)
        prev = poly.copy()
        poly[:, 1:] -= c[:, j : j + 1] * prev[:, :-1]
        poly[:, 2:] += (r[:, j : j + 1] ** 2) * prev[:, :-2]
    if dc_gain:
        gain = np.prod(1.0 - c + r**2, axis=1)
    else:
        gain = np.prod((1.0 - r) * np.sqrt(np.maximum(1.0 + r**2 - c, 1e-12)), axis=1)
    return gain[:, None] / np.fft.rfft(poly, _NFFT)


def _ola_filter(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Filter ``x`` with a different complex response every ``_HOP`` samples (overlap-add).

    Frame ``m`` (Hann window of ``_WIN`` centred on sample ``m * _HOP``) is filtered with
    ``response[m]``; the filtered frames, tails included, are overlap-added.
    """
    n = x.shape[0]
    n_frames = n // _HOP + 1
    window = np.hanning(_WIN + 1)[:-1]
    padded = np.pad(x, (_WIN // 2, _WIN // 2 + _HOP))
    frames = frame_signal(padded, _WIN, _HOP)[:n_frames] * window
    if response.shape[0] < n_frames:  # control tracks have n // _HOP frames
        response = np.pad(response, [(0, n_frames - response.shape[0]), (0, 0)], mode="edge")
    y = np.fft.irfft(np.fft.rfft(frames, _NFFT) * response[:n_frames], _NFFT)
    blocks = y.reshape(n_frames, _NFFT // _HOP, _HOP)
    out = np.zeros((n_frames + _NFFT // _HOP, _HOP))
    for k in range(_NFFT // _HOP):
        out[k : k + n_frames] += blocks[:, k]
    return out.ravel()[_WIN // 2 : _WIN // 2 + n]


def _to_samples(track: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of a frame-rate track (frame m at sample m * _HOP) to n samples."""
    return np.interp(np.arange(n), np.arange(track.shape[0]) * _HOP, track)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2) + 1e-20))


def synthesise_speech(
    speaker: Speaker, n_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, Tracks]:
    """Source-filter synthesis of one speech-like utterance.

    Parameters
    ----------
    speaker : Speaker
        Voice parameters.
    n_frames : int
        Length in 8 ms frames (``n_frames * 128`` samples).
    rng : np.random.Generator
        Random stream (consumed).

    Returns
    -------
    signal : np.ndarray
        float64 samples at 16 kHz, roughly unit-RMS voiced parts.
    tracks : Tracks
        The F0 and voicing control tracks (what a vocoder would be driven with).

    Examples
    --------
    >>> spk = plan_corpus(CorpusConfig(n_train=1, n_dev=0, n_eval=0))["train"][0].speaker
    >>> x, tr = synthesise_speech(spk, 250, np.random.default_rng(0))
    >>> x.shape, tr.f0.shape
    ((32000,), (250,))
    """
    tracks, formants, fric_fc, fric_bw = _plan_segments(rng, speaker, n_frames)
    n = n_frames * _HOP
    f0 = _to_samples(tracks.f0, n)
    # Glottal source: Rosenberg flow derivative, period-wise jitter and shimmer.
    phase0 = np.cumsum(f0) / SAMPLE_RATE
    n_periods = int(phase0[-1]) + 2
    jitter = 1.0 + np.clip(rng.normal(0.0, speaker.jitter, n_periods), -0.05, 0.05)
    phase = np.cumsum(f0 * jitter[phase0.astype(np.int64)]) / SAMPLE_RATE
    period = phase.astype(np.int64)
    frac = phase - period
    shimmer = np.exp(rng.normal(0.0, speaker.shimmer, int(phase[-1]) + 2))[period]
    tp, tn = speaker.open_phase, speaker.closing_phase
    opening = frac < tp
    closing = (frac >= tp) & (frac < tp + tn)
    flow = np.where(
        opening,
        0.5 * (1.0 - np.cos(np.pi * frac / tp)),
        np.where(closing, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    dflow = np.where(
        opening,
        0.5 * np.pi / tp * np.sin(np.pi * frac / tp),
        np.where(closing, -0.5 * np.pi / tn * np.sin(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    aspiration = rng.standard_normal(n) * (0.3 + flow) * speaker.breathiness * 4.0
    voiced_src = (dflow * shimmer + aspiration) * _to_samples(tracks.voiced, n)
    noise_src = rng.standard_normal(n) * _to_samples(tracks.unvoiced, n)
    bw = _BANDWIDTHS * rng.uniform(0.85, 1.2, size=5)
    vt = _resonators(formants, np.broadcast_to(bw, formants.shape))
    voiced = _ola_filter(voiced_src, vt)
    fric = _resonators(fric_fc[:, None], fric_bw[:, None], dc_gain=False)
    fric *= 1.0 - 0.95 * np.exp(-2j * np.pi * _FREQS / SAMPLE_RATE)  # tilt up
    unvoiced = _ola_filter(noise_src, fric)
    voiced /= _rms(voiced[tracks.voiced.repeat(_HOP) > 0.3]) if (tracks.voiced > 0.3).any() else 1
    if (tracks.unvoiced > 0.3).any():
        unvoiced /= _rms(unvoiced[tracks.unvoiced.repeat(_HOP) > 0.3])
    signal = voiced + unvoiced * 10.0 ** (rng.uniform(-16.0, -8.0) / 20.0)
    return signal, tracks


# --- spoofing chains ------------------------------------------------------------------------


def _analysis_frames(x: np.ndarray, win: int) -> tuple[np.ndarray, float]:
    """Hann-windowed frames of ``win`` samples centred on every ``_HOP``-th sample.

    Returns the frames ``(n // _HOP + 1, win)`` and the window's energy ``sum(w**2)``.
    """
    n_frames = x.shape[0] // _HOP + 1
    window = np.hanning(win + 1)[:-1]
    padded = np.pad(x, (win // 2, win // 2 + _HOP))
    return frame_signal(padded, win, _HOP)[:n_frames] * window, float(np.sum(window**2))


def _cepstral_envelope(x: np.ndarray, n_ceps: int) -> np.ndarray:
    """Cepstrally smoothed natural-log amplitude envelope per frame ``(n_frames, _N_BINS)``,
    scaled so that filtering unit-power excitation reproduces the signal's power."""
    frames, energy = _analysis_frames(x, 512)
    logmag = np.log(np.abs(np.fft.rfft(frames, _NFFT)) + 1e-5) - 0.5 * np.log(energy)
    ceps = np.fft.irfft(logmag, _NFFT)
    ceps[:, n_ceps : _NFFT - n_ceps + 1] = 0.0
    return np.fft.rfft(ceps, _NFFT).real


def _minimum_phase(log_mag: np.ndarray) -> np.ndarray:
    """Minimum-phase complex response with log amplitude ``log_mag`` (folded cepstrum)."""
    ceps = np.fft.irfft(log_mag, _NFFT)
    half = _NFFT // 2
    folded = np.zeros_like(ceps)
    folded[:, 0] = ceps[:, 0]
    folded[:, 1:half] = 2.0 * ceps[:, 1:half]
    folded[:, half] = ceps[:, half]
    return np.exp(np.fft.rfft(folded, _NFFT))


def _levinson(r: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Levinson-Durbin over rows of autocorrelations ``r`` -> (``a`` with a[:, 0]=1, error)."""
    a = np.zeros((r.shape[0], order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1 : 0 : -1], axis=1)
        k = -acc / err
        prev = a[:, 1:i].copy()
        a[:, 1:i] = prev + k[:, None] * prev[:, ::-1]
        a[:, i] = k
        err = err * (1.0 - k**2)
    return a, err


def _vocoder_f0(tracks: Tracks, n: int) -> np.ndarray:
    """The oversmoothed F0 a parametric TTS would predict (no jitter, no micro-prosody)."""
    return _to_samples(_smooth(tracks.f0, 9), n)


def _voicing(tracks: Tracks) -> np.ndarray:
    """Binary voicing decision per frame, lightly smoothed (0..1)."""
    return _smooth((tracks.voiced > np.maximum(tracks.unvoiced, 0.15)).astype(float), 3)


def _pulse_train(f0: np.ndarray) -> np.ndarray:
    """Unit-power impulse train (one pulse of height sqrt(T0) per period)."""
    phase = np.cumsum(f0) / SAMPLE_RATE
    pulses = np.zeros_like(f0)
    idx = np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)
    pulses[idx] = np.sqrt(SAMPLE_RATE / f0[idx])
    return pulses


def _mel_to_linear(mel: np.ndarray, mel_spec: np.ndarray) -> np.ndarray:
    """Spread mel-band magnitudes back over the linear bins (a smooth, non-negative inverse).

    Each band's mean magnitude is shared out over its bins with the band's triangular weights.
    """
    band_mean = mel_spec / np.maximum(mel.sum(axis=1), 1e-6)[:, None]
    return (mel.T @ band_mean) / np.maximum(mel.sum(axis=0), 1e-6)[:, None]


def _griffin_lim(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import librosa

    n_fft, hop = 1024, 256
    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=80, norm=None)
    mel_spec = mel @ np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop))
    linear = _mel_to_linear(mel, mel_spec)
    seed = int(rng.integers(2**31))
    return librosa.griffinlim(
        linear, n_iter=8, hop_length=hop, n_fft=n_fft, length=x.shape[0], random_state=seed
    )


def _random_phase(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import librosa

    n_fft, hop = 512, 128
    stft = librosa.stft(x, n_fft=n_fft, hop_length=hop)
    mag = np.abs(stft)
    mag[:, 1:-1] = 0.25 * mag[:, :-2] + 0.5 * mag[:, 1:-1] + 0.25 * mag[:, 2:]
    cutoff = rng.uniform(1000.0, 3000.0)
    high = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=n_fft) > cutoff
    phase = np.angle(stft)
    phase[high] = rng.uniform(-np.pi, np.pi, size=phase[high].shape)
    return librosa.istft(mag * np.exp(1j * phase), hop_length=hop, length=x.shape[0])


def _lpc_vocoder(x: np.ndarray, tracks: Tracks, rng: np.random.Generator) -> np.ndarray:
    order = 18
    frames, energy = _analysis_frames(x, 400)
    r = np.fft.irfft(np.abs(np.fft.rfft(frames, _NFFT)) ** 2, _NFFT)[:, : order + 1]
    r[:, 0] = r[:, 0] * (1.0 + 1e-6) + 1e-12
    a, err = _levinson(r, order)
    response = np.sqrt(np.maximum(err, 0.0) / energy)[:, None] / np.fft.rfft(a, _NFFT)
    n = x.shape[0]
    v = _to_samples(_voicing(tracks), n)
    excitation = v * _pulse_train(_vocoder_f0(tracks, n)) + (1 - v) * rng.standard_normal(n)
    return _ola_filter(excitation, response)


def _world_like(x: np.ndarray, tracks: Tracks, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    envelope = _minimum_phase(_cepstral_envelope(x, 40))[: tracks.f0.shape[0]]
    mvf = rng.uniform(3000.0, 5000.0)
    aperiodic = 1.0 / (1.0 + np.exp(-(_FREQS - mvf) / 300.0))
    v = _voicing(tracks)[:, None]
    periodic_resp = envelope * v * np.sqrt(1.0 - aperiodic)
    noise_resp = envelope * np.sqrt(v * aperiodic + (1.0 - v))
    pulses = _pulse_train(_vocoder_f0(tracks, n))
    return _ola_filter(pulses, periodic_resp) + _ola_filter(rng.standard_normal(n), noise_resp)


def _harmonic_plus_noise(x: np.ndarray, tracks: Tracks, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    amp = np.exp(_cepstral_envelope(x, 30))[: tracks.f0.shape[0]]  # (frames, bins)
    mvf = rng.uniform(3500.0, 5500.0)
    f0_frames = _smooth(tracks.f0, 9)
    f0 = _to_samples(f0_frames, n)
    theta = 2.0 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    v = _voicing(tracks)
    rows = np.arange(amp.shape[0])
    out = np.zeros(n)
    for k in range(1, int(mvf / f0_frames.min()) + 1):
        fk = k * f0_frames
        gain = np.where(fk < mvf, 1.0, 0.0) * v
        if not gain.any():
            break
        bins = np.minimum(np.rint(fk * _NFFT / SAMPLE_RATE).astype(np.int64), _N_BINS - 1)
        a_k = 2.0 * amp[rows, bins] * np.sqrt(f0_frames / SAMPLE_RATE) * gain
        out += _to_samples(a_k, n) * np.cos(k * theta)
    high = 1.0 / (1.0 + np.exp(-(_FREQS - mvf) / 300.0))
    noise_gain = np.sqrt(v[:, None] * high + (1.0 - v[:, None]))
    out += _ola_filter(rng.standard_normal(n), _minimum_phase(np.log(amp)) * noise_gain)
    return out


def _mel_smoothing(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import librosa

    n_fft, hop = 512, 128
    stft = librosa.stft(x, n_fft=n_fft, hop_length=hop)
    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=40, norm=None)
    smooth = _mel_to_linear(mel, mel @ np.abs(stft))
    smooth = _smooth(smooth.T, 3).T
    smooth *= rng.uniform(0.95, 1.05)
    return librosa.istft(smooth * np.exp(1j * np.angle(stft)), hop_length=hop, length=x.shape[0])


def apply_attack(
    system: str, speech: np.ndarray, tracks: Tracks, rng: np.random.Generator
) -> np.ndarray:
    """Resynthesise ``speech`` through spoofing chain ``system`` (see :data:`ATTACKS`).

    Parameters
    ----------
    system : str
        ``"A01"`` ... ``"A06"``.
    speech : np.ndarray
        Clean synthetic speech (from :func:`synthesise_speech`).
    tracks : Tracks
        Its control tracks (parametric vocoders are driven by a smoothed F0 and voicing).
    rng : np.random.Generator
        Random stream (consumed).

    Returns
    -------
    np.ndarray
        Spoofed samples, same length.
    """
    if system == "A01":
        return _griffin_lim(speech, rng)
    if system == "A02":
        return _random_phase(speech, rng)
    if system == "A03":
        return _lpc_vocoder(speech, tracks, rng)
    if system == "A04":
        return _world_like(speech, tracks, rng)
    if system == "A05":
        return _harmonic_plus_noise(speech, tracks, rng)
    if system == "A06":
        return _mel_smoothing(speech, rng)
    raise ValueError(f"unknown attack {system!r}; known: {', '.join(ATTACKS)}")


# --- channel and rendering ------------------------------------------------------------------


def active_level_db(x: np.ndarray) -> float:
    """Active-speech RMS level in dBFS: RMS over 8 ms frames within 40 dB of the loudest.

    Examples
    --------
    >>> round(active_level_db(np.r_[np.zeros(8000), 0.1 * np.ones(8000)]), 1)
    -20.0
    """
    n = x.shape[0] // _HOP * _HOP
    power = np.mean(x[:n].reshape(-1, _HOP) ** 2, axis=1)
    active = power > power.max() * 1e-4
    return float(10.0 * np.log10(np.mean(power[active]) + 1e-20))


def _channel(
    speech: np.ndarray, lead: int, trail: int, config: CorpusConfig, rng: np.random.Generator
) -> np.ndarray:
    """Silence, band-limit, loudness normalisation and noise: the same for both classes."""
    x = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    low = rng.uniform(*config.lowpass_hz)
    high = rng.uniform(40.0, 120.0)
    sos = butter(4, [high, low], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    x = sosfilt(sos, x)
    level = rng.uniform(*config.level_dbfs)
    x *= 10.0 ** ((level - active_level_db(x)) / 20.0)
    noise = sosfilt(sos, rng.standard_normal(x.shape[0]))
    snr = rng.uniform(*config.snr_db)
    x += noise * 10.0 ** ((level - snr) / 20.0) / _rms(noise)
    peak = np.max(np.abs(x))
    if peak > 0.99:
        x *= 0.99 / peak
    return x


def acoustic_model_voice(speaker: Speaker) -> Speaker:
    """The voice a TTS/VC acoustic model reproduces: the speaker's, with less micro-variation.

    Every spoof (seen or unseen attack) starts from speech in this voice before its vocoder
    chain, as real TTS/VC systems predict over-smoothed source parameters: period-to-period
    jitter and shimmer are mostly lost and aspiration noise is halved.
    """
    return replace(
        speaker,
        jitter=0.15 * speaker.jitter,
        shimmer=0.15 * speaker.shimmer,
        breathiness=0.5 * speaker.breathiness,
    )


def render_utterance(plan: UtterancePlan, config: CorpusConfig) -> np.ndarray:
    """The int16 samples of one planned utterance (a pure function of plan and config).

    Parameters
    ----------
    plan : UtterancePlan
        From :func:`plan_corpus`.
    config : CorpusConfig
        The corpus config (channel ranges).

    Returns
    -------
    np.ndarray
        int16 samples at 16 kHz, ``round(plan.duration * 16000)`` long.
    """
    rng = np.random.default_rng(list(plan.entropy))
    n_total = round(plan.duration * SAMPLE_RATE)
    lead, trail = (rng.uniform(*config.silence_s, size=2) * SAMPLE_RATE).astype(int)
    n_frames = max(1, (n_total - lead - trail) // _HOP)
    if plan.system == "-":
        speech, _ = synthesise_speech(plan.speaker, n_frames, rng)
    else:
        speech, tracks = synthesise_speech(acoustic_model_voice(plan.speaker), n_frames, rng)
        speech = apply_attack(plan.system, speech, tracks, rng)
    trail = n_total - lead - speech.shape[0]
    x = _channel(speech, lead, trail, config, rng)
    if config.eval_channel and plan.split == "eval":
        x = eval_channel(x, plan, config.eval_channel)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def eval_channel(x: np.ndarray, plan: UtterancePlan, recipe: str) -> np.ndarray:
    """Pass one rendered utterance through the eval-only channel ``recipe``.

    Parameters
    ----------
    x : np.ndarray
        Float samples at 16 kHz in [-1, 1) (the output of the common channel).
    plan : UtterancePlan
        The utterance; its entropy (corpus seed, split, index) seeds the channel's draws on a
        stream of their own, so the utterance's other draws do not change.
    recipe : str
        Augmentation recipe (see :func:`featstore.augment.parse_recipe`).

    Returns
    -------
    np.ndarray
        As many samples, in [-1, 1) (the augmentations scale rather than clip).

    Examples
    --------
    >>> plan = plan_corpus(CorpusConfig(n_train=1, n_dev=1, n_eval=1))["eval"][0]
    >>> eval_channel(np.zeros(1600), plan, "gain").shape
    (1600,)
    """
    rng = np.random.default_rng([*plan.entropy, _EVAL_CHANNEL_STREAM])
    return augment(np.asarray(x, dtype=np.float64), rng, parse_recipe(recipe))


def _write_one(args: tuple[UtterancePlan, CorpusConfig, str]) -> None:
    plan, config, path = args
    sf.write(path, render_utterance(plan, config), SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def _existing_config(root: Path) -> dict | None:
    try:
        return json.loads((root / "corpus.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _complete(root: Path, plans: Mapping[str, Sequence[UtterancePlan]]) -> bool:
    for layout in SPLITS:
        if not (root / PROTOCOL_DIR / layout.protocol).is_file():
            return False
        for p in plans[layout.name]:
            if not (root / layout.audio_dir / f"{p.utt_id}.flac").is_file():
                return False
    return True


def generate(
    out: str | os.PathLike,
    config: CorpusConfig | None = None,
    *,
    jobs: int = 1,
    reuse: bool = True,
) -> CorpusSummary:
    """Write the corpus under ``out`` (ASVspoof 2019 LA layout + ``corpus.json``).

    Parameters
    ----------
    out : path
        Corpus root (created). Plays the role of the ``LA/`` directory of the real download.
    config : CorpusConfig, optional
        Sizes, balance and seed; the defaults fit the demo's time budget.
    jobs : int, default 1
        Worker processes (the files do not depend on it).
    reuse : bool, default True
        When ``out/corpus.json`` records the same config and generator version and every
        file exists, do nothing.

    Returns
    -------
    CorpusSummary
        Root, config, per-split counts by system, whether it was reused, seconds taken.

    Examples
    --------
    >>> import tempfile
    >>> cfg = CorpusConfig(n_train=4, n_dev=2, n_eval=3, max_duration=1.5)
    >>> s = generate(tempfile.mkdtemp(), cfg)
    >>> sorted(s.counts["eval"])
    ['A04', 'A05', 'bonafide']
    """
    config = config or CorpusConfig()
    root = Path(out)
    start = time.perf_counter()
    plans = plan_corpus(config)
    counts = {split: _count(items) for split, items in plans.items()}
    wanted = json.loads(json.dumps(config.to_json()))
    if reuse and _existing_config(root) == wanted and _complete(root, plans):
        return CorpusSummary(root, config, counts, True, time.perf_counter() - start)
    (root / "corpus.json").unlink(missing_ok=True)
    (root / PROTOCOL_DIR).mkdir(parents=True, exist_ok=True)
    tasks = []
    for layout in SPLITS:
        audio_dir = root / layout.audio_dir
        audio_dir.mkdir(parents=True, exist_ok=True)
        tasks += [(p, config, str(audio_dir / f"{p.utt_id}.flac")) for p in plans[layout.name]]
    # Longest first keeps the workers evenly loaded.
    tasks.sort(key=lambda t: -t[0].duration)
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(_write_one, tasks, chunksize=4))
    else:
        for task in tasks:
            _write_one(task)
    for layout in SPLITS:
        lines = [p.protocol_line() for p in plans[layout.name]]
        text = "".join(line + "\n" for line in lines)
        (root / PROTOCOL_DIR / layout.protocol).write_text(text)
    record = {
        "config": config.to_json(),
        "attacks": dict(ATTACKS),
        "splits": {layout.name: list(layout.attacks) for layout in SPLITS},
    }
    (root / "corpus.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return CorpusSummary(root, config, counts, False, time.perf_counter() - start)


def _count(items: Sequence[UtterancePlan]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in items:
        name = "bonafide" if p.system == "-" else p.system
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m pipelines.demo_corpus``."""
    d = CorpusConfig()
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo_corpus",
        description="Write the synthetic demo corpus in the ASVspoof 2019 LA layout.",
    )
    parser.add_argument("--out", required=True, help="corpus root directory")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--n-train", type=int, default=d.n_train)
    parser.add_argument("--n-dev", type=int, default=d.n_dev)
    parser.add_argument("--n-eval", type=int, default=d.n_eval)
    parser.add_argument("--bonafide-fraction", type=float, default=d.bonafide_fraction)
    parser.add_argument("--min-duration", type=float, default=d.min_duration)
    parser.add_argument("--max-duration", type=float, default=d.max_duration)
    parser.add_argument(
        "--eval-channel",
        default=d.eval_channel,
        metavar="RECIPE",
        help="augmentation recipe applied to the eval split only, a channel unseen in "
        f"training (the demo uses {DEMO_EVAL_CHANNEL!r}) [none]",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.demo_corpus --out DIR [--seed S] [--n-train N] ...``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = CorpusConfig(
            seed=args.seed,
            n_train=args.n_train,
            n_dev=args.n_dev,
            n_eval=args.n_eval,
            bonafide_fraction=args.bonafide_fraction,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            eval_channel=args.eval_channel,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = generate(args.out, config, jobs=args.jobs, reuse=not args.force)
    verb = "reused" if summary.reused else "wrote"
    for split, counts in summary.counts.items():
        parts = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(f"{split:5s}: {parts}")
    print(f"{verb} {summary.root} in {summary.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
