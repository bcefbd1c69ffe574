"""A study with ``--logger mlflow``: one MLflow run per grid point, in an experiment named after
the study, tagged with its axes, with the run's audit report as an artifact; a second
``study run`` (everything done) tracks nothing new."""
from __future__ import annotations

import pytest

from robustfair.cli import main

SPEC = """name: tracked-mlflow
grid:
  objective: [standard, pgd_at]
fixed: {dataset: digits, model: mlp, eps: 0.2, steps: 2, eval_steps: 2, epochs: 1,
        optimizer: adam, lr: 0.005, augment: false}
evaluation:
  n: 40
  attacks: {pgd5: {attack: pgd, steps: 5}}
"""


def test_study_runs_are_tracked_one_mlflow_run_per_grid_point(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    spec = tmp_path / "tracked.yaml"
    spec.write_text(SPEC)
    uri = f"file:{tmp_path / 'mlruns'}"
    command = ["study", "run", str(spec), "--out", str(tmp_path / "study"), "--logger",
               f"mlflow:{uri}", "--no-progress"]
    assert main(command) == 0, capsys.readouterr().err
    assert main(command) == 0  # all done: skipped, nothing logged again
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tracked-mlflow").experiment_id])
    assert sorted(r.data.tags["objective"] for r in runs) == ["pgd_at", "standard"]
    for run in runs:
        assert run.data.tags["study"] == "tracked-mlflow" and run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val/robust_acc")
        assert [m.step for m in history] == [1]
        assert {"report.json", "card.html", "card.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
