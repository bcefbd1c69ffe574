"""``batch_size="auto"``: the probe keeps the largest size that ran, halves on out-of-memory."""
from __future__ import annotations

import pytest
import torch

from robustfair._batch_size import (AUTO_HEADROOM, AUTO_LIMIT, CPU_BATCH, attack_pass,
                                    fit_batch_size, is_out_of_memory)
from robustfair.errors import RobustfairError

CUDA = torch.device("cuda")  # never touched: the pass is simulated


def _fits_up_to(capacity: int, tried: list[int]):
    def try_pass(b: int) -> None:
        tried.append(b)
        if b > capacity:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return try_pass


@pytest.fixture(autouse=True)
def _no_cuda_cache(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)


def test_doubles_until_out_of_memory_then_keeps_a_margin():
    tried: list[int] = []
    size = fit_batch_size(_fits_up_to(700, tried), n=100_000, device=CUDA)
    assert tried == [32, 64, 128, 256, 512, 1024]
    assert size == int(512 * AUTO_HEADROOM)


def test_halves_when_even_the_start_does_not_fit():
    tried: list[int] = []
    size = fit_batch_size(_fits_up_to(10, tried), n=100_000, device=CUDA)
    assert tried == [32, 16, 8]
    assert size == int(8 * AUTO_HEADROOM)


def test_stops_at_the_number_of_points_and_the_limit():
    tried: list[int] = []
    assert fit_batch_size(_fits_up_to(10**9, tried), n=300, device=CUDA) == 300
    assert tried[-1] == 300
    assert fit_batch_size(_fits_up_to(10**9, []), n=10**6, device=CUDA) == AUTO_LIMIT


def test_nothing_fits_is_a_one_line_error():
    with pytest.raises(RobustfairError, match="not even one point fits"):
        fit_batch_size(_fits_up_to(0, []), n=100, device=CUDA)


def test_other_errors_are_not_taken_for_out_of_memory():
    def broken(b: int) -> None:
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fit_batch_size(broken, n=100, device=CUDA)
    assert is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(ValueError("out of range"))


def test_cpu_uses_a_fixed_size_without_probing():
    def never(b: int) -> None:
        raise AssertionError("no probe on a CPU")
    assert fit_batch_size(never, n=10**5, device=torch.device("cpu")) == CPU_BATCH
    assert fit_batch_size(never, n=7, device=torch.device("cpu")) == 7


def test_attack_pass_runs_forward_and_input_gradient_under_inference_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with torch.inference_mode():
        attack_pass(model, torch.rand(2, 3, 2, 2))(5)
    assert model[1].weight.grad is None
