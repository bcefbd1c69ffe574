"""Why are some classes less robust than others? Measures that look for an answer.

One module per measure: :mod:`.sinks` (where adversarial examples land, how mutual confusion
is), :mod:`.similarity` (feature-space class similarity vs robust accuracy), :mod:`.margins`
(smallest flipping eps per point, robust accuracy against eps), :mod:`.corruptions` (common
corruptions on tensors), :mod:`.targeted` (pushing into and out of one class),
:mod:`.feature_datasets` (Ilyas et al.'s robust / non-robust data sets); :mod:`.report` runs
them all: ``explain_model(model, dataset, eps=...) -> Explanation``.
"""
from .corruptions import CORRUPTIONS, SEVERITY_PARAMS, CorruptionResult, corrupt, corruption_accuracy
from .feature_datasets import (
    FeatureDatasetStudy,
    FeatureSet,
    feature_dataset_study,
    non_robust_dataset,
    profile_cosine,
    robust_dataset,
)
from .margins import Margins, margin_analysis, minimal_eps, robust_accuracy_curve
from .report import Explanation
from .run import explain_model
from .similarity import ClassSimilarity, class_similarity, penultimate_features, permutation_spearman
from .sinks import (
    CIFAR100_FINE_TO_COARSE,
    ConfusionSinks,
    adversarial_confusion,
    confusion_sinks,
    confusion_symmetry,
    sink_analysis,
    superclass_share,
)
from .targeted import TargetedVulnerability, targeted_vulnerability

__all__ = [
    "CIFAR100_FINE_TO_COARSE",
    "CORRUPTIONS",
    "SEVERITY_PARAMS",
    "ClassSimilarity",
    "ConfusionSinks",
    "CorruptionResult",
    "Explanation",
    "FeatureDatasetStudy",
    "FeatureSet",
    "Margins",
    "TargetedVulnerability",
    "adversarial_confusion",
    "class_similarity",
    "confusion_sinks",
    "confusion_symmetry",
    "corrupt",
    "corruption_accuracy",
    "explain_model",
    "feature_dataset_study",
    "margin_analysis",
    "minimal_eps",
    "non_robust_dataset",
    "penultimate_features",
    "permutation_spearman",
    "profile_cosine",
    "robust_accuracy_curve",
    "robust_dataset",
    "sink_analysis",
    "superclass_share",
    "targeted_vulnerability",
]
