"""Noise and RIR directories: indexing, bad directories, resampling, looping, alignment."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from featstore.augment import parse_recipe
from featstore.augment.levels import snr_db
from featstore.augment.noise import noise
from featstore.augment.reverb import aligned_rir, reverb
from featstore.augment.sources import audio_bank, read_excerpt
from featstore.errors import ConfigError

SR = 16000


def write(path, signal, rate=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, rate)
    return path


def white(n, seed=0, level=0.2):
    return level * np.random.default_rng(seed).uniform(-1, 1, n)


def speechlike(n, seed=0):
    rng = np.random.default_rng(seed)
    x = scipy.signal.lfilter([1.0], [1.0, -1.6, 0.9], rng.standard_normal(n))
    return 0.3 * x / np.max(np.abs(x))


def test_musan_layout_is_indexed_recursively_and_sorted(tmp_path):
    write(tmp_path / "noise" / "sound-bible" / "b.wav", white(8000))
    write(tmp_path / "noise" / "free-sound" / "a.flac", white(8000))
    (tmp_path / "noise" / "free-sound" / "ANNOTATIONS").write_text("not audio")
    bank = audio_bank(tmp_path / "noise")
    assert [os.path.basename(f.path) for f in bank] == ["a.flac", "b.wav"]
    assert all(f.frames == 8000 and f.sample_rate == SR for f in bank)


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "no-audio", "undecodable", "zero"])
def test_bad_noise_directories_fail_at_parse_time_naming_the_culprit(tmp_path, kind):
    d = tmp_path / "noises"
    culprit = str(d)
    if kind == "file":
        d.write_text("x")
    elif kind != "missing":
        d.mkdir()
    if kind == "no-audio":
        (d / "README.txt").write_text("x")
    elif kind == "undecodable":
        (d / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
        culprit = str(d / "bad.wav")
    elif kind == "zero":
        write(d / "empty.wav", np.zeros(0))
        culprit = str(d / "empty.wav")
    with pytest.raises(ConfigError) as info:
        parse_recipe(f"noise(noise_dir='{d}')")
    assert culprit in str(info.value) and "noise_dir" in str(info.value)
    with pytest.raises(ConfigError):
        parse_recipe("reverb", defaults={"reverb": {"rir_dir": str(d)}})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_noise_directory(tmp_path):
    d = tmp_path / "locked"
    write(d / "sub" / "a.wav", white(100))
    os.chmod(d / "sub", 0)
    try:
        with pytest.raises(ConfigError, match="cannot read"):
            parse_recipe(f"noise(noise_dir='{d}')")
    finally:
        os.chmod(d / "sub", 0o755)


def test_noise_from_files_at_the_drawn_snr(tmp_path):
    write(tmp_path / "n1.wav", white(40000, 1))
    write(tmp_path / "n2.wav", white(40000, 2))
    x = speechlike(16000)
    for seed in range(4):
        y, drawn = noise.with_params(x, np.random.default_rng(seed), noise_dir=str(tmp_path))
        assert drawn["source"].startswith(str(tmp_path)) and not drawn["looped"]
        assert abs(snr_db(x, y / drawn["scale"] - x) - drawn["snr_db"]) < 0.5


def test_wrong_rate_noise_is_resampled(tmp_path):
    # a 1 kHz tone at 44.1 kHz must stay a 1 kHz tone at 16 kHz
    t = np.arange(44100) / 44100
    write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), rate=44100)
    (file,) = audio_bank(tmp_path)
    excerpt, where = read_excerpt(file, 8000, np.random.default_rng(0))
    assert excerpt.size == 8000 and not where["looped"]
    spectrum = np.abs(np.fft.rfft(excerpt * np.hanning(8000)))
    assert np.fft.rfftfreq(8000, 1 / SR)[np.argmax(spectrum)] == pytest.approx(1000, abs=4)


def test_too_short_noise_is_looped(tmp_path):
    short = white(1000, 3)
    write(tmp_path / "short.wav", short)
    (file,) = audio_bank(tmp_path)
    excerpt, where = read_excerpt(file, 5000, np.random.default_rng(0))
    assert where["looped"] and excerpt.size == 5000
    stored = sf.read(tmp_path / "short.wav")[0]
    start = round(where["start"] * SR)
    assert np.allclose(excerpt, np.tile(stored, 7)[start : start + 5000])
    y = noise(speechlike(5000), np.random.default_rng(0), noise_dir=str(tmp_path))
    assert y.shape == (5000,) and np.isfinite(y).all()


def test_noise_draws_are_deterministic(tmp_path):
    for i in range(3):
        write(tmp_path / f"n{i}.wav", white(20000, i))
    x = speechlike(4000)
    a = noise(x, np.random.default_rng(9), noise_dir=str(tmp_path))
    b = noise(x, np.random.default_rng(9), noise_dir=str(tmp_path))
    assert np.array_equal(a, b)


def test_silent_noise_file_is_an_audio_error(tmp_path):
    from featstore.errors import AudioError

    write(tmp_path / "silence.wav", np.zeros(20000))
    with pytest.raises(AudioError, match=r"silence\.wav.*silent"):
        noise(speechlike(4000), np.random.default_rng(0), noise_dir=str(tmp_path))


def test_rir_files_are_aligned_on_their_direct_path(tmp_path):
    h = np.zeros(4000)
    h[137] = 0.8  # 137 samples of propagation delay before the direct path
    h[138:] += (
        0.05 * np.random.default_rng(0).standard_normal(3862) * np.exp(-np.arange(3862) / 800)
    )
    write(tmp_path / "rir.wav", h)
    x = speechlike(16000)
    y, drawn = reverb.with_params(x, np.random.default_rng(0), rir_dir=str(tmp_path))
    assert drawn["source"].endswith("rir.wav") and drawn["rir"][0] == 1.0
    n = x.size - 400
    corr = [np.dot(y[200 + k : 200 + k + n], x[200 : 200 + n]) for k in range(-200, 201)]
    assert int(np.argmax(corr)) - 200 == 0
    assert aligned_rir(np.array([0.0, -0.5, 0.25])).tolist() == [1.0, -0.5]
