"""The table of discrepancy measures (robustfair.metrics.measures) is the one source: every
measure in it reaches the report, the card, the comparisons, the study and the leaderboard,
nothing else does, and a measure registered from outside shows up in all of them."""
import re

import numpy as np
import pandas as pd
import pytest

from robustfair.card.content import card_context
from robustfair.errors import RobustfairError
from robustfair.leaderboard import report as leaderboard_page
from robustfair.leaderboard.table import leaderboard_table, model_row
from robustfair.metrics import ClassReport, compare_runs, condition_summary
from robustfair.metrics._stats import noise_floor
from robustfair.metrics.measures import (MEASURES, POINTS, UNITLESS, ClassValues, Measure,
                                         discrepancy_measures, gap_direction, get_measure,
                                         register_measure)
from robustfair.study import inference as I

ACC = np.array([0.3, 0.7, 0.8, 0.9])   # one class far below the others
N = 60


def _report(acc=ACC, n=N, seed=0) -> ClassReport:
    """No attacks (robust = clean); each class right on round(acc * n) of its n points."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(acc)), n)
    right = np.concatenate([rng.permutation(np.arange(n) < round(a * n)) for a in acc])
    pred = np.where(right, y, (y + 1) % len(acc))
    return ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
                                                 "worst_pred": pred}),
                       classes=[f"c{i}" for i in range(len(acc))], attacks=[])


def _study(profiles: dict[str, np.ndarray], n: int = 150) -> pd.DataFrame:
    rows = []
    for run, robust in profiles.items():
        config = {"dataset": "toy", "model": "m", "objective": "pgd_at", "eps": 0.1,
                  "mitigation": "none" if run.startswith("a") else "x", "seed": int(run[-1])}
        for measure, values in (("clean_acc", np.full(len(robust), 0.9)), ("robust_acc", robust)):
            for c, v in enumerate(values):
                rows.append({"run": run, "label": run, **config, "class": f"c{c}",
                             "class_index": c, "n": n, "measure": measure,
                             "value": round(v * n) / n, "lo": np.nan, "hi": np.nan})
    return pd.DataFrame(rows)


def test_the_report_shows_exactly_the_measures_of_the_table():
    report = _report()
    frame = report.discrepancy("robust_acc", n_boot=200)
    assert list(frame.index) == list(MEASURES)
    text = report.summary(n_boot=200)
    section = text.split("Class discrepancy", 1)[1]
    shown = [line.split()[0] for line in section.splitlines()[3:] if line.strip()]
    assert shown == list(MEASURES)
    card = card_context(report, title="t", figures={}, n_boot=200)
    assert [row[0] for row in card["discrepancy"][0]["rows"]] == list(MEASURES)


def test_every_gap_measure_sees_a_clear_gap_in_its_own_direction():
    # one class far below (accuracies) or far above (a rate where lower is better): every
    # measure that speaks to the gap gives a small noise p-value, so its direction is right
    n = np.full(4, 200)
    for successes, higher in ((np.array([40, 160, 170, 180]), True),
                              (np.array([160, 40, 30, 20]), False)):
        floor = noise_floor(successes, n, higher_is_better=higher, n_sim=500)
        for name, measure in MEASURES.items():
            p = floor[name][1]
            if measure.gap == 0:
                assert np.isnan(p), name
            else:
                assert p < 0.01, (name, higher, p)
    # and none with classes equal
    for name, (_, p) in noise_floor(np.full(4, 120), n, n_sim=500).items():
        assert MEASURES[name].gap == 0 or p > 0.5, name


def test_measure_properties_agree_with_what_the_functions_compute():
    rng = np.random.default_rng(1)
    acc = rng.random((500, 6))
    values = discrepancy_measures(acc)
    for name, measure in MEASURES.items():
        v = values[name][np.isfinite(values[name])]
        low, high = measure.bounds
        assert (v >= low - 1e-12).all() and (v <= high + 1e-12).all(), name
        assert measure.unit in (POINTS, UNITLESS)
    assert gap_direction("worst", higher_is_better=False) == 1
    with pytest.raises(RobustfairError, match="unknown measure 'nope'; choose from: mean"):
        get_measure("nope")
    with pytest.raises(RobustfairError, match="registered already"):
        register_measure(MEASURES["std"])


@pytest.fixture
def second_worst():
    """A made-up measure, registered the way a user would: one call, nothing else."""
    measure = register_measure(Measure(
        "second_worst", lambda c: c.worst_first[..., 1], -1, "the second-worst class",
        worst_side=True, level=True, per_run=True, leaderboard="second_worst"))
    yield measure
    MEASURES.pop(measure.name)


def test_a_registered_measure_reaches_report_card_comparisons_study_and_leaderboard(second_worst):
    report = _report()
    expected = 0.7  # the second-lowest class
    # report (table and text) and card
    frame = report.discrepancy("robust_acc", n_boot=200)
    assert frame.loc["second_worst", "value"] == pytest.approx(expected)
    assert frame.loc["second_worst", "lo"] <= expected <= frame.loc["second_worst", "hi"]
    assert re.search(r"^second_worst +70\.0 \[", report.summary(n_boot=200), re.M)
    card = card_context(report, title="t", figures={}, n_boot=200)
    assert "second_worst" in [row[0] for row in card["discrepancy"][0]["rows"]]
    # comparisons of two conditions and a condition's summary
    others = [_report(ACC - 0.2, seed=s) for s in range(3)]
    c = compare_runs([report] * 3, others, measure="second_worst", n_boot=200)
    assert c.measure == "second_worst" and c.estimate == pytest.approx(0.2)
    assert "+20.0 points" in c.describe()
    s = condition_summary(others, measure="second_worst", n_boot=200)
    assert s.estimate == pytest.approx(0.5)
    # leaderboard: its table and the columns of its page
    row = model_row("m", report, n_boot=200)
    assert row["second_worst"] == pytest.approx(expected)
    assert {"second_worst_lo", "second_worst_hi", "second_worst_noise_floor",
            "second_worst_p_noise"} <= set(row)
    headers = [h for h, _ in leaderboard_page.columns()]
    assert headers[-5:-2] == ["second worst (points)", "second worst noise floor",
                              "second worst p_noise"]
    table = leaderboard_table({"m": report}, n_boot=200)
    cells = leaderboard_page._rows(table, {"m": report})[0]["cells"]
    assert len(cells) == len(headers) and cells[-5][0][0] == "70.0"
    # study: per-run statistics and comparisons between conditions
    runs = {"a0": np.array([0.2, 0.6, 0.7, 0.8]), "a1": np.array([0.2, 0.6, 0.7, 0.8]),
            "b0": np.array([0.2, 0.3, 0.7, 0.8]), "b1": np.array([0.2, 0.3, 0.7, 0.8])}
    data = _study(runs)
    stats = I.run_statistics(data, n_boot=200).set_index("run")
    assert stats.loc["a0", "robust_second_worst"] == pytest.approx(0.6)
    assert stats.loc["b0", "robust_second_worst_lo"] < 0.3 < stats.loc["b0", "robust_second_worst_hi"]
    t = I.compare_conditions(data, ["a0", "a1"], ["b0", "b1"], measure="second_worst", n_boot=200)
    assert t.estimate == pytest.approx(0.3) and "+30.0 points" in t.describe()


def test_a_unitless_measure_is_compared_as_a_number_not_in_points():
    # the study's comparison used to treat only normalized_std as unitless (ratio in points)
    data = _study({"a0": np.array([0.2, 0.6, 0.7, 0.8]), "b0": np.array([0.4, 0.6, 0.7, 0.8])})
    t = I.compare_conditions(data, ["a0"], ["b0"], measure="ratio", n_boot=100)
    assert t.describe().startswith(f"{t.estimate:+.3f} [")
    assert " points [" not in t.describe()


def test_class_values_orders_from_the_worst_class():
    c = ClassValues(np.array([0.2, 0.9, 0.5]), higher_is_better=False, fraction=0.5)
    assert c.worst == 0.9 and c.worst_first.tolist() == [0.9, 0.5, 0.2] and c.worst_count == 2


def test_the_study_measures_each_run_over_the_classes_it_has():
    from robustfair.study.analysis import row_measure

    wide = pd.DataFrame([[0.2, 0.6, np.nan], [0.3, 0.5, 0.9], [np.nan] * 3],
                        columns=["c0", "c1", "c2"])
    assert row_measure(wide, "worst")[:2].tolist() == [0.2, 0.3]
    assert row_measure(wide, "mean")[:2] == pytest.approx([0.4, 1.7 / 3])
    assert row_measure(wide, "std")[:2] == pytest.approx([0.2, np.std([0.3, 0.5, 0.9])])
    assert np.isnan(row_measure(wide, "mean")[2])
