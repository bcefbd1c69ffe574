"""ClassReport storage (JSON round trip, clear errors for bad files) and its text renderings."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from robustfair.errors import RobustfairError
from robustfair.metrics import ClassReport
from test_metrics_report import CLASSES, make_predictions, make_report


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_json_round_trip_is_equal(tmp_path):
    report = make_report(n=300)
    report.meta.update(dataset="toy", versions={"torch": "x"}, shape=(1, 8, 8), arr=np.array([1, 2]))
    report = ClassReport(predictions=report.predictions, classes=report.classes, attacks=report.attacks,
                         meta=report.meta)
    path = report.to_json(tmp_path / "report.json")
    back = ClassReport.from_json(path)
    assert back.equals(report)
    pd.testing.assert_frame_equal(back.predictions, report.predictions)
    pd.testing.assert_frame_equal(back.by_class, report.by_class)
    pd.testing.assert_series_equal(back.overall, report.overall)
    assert back.attacks == report.attacks and back.meta["shape"] == [1, 8, 8]
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left behind
    data = json.loads(path.read_text())
    assert data["schema"] == "robustfair.ClassReport" and data["schema_version"] == 1
    assert data["predictions"]["y_true"] == report.predictions["y_true"].tolist()


def test_json_round_trip_targeted_and_per_target(tmp_path):
    targeted = make_report(n=100, target=2)
    back = ClassReport.from_json(targeted.to_json(tmp_path / "t.json"))
    assert back.equals(targeted) and back.targeted
    pd.testing.assert_frame_equal(back.by_class, targeted.by_class)

    base = make_predictions(20, seed=1)
    rows = [(i, t) for i in range(20) for t in range(5) if t != base.y_true[i]]
    long = pd.DataFrame({"index": [i for i, _ in rows], "target": [t for _, t in rows],
                         "fgsm_pred": [t for _, t in rows], "pgd_pred": [base.y_true[i] for i, _ in rows]})
    r = ClassReport(predictions=base, classes=CLASSES, attacks=[{}, {}], target_predictions=long)
    back = ClassReport.from_json(r.to_json(tmp_path / "all.json"))
    assert back.equals(r)
    pd.testing.assert_frame_equal(back.target_success, r.target_success)


def test_to_json_overwrites_atomically(tmp_path):
    path = tmp_path / "r.json"
    make_report(n=50, seed=0).to_json(path)
    second = make_report(n=60, seed=1)
    second.to_json(path)
    assert ClassReport.from_json(path).equals(second)
    with pytest.raises(RobustfairError, match="does not exist"):
        second.to_json(tmp_path / "missing-dir" / "r.json")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ('{"schema": "something else"}', "not a robustfair ClassReport"),
        ('[1, 2, 3]', "not a robustfair ClassReport"),
        ('{"schema": "robustfair.ClassReport", "schema_version": 99}', "schema version 99"),
        ('{"schema": "robustfair.ClassReport", "schema_version": 1, "classes": ["a", "b"]}', "not a valid ClassReport"),
    ],
)
def test_bad_report_files_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(RobustfairError, match=match) as exc:
        ClassReport.from_json(path)
    assert str(path) in _one_line(exc)


def test_tampered_predictions_are_refused(tmp_path):
    path = make_report(n=50).to_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    data["predictions"]["clean_pred"][0] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(RobustfairError, match="clean_pred") as exc:
        ClassReport.from_json(path)
    _one_line(exc)


def test_missing_report_file(tmp_path):
    with pytest.raises(RobustfairError, match="does not exist") as exc:
        ClassReport.from_json(tmp_path / "nope.json")
    _one_line(exc)


def test_summary_and_markdown_show_every_class_and_mark_the_worst():
    report = make_report(n=400)
    worst, value = report.worst_class()
    for text in (report.summary(), report.to_markdown()):
        lines = text.splitlines()
        for name in CLASSES:
            assert any(line.startswith(name) or line.startswith(f"| {name} |") for line in lines), name
        marked = [line for line in lines if "<- worst" in line]
        assert len(marked) == 1
        assert marked[0].lstrip("| ").startswith(worst)
        assert f"{100 * value:.1f}" in marked[0]
        assert any(line.lstrip("| ").startswith("overall") for line in lines)
        assert "eps=0.1" in text and "steps=10" in text  # the attacks' settings
        for measure in ("difference", "ratio", "normalized_std", "worst_fraction_mean", "worst_deviation"):
            assert measure in text


def test_repr_mentions_robust_accuracy():
    report = make_report(n=100)
    assert f"{report.overall['robust_acc']:.4f}" in repr(report)
