"""Shared fixtures: the path to the reference data beside the repository, when it is there."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The folder of reference data beside the checkout; tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent (it ships only with the development checkout)")
    return SHARED


def pytest_configure(config):
    # The test models are tiny: one thread avoids OpenMP's start-up cost and the slowdown when
    # other processes share the cores.
    import torch

    torch.set_num_threads(1)
