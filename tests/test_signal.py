import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from featstore.signal import as_float_signal, resample


@pytest.mark.parametrize(
    ("dtype", "full_scale"),
    [(np.int16, 32768.0), (np.int32, 2.0**31), (np.int8, 128.0)],
)
def test_integer_pcm_is_scaled_by_full_scale(dtype, full_scale):
    x = np.array([0, 1, -1, np.iinfo(dtype).min, np.iinfo(dtype).max], dtype=dtype)
    y = as_float_signal(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, x.astype(np.float64) / full_scale)
    assert y.min() >= -1.0 and y.max() < 1.0


def test_unsigned_pcm_is_centred():
    y = as_float_signal(np.array([0, 128, 255], dtype=np.uint8))
    np.testing.assert_allclose(y, [-1.0, 0.0, 127 / 128])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_raise_naming_the_sample(bad):
    x = np.zeros(10)
    x[7] = bad
    with pytest.raises(ValueError, match="sample 7"):
        as_float_signal(x)


def test_multichannel_is_refused():
    with pytest.raises(ValueError, match="1-D"):
        as_float_signal(np.zeros((2, 10)))


@given(hnp.arrays(np.float32, st.integers(0, 64), elements=st.floats(-1, 1, width=32)))
def test_float_input_is_preserved(x):
    np.testing.assert_array_equal(as_float_signal(x), x.astype(np.float64))


def test_resample_changes_length_by_the_rate_ratio():
    t = np.arange(44100) / 44100
    y = resample(np.sin(2 * np.pi * 440 * t), 44100)
    assert y.shape == (16000,)
    # the tone survives: its spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 1


def test_resample_is_noop_at_target_rate():
    x = np.linspace(-1, 1, 100)
    np.testing.assert_array_equal(resample(x, 16000), x)
