"""Shared test settings: small thread counts so the suite behaves on 2 cores, fixed seeds."""
import os

import pytest
import torch

os.environ.setdefault("ROBUSTFAIR_DATA", os.path.join(os.path.dirname(__file__), ".no-data-dir"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
