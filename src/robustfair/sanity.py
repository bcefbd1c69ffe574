"""Sanity flags: signs that an audit's robust accuracy cannot be trusted as it stands.

A robust accuracy is only an upper bound: it is as good as the attacks that produced it. Some
models defeat gradient attacks without being robust (gradient masking), and some are random,
so that one pass's "adversarial example" is not one on the next pass. AutoAttack (Croce & Hein
2020) checks for several of these signs; robustfair runs the same checks and a few more, on a
handful of points before the attacks (:func:`model_flags`) and on the results after them
(:func:`result_flags`). Each flag is one line saying what was seen, what it means and what to
do; the audit stores them in ``report.flags`` and the CLI prints them.

============== =================================================================================
code           raised when
============== =================================================================================
randomized     two passes in eval mode give different outputs (dropout, noise, random input
               transforms)
probabilities  outputs lie in [0, 1] and sum to 1 per row: a softmax was left at the end
zero_gradient  some points' input gradient of the cross-entropy is exactly zero
eps_zero       the first attack, run with eps 0, changes a prediction (robust accuracy at eps 0
               differs from clean accuracy)
masking        a black-box attack (Square) broke points that every gradient attack left robust
               (at least 5 and more than 0.2% of the points, AutoAttack's threshold), and some
               of them resisted a re-attack by gradient attacks at a larger budget
               (:func:`masking_recheck`: only those are possible masking)
attack_budget  the same trigger, but the larger-budget gradient attacks broke every one of
               those points (the gradient part's budget fell short; no sign of masking)
============== =================================================================================

>>> Flag("probabilities", "outputs sum to 1").to_dict()
{'code': 'probabilities', 'message': 'outputs sum to 1', 'classes': None}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attacks import ATTACKS, Attack, eval_mode
from .errors import ModelError
from .metrics.pointwise import WorstCase
from .metrics.report import RESULT_CODES  # the codes result_flags raises

__all__ = ["Flag", "model_flags", "masking_recheck", "result_flags", "RESULT_CODES"]

CHECK_POINTS = 32  # points the pre-attack checks look at (they are cheap; this keeps them so)
MASKING_SHARE = 0.002  # AutoAttack's check_square_sr threshold: 0.2% of the points ...
MASKING_MIN_POINTS = 5  # ... and at least 5 of them (one point of noise must not raise it)
RECHECK_RESTARTS = 5  # the re-attack's restarts of APGD-CE and APGD-DLR (AutoAttack 'plus')


@dataclass(frozen=True)
class Flag:
    code: str
    message: str
    classes: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _randomized(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> Flag | None:
    with torch.no_grad():
        again = model(x)
    scale = logits.abs().amax().clamp_min(1.0)
    diff = float((again - logits).abs().amax() / scale)
    if diff <= 1e-4:  # float rounding (e.g. nondeterministic GPU kernels) stays far below this
        return None
    return Flag("randomized", f"the model's outputs change between two passes in eval mode "
                f"(relative difference {diff:.2g}): it is randomised, so one pass's robust accuracy "
                f"is not reliable; audit with autoattack version='rand' (--aa-version rand), which "
                f"averages gradients and votes over 20 passes")


def _probabilities(logits: torch.Tensor) -> Flag | None:
    in_range = bool((logits >= -1e-5).all() and (logits <= 1 + 1e-5).all())
    if not (in_range and bool(((logits.sum(dim=1) - 1).abs() < 1e-3).all())):
        return None
    return Flag("probabilities", "the model's outputs lie in [0, 1] and sum to 1: they look like "
                "probabilities, not logits, which flattens the attacks' losses; remove the final "
                "softmax so the model returns logits")


def _zero_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Flag | None:
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    zero = int((grad.flatten(1).abs().sum(dim=1) == 0).sum())
    if zero == 0:
        return None
    return Flag("zero_gradient", f"{zero} of {len(x)} points checked ({zero / len(x):.0%}) have an "
                f"input gradient of exactly zero: gradient attacks cannot move them (a sign of "
                f"gradient masking, e.g. input quantisation or a saturated softmax); rely on a "
                f"black-box attack (autoattack includes Square) and look for non-differentiable "
                f"steps in the model")


def _eps_zero(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
              attack: Attack) -> Flag | None:
    first = attack.part_attacks()[0][1] if attack.part_names() else attack
    if first.targeted:
        return None
    changes = {"eps": 0.0}
    # nothing can move at eps 0: a few steps or queries show it
    if hasattr(first, "steps"):
        changes["steps"] = min(int(first.steps), 5)
    if hasattr(first, "n_queries"):
        changes["n_queries"] = min(int(first.n_queries), 20)
    res = first.with_options(**changes).perturb(model, x, y, clean_logits=logits)
    clean_right = logits.argmax(dim=1) == y
    moved = int((clean_right & res.success).sum())
    if moved == 0:
        return None
    return Flag("eps_zero", f"with eps 0, {first.name} changed the prediction of {moved} of "
                f"{int(clean_right.sum())} correctly classified points: robust accuracy at eps 0 "
                f"differs from clean accuracy, so the model or the attack is not deterministic; "
                f"see the 'randomized' flag, or report this as a bug")


def model_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
                attack: Attack) -> list[dict]:
    """Checks of the model on (at most ``CHECK_POINTS`` of) the points ``x`` with clean
    ``logits``, before any attack; ``attack`` is the audit's first attack (for the eps-0 check)."""
    x, y, logits = x[:CHECK_POINTS], y[:CHECK_POINTS], logits[:CHECK_POINTS].float()
    try:
        found = [_randomized(model, x, logits), _probabilities(logits), _zero_gradient(model, x, y)]
        found.append(_eps_zero(model, x, y, logits, attack))
    except ModelError as exc:  # say where it happened: before any attack ran
        raise ModelError(f"the sanity checks before the attacks: {exc}") from None
    return [f.to_dict() for f in found if f is not None]


def _black_box(name: str | None) -> bool:
    """A registered attack that uses no gradient (``Attack.uses_gradient``): immune to masking."""
    return name in ATTACKS and not ATTACKS.get(name).uses_gradient


def _black_box_breaks(report) -> np.ndarray:
    """Per point: broken by a black-box attack while every gradient attack left it robust."""
    p = report.predictions
    y = p["y_true"].to_numpy()
    clean = p["clean_pred"].to_numpy()
    by_black_box = np.zeros(len(y), dtype=bool)
    by_gradient = np.zeros(len(y), dtype=bool)
    for name, settings in zip(report.attack_names, report.attacks):
        pred = p[f"{name}_pred"].to_numpy()
        fooled = WorstCase(y, clean).add(pred)  # by this attack alone
        parts = [s.get("attack") for s in settings.get("parts", [])]
        if f"{name}_by" in p.columns and parts:  # a composite: its parts run in order
            by = p[f"{name}_by"].to_numpy()
            black = np.isin(by, [i for i, n in enumerate(parts) if _black_box(n)])
            by_black_box |= fooled & black
            by_gradient |= fooled & ~black
        elif _black_box(settings.get("attack")):
            by_black_box |= fooled
        else:
            by_gradient |= fooled
    return by_black_box & ~by_gradient


def _square_only_raised(count: int, n: int) -> bool:
    """AutoAttack's rule (``check_square_sr``): at least 5 points and more than 0.2% of them,
    so that one point of binomial noise on a small test set does not raise it."""
    return count >= MASKING_MIN_POINTS and count > MASKING_SHARE * n


def result_flags(report) -> list[dict]:
    """Checks of an audit's results (a :class:`~robustfair.metrics.ClassReport`), without the
    model: the points a black-box attack alone broke (:func:`masking_recheck` re-attacks them
    when the model is at hand, as the audit does)."""
    only_black_box = _black_box_breaks(report)
    n, count = len(only_black_box), int(only_black_box.sum())
    if not _square_only_raised(count, n):
        return []
    y = report.predictions["y_true"].to_numpy()
    per_class = np.bincount(y[only_black_box], minlength=report.num_classes)
    classes = [c for c, k in zip(report.classes, per_class) if k > 0]
    detail = ", ".join(f"{c}: {k}" for c, k in zip(report.classes, per_class) if k > 0)
    return [Flag("masking", f"a black-box attack broke {count} points ({count / n:.1%}) that every "
                 f"gradient attack left robust (per class: {detail}): a sign of gradient masking, "
                 f"so gradient attacks alone overstate robustness here; use autoattack (it "
                 f"includes Square) and check the model for non-differentiable or saturating steps",
                 classes=classes).to_dict()]


def _recheck_attacks(report) -> list[tuple[str, Attack]]:
    """Gradient attacks at a larger budget than the audit's: APGD-CE and APGD-DLR with
    :data:`RECHECK_RESTARTS` restarts, APGD-T on every other class (AutoAttack's 'plus'
    version), at the audit's eps and norm and its APGD iterations (100 by default)."""
    from .attacks import build_attack

    first = next((a for a in report.attacks if "eps" in a), None)
    if first is None:
        return []
    eps, norm = first["eps"], first.get("norm", "linf")
    parts = {p.get("attack"): p for p in first.get("parts", [])}
    steps = int(parts.get("apgd-ce", first).get("steps", 100) or 100)
    out = [("apgd-ce", build_attack("apgd-ce", eps=eps, norm=norm, steps=steps,
                                    restarts=RECHECK_RESTARTS))]
    if report.num_classes >= 3:
        out.append(("apgd-dlr", build_attack("apgd-dlr", eps=eps, norm=norm, steps=steps,
                                             restarts=RECHECK_RESTARTS)))
    if report.num_classes >= 4:
        out.append(("apgd-t", build_attack("apgd-t", eps=eps, norm=norm, steps=steps,
                                           top_k=report.num_classes - 1)))
    return out


def masking_recheck(model: nn.Module, x: torch.Tensor, y: torch.Tensor, report,
                    *, batch_size: int = 256) -> tuple[list[dict], dict]:
    """AutoAttack's masking check, then a second look: when a black-box attack alone broke at
    least 5 points and more than 0.2% of them, re-attack just those points with gradient
    attacks at a larger budget (:func:`_recheck_attacks`). Returns (flags, counts) with counts
    ``{"square_only": N, "gradient_recheck": M, "resisted": K, "attacks": [...]}`` ({} when
    not raised). Square alone broke N points; the stronger gradient attacks broke M of them:
    the gradient part's robust accuracy was unreliable there (an attack-budget miss; the
    composite's robust accuracy stands, Square found them); the K that resisted every gradient
    attack are possible gradient masking, and only they raise the ``masking`` flag."""
    only = _black_box_breaks(report)
    n, count = len(only), int(only.sum())
    if not _square_only_raised(count, n):
        return [], {}
    attacks = _recheck_attacks(report)
    idx = torch.as_tensor(np.flatnonzero(only))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    xs, ys = x[idx].to(device), y[idx].to(device)
    alive = torch.ones(len(idx), dtype=torch.bool, device=device)

    with eval_mode(model):
        for _, attack in attacks:
            if not alive.any():
                break
            keep = torch.nonzero(alive).flatten()
            res = attack.perturb(model, xs[keep], ys[keep], batch_size=batch_size,
                                 index=idx[keep.cpu()])
            alive[keep[res.success]] = False
    broken = int((~alive).sum())
    resisted = count - broken
    labels = report.predictions["y_true"].to_numpy()[only]
    still = labels[alive.cpu().numpy()]
    per_class = np.bincount(still, minlength=report.num_classes)
    counts = {"square_only": count, "gradient_recheck": broken, "resisted": resisted,
              "attacks": [a.settings() for _, a in attacks]}
    names = " and ".join(f"{name}" for name, _ in attacks)
    head = (f"Square alone broke {count} points ({count / n:.1%}); gradient attacks with more "
            f"restarts ({names}) broke {broken} of them (attack budget: the gradient attacks' "
            f"robust accuracy is unreliable on this model, the audit's stands since Square "
            f"found them)")
    if resisted == 0:
        return [Flag("attack_budget", head + "; none resisted every gradient attack (no sign "
                     "of gradient masking)").to_dict()], counts
    classes = [c for c, k in zip(report.classes, per_class) if k > 0]
    detail = ", ".join(f"{c}: {k}" for c, k in zip(report.classes, per_class) if k > 0)
    return [Flag("masking", head + f"; {resisted} resisted every gradient attack (possible "
                 f"gradient masking; per class: {detail}): check the model for "
                 f"non-differentiable or saturating steps", classes=classes).to_dict()], counts
