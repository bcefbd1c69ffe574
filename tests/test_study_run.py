"""Running studies for real (tiny MLPs on digits): the run directory, skip and resume, a study
killed with SIGKILL and run again, local workers and Ray against the in-process executor."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from robustfair.cli import main
from robustfair.errors import RobustfairError
from robustfair.metrics import ClassReport
from robustfair.study.executors import run_study
from robustfair.study.grid import config_hash
from robustfair.study.spec import parse_spec
from robustfair.study.store import StudyStore
from robustfair.study.table import load_tables

TINY = """\
name: tiny
grid:
  objective: [standard, pgd_at]
fixed:
  dataset: digits
  model: {name: mlp, hidden: [16]}
  eps: 0.1
  steps: 2
  eval_steps: 2
  epochs: 2
  batch_size: 256
  augment: false
  val_max: 100
evaluation:
  n: 60
  attacks:
    pgd5: {attack: pgd, steps: 5}
resources: {num_cpus: 1}
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    spec = parse_spec(TINY, source="tiny.yaml")
    result = run_study(spec, root, progress=False)
    return spec, root, result


def _reports(root, keys):
    return {k: ClassReport.from_json(StudyStore(root).report_path(k)) for k in keys}


def test_each_run_directory_holds_config_training_report_and_done(local):
    spec, root, result = local
    assert result.ok and len(result.completed) == 2 and not result.already_done
    store = StudyStore(root)
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted(r.key for r in result.runs)
    for run in result.runs:
        d = store.run_dir(run.key)
        config = json.loads((d / "config.json").read_text())
        assert config_hash(config) == run.key and config == run.config
        for name in ("train/model.safetensors", "train/epochs.csv", "report.json", "done"):
            assert (d / name).is_file(), name
        report = ClassReport.from_json(d / "report.json")
        assert len(report.predictions) == 60 and report.attack_names == ["pgd5"]
        done = json.loads((d / "done").read_text())
        assert done["robust_acc"] == pytest.approx(report.overall["robust_acc"])
    index = json.loads((root / "study.json").read_text())
    assert [r["key"] for r in index["runs"]] == [r.key for r in result.runs]


def test_a_second_run_skips_finished_runs(local):
    spec, root, first = local
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/report.json")}
    again = run_study(spec, root, progress=False)
    assert sorted(again.already_done) == sorted(r.key for r in first.runs) and not again.completed
    assert {p: p.stat().st_mtime_ns for p in root.glob("runs/*/report.json")} == stamps


def test_cli_dry_run_table_and_report(local, tmp_path, capsys):
    spec, root, result = local
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(TINY)
    assert main(["study", "run", str(spec_file), "--out", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"{r.key}  done" in out for r in result.runs) and "2 runs" in out
    assert main(["study", "table", str(root)]) == 0
    assert (root / "results.csv").is_file() and (root / "epochs.csv").is_file()
    assert main(["study", "report", str(root)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (root / "report" / "classwise.png").is_file() and (root / "report" / "epochs.png").is_file()


def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(TINY.replace("  model: {name: mlp, hidden: [16]}\n", "")
                         .replace("grid:\n", "grid:\n  model: [{name: mlp, hidden: [16]}, "
                                             "{name: mlp, hidden: [-1]}]\n")
                         .replace("[standard, pgd_at]", "[standard]"))
    code = main(["study", "run", str(spec_file), "--out", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 run now, 1 failed" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1
    key = failed[0].split()[1].rstrip(":")
    assert (tmp_path / "out" / "runs" / key / "error.txt").is_file()
    assert not (tmp_path / "out" / "runs" / key / "done").exists()


KILL_SPEC = TINY.replace("grid:\n  objective: [standard, pgd_at]\n", "grid:\n  seed: [0, 1, 2]\n").replace(
    "  epochs: 2\n", "  epochs: 10\n  objective: pgd_at\n")  # a window wide enough to kill in


@pytest.mark.slow  # a killed study process, then its rerun
def test_a_study_killed_with_sigkill_finishes_every_run_exactly_once(tmp_path):
    spec_file = tmp_path / "kill.yaml"
    spec_file.write_text(KILL_SPEC)
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "robustfair", "study", "run", str(spec_file),
                             "--out", str(out), "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial, deadline = None, time.time() + 120
    try:  # wait until one run is done and another has committed an epoch but not finished
        while partial is None and time.time() < deadline and proc.poll() is None:
            runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
            done = [r for r in runs if (r / "done").exists()]
            # an epoch committed and renamed into place (the manifest is written before the
            # renames, so state.json alone can be a commit that recovery rolls forward)
            started = [r for r in runs if not (r / "done").exists()
                       and all((r / "train" / f).exists() for f in ("state.json", "epochs.csv"))]
            if done and started:
                os.kill(proc.pid, signal.SIGKILL)
                partial = started[0]
            time.sleep(0.01)
    finally:
        if proc.poll() is None and partial is None:
            proc.kill()
        proc.wait()
    assert partial is not None, f"the study ended before it could be killed: {proc.stderr.read()[-500:]}"
    assert proc.returncode == -signal.SIGKILL
    before = pd.read_csv(partial / "train" / "epochs.csv")
    assert not (partial / "done").exists() and len(before) >= 11

    assert main(["study", "run", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 3 and all((r / "done").is_file() for r in runs)
    for r in runs:
        log = pd.read_csv(r / "train" / "epochs.csv", dtype={"class": str})
        assert len(log) == 10 * 11 and not log.duplicated(["epoch", "scope", "class"]).any()
        assert sorted(log["epoch"].unique()) == list(range(1, 11))
    # the killed run resumed: the epochs it had finished were kept, not trained again
    after = pd.read_csv(partial / "train" / "epochs.csv")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    results = load_tables(out).results
    assert results["run"].nunique() == 3 and not results.duplicated(["run", "class", "measure"]).any()


@pytest.mark.slow  # the study again, on worker processes
def test_local_workers_give_the_same_results(local, tmp_path):
    spec, root, result = local
    other = run_study(spec, tmp_path, workers=2, progress=False)
    assert other.ok and sorted(other.completed) == sorted(result.completed)
    mine, theirs = _reports(root, result.completed), _reports(tmp_path, result.completed)
    for key in result.completed:
        assert mine[key].predictions.equals(theirs[key].predictions)


@pytest.mark.slow  # the study again, on a local Ray cluster
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (pip install 'robustfair[ray]')")
def test_ray_gives_the_same_per_class_results_as_local(local, tmp_path):
    spec, root, result = local
    other = run_study(spec, tmp_path, executor="ray", progress=False)
    assert other.ok, other.failed
    assert sorted(other.completed) == sorted(result.completed)
    mine, theirs = _reports(root, result.completed), _reports(tmp_path, result.completed)
    for key in result.completed:
        assert mine[key].predictions.equals(theirs[key].predictions)
        pd.testing.assert_frame_equal(mine[key].by_class, theirs[key].by_class)


def test_ray_missing_is_one_clear_line(local, tmp_path, monkeypatch, capsys):
    spec, _, _ = local
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(RobustfairError, match=r"needs Ray: pip install 'robustfair\[ray\]'"):
        run_study(spec, tmp_path, executor="ray", progress=False)
    assert main(["study", "run", "digits-quick", "--out", str(tmp_path), "--address", "x:1"]) == 2
    assert "--address is for the ray executor" in capsys.readouterr().err
