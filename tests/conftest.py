"""Shared fixtures: where ``../shared/data`` is, and skipping cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The machine (and CI) is shared and noisy: wall-clock deadlines make property tests flaky.
settings.register_profile(
    "spoofstore", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("spoofstore")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; the test is skipped when it is absent (fresh clones)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def la_mini(shared_data: Path) -> Path:
    """The 25 real ASVspoof 2019 LA dev utterances (``flac/`` and ``protocols/``)."""
    path = shared_data / "asvspoof2019_la_mini"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path
