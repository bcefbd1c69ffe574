"""Class-wise metrics: :class:`ClassReport` (per-class accuracy with Wilson CIs, discrepancy
measures with bootstrap CIs, confusion matrices, JSON round trip) and :func:`profile_similarity`."""
from ._stats import wilson_interval
from .report import ClassReport, profile_similarity, worst_case

__all__ = ["ClassReport", "profile_similarity", "wilson_interval", "worst_case"]
