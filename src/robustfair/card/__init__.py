"""The audit card: one self-contained HTML page and one PNG that show a model's per-class
robustness, fit to attach to a model release (``robustfair card``, or :func:`build_card`).

It shows per-class clean and robust accuracy with intervals, the worst class, the discrepancy
measures, the adversarial confusion matrix, which attack broke how many points per class, the
sanity flags, every attack setting, and where the model and data came from (SHA-256
fingerprints, versions, device, time).
"""
from .content import broken_by, card_context, confusion_markdown, sanity_flags, top_confusions
from .render import Card, build_card, render_html

__all__ = ["Card", "broken_by", "build_card", "card_context", "confusion_markdown",
           "render_html", "sanity_flags", "top_confusions"]
