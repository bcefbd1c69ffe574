"""Render the audit card: ``card.html`` (one self-contained page, figures inlined as data URIs,
from the Jinja2 template ``robustfair/templates/card.html.j2``), ``card.png`` (one image with
the headline numbers and figures) and the ``report.json`` it was made from."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._atomic import write_folder_unit
from .._templates import data_uri, render
from ..errors import ConfigError, RobustfairError
from .content import broken_by, card_context, model_name

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import ClassReport

__all__ = ["Card", "build_card", "render_html"]

TEMPLATE = "card.html.j2"


@dataclass(frozen=True)
class Card:
    """Where the card was written."""

    html: Path
    png: Path
    report: Path


def _worst(report: "ClassReport") -> str | None:
    try:
        return report.worst_class("robust_acc")[0]
    except RobustfairError:  # no class has a robust value
        return None


def _summary_lines(context: dict) -> list[str]:
    h = context["headline"]
    pair = " ".join
    lines = [f"clean accuracy  {pair(h['clean'])} %    robust accuracy  {pair(h['robust'])} %    "
             f"({h['n']} points" + (f", eps {context['eps_text']})" if context["eps_text"] else ")"),
             f"worst class     {h['worst_class']}: robust {pair(h['worst'])} %"]
    if "gap" in h:
        lines[-1] += f"    robust gap best - worst class {pair(h['gap'])} points"
    facts = dict(context["provenance"])
    lines.append(f"model {facts.get('model', '?')}   data {facts.get('data', '?')}   "
                 f"attacks {', '.join(a['name'] for a in context['attacks'])}")
    for key in ("weights SHA-256", "data SHA-256 (audited images and labels)"):
        if key in facts:
            lines.append(f"{key.split(' (')[0]:<15} {facts[key]}")
    return lines


def render_html(report: "ClassReport", *, title: str, n_boot: int = 1000, seed: int = 0) -> tuple[str, bytes]:
    """The card's HTML text and its summary PNG."""
    import matplotlib

    # every label is plain text: a "$" in a class name or a title is not the start of math
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _render_html(report, title=title, n_boot=n_boot, seed=seed)


def _render_html(report: "ClassReport", *, title: str, n_boot: int, seed: int) -> tuple[str, bytes]:
    from . import figures as F  # matplotlib: imported only when a card is drawn

    worst = _worst(report)
    counts = report.confusion("worst")
    broken = broken_by(report)
    pngs = {
        "classes": F.png_bytes(F.class_figure(report.by_class, worst)),
        "confusion": F.png_bytes(F.confusion_figure(counts)),
        "broken_by": F.png_bytes(F.broken_by_figure(broken)),
    }
    context = card_context(report, title=title, figures={k: data_uri(v) for k, v in pngs.items()},
                           n_boot=n_boot, seed=seed)
    summary = F.png_bytes(F.summary_figure(title=title, lines=_summary_lines(context),
                                           by_class=report.by_class, worst=worst, counts=counts,
                                           broken=broken))
    page = render(TEMPLATE, **context, summary_png=data_uri(summary))
    return page, summary


def build_card(report: "ClassReport", out_dir: str | os.PathLike, *, title: str | None = None,
               n_boot: int = 1000, seed: int = 0) -> Card:
    """Write ``card.html``, ``card.png`` and ``report.json`` into ``out_dir``, as one unit
    (``report.json`` last: it vouches for the other two)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    title = title or f"Robustness card: {model_name(report.meta)}"
    page, png = render_html(report, title=title, n_boot=n_boot, seed=seed)
    return publish_card(out, page, png, report.to_json_text())


def publish_card(out: Path, page: str, png: bytes, report_text: str) -> Card:
    """Write a rendered card's files into ``out`` as one unit (``report.json`` names it)."""
    card = Card(out / "card.html", out / "card.png", out / "report.json")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)

    def fill(staging: Path) -> None:
        (staging / card.html.name).write_text(page, encoding="utf-8")
        (staging / card.png.name).write_bytes(png)

    try:
        # one unit: a killed write leaves the old card whole or the new one whole
        write_folder_unit(out, fill, card.report.name,
                          lambda path: path.write_text(report_text, encoding="utf-8"),
                          what="a card being written")
    except OSError as exc:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise ConfigError(f"cannot write to {out}: {exc}") from None
    return card
