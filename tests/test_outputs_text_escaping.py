"""Class names and titles are plain text everywhere they land: a ``$`` never starts matplotlib
math in the card's figures, and in report.md a ``|``, a newline or HTML cannot break the table
or inject markup."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from robustfair.card.render import build_card
from robustfair.metrics import ClassReport

from limited import cli_all

NAMES = ["price $5", "a|b", "two\nlines", "<img src=x onerror=alert(1)>", "[x](javascript:1)",
         "$\\undefined$", "a$^$b"]  # the last two are invalid matplotlib math


def _report() -> ClassReport:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(NAMES)), 5)
    attacked = rng.permutation(y)
    preds = pd.DataFrame({"y_true": y, "clean_pred": y, "pgd_pred": attacked,
                          "worst_pred": attacked})
    return ClassReport(predictions=preds, classes=NAMES, attacks=[{"attack": "pgd"}])


def test_a_card_with_dollars_in_class_names_and_title_is_drawn(tmp_path):
    card = build_card(_report(), tmp_path / "card", title="robust $\\alpha$ at $\\nosuchmacro$", n_boot=50)
    assert card.png.read_bytes()[:4] == b"\x89PNG"
    assert "price $5" in card.html.read_text()  # the page shows the names as they are


def test_report_markdown_tables_keep_one_row_per_class_and_no_raw_html(tmp_path):
    text = _report().to_markdown(n_boot=50)
    table = text.split("## Per-class accuracy")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    cells = [len(line.replace("\\|", "").split("|")) for line in rows]
    assert len(rows) == 2 + len(NAMES) + 1 and len(set(cells)) == 1  # header, rule, classes, overall
    assert re.search(r"(?<!\\)<img", text) is None and "\\<img src=x onerror=alert(1)>" in text
    assert "](javascript" not in text
    assert "| two lines |" in text and "| a\\|b |" in text


def test_the_card_command_with_such_names_writes_everything(tmp_path, capsys):
    path = tmp_path / "t.npz"
    y = np.repeat(np.arange(len(NAMES)), 2)
    np.savez(path, x=np.zeros((len(y), 1, 8, 8), np.uint8), y=y, classes=np.array(NAMES))
    model = tmp_path / "net.py"
    model.write_text("from torch import nn\ndef build(num_classes):\n"
                     "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    out = tmp_path / "card"
    code, _, err = cli_all(["card", "--model", f"{model}:build", "--dataset", f"npz:{path}",
                            "--attack", "fgsm", "--eps", "0.1", "--title", "cost in $^$",
                            "--out", out], capsys)
    assert code == 0, err
    assert (out / "card.png").read_bytes()[:4] == b"\x89PNG"
