"""AutoAttack (Croce & Hein 2020): the field's reliable evaluation, as one attack.

A fixed ensemble of parameter-free attacks, run in order, each on the points every earlier
one left robust, so a point is robust only if all of them failed:

============ ===================================================================================
``standard`` APGD-CE, APGD-T (targeted DLR toward each of the 9 runner-up classes, any
             misclassification counts), FAB-T (9 target classes), Square (5,000 queries,
             black-box). The version RobustBench reports.
``plus``     APGD-CE and APGD-DLR with 5 restarts each, FAB (untargeted, 5 restarts), Square,
             APGD-T, FAB-T: slower, for a second opinion.
``rand``     For randomised models: APGD-CE and APGD-DLR with expectation over transformation
             (each gradient averaged over 20 passes); a success counts when the majority of 20
             passes misclassify the point.
============ ===================================================================================

``steps`` (APGD's and FAB's iterations, 100) and ``n_queries`` (Square's, 5,000) can be
lowered for a quick first look; the settings then say so beside every result.

The result says which part broke each point first (``AttackResult.broken_by`` indexes
``AttackResult.parts``); the audit stores it, so a report can say per class how many points
each part broke (``ClassReport.broken_by()``), and a black-box part breaking points that every
gradient part left robust is the gradient-masking sign the audit flags.

>>> attack = AutoAttack(eps=8 / 255)
>>> attack.part_names()
['apgd-ce', 'apgd-t', 'fab-t', 'square']
>>> AutoAttack(eps=0.5, norm="l2", version="rand").part_names()
['apgd-ce', 'apgd-dlr']
"""
from __future__ import annotations

import torch
from torch import nn

from .._progress import part_done
from .._tensor_checks import check_logits
from ..errors import AttackError
from ._base import Attack, AttackResult, CallOptions, build_attack, register_attack
from ._search import check_positive_int

VERSIONS = ("standard", "plus", "rand")

# Each version's parts in order: (name, settings). Settings follow the official code's
# set_version(); eps, norm, seed and amp are added from the composite's own.
_PARTS: dict[str, list[tuple[str, dict]]] = {
    "standard": [
        ("apgd-ce", {"steps": 100, "restarts": 1}),
        ("apgd-t", {"steps": 100, "restarts": 1, "targeted": False, "top_k": 9}),
        ("fab-t", {}),
        ("square", {"n_queries": 5000}),
    ],
    "plus": [
        ("apgd-ce", {"steps": 100, "restarts": 5}),
        ("apgd-dlr", {"steps": 100, "restarts": 5}),
        ("fab", {"restarts": 5}),
        ("square", {"n_queries": 5000}),
        ("apgd-t", {"steps": 100, "restarts": 1, "targeted": False, "top_k": 9}),
        ("fab-t", {}),
    ],
    "rand": [
        ("apgd-ce", {"steps": 100, "restarts": 1, "eot": 20}),
        ("apgd-dlr", {"steps": 100, "restarts": 1, "eot": 20}),
    ],
}
# parts that accept mixed precision (the gradient attacks built on GradientAttack)
_AMP_PARTS = ("apgd-ce", "apgd-t", "apgd-dlr")


@register_attack("autoattack")
class AutoAttack(Attack):
    """AutoAttack's ensemble as one untargeted attack; ``parts`` picks a custom subset."""

    name = "autoattack"

    def __init__(
        self,
        eps: float | torch.Tensor,
        *,
        norm: str = "linf",
        version: str = "standard",
        parts: list[str] | tuple[str, ...] | None = None,
        steps: int = 100,
        n_queries: int = 5000,
        seed: int | None = 0,
        amp: bool = False,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=False, seed=seed)
        if version not in VERSIONS:
            raise AttackError(f"unknown AutoAttack version {version!r}; choose from: {', '.join(VERSIONS)}")
        if not isinstance(amp, bool):
            raise AttackError(f"amp must be True or False, got {amp!r}")
        if parts is not None:
            known = [name for name, _ in _PARTS[version]]
            if isinstance(parts, str) or not parts or any(p not in known for p in parts):
                raise AttackError(f"parts must be a non-empty list drawn from {version!r}'s: "
                                  f"{', '.join(known)}; got {parts!r}")
            parts = list(parts)
        self.version, self.parts, self.amp = version, parts, amp
        self.steps = check_positive_int("steps", steps)
        self.n_queries = check_positive_int("n_queries", n_queries)
        self.part_attacks()  # build once now, so bad settings fail at construction

    def part_names(self) -> list[str]:
        return [name for name, _ in self._selected()]

    def _selected(self) -> list[tuple[str, dict]]:
        return [(n, s) for n, s in _PARTS[self.version] if self.parts is None or n in self.parts]

    def part_attacks(self) -> list[tuple[str, Attack]]:
        """The parts, in order, built from this attack's current settings."""
        built = []
        for name, settings in self._selected():
            extra = {"amp": self.amp} if name in _AMP_PARTS else {}
            extra.update({"n_queries": self.n_queries} if name == "square" else {"steps": self.steps})
            settings = {k: v for k, v in settings.items() if k not in extra}
            built.append((name, build_attack(name, eps=self.eps, norm=self.norm, seed=self.seed,
                                             **settings, **extra)))
        return built

    def settings(self) -> dict:
        return {**super().settings(), "version": self.version, "steps": self.steps,
                "n_queries": self.n_queries, "amp": self.amp,
                "parts": [a.settings() for _, a in self.part_attacks()]}

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, options: CallOptions) -> AttackResult:
        clean = options.clean_logits
        if clean is None:
            with torch.no_grad():
                pieces = x.split(options.batch_size or len(x))
                clean = torch.cat([check_logits(model(p)) for p in pieces])
        pred = clean.argmax(dim=1)
        x_adv = x.clone()
        robust = pred == y
        broken_by = torch.full_like(y, -1)
        for i, (name, attack) in enumerate(self.part_attacks()):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            res = attack.perturb(model, x[idx], y[idx], clean_logits=clean[idx],
                                 batch_size=options.batch_size, seed=options.seed,
                                 index=options.index[idx])  # each point keeps its own stream
            hit = idx[res.success]
            x_adv[hit] = res.x_adv[res.success]
            pred[hit] = res.pred[res.success]
            broken_by[hit] = i
            robust[hit] = False
            part_done(name, idx.numel(), int(robust.sum()))  # a progress line, if asked for
        return AttackResult(x_adv, pred, pred != y, broken_by=broken_by, parts=self.part_names())
