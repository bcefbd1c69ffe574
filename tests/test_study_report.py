"""Study tables, analysis and report, on a study directory of synthetic runs whose per-class
accuracies are known exactly (no training): each number is checked against a direct
computation from the predictions the test wrote."""
import importlib.util
import json
import math
import re
import textwrap
import zlib
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustfair.cli import main
from robustfair.metrics import ClassReport
from robustfair.metrics.report import worst_case
from robustfair.study import analysis as A
from robustfair.study import universality as U
from robustfair.study.grid import expand
from robustfair.study.report import build_report
from robustfair.study.spec import parse_spec
from robustfair.study.store import StudyStore
from robustfair.study.table import load_tables
from robustfair.training.trainer import CSV_COLUMNS

from chromium import CHROMIUM, SKIP_REASON, check_page

K, PER_CLASS = 10, 40
SPEC = """\
name: synthetic
grid:
  model: [mlp, small_cnn]
  optimizer: [sgd, adam]
  eps: [0.1, 0.2]
  seed: [0, 1]
variants:
  - {objective: [standard, pgd_at]}
  - {objective: pgd_at, mitigation: {name: class_weight, weights: {"3": 5}}}
fixed:
  dataset: digits
  epochs: 3
evaluation:
  n: 400
  attacks:
    pgd20: {attack: pgd, steps: 20}
"""

# one run: the cheapest study that still has a report
SINGLE = """\
name: single
grid:
  seed: [0]
fixed: {dataset: digits, epochs: 2, eps: 0.1}
evaluation: {attacks: {pgd20: {attack: pgd, steps: 20}}}
"""


def _classes(dataset: str) -> list[str]:
    # a second data set with other, fewer classes, to check that data sets are kept apart
    return [str(i) for i in range(K)] if dataset == "digits" else ["w", "x", "y", "z"]


def _profile(train: dict) -> tuple[np.ndarray, np.ndarray]:
    """Known per-class clean and robust accuracy of a synthetic run."""
    # a stable seed per run (Python's hash() of strings changes from process to process)
    rng = np.random.default_rng(zlib.crc32(json.dumps(
        [train["model"], train["optimizer"], train["eps"], train["seed"], train["objective"],
         train["dataset"], train["mitigations"]]).encode()))
    K = len(_classes(train["dataset"]))
    base = np.linspace(0.95, 0.6, K)  # class 0 easiest, class 9 hardest
    clean = np.clip(base + rng.normal(0, 0.03, K), 0.05, 1)
    if train["objective"] == "standard":
        robust = clean * 0.05
    else:
        robust = clean * np.clip(np.linspace(0.7, 0.3, K) - train["eps"] + rng.normal(0, 0.03, K), 0.05, 1)
    if train["mitigations"]:
        robust[3] = min(clean[3], robust[3] + 0.15)
    # round to whole points so that the counts are exact
    return np.round(clean * PER_CLASS) / PER_CLASS, np.round(robust * PER_CLASS) / PER_CLASS


def _report(clean: np.ndarray, robust: np.ndarray, classes: list[str]) -> ClassReport:
    K = len(classes)
    y = np.repeat(np.arange(K), PER_CLASS)
    clean_pred, attack_pred = y.copy(), y.copy()
    for c in range(K):
        idx = np.where(y == c)[0]
        n_clean, n_robust = int(round(clean[c] * PER_CLASS)), int(round(robust[c] * PER_CLASS))
        wrong = (c + 1) % K if c % 2 == 0 else (c + 3) % K  # a fixed "confuser" per class
        clean_pred[idx[n_clean:]] = wrong
        attack_pred[idx[n_robust:]] = wrong
    preds = pd.DataFrame({"y_true": y, "clean_pred": clean_pred, "pgd20_pred": attack_pred,
                          "worst_pred": worst_case(y, clean_pred, [attack_pred])})
    return ClassReport(predictions=preds, classes=classes, attacks=[{"attack": "pgd", "eps": 0.1}])


def _epochs_csv(clean: np.ndarray, robust: np.ndarray, epochs: int, classes: list[str]) -> str:
    rows = []
    for e in range(1, epochs + 1):
        f = e / epochs
        for c, name in enumerate(classes):
            rows.append({"epoch": e, "scope": "class", "class": name, "n": 13,
                         "clean_acc": clean[c] * f, "robust_acc": robust[c] * f})
        rows.append({"epoch": e, "scope": "epoch", "class": "", "n": 130, "clean_acc": clean.mean() * f,
                     "robust_acc": robust.mean() * f, "lr": 0.1, "worst_class": str(int(np.argmin(robust)))})
    return pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(index=False)


def make_study(root, spec_text=SPEC):
    spec = parse_spec(spec_text, source="synthetic.yaml")
    runs = expand(spec)
    store = StudyStore(root)
    store.prepare(spec.text, spec.name, runs, description=spec.description)
    truth = {}
    for run in runs:
        clean, robust = _profile(run.config["train"])
        truth[run.key] = (clean, robust)
        store.write_config(run.key, run.config)
        store.train_dir(run.key).mkdir(parents=True)
        classes = _classes(run.config["train"]["dataset"])
        store.epochs_path(run.key).write_text(_epochs_csv(clean, robust, run.config["train"]["epochs"], classes))
        _report(clean, robust, classes).to_json(store.report_path(run.key))
        store.mark_done(run.key, {})
    return runs, truth


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    runs, truth = make_study(root)
    return root, runs, truth


@pytest.fixture(scope="module")
def tables(study):
    return load_tables(study[0])


@pytest.fixture(scope="module")
def data(tables):
    return A.StudyData(tables.results)


# ------------------------------------------------------------------------------ table
def test_results_table_is_tidy_and_matches_the_predictions(study, tables):
    root, runs, truth = study
    results = tables.results
    measures = ["clean_acc", "pgd20_acc", "robust_acc", "clean_acc_deviation", "robust_acc_deviation"]
    assert len(results) == len(runs) * K * len(measures)
    assert not results.duplicated(["run", "class", "measure"]).any()
    for run in runs[:: 7]:
        clean, robust = truth[run.key]
        rows = results[results["run"] == run.key].set_index(["measure", "class_index"])["value"]
        np.testing.assert_allclose([rows[("clean_acc", c)] for c in range(K)], clean)
        np.testing.assert_allclose([rows[("robust_acc", c)] for c in range(K)], robust)
        np.testing.assert_allclose([rows[("robust_acc_deviation", c)] for c in range(K)], robust - robust.mean())
        one = results[results["run"] == run.key].iloc[0]
        train = run.config["train"]
        assert (one["model"], one["optimizer"], one["eps"], one["seed"], one["objective"]) == (
            train["model"], train["optimizer"], train["eps"], train["seed"], train["objective"])
        assert one["mitigation"] == ("class_weight(weights={3=5})" if train["mitigations"] else "none")
    # Wilson interval, from its formula
    row = results[(results["measure"] == "robust_acc")].iloc[5]
    p, n, z = row["value"], row["n"], 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert row["lo"] == pytest.approx(centre - half) and row["hi"] == pytest.approx(centre + half)


def test_epochs_table_keeps_class_names_and_config(study, tables):
    root, runs, _ = study
    epochs = tables.epochs
    assert len(epochs) == len(runs) * 3 * (K + 1)
    assert set(epochs.loc[epochs["scope"] == "class", "class"]) == {str(c) for c in range(K)}
    assert {"lr", "lr_epoch", "model", "seed", "epoch", "worst_class"} <= set(epochs.columns)


def test_table_cli_writes_csv_and_parquet_readable_by_pandas_and_duckdb(study, capsys):
    root, runs, truth = study
    assert main(["study", "table", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"from {len(runs)} of {len(runs)} runs" in out
    csv = pd.read_csv(root / "results.csv", dtype={"class": str})
    assert len(csv) == len(runs) * K * 5
    # runs.csv: one row per run, its own numbers (checked against the known truth), intervals
    per_run = pd.read_csv(root / "runs.csv", dtype={"robust_worst_class": str})
    assert len(per_run) == len(runs) and per_run["run"].is_unique
    assert (per_run["keep"] == "last").all()
    for r in runs[:6]:
        row = per_run[per_run["run"] == r.key].iloc[0]
        clean, robust = truth[r.key]
        assert row["robust_worst"] == pytest.approx(robust.min())
        assert row["robust_std"] == pytest.approx(robust.std())
        assert row["clean_normalized_std"] == pytest.approx(clean.std() / clean.mean())
        assert row["robust_worst_class"].split("/")[0] == str(int(np.argmin(robust)))
        # percentile intervals: the mean's contains the estimate; those of biased measures
        # (a std near 0 can only grow under resampling) need not
        assert row["robust_mean_lo"] <= row["robust_mean"] <= row["robust_mean_hi"]
        for m in ("worst", "std", "normalized_std", "worst_fraction_mean"):
            assert row[f"robust_{m}_lo"] <= row[f"robust_{m}_hi"]
        assert 0 < row["robust_p_noise"] <= 1
    if importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed: Parquet not checked (pip install 'robustfair[parquet]')")
    parquet = pd.read_parquet(root / "results.parquet")
    pd.testing.assert_frame_equal(parquet.astype({"class": str}).reset_index(drop=True),
                                  csv.astype({"class": str}), check_dtype=False)
    if importlib.util.find_spec("duckdb") is not None:
        import duckdb

        got = duckdb.sql(f"select model, avg(value) as v from '{root / 'results.parquet'}' "
                         "where measure = 'robust_acc' group by model order by model").df()
        want = parquet[parquet["measure"] == "robust_acc"].groupby("model")["value"].mean()
        np.testing.assert_allclose(got["v"].to_numpy(), want.sort_index().to_numpy())


def test_unfinished_runs_are_left_out(tmp_path):
    runs, _ = make_study(tmp_path, SPEC.replace("eps: [0.1, 0.2]", "eps: [0.1]"))
    (StudyStore(tmp_path).run_dir(runs[0].key) / "done").unlink()
    tables = load_tables(tmp_path)
    assert tables.missing == [runs[0].key]
    assert runs[0].key not in set(tables.results["run"]) and tables.results["run"].nunique() == len(runs) - 1


# ------------------------------------------------------------------------------ analysis
def _cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_cosines_across_architectures_are_matched_pairs(study, data):
    root, runs, truth = study
    pairs = U.matched_cosines(data, ["model"])
    # every run has exactly one partner: the same settings with the other model
    assert len(pairs) == len(runs) // 2
    by_key = {r.key: r for r in runs}
    direct = []
    for row in pairs.itertuples():
        a, b = by_key[row.a].config["train"], by_key[row.b].config["train"]
        assert {a["model"], b["model"]} == {"mlp", "small_cnn"}
        assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}
        which = 0 if a["objective"] == "standard" else 1
        direct.append(_cos(truth[row.a][which], truth[row.b][which]))
    np.testing.assert_allclose(pairs["cos"], direct)
    u = U.universality(data)
    arch = [s for s in u.similarities if s.across == "architectures" and s.objective == "pgd_at"][0]
    chosen = [d for d, o in zip(direct, pairs["objective"]) if o == "pgd_at"]
    assert arch.lo == pytest.approx(min(chosen)) and arch.hi == pytest.approx(max(chosen))
    assert {s.across for s in u.similarities} == {"architectures", "hyper-parameters", "seeds"}


def test_mitigation_effect_is_the_mean_over_seeds_difference(study, data):
    root, runs, truth = study
    effects = A.mitigation_effects(data)
    row = effects[(effects["method"] == "pgd_at + class_weight(weights={3=5})")
                  & (effects["context"] == "model=mlp, eps=0.1, optimizer=sgd")].iloc[0]
    assert row["baseline"] == "pgd_at" and row["seeds"] == 2

    def worst(mitigated):
        return [truth[r.key][1].min() for r in runs
                if r.config["train"]["objective"] == "pgd_at" and r.config["train"]["model"] == "mlp"
                and r.config["train"]["optimizer"] == "sgd" and r.config["train"]["eps"] == 0.1
                and bool(r.config["train"]["mitigations"]) == mitigated]

    assert row["robust_worst"] == pytest.approx(np.mean(worst(True)))
    assert row["robust_worst_sd"] == pytest.approx(np.std(worst(True), ddof=1))
    assert row["robust_worst_change"] == pytest.approx(np.mean(worst(True)) - np.mean(worst(False)))


def test_training_gap_compares_matched_standard_and_adversarial_runs(study, data):
    root, runs, truth = study
    gap = A.training_gap(data)
    mlp = gap[(gap["model"] == "mlp") & (gap["objective"] == "pgd_at")].iloc[0]
    std_clean = [truth[r.key][0].std() for r in runs if r.config["train"]["objective"] == "standard"
                 and r.config["train"]["model"] == "mlp"]
    at_robust = [truth[r.key][1].std() for r in runs if r.config["train"]["objective"] == "pgd_at"
                 and not r.config["train"]["mitigations"] and r.config["train"]["model"] == "mlp"]
    assert mlp["pairs"] == len(std_clean) == len(at_robust)
    assert mlp["std_standard_clean"] == pytest.approx(np.mean(std_clean))
    assert mlp["std_at_robust"] == pytest.approx(np.mean(at_robust))


def test_top_confusions_with_wilson_intervals():
    m = pd.DataFrame([[30, 10, 0], [2, 38, 0], [0, 20, 20]], index=list("abc"), columns=list("abc"))
    top = A.top_confusions(m, k=2)
    assert [(t["true"], t["pred"], t["count"], t["total"]) for t in top] == [("c", "b", 20, 40), ("a", "b", 10, 40)]
    assert top[0]["lo"] < 0.5 < top[0]["hi"]


# ------------------------------------------------------------------------------ report
@pytest.fixture(scope="module")
def report(study):
    return build_report(study[0])


@pytest.mark.slow  # the whole report of a 48-run synthetic study
def test_report_has_every_figure_and_the_summary_numbers(study, data, report):
    root, runs, truth = study
    assert report.skipped == {}
    assert set(report.figures) == {"classwise", "deviation", "similarity_architectures",
                                   "similarity_hparams", "eps", "epochs", "tradeoff", "confusion"}
    for path in report.figures.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100
    page = report.html.read_text()
    assert page.count("<img ") == len(report.figures)
    assert page.count("data:image/png;base64,") == len(report.figures)
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    arch = [s for s in U.universality(data).similarities
            if s.across == "architectures" and s.objective == "pgd_at"][0]
    assert f"{arch.lo:.3f}–{arch.hi:.3f}" in page
    assert "<b>pgd_at + class_weight(weights={3=5})</b> minus pgd_at, worst-class robust" in page
    assert "Holm-adjusted p" in page and "seeds and test points" in page
    # the gap question is asked on the same metric, with a test
    assert "Compared on the SAME metric" in page and "matched pairs and test points" in page
    assert "centred (Pearson r" in page
    # the synthetic confuser of class 9 (odd) is class 2
    assert "9 → 2" in page


@pytest.mark.slow  # the whole report of a 48-run synthetic study
def test_comparisons_csv_holds_the_numbers_the_report_prints(study, report):
    from robustfair.metrics import format_p
    from robustfair.metrics.measures import MEASURES, UNITLESS

    root, _, _ = study
    assert main(["study", "table", str(root)]) == 0
    table = pd.read_csv(root / "comparisons.csv")
    assert {"comparison", "measure", "estimate", "lo", "hi", "p", "test", "n_units"} <= set(table)
    assert set(table["family"]) >= {"training gap", "mitigation: worst class rises"}
    page = report.html.read_text()
    for row in table.itertuples():
        unitless = row.measure in MEASURES and MEASURES[row.measure].unit == UNITLESS
        scale, unit = (1, "") if unitless else (100, " points")
        digits = 3 if scale == 1 else 1
        shown = (f"{scale * row.estimate:+.{digits}f}{unit} [{scale * row.lo:+.{digits}f}, "
                 f"{scale * row.hi:+.{digits}f}]")
        assert shown in page, shown
        p_text = format_p(row.p, row.p_min if row.test != "hierarchical bootstrap" else None)
        assert p_text.replace("<", "&lt;") in page
        # exact tests below 10 units, and never a p-value below what the design can give
        assert (row.test != "hierarchical bootstrap") == (row.n_units < 10)
        assert row.p >= row.p_min - 1e-12


def test_report_skips_what_the_study_lacks(tmp_path, capsys):
    make_study(tmp_path, SINGLE)
    assert main(["study", "report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("report.html")
    assert "not drawn: similarity_architectures: the study has one architecture" in captured.err
    assert "not drawn: eps: eps is not an axis of the study" in captured.err
    page = (tmp_path / "report" / "report.html").read_text()
    assert "universality is not measured" in page and "compares no mitigation" in page


@pytest.mark.slow  # a second study, trained and reported
def test_data_sets_with_different_classes_are_kept_apart(tmp_path):
    runs, truth = make_study(tmp_path, textwrap.dedent("""\
        name: two
        grid:
          dataset: [digits, gaussian]
          model: [mlp, small_cnn]
          objective: [standard, pgd_at]
        fixed: {epochs: 2, eps: 0.1}
        evaluation: {attacks: {pgd20: {attack: pgd, steps: 20}}}
        """))
    data = A.StudyData(load_tables(tmp_path).results)
    sims = U.universality(data).similarities
    assert {(s.dataset, s.objective) for s in sims} == {(d, o) for d in ("digits", "gaussian")
                                                        for o in ("standard", "pgd_at")}
    for s in sims:  # one pair per data set and objective, computed on that data set's classes
        (a,) = [r for r in runs if r.config["train"]["dataset"] == s.dataset
                and r.config["train"]["objective"] == s.objective and r.config["train"]["model"] == "mlp"]
        (b,) = [r for r in runs if r.config["train"]["dataset"] == s.dataset
                and r.config["train"]["objective"] == s.objective and r.config["train"]["model"] == "small_cnn"]
        which = 0 if s.objective == "standard" else 1
        assert s.values == [pytest.approx(_cos(truth[a.key][which], truth[b.key][which]))]
    report = build_report(tmp_path)
    assert {"classwise", "deviation", "similarity_architectures", "confusion"} <= set(report.figures)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", report.html.read_text())
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)


def test_report_of_a_directory_that_is_no_study(tmp_path, capsys):
    assert main(["study", "report", str(tmp_path)]) == 2
    assert "is not a study directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------ browser
@pytest.mark.slow  # the whole report of a 48-run synthetic study, in Chromium
@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
@pytest.mark.parametrize("width", [1280, 640])
def test_report_renders_in_headless_chromium(report, tmp_path, width):
    result = check_page(report.html, tmp_path, width)
    assert result["images"] == len(report.figures) and result["broken"] == 0
    assert result["scrollWidth"] <= result["innerWidth"], result


def test_an_explanation_saved_in_the_study_is_folded_into_the_report(tmp_path):
    root = tmp_path / "study"
    make_study(root, SINGLE)
    where = root / "explain" / "at-model"
    where.mkdir(parents=True)
    findings = ["Least robust class under PGD: 8 (1.9% robust, mean 50.5%).",
                "Class 8's nearest class is 1 <tie>."]
    (where / "explain.json").write_text(json.dumps(
        {"findings": findings, "meta": {"checkpoint": "runs/at/model.safetensors"}}))
    Image.new("RGB", (4, 3), "white").save(where / "margins.png")
    (root / "explain" / "broken").mkdir()
    (root / "explain" / "broken" / "explain.json").write_text("{not json")

    page = build_report(root).html.read_text()
    assert "Why some classes are less robust" in page
    assert findings[0] in page and "Class 8&#39;s nearest class is 1 &lt;tie&gt;." in page
    assert "runs/at/model.safetensors (explain/at-model)" in page
    assert 'alt="margins.png"' in page
    assert "explain/broken/explain.json is unreadable" in page


class _Outline(HTMLParser):
    """The headings (tag, id, text) and the tags opened but never closed, of a page."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.headings, self.open, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)
        if tag in ("h1", "h2", "h3"):
            self._in = [tag, dict(attrs).get("id"), ""]

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open[-3:])
        self.open.pop()
        if self._in and tag == self._in[0]:
            self.headings.append(tuple(self._in))
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._in[2] += data


@pytest.mark.slow  # the whole report of a 48-run synthetic study
def test_report_page_comes_from_its_template_with_every_section(report):
    page = report.html.read_text()
    outline = _Outline()
    outline.feed(page)
    assert outline.open == []  # every tag closed, in order (the asserts in handle_endtag)
    ids = [i for _, i, _ in outline.headings if i]
    assert ids == ["summary", "universality", "explanation", "mitigation", "configurations",
                   *[f"figure-{name}" for name in report.figures]]
    assert outline.headings[0] == ("h1", None, "Study: synthetic")
    # the figures' titles and captions, from the figure builders, under their headings
    titles = [t for tag, i, t in outline.headings if i and i.startswith("figure-")]
    assert titles[0] == "Clean and robust accuracy per class"
    assert page.count("<figcaption>") == len(report.figures)


def test_report_escapes_what_the_user_wrote(tmp_path, monkeypatch):
    from robustfair.study import report as report_module

    rendered = {}
    real = report_module.render

    def spy(template, **context):
        rendered[template] = context
        return real(template, **context)

    monkeypatch.setattr(report_module, "render", spy)
    make_study(tmp_path, textwrap.dedent("""\
        name: "x<script>alert(1)</script>"
        description: "a & b <i>c</i> 'q'"
        grid:
          seed: [0]
        fixed: {dataset: digits, epochs: 2, eps: 0.1}
        evaluation: {attacks: {pgd20: {attack: pgd, steps: 20}}}
        """))
    page = build_report(tmp_path).html.read_text()
    assert list(rendered) == ["study_report.html.j2"]  # one page, from the template
    assert rendered["study_report.html.j2"]["name"] == "x<script>alert(1)</script>"  # plain text in
    assert "<script>" not in page and "<i>" not in page
    assert "Study: x&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b &lt;i&gt;c&lt;/i&gt; &#39;q&#39;" in page
    outline = _Outline()
    outline.feed(page)
    assert outline.open == []


@pytest.mark.slow  # the whole report of a 48-run synthetic study
def test_a_study_without_explanations_has_no_explain_section(report):
    assert "Why some classes are less robust" not in report.html.read_text()
