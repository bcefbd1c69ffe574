"""The noise floor of the discrepancy measures and the tests between conditions are calibrated:
with no real gap their p-values are uniform (5% of draws below 0.05), and a planted gap of a
realistic size is found. Everything is vectorised so the 1,000-draw checks take a second."""
import numpy as np
import pandas as pd
import pytest

from robustfair.metrics import ClassReport, compare_runs, wilson_interval
from robustfair.metrics._stats import (bootstrap_p_value, discrepancy_measures,
                                       hierarchical_bootstrap, holm, noise_floor)

K = 10
N = np.array([150] * 5 + [100, 120, 180, 200, 150])  # unequal classes: each n must be kept


def _draws(acc: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Per-class success counts of ``draws`` synthetic audits with true accuracies ``acc``."""
    return np.random.default_rng(seed).binomial(N, acc, size=(draws, K))


@pytest.mark.parametrize("p_true", [0.6, 0.93])
def test_noise_p_value_is_uniform_when_every_class_has_the_same_accuracy(p_true):
    hits = _draws(np.full(K, p_true), 1000, seed=1)
    floor = noise_floor(hits, N, n_sim=400, seed=2)
    for measure in ("std", "difference", "worst", "normalized_std", "worst_fraction_mean"):
        p = floor[measure][1]
        assert p.shape == (1000,)
        # 1,000 draws: the share below 0.05 has a standard error of 0.7 points
        assert 0.03 <= np.mean(p < 0.05) <= 0.07, (measure, np.mean(p < 0.05))
        assert 0.44 <= np.mean(p < 0.5) <= 0.56, (measure, np.mean(p < 0.5))
    assert np.isnan(floor["mean"][1]).all()  # the mean is no gap measure


def test_no_gap_is_possible_when_every_class_is_at_zero():
    floor = noise_floor(np.zeros(K), N, n_sim=200)
    assert floor["std"] == (0.0, 1.0) and floor["worst"][1] == 1.0


def test_noise_floor_is_the_average_gap_of_no_gap_draws():
    hits = _draws(np.full(K, 0.6), 1000, seed=3)
    observed = discrepancy_measures(hits / N)
    floor = noise_floor(hits, N, n_sim=400, seed=4)
    # with no gap the observed std averages to the floor (both are sampling noise alone)
    assert floor["std"][0].mean() == pytest.approx(observed["std"].mean(), rel=0.05)
    # the selection bias of a minimum: the worst of 10 classes at 60% looks about 7 points worse
    assert 0.05 < 0.6 - floor["worst"][0].mean() < 0.10


def test_a_planted_gap_of_realistic_size_is_detected():
    acc = np.full(K, 0.6)
    acc[3] = 0.45  # one class 15 points behind (digits' PGD-AT gaps are 30-50 points)
    hits = _draws(acc, 1000, seed=5)
    floor = noise_floor(hits, N, n_sim=400, seed=6)
    assert np.mean(floor["worst"][1] < 0.05) > 0.7
    assert np.mean(floor["std"][1] < 0.05) > 0.6
    acc = np.linspace(0.5, 0.8, K)  # a spread of class accuracies (std 10 points)
    floor = noise_floor(_draws(acc, 1000, seed=7), N, n_sim=400, seed=8)
    assert np.mean(floor["std"][1] < 0.05) > 0.99


def test_report_discrepancy_reports_the_floor_and_bias_of_the_worst_class():
    y = np.repeat(np.arange(K), 150)
    pred = np.where(np.tile(np.arange(150), K) < 105, y, (y + 1) % K)  # every class at 70%
    report = ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
                                                   "worst_pred": pred}),
                         classes=[str(i) for i in range(K)], attacks=[])
    d = report.discrepancy("clean_acc", n_boot=1000, seed=0)
    assert d.loc["std", "value"] == 0 and d.loc["std", "p_noise"] > 0.9  # no gap at all
    assert d.loc["worst", "noise_floor"] < d.loc["mean", "value"] - 0.03
    assert d.loc["worst", "p_noise"] > 0.9
    # the bootstrap sees the minimum's downward bias: negative, and a few points in size
    assert -0.08 < d.loc["worst", "bias"] < 0
    assert np.isnan(d.loc["mean", "p_noise"])


def _runs(class_acc: np.ndarray, seeds: int, rng, n_per_class: int, seed_sd: float):
    """(labels, successes runs × N): each seed's model has its own class accuracies."""
    y = np.repeat(np.arange(len(class_acc)), n_per_class)
    runs = []
    for _ in range(seeds):
        acc = np.clip(class_acc + rng.normal(0, seed_sd, len(class_acc)), 0, 1)
        runs.append(rng.random(len(y)) < acc[y])
    return y, np.stack(runs)


def _worst(acc):  # (B, runs, K) -> (B, runs): each run's worst class
    return acc.min(axis=-1)


@pytest.mark.parametrize("shared", [False, True])
def test_hierarchical_bootstrap_is_not_liberal_without_an_effect(shared):
    rng = np.random.default_rng(11)
    base = np.array([0.3, 0.5, 0.6, 0.7, 0.8])
    y = np.repeat(np.arange(5), 60)
    pvals = []
    for i in range(200):
        # the same test points for both conditions, evaluated by different seeds' models;
        # shared: every model errs on the same hard points (one difficulty per point)
        u = rng.random(len(y))

        def runs():
            acc = [np.clip(base + rng.normal(0, 0.08, 5), 0, 1) for _ in range(5)]
            return np.stack([(u if shared else rng.random(len(y))) < a[y] for a in acc])

        reps = hierarchical_bootstrap({"a": runs(), "b": runs()}, y, _worst, n_boot=300, seed=i)
        pvals.append(bootstrap_p_value(reps["a"] - reps["b"]))
    # nominal 5%; with 200 draws (standard error 1.5 points) above 10% would be liberal
    assert np.mean(np.array(pvals) < 0.05) <= 0.10


def test_hierarchical_bootstrap_finds_a_planted_improvement():
    rng = np.random.default_rng(12)
    base = np.array([0.3, 0.5, 0.6, 0.7, 0.8])
    better = base.copy()
    better[0] = 0.5  # the worst class up by 20 points
    hits = 0
    for i in range(40):
        y, a = _runs(better, 5, rng, 60, 0.04)
        _, b = _runs(base, 5, rng, 60, 0.04)
        reps = hierarchical_bootstrap({"a": a, "b": b}, y, _worst, n_boot=300, seed=i)
        hits += bootstrap_p_value(reps["a"] - reps["b"]) < 0.05
    assert hits >= 24  # measured: 29 of 40


def test_compare_runs_on_reports_and_its_checks():
    rng = np.random.default_rng(3)
    y, a = _runs(np.linspace(0.6, 0.9, K), 3, rng, 50, 0.02)
    _, b = _runs(np.linspace(0.2, 0.9, K), 3, rng, 50, 0.02)

    def report(ok):
        pred = np.where(ok, y, (y + 1) % K)
        return ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
                                                     "worst_pred": pred}),
                           classes=[str(i) for i in range(K)], attacks=[])

    ra, rb = [report(r) for r in a], [report(r) for r in b]
    c = compare_runs(ra, rb, metric="clean_acc", measure="worst", n_boot=500)
    direct = np.mean([np.min([r[y == k].mean() for k in range(K)]) for r in a]) - np.mean(
        [np.min([r[y == k].mean() for k in range(K)]) for r in b])
    assert c.estimate == pytest.approx(direct)
    assert c.lo < c.estimate < c.hi and c.p_bootstrap < 0.05 and c.runs_a == 3
    # 3 vs 3 seeds: the verdict is an exact permutation test, whose two-sided p cannot go
    # below 2 of the C(6, 3) = 20 splits; every run of a above every run of b reaches it
    assert c.test == "permutation (two-sample)" and c.p_value == pytest.approx(0.1)
    assert c.p_min == pytest.approx(0.1) and c.n_units == 3
    assert "seeds" in c.describe() and "smallest attainable 0.1" in c.describe()
    one = compare_runs(ra, rb, metric="clean_acc", measure="worst", n_boot=200,
                       alternative="less")
    assert one.p_value == pytest.approx(1.0)  # a is better, not worse
    fixed = compare_runs(ra, rb, metric="clean_acc", fixed_class="0", n_boot=200)
    assert fixed.estimand.startswith("class 0") and fixed.estimate == pytest.approx(
        np.mean([r[y == 0].mean() for r in a]) - np.mean([r[y == 0].mean() for r in b]))
    shuffled = report(a[0])
    shuffled.predictions["y_true"] = shuffled.predictions["y_true"].to_numpy()[::-1]
    from robustfair.errors import RobustfairError
    with pytest.raises(RobustfairError, match="same test points"):
        compare_runs([shuffled], rb, metric="clean_acc")


def test_holm_and_bootstrap_p_value():
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([np.nan, 0.01])[0])
    assert bootstrap_p_value(np.arange(1, 100)) == pytest.approx(0.02)
    assert bootstrap_p_value(np.r_[-np.ones(50), np.ones(50)]) == 1.0


def test_profile_similarities_cosine_saturates_pearson_does_not():
    from robustfair.metrics import profile_similarities, profile_similarity

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(K), 150)

    def report(acc):
        pred = np.where(rng.random(len(y)) < acc[y], y, (y + 1) % K)
        return ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
                                                     "worst_pred": pred}),
                           classes=[str(i) for i in range(K)], attacks=[])

    same = np.full(K, 0.95)  # two models, no real pattern: cosine ~1, r anywhere
    sim = profile_similarities(report(same), report(same), "clean_acc", n_boot=500)
    assert sim.loc["cosine", "value"] > 0.99
    assert sim.loc["pearson", "hi"] - sim.loc["pearson", "lo"] > 0.8
    pattern = np.linspace(0.6, 0.95, K)  # a shared pattern: r high, its interval well above 0
    a, b = report(pattern), report(pattern)
    sim = profile_similarities(a, b, "clean_acc", n_boot=500)
    assert sim.loc["cosine", "value"] == pytest.approx(profile_similarity(a, b, "clean_acc"))
    assert sim.loc["pearson", "value"] > 0.8 and sim.loc["pearson", "lo"] > 0.5


# ---------------------------------------------------------------- the worst class's interval
_PROFILES = {
    "flat": np.full(10, 0.6),                                   # ten classes tied at 60%
    "tied": np.r_[np.full(3, 0.4), np.full(7, 0.8)],            # three tied at the bottom
    "single-low": np.r_[0.2, np.full(9, 0.7)],                  # one class far below
}


@pytest.mark.slow
@pytest.mark.parametrize("per_class", [54, 150])
@pytest.mark.parametrize("profile", sorted(_PROFILES))
def test_worst_row_interval_covers_the_true_worst_class(profile, per_class):
    """Through the public API: the ``worst`` row's lo/hi of ClassReport.discrepancy() cover the
    true worst-class accuracy in >= 93% of simulated audits, whatever the profile."""
    acc = _PROFILES[profile]
    k = len(acc)
    y = np.repeat(np.arange(k), per_class)
    rng = np.random.default_rng(per_class + len(profile))
    covered, draws = 0, 300
    for _ in range(draws):
        pred = np.where(rng.random(len(y)) < acc[y], y, (y + 1) % k)
        report = ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
                                                       "worst_pred": pred}),
                             classes=[str(i) for i in range(k)], attacks=[])
        d = report.discrepancy("clean_acc", n_boot=20)
        covered += d.loc["worst", "lo"] <= acc.min() <= d.loc["worst", "hi"]
    assert covered / draws >= 0.93


def test_worst_row_interval_is_the_simultaneous_wilson_bounds():
    y = np.repeat(np.arange(K), 54)
    hits = np.array([30 + 2 * c for c in range(K)])
    pred = np.where(np.tile(np.arange(54), K) < hits[y], y, (y + 1) % K)
    report = ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": pred,
                                                   "worst_pred": pred}),
                         classes=[str(i) for i in range(K)], attacks=[])
    d = report.discrepancy("clean_acc", n_boot=50)
    lo, hi = wilson_interval(hits, np.full(K, 54), 1 - 0.05 / K)
    assert d.loc["worst", "lo"] == pytest.approx(lo.min())
    assert d.loc["worst", "hi"] == pytest.approx(hi.min())
    assert d.loc["worst", "lo"] < d.loc["worst", "value"] < d.loc["worst", "hi"]


# ---------------------------------------------------------------- exact tests at few seeds
@pytest.mark.slow
@pytest.mark.parametrize("seeds", [3, 4, 5])
@pytest.mark.parametrize("paired", [False, True])
def test_exact_tests_hold_their_size_at_few_seeds(seeds, paired):
    """Under no effect, at most 5% of the verdict p-values of compare_values fall below 0.05
    (the bootstrap's own p-value rejects 8-14% here); and none below the stated floor."""
    from robustfair.metrics import compare_values

    rng = np.random.default_rng(seeds + 10 * paired)
    rejected, draws = 0, 400
    for _ in range(draws):
        shared = rng.normal(0.3, 0.05, seeds)            # matched pairs share their seed effect
        a = (shared if paired else rng.normal(0.3, 0.05, seeds)) + rng.normal(0, 0.03, seeds)
        b = (shared if paired else rng.normal(0.3, 0.05, seeds)) + rng.normal(0, 0.03, seeds)
        noise = rng.normal(0, 0.02, (40, seeds))
        c = compare_values(a, b, a + noise, b + noise, metric="robust_acc", measure="worst",
                           paired=paired, rng=rng)
        assert c.p_value >= c.p_min - 1e-12 and c.test != "hierarchical bootstrap"
        rejected += c.p_value < 0.05
    assert rejected / draws <= 0.05  # an exact test: no slack needed
