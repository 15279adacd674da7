from pathlib import Path

import pytest
import torch


@pytest.fixture
def data_dir() -> Path:
    """tests/data: tiny real samples (COCO, CrowdPose, OCHuman, MPII); see tests/data/README.md."""
    return Path(__file__).parent / "data"


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored afterwards. Tiny inputs on the shared 2-core machine: two
    OpenMP threads spin-wait each other when other jobs hold the cores (measured 28 s vs 0.3 s for one
    HRNet-W32 forward / backward). Modules use it with `pytestmark = pytest.mark.usefixtures(...)`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
