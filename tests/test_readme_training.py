"""The README's experiment-tracker commands, run as written (2 epochs, and a 2-run study in place
of the 4-run digits-quick preset, to stay quick), then their curves read back with
TensorBoard's and MLflow's own readers."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from robustfair.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

TINY_STUDY = """name: tracked
grid:
  objective: [standard, pgd_at]
fixed: {dataset: digits, model: mlp, eps: 0.2, steps: 2, eval_steps: 2, epochs: 2,
        optimizer: adam, lr: 0.005, augment: false}
evaluation:
  n: 60
  attacks: {pgd5: {attack: pgd, steps: 5}}
"""


def tracker_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    block = next(b for b in blocks if "--logger tensorboard" in b)
    lines = [line.split("  #")[0] for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line.strip()]


def test_readme_tracker_commands_run_and_read_back(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    train, board, study = tracker_commands()
    assert train[:2] == ["robustfair", "train"] and board[0] == "tensorboard"
    assert study[:4] == ["robustfair", "study", "run", "digits-quick"]
    assert main(train[1:] + ["--epochs", "2", "--no-progress"]) == 0, capsys.readouterr().err

    acc = EventAccumulator(board[board.index("--logdir") + 1])
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/robust_acc")] == [1, 2]
    assert {f"robust_acc/{c}" for c in range(10)} <= set(acc.Tags()["scalars"])
    client = MlflowClient(f"file:{tmp_path / 'runs' / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("robustfair").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/robust_acc")] == [1, 2]

    Path("tracked.yaml").write_text(TINY_STUDY)
    study[3] = "tracked.yaml"
    assert main(study[1:] + ["--no-progress"]) == 0, capsys.readouterr().err
    runs = sorted((tmp_path / "runs" / "quick" / "runs").glob("*/train/tensorboard"))
    assert len(runs) == 2  # one tracked run per grid point
    objectives = set()
    for folder in runs:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert [e.step for e in acc.Scalars("val/clean_acc")] == [1, 2]
        (tags,) = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("tags/text_summary")]
        objectives |= {o for o in ("standard", "pgd_at") if f"objective: `\"{o}\"`" in tags}
    assert objectives == {"standard", "pgd_at"}  # each run tagged with its axis value
