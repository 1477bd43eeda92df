import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from featstore.features.framing import frame_signal, num_frames


def test_reference_frame_counts():
    # the per-file frame counts of ../shared/data/mgd_reference/README.json
    assert num_frames(23488, 400, 160) == 145
    assert num_frames(121130, 400, 160) == 755
    assert num_frames(400, 400, 160) == 1
    assert num_frames(399, 400, 160) == 0
    assert num_frames(0, 400, 160) == 0


@given(st.integers(0, 5000), st.integers(1, 600), st.integers(1, 300))
def test_frames_are_the_complete_windows(n, win, hop):
    x = np.arange(n, dtype=np.float64)
    frames = frame_signal(x, win, hop)
    assert frames.shape == (num_frames(n, win, hop), win)
    for i in range(frames.shape[0]):
        np.testing.assert_array_equal(frames[i], x[hop * i : hop * i + win])
    # no complete frame is left out
    assert hop * frames.shape[0] + win > n or n < win
