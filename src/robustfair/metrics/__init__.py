"""Class-wise metrics: :class:`ClassReport` (per-class accuracy with Wilson CIs, discrepancy
measures with bootstrap CIs and noise floors, confusion matrices, JSON round trip) and :func:`profile_similarity`;
:func:`compare_runs` / :func:`compare_values` test two seeded conditions against each other
(seeds and test points; exact tests at few seeds, :mod:`.exact`); :func:`format_p` prints
every p-value;
:func:`worst_case` and :func:`count_by_class` (:mod:`.pointwise`) are the counting under all of it."""
from .._formatting import format_p
from ._frame import RESERVED
from ._stats import (class_resample_weights, cosine, holm, noise_floor,
                     percentile_interval, shifted_interval, wilson_interval)
from .pointwise import MISSING, WorstCase, count_by_class, worst_case
from .report import ClassReport
from .similarity import profile_similarities, profile_similarity
from .compare import Comparison, Summary, compare_runs, compare_values, condition_summary  # noqa: E402
from .exact import ExactTest, permutation_test, sign_flip_test  # noqa: E402

__all__ = ["MISSING", "RESERVED", "ClassReport", "Comparison", "ExactTest", "Summary", "WorstCase",
           "class_resample_weights", "compare_runs", "compare_values", "condition_summary",
           "cosine", "count_by_class", "format_p", "holm", "noise_floor", "percentile_interval",
           "permutation_test", "profile_similarities", "profile_similarity",
           "shifted_interval", "sign_flip_test", "wilson_interval", "worst_case"]
