"""The study's statistics on small hand-built results tables: the per-run frame keeps each run's
own numbers whatever the row order, and the tests between conditions say what they span."""
import numpy as np
import pandas as pd
import pytest

from robustfair.study import analysis as A
from robustfair.study import inference as I
from robustfair.study import universality as U

K = 4


def _results(profiles: dict[str, tuple[np.ndarray, np.ndarray]], n: int = 50) -> pd.DataFrame:
    """A tidy results table (run × class × measure) from known clean/robust profiles."""
    rows = []
    for run, (clean, robust) in profiles.items():
        for measure, values in (("clean_acc", clean), ("robust_acc", robust)):
            for c, v in enumerate(values):
                rows.append({"run": run, "label": run, "dataset": "toy", "model": "m",
                             "objective": "pgd_at", "mitigation": "none", "eps": 0.1,
                             "seed": int(run[-1]), "class": f"c{c}", "class_index": c,
                             "n": n, "measure": measure, "value": v, "lo": np.nan,
                             "hi": np.nan})
    return pd.DataFrame(rows)


def test_run_frame_names_each_runs_own_worst_class_in_any_row_order():
    # run keys whose sorted order differs from the order they appear in: the old code filled
    # the worst-class column by position from a frame sorted by run key
    profiles = {}
    for i, key in enumerate(["f3", "a1", "c2", "b0", "e4"]):
        robust = np.full(K, 0.8)
        robust[i % K] = 0.1          # a different worst class per run
        clean = np.full(K, 0.9)
        clean[(i + 1) % K] = 0.5
        profiles[key] = (clean, robust)
    results = _results(profiles)
    shuffled = results.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for table in (results, shuffled):
        runs = A.run_frame(table).set_index("run")
        for i, key in enumerate(profiles):
            assert runs.loc[key, "robust_worst_class"] == f"c{i % K}"
            assert runs.loc[key, "clean_worst_class"] == f"c{(i + 1) % K}"
            assert runs.loc[key, "robust_worst"] == pytest.approx(0.1)
            assert runs.loc[key, "robust_mean"] == pytest.approx((0.8 * 3 + 0.1) / 4)


def _tidy(rows_by_run: dict[str, dict], n: int = 150) -> pd.DataFrame:
    """A results table from {run: {config..., "clean": array, "robust": array}}."""
    rows = []
    for run, spec in rows_by_run.items():
        config = {k: v for k, v in spec.items() if k not in ("clean", "robust")}
        for measure in ("clean_acc", "robust_acc"):
            for c, v in enumerate(spec[measure[:-4]]):
                rows.append({"run": run, "label": run, **config, "class": f"c{c}",
                             "class_index": c, "n": n, "measure": measure,
                             "value": round(v * n) / n, "lo": np.nan, "hi": np.nan})
    return pd.DataFrame(rows)


def _config(**kw):
    base = {"dataset": "toy", "model": "m", "objective": "pgd_at", "mitigation": "none",
            "eps": 0.1, "optimizer": "sgd", "seed": 0}
    base.update(kw)
    return base


def test_training_gap_is_tested_on_the_same_metric_with_matched_pairs():
    rng = np.random.default_rng(0)
    runs = {}
    flat = np.full(K, 0.9)
    for opt in ("sgd", "adam"):
        for seed in range(3):
            # both objectives: the same clean profile (up to noise); AT's robust profile is
            # far more uneven than the standard model's (which is ~0 everywhere)
            runs[f"s-{opt}{seed}"] = {**_config(objective="standard", optimizer=opt, seed=seed),
                                      "clean": flat + rng.normal(0, 0.01, K),
                                      "robust": np.full(K, 0.02)}
            runs[f"a-{opt}{seed}"] = {**_config(optimizer=opt, seed=seed),
                                      "clean": flat + rng.normal(0, 0.01, K),
                                      "robust": np.array([0.1, 0.5, 0.7, 0.9])}
    tests = I.training_gap_tests(_tidy(runs), n_boot=500)
    by_metric = {t.metric_a: t for t in tests}
    assert set(by_metric) == {"clean_acc", "robust_acc"}
    for t in tests:
        assert t.metric_a == t.metric_b and t.paired and t.runs_a == 6  # 2 optimisers × 3 seeds
    robust, clean = by_metric["robust_acc"], by_metric["clean_acc"]
    # 6 pairs: an exact sign-flip test, whose two-sided p cannot go below 2/64; every pair
    # wider reaches it
    assert robust.estimate > 0.25 and robust.result.test == "sign-flip (paired)"
    assert robust.p_value == pytest.approx(2 / 64) and robust.result.p_min == pytest.approx(2 / 64)
    assert clean.p_value > 0.05  # the same clean profile: no evidence of a wider gap
    assert robust.lo < robust.estimate < robust.hi
    assert "6 matched pairs × test points" in robust.describe()
    assert "smallest attainable 0.031" in robust.describe()


def test_robust_spread_leaves_out_pairs_at_zero_robust_accuracy_in_every_class():
    runs = {}
    for seed in range(3):
        runs[f"s{seed}"] = {**_config(objective="standard", seed=seed),
                            "clean": np.full(K, 0.9), "robust": np.zeros(K)}
        runs[f"a{seed}"] = {**_config(seed=seed), "clean": np.full(K, 0.9),
                            "robust": np.array([0.1, 0.5, 0.7, 0.9])}
    tests = I.training_gap_tests(_tidy(runs), n_boot=200)
    # every standard model is at 0% robust: the robust std has no pair to compare
    assert [t.metric_a for t in tests] == ["clean_acc"]
    runs["s0"]["robust"] = np.array([0.05, 0.1, 0.1, 0.2])
    robust = [t for t in I.training_gap_tests(_tidy(runs), n_boot=200)
              if t.metric_a == "robust_acc"]
    assert robust[0].runs_a == 1 and robust[0].skipped == 2
    assert "2 pair(s) with a run at 0% robust accuracy in every class left out" in robust[0].describe()


def test_mitigation_verdict_comes_from_the_test():
    rng = np.random.default_rng(1)
    runs = {}
    base = np.array([0.2, 0.5, 0.6, 0.7])
    for seed in range(5):
        runs[f"b{seed}"] = {**_config(seed=seed), "clean": np.full(K, 0.9),
                            "robust": np.clip(base + rng.normal(0, 0.02, K), 0, 1)}
        runs[f"m{seed}"] = {**_config(seed=seed, mitigation="good"), "clean": np.full(K, 0.9),
                            "robust": np.clip(base + [0.25, 0, 0, 0] + rng.normal(0, 0.02, K), 0, 1)}
        runs[f"z{seed}"] = {**_config(seed=seed, mitigation="noop"), "clean": np.full(K, 0.9),
                            "robust": np.clip(base + rng.normal(0, 0.02, K), 0, 1)}
    tests = I.mitigation_tests(_tidy(runs), n_boot=500).set_index("method")
    good, noop = tests.loc["pgd_at + good"], tests.loc["pgd_at + noop"]
    assert good["baseline"] == "pgd_at" and good["seeds"] == 5
    assert good["verdict"] == "raises the worst class" and good["worst"].estimate > 0.2
    # one-sided exact permutation, 5 vs 5 seeds: the best split of 252, Holm over 2 methods
    assert good["worst"].result.alternative == "greater"
    assert good["worst"].p_value == pytest.approx(1 / 252)
    assert good["worst_p_holm"] == pytest.approx(2 / 252)
    # the cost: non-inferiority of the average against a margin of 2 points
    assert good["avg"].result.shift == pytest.approx(-I.COST_MARGIN)
    assert noop["verdict"] == "not shown to raise the worst class"
    assert "5 vs 5 seeds × test points" in good["worst"].describe()
    table = I.comparisons_table(_tidy(runs), n_boot=500)
    assert {"comparison", "measure", "estimate", "lo", "hi", "p", "test", "n_units"} <= set(table)
    row = table[(table["comparison"] == "pgd_at + good vs pgd_at")
                & (table["measure"] == "worst")].iloc[0]
    assert row["p"] == pytest.approx(good["worst"].p_value) and row["n_units"] == 5
    assert row["verdict"] == "raises the worst class"


def test_run_statistics_intervals_and_noise_p_values():
    runs = {"flat0": {**_config(), "clean": np.full(K, 0.9), "robust": np.full(K, 0.6)},
            "gap0": {**_config(mitigation="x"), "clean": np.full(K, 0.9),
                     "robust": np.array([0.1, 0.6, 0.8, 0.9])}}
    stats = I.run_statistics(_tidy(runs), n_boot=500).set_index("run")
    assert stats.loc["flat0", "robust_std"] == 0 and stats.loc["flat0", "robust_p_noise"] > 0.9
    assert stats.loc["gap0", "robust_p_noise"] < 0.01
    assert stats.loc["gap0", "robust_worst_class"] == "c0"
    assert stats.loc["gap0", "robust_worst_fraction_mean"] == pytest.approx(0.1)  # 20% of 4: 1
    assert stats.loc["gap0", "robust_worst_lo"] < 0.1 < stats.loc["gap0", "robust_worst_hi"]
    # the std that noise alone gives 150 points per class at 60%: about 4 points
    assert 0.02 < stats.loc["flat0", "robust_std_noise_floor"] < 0.05


def test_similarity_intervals_and_centred_correlation():
    rng = np.random.default_rng(2)
    runs = {}
    for model in ("a", "b", "c"):
        # near-equal high accuracies: the cosine is ~1 whatever the pattern; the centred
        # correlation of independent noise patterns is not
        runs[f"{model}0"] = {**_config(model=model, objective="standard"),
                             "clean": 0.95 + rng.normal(0, 0.01, K), "robust": np.zeros(K)}
    pairs = U.matched_cosines(_tidy(runs, n=400), ["model"], intervals=True, n_boot=300)
    assert len(pairs) == 3
    assert (pairs["cos"] > 0.999).all()
    assert (pairs["cos_centered_hi"] - pairs["cos_centered_lo"] > 0.5).all()
    assert (pairs["cos_lo"] <= pairs["cos"] + 1e-9).all()


def test_centred_correlation_intervals_contain_the_estimate_despite_resampling_noise():
    # a shared but weak class pattern (2 points of spread, 150 points per class): resampling
    # adds noise that pulls r toward 0, which a plain percentile interval would not correct
    rng = np.random.default_rng(5)
    pattern = np.linspace(-0.02, 0.02, K)
    runs = {f"{m}{s}": {**_config(model=m, objective="standard", seed=s),
                        "clean": 0.9 + pattern + rng.normal(0, 0.01, K), "robust": np.zeros(K)}
            for m in ("a", "b", "c") for s in (0, 1)}
    data = A.StudyData(_tidy(runs))
    pairs = U.matched_cosines(data, ["model"], intervals=True, n_boot=400)
    inside = ((pairs["cos_centered_lo"] <= pairs["cos_centered"] + 1e-9)
              & (pairs["cos_centered"] <= pairs["cos_centered_hi"] + 1e-9))
    assert inside.all()
    s = [x for x in U.universality(data, n_boot=400).similarities if x.across == "architectures"][0]
    lo, hi = s.centered_mean_interval
    assert lo <= np.mean(s.centered) <= hi


def test_no_p_value_below_what_two_seeds_can_give():
    """A study with 2 seeds per condition: every comparison is an exact test, and no printed
    p-value is below the smallest attainable one (the old bootstrap printed "p < 0.001")."""
    rng = np.random.default_rng(5)
    runs = {}
    for seed in range(2):
        runs[f"s{seed}"] = {**_config(objective="standard", seed=seed),
                            "clean": np.full(K, 0.97) - rng.random(K) * 0.02,
                            "robust": np.array([0.0, 0.01, 0.0, 0.02])}
        runs[f"a{seed}"] = {**_config(seed=seed), "clean": np.full(K, 0.9),
                            "robust": np.array([0.1, 0.5, 0.7, 0.9]) + rng.normal(0, .01, K)}
        runs[f"m{seed}"] = {**_config(seed=seed, mitigation="x"), "clean": np.full(K, 0.9),
                            "robust": np.array([0.4, 0.5, 0.7, 0.9]) + rng.normal(0, .01, K)}
    table = I.comparisons_table(_tidy(runs), n_boot=300)
    assert len(table) >= 4 and (table["n_units"] == 2).all()
    assert (table["test"] != "hierarchical bootstrap").all()
    assert (table["p"] >= table["p_min"] - 1e-12).all()
    # the floors: sign-flip over 2 pairs two-sided 2/4; permutation 2 vs 2 one-sided 1/6
    floors = dict(zip(table["test"] + " " + table["alternative"], table["p_min"]))
    assert floors["sign-flip (paired) two-sided"] == pytest.approx(0.5)
    assert floors["permutation (two-sample) greater"] == pytest.approx(1 / 6)
