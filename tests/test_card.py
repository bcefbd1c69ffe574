"""``robustfair card``: the one-page audit card of a model, checked against its report and
rendered in headless Chromium."""
from __future__ import annotations

import hashlib
import html
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from robustfair.card import card_context, render_html
from robustfair.card.content import DISCREPANCY_COLUMNS
from robustfair.cli import main
from robustfair.cli._sources import data_sha256
from robustfair.data import load_dataset
from robustfair.metrics import ClassReport
from robustfair.metrics._format import describe_attack
from robustfair.models import save_model

from chromium import CHROMIUM, SKIP_REASON, check_page, screenshot
from digits_model import train_small_cnn

LIMIT = 150


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    ds = load_dataset("digits")
    root = tmp_path_factory.mktemp("card")
    ckpt = save_model(train_small_cnn(ds, epochs=3), root / "model.safetensors",
                      metadata={"dataset": "digits", "classes": ds.classes})
    out = root / "card"
    rc = main(["card", "--checkpoint", str(ckpt), "--dataset", "digits", "--limit", str(LIMIT),
               "--attack", "pgd,fgsm", "--eps", "0.2", "--steps", "5", "--out", str(out)])
    assert rc == 0
    report = ClassReport.from_json(out / "report.json")
    return {"out": out, "ckpt": ckpt, "ds": ds, "report": report,
            "html": (out / "card.html").read_text(encoding="utf-8")}


def _text(page: str) -> str:
    """The page without its inlined images, tags unescaped."""
    return html.unescape(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page))


def _cell(row, metric: str) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    return f"{pct(row[metric])} [{pct(row[metric + '_lo'])}, {pct(row[metric + '_hi'])}]"


def test_card_writes_html_png_and_report(card):
    visible = sorted(p.name for p in card["out"].iterdir() if not p.name.startswith("."))
    assert visible == ["card.html", "card.png", "report.json"]
    png = Image.open(card["out"] / "card.png")
    assert png.width >= 1000 and np.asarray(png.convert("L")).std() > 20  # a drawing, not blank


def test_card_is_self_contained(card):
    page = card["html"]
    sources = re.findall(r'<img[^>]*src="([^"]*)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|//|file:)', page) and "<script" not in page


def test_card_shows_the_reports_numbers(card):
    report, text = card["report"], _text(card["html"])
    worst = report.worst_class("robust_acc")[0]
    broken = report.broken_by()
    rows = re.findall(r"<tr( class=\"\w+\")?>(.*?)</tr>", card["html"], flags=re.S)
    by_first_cell = {re.findall(r"<td>(.*?)</td>", r[1])[0]: (r[0], re.findall(r"<td>(.*?)</td>", r[1]))
                     for r in rows if "<td>" in r[1]}
    for name, row in report.by_class.iterrows():
        css, cells = by_first_cell[name]
        assert cells[1] == str(int(row["n"]))
        assert cells[2] == _cell(row, "clean_acc") and cells[3] == _cell(row, "robust_acc")
        assert cells[4] == f"{100 * row['pgd_acc']:.1f}" and cells[5] == f"{100 * row['fgsm_acc']:.1f}"
        assert cells[6:] == [str(int(v)) for v in broken.loc[name]]  # which attack broke what
        assert ("worst" in css) == (name == worst)
    assert f"worst class: {worst} (robust)" in text
    for header in report.discrepancy().columns:  # every column discrepancy() returns
        assert f"<th>{header}</th>" in card["html"]
        if header in DISCREPANCY_COLUMNS:  # explained below the table
            assert DISCREPANCY_COLUMNS[header] in text
    for name, settings in zip(report.attack_names, report.attacks):
        for line in describe_attack(name, settings).splitlines():
            assert line in text
    assert "Sanity flags" in text and ("None raised" in text) == (not report.flags)


def test_card_fingerprints_weights_and_data(card):
    text, ds = _text(card["html"]), card["ds"]
    assert hashlib.sha256(card["ckpt"].read_bytes()).hexdigest() in text
    assert data_sha256(ds.test.x[:LIMIT], ds.test.y[:LIMIT]) in text
    assert f"<td>{torch.__version__}</td>" in card["html"]
    assert card["report"].meta["started"] in text and card["report"].meta["device"] in text


def test_card_lists_flags_escaped_and_any_discrepancy_columns(card, monkeypatch):
    report = ClassReport.from_json(card["out"] / "report.json")  # a copy: the fixture's stays
    report.flags = [{"code": "masking", "message": "square broke <3> points; add more restarts",
                     "classes": ["8", "9"]}]
    original = ClassReport.discrepancy

    def with_a_new_column(self, metric="robust_acc", **kwargs):
        frame = original(self, metric, **kwargs)
        return frame.assign(a_new_column=0.0123)

    monkeypatch.setattr(ClassReport, "discrepancy", with_a_new_column)
    page, png = render_html(report, title="t <b>")
    assert "square broke &lt;3&gt; points; add more restarts" in page and "(classes: 8, 9)" in page
    assert "<th>a_new_column</th>" in page and "<td>0.012</td>" in page
    assert "<title>t &lt;b&gt;</title>" in page
    assert png.startswith(b"\x89PNG")


def test_top_confusions_are_the_largest_off_diagonal_cells(card):
    report = card["report"]
    context = card_context(report, title="x", figures={})
    counts = report.confusion("worst").to_numpy().copy()
    np.fill_diagonal(counts, 0)
    assert [c["count"] for c in context["top_confusions"]] == sorted(counts.ravel(), reverse=True)[:5]


def test_card_refuses_an_out_that_is_a_file(card, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["card", "--checkpoint", str(card["ckpt"]), "--dataset", "digits", "--out", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err and target.read_text() == "x"


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
@pytest.mark.parametrize("width", [1280, 640])
def test_card_renders_in_headless_chromium(card, tmp_path, width):
    result = check_page(card["out"] / "card.html", tmp_path, width)
    assert result["images"] == 4 and result["broken"] == 0, result  # every image loads
    assert result["scrollWidth"] <= result["innerWidth"], result  # nothing overflows
    assert result["textLength"] > 1000 and result["bodyHeight"] > 2000, result  # not blank


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_card_screenshot_is_not_blank(card, tmp_path):
    shot = np.asarray(Image.open(screenshot(card["out"] / "card.html", tmp_path / "s.png", tmp_path))
                      .convert("L"))
    assert shot.shape[1] == 1280 and (shot < 128).mean() > 0.01  # dark text and figures drawn


def test_card_counts_each_autoattack_part_and_shows_its_settings():
    """A composite attack's parts each get a column (from report.broken_by()) and a settings line."""
    y = np.array([0, 0, 0, 1, 1, 1])
    clean = np.array([0, 0, 1, 1, 1, 1])
    aa = np.array([1, 0, 1, 0, 0, 1])  # point 0 broken by part 0, point 3 by part 1, point 4 by part 1
    by = np.array([0, -1, -1, 1, 1, -1])
    parts = [{"attack": "apgd-ce", "steps": 100}, {"attack": "apgd-t", "steps": 100, "top_k": 9}]
    report = ClassReport(
        predictions=pd.DataFrame({"y_true": y, "clean_pred": clean, "autoattack_pred": aa,
                                  "autoattack_by": by, "worst_pred": aa}),
        classes=["cat", "dog"], attacks=[{"attack": "autoattack", "eps": 8 / 255, "parts": parts}])
    page, _ = render_html(report, title="aa")
    text = _text(page)
    assert '<th colspan="2" class="group">points broken first by</th>' in page
    assert "<th>apgd-ce</th><th>apgd-t</th><th>robust</th><th>clean wrong</th>" in page
    rows = {r[0]: r for r in (re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S))
            if r}
    # class, n, clean, robust, autoattack %, then broken by apgd-ce, apgd-t, robust, clean_wrong
    assert rows["cat"][5:] == ["1", "0", "1", "1"] and rows["dog"][5:] == ["0", "2", "1", "0"]
    assert "autoattack / apgd-t: steps=100, top_k=9" in text
