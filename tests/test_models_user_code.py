"""A user's model code that exits, builds on the meta device, or comes with weights that would
be silently cast: each is one line and exit 2 (or, for the meta device with weights, it works)."""
from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from limited import assert_one_line_error, cli

NET = """
import torch
from torch import nn

def build(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))
"""


def _model_file(tmp_path, body: str, name: str = "net.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(NET) + textwrap.dedent(body))
    return path


def _weights(tmp_path, **changes):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    state = dict(net.state_dict())
    state.update(changes)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    return path


def _audit(tmp_path, capsys, spec, weights=None):
    argv = ["audit", "--model", spec, "--dataset", "digits", "--limit", "8", "--attack", "fgsm",
            "--eps", "0.1", "--out", tmp_path / "out"]
    if weights is not None:
        argv += ["--weights", weights]
    return cli(argv, capsys)


# ---------------------------------------------------------------------------- user code exits
def test_a_model_file_that_parses_arguments_at_import_sees_no_arguments(tmp_path, capsys):
    path = _model_file(tmp_path, """
        import argparse
        args = argparse.ArgumentParser().parse_args()  # as a script run alone: no arguments
    """)
    code, err = _audit(tmp_path, capsys, f"{path}:build", _weights(tmp_path))
    assert code == 0, err
    assert "unrecognized arguments" not in err


def test_a_model_file_whose_argparse_exits_is_named_with_its_message(tmp_path, capsys):
    path = _model_file(tmp_path, """
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--config", required=True)
        p.parse_args()
    """)
    code, err = _audit(tmp_path, capsys, f"{path}:build", _weights(tmp_path))
    assert_one_line_error(code, err, f"importing {path} exited with code 2")
    assert "the following arguments are required: --config" in err


def test_a_factory_that_exits_3_is_one_line_not_a_silent_exit_3(tmp_path, capsys):
    path = _model_file(tmp_path, """
        def quits(num_classes):
            raise SystemExit(3)
    """)
    code, err = _audit(tmp_path, capsys, f"{path}:quits")
    assert_one_line_error(code, err, "exited with code 3")
    assert "quits(num_classes=10)" in err


def test_builtins_exit_as_a_factory_is_one_line_not_exit_0(tmp_path, capsys):
    code, err = _audit(tmp_path, capsys, "builtins:exit")
    assert_one_line_error(code, err, "builtins:exit() exited with code 0")
    assert not (tmp_path / "out").exists()


def test_sys_exit_with_a_message_at_import(tmp_path, capsys):
    path = _model_file(tmp_path, """
        import sys
        sys.exit("no GPU here")
    """)
    code, err = _audit(tmp_path, capsys, f"{path}:build")
    assert_one_line_error(code, err, "exited with code 1 (no GPU here)")


# ---------------------------------------------------------------------------- meta device
def test_a_factory_on_the_meta_device_without_weights_is_one_line(tmp_path, capsys):
    path = _model_file(tmp_path, """
        def on_meta(num_classes, in_channels, image_size):
            with torch.device("meta"):
                return build(num_classes, in_channels, image_size)
    """)
    code, err = _audit(tmp_path, capsys, f"{path}:on_meta")
    assert_one_line_error(code, err, "is on the meta device")


def test_a_factory_on_the_meta_device_with_weights_is_filled_from_them(tmp_path, capsys):
    path = _model_file(tmp_path, """
        def on_meta(num_classes, in_channels, image_size):
            with torch.device("meta"):
                return build(num_classes, in_channels, image_size)
    """)
    code, err = _audit(tmp_path, capsys, f"{path}:on_meta", _weights(tmp_path))
    assert code == 0, err


# ---------------------------------------------------------------------------- weights
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64, torch.float64])
def test_weights_a_float32_parameter_cannot_hold_exactly_are_refused(tmp_path, capsys, dtype):
    path = _model_file(tmp_path, "")
    bad = torch.ones(10, 64).to(dtype)
    code, err = _audit(tmp_path, capsys, f"{path}:build", _weights(tmp_path, **{"1.weight": bad}))
    assert_one_line_error(code, err, f"1.weight is {dtype} but the model's 1.weight is torch.float32")


def test_half_precision_weights_are_held_exactly_and_accepted(tmp_path, capsys):
    path = _model_file(tmp_path, "")
    half = torch.rand(10, 64).half()
    code, err = _audit(tmp_path, capsys, f"{path}:build", _weights(tmp_path, **{"1.weight": half}))
    assert code == 0, err


def test_sparse_and_meta_tensors_in_a_weights_file_are_refused(tmp_path, capsys):
    path = _model_file(tmp_path, "")
    sparse = torch.ones(10, 64).to_sparse()
    code, err = _audit(tmp_path, capsys, f"{path}:build", _weights(tmp_path, **{"1.weight": sparse}))
    assert_one_line_error(code, err, "1.weight is a sparse_coo tensor")
    meta = torch.empty(10, device="meta")
    code, err = _audit(tmp_path, capsys, f"{path}:build", _weights(tmp_path, **{"1.bias": meta}))
    assert_one_line_error(code, err, "1.bias is a meta tensor")
