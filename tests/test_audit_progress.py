"""A long audit says what it is doing when stderr is not a terminal: one line per finished
attack part and per pool, with the points left, the time so far and an estimate of the time
left. On a terminal it draws a tqdm bar instead (and no lines)."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustfair as rf
from robustfair._progress import Progress, duration, on_terminal

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^robustfair audit: (?P<piece>.+?) done(?: \((?P<detail>[^)]*)\))?; "
                  r"(?P<left>[\d,]+) points? left; (?P<elapsed>\S+(?: \S+)?) elapsed"
                  r"(?:, about (?P<eta>\S+(?: \S+)?) left|, time left unknown yet)?$")


@pytest.fixture(scope="module")
def digits():
    return rf.load_dataset("digits")


def _model():
    torch.manual_seed(0)
    return rf.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)


def _lines(text: str) -> list[re.Match]:
    lines = [line for line in text.splitlines() if line.startswith("robustfair audit:")]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), [line for line, m in zip(lines, matches) if m is None]
    return matches


def test_an_autoattack_audit_says_each_part_and_each_pool_off_a_terminal(digits, capsys):
    attack = rf.build_attack("autoattack", eps=0.3, steps=3, n_queries=20)
    # a batch of 8 on 8x8 images: pools of 64 points, so 100 points make 2 pools
    report = rf.audit(_model(), digits.test.x[:100], digits.test.y[:100], attacks=[attack],
                      batch_size=8, progress=True)
    lines = _lines(capsys.readouterr().err)
    pools = [m for m in lines if re.fullmatch(r"pool \d/2", m["piece"])]
    parts = [m for m in lines if "autoattack" in m["piece"]]
    assert [m["piece"] for m in pools] == ["pool 1/2", "pool 2/2"]
    assert [int(m["left"].replace(",", "")) for m in pools] == [36, 0]
    assert pools[-1]["eta"] is None  # nothing left: no estimate
    # every part that ran is named, in AutoAttack's order, in each pool
    order = attack.part_names()
    for pool in ("pool 1/2", "pool 2/2"):
        named = [m["piece"].split()[-1] for m in parts if m["piece"].startswith(pool)]
        assert named and named == order[:len(named)]
    # the first part ran on the clean-correct points of the pool, and its line says so
    first = parts[0]
    ran = int(re.search(r"ran on ([\d,]+) points", first["detail"])[1])
    correct = int((report.predictions.clean_pred == report.predictions.y_true)[:64].sum())
    assert ran == correct
    assert first["eta"] is not None  # work is left after the first part: an estimate


def test_each_attack_of_a_list_gets_a_line_and_a_single_attack_only_its_pools(digits, capsys):
    x, y = digits.test.x[:40], digits.test.y[:40]
    rf.audit(_model(), x, y, attacks=[rf.build_attack("fgsm", eps=0.1),
                                      rf.build_attack("pgd", eps=0.1, steps=2)],
             batch_size=4, progress=True)  # pools of 32 points: 2 pools
    pieces = [m["piece"] for m in _lines(capsys.readouterr().err)]
    assert pieces == ["pool 1/2, fgsm", "pool 1/2", "pool 2/2, fgsm", "pool 2/2"]
    rf.audit(_model(), x, y, attacks=[rf.build_attack("fgsm", eps=0.1)], batch_size=4,
             progress=True)
    assert [m["piece"] for m in _lines(capsys.readouterr().err)] == ["pool 1/2", "pool 2/2"]


def test_progress_false_is_silent(digits, capsys):
    rf.audit(_model(), digits.test.x[:20], digits.test.y[:20],
             attacks=[rf.build_attack("fgsm", eps=0.1)], progress=False)
    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_no_lines():
    stream = _Terminal()
    with Progress(3, "study", unit="run", stream=stream) as p:
        assert on_terminal(stream) and p.bar is not None
        p.done("run a", units=1)
    assert "robustfair study" not in stream.getvalue()
    log = io.StringIO()
    with Progress(3, "study", unit="run", stream=log) as p:
        assert p.bar is None
        p.done("run a", units=1)
        p.done("run b", units=1, work=1, left=4)
    first, second = log.getvalue().splitlines()
    assert first.startswith("robustfair study: run a done; 2 runs left; ") and "about" in first
    # the estimate follows the work left: 4 units at the rate of the 2 done so far
    assert second.startswith("robustfair study: run b done; 1 run left; ")


def test_durations_read_as_short_words():
    assert [duration(s) for s in (0, 59.4, 60, 3599, 3600, 90061)] == \
        ["0s", "59s", "1m 00s", "59m 59s", "1h 00m", "25h 01m"]


def test_the_cli_audit_writes_progress_lines_to_a_log_file(tmp_path):
    """The CLI run as a user runs it with ``2> log``: stderr is a file, not a terminal."""
    torch.manual_seed(0)
    ds = rf.load_dataset("digits")
    net = rf.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    rf.save_model(net, tmp_path / "net.safetensors", metadata={"dataset": "digits", "classes": ds.classes})
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        done = subprocess.run(
            [sys.executable, "-m", "robustfair", "audit", "--checkpoint", str(tmp_path / "net.safetensors"),
             "--dataset", "digits", "--limit", "40", "--attack", "autoattack", "--steps", "2",
             "--queries", "10", "--eps", "0.3", "--threads", "1", "--out", str(tmp_path / "audit")],
            stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, timeout=300,
            env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    text = log.read_text()
    assert done.returncode == 0, text
    lines = _lines(text)
    assert lines[0]["piece"] == "pool 1/1, autoattack apgd-ce"
    assert lines[-1]["piece"] == "pool 1/1" and lines[-1]["left"] == "0"
    assert "\r" not in text  # no bar redrawn into the file


class _Store:
    """The two questions StudyProgress asks of a study store."""

    def __init__(self, done=()):
        self.finished = set(done)

    def is_done(self, key):
        return key in self.finished

    def is_running(self, key):
        return False


def test_a_study_off_a_terminal_says_each_finished_run(capsys):
    from robustfair.study.grid import Run
    from robustfair.study.progress import StudyProgress

    runs = [Run(key=f"k{i}", config={}, axes={"objective": o, "seed": s}, label=f"objective={o}")
            for i, (o, s) in enumerate([("standard", 0), ("pgd_at", 0), ("pgd_at", 1)])]
    with StudyProgress(_Store(done={"k0"}), runs, enabled=True) as p:
        p.start("k1")
        p.finish("k1")
        p.finish("k2", ok=False)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("robustfair study: run objective=pgd_at seed=0 done; 1 run left; ")
    assert lines[1].startswith("robustfair study: run objective=pgd_at seed=1 done (FAILED); 0 runs left")
    with StudyProgress(_Store(), runs, enabled=False) as p:
        p.finish("k0")
    assert capsys.readouterr().err == ""


def test_explain_off_a_terminal_says_each_measure(digits, capsys):
    from robustfair.explain import explain_model

    explain_model(_model(), digits, eps=0.1, limit=30, attack_steps=2, margin_steps=2, n_perm=20,
                  corruptions=["gaussian_noise"], severities=[1], progress=True)
    err = capsys.readouterr().err
    pieces = [line.split(": ", 1)[1].split(" done")[0] for line in err.splitlines()
              if line.startswith("robustfair explain: ")]
    assert pieces == ["audit and sinks", "class similarity", "margins", "corruptions",
                      "targeted attacks"]
    assert "\r" not in err  # no bar drawn into the log


def test_the_cli_says_progress_unless_told_not_to():
    import argparse

    from robustfair.cli._checks import progress_said

    assert [progress_said(argparse.Namespace(progress=p)) for p in (None, True, False)] == \
        [True, True, False]


def test_part_listeners_nest_a_silent_audit_still_reaches_an_outer_one():
    from robustfair._progress import listen_for_parts, part_done

    heard = []
    with listen_for_parts(lambda *a: heard.append(("outer", *a))):
        with listen_for_parts(None):  # what a silent audit sets
            part_done("apgd-ce", 10, 4)
        with listen_for_parts(lambda *a: heard.append(("inner", *a))):
            part_done("square", 4, 3)
    part_done("fab-t", 4, 4)  # nobody listens any more
    assert heard == [("outer", "apgd-ce", 10, 4), ("inner", "square", 4, 3),
                     ("outer", "square", 4, 3)]
