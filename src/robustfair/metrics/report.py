"""``ClassReport``: class-wise clean and robust accuracy, built from per-sample predictions.

Shaped like fairlearn's ``MetricFrame``: ``by_class`` (one row per class), ``overall``, and
scalar summaries of how unequal the classes are (``difference``, ``ratio``, ...). Every number
is computed from ``report.predictions``, one row per audited point:

=============== ==============================================================================
``y_true``      the true class index
``clean_pred``  the model's prediction on the clean image
``<name>_pred`` the prediction on attack ``<name>``'s adversarial example (the clean prediction
                where the attack found nothing, or was not run because the point was already
                misclassified; ``-1`` where the attack was skipped because an earlier attack had
                already fooled the model, see ``audit(independent=False)``)
``worst_pred``  the pointwise worst case over the attacks: the prediction of the first attack,
                in order, that fooled the model; a point is robust only if it is clean-correct
                and no attack fooled it
``target``      the target class, for audits with one target class
``<name>_by``   for a composite attack (AutoAttack): the index, in its settings' ``parts``, of
                the part that broke the point first; ``-1`` where none did
=============== ==============================================================================

``flags`` holds the audit's sanity flags (:mod:`robustfair.sanity`): dicts with ``code``,
``message`` (one line) and ``classes``.

Audits that target every other class (``targeted_all``) also keep ``target_predictions``: one
row per (point, target class) with ``index`` (the point's row in ``predictions``), ``target``
and ``<name>_pred``; ``target_success`` is computed from it.
"""
from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import RobustfairError
from .._json import jsonable
from . import _storage
from ._frame import check_flags, check_predictions, check_target_predictions
from ._stats import discrepancy_measures, discrepancy_table, wilson_interval
from .pointwise import MISSING, WorstCase, count_by_class, worst_case

__all__ = ["ClassReport", "worst_case", "MISSING", "RESULT_CODES"]

SCHEMA, SCHEMA_VERSION = _storage.SCHEMA, _storage.SCHEMA_VERSION
# the codes of flags that count over an audit's points (robustfair.sanity.result_flags raises
# them): they hold for the points audited, so merging reports leaves them out; the other codes
# are about the model and hold for any points
RESULT_CODES = frozenset({"masking", "attack_budget"})


class ClassReport:
    """Per-class clean and robust accuracy with confidence intervals and discrepancy measures.

    Built with keyword arguments from the per-sample ``predictions`` (columns described in the
    module docstring), the class names, the attacks' settings (in column order) and free-form
    ``meta``. Treat ``predictions`` as read-only: ``by_class`` and ``overall`` are cached.

    >>> preds = pd.DataFrame({"y_true": [0, 0, 1, 1], "clean_pred": [0, 0, 1, 0],
    ...                       "pgd_pred": [1, 0, 1, 0], "worst_pred": [1, 0, 1, 0]})
    >>> r = ClassReport(predictions=preds, classes=["a", "b"], attacks=[{"attack": "pgd"}])
    >>> r.by_class["robust_acc"].tolist()
    [0.5, 0.5]
    >>> r.worst_class("clean_acc")
    ('b', 0.5)
    """

    def __init__(
        self,
        *,
        predictions: pd.DataFrame,
        classes: Sequence[str],
        attacks: Sequence[dict],
        meta: dict | None = None,
        target_predictions: pd.DataFrame | None = None,
        flags: Sequence[dict] | None = None,
    ) -> None:
        classes = [str(c) for c in classes]
        if len(classes) < 1 or len(set(classes)) != len(classes):
            raise RobustfairError("classes must be a non-empty list of distinct names")
        attacks = [jsonable(dict(a)) for a in attacks]
        self.predictions, self.attack_names = check_predictions(predictions, len(classes), attacks)
        self.classes = classes
        self.attacks = attacks
        self.meta = jsonable(dict(meta or {}))
        self.flags = check_flags(flags)
        self.target_predictions = None if target_predictions is None else check_target_predictions(
            target_predictions, self.predictions["y_true"].to_numpy(), len(classes), self.attack_names)

    # ------------------------------------------------------------------ metrics
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targeted(self) -> bool:
        """Whether the audit attacked one fixed target class (``predictions["target"]``)."""
        return "target" in self.predictions.columns

    @property
    def metrics(self) -> list[str]:
        """Names of the per-class metrics in ``by_class`` (each also has ``_lo`` and ``_hi``)."""
        names = ["clean_acc"] + [f"{a}_acc" for a in self.attack_names] + ["robust_acc"]
        if self.targeted:
            names += [f"{a}_target_success" for a in self.attack_names]
        return names

    def _check_metric(self, metric: str) -> str:
        if metric not in self.metrics:
            raise RobustfairError(f"unknown metric {metric!r}; choose from: {', '.join(self.metrics)}")
        return metric

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        """Accuracies: higher is better; an attack's target-success rate: lower is better."""
        return not metric.endswith("_target_success")

    def _outcomes(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point: did it count as a success, does it count at all, is its outcome unknown."""
        p = self.predictions
        y = p["y_true"].to_numpy()
        if metric.endswith("_target_success"):
            pred = p[f"{metric[: -len('_target_success')]}_pred"].to_numpy()
            target = p["target"].to_numpy()
            valid = y != target  # a point of the target class cannot be pushed into it
            return (pred == target) & valid, valid, (pred == MISSING) & valid
        column = {"clean_acc": "clean_pred", "robust_acc": "worst_pred"}.get(metric)
        pred = p[column or f"{metric[: -len('_acc')]}_pred"].to_numpy()
        return pred == y, np.ones_like(y, dtype=bool), pred == MISSING

    def _class_counts(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class: successes, points counted, and whether any point's outcome is unknown."""
        hit, valid, unknown = self._outcomes(self._check_metric(metric))
        y = self.predictions["y_true"].to_numpy()
        k = self.num_classes
        return (count_by_class(y, hit & valid, k), count_by_class(y, valid, k),
                count_by_class(y, unknown, k) > 0)

    @cached_property
    def by_class(self) -> pd.DataFrame:
        """One row per class: ``n``, then each metric with its 95% Wilson interval."""
        y = self.predictions["y_true"].to_numpy()
        data: dict[str, np.ndarray] = {"n": count_by_class(y, None, self.num_classes)}
        for metric in self.metrics:
            hits, n, unknown = self._class_counts(metric)
            lo, hi = wilson_interval(hits, n)
            with np.errstate(divide="ignore", invalid="ignore"):
                value = hits / n
            bad = unknown | (n == 0)
            data[metric] = np.where(bad, np.nan, value)
            data[f"{metric}_lo"] = np.where(bad, np.nan, lo)
            data[f"{metric}_hi"] = np.where(bad, np.nan, hi)
        return pd.DataFrame(data, index=pd.Index(self.classes, name="class"))

    @cached_property
    def overall(self) -> pd.Series:
        """The same metrics over all points (micro average), with 95% Wilson intervals."""
        data: dict[str, float] = {"n": float(len(self.predictions))}
        for metric in self.metrics:
            hits, n, unknown = self._class_counts(metric)
            h, t = hits.sum(), n.sum()
            lo, hi = wilson_interval(h, t)
            bad = bool(unknown.any()) or t == 0
            data[metric] = math.nan if bad else float(h / t)
            data[f"{metric}_lo"] = math.nan if bad else float(lo)
            data[f"{metric}_hi"] = math.nan if bad else float(hi)
        return pd.Series(data, name="overall")

    def class_values(self, metric: str = "robust_acc") -> pd.Series:
        """The metric per class, dropping classes without a value (no points, or unknown outcomes)."""
        values = self.by_class[self._check_metric(metric)].dropna()
        if values.empty:
            raise RobustfairError(f"no class has a value for {metric!r}")
        return values

    def worst_class(self, metric: str = "robust_acc") -> tuple[str, float]:
        """The class with the worst value (lowest accuracy / highest target success) and that value."""
        values = self.class_values(metric)
        name = values.idxmin() if self.higher_is_better(metric) else values.idxmax()
        return str(name), float(values[name])

    def _measure(self, metric: str, name: str, fraction: float = 0.2) -> float:
        values = self.class_values(metric).to_numpy()
        out = discrepancy_measures(values, higher_is_better=self.higher_is_better(metric), fraction=fraction)
        return float(out[name])

    def difference(self, metric: str = "robust_acc") -> float:
        """Largest minus smallest class value."""
        return self._measure(metric, "difference")

    def ratio(self, metric: str = "robust_acc") -> float:
        """Smallest divided by largest class value (NaN if the largest is 0)."""
        return self._measure(metric, "ratio")

    def std(self, metric: str = "robust_acc") -> float:
        """Standard deviation of the class values (population, ``ddof=0``)."""
        return self._measure(metric, "std")

    def normalized_std(self, metric: str = "robust_acc") -> float:
        """Standard deviation of the class values divided by their mean."""
        return self._measure(metric, "normalized_std")

    def worst_fraction_mean(self, metric: str = "robust_acc", fraction: float = 0.2) -> float:
        """Mean over the worst ``ceil(fraction × K)`` classes (at least one)."""
        return self._measure(metric, "worst_fraction_mean", fraction)

    def deviation(self, metric: str = "robust_acc") -> pd.Series:
        """Each class's value minus the mean over classes (the paper's accuracy deviation)."""
        values = self.by_class[self._check_metric(metric)]
        return values - self.class_values(metric).mean()

    def discrepancy(
        self,
        metric: str = "robust_acc",
        *,
        n_boot: int = 1000,
        seed: int = 0,
        fraction: float = 0.2,
        confidence: float = 0.95,
    ) -> pd.DataFrame:
        """Every scalar discrepancy measure with a stratified-bootstrap interval and its noise floor.

        Columns:

        * ``value``; ``lo``/``hi``: the ``(1 ± confidence) / 2`` percentiles of the measure over
          ``n_boot`` resamples of the points with replacement within each class (class sizes
          stay fixed). For ``worst`` instead an interval for the TRUE worst-class accuracy:
          simultaneous Wilson bounds, Bonferroni across the K classes (the lowest lower bound
          to the lowest upper bound), which covers it at >= ``confidence`` whatever the profile
          (ties included: with ten classes tied at 60% the bootstrap percentiles of the
          observed minimum covered the truth 0-0.3% of the time);
        * ``bias``: the bootstrap estimate of the measure's bias (mean over resamples minus
          ``value``). For ``worst`` it estimates the selection bias of taking the minimum of K
          noisy class estimates, but only in part: the resamples take the minimum around the
          OBSERVED accuracies, whose spread already holds the noise, so ``value - bias``
          removes roughly 40% of the bias when classes are tied, and compares profiles
          unevenly (a flat-bottomed profile still looks worse than a single low class with
          the same true worst class). Use ``lo``/``hi`` for the true worst class, and compare
          worst classes between conditions with :func:`robustfair.metrics.compare_runs`
          (which states the estimand: each run's own worst class, or one class fixed in
          advance);
        * ``noise_floor``: the measure's expected value if every class had the same true
          accuracy (the pooled one), from a parametric bootstrap that keeps each class's n: the
          gap that sampling noise alone produces;
        * ``p_noise``: the share of those no-gap draws with a gap at least as wide as observed
          (NaN for ``mean``). Small: the gap exceeds sampling noise.

        Classes without a value are left out. ``n_boot`` draws serve both bootstraps.

        >>> preds = pd.DataFrame({"y_true": [0] * 50 + [1] * 50, "clean_pred": [0] * 100,
        ...                       "worst_pred": [0] * 100})
        >>> d = ClassReport(predictions=preds, classes=["a", "b"], attacks=[]).discrepancy(
        ...     "clean_acc", n_boot=200)
        >>> float(d.loc["difference", "value"]), float(d.loc["difference", "p_noise"]) < 0.01
        (1.0, True)
        """
        if n_boot < 1:
            raise RobustfairError(f"n_boot must be at least 1, got {n_boot}")
        hits, n, unknown = self._class_counts(self._check_metric(metric))
        keep = (n > 0) & ~unknown
        if not keep.any():
            raise RobustfairError(f"no class has a value for {metric!r}")
        frame = discrepancy_table(hits[keep], n[keep], higher_is_better=self.higher_is_better(metric),
                                  n_boot=n_boot, seed=seed, fraction=fraction, confidence=confidence)
        frame.attrs.update(metric=metric, n_boot=n_boot, seed=seed, fraction=fraction, confidence=confidence)
        return frame

    def broken_by(self) -> pd.DataFrame:
        """Per class: how many points each attack (each part of a composite attack such as
        AutoAttack) broke first, in the order they ran, then ``robust`` and ``clean_wrong``.

        A column counts the clean-correct points whose worst case came from that attack; the
        columns of a class add up to its ``n``.
        """
        p = self.predictions
        y = p["y_true"].to_numpy()
        k = self.num_classes
        wc = WorstCase(y, p["clean_pred"].to_numpy())
        clean_wrong = ~wc.robust
        data: dict[str, np.ndarray] = {}
        for name, settings in zip(self.attack_names, self.attacks):
            fooled = wc.add(p[f"{name}_pred"].to_numpy())
            parts = [str(s.get("attack", i)) for i, s in enumerate(settings.get("parts") or [])]
            if f"{name}_by" in p.columns and parts:
                by = p[f"{name}_by"].to_numpy()
                for i, part in enumerate(parts):
                    data[f"{name}:{part}"] = count_by_class(y, fooled & (by == i), k)
            else:
                data[name] = count_by_class(y, fooled, k)
        data["robust"] = count_by_class(y, wc.robust, k)
        data["clean_wrong"] = count_by_class(y, clean_wrong, k)
        return pd.DataFrame(data, index=pd.Index(self.classes, name="class"))

    # ------------------------------------------------------------------ confusion
    def _pred_column(self, attack: str) -> str:
        if attack in ("worst", "robust"):
            return "worst_pred"
        if attack == "clean":
            return "clean_pred"
        if attack in self.attack_names:
            return f"{attack}_pred"
        raise RobustfairError(
            f"unknown attack {attack!r}; choose from: clean, worst, {', '.join(self.attack_names)}"
        )

    def confusion(self, attack: str = "worst", normalize: str | None = None) -> pd.DataFrame:
        """True class × predicted class counts under ``attack`` (``"clean"``, ``"worst"`` or a name).

        ``normalize="true"`` divides each row by its total (rows without points become NaN).
        Points the attack skipped (``-1``) are left out.
        """
        if normalize not in (None, "true"):
            raise RobustfairError(f"normalize must be None or 'true', got {normalize!r}")
        k = self.num_classes
        y = self.predictions["y_true"].to_numpy()
        pred = self.predictions[self._pred_column(attack)].to_numpy()
        keep = pred != MISSING
        counts = np.bincount(y[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
        matrix: np.ndarray = counts
        if normalize == "true":
            with np.errstate(divide="ignore", invalid="ignore"):
                matrix = counts / counts.sum(axis=1, keepdims=True)
        return pd.DataFrame(matrix, index=pd.Index(self.classes, name="true"),
                            columns=pd.Index(self.classes, name="predicted"))

    # ------------------------------------------------------------------ targeted
    def target_success_matrix(self, attack: str = "worst") -> pd.DataFrame:
        """Source class × target class: the fraction of the source's points pushed into the target.

        ``attack="worst"`` counts a point as pushed if any attack reached the target. Points the
        model already misclassified count as pushed if their clean prediction is the target.
        Needs an audit with ``targeted_all=True``; cells with skipped points (``-1``) are NaN.
        """
        tp = self.target_predictions
        if tp is None:
            raise RobustfairError("this report has no per-target runs; audit with targeted_all=True")
        column = self._pred_column(attack)
        columns = [f"{a}_pred" for a in self.attack_names] if column == "worst_pred" else [column]
        target = tp["target"].to_numpy()
        preds = np.stack([tp[c].to_numpy() for c in columns])
        hit = (preds == target).any(axis=0)
        unknown = (preds == MISSING).any(axis=0) & ~hit
        k = self.num_classes
        cell = self.predictions["y_true"].to_numpy()[tp["index"].to_numpy()] * k + target
        total = np.bincount(cell, minlength=k * k)
        hits = np.bincount(cell, weights=hit, minlength=k * k)
        unknown = np.bincount(cell, weights=unknown, minlength=k * k) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where((total > 0) & ~unknown, hits / total, np.nan)
        return pd.DataFrame(rate.reshape(k, k), index=pd.Index(self.classes, name="source"),
                            columns=pd.Index(self.classes, name="target"))

    @property
    def target_success(self) -> pd.DataFrame:
        """``target_success_matrix("worst")``: source × target success of any attack."""
        return self.target_success_matrix("worst")

    # ------------------------------------------------------------------ merging
    @classmethod
    def concat(cls, reports: Sequence["ClassReport"]) -> "ClassReport":
        """One report from reports on consecutive parts of one test set (the shards of a
        sharded audit), given in the order of their points.

        Per-point predictions (and ``target_predictions``, re-indexed) are concatenated in that
        order. Flags: the model-level ones (checks of the model, the same whichever points
        they saw) once per code, from the first report that raised it; the result-level ones
        (``RESULT_CODES``: a count over points, e.g. ``masking``) are left out, since they do
        not hold for the union (:func:`robustfair.sharding.audit_sharded` recomputes them with
        :func:`robustfair.sanity.result_flags`). Meta: the first report's, with ``n`` and
        ``time_seconds`` summed, ``started`` the earliest, and ``shards`` keeping each part's
        provenance (its ``meta["shard"]`` if any, points, start time, time, versions).
        The reports must share classes, attack settings and prediction columns.

        >>> p = pd.DataFrame({"y_true": [0, 1], "clean_pred": [0, 0], "worst_pred": [0, 0]})
        >>> a = ClassReport(predictions=p, classes=["a", "b"], attacks=[], meta={"n": 2})
        >>> whole = ClassReport.concat([a, a])
        >>> len(whole.predictions), whole.meta["n"], len(whole.meta["shards"])
        (4, 4, 2)
        """
        reports = list(reports)
        if not reports or not all(isinstance(r, ClassReport) for r in reports):
            raise RobustfairError("concat needs a non-empty list of ClassReport objects")
        first = reports[0]
        for i, r in enumerate(reports[1:], start=1):
            for what, mine, theirs in (("classes", r.classes, first.classes),
                                       ("attack settings", r.attacks, first.attacks),
                                       ("prediction columns", list(r.predictions.columns),
                                        list(first.predictions.columns))):
                if mine != theirs:
                    raise RobustfairError(f"cannot concatenate: report {i} has other {what} than report 0")
            if (r.target_predictions is None) != (first.target_predictions is None):
                raise RobustfairError(f"cannot concatenate: report {i} has per-target runs and "
                                      f"report 0 has not, or the other way round")
        predictions = pd.concat([r.predictions for r in reports], ignore_index=True)
        target_predictions = None
        if first.target_predictions is not None:
            offsets = np.cumsum([0] + [len(r.predictions) for r in reports[:-1]])
            parts = []
            for offset, r in zip(offsets, reports):
                part = r.target_predictions.copy()
                part["index"] = part["index"] + int(offset)
                parts.append(part)
            target_predictions = pd.concat(parts, ignore_index=True)
        flags, seen = [], set()
        for r in reports:
            for flag in r.flags:
                if flag["code"] not in RESULT_CODES and flag["code"] not in seen:
                    seen.add(flag["code"])
                    flags.append(flag)
        meta = {k: v for k, v in first.meta.items() if k != "shard"}
        meta["n"] = len(predictions)
        times = [r.meta.get("time_seconds") for r in reports]
        if all(isinstance(t, (int, float)) for t in times):
            meta["time_seconds"] = round(float(sum(times)), 3)
        starts = [r.meta["started"] for r in reports if isinstance(r.meta.get("started"), str)]
        if starts:
            meta["started"] = min(starts)  # ISO 8601 in UTC: text order is time order
        meta["shards"] = [{**r.meta.get("shard", {}), "n": len(r.predictions),
                           "started": r.meta.get("started"), "time_seconds": r.meta.get("time_seconds"),
                           "versions": r.meta.get("versions")} for r in reports]
        merged = cls(predictions=predictions, classes=first.classes, attacks=first.attacks,
                     meta=meta, target_predictions=target_predictions, flags=flags)
        return merged

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        """Plain JSON types: the schema tag, classes, attack settings, metadata and predictions."""
        return _storage.to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "report") -> "ClassReport":
        """Rebuild a report from :meth:`to_dict` output, checking the schema."""
        return _storage.from_dict(cls, data, source)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON, atomically (temp file + rename). Returns the path."""
        return _storage.write_json(path, self.to_json_text())

    def to_json_text(self) -> str:
        return _storage.json_text(self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ClassReport":
        """Read a report written by :meth:`to_json`; a one-line error for a missing or bad file."""
        path = Path(path)
        return cls.from_dict(_storage.read_json(path), source=f"report file {path}")

    def equals(self, other: "ClassReport") -> bool:
        """Same classes, attack settings, metadata and predictions."""
        if not isinstance(other, ClassReport):
            return False
        tp_a, tp_b = self.target_predictions, other.target_predictions
        same_tp = (tp_a is None and tp_b is None) or (
            tp_a is not None and tp_b is not None and tp_a.equals(tp_b))
        return (self.classes == other.classes and self.attacks == other.attacks
                and self.meta == other.meta and self.flags == other.flags and self.predictions.equals(other.predictions) and same_tp)

    # ------------------------------------------------------------------ display
    def to_markdown(self, *, n_boot: int = 1000, seed: int = 0) -> str:
        """Markdown: per-class table (worst class marked), overall row, attack settings,
        discrepancy measures with bootstrap CIs."""
        from ._format import report_markdown

        return report_markdown(self, n_boot=n_boot, seed=seed)

    def summary(self, *, n_boot: int = 1000, seed: int = 0) -> str:
        """The same content as :meth:`to_markdown`, as aligned plain text for a terminal."""
        from ._format import report_text

        return report_text(self, n_boot=n_boot, seed=seed)

    def __repr__(self) -> str:
        attacks = ", ".join(self.attack_names) or "none"
        return (f"ClassReport(n={len(self.predictions)}, classes={self.num_classes}, "
                f"attacks=[{attacks}], robust_acc={self.overall['robust_acc']:.4f})")

