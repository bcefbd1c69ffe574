"""Class-wise metrics: :class:`ClassReport` (per-class accuracy with Wilson CIs, discrepancy
measures with bootstrap CIs and noise floors, confusion matrices, JSON round trip) and :func:`profile_similarity`;
:func:`compare_runs` tests two seeded conditions against each other (seeds and test points);
:func:`worst_case` and :func:`count_by_class` (:mod:`.pointwise`) are the counting under all of it."""
from ._stats import wilson_interval
from .pointwise import MISSING, WorstCase, count_by_class, worst_case
from .report import ClassReport
from .similarity import profile_similarities, profile_similarity
from .compare import Comparison, Summary, compare_runs, condition_summary  # noqa: E402

__all__ = ["MISSING", "ClassReport", "Comparison", "Summary", "WorstCase", "compare_runs",
           "condition_summary", "count_by_class", "profile_similarities", "profile_similarity",
           "wilson_interval", "worst_case"]
