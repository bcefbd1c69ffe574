"""Shared test settings: small thread counts so the suite behaves on 2 cores, fixed seeds.

Test files are filed by the room they test (test_<room>_<topic>.py: data, cli, models, attacks,
training, study, ...), tests named by the behaviour they check; helpers shared by several files
are plain modules here (limited.py, one_line.py, digits_model.py, ...). Long end-to-end tests and
every comparison against another attack implementation (torchattacks, the official AutoAttack) are
marked ``slow``."""
import os

import pytest
import torch

os.environ.setdefault("ROBUSTFAIR_DATA", os.path.join(os.path.dirname(__file__), ".no-data-dir"))
# One thread: the tests use tiny models, for which thread overhead dominates (two spinning
# OpenMP threads make them 10-50x slower on a busy machine), and some tests run two processes
# side by side (DDP) on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # again per test: a test may change it
    yield
