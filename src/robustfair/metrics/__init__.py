"""Class-wise metrics: :class:`ClassReport` (per-class accuracy with Wilson CIs, discrepancy
measures with bootstrap CIs and noise floors, confusion matrices, JSON round trip) and :func:`profile_similarity`;
:func:`compare_runs` tests two seeded conditions against each other (seeds and test points)."""
from ._stats import wilson_interval
from .report import ClassReport, profile_similarities, profile_similarity, worst_case
from .compare import Comparison, Summary, compare_runs, condition_summary  # noqa: E402

__all__ = ["ClassReport", "Comparison", "Summary", "compare_runs", "condition_summary",
           "profile_similarities", "profile_similarity", "wilson_interval", "worst_case"]
