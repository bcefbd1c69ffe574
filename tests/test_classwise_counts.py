"""One worst case and one per-class count: the audit's ClassReport and the trainer's per-epoch
ClassCounts / EpochStats must give the same numbers for the same predictions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from robustfair.metrics import MISSING, ClassReport, WorstCase, count_by_class, worst_case
from robustfair.training.evaluate import ClassCounts, evaluate_classwise

K = 6


def _reference_worst(y, clean, attack_cols):
    """The pointwise worst case written out point by point (a skipped ``-1`` never fools)."""
    worst, robust = [], []
    for i in range(len(y)):
        pred, ok = clean[i], clean[i] == y[i]
        if ok:
            for col in attack_cols:
                if col[i] != y[i] and col[i] != MISSING:
                    pred, ok = col[i], False
                    break
        worst.append(pred)
        robust.append(ok)
    return np.array(worst), np.array(robust)


def _predictions(seed: int, n: int = 400, empty_class: int | None = None, skipping: bool = True,
                 holes: bool = False):
    """Random audit-like predictions of two attacks, optionally a class with no points.
    ``skipping``: the second attack is skipped (-1) on points the first fooled (an audit with
    ``independent=False``); ``holes``: -1 anywhere in the first attack's column as well (the
    worst case must never count a -1 as fooled)."""
    rng = np.random.default_rng(seed)
    labels = [c for c in range(K) if c != empty_class]
    y = rng.choice(labels, n)
    clean = np.where(rng.random(n) < 0.8, y, rng.integers(0, K, n))
    first = np.where(rng.random(n) < 0.6, clean, rng.integers(0, K, n))
    second = np.where(rng.random(n) < 0.7, clean, rng.integers(0, K, n))
    fooled_first = (clean == y) & (first != y)
    if skipping:
        second = np.where(fooled_first, MISSING, second)
    if holes:
        first = np.where(rng.random(n) < 0.2, MISSING, first)
    return y, clean, [first, second]


def _report(y, clean, attacks) -> ClassReport:
    frame = pd.DataFrame({"y_true": y, "clean_pred": clean, "fgsm_pred": attacks[0],
                          "pgd_pred": attacks[1], "worst_pred": worst_case(y, clean, attacks)})
    return ClassReport(predictions=frame, classes=[f"c{i}" for i in range(K)],
                       attacks=[{"attack": "fgsm"}, {"attack": "pgd"}])


def _training_counts(y, clean, attacks, batch: int = 64) -> ClassCounts:
    """Count as evaluate_classwise does: batch by batch, on tensors."""
    counts = ClassCounts.zeros(K)
    t = [torch.as_tensor(a) for a in (y, clean, *attacks)]
    for start in range(0, len(y), batch):
        part = [a[start:start + batch] for a in t]
        counts.add(part[0], part[1], part[2:])
    return counts


@pytest.mark.parametrize("seed", range(5))
def test_worst_case_matches_a_point_by_point_reference_on_arrays_and_tensors(seed):
    y, clean, attacks = _predictions(seed, holes=True)
    want_pred, want_robust = _reference_worst(y, clean, attacks)
    assert np.array_equal(worst_case(y, clean, attacks), want_pred)
    wc = WorstCase(torch.as_tensor(y), torch.as_tensor(clean))
    for a in attacks:
        wc.add(torch.as_tensor(a))
    assert torch.equal(wc.pred, torch.as_tensor(want_pred))
    assert torch.equal(wc.robust, torch.as_tensor(want_robust))


def test_count_by_class_is_the_same_on_arrays_and_tensors():
    y, clean, _ = _predictions(0)
    mask = clean == y
    want = np.array([np.sum(mask & (y == c)) for c in range(K)])
    assert count_by_class(y, mask, K).tolist() == want.tolist()
    got = count_by_class(torch.as_tensor(y), torch.as_tensor(mask), K)
    assert got.dtype == torch.long and got.tolist() == want.tolist()
    assert count_by_class(y, None, K).tolist() == np.bincount(y, minlength=K).tolist()


@pytest.mark.parametrize("seed,empty_class,skipping", [(0, None, False), (1, None, True), (2, 3, False)])
def test_class_report_and_training_counts_agree_on_the_same_predictions(seed, empty_class, skipping):
    y, clean, attacks = _predictions(seed, empty_class=empty_class, skipping=skipping)
    report = _report(y, clean, attacks)
    counts = _training_counts(y, clean, attacks)
    stats = counts.stats(epoch=1)
    by_class = report.by_class
    assert counts.n.tolist() == by_class["n"].tolist()
    present = counts.n > 0
    for name, got in (("clean_acc", stats.clean_acc), ("robust_acc", stats.robust_acc)):
        want = torch.tensor(by_class[name].to_numpy(), dtype=torch.float32)
        assert torch.allclose(got[present], want[present]), name
        assert torch.isnan(want[~present]).all() and (got[~present] == 0).all()
    # boundary error = correct clean, wrong under attack; broken_by counts those points by the
    # attack that broke them first
    broken = report.broken_by()
    assert counts.robust.tolist() == broken["robust"].tolist()
    assert (counts.clean - counts.robust).tolist() == (broken["fgsm"] + broken["pgd"]).tolist()
    assert torch.allclose(stats.boundary_error * counts.n, (counts.clean - counts.robust).float(),
                          atol=1e-4)
    assert torch.allclose(stats.natural_error, 1 - stats.clean_acc)
    # the totals the trainer logs are the report's overall numbers
    overall = report.overall
    assert int(counts.clean.sum()) / len(y) == pytest.approx(overall["clean_acc"])
    assert int(counts.robust.sum()) / len(y) == pytest.approx(overall["robust_acc"])


def test_evaluate_classwise_counts_the_models_own_predictions():
    """eps = 0: the validation counts are those of the clean predictions, whatever the batching."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, K))
    x = torch.randint(0, 256, (90, 1, 4, 4), dtype=torch.uint8)
    y = torch.randint(0, K, (90,))
    with torch.no_grad():
        clean = model(x.float() / 255).argmax(1)
    counts = evaluate_classwise(model, x, y, num_classes=K, eps=0.0, norm="linf", steps=1,
                                alpha=0.0, batch_size=32)
    report = _report(y.numpy(), clean.numpy(), [clean.numpy(), clean.numpy()])
    assert counts.n.tolist() == report.by_class["n"].tolist()
    hits = (report.by_class["clean_acc"] * report.by_class["n"]).fillna(0).round().astype(int)
    assert counts.clean.tolist() == hits.tolist() == counts.robust.tolist()
    assert counts.n.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_counting_stays_on_the_device():
    y, clean, attacks = _predictions(0)
    dev = torch.device("cuda")
    counts = ClassCounts.zeros(K, dev)
    counts.add(*(torch.as_tensor(a, device=dev) for a in (y, clean)),
               [torch.as_tensor(a, device=dev) for a in attacks])
    assert counts.robust.device.type == "cuda"
    assert counts.robust.cpu().tolist() == _training_counts(y, clean, attacks).robust.tolist()
