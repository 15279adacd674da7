from pathlib import Path

import pytest


@pytest.fixture
def data_dir() -> Path:
    """tests/data: tiny real samples (COCO, CrowdPose, OCHuman, MPII); see tests/data/README.md."""
    return Path(__file__).parent / "data"
