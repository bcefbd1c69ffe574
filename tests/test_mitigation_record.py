"""The mitigation benchmark's committed record: runs go in as they finish, and the tables come
back from the record alone (``--summarise-only``, no ``runs/``)."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustfair.metrics import ClassReport, format_p

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mitigation_comparison as mc  # noqa: E402

K = 10


def _report(seed: int, worst_acc: float) -> ClassReport:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), 30)
    acc = np.r_[worst_acc, np.full(K - 1, 0.6)]
    robust = rng.random(len(y)) < acc[y]
    pred = np.where(robust, y, (y + 1) % K)
    by = np.where(robust, -1, 0)
    import robustfair as rf

    return ClassReport(predictions=pd.DataFrame({"y_true": y, "clean_pred": y,
                                                 "autoattack_pred": pred, "autoattack_by": by,
                                                 "worst_pred": pred}),
                       classes=[str(c) for c in range(K)],
                       attacks=[rf.build_attack("autoattack", eps=0.2).settings()],
                       meta={"seed": seed})


def test_tables_are_rebuilt_from_the_record_alone(tmp_path):
    points = tmp_path / "mc_points.csv.gz"
    for seed in range(3):
        mc.record_run(points, "PGD-AT", seed, _report(seed, 0.1),
                      {"train_s": 1.0, "audit_s": 2.0, "val_worst_class": "0"})
        mc.record_run(points, "adaptive_weight (robust)", seed, _report(10 + seed, 0.4),
                      {"train_s": 1.0, "audit_s": 2.0, "val_worst_class": "3"})
    # recording a run again replaces it
    mc.record_run(points, "PGD-AT", 0, _report(0, 0.1), {"train_s": 1.0, "val_worst_class": "0"})
    frame, runs = mc.read_record(points)
    assert len(runs) == 6 and len(frame) == 6 * K * 30
    back = mc.reports_from_record(points, ["PGD-AT"], [0])["PGD-AT"][0]
    assert back.equals(_report(0, 0.1))
    out = tmp_path / "table.md"
    assert mc.main(["--summarise-only", "--points", str(points), "--out", str(out),
                    "--only", "adaptive-weight-robust", "--runs-dir", str(tmp_path / "none")]) == 0
    text = out.read_text()
    assert "Seeds finished per method: PGD-AT 3, adaptive_weight (robust) 3" in text
    table = pd.read_csv(tmp_path / "table_comparisons.csv")
    row = table[(table["family"] == "worst class rises") & (table["runs"] == "this table")].iloc[0]
    # 3 vs 3 seeds, one-sided: an exact permutation test whose floor is 1/20
    assert row["test"] == "permutation (two-sample)" and row["p_min"] == pytest.approx(0.05)
    assert row["p"] >= row["p_min"]
    assert format_p(row["p"], row["p_min"]) in text
    fixed = table[table["family"] == "fixed class rises"].iloc[0]
    assert fixed["estimand"] == "class 0 (fixed in advance)"
