"""The leaderboard (robustfair.leaderboard, `robustfair leaderboard`): three small digits models,
one of them gradient-masked, audited on the same points; resuming, refusing, spec errors, the
page in headless Chromium."""
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy import stats

import robustfair as rf
from robustfair.cli import main
from robustfair.errors import ConfigError
from robustfair.leaderboard import list_presets, load_preset, parse_spec
from robustfair.leaderboard.analysis import cross_model
from robustfair.leaderboard.points import stratified_indices
from robustfair.metrics import ClassReport
from robustfair.models import save_model

from chromium import CHROMIUM, SKIP_REASON, check_page
from digits_model import train_mlp, train_small_cnn
from odd_models import Quantised

MASKED_FACTORY = '''
import torch
from torch import nn
from robustfair.models import build_model


class Quantised(nn.Module):
    """Rounds its input to 5 grey levels: every input gradient is zero (gradient masking)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


def build(num_classes, in_channels, image_size):
    return Quantised(build_model("small_cnn", num_classes=num_classes, in_channels=in_channels,
                                 image_size=image_size, width=8, hidden=32))
'''

PER_CLASS = 12
SPEC = f"""name: digits-three
description: three small digits models, one of them gradient-masked
dataset: digits
eps: 0.1
attack: {{pgd: {{steps: 5}}}}
points_per_class: {PER_CLASS}
seed: 0
models:
  - name: cnn
    checkpoint: cnn.safetensors
  - name: mlp
    checkpoint: mlp.safetensors
  - name: masked-cnn
    model: masked.py:build
    weights: masked.safetensors
"""
NAMES = ["cnn", "mlp", "masked-cnn"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A folder with the three models and the spec that names them."""
    root = tmp_path_factory.mktemp("models")
    ds = rf.load_dataset("digits")
    cnn = train_small_cnn(ds, epochs=3)
    save_model(cnn, root / "cnn.safetensors", metadata={"classes": ds.classes})
    save_model(train_mlp(ds, epochs=3), root / "mlp.safetensors", metadata={"classes": ds.classes})
    save_file({k: v.contiguous() for k, v in Quantised(cnn).state_dict().items()},
              str(root / "masked.safetensors"))
    (root / "masked.py").write_text(MASKED_FACTORY)
    (root / "board.yaml").write_text(SPEC)
    return root


@pytest.fixture(scope="module")
def board(models, tmp_path_factory):
    """The leaderboard of the three models, run once through the CLI."""
    out = tmp_path_factory.mktemp("board") / "out"
    proc = _cli(models / "board.yaml", out)
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "stderr": proc.stderr, "stdout": proc.stdout,
            "table": pd.read_csv(out / "leaderboard.csv"),
            "reports": {n: ClassReport.from_json(out / "models" / n / "report.json") for n in NAMES}}


def _env() -> dict:
    src = str(Path(rf.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(spec, out, *extra) -> subprocess.CompletedProcess:
    """The CLI in this process, stdout and stderr captured (no terminal, as in CI or a log)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["leaderboard", str(spec), "--out", str(out), "--threads", "1", *extra])
    return subprocess.CompletedProcess([], rc, stdout.getvalue(), stderr.getvalue())


def _finished_lines(stderr: str) -> list[str]:
    return re.findall(r"^leaderboard \[\d+/\d+\] (\S+): robust", stderr, flags=re.M)


def _same_audit(a: ClassReport, b: ClassReport) -> bool:
    return a.predictions.equals(b.predictions) and a.flags == b.flags and a.attacks == b.attacks


# ------------------------------------------------------------------------------ the table
def test_table_has_one_row_per_model_with_the_columns_the_issue_asks(board):
    t = board["table"]
    assert sorted(t["model"]) == sorted(NAMES)
    for column in ("clean_acc", "robust_acc", "worst_class", "worst_class_acc", "worst_class_acc_lo",
                   "worst_class_acc_hi", "robust_acc_lo", "robust_acc_hi", "gap", "gap_lo", "gap_hi",
                   "class_std", "class_std_p_noise", "class_std_noise_floor", "flags", "seconds"):
        assert column in t.columns, column
    assert list(t["robust_acc"]) == sorted(t["robust_acc"], reverse=True)  # best first
    assert (t["seconds"] > 0).all()


def test_numbers_are_those_of_the_stored_predictions(board):
    t = board["table"].set_index("model")
    for name, report in board["reports"].items():
        p = report.predictions
        robust = (p["worst_pred"] == p["y_true"]).to_numpy()
        assert t.loc[name, "robust_acc"] == pytest.approx(robust.mean())
        per_class = pd.Series(robust).groupby(p["y_true"].to_numpy()).mean()
        worst = int(per_class.idxmin())
        assert t.loc[name, "worst_class"] == int(report.classes[worst])
        assert t.loc[name, "worst_class_acc"] == pytest.approx(per_class.min())
        assert t.loc[name, "gap"] == pytest.approx(per_class.max() - per_class.min())
        assert t.loc[name, "class_std"] == pytest.approx(per_class.std(ddof=0))
    classwise = pd.read_csv(board["out"] / "classwise.csv")
    assert len(classwise) == 3 * 10
    assert {"model", "class", "clean_acc", "robust_acc", "robust_acc_lo", "robust_acc_hi"} <= set(classwise.columns)


def test_the_masked_model_is_flagged_in_the_table_and_the_page(board):
    t = board["table"].set_index("model")
    assert "zero_gradient" in t.loc["masked-cnn", "flags"]
    assert t[["flags"]].drop(index="masked-cnn").isna().all().all()  # the others raise none
    page = (board["out"] / "leaderboard.html").read_text()
    row = re.search(r'<tr class="flagged">(.*?)</tr>', page, flags=re.S).group(1)
    assert "masked-cnn" in row and "zero_gradient" in row
    assert page.count('<tr class="flagged">') == 1


def test_every_model_is_audited_on_the_same_recorded_points(board):
    settings = json.loads((board["out"] / "settings.json").read_text())
    ds = rf.load_dataset("digits")
    idx = np.asarray(settings["data"]["indices"])
    assert np.array_equal(idx, stratified_indices(ds.test.y.numpy(), PER_CLASS, seed=0))
    assert np.bincount(ds.test.y.numpy()[idx]).tolist() == [PER_CLASS] * 10
    from robustfair.data.audit_source import points_sha256
    digest = points_sha256(ds.test.x[idx], ds.test.y[idx])
    assert settings["data"]["sha256"] == digest
    for report in board["reports"].values():
        assert report.meta["data_sha256"] == digest
        assert report.predictions["y_true"].tolist() == ds.test.y[idx].tolist()
    assert settings["settings"]["eps"] == 0.1 and settings["settings"]["attacks"][0]["settings"] == {"steps": 5}


def test_one_progress_line_per_model_without_a_terminal(board):
    assert sorted(_finished_lines(board["stderr"])) == sorted(NAMES)
    assert re.search(r"masked-cnn: robust [\d.]+% \(clean [\d.]+%\), flags zero_gradient, [\d.]+ s", board["stderr"])


def test_page_has_the_sortable_table_heatmap_cards_findings_and_settings(board):
    out = board["out"]
    page = (out / "leaderboard.html").read_text()
    assert '<table class="sortable" id="board">' in page and "addEventListener('click'" in page
    assert "<script src" not in page and "http" not in page.split("<script>")[1]  # no CDN
    assert page.count("data:image/png;base64,") == 1  # the heat map
    for name in NAMES:
        assert f'href="models/{name}/card.html"' in page
        assert (out / "models" / name / "card.html").is_file()
    assert "Kendall's tau-b" in page and "Lowest robust class" in page
    assert "eps = 0.1" in page and "12 per class" in page


def test_rerun_audits_nothing(board, models, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(board["out"], out)
    before = {n: (out / "models" / n / "report.json").stat().st_mtime_ns for n in NAMES}
    proc = _cli(models / "board.yaml", out)
    assert proc.returncode == 0, proc.stderr
    assert "3 already done, 0 audited now" in proc.stdout and _finished_lines(proc.stderr) == []
    assert before == {n: (out / "models" / n / "report.json").stat().st_mtime_ns for n in NAMES}


def test_adding_a_model_audits_only_it(board, models, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(board["out"], out)
    spec = models / "four.yaml"
    spec.write_text(SPEC + "  - name: cnn-again\n    checkpoint: cnn.safetensors\n")
    proc = _cli(spec, out)
    assert proc.returncode == 0, proc.stderr
    assert _finished_lines(proc.stderr) == ["cnn-again"]
    again = ClassReport.from_json(out / "models" / "cnn-again" / "report.json")
    assert _same_audit(again, board["reports"]["cnn"])  # the same model, the same points: the same audit
    assert len(pd.read_csv(out / "leaderboard.csv")) == 4


def test_changed_settings_or_model_are_refused_in_one_line(board, models, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(board["out"], out)
    spec = models / "changed.yaml"
    spec.write_text(SPEC.replace("eps: 0.1", "eps: 0.2"))
    proc = _cli(spec, out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{spec}:4:" in proc.stderr and "eps = 0.1" in proc.stderr and "another --out" in proc.stderr
    spec.write_text(SPEC.replace("checkpoint: mlp.safetensors", "checkpoint: cnn.safetensors"))
    proc = _cli(spec, out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{spec}:11:" in proc.stderr and "model 'mlp' was audited as" in proc.stderr


@pytest.mark.slow
def test_kill_between_models_and_resume(board, models, tmp_path):
    """SIGKILL the driver once the first model is committed; the rerun finishes the others,
    audits no finished model again, and every result equals the uninterrupted run's."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "robustfair", "leaderboard", str(models / "board.yaml"),
           "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env())
    first = None
    for line in proc.stderr:
        if line.startswith("leaderboard ["):
            first = line.split("] ")[1].split(":")[0]
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and first == "cnn"
    done = [n for n in NAMES if (out / "models" / n / "report.json").is_file()]
    assert "cnn" in done and len(done) < 3, done
    stamps = {n: (out / "models" / n / "report.json").stat().st_mtime_ns for n in done}
    again = _cli(models / "board.yaml", out)
    assert again.returncode == 0, again.stderr
    audited = _finished_lines(again.stderr)
    assert sorted(audited) == sorted(set(NAMES) - set(done))  # no model audited twice
    assert stamps == {n: (out / "models" / n / "report.json").stat().st_mtime_ns for n in done}
    for name in NAMES:
        assert _same_audit(ClassReport.from_json(out / "models" / name / "report.json"), board["reports"][name])
    resumed = pd.read_csv(out / "leaderboard.csv").drop(columns=["seconds"])
    assert resumed.equals(board["table"].drop(columns=["seconds"]))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_executor_gives_the_local_results(board, models, tmp_path):
    proc = _cli(models / "board.yaml", tmp_path / "out", "--executor", "ray")
    assert proc.returncode == 0, proc.stderr
    assert sorted(_finished_lines(proc.stderr)) == sorted(NAMES)
    for name in NAMES:
        assert _same_audit(ClassReport.from_json(tmp_path / "out" / "models" / name / "report.json"),
                           board["reports"][name])


@pytest.mark.slow  # the leaderboard again, sharded
def test_sharded_models_give_the_unsharded_results(board, models, tmp_path):
    """--shards N: each model audited in N shards (kept per model), the same per-point results."""
    proc = _cli(models / "board.yaml", tmp_path / "out", "--shards", "3")
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        report = ClassReport.from_json(tmp_path / "out" / "models" / name / "report.json")
        assert _same_audit(report, board["reports"][name])
        assert len(report.meta["shards"]) == 3
        assert len(list((tmp_path / "out" / "shards" / name).glob("shard-*.json"))) == 3
    assert _cli(models / "board.yaml", tmp_path / "again", "--shards", "0").returncode == 2


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
@pytest.mark.parametrize("width", [1280, 640])
def test_page_renders_in_headless_chromium(board, tmp_path, width):
    result = check_page(board["out"] / "leaderboard.html", tmp_path, width)
    assert result["images"] == 1 and result["broken"] == 0, result  # the heat map loads
    assert result["scrollWidth"] <= result["innerWidth"], result  # nothing overflows
    assert result["textLength"] > 1500, result


# ------------------------------------------------------------------------------ spec errors
def _spec_error(tmp_path, text: str, capsys) -> str:
    """Run the CLI on a spec beside the models; return its one-line error (exit 2)."""
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    rc = main(["leaderboard", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("robustfair: error: "), err
    assert not (tmp_path / "out").exists()  # nothing written
    return err


@pytest.fixture
def beside(models, tmp_path):
    for name in ("cnn.safetensors", "mlp.safetensors", "masked.py", "masked.safetensors"):
        shutil.copy(models / name, tmp_path / name)
    return tmp_path


def test_unknown_model_names_its_line(beside, capsys):
    err = _spec_error(beside, SPEC.replace("model: masked.py:build", "model: smal_cnn"), capsys)
    assert "bad.yaml:14:" in err and "unknown model 'smal_cnn'" in err and "small_cnn" in err


def test_duplicate_names_name_both_lines(beside, capsys):
    err = _spec_error(beside, SPEC.replace("name: mlp", "name: cnn"), capsys)
    assert "bad.yaml:11:" in err and "duplicate model name 'cnn' (first at line 9)" in err


def test_missing_weights_name_their_line(beside, capsys):
    err = _spec_error(beside, SPEC.replace("weights: masked.safetensors", "weights: gone.pt"), capsys)
    assert "bad.yaml:15:" in err and "weights file not found" in err and "gone.pt" in err
    err = _spec_error(beside, SPEC.replace("model: masked.py:build\n    weights: masked.safetensors",
                                           "model: small_cnn"), capsys)
    assert "bad.yaml:14:" in err and "untrained" in err


def test_points_per_class_larger_than_a_class(beside, capsys):
    err = _spec_error(beside, SPEC.replace(f"points_per_class: {PER_CLASS}", "points_per_class: 54"), capsys)
    assert "bad.yaml:6:" in err and "points_per_class 54 is more than class '0' has (53 points" in err


def test_unknown_keys_name_their_line(beside, capsys):
    err = _spec_error(beside, SPEC.replace("seed: 0", "sed: 0"), capsys)
    assert "bad.yaml:7:" in err and "unknown key 'sed' (did you mean 'seed'?)" in err
    err = _spec_error(beside, SPEC.replace("    weights: masked", "    weight: masked"), capsys)
    assert "bad.yaml:15:" in err and "unknown model key 'weight' (did you mean 'weights'?)" in err


def test_other_spec_mistakes_are_one_line(beside, capsys):
    for text, expected in (
            (SPEC.replace("eps: 0.1", "eps: 8"), "bad.yaml:4:"),
            (SPEC.replace("dataset: digits", "dataset: digitz"), "unknown data set 'digitz'"),
            (SPEC.replace("attack: {pgd: {steps: 5}}", "attack: [pgdd]"), "unknown attack 'pgdd'"),
            (SPEC.replace("{steps: 5}", "{steps: 5, eps: 0.3}"), "bad.yaml:5: attack 'pgd' sets eps"),
            (SPEC.replace("checkpoint: cnn.safetensors", "checkpoint: cnn.safetensors\n    weights: w.pt"),
             "weights goes with model: SPEC"),
            ("dataset: digits\nmodels: []\n", "models must be a non-empty list"),
            ("models: [{name: a, model: timm:x}]\n", "the spec has no 'dataset:'"),
            (SPEC.replace("name: masked-cnn", "name: ../escape"), "each model needs a name")):
        assert expected in _spec_error(beside, text, capsys)


def test_robustbench_options_come_from_the_spec():
    spec = parse_spec("dataset: cifar10\neps: 8/255\nmodels:\n  - {name: s, model: robustbench:Standard,"
                      " model_dir: zoo}\n", base="/data")
    assert dict(spec.models[0].source.options) == {"dataset": "cifar10", "threat_model": "Linf",
                                                   "model_dir": "/data/zoo"}
    spec = parse_spec("dataset: cifar100\nnorm: l2\neps: 0.5\nmodels:\n  - {name: s, model: robustbench:X}\n")
    assert dict(spec.models[0].source.options) == {"dataset": "cifar100", "threat_model": "L2"}
    spec = parse_spec("dataset: digits\neps: 0.1\nmodels:\n  - {name: s, model: robustbench:X}\n")
    assert dict(spec.models[0].source.options) == {"threat_model": "Linf"}  # not a RobustBench data set
    with pytest.raises(ConfigError, match=r"lb.yaml:3: model_dir goes with a robustbench:NAME model"):
        parse_spec("dataset: digits\nmodels:\n  - {name: s, model: timm:x, model_dir: z}\n", source="lb.yaml")


def test_presets_parse_and_name_the_robustbench_models():
    assert {"robustbench-cifar10-linf", "robustbench-cifar100-linf"} <= set(list_presets())
    c10 = load_preset("robustbench-cifar10-linf")
    names = [m.source.spec for m in c10.models]
    assert len(names) >= 11 and "robustbench:Standard" in names
    assert all(n.startswith("robustbench:") for n in names)
    assert c10.eps == pytest.approx(8 / 255) and c10.dataset == "cifar10" and c10.expected_time
    c100 = load_preset("robustbench-cifar100-linf")
    assert len(c100.models) >= 10 and dict(c100.models[0].source.options)["dataset"] == "cifar100"
    with pytest.raises(ConfigError, match="did you mean 'robustbench-cifar10-linf'"):
        load_preset("robustbench-cifar10-lin")


# ------------------------------------------------------------------------------ across models
def _report(correct: np.ndarray, y: np.ndarray, k: int) -> ClassReport:
    pred = np.where(correct, y, (y + 1) % k)
    return ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred, "worst_pred": pred}),
                       classes=[f"c{i}" for i in range(k)], attacks=[])


def test_rank_agreement_is_kendalls_tau_b_of_the_class_accuracies():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 30)
    reports = {m: _report(rng.random(len(y)) < rng.uniform(0.2, 0.9, 6)[y], y, 6) for m in "abc"}
    result = cross_model(reports, n_boot=300, seed=0)
    for row in result.tau.itertuples():
        a = reports[row.model_a].by_class["robust_acc"].to_numpy()
        b = reports[row.model_b].by_class["robust_acc"].to_numpy()
        assert row.tau == pytest.approx(stats.kendalltau(a, b).statistic)  # scipy's default is tau-b
        assert row.lo <= row.hi
    assert result.mean_tau[0] == pytest.approx(result.tau["tau"].mean())


def test_identical_models_agree_and_share_their_worst_class():
    y = np.repeat(np.arange(4), 25)
    correct = (np.arange(len(y)) % 25) < np.array([5, 10, 20, 24])[y]  # class c0 clearly lowest
    result = cross_model({m: _report(correct, y, 4) for m in "xyz"}, n_boot=200)
    assert result.mean_tau == (1.0, 1.0, 1.0)  # the same resample for every model: always equal
    assert result.worst_counts.loc["c0", "models"] == 3
    assert (result.worst["stays_lowest"] > 0.9).all() and (result.worst["p_noise"] < 0.05).all()


def test_tied_lowest_classes_share_a_models_count():
    y = np.repeat(np.arange(3), 10)
    correct = np.array([5, 5, 9])[y] > (np.arange(len(y)) % 10)
    result = cross_model({"m": _report(correct, y, 3)}, n_boot=50)
    assert result.worst_counts["models"].tolist() == [0.5, 0.5, 0.0]
    assert result.mean_tau is None and "at least two models" in result.findings()[-1]


def test_a_failing_model_is_reported_and_the_others_kept(board, models, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(board["out"], out)
    spec = models / "broken.yaml"
    spec.write_text(SPEC + "  - name: wrong-weights\n    model: masked.py:build\n    weights: mlp.safetensors\n")
    proc = _cli(spec, out)
    assert proc.returncode == 1
    assert re.search(r"^leaderboard \[4/4\] wrong-weights: FAILED: ", proc.stderr, flags=re.M)
    assert (out / "models" / "wrong-weights" / "error.txt").is_file()
    assert not (out / "models" / "wrong-weights" / "report.json").exists()
    assert sorted(pd.read_csv(out / "leaderboard.csv")["model"]) == sorted(NAMES)
    assert "<b>wrong-weights</b> failed:" in (out / "leaderboard.html").read_text()


def test_command_line_mistakes_are_one_line(tmp_path, capsys):
    for argv, expected in ((["leaderboard", "--out", str(tmp_path / "o")], "give a leaderboard SPEC"),
                           (["leaderboard", "--preset", "robustbench-cifar10-linf"], "--out DIR is required"),
                           (["leaderboard", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")],
                            "does not exist"),
                           (["leaderboard", "--preset", "x", "--out", str(tmp_path / "o"), "--address", "a:1"],
                            "--address is for the ray executor")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "o").exists()


SORT_CHECK = """
<script>
window.addEventListener('load', () => {
  const order = () => Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[1].textContent);
  const th = document.querySelectorAll('#board th');
  const out = {start: order()};
  th[1].click(); out.byName = order();
  th[2].click(); out.robustUp = order();
  th[2].click(); out.robustDown = order();
  const pre = document.createElement('pre'); pre.id = 'rf-sort'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_clicking_a_header_sorts_the_table(board, tmp_path):
    from chromium import _command

    page = tmp_path / "sorted.html"
    page.write_text((board["out"] / "leaderboard.html").read_text().replace("</body>", SORT_CHECK + "</body>"))
    dom = subprocess.run(_command(tmp_path, 1280, 900) + ["--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90).stdout
    result = json.loads(re.search(r'<pre id="rf-sort">(.*?)</pre>', dom).group(1))
    by_robust = list(board["table"]["model"])  # the CSV's order: best robust accuracy first
    assert result["start"] == by_robust
    assert result["byName"] == sorted(NAMES, key=str.lower)
    assert result["robustUp"] == by_robust[::-1] and result["robustDown"] == by_robust
