"""Models that pass the one forward check and misbehave inside the audit: one line naming the
problem (and the attack, and the part of a composite one), exit 2; a model that changes its
input in place is audited on a copy, with the same numbers as a well-behaved equivalent, and
the report says so."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robustfair as rf

from limited import assert_one_line_error, cli

MODELS = '''
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
NET = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

class Wrap(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.net, self.fn = NET, fn
    def forward(self, x):
        return self.fn(self.net, x)

# each misbehaves only on more than the 2 images of the forward check
def detached(): return Wrap(lambda n, x: n(x).detach())
def one_hot(): return Wrap(lambda n, x: F.one_hot(n(x).argmax(1), 10).float() if len(x) > 2 else n(x))
def integer(): return Wrap(lambda n, x: (n(x) * 100).long() if len(x) > 2 else n(x))
def complex_(): return Wrap(lambda n, x: n(x).to(torch.complex64) if len(x) > 2 else n(x))
def drops_rows(): return Wrap(lambda n, x: n(x)[:-1] if len(x) > 2 else n(x))
def big_batches_fail():
    def fn(n, x):
        if len(x) > 2:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")
        return n(x)
    return Wrap(fn)
def fails_under_gradient():
    def fn(n, x):
        if x.requires_grad and len(x) < 8:  # a full batch works, an attack's smaller one not
            raise RuntimeError("no backward for this layer")
        return n(x)
    return Wrap(fn)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "odd.py"
    path.write_text(MODELS)
    return path


def _audit(models, factory, tmp_path, capsys, *attack):
    return cli(["audit", "--model", f"{models}:{factory}", "--dataset", "digits", "--limit", "8",
                "--eps", "0.1", "--batch-size", "8", "--no-optimize", *(attack or ("--attack", "pgd")),
                "--steps", "2", "--out", tmp_path / "out"], capsys)


@pytest.mark.parametrize("factory, fragment", [
    ("detached", "the sanity checks before the attacks: the model's output has no gradient with "
                 "respect to its input"),
    ("one_hot", "the sanity checks before the attacks: the model's output has no gradient"),
    ("integer", "the model returns torch.int64 outputs on a batch of 8 images"),
    ("complex_", "the model returns torch.complex64 outputs on a batch of 8 images"),
    ("drops_rows", "the model returned 7 rows for a batch of 8 images"),
    ("big_batches_fail", "the model failed on a batch of 8 images (1x8x8): RuntimeError: cuDNN error"),
])
def test_a_model_that_misbehaves_inside_the_audit_is_one_line(models, tmp_path, capsys, factory, fragment):
    code, err = _audit(models, factory, tmp_path, capsys)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


def test_an_error_inside_autoattack_names_the_part(models, tmp_path, capsys):
    # the CLI's sanity checks run AutoAttack's first part first: they name it
    code, err = _audit(models, "fails_under_gradient", tmp_path, capsys, "--attack", "autoattack")
    assert_one_line_error(code, err, "the sanity checks before the attacks: apgd-ce: the model "
                                     "failed on a batch of 3 images")
    assert "RuntimeError: no backward for this layer" in err


class _FailsOnSmallGradientBatches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        if x.requires_grad and len(x) < 8:
            raise RuntimeError("no backward for this layer")
        return self.net(x)


def test_an_error_inside_autoattack_names_autoattack_and_its_part():
    ds = rf.load_dataset("digits")
    with pytest.raises(rf.RobustfairError) as info:
        rf.audit(_FailsOnSmallGradientBatches(), ds.test.x[:8], ds.test.y[:8],
                 attacks=[rf.build_attack("autoattack", eps=0.1, steps=2)], batch_size=8,
                 progress=False, sanity=False)
    assert str(info.value).startswith("autoattack: apgd-ce: the model failed on a batch of ")


class _Halves(nn.Module):
    """Scales its input by 1/2 in place (the misbehaviour), or on a copy (the reference)."""

    def __init__(self, net: nn.Module, in_place: bool) -> None:
        super().__init__()
        self.net, self.in_place = net, in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mul_(0.5) if self.in_place else x * 0.5)


def test_a_model_that_changes_its_input_is_audited_on_a_copy_and_flagged():
    ds = rf.load_dataset("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = ds.test.x[:40].float() / 255
    before = x.clone()
    attack = rf.build_attack("pgd", eps=0.1, steps=3)
    odd = rf.audit(_Halves(net, True), x, ds.test.y[:40], attacks=[attack], progress=False)
    ref = rf.audit(_Halves(net, False), x, ds.test.y[:40], attacks=[attack], progress=False)
    assert torch.equal(x, before)  # the caller's images are untouched
    assert odd.predictions.equals(ref.predictions)  # the same numbers as the honest model
    assert [f["code"] for f in odd.flags if f["code"] == "input_changed"] == ["input_changed"]
    assert "input_changed" not in [f["code"] for f in ref.flags]


def test_the_device_running_out_of_memory_mid_audit_is_one_line(models, tmp_path, capsys):
    path = tmp_path / "oom.py"
    path.write_text(MODELS + """
def out_of_memory():
    def fn(n, x):
        if len(x) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return n(x)
    return Wrap(fn)
""")
    code, err = _audit(path, "out_of_memory", tmp_path, capsys)
    assert_one_line_error(code, err, "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert err.strip().endswith("try a smaller --batch-size")
