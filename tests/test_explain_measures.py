"""The explain measures, each against a constructed case with a known answer or a direct computation."""
import colorsys
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.fft import dctn
from torch import nn

import robustfair as rf
from robustfair.errors import ModelError, RobustfairError
from robustfair.explain import corruptions as C
from robustfair.explain.margins import (censored_quantile, margin_analysis, minimal_eps,
                                        per_class_margins, robust_accuracy_curve)
from robustfair.explain.similarity import (class_similarity, classifier_layer, penultimate_features,
                                           permutation_spearman)
from robustfair.explain.sinks import (CIFAR100_FINE_TO_COARSE, adversarial_confusion, confusion_sinks,
                                      confusion_symmetry, sink_analysis, superclass_share)
from robustfair.explain.targeted import targeted_vulnerability



K, D = 8, 64  # classes and pixels (1×8×8) of the constructed problem
TWIN_A, TWIN_B = 3, 5


def _twin_problem(n_per_class=12, seed=0):
    """A linear model whose classes 3 and 5 have nearly the same weights, and data to match.

    Class k's images are ``0.5 + 0.3·p_k`` (plus a little noise) and the model scores class k by
    ``100·p_k · (x - 0.5)`` (confident logits, as a trained model's): p_3 and p_5 are
    0.95-cosine twins, all other directions orthogonal. So 3 and 5 are each other's only close
    competitor: each one's adversarial examples must land in the other, and their feature
    centroids must be nearest to each other.
    """
    g = torch.Generator().manual_seed(seed)
    p = torch.linalg.qr(torch.randn(D, K, generator=g))[0].T  # K orthonormal directions
    p[TWIN_B] = 0.95 * p[TWIN_A] + math.sqrt(1 - 0.95 ** 2) * p[TWIN_B]
    linear = nn.Linear(D, K)
    with torch.no_grad():
        linear.weight.copy_(100 * p)
        linear.bias.copy_(-100 * (p @ torch.full((D,), 0.5)))
    model = nn.Sequential(nn.Flatten(), linear)
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = 0.5 + 0.3 * p[y] + 0.002 * torch.randn(len(y), D, generator=g)
    return model, x.clamp(0, 1).view(-1, 1, 8, 8), y


# ----------------------------------------------------------------------------- sinks


def test_adversarial_confusion_counts_only_clean_correct_fooled_points():
    rng = np.random.default_rng(0)
    y, clean, adv = (rng.integers(0, 4, 300) for _ in range(3))
    adv[::7] = -1  # skipped points never count
    expected = np.zeros((4, 4), dtype=int)
    for t, c, a in zip(y, clean, adv):
        if c == t and a != t and a != -1:
            expected[t, a] += 1
    assert np.array_equal(adversarial_confusion(y, clean, adv, 4), expected)


def test_sinks_are_the_largest_shares_in_order():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 20, (6, 6))
    table = confusion_sinks(counts, list("abcdef"), top_k=3)
    for i, name in enumerate("abcdef"):
        row = counts[i].astype(float)
        row[i] = 0
        order = sorted((j for j in range(6) if j != i), key=lambda j: (-row[j], j))
        assert table.loc[name, "fooled"] == row.sum()
        for r in range(3):
            assert table.loc[name, f"sink_{r + 1}"] == "abcdef"[order[r]]
            assert table.loc[name, f"share_{r + 1}"] == pytest.approx(row[order[r]] / row.sum())


def test_symmetric_confusion_scores_one_and_one_way_scores_zero():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 9, (7, 7))
    sym = a + a.T
    assert confusion_symmetry(sym, basis="count").overall == pytest.approx(1.0)
    assert np.allclose(confusion_symmetry(sym, basis="count").pairs["score"], 1.0)
    # a symmetric circulant matrix has equal row sums, so its shares are symmetric too
    ring = np.array([[0, 5, 2, 2, 5], [5, 0, 5, 2, 2], [2, 5, 0, 5, 2], [2, 2, 5, 0, 5], [5, 2, 2, 5, 0]])
    assert confusion_symmetry(ring).overall == pytest.approx(1.0)
    one_way = np.triu(rng.integers(1, 9, (5, 5)), 1)
    assert confusion_symmetry(one_way).overall == pytest.approx(0.0)


def test_symmetry_score_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 10, (5, 5))
    np.fill_diagonal(counts, 0)
    s = counts / counts.sum(axis=1, keepdims=True)
    num = den = 0.0
    for i, j in itertools.combinations(range(5), 2):
        num += abs(s[i, j] - s[j, i])
        den += s[i, j] + s[j, i]
    result = confusion_symmetry(counts)
    assert result.overall == pytest.approx(1 - num / den)
    pair = result.pairs.set_index(["a", "b"]).loc[("1", "3")]
    assert pair["score"] == pytest.approx(1 - abs(s[1, 3] - s[3, 1]) / (s[1, 3] + s[3, 1]))


def test_superclass_share_and_its_chance_level():
    counts = np.array([[0, 6, 1, 1], [2, 0, 2, 0], [0, 0, 0, 4], [3, 0, 1, 0]])
    coarse = [0, 0, 1, 1]  # {0, 1} and {2, 3}
    out = superclass_share(counts, coarse)
    assert out["share"] == pytest.approx((6 + 2 + 4 + 1) / counts.sum())
    assert out["chance"] == pytest.approx(1 / 3)  # each class has 1 sibling among 3 others
    assert np.bincount(CIFAR100_FINE_TO_COARSE).tolist() == [5] * 20  # five fine classes each
    assert CIFAR100_FINE_TO_COARSE[3] == 8 and CIFAR100_FINE_TO_COARSE[98] == 14  # bear, woman


def test_twin_classes_are_each_others_sink_and_nearest_class():
    model, x, y = _twin_problem()
    report = rf.audit(model, x, y, attacks=[rf.build_attack("pgd", eps=0.02, steps=10)],
                      classes=[str(i) for i in range(K)], progress=False)
    assert report.by_class["clean_acc"].min() == 1.0
    sinks = sink_analysis(report, attack="pgd")
    assert sinks.sinks.loc[str(TWIN_A), "sink_1"] == str(TWIN_B)
    assert sinks.sinks.loc[str(TWIN_B), "sink_1"] == str(TWIN_A)
    assert sinks.sinks.loc[str(TWIN_A), "share_1"] == 1.0
    assert sinks.symmetry.pairs.iloc[0][["a", "b"]].tolist() == [str(TWIN_A), str(TWIN_B)]
    others = [k for k in range(K) if k not in (TWIN_A, TWIN_B)]
    assert sinks.counts.iloc[others].to_numpy().sum() == 0  # nobody else is close enough to flip
    grouped = sink_analysis(report, attack="worst", fine_to_coarse=[0, 1, 2, 3, 2, 3, 1, 0])
    assert grouped.superclass["share"] == 1.0  # every confusion stays within the twins' group
    assert grouped.superclass["chance"] == pytest.approx(1 / 7)

    sim = class_similarity(model, x, y, robust_acc=report.by_class["robust_acc"].to_numpy(), n_perm=500)
    assert sim.nearest.loc[str(TWIN_A), "nearest"] == str(TWIN_B)
    assert sim.nearest.loc[str(TWIN_B), "nearest"] == str(TWIN_A)
    assert sim.similarity.loc[str(TWIN_A), str(TWIN_B)] == sim.similarity.to_numpy()[~np.eye(K, dtype=bool)].max()
    # the twins are the least robust and the most crowded: a negative rank correlation
    assert sim.rho < 0


def test_targeted_vulnerability_of_a_twin_class():
    model, x, y = _twin_problem()
    tv = targeted_vulnerability(model, x, y, TWIN_B, classes=[str(i) for i in range(K)], eps=0.02, steps=10)
    assert tv.into.loc[str(TWIN_A), "success"] == 1.0
    assert tv.out_of.loc[str(TWIN_A), "success"] == 1.0
    assert tv.into.drop(str(TWIN_A))["success"].max() == 0.0
    assert tv.out_of.drop(str(TWIN_A))["success"].max() == 0.0
    assert (tv.into["n"] == 12).all() and (tv.out_of["n"] == 12).all()
    with pytest.raises(RobustfairError, match="unknown class"):
        targeted_vulnerability(model, x, y, "zebra", eps=0.02)


def test_targeted_rates_match_running_the_attack_directly():
    torch.manual_seed(0)
    model = rf.build_model("mlp", num_classes=4, in_channels=1, image_size=4, hidden=[8])
    x, y = torch.rand(40, 1, 4, 4), torch.arange(40) % 4
    attack = rf.build_attack("pgd", eps=0.3, steps=3, targeted=True)
    tv = targeted_vulnerability(model, x, y, 1, attack=attack, batch_size=7)
    pred = model(x).argmax(1)
    for src in (0, 2, 3):
        keep = (y == src) & (pred == y)
        res = attack.perturb(model, x[keep], y[keep], target=torch.ones(int(keep.sum()), dtype=torch.long))
        assert tv.into.loc[str(src), "n"] == int(keep.sum())
        if keep.any():
            assert tv.into.loc[str(src), "success"] == pytest.approx(res.success.float().mean().item())


# ----------------------------------------------------------------------------- similarity


def test_penultimate_features_are_the_input_of_the_last_linear():
    model = rf.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=4, hidden=16).eval()
    x = torch.rand(5, 1, 8, 8)
    body = model.body
    with torch.no_grad():
        direct = body.classifier[1](body.classifier[0](torch.flatten(body.features(model[0](x)), 1)))
    assert torch.allclose(penultimate_features(model, x, batch_size=2), direct, atol=1e-6)


def test_the_classifier_is_found_by_call_order_and_a_model_without_linear_fails():
    class Reordered(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(6, 3)   # registered first, called last
            self.proj = nn.Linear(16, 6)

        def forward(self, x):
            return self.head(torch.relu(self.proj(x.flatten(1))))

    m = Reordered()
    assert classifier_layer(m, torch.rand(1, 1, 4, 4)) is m.head
    conv_only = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ModelError, match="no nn.Linear"):
        penultimate_features(conv_only, torch.rand(2, 1, 4, 4))


def test_spearman_matches_scipy_and_a_perfect_correlation_has_a_small_p_value():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=12), rng.normal(size=12)
    b[3] = b[4]  # a tie
    rho, _ = permutation_spearman(a, b, n_perm=100)
    assert rho == pytest.approx(stats.spearmanr(a, b).statistic)
    rho, p = permutation_spearman(np.arange(10.0), np.exp(np.arange(10.0)), n_perm=10000)
    assert rho == pytest.approx(1.0) and p <= 2e-4
    rho, p = permutation_spearman(np.arange(10.0), -np.arange(10.0), n_perm=10000)
    assert rho == pytest.approx(-1.0) and p <= 2e-4


def test_permutation_p_value_matches_exact_enumeration_and_is_uniform_under_the_null():
    a = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0])
    b = np.array([2.0, 7.0, 1.0, 8.0, 2.5, 8.5])
    rho, p = permutation_spearman(a, b, n_perm=40000, seed=1)
    exact = np.mean([abs(stats.spearmanr(a, b[list(perm)]).statistic) >= abs(rho) - 1e-12
                     for perm in itertools.permutations(range(6))])
    assert p == pytest.approx(exact, abs=0.01)
    rng = np.random.default_rng(5)
    ps = np.array([permutation_spearman(rng.normal(size=10), rng.normal(size=10), n_perm=400, seed=i)[1]
                   for i in range(300)])
    assert abs(ps.mean() - 0.5) < 0.06
    assert 0.05 < np.mean(ps <= 0.1) < 0.16
    assert 0.4 < np.mean(ps <= 0.5) < 0.6


def test_spearman_interval_covers_the_truth_and_narrows_with_more_classes():
    from robustfair.explain.similarity import spearman_interval

    rng = np.random.default_rng(3)
    covered, widths = 0, {}
    for k in (10, 100):
        w = []
        for i in range(60):
            a = rng.normal(size=k)
            b = 0.7 * a + 0.7 * rng.normal(size=k)  # population Spearman ~0.68
            lo, hi = spearman_interval(a, b, n_boot=400, seed=i)
            w.append(hi - lo)
            covered += (k == 100) and lo <= 0.68 <= hi
        widths[k] = np.mean(w)
    assert widths[100] < 0.5 * widths[10]
    assert covered >= 50  # of 60 at 95% nominal (percentile intervals run a little short)
    assert np.isnan(spearman_interval([1.0, 2.0], [3.0, 4.0])[0])


def test_within_class_spread_is_rms_distance_over_mean_centroid_distance():
    from robustfair.explain.similarity import class_centroids, within_class_spread

    # two classes, centroids 10 apart; class 0 spread +-1, class 1 spread +-3 (1-D features)
    f = torch.tensor([[-1.0], [1.0], [7.0], [13.0]])
    y = torch.tensor([0, 0, 1, 1])
    spread = within_class_spread(f, y, class_centroids(f, y, 2))
    assert spread.tolist() == pytest.approx([0.1, 0.3])


# ----------------------------------------------------------------------------- margins


def _boundary_model(w: torch.Tensor, t: float) -> nn.Module:
    """Two classes split by the hyperplane ``w·x = t``: class 1 on the positive side."""
    linear = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[1] = w
        linear.bias.copy_(torch.tensor([0.0, -t]))
    return nn.Sequential(nn.Flatten(), linear)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_margin_equals_the_known_distance_to_a_linear_boundary(norm):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4, generator=g)  # far from the box edges
    score = x.flatten(1) @ w
    t = float(score.median())
    model = _boundary_model(w, t)
    y = (score > t).long()
    dual = w.abs().sum() if norm == "linf" else w.norm()  # distance = |w·x - t| / ||w||_dual
    true = ((score - t).abs() / dual).double()
    eps_max = float(true.max()) * 0.8                      # some points lie beyond the search
    tol = eps_max / 100
    m = minimal_eps(model, x, y, norm=norm, eps_max=eps_max, tol=tol, steps=20, batch_size=16)
    beyond = true > eps_max
    assert beyond.any() and torch.isinf(m[beyond]).all()
    inside = ~beyond & (true > 1e-4)
    err = m[inside] - true[inside]
    assert err.min() >= -1e-5            # an adversarial example is never closer than the boundary
    assert err.max() <= tol + 1e-5       # ... and the bisection gets within its tolerance
    # labels the model disagrees with: already misclassified, margin 0
    assert (minimal_eps(model, x[:5], 1 - y[:5], norm=norm, eps_max=eps_max) == 0).all()


def test_margin_summary_and_robust_accuracy_curve_match_direct_computation():
    rng = np.random.default_rng(0)
    margins = rng.exponential(0.1, 60)
    margins[::9] = np.inf
    margins[::11] = 0.0
    y = rng.integers(0, 3, 60)
    grid = [0.0, 0.05, 0.1, 0.3]
    curve = robust_accuracy_curve(margins, y, ["a", "b", "c"], grid)
    for e in grid:
        for k, name in enumerate("abc"):
            assert curve.loc[e, name] == pytest.approx(np.mean(margins[y == k] > e))
        assert curve.loc[e, "all"] == pytest.approx(np.mean(margins > e))
    table = per_class_margins(margins, y, ["a", "b", "c"])
    for k, name in enumerate("abc"):
        v = margins[y == k]
        if np.isfinite(v).all():
            assert table.loc[name, "median"] == pytest.approx(np.median(v))
        assert table.loc[name, "censored"] == pytest.approx(np.isinf(v).mean())
    finite = rng.random(11)
    for q in (0.1, 0.25, 0.5, 0.9):
        assert censored_quantile(finite, q) == pytest.approx(np.quantile(finite, q))
    assert censored_quantile(np.array([1.0, np.inf]), 0.5) == np.inf


def test_margin_analysis_curve_at_zero_is_clean_accuracy():
    model, x, y = _twin_problem(n_per_class=4)
    y = y.clone()
    y[:3] = (y[:3] + 1) % K  # three labels the model gets wrong
    result = margin_analysis(model, x, y, norm="linf", eps_max=0.05, steps=5)
    at0 = result.curve([0.0]).iloc[0]
    pred = model(x).argmax(1)
    for k in range(K):
        assert at0[str(k)] == pytest.approx((pred[y == k] == k).float().mean().item())


# ----------------------------------------------------------------------------- corruptions


@pytest.fixture(scope="module")
def digits_images():
    return rf.load_dataset("digits").test.x[:120].float() / 255


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_severity_zero_is_identity_and_distortion_grows_with_severity(name, digits_images):
    x = digits_images
    assert torch.equal(C.corrupt(x, name, 0), x)
    distortion = [float((C.corrupt(x, name, s, seed=3) - x).abs().mean()) for s in range(6)]
    assert all(b > a for a, b in zip(distortion, distortion[1:])), distortion
    out = C.corrupt(x, name, 5)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_jpeg_of_a_constant_image_is_exact():
    q = C.jpeg_quantization_table(50)[0, 0].item()  # DC step at quality 50 (16)
    for level in (128, 130, 100, 255, 0, 77):
        x = torch.full((1, 1, 8, 8), level / 255)
        out = C.jpeg(x, 50) * 255
        # only the DC coefficient 8·(v - 128) is non-zero; quantising it is the only loss
        dc = 8 * (level - 128)
        expected = min(255, max(0, round(128 + np.round(dc / q) * q / 8)))
        assert torch.all(out.round() == expected), (level, out.unique())
        if dc % q == 0:
            assert torch.all(out.round() == level)


def test_jpeg_blocks_use_the_orthonormal_dct_and_quality_100_is_nearly_lossless():
    d = C._dct_matrix(torch.float64, torch.device("cpu"))
    block = torch.randn(8, 8, dtype=torch.float64)
    assert torch.allclose(d @ block @ d.T, torch.from_numpy(dctn(block.numpy(), norm="ortho")))
    x = torch.rand(2, 3, 12, 10)  # colour, and sizes that are not multiples of 8
    assert (C.jpeg(x, 100) - x).abs().max() <= 3 / 255
    assert C.jpeg_quantization_table(100).eq(1).all()
    assert C.jpeg_quantization_table(10)[0, 0] == math.floor((16 * 500 + 50) / 100)


def test_brightness_shifts_the_hsv_value_and_blur_keeps_constant_images():
    x = torch.rand(3, 3, 2, 2)
    out = C.brightness(x, 0.2)
    for n, i, j in itertools.product(range(3), range(2), range(2)):
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        assert out[n, :, i, j].tolist() == pytest.approx(list(colorsys.hsv_to_rgb(h, s, min(1.0, v + 0.2))), abs=1e-5)
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(C.gaussian_blur(flat, 1.0), flat, atol=1e-6)


def test_corruption_accuracy_matches_direct_computation(digits_images):
    torch.manual_seed(0)
    model = rf.build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[16]).eval()
    y = rf.load_dataset("digits").test.y[:120]
    result = C.corruption_accuracy(model, digits_images, y, corruptions=["contrast", "jpeg"],
                                   severities=[1, 4], batch_size=50)
    for name, s in itertools.product(["contrast", "jpeg"], [1, 4]):
        right = model(C.corrupt(digits_images, name, s)).argmax(1) == y
        direct = pd.Series(right.float().numpy()).groupby(y.numpy()).mean()
        assert np.allclose(result.accuracy[(name, s)].to_numpy(), direct.to_numpy())
    clean = (model(digits_images).argmax(1) == y).float()
    assert np.allclose(result.clean_acc.to_numpy(), pd.Series(clean.numpy()).groupby(y.numpy()).mean())
    with pytest.raises(RobustfairError, match="unknown corruption"):
        C.corrupt(digits_images, "fog", 1)
