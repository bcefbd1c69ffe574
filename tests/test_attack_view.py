"""attack_view: a model's eval-mode function, faster for attacks, that never touches the model
and follows its live weights."""
import importlib
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustfair.errors import ModelError
from robustfair.models import AttackView, attack_view, build_model, list_models

from cheap_models import CHEAP

# the module (the package exports the function of the same name)
attack_view_module = importlib.import_module("robustfair.models.attack_view")

# CHEAP's small variants on 16×16 RGB images: every architecture runs there.
SIZE = 16
# Convolutions whose output feeds only a batch norm, per architecture. Pre-activation nets
# (preact_resnet18, wide_resnet, densenet121) put batch norm *before* most convolutions, so
# only a block's inner conv -> bn pair folds; lenet and mlp have no batch norm.
FOLDS = {
    "mlp": 0,
    "lenet": 0,
    "small_cnn": 4,
    "resnet18": 20,  # 17 3×3 convs (stem + 16 in blocks) + 3 projection shortcuts
    "preact_resnet18": 8,  # conv1 -> bn2 in each of the 8 blocks
    "resnet56": 7,  # depth 8: stem + one block of two convs per stage
    "wide_resnet": 3,  # depth 10: conv1 -> bn2 in each of the 3 blocks
    "vgg19_bn": 16,
    "resnext29": 30,  # 9 blocks × 3 + 3 projection shortcuts
    "densenet121": 58,  # the 1×1 bottleneck conv of each of the 6+12+24+16 dense layers
}


def with_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm parameters and running statistics, then eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
        model.train()
        for _ in range(3):
            model(torch.rand(8, 3, SIZE, SIZE) * 0.8 + 0.1)
    return model.eval()


def make(name: str, **overrides) -> nn.Module:
    kwargs = {**CHEAP[name], **overrides}
    model = build_model(name, num_classes=10, in_channels=3, image_size=SIZE, **kwargs)
    return with_statistics(model)


def logits_and_input_grad(fn, x: torch.Tensor, y: torch.Tensor):
    x = x.clone().requires_grad_(True)
    logits = fn(x)
    grad, = torch.autograd.grad(F.cross_entropy(logits, y, reduction="none").sum(), x)
    return logits.detach(), grad


def eval_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    was = model.training
    model.eval()
    try:
        return logits_and_input_grad(model, x, y)
    finally:
        model.train(was)


def assert_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> None:
    diff = (got - want).abs().max().item()
    assert diff <= rel * (1 + want.abs().max().item()), diff


def assert_same_function(view: nn.Module, model: nn.Module, x: torch.Tensor,
                         y: torch.Tensor) -> None:
    logits, grad = logits_and_input_grad(view, x, y)
    want_logits, want_grad = eval_reference(model, x, y)
    assert logits.shape == want_logits.shape and logits.is_contiguous()
    assert grad.stride() == x.stride()  # in the input's layout, whatever the view used inside
    assert_close(logits, want_logits)
    diff = (grad - want_grad).abs().max().item()
    assert diff <= 1e-4 * want_grad.abs().max().item(), diff


def test_every_registered_model_is_covered():
    assert sorted(CHEAP) == sorted(FOLDS) == list_models()


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_view_computes_the_eval_function_with_folding_and_channels_last(name):
    model = make(name)
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 10, (4,))
    view = attack_view(model, x, channels_last=True)
    assert isinstance(view, AttackView) and view.source is model
    assert view.fallback_reason is None
    expected = []
    if FOLDS[name]:
        expected.append(f"batchnorm folded into {FOLDS[name]} convolutions")
    if name != "mlp":  # an MLP has no convolution: channels_last would only cost a copy
        expected.append("channels_last")
    assert view.applied == expected
    assert_same_function(view, model, x, y)


def test_folding_and_channels_last_can_be_switched_off():
    model = make("small_cnn")
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 10, (4,))
    assert attack_view(model, x, fold_batchnorm=False, channels_last=True).applied == [
        "channels_last"]
    # every derived weight really is in channels_last strides, also the ambiguous one of a
    # one-channel input (else that layer answers in NCHW and later layers mix formats)
    grey = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    view = attack_view(grey, torch.rand(2, 1, 8, 8), channels_last=True)
    view(torch.rand(2, 1, 8, 8))
    for w in derived_weights(view):
        assert w.stride() == torch.empty_like(w, memory_format=torch.channels_last).stride()
    assert attack_view(model, x, channels_last=False).applied == [
        "batchnorm folded into 4 convolutions"]
    view = attack_view(model, x, fold_batchnorm=False, channels_last=False)
    assert view.applied == [] and view.fallback_reason is None
    assert_same_function(view, model, x, y)


def snapshot(model: nn.Module) -> dict:
    return {
        "params": [(n, p.data_ptr(), p.stride(), p.requires_grad, p.detach().clone(), p.grad)
                   for n, p in model.named_parameters()],
        "buffers": [(n, b.data_ptr(), b.stride(), b.detach().clone())
                    for n, b in model.named_buffers()],
        "modes": [(n, m.training) for n, m in model.named_modules()],
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert [row[:4] for row in before["params"]] == [row[:4] for row in after["params"]]
    assert all(torch.equal(b[4], a[4]) and a[5] is None
               for b, a in zip(before["params"], after["params"]))
    assert [row[:3] for row in before["buffers"]] == [row[:3] for row in after["buffers"]]
    assert all(torch.equal(b[3], a[3]) for b, a in zip(before["buffers"], after["buffers"]))
    assert before["modes"] == after["modes"]


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name,overrides", [("resnet18", {}),
                                            ("wide_resnet", {"dropout": 0.5})])
def test_model_is_untouched_and_view_is_eval_whatever_the_mode(name, overrides, train_mode):
    model = make(name, **overrides)
    model.train(train_mode)
    if train_mode:
        model.body.layers[0].eval()  # a mixed-mode model: every flag must come back as it was
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 10, (4,))
    before = snapshot(model)
    view = attack_view(model, x, channels_last=True)
    assert "channels_last" in view.applied
    logits, _ = logits_and_input_grad(view, x, y)
    view(x.clone().requires_grad_(True)).sum().backward()
    view.train()  # the view owns nothing: its mode cannot reach the model
    view.eval()
    view.to(torch.float64)
    assert list(view.parameters()) == [] and list(view.buffers()) == []
    assert_same_snapshot(before, snapshot(model))
    # eval semantics while the model is in train mode: running statistics, no dropout
    assert torch.equal(view(x), logits)
    assert_same_snapshot(before, snapshot(model))
    assert_same_function(view, model, x, y)


def test_example_rows_are_not_modified():
    model = make("small_cnn")
    x = torch.rand(12, 3, SIZE, SIZE)
    copy = x.clone()
    attack_view(model, x)
    assert torch.equal(x, copy) and not x.requires_grad and x.is_contiguous()


def test_backward_through_the_view_leaves_parameter_gradients_alone():
    model = make("resnet18")
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 10, (4,))
    view = attack_view(model, x)
    x = x.clone().requires_grad_(True)
    F.cross_entropy(view(x), y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    # the control: the model itself does accumulate them
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())


def derived_weights(view: AttackView) -> list:
    return [d._weight for d in view._derived]


def test_view_follows_optimizer_steps_and_load_state_dict_and_caches_otherwise():
    model = make("small_cnn")
    x, y = torch.rand(8, 3, SIZE, SIZE), torch.randint(0, 10, (8,))
    view = attack_view(model, x)
    view(x)
    count, weights = view.recomputations, derived_weights(view)
    assert len(weights) == 4
    for _ in range(3):  # nothing changed: the cached derived weights are reused
        logits_and_input_grad(view, x, y)
    assert view.recomputations == count
    assert all(a is b for a, b in zip(weights, derived_weights(view)))

    # one SGD step in train mode changes the weights and the running statistics in place
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    model.train()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    assert_same_function(view, model, x, y)
    assert view.recomputations == count + 4
    assert all(a is not b for a, b in zip(weights, derived_weights(view)))

    # other weights, normalisation and statistics, copied into the model's tensors
    other = build_model("small_cnn", num_classes=10, in_channels=3, image_size=SIZE,
                        mean=[0.2, 0.4, 0.6], std=[0.3, 0.2, 0.1], **CHEAP["small_cnn"])
    stale, _ = logits_and_input_grad(view, x, y)
    model.load_state_dict(with_statistics(other).state_dict())
    assert_same_function(view, model, x, y)
    assert not torch.allclose(view(x), stale, atol=1e-3)
    count = view.recomputations
    view(x)
    assert view.recomputations == count


def test_view_follows_replaced_tensors_and_inference_mode_first_calls():
    model = make("small_cnn")
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 10, (4,))
    view = attack_view(model, x)
    conv = model.body.features[0]
    with torch.no_grad():
        conv.weight.data = conv.weight.data * 2  # new storage, version counter unchanged
    with torch.inference_mode():  # derived weights made here must also serve autograd later
        view(x)
    assert_same_function(view, model, x, y)


class Branchy(nn.Module):
    """Data-dependent Python control flow: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * SIZE * SIZE, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        if h.mean() > 0:
            h = h * 2
        return self.fc(self.drop(h).flatten(1))


class FlatView(nn.Module):
    """``x.view(N, -1)`` on a 4×4 map with 4 channels: impossible on a channels_last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(h.view(h.size(0), -1))


class TrainBranch(nn.Module):
    """A custom (traced-through) module that reads ``self.training`` in Python."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        if self.training:
            h = h + 1.0
        return h  # a feature map, not logits


def test_python_mode_branches_are_traced_in_eval_mode_and_maps_come_back_contiguous():
    model = with_statistics(TrainBranch()).train()
    x = torch.rand(4, 3, SIZE, SIZE)
    view = attack_view(model, x, channels_last=True)
    assert view.applied == ["batchnorm folded into 1 convolution", "channels_last"]
    assert model.training and model.bn.training
    out = view(x)
    assert out.is_contiguous()
    with torch.no_grad():
        assert_close(out, model.eval()(x))


def test_untraceable_model_gets_a_plain_eval_view():
    model = with_statistics(Branchy()).train()  # in train mode: the view must still be eval
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 5, (4,))
    before = snapshot(model)
    view = attack_view(model, x)
    assert view.applied == [] and "fx cannot trace" in view.fallback_reason
    assert torch.equal(view(x), view(x))  # no dropout
    assert_same_function(view, model, x, y)
    view(x.clone().requires_grad_(True)).sum().backward()
    assert_same_snapshot(before, snapshot(model))


def test_channels_last_failure_falls_back_to_contiguous_but_still_folds():
    model = with_statistics(FlatView())
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.randint(0, 5, (4,))
    with pytest.raises(RuntimeError):  # the premise: this forward fails in channels_last
        model(x.contiguous(memory_format=torch.channels_last))
    view = attack_view(model, x)
    assert view.applied == ["batchnorm folded into 1 convolution"]
    assert "channels_last" in view.fallback_reason
    assert_same_function(view, model, x, y)


def test_flat_inputs_work():
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(32),
                          nn.Linear(32, 5))
    with torch.no_grad():
        model(torch.randn(16, 20))  # train mode: running statistics move
    x, y = torch.randn(6, 20), torch.randint(0, 5, (6,))
    before = snapshot(model)
    view = attack_view(model, x)
    assert view.applied == [] and view.fallback_reason is None
    assert_same_function(view, model, x, y)
    view(x.clone().requires_grad_(True)).sum().backward()
    assert_same_snapshot(before, snapshot(model))


def test_bad_arguments_raise_model_errors():
    model = make("small_cnn")
    with pytest.raises(ModelError, match="example"):
        attack_view(model, torch.rand(0, 3, SIZE, SIZE))
    with pytest.raises(ModelError, match="fails on the example"):
        attack_view(model, torch.rand(2, 5, SIZE, SIZE))
    with pytest.raises(ModelError, match="nn.Module"):
        attack_view(lambda t: t, torch.rand(2, 3))


@pytest.mark.parametrize("pool_to,size", [(2, 2), (2, 4), ((3, 1), 6)])
def test_adaptive_pooling_gives_the_models_outputs_and_gradients(pool_to, size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.AdaptiveAvgPool2d(pool_to),
                          nn.Flatten(), nn.LazyLinear(4))
    x = torch.rand(5, 2, size, size)
    model(x)  # materialise the lazy layer
    model.eval()
    view = attack_view(model, x)
    xg, xv = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    want, got = model(xg), view(xv)
    assert torch.allclose(got, want, atol=1e-5)
    (g_want,) = torch.autograd.grad(want.square().sum(), xg)
    (g_got,) = torch.autograd.grad(got.square().sum(), xv)
    assert torch.allclose(g_got, g_want, atol=1e-5)


def test_tracing_leaves_no_attribute_on_the_model():
    """fx stores a tensor made in forward on the module it traces; the view takes it back off
    the model and still computes the same function with it."""

    class Doubling(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc((self.conv(x) * torch.tensor(2.0)).flatten(1))

    model = Doubling().eval()
    names = set(vars(model))
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 3, (4,))
    view = attack_view(model, x, channels_last=True)
    assert set(vars(model)) == names
    assert view.applied == ["channels_last"] and view.fallback_reason is None
    assert_same_function(view, model, x, y)


@pytest.mark.parametrize("faster", ["channels_last", "contiguous"])
def test_the_layout_left_open_is_the_one_timed_faster(monkeypatch, faster):
    """``channels_last=None``: both layouts are checked, timed on the example, the faster kept."""
    timed = []

    def pass_seconds(view, example):
        timed.append((view.applied, len(example)))
        return 1.0 if ("channels_last" in view.applied) == (faster == "channels_last") else 2.0

    monkeypatch.setattr(attack_view_module, "_pass_seconds", pass_seconds)
    model = make("small_cnn")
    x, y = torch.rand(40, 3, SIZE, SIZE), torch.randint(0, 10, (40,))
    view = attack_view(model, x)
    folded = "batchnorm folded into 4 convolutions"
    assert sorted(applied for applied, _ in timed) == [[folded], [folded, "channels_last"]]
    assert view.applied == ([folded, "channels_last"] if faster == "channels_last" else [folded])
    assert view.fallback_reason is None
    assert_same_function(view, model, x[:4], y[:4])
    timed.clear()  # a layout the caller chose is not timed
    assert "channels_last" in attack_view(model, x, channels_last=True).applied
    assert "channels_last" not in attack_view(model, x, channels_last=False).applied
    assert timed == []


def test_the_layout_timing_runs_forward_passes_on_at_most_32_rows():
    rows = []
    weight = torch.rand(3 * 8 * 8, 5)

    def view(x, pause=0.0):
        rows.append((len(x), torch.is_grad_enabled()))
        time.sleep(pause)
        return x.flatten(1) @ weight

    # a slow model (15 ms a pass): a warm-up, then 2 timed forward passes, no backward pass
    seconds = attack_view_module._pass_seconds(lambda x: view(x, 0.015), torch.rand(100, 3, 8, 8))
    assert seconds >= 0.015 and rows == [(32, False)] * 3
    # a fast one: more passes, until they add up to 20 ms, at most 25
    rows.clear()
    seconds = attack_view_module._pass_seconds(view, torch.rand(5, 3, 8, 8))
    assert 0 < seconds < 0.015 and 3 < len(rows) <= 26 and set(rows) == {(5, False)}
