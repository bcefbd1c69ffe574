"""Sharded audits (robustfair.sharding): the result does not depend on the number of shards, a
killed run resumes without repeating a shard, a failing shard is named, bad options are one line."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import robustfair as rf
from robustfair.auditing import audit
from robustfair.cli import main
from robustfair.errors import RobustfairError
from robustfair.metrics import ClassReport
from robustfair.models.source import DataShape, ModelSource
from robustfair.sharding import audit_sharded, shard_ranges

from digits_model import train_small_cnn

HERE = Path(__file__).parent
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
# the module (the package exports the function of the same name)
attack_view_module = importlib.import_module("robustfair.models.attack_view")


@pytest.fixture(autouse=True)
def channels_last_timed_faster(monkeypatch):
    """The view's layout is timed: here channels_last always wins, so an unsharded audit and a
    sharded one (which times once for all its shards) round alike, as the comparisons need."""
    monkeypatch.setattr(attack_view_module, "_pass_seconds",
                        lambda view, example: 0.0 if view._channels_last else 1.0)

# A model spec file: the trained CNN behind an input quantiser (zero input gradients: the
# zero_gradient and masking flags), or behind a check that raises on an all-white image.
SPECS = '''
import torch
from torch import nn
from robustfair.models import build_model


class Wrapped(nn.Module):
    def __init__(self, net, quantise=False, poison=False):
        super().__init__()
        self.net, self.quantise, self.poison = net, quantise, poison

    def forward(self, x):
        if self.poison and bool((x.flatten(1).amin(1) >= 1.0).any()):
            raise RuntimeError("poisoned input")
        return self.net(torch.round(x * 4) / 4 if self.quantise else x)


def _cnn():
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=8, hidden=32)


def quantised():
    return Wrapped(_cnn(), quantise=True)


def poisoned():
    return Wrapped(_cnn(), poison=True)
'''


@pytest.fixture(scope="module")
def digits():
    return rf.load_dataset("digits")


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    """A checkpoint of a CNN trained for 3 epochs, and specs + weights of its odd wrappers."""
    root = tmp_path_factory.mktemp("models")
    net = train_small_cnn(digits, epochs=3)
    rf.save_model(net, root / "net.safetensors")
    (root / "specs.py").write_text(SPECS)
    torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, root / "wrapped.pt")
    return root


def _attacks(eps=0.1):
    # every source of randomness: PGD's random starts, APGD-T's per-target starts, FAB-T's
    # restarts, Square's per-iteration windows and signs
    return [rf.build_attack("pgd", eps=eps, steps=4),
            rf.build_attack("apgd-t", eps=eps, steps=4, top_k=2),
            rf.build_attack("fab-t", eps=eps, steps=3, top_k=2, restarts=2),
            rf.build_attack("square", eps=eps, n_queries=25),
            rf.build_attack("autoattack", eps=eps, steps=3, n_queries=20)]  # passes index to its parts


def _same(a: ClassReport, b: ClassReport) -> None:
    assert a.predictions.equals(b.predictions)
    assert a.by_class.equals(b.by_class)
    assert a.flags == b.flags


def test_shard_ranges_cover_the_points_in_order():
    for n, k in ((10, 3), (7, 7), (101, 4)):
        ranges = shard_ranges(n, k)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


@pytest.mark.slow  # the audit unsharded, then in 1, 2 and 3 shards
def test_local_shards_give_the_unsharded_audit_for_any_n(digits, files, tmp_path):
    source = ModelSource(checkpoint=str(files / "net.safetensors"))
    model, _ = source.build(DataShape.of(digits))
    x, y = digits.test.x[:45], digits.test.y[:45]
    whole = audit(model, x, y, attacks=_attacks(), batch_size=8, progress=False)
    assert 0 < whole.overall["robust_acc"] < whole.overall["clean_acc"]  # the attacks did something
    # 45 points: shards of 45, 22/23, 15/15/15, none a multiple of the batch (8 or 7) or the pool
    for shards, batch in ((1, 8), (2, 7), (3, 8)):
        merged = audit_sharded(source, x, y, attacks=_attacks(), out_dir=tmp_path / f"n{shards}",
                               shards=shards, batch_size=batch, progress=False,
                               data_shape=DataShape.of(digits))
        _same(merged, whole)
        assert [s["range"] for s in merged.meta["shards"]] == [list(r) for r in shard_ranges(45, shards)]
        assert merged.meta["n"] == 45 and all(s["host"] for s in merged.meta["shards"])


def test_flags_of_a_masked_model_are_those_of_the_unsharded_audit(digits, files, tmp_path):
    source = ModelSource(spec=f"{files / 'specs.py'}:quantised", weights=str(files / "wrapped.pt"))
    model, _ = source.build(DataShape.of(digits))
    x, y = digits.test.x[:90], digits.test.y[:90]
    attacks = [rf.build_attack("pgd", eps=0.15, steps=3), rf.build_attack("square", eps=0.15, n_queries=60)]
    whole = audit(model, x, y, attacks=attacks, progress=False)
    codes = [f["code"] for f in whole.flags]
    assert "zero_gradient" in codes and "masking" in codes
    merged = audit_sharded(source, x, y, attacks=attacks, out_dir=tmp_path / "s", shards=3,
                           progress=False, data_shape=DataShape.of(digits))
    _same(merged, whole)  # the masking count is over all 90 points, the model flag once


def test_targeted_all_shards_merge_their_per_target_rows(digits, files, tmp_path):
    source = ModelSource(checkpoint=str(files / "net.safetensors"))
    model, _ = source.build(DataShape.of(digits))
    x, y = digits.test.x[:25], digits.test.y[:25]
    attacks = [rf.build_attack("pgd", eps=0.2, steps=2, targeted=True)]
    whole = audit(model, x, y, attacks=attacks, targeted_all=True, progress=False)
    merged = audit_sharded(source, x, y, attacks=attacks, targeted_all=True, out_dir=tmp_path / "t",
                           shards=2, progress=False, data_shape=DataShape.of(digits))
    _same(merged, whole)
    assert merged.target_predictions.equals(whole.target_predictions)


def test_rerun_audits_only_missing_shards_and_refuses_other_settings(digits, files, tmp_path, capfd):
    source = ModelSource(checkpoint=str(files / "net.safetensors"))
    x, y = digits.test.x[:40], digits.test.y[:40]
    kwargs = dict(attacks=[rf.build_attack("fgsm", eps=0.1)], out_dir=tmp_path, shards=4,
                  data_shape=DataShape.of(digits))
    first = audit_sharded(source, x, y, **kwargs)
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and lines[1].startswith("robustfair: shard 2/4 done: points 10-19 (10) in ")
    (tmp_path / "shard-0002.json").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.json")}
    again = audit_sharded(source, x, y, **kwargs)
    redone = capfd.readouterr().err.strip().splitlines()
    assert len(redone) == 1 and redone[0].startswith("robustfair: shard 3/4 done: points 20-29 (10) in ")
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in stamps} == stamps  # not redone
    assert again.predictions.equals(first.predictions)
    for change, needle in (({"seed": 1}, "seed: 0 there, 1 here"), ({"shards": 2}, "shards: 4 there, 2 here")):
        with pytest.raises(RobustfairError, match=needle):
            audit_sharded(source, x, y, **{**kwargs, **change})
    with pytest.raises(RobustfairError, match="data_sha256"):
        audit_sharded(source, x, 9 - y, **kwargs)


def test_every_shard_and_rerun_runs_the_one_layout_timed_first(digits, files, tmp_path,
                                                               monkeypatch):
    """A timed layout choice may come out either way; all shards of a folder use the first one."""
    timings = iter(range(1000))  # each timed pass "faster" than the one before: no stable winner
    monkeypatch.setattr(attack_view_module, "_pass_seconds", lambda view, example: -next(timings))
    source = ModelSource(checkpoint=str(files / "net.safetensors"))
    x, y = digits.test.x[:40], digits.test.y[:40]
    kwargs = dict(attacks=[rf.build_attack("fgsm", eps=0.1)], out_dir=tmp_path, shards=4,
                  data_shape=DataShape.of(digits), progress=False)
    audit_sharded(source, x, y, **kwargs)
    layout = json.loads((tmp_path / "settings.json").read_text())["layout"]
    assert layout in ("channels_last", "contiguous")

    def layouts() -> set[bool]:
        return {"channels_last" in json.loads(p.read_text())["meta"]["model_optimizations"]
                for p in tmp_path.glob("shard-*.json")}

    assert layouts() == {layout == "channels_last"}
    (tmp_path / "shard-0001.json").unlink()
    audit_sharded(source, x, y, **kwargs)  # the rerun keeps the layout, does not time again
    assert json.loads((tmp_path / "settings.json").read_text())["layout"] == layout
    assert layouts() == {layout == "channels_last"}
    with pytest.raises(RobustfairError, match="optimize must be True, False or one of"):
        audit_sharded(source, x, y, **{**kwargs, "out_dir": tmp_path / "bad"}, optimize="fast")
    assert not (tmp_path / "bad").exists()


def test_a_failing_shard_is_named_and_the_others_stay(digits, files, tmp_path):
    source = ModelSource(spec=f"{files / 'specs.py'}:poisoned", weights=str(files / "wrapped.pt"))
    x, y = digits.test.x[:90].clone(), digits.test.y[:90]
    x[45] = 255  # in shard 2 of 3 (points 30-59), past the 32 points the model checks look at
    with pytest.raises(RobustfairError) as info:
        audit_sharded(source, x, y, attacks=[rf.build_attack("fgsm", eps=0.1)], out_dir=tmp_path,
                      shards=3, progress=False, data_shape=DataShape.of(digits))
    message = str(info.value)
    assert "\n" not in message
    # the audit's model check names the batch the model failed on, then the model's own error
    assert message.startswith("shard 2/3 (points 30-59) failed: ModelError: the model failed on a "
                              "batch of 30 images (1x8x8): RuntimeError: poisoned input")
    assert (tmp_path / "shard-0000.json").is_file() and not (tmp_path / "shard-0001.json").exists()


def test_cli_names_the_failing_shard_in_one_line(digits, files, tmp_path, capsys):
    x = digits.test.x[:90].clone()
    x[45] = 255
    np.savez(tmp_path / "test.npz", x=x.numpy(), y=digits.test.y[:90].numpy())
    out = tmp_path / "out"
    rc = main(["audit", "--model", f"{files / 'specs.py'}:poisoned", "--weights", str(files / "wrapped.pt"),
               "--dataset", f"npz:{tmp_path / 'test.npz'}", "--attack", "fgsm", "--eps", "0.1",
               "--shards", "3", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(
        "robustfair: error: shard 2/3 (points 30-59) failed: ModelError: the model failed on a "
        "batch of 30 images (1x8x8): RuntimeError: poisoned input")
    assert [line.split(" done")[0] for line in err[:-1]] == ["robustfair: shard 1/3"]
    assert (out / "shards" / "shard-0000.json").is_file() and not (out / "report.json").exists()


def _cli(*args: str) -> list[str]:
    return ["audit", "--dataset", "digits", "--attack", "fgsm", "--eps", "0.1", *args]


@pytest.mark.parametrize("args,needle", [
    (["--shards", "0"], "--shards must be at least 1, got 0"),
    (["--shards", "41"], "41 shards for 40 points"),
    (["--shards", "2", "--executor", "dask"], "invalid choice: 'dask'"),
    (["--shards", "2", "--address", "10.0.0.1:6379"], "--address names a Ray cluster"),
    (["--executor", "ray"], "--executor and --address go with --shards"),
])
def test_bad_shard_options_are_one_line_and_write_nothing(files, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    try:
        rc = main(_cli("--checkpoint", str(files / "net.safetensors"), "--limit", "40",
                       "--out", str(out), *args))
    except SystemExit as exc:  # argparse's own errors (an unknown choice)
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("robustfair: error: ")
    assert not out.exists()


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow  # three Python processes: half a minute on a loaded 2-core machine
def test_sigkill_between_shards_then_rerun_finishes_without_repeating(files, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "robustfair", *_cli(
        "--checkpoint", str(files / "net.safetensors"), "--limit", "160", "--attack", "square",
        "--queries", "200", "--eps", "0.05", "--shards", "4", "--threads", "1", "--out", str(out))]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    first = out / "shards" / "shard-0000.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.json")}
    assert "shard-0000.json" in kept and len(kept) < 4, "the kill must land between shards"
    assert not (out / "report.json").exists()

    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = [line for line in rerun.stderr.splitlines() if " done: points " in line]
    assert len(done) == 4 - len(kept)  # only the missing shards ran
    assert {p: (out / "shards" / p).stat().st_mtime_ns for p in kept} == kept  # none redone
    # the same as an audit in one piece (the result does not depend on the shards)
    whole = tmp_path / "whole"
    plain = [a for a in command[3:] if a not in ("--shards", "4")]  # in this process
    plain[plain.index(str(out))] = str(whole)
    assert main(plain) == 0
    a = json.loads((out / "report.json").read_text())
    b = json.loads((whole / "report.json").read_text())
    assert a["predictions"] == b["predictions"] and a["flags"] == b["flags"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@needs_ray
def test_ray_shards_with_two_workers_give_the_unsharded_audit(digits, files, tmp_path, local_ray):
    source = ModelSource(checkpoint=str(files / "net.safetensors"))
    model, _ = source.build(DataShape.of(digits))
    x, y = digits.test.x[:61], digits.test.y[:61]
    whole = audit(model, x, y, attacks=_attacks(), batch_size=8, progress=False)
    for shards in (2, 3):
        merged = audit_sharded(source, x, y, attacks=_attacks(), out_dir=tmp_path / f"n{shards}",
                               shards=shards, executor="ray", batch_size=8, progress=False,
                               data_shape=DataShape.of(digits))
        _same(merged, whole)
        assert [s["range"] for s in merged.meta["shards"]] == [list(r) for r in shard_ranges(61, shards)]


@pytest.mark.slow
@needs_ray
def test_cli_ray_executor_writes_the_unsharded_report(files, tmp_path, local_ray):
    args = _cli("--checkpoint", str(files / "net.safetensors"), "--limit", "50")
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert main([*args, "--shards", "3", "--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    a = json.loads((tmp_path / "ray" / "report.json").read_text())
    b = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert a["predictions"] == b["predictions"] and a["flags"] == b["flags"]
    assert sorted(p.name for p in (tmp_path / "ray" / "shards").iterdir()) == [
        "settings.json", "shard-0000.json", "shard-0001.json", "shard-0002.json"]


@pytest.mark.slow
@needs_ray
def test_ray_failing_shard_is_named_and_the_others_stay(digits, files, tmp_path, local_ray):
    source = ModelSource(spec=f"{files / 'specs.py'}:poisoned", weights=str(files / "wrapped.pt"))
    x, y = digits.test.x[:90].clone(), digits.test.y[:90]
    x[45] = 255
    with pytest.raises(RobustfairError, match=r"^shard 2/3 \(points 30-59\) failed: ModelError: the model failed on a batch "
                                                   r"of 30 images \(1x8x8\): RuntimeError: poisoned"):
        audit_sharded(source, x, y, attacks=[rf.build_attack("fgsm", eps=0.1)], out_dir=tmp_path,
                      shards=3, executor="ray", progress=False, data_shape=DataShape.of(digits))
    assert sorted(p.name for p in tmp_path.glob("shard-*.json")) == ["shard-0000.json", "shard-0002.json"]


def test_concat_refuses_reports_that_do_not_fit():
    import pandas as pd

    p = pd.DataFrame({"y_true": [0, 1], "clean_pred": [0, 0], "worst_pred": [0, 0]})
    a = ClassReport(predictions=p, classes=["a", "b"], attacks=[])
    b = ClassReport(predictions=p, classes=["a", "c"], attacks=[])
    with pytest.raises(RobustfairError, match="report 1 has other classes"):
        ClassReport.concat([a, b])
    with pytest.raises(RobustfairError, match="non-empty list"):
        ClassReport.concat([])
    assert np.array_equal(ClassReport.concat([a, a]).predictions.y_true, [0, 1, 0, 1])
