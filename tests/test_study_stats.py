"""The study's statistics on small hand-built results tables: the per-run frame keeps each run's
own numbers whatever the row order, and the tests between conditions say what they span."""
import numpy as np
import pandas as pd
import pytest

from robustfair.study import analysis as A

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
