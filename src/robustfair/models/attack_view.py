"""A faster stand-in for a model's eval-mode function, for attacks: ``attack_view(model, x)``.

Attacks (and adversarial training's inner attack) run many forward and backward passes that
need input gradients only, always in eval mode. Two rewrites, useful on every device, make
them cheaper without changing the function:

- in eval mode a batch norm right after a convolution is a fixed per-channel affine map, so
  it is folded into the convolution's weight and bias;
- convolutions run in channels_last memory format (the faster layout for cuDNN, and often for
  oneDNN: where the choice is left to the view, it times both on the example and keeps the
  faster).

The view never changes the model. It is an fx rewrite of the traced model that reads the
model's *live* tensors on every call: derived convolution weights (folded and/or in
channels_last) are cached and recomputed only when a source tensor changed (its storage, or
its ``_version``, which every in-place write such as an optimizer step or ``load_state_dict``
bumps), so one view stays exact across a training run; everything else is read from the
model's own modules at call time, detached, so a backward pass gives input gradients only.
Batch norm and dropout are written in their eval form; any other module whose behaviour may
depend on its mode is switched to eval for its own call. The view owns no parameters, buffers
or sub-modules, so ``view.train()`` or ``view.to()`` never reach the model; replacing a
sub-module of the model (rather than its tensors) needs a new view.

Every view is checked once when it is built, on the first rows of ``example``: if it fails or
its outputs or input gradients differ from the model's, it falls back step by step (no
folding, then no channels_last, then a plain call of the model in eval mode).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ModelError
from ._view_check import outputs_and_grad, short_error, why_not_same

__all__ = ["AttackView", "attack_view"]

# rows of `example` used to check a view: enough to catch a wrong layout, cheap for big nets
_CHECK_ROWS = 8
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# identity in eval mode
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
# torch.nn leaf modules without state whose output does not depend on train/eval mode: the
# view calls the model's own instance. Anything else unknown gets the slow, safe wrapper.
_MODE_FREE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softmax,
    nn.LogSoftmax, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.ZeroPad2d, nn.ConstantPad2d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _has_hooks(module: nn.Module) -> bool:
    """Hooks (e.g. the old ``weight_norm``) may recompute weights: such modules must be called."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


@contextlib.contextmanager
def _eval_modes(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Set ``training = False`` on exactly these modules, then restore each one's own flag."""
    modes = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, was_training in zip(modules, modes):
            m.training = was_training


class _DerivedConv(nn.Module):
    """A convolution run with cached weights derived from the live conv (and batch norm).

    Folding: ``w' = w * s``, ``b' = (b - running_mean) * s + beta`` per output channel, with
    ``s = gamma / sqrt(running_var + eps)`` (``gamma = 1, beta = 0`` without affine).
    """

    def __init__(self, conv: nn.Module, bn: nn.Module | None, channels_last: bool) -> None:
        super().__init__()
        # plain attributes, not sub-modules: nothing done to this wrapper may reach the model
        object.__setattr__(self, "conv", conv)
        object.__setattr__(self, "bn", bn)
        self.channels_last = channels_last
        self.recomputations = 0
        self._stamp: tuple | None = None
        self._weight: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None
        # detached aliases of the sources of the cached weights: they keep the old storages
        # alive, so a new tensor can never turn up at a cached address
        self._held: tuple = ()

    def _recompute(self, sources: tuple[torch.Tensor | None, ...], stamp: tuple) -> None:
        # outside inference mode so the cache also serves later calls that need autograd
        with torch.inference_mode(False), torch.no_grad():
            held = tuple(_detached(t) for t in sources)
            weight, bias = held[0], held[1]
            if self.bn is not None:
                bn_weight, bn_bias, mean, var = held[2:]
                scale = torch.rsqrt(var + self.bn.eps)
                if bn_weight is not None:
                    scale = bn_weight * scale
                shift = -mean if bias is None else bias - mean
                bias = shift * scale if bn_bias is None else shift * scale + bn_bias
                weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
                weight, bias = weight.to(held[0].dtype), bias.to(held[0].dtype)
            if self.channels_last and weight.dim() == 4:
                # an explicit copy: .contiguous() keeps the old strides when the shape makes
                # them ambiguous (one input channel), and a 1-channel conv then answers in
                # NCHW, so every later layer pays for mixing the two formats
                weight = torch.empty_like(weight, memory_format=torch.channels_last).copy_(weight)
        self._weight, self._bias, self._held, self._stamp = weight, bias, held, stamp
        self.recomputations += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.conv, self.bn
        sources = (conv.weight, conv.bias)
        if bn is not None:
            sources += (bn.weight, bn.bias, bn.running_mean, bn.running_var)
        stamp = tuple(None if t is None else (t.data_ptr(), t._version) for t in sources)
        if bn is not None:
            stamp += (bn.eps,)
        if stamp != self._stamp:
            self._recompute(sources, stamp)
        return conv._conv_forward(x, self._weight, self._bias)

    def extra_repr(self) -> str:
        return f"{self.conv!r}, folded={self.bn is not None}, channels_last={self.channels_last}"


class _Live(nn.Module):
    """``fn(owner, *args)`` with the model's ``owner`` (a module, or a module and an attribute
    name) read at call time, not held as a sub-module: nothing done to the view reaches it."""

    def __init__(self, fn: Callable[..., Any], owner: Any) -> None:
        super().__init__()
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "fn", fn)

    def forward(self, *args: Any) -> Any:
        return self.fn(self.owner, *args)


def _linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The model's linear layer with its live weights, detached (no parameter gradients)."""
    return F.linear(x, linear.weight.detach(), _detached(linear.bias))


def _eval_batch_norm(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's batch norm in its eval form, live and detached (never updates statistics)."""
    # as nn.BatchNorm in eval mode: batch statistics only when no running ones are kept
    batch_stats = bn.running_mean is None and bn.running_var is None
    return F.batch_norm(x, None if batch_stats else bn.running_mean,
                        None if batch_stats else bn.running_var,
                        _detached(bn.weight), _detached(bn.bias), batch_stats, 0.0, bn.eps)


def _attribute(owner_and_name: tuple[Any, str]) -> Any:
    """A tensor attribute read from its owner at call time (``model.to()`` replaces buffers)."""
    value = getattr(*owner_and_name)
    return value.detach() if isinstance(value, torch.Tensor) else value


class _EvalCall(nn.Module):
    """A module called itself, in eval mode for the call, its parameters detached
    (``detach=False``: as they are, for the rare module that fails on substituted ones)."""

    def __init__(self, module: nn.Module, detach: bool = True) -> None:
        super().__init__()
        object.__setattr__(self, "module", module)
        self._modules_to_switch = list(module.modules())
        self._detach = detach and any(True for _ in module.parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with _eval_modes(self._modules_to_switch):
            if not self._detach:
                return self.module(*args, **kwargs)
            params = {name: p.detach() for name, p in self.module.named_parameters()}
            return torch.func.functional_call(self.module, params, args, kwargs)


class _ToChannelsLast(torch.autograd.Function):
    """``x`` in channels_last; its gradient comes back in ``x``'s own layout.

    Plain ``x.contiguous(memory_format=...)`` would hand ``torch.autograd.grad`` callers a
    channels_last gradient, on which ``grad.view(n, -1)`` fails.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.was_contiguous = x.is_contiguous()
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous() if ctx.was_contiguous else grad


class AttackView(nn.Module):
    """The eval-mode function of ``source``, faster for input-gradient passes; see the module doc.

    ``applied`` lists the speed-ups in use (``[]``: a plain eval-mode call of the model);
    ``fallback_reason`` says briefly why a faster form was given up (``None`` if none was);
    ``recomputations`` counts how often derived convolution weights were (re)computed.
    """

    applied: list[str]
    fallback_reason: str | None

    def __init__(self, source: nn.Module, run: Callable[[torch.Tensor], Any], *,
                 applied: list[str], channels_last: bool,
                 derived: Sequence[_DerivedConv] = ()) -> None:
        super().__init__()
        # not sub-modules: the view shares the model's state but must never change it
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_run", run)
        self.applied = list(applied)
        self.fallback_reason = None
        self._channels_last = channels_last
        self._derived = list(derived)
        self.training = False

    @property
    def recomputations(self) -> int:
        return sum(d.recomputations for d in self._derived)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._channels_last and x.dim() == 4:
            x = _ToChannelsLast.apply(x)
        out = self._run(x)
        # callers expect an ordinary (contiguous) tensor whatever layout was used inside
        return out.contiguous() if isinstance(out, torch.Tensor) else out

    def extra_repr(self) -> str:
        text = f"source={type(self.source).__name__}, applied={self.applied}"
        if self.fallback_reason is not None:
            text += f", fallback={self.fallback_reason!r}"
        return text


def _attr_owner(model: nn.Module, traced: fx.GraphModule, target: str) -> tuple[Any, str]:
    """The module holding a ``get_attr`` target: the model's, or the trace's own constants."""
    prefix, _, name = target.rpartition(".")
    for root in (model, traced):
        try:
            owner = root.get_submodule(prefix) if prefix else root
        except AttributeError:
            continue
        if hasattr(owner, name):
            return owner, name
    raise ModelError(f"cannot find attribute {target!r} of the traced model")


def _foldable_bn(node: fx.Node, conv: nn.Module, traced: fx.GraphModule) -> fx.Node | None:
    """The batch-norm node that is the conv node's only user, if the pair can be folded."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    if user.op != "call_module" or user.kwargs or len(user.args) != 1 or user.args[0] is not node:
        return None
    bn = traced.get_submodule(user.target)
    if (not isinstance(bn, _BATCH_NORMS) or not bn.track_running_stats
            or bn.running_mean is None or bn.running_var is None
            or bn.num_features != conv.out_channels or _has_hooks(bn)):
        return None
    return user


def _rewrite(traced: fx.GraphModule, model: nn.Module, *, fold: bool, channels_last: bool
             ) -> tuple[fx.GraphModule, list[_DerivedConv]]:
    """Copy the traced graph, node by node, into the view's graph of live, detached pieces."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    modules: dict[str, nn.Module] = {}
    derived: dict[tuple[int, int, bool], _DerivedConv] = {}
    folded: set[fx.Node] = set()  # batch norms already written into their convolution

    def add(module: nn.Module, hint: str) -> str:
        name = f"{hint}_{len(modules)}"
        modules[name] = module
        return name

    def mapped(a: Any) -> Any:
        return fx.map_arg(a, lambda n: env[n])

    for node in traced.graph.nodes:
        if node in folded:
            continue
        if node.op == "get_attr":
            owner, name = _attr_owner(model, traced, node.target)
            env[node] = graph.call_module(add(_Live(_attribute, (owner, name)), "attr"))
            continue
        if node.op != "call_module":
            env[node] = graph.node_copy(node, lambda n: env[n])
            continue
        module = traced.get_submodule(node.target)
        simple = len(node.args) == 1 and not node.kwargs
        bn_node: fx.Node | None = None
        if _has_hooks(module):
            wrapper: nn.Module = _EvalCall(module)
        elif isinstance(module, _CONVS) and simple:
            bn_node = _foldable_bn(node, module, traced) if fold else None
            bn = traced.get_submodule(bn_node.target) if bn_node is not None else None
            cl = channels_last and isinstance(module, nn.Conv2d)
            key = (id(module), id(bn), cl)
            if key not in derived:  # a module called twice shares one cache
                derived[key] = _DerivedConv(module, bn, cl)
            wrapper = derived[key]
        elif isinstance(module, nn.Linear):
            wrapper = _Live(_linear, module)
        elif isinstance(module, _BATCH_NORMS):
            wrapper = _Live(_eval_batch_norm, module)
        elif isinstance(module, _DROPOUTS) and simple:
            env[node] = env[node.args[0]]
            continue
        elif isinstance(module, _MODE_FREE) and not any(True for _ in module.parameters()):
            wrapper = module
        else:
            wrapper = _EvalCall(module)
        env[node] = graph.call_module(add(wrapper, type(module).__name__.lower()),
                                      mapped(node.args), mapped(node.kwargs))
        if bn_node is not None:  # the batch norm's users now read the folded convolution
            env[bn_node] = env[node]
            folded.add(bn_node)
    graph.lint()
    return fx.GraphModule(modules, graph, class_name="AttackViewGraph"), list(derived.values())


def _describe(derived: Sequence[_DerivedConv]) -> list[str]:
    applied = []
    folds = sum(d.bn is not None for d in derived)
    if folds:
        applied.append(f"batchnorm folded into {folds} convolution{'s' if folds > 1 else ''}")
    if any(d.channels_last for d in derived):
        applied.append("channels_last")
    return applied


def _trace(model: nn.Module) -> fx.GraphModule:
    """``fx.symbolic_trace(model)``, leaving no attribute behind on ``model``.

    fx stores a tensor made inside ``forward`` (``x * torch.tensor(2.0)``) as an attribute
    ``_tensor_constant0`` of the module it traces, the model itself; the traced module keeps
    its own reference, where the view's rewrite finds it (``_attr_owner``).
    """
    before = set(vars(model))
    try:
        return fx.symbolic_trace(model)
    finally:
        for name in set(vars(model)) - before:
            delattr(model, name)


def _plain_view(model: nn.Module, rows: torch.Tensor,
                reference: tuple[Any, torch.Tensor | None], reason: str | None
                ) -> AttackView:
    """The model under eval mode, parameters detached if that works, else called as it is."""
    view = AttackView(model, _EvalCall(model), applied=[], channels_last=False)
    if isinstance(reference[0], torch.Tensor) and why_not_same(view, rows, reference) is not None:
        view = AttackView(model, _EvalCall(model, detach=False), applied=[], channels_last=False)
    view.fallback_reason = reason
    return view


def attack_view(model: nn.Module, example: torch.Tensor, *, fold_batchnorm: bool = True,
                channels_last: bool | None = None) -> AttackView:
    """A module computing ``model``'s eval-mode function faster, for attacks; never changes it.

    Batch norms that only follow a convolution are folded into it (``fold_batchnorm``), and
    with ``channels_last`` convolutions run in channels_last format (``None``: for a 4-D
    ``example``, whichever of the two layouts runs a forward pass on its first 32 rows faster,
    timed when the view is built). The view reads the model's live tensors, so one view stays
    exact across optimizer steps and ``load_state_dict``; backward through it gives input
    gradients only. It is checked on the first rows of ``example`` (not modified) and falls
    back to simpler forms silently: ``view.applied`` lists what is in use,
    ``view.fallback_reason`` why not more.

    >>> import torch
    >>> from robustfair.models import build_model
    >>> model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    >>> x = torch.rand(4, 1, 8, 8)
    >>> view = attack_view(model, x, channels_last=True)
    >>> view.applied  # doctest: +NORMALIZE_WHITESPACE
    ['batchnorm folded into 4 convolutions', 'channels_last']
    >>> model.training  # the model keeps its mode; the view always computes eval mode
    True
    >>> torch.allclose(view(x), model.eval()(x), atol=1e-5)
    True
    >>> x = x.requires_grad_(True)
    >>> view(x).sum().backward()
    >>> x.grad.shape, all(p.grad is None for p in model.parameters())
    (torch.Size([4, 1, 8, 8]), True)
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"attack_view needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or len(example) == 0:
        raise ModelError("attack_view needs an example batch (a tensor with at least one row)")
    rows = example[:_CHECK_ROWS].detach()
    use_cl = example.dim() == 4 if channels_last is None else bool(channels_last)
    try:
        with _eval_modes(list(model.modules())):
            reference = outputs_and_grad(model, rows)
    except Exception as exc:
        raise ModelError(f"the model fails on the example batch: {short_error(exc)}") from exc
    if not isinstance(reference[0], torch.Tensor):
        return _plain_view(model, rows, reference, "the model's output is not a tensor")
    try:
        # traced in eval mode: Python `if self.training` branches are fixed at trace time
        with _eval_modes(list(model.modules())):
            traced = _trace(model)
    except Exception as exc:  # noqa: BLE001  (fx raises many types on untraceable code)
        return _plain_view(model, rows, reference, f"fx cannot trace the model: {short_error(exc)}")

    reasons: list[str] = []
    tried: set[tuple[str, ...]] = set()

    def checked(fold: bool, cl: bool) -> AttackView | None:
        """The view with these rewrites, if it builds, is new and computes the model's function."""
        try:
            graph, derived = _rewrite(traced, model, fold=fold, channels_last=cl)
        except Exception as exc:  # noqa: BLE001  (an odd graph: try the next, simpler form)
            reasons.append(f"rewrite: {short_error(exc)}")
            return None
        applied = _describe(derived)
        if tuple(applied) in tried:
            return None  # e.g. nothing to fold: the same view as one already checked
        tried.add(tuple(applied))
        view = AttackView(model, graph, applied=applied,
                          channels_last=any(d.channels_last for d in derived), derived=derived)
        problem = why_not_same(view, rows, reference)
        if problem is None:
            return view
        reasons.append(f"{' + '.join(applied) or 'fx view'}: {problem}")
        return None

    for fold, cl in ((fold_batchnorm, use_cl), (False, use_cl), (fold_batchnorm, False),
                     (False, False)):
        view = checked(fold, cl)
        if view is None:
            continue
        view.fallback_reason = "; ".join(reasons) or None
        if channels_last is None and view._channels_last:
            # channels_last is not faster for every model and batch (a CPU runs a forward pass
            # of timm's resnet18 on 16 CIFAR-sized images 17% slower in it, of robustfair's
            # small_cnn on 32 digits 30% faster): the layout left to choose is the one that
            # runs the example faster
            contiguous = checked(fold, False)
            if contiguous is not None and _pass_seconds(contiguous, example) < _pass_seconds(
                    view, example):
                contiguous.fallback_reason = view.fallback_reason
                return contiguous
        return view
    return _plain_view(model, rows, reference, "; ".join(reasons))


# rows of `example` timed to choose a layout; timed passes per layout (after a warm-up): at
# least 2, more while they add up to under 20 ms (a fast model's single passes are mostly
# timer and scheduler noise), at most 25
_TIMED_ROWS = 32
_TIMED_PASSES = 2
_TIMED_SECONDS = 0.02
_TIMED_PASSES_MAX = 25


def _pass_seconds(view: AttackView, example: torch.Tensor) -> float:
    """The best time of a forward pass of ``view`` on the first rows of ``example`` (on CUDA,
    synchronised). Forward passes are most of an AutoAttack evaluation's model work (Square's
    5,000 queries per robust point against under 2,000 gradient passes), and timing them
    spends no backward pass."""
    x = example[:_TIMED_ROWS].detach()
    cuda = x.is_cuda

    def one_pass() -> float:
        if cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        with torch.no_grad():
            view(x)
        if cuda:
            torch.cuda.synchronize(x.device)
        return time.perf_counter() - start

    one_pass()  # warm-up: kernels chosen, weights derived
    times = [one_pass() for _ in range(_TIMED_PASSES)]
    while sum(times) < _TIMED_SECONDS and len(times) < _TIMED_PASSES_MAX:
        times.append(one_pass())
    return min(times)
