"""ClassReport numbers against direct per-class computations from ``report.predictions``."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix

from robustfair.errors import RobustfairError
from robustfair.metrics import ClassReport, profile_similarity, wilson_interval, worst_case

CLASSES = ["plane", "car", "bird", "cat", "deer"]
ATTACKS = ["fgsm", "pgd"]


def _direct_worst(y, clean, attack_cols):
    """The pointwise worst case, written out point by point."""
    out = []
    for i in range(len(y)):
        pred = clean[i]
        if clean[i] == y[i]:
            for col in attack_cols:
                if col[i] != y[i]:
                    pred = col[i]
                    break
        out.append(pred)
    return np.array(out)


def make_predictions(n: int = 600, seed: int = 0, classes=CLASSES, target: int | None = None) -> pd.DataFrame:
    """Synthetic audit predictions with clearly different per-class accuracies."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = rng.integers(0, k, n)
    clean_p = np.linspace(0.95, 0.7, k)[y]
    robust_p = [np.linspace(0.8, 0.3, k)[y], np.linspace(0.7, 0.2, k)[y]]

    def wrong(labels):
        return (labels + rng.integers(1, k, len(labels))) % k

    clean = np.where(rng.random(n) < clean_p, y, wrong(y))
    cols = []
    for p in robust_p:
        fooled_to = np.full(n, target) if target is not None else wrong(y)
        if target is not None:
            fooled_to = np.where(fooled_to == y, y, fooled_to)
        col = np.where(rng.random(n) < p, y, fooled_to)
        cols.append(np.where(clean == y, col, clean))  # attacks do not touch clean-wrong points
    data = {"y_true": y, "clean_pred": clean}
    data.update({f"{a}_pred": c for a, c in zip(ATTACKS, cols)})
    data["worst_pred"] = _direct_worst(y, clean, cols)
    if target is not None:
        data["target"] = np.full(n, target)
    return pd.DataFrame(data)


def make_report(n: int = 600, seed: int = 0, target: int | None = None) -> ClassReport:
    return ClassReport(
        predictions=make_predictions(n, seed, target=target),
        classes=CLASSES,
        attacks=[{"attack": "fgsm", "eps": 0.1}, {"attack": "pgd", "eps": 0.1, "steps": 10}],
        meta={"seed": seed},
    )


@pytest.fixture(scope="module")
def report() -> ClassReport:
    return make_report()


def _class_acc(report: ClassReport, column: str) -> np.ndarray:
    p = report.predictions
    return np.array([(p.loc[p.y_true == c, column] == c).mean() for c in range(len(CLASSES))])


METRIC_COLUMNS = {"clean_acc": "clean_pred", "fgsm_acc": "fgsm_pred", "pgd_acc": "pgd_pred",
                  "robust_acc": "worst_pred"}


@pytest.mark.parametrize("metric", list(METRIC_COLUMNS))
def test_by_class_accuracy_matches_direct_count(report, metric):
    direct = _class_acc(report, METRIC_COLUMNS[metric])
    np.testing.assert_allclose(report.by_class[metric].to_numpy(), direct)
    counts = report.predictions.y_true.value_counts().reindex(range(5)).to_numpy()
    np.testing.assert_array_equal(report.by_class["n"].to_numpy(), counts)
    assert list(report.by_class.index) == CLASSES


@pytest.mark.parametrize("metric", list(METRIC_COLUMNS))
def test_wilson_bounds_match_scipy(report, metric):
    p = report.predictions
    for c, name in enumerate(CLASSES):
        rows = p[p.y_true == c]
        k = int((rows[METRIC_COLUMNS[metric]] == c).sum())
        ci = binomtest(k, len(rows)).proportion_ci(confidence_level=0.95, method="wilson")
        assert report.by_class.loc[name, f"{metric}_lo"] == pytest.approx(ci.low, abs=1e-9)
        assert report.by_class.loc[name, f"{metric}_hi"] == pytest.approx(ci.high, abs=1e-9)


def test_wilson_interval_matches_textbook_formula():
    z = 1.959963984540054
    for k, n in [(0, 5), (3, 10), (10, 10), (47, 130)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson_interval(k, n)
        assert float(lo) == pytest.approx(max(0.0, centre - half))
        assert float(hi) == pytest.approx(min(1.0, centre + half))
    lo, hi = wilson_interval(np.array([1, 0]), np.array([2, 0]))
    assert np.isnan(lo[1]) and np.isnan(hi[1]) and lo[0] < 0.5 < hi[0]


def test_overall_matches_direct(report):
    p = report.predictions
    for metric, column in METRIC_COLUMNS.items():
        k = int((p[column] == p.y_true).sum())
        assert report.overall[metric] == pytest.approx(k / len(p))
        ci = binomtest(k, len(p)).proportion_ci(method="wilson")
        assert report.overall[f"{metric}_lo"] == pytest.approx(ci.low)
        assert report.overall[f"{metric}_hi"] == pytest.approx(ci.high)
    assert report.overall["n"] == len(p)


def test_worst_column_is_pointwise_and_of_attack_robustness(report):
    p = report.predictions
    robust = (p.clean_pred == p.y_true) & (p.fgsm_pred == p.y_true) & (p.pgd_pred == p.y_true)
    np.testing.assert_array_equal((p.worst_pred == p.y_true).to_numpy(), robust.to_numpy())
    # and the library's combination agrees with the one written out point by point
    got = worst_case(p.y_true.to_numpy(), p.clean_pred.to_numpy(), [p.fgsm_pred.to_numpy(), p.pgd_pred.to_numpy()])
    np.testing.assert_array_equal(got, _direct_worst(p.y_true.to_numpy(), p.clean_pred.to_numpy(),
                                                     [p.fgsm_pred.to_numpy(), p.pgd_pred.to_numpy()]))


def test_worst_class(report):
    acc = _class_acc(report, "worst_pred")
    assert report.worst_class() == (CLASSES[int(np.argmin(acc))], pytest.approx(acc.min()))
    acc = _class_acc(report, "clean_pred")
    assert report.worst_class("clean_acc") == (CLASSES[int(np.argmin(acc))], pytest.approx(acc.min()))


@pytest.mark.parametrize("metric", ["clean_acc", "pgd_acc", "robust_acc"])
def test_scalar_discrepancy_measures_match_numpy(report, metric):
    acc = _class_acc(report, METRIC_COLUMNS[metric])
    assert report.difference(metric) == pytest.approx(acc.max() - acc.min())
    assert report.ratio(metric) == pytest.approx(acc.min() / acc.max())
    assert report.std(metric) == pytest.approx(np.std(acc))
    assert report.normalized_std(metric) == pytest.approx(np.std(acc) / np.mean(acc))
    np.testing.assert_allclose(report.deviation(metric).to_numpy(), acc - acc.mean())
    assert list(report.deviation(metric).index) == CLASSES


def test_worst_fraction_mean(report):
    acc = np.sort(_class_acc(report, "worst_pred"))
    # 5 classes: 20% is one class; 40% two; 50% rounds up to three
    assert report.worst_fraction_mean() == pytest.approx(acc[0])
    assert report.worst_fraction_mean(fraction=0.4) == pytest.approx(acc[:2].mean())
    assert report.worst_fraction_mean(fraction=0.5) == pytest.approx(acc[:3].mean())
    assert report.worst_fraction_mean(fraction=1.0) == pytest.approx(acc.mean())


@pytest.mark.parametrize("attack,column", [("clean", "clean_pred"), ("worst", "worst_pred"), ("pgd", "pgd_pred")])
@pytest.mark.parametrize("normalize", [None, "true"])
def test_confusion_matches_sklearn(report, attack, column, normalize):
    p = report.predictions
    expected = confusion_matrix(p.y_true, p[column], labels=range(5), normalize=normalize)
    got = report.confusion(attack, normalize=normalize)
    np.testing.assert_allclose(got.to_numpy(), expected)
    assert list(got.index) == CLASSES and list(got.columns) == CLASSES


def test_profile_similarity_is_cosine():
    a, b = make_report(seed=0), make_report(seed=1)
    va, vb = a.by_class["robust_acc"].to_numpy(), b.by_class["robust_acc"].to_numpy()
    expected = va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))
    assert profile_similarity(a, b) == pytest.approx(expected)
    assert profile_similarity(a, a, "clean_acc") == pytest.approx(1.0)
    other = ClassReport(predictions=a.predictions, classes=[c.upper() for c in CLASSES], attacks=a.attacks)
    with pytest.raises(RobustfairError, match="different class lists"):
        profile_similarity(a, other)


def _explicit_bootstrap(report: ClassReport, n_boot: int, seed: int) -> np.ndarray:
    """Resample point indices within each class and recompute per-class robust accuracy."""
    rng = np.random.default_rng(seed)
    p = report.predictions
    reps = np.empty((n_boot, len(CLASSES)))
    for c in range(len(CLASSES)):
        hits = (p.loc[p.y_true == c, "worst_pred"] == c).to_numpy()
        idx = rng.integers(0, len(hits), (n_boot, len(hits)))
        reps[:, c] = hits[idx].mean(axis=1)
    return reps


def test_bootstrap_matches_explicit_resampling_and_contains_estimate(report):
    frame = report.discrepancy("robust_acc", n_boot=2000, seed=0)
    assert list(frame.columns) == ["value", "lo", "hi", "bias", "noise_floor", "p_noise"]
    reps = _explicit_bootstrap(report, 2000, seed=1)
    diff = reps.max(axis=1) - reps.min(axis=1)
    # (the worst row's interval is not a bootstrap one: it is checked in test_metrics_noise)
    for name, values in [("difference", diff), ("mean", reps.mean(axis=1)),
                         ("std", reps.std(axis=1))]:
        lo, hi = np.percentile(values, [2.5, 97.5])
        assert frame.loc[name, "lo"] == pytest.approx(lo, abs=0.02)
        assert frame.loc[name, "hi"] == pytest.approx(hi, abs=0.02)
    for name, row in frame.iterrows():
        assert row.lo <= row.value <= row.hi, name
    assert frame.loc["difference", "value"] == pytest.approx(report.difference())
    assert frame.loc["worst_deviation", "value"] == pytest.approx(report.deviation().min())
    assert frame.loc["worst", "value"] == pytest.approx(report.worst_class()[1])


def test_bootstrap_interval_shrinks_with_more_data():
    small = make_report(n=400, seed=3).discrepancy("robust_acc", n_boot=500)
    large = make_report(n=6400, seed=3).discrepancy("robust_acc", n_boot=500)
    width = lambda f, m: f.loc[m, "hi"] - f.loc[m, "lo"]  # noqa: E731
    for measure in ("mean", "worst", "difference", "std"):
        assert width(large, measure) < 0.5 * width(small, measure), measure


def test_bootstrap_is_reproducible(report):
    a = report.discrepancy(n_boot=200, seed=5)
    b = report.discrepancy(n_boot=200, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_skipped_points_make_attack_accuracy_unknown():
    p = make_predictions(200, seed=2)
    fooled_first = (p.clean_pred == p.y_true) & (p.fgsm_pred != p.y_true)
    p.loc[fooled_first, "pgd_pred"] = -1  # the fast mode skips points an earlier attack fooled
    r = ClassReport(predictions=p, classes=CLASSES, attacks=[{"attack": "fgsm"}, {"attack": "pgd"}])
    has_skip = p[fooled_first].y_true.unique()
    for c, name in enumerate(CLASSES):
        assert np.isnan(r.by_class.loc[name, "pgd_acc"]) == (c in has_skip)
    np.testing.assert_allclose(r.by_class["robust_acc"], _class_acc(r, "worst_pred"))
    assert r.confusion("pgd").to_numpy().sum() == (p.pgd_pred != -1).sum()
    assert np.isnan(r.overall["pgd_acc"])


def test_targeted_success_per_class_matches_direct():
    r = make_report(target=3)
    p = r.predictions
    for c, name in enumerate(CLASSES):
        rows = p[(p.y_true == c) & (p.y_true != 3)]
        value = r.by_class.loc[name, "pgd_target_success"]
        if c == 3:
            assert np.isnan(value)
        else:
            assert value == pytest.approx((rows.pgd_pred == 3).mean())
    valid = p[p.y_true != 3]
    assert r.overall["fgsm_target_success"] == pytest.approx((valid.fgsm_pred == 3).mean())
    # for success rates the worst class is the one pushed into the target most often
    values = r.by_class["pgd_target_success"]
    assert r.worst_class("pgd_target_success") == (values.idxmax(), pytest.approx(values.max()))


def test_target_success_matrix_matches_direct():
    rng = np.random.default_rng(0)
    k, n = len(CLASSES), 60
    base = make_predictions(n, seed=4)
    rows = [(i, t) for i in range(n) for t in range(k) if t != base.y_true[i]]
    index = np.array([i for i, _ in rows])
    target = np.array([t for _, t in rows])
    long = pd.DataFrame({"index": index, "target": target,
                         "fgsm_pred": np.where(rng.random(len(rows)) < 0.3, target, base.y_true.to_numpy()[index]),
                         "pgd_pred": np.where(rng.random(len(rows)) < 0.5, target, base.y_true.to_numpy()[index])})
    r = ClassReport(predictions=base, classes=CLASSES, attacks=[{}, {}], target_predictions=long)
    src = base.y_true.to_numpy()[index]
    for attack, hit in [("fgsm", long.fgsm_pred == target), ("pgd", long.pgd_pred == target),
                        ("worst", (long.fgsm_pred == target) | (long.pgd_pred == target))]:
        m = r.target_success_matrix(attack)
        for s in range(k):
            for t in range(k):
                sel = (src == s) & (target == t)
                if s == t:
                    assert np.isnan(m.iloc[s, t])
                else:
                    assert m.iloc[s, t] == pytest.approx(hit[sel].mean())
    pd.testing.assert_frame_equal(r.target_success, r.target_success_matrix("worst"))


def test_constructor_rejects_inconsistent_predictions():
    p = make_predictions(50)
    bad = p.copy()
    robust = bad.index[bad.worst_pred == bad.y_true][0]
    bad.loc[robust, "worst_pred"] = (bad.loc[robust, "y_true"] + 1) % 5
    with pytest.raises(RobustfairError, match="worst_pred disagrees"):
        ClassReport(predictions=bad, classes=CLASSES, attacks=[{}, {}])
    bad = p.copy()
    bad.loc[0, "y_true"] = 7
    with pytest.raises(RobustfairError, match="y_true"):
        ClassReport(predictions=bad, classes=CLASSES, attacks=[{}, {}])
    with pytest.raises(RobustfairError, match="2 attack column"):
        ClassReport(predictions=p, classes=CLASSES, attacks=[{}])
    with pytest.raises(RobustfairError, match="worst_pred"):
        ClassReport(predictions=p.drop(columns="worst_pred"), classes=CLASSES, attacks=[{}, {}])


def test_unknown_metric_is_a_clear_error(report):
    with pytest.raises(RobustfairError, match="unknown metric 'robust'.*robust_acc"):
        report.difference("robust")
    with pytest.raises(RobustfairError, match="unknown attack 'apgd'"):
        report.confusion("apgd")
