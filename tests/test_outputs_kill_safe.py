"""A result being published over a good one survives a SIGKILL at any step: after each kill
every visible file reads the complete old result or the complete new one, byte for byte
(audit, card, explanation, study and leaderboard outputs; the harness is tests/kill_points.py). And a
directory under an output's name is refused, never deleted."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import robustfair as rf
from robustfair._atomic import write_all_atomically
from robustfair.card.render import publish_card
from robustfair.cli.audit import write_audit
from robustfair.explain.report import Explanation
from robustfair.metrics import ClassReport
from robustfair.study.report import saved_explanations
from robustfair.study.store import StudyStore

from kill_points import assert_kill_safe, visible
from limited import assert_one_line_error, cli


@pytest.fixture(scope="module")
def reports():
    ds = rf.load_dataset("digits")
    model = rf.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    attack = rf.build_attack("fgsm", eps=0.1)
    return [rf.audit(model, ds.test.x[:n], ds.test.y[:n], attacks=[attack], progress=False)
            for n in (20, 15)]


@pytest.mark.slow  # a child killed at every step of an audit's publication
def test_a_killed_audit_publication_leaves_the_old_or_the_new_audit(reports, tmp_path):
    out = tmp_path / "audit"
    write_audit(out, reports[0])
    steps = assert_kill_safe(out, lambda folder: write_audit(folder, reports[1]))
    assert steps >= 8  # the renames, links and fsyncs were all counted


def test_a_killed_card_publication_leaves_the_old_or_the_new_card(tmp_path):
    out = tmp_path / "card"
    publish_card(out, "<p>old</p>", b"old png", '{"old": 1}')
    assert_kill_safe(out, lambda folder: publish_card(folder, "<p>new</p>", b"new png!", '{"new": 2}'))


def _explanation(text):
    return SimpleNamespace(
        to_markdown=lambda: f"# {text}\n",
        plots=lambda staging: (staging / "similarity.png").write_bytes(b"png " + text.encode()),
        to_json=lambda: json.dumps({"findings": [text], "meta": {"checkpoint": text}}))


def test_a_killed_explanation_leaves_the_old_or_the_new_one_and_one_of_them(tmp_path):
    study = tmp_path / "study"
    out = study / "explain" / "robust"
    Explanation.save(_explanation("first"), out)
    assert_kill_safe(out, lambda folder: Explanation.save(_explanation("second"), folder))
    # the study report finds exactly one explanation, not a stored version beside it
    assert [s.findings for s in saved_explanations(study)] == [["first"]]


def test_a_killed_study_index_leaves_the_old_or_the_new_spec_and_index(tmp_path):
    root = tmp_path / "study"
    StudyStore(root).prepare("name: s\n", "s", [])
    assert_kill_safe(root, lambda folder: StudyStore(folder).prepare("name: s\n# v2\n", "s", []))


@pytest.mark.slow  # a child killed at every step of an audit's publication
def test_an_old_plain_file_audit_is_adopted_without_a_visible_change(reports, tmp_path):
    out = tmp_path / "audit"
    out.mkdir()
    for name, text in (("report.json", "{}"), ("by_class.csv", "old"), ("notes.txt", "mine")):
        (out / name).write_text(text)
    assert_kill_safe(out, lambda folder: write_audit(folder, reports[1]))
    write_audit(out, reports[1])
    assert (out / "notes.txt").read_text() == "mine"  # not robustfair's: left alone
    assert sorted(visible(out)) == ["by_class.csv", "confusion.csv", "notes.txt", "report.json",
                                    "report.md"]


@pytest.mark.parametrize("command, name", [("audit", "report.json"), ("audit", "by_class.csv"),
                                           ("audit", "report.md"), ("card", "card.png")])
def test_a_directory_named_like_an_output_file_is_refused_not_deleted(tmp_path, capsys, command,
                                                                      name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    (out / name / "precious.txt").write_text("keep me")
    code, err = cli([command, "--model", "small_cnn", "--weights", tmp_path / "none.pt",
                     "--dataset", "digits", "--limit", "4", "--attack", "fgsm", "--out", out],
                    capsys)
    assert_one_line_error(code, err, f"{out / name} is a directory")
    assert (out / name / "precious.txt").read_text() == "keep me"


def test_a_directory_named_like_an_output_file_is_refused_by_the_library_too(reports, tmp_path):
    out = tmp_path / "out"
    (out / "confusion.csv").mkdir(parents=True)
    (out / "confusion.csv" / "precious.txt").write_text("keep me")
    with pytest.raises(rf.RobustfairError, match="is a directory"):
        write_audit(out, reports[0])
    assert (out / "confusion.csv" / "precious.txt").read_text() == "keep me"
    assert not (out / "report.json").exists()


def _leaderboard_files(folder, tag: str, figure: bool):
    """What robustfair.leaderboard.report.write_outputs publishes: write_all_atomically."""
    writers = {folder / name: (lambda tmp, name=name: Path(tmp).write_text(f"{name} {tag}"))
               for name in ("leaderboard.csv", "classwise.csv", "leaderboard.html")}
    if figure:
        writers[folder / "robust_by_class.png"] = lambda tmp: Path(tmp).write_bytes(b"png " + tag.encode())
    return write_all_atomically(writers)


def test_a_killed_leaderboard_publication_leaves_the_old_or_the_new_one(tmp_path):
    out = tmp_path / "leaderboard"
    _leaderboard_files(out, "first", figure=False)
    # the next run adds a figure: the unit is the same, whichever files a run writes
    assert_kill_safe(out, lambda folder: _leaderboard_files(folder, "second", figure=True))


@pytest.mark.slow  # a child killed at every step of an audit's publication
def test_a_folder_copied_with_its_links_followed_publishes_again(reports, tmp_path):
    # shutil.copytree (and cp -rL) turn the links into files and the pointer into a folder
    write_audit(tmp_path / "a", reports[0])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert_kill_safe(tmp_path / "b", lambda folder: write_audit(folder, reports[1]))
    write_audit(tmp_path / "b", reports[1])
    assert ClassReport.from_json(tmp_path / "b" / "report.json").predictions.equals(
        reports[1].predictions)
