"""Decoding, downmixing, resampling and validating audio files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from featstore.audio import Audio, audio_duration, load_audio
from featstore.errors import AudioError


def tone(n: int, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)


def test_flac_16k_mono_is_read_as_int16_over_32768(tmp_path):
    pcm = np.array([0, 1, -1, 16384, -32768, 32767] * 100, dtype=np.int16)
    p = tmp_path / "a.flac"
    sf.write(p, pcm, 16000, subtype="PCM_16")
    a = load_audio(p)
    assert isinstance(a, Audio)
    assert a.signal.dtype == np.float64 and a.signal.ndim == 1
    np.testing.assert_array_equal(a.signal, pcm / 32768.0)
    # a third of the samples are -32768 or 32767: noted as clipped, kept as they are
    clipped = ("clipped: 200 of 600 samples (33.3 %) at full scale",)
    assert (a.sample_rate, a.channels, a.notes) == (16000, 1, clipped)
    assert a.signal.min() >= -1.0 and a.signal.max() < 1.0


def test_wav_pcm16(tmp_path):
    pcm = (tone(1600, 16000) * 32767).astype(np.int16)
    p = tmp_path / "a.wav"
    sf.write(p, pcm, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(p).signal, pcm / 32768.0)


def test_stereo_is_averaged_and_noted(tmp_path):
    left, right = tone(800, 16000, 300), tone(800, 16000, 500, 0.25)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    a = load_audio(p)
    assert (a.channels, a.sample_rate) == (2, 16000)
    assert a.notes == ("downmixed 2 channels",)
    np.testing.assert_allclose(a.signal, (left.astype(np.float32) + right.astype(np.float32)) / 2)


def test_44k_stereo_is_resampled_and_both_noted(tmp_path):
    sr = 44100
    x = tone(sr, sr, 440)  # 1 s
    p = tmp_path / "cd.flac"
    sf.write(p, np.stack([x, x], axis=1), sr, subtype="PCM_16")
    a = load_audio(p)
    assert (a.sample_rate, a.channels) == (44100, 2)
    assert a.notes == ("downmixed 2 channels", "resampled 44100->16000")
    assert a.signal.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(a.signal))
    assert abs(np.argmax(spectrum) * 16000 / a.signal.size - 440) <= 1
    assert a.signal.min() >= -1.0 and a.signal.max() < 1.0


def test_other_target_rate(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, tone(16000, 16000), 16000)
    a = load_audio(p, target_sr=8000)
    assert a.signal.shape == (8000,) and a.notes == ("resampled 16000->8000",)


def test_out_of_range_float_samples_are_clipped_with_a_note(tmp_path):
    p = tmp_path / "loud.wav"
    sf.write(p, np.array([0.0, 1.0, 1.5, -2.0, 0.5]), 16000, subtype="FLOAT")
    a = load_audio(p)
    assert a.notes == (
        "clipped: 3 of 5 samples (60.0 %) at full scale",
        "clipped 3 samples into [-1, 1)",
    )
    assert a.signal[3] == -1.0 and a.signal.max() < 1.0 and a.signal[4] == 0.5


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_audio_with_over_1_percent_of_samples_at_full_scale_is_noted_clipped(tmp_path, subtype):
    x = 0.3 * np.sin(np.arange(16000) / 5.0)
    x[:200] = 1.0  # 300 of 16000 samples (1.9 %) at full scale, both signs
    x[200:400:2] = -1.0
    p = tmp_path / "hot.wav"
    sf.write(p, x, 16000, subtype=subtype)
    a = load_audio(p)
    assert a.notes[0].startswith("clipped: 300 of 16000 samples (1.9 %) at full scale")
    x[:400] = 0.5
    x[:150] = -1.0  # 150 of 16000 (0.94 %): not noted
    sf.write(p, x, 16000, subtype=subtype)
    assert load_audio(p).notes == ()


def test_all_zero_and_very_short_audio_are_not_errors(tmp_path):
    z = tmp_path / "zeros.flac"
    sf.write(z, np.zeros(4000, dtype=np.int16), 16000)
    assert not load_audio(z).signal.any()
    short = tmp_path / "short.wav"
    sf.write(short, np.full(10, 0.1), 16000)
    assert load_audio(short).signal.shape == (10,)


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.flac: no such file") as e:
        load_audio(tmp_path / "nope.flac")
    assert e.value.path == str(tmp_path / "nope.flac")


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.flac"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)"):
        load_audio(p)


def test_zero_samples(tmp_path):
    p = tmp_path / "nothing.wav"
    sf.write(p, np.zeros(0), 16000)
    with pytest.raises(AudioError, match=r"no audio samples \(0 frames\)"):
        load_audio(p)


def test_not_audio(tmp_path):
    p = tmp_path / "text.flac"
    p.write_bytes(b"this is not a FLAC file at all\n" * 10)
    with pytest.raises(AudioError, match=r"text\.flac: cannot decode audio"):
        load_audio(p)


@pytest.mark.parametrize("keep", [0.03, 0.5, 0.95])
def test_truncated_flac(tmp_path, keep):
    p = tmp_path / "a.flac"
    sf.write(p, tone(48000, 16000) + 0.01 * np.random.default_rng(0).standard_normal(48000), 16000)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(
        AudioError, match=r"a\.flac: (corrupt or truncated|cannot decode|truncated)"
    ):
        load_audio(p)


def test_truncated_wav_is_detected_from_its_header(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, tone(16000, 16000), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: 44 + 2 * 6000])
    with pytest.raises(AudioError, match="header announces 16000 samples, decoded only 6000"):
        load_audio(p)


def test_fewer_frames_than_the_header_says_is_truncation(tmp_path, monkeypatch):
    # libsndfile 1.2 raises on cut FLAC streams; older versions return the frames they could
    # decode, which the frame count comparison catches
    p = tmp_path / "a.flac"
    sf.write(p, tone(4000, 16000), 16000)
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, **kw: real_read(self, **kw)[:-100])
    with pytest.raises(AudioError, match="header announces 4000 samples, decoded only 3900"):
        load_audio(p)


def test_wavex_stereo_truncation(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, np.zeros((1000, 2)), 16000, format="WAVEX", subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[:-400])
    with pytest.raises(AudioError, match="header announces 1000 samples, decoded only 900"):
        load_audio(p)


@pytest.mark.parametrize(("bad", "kind"), [(np.nan, "NaN"), (np.inf, "infinite")])
def test_non_finite_samples_name_the_first_bad_sample(tmp_path, bad, kind):
    x = tone(1000, 16000)
    x[123] = bad
    x[500] = np.nan
    p = tmp_path / "f.wav"
    sf.write(p, x, 16000, subtype="DOUBLE")
    with pytest.raises(
        AudioError, match=rf"f\.wav: audio holds 2 non-finite .*{kind} at sample 123"
    ):
        load_audio(p)


def test_non_finite_in_one_channel_of_stereo(tmp_path):
    x = np.zeros((100, 2), dtype=np.float32)
    x[42, 1] = np.inf
    p = tmp_path / "s.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="at sample 42"):
        load_audio(p)


# ----------------------------------------------------------------------------- duration, real


def test_audio_duration_reads_the_header(tmp_path):
    p = tmp_path / "a.flac"
    sf.write(p, tone(22050, 44100), 44100)
    assert audio_duration(p) == pytest.approx(0.5)
    with pytest.raises(AudioError, match="no such file"):
        audio_duration(tmp_path / "nope.wav")


def test_real_la_mini_flac_matches_soundfile(la_mini):
    path = la_mini / "flac" / "LA_D_1000265.flac"
    a = load_audio(path)
    ref, sr = sf.read(path, dtype="float64")
    assert sr == 16000
    assert (a.sample_rate, a.channels, a.notes) == (16000, 1, ())
    np.testing.assert_array_equal(a.signal, ref)
    assert a.signal.size == 23488  # 1.468 s, as documented in mgd_reference
    # 16-bit FLAC: every sample is an exact multiple of 1/32768
    np.testing.assert_array_equal(a.signal * 32768, np.round(a.signal * 32768))
    assert audio_duration(path) == pytest.approx(1.468)
