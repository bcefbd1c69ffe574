"""Attacks: FGSM, PGD (L-inf / L2, CE / CW-margin), APGD (CE / DLR, targeted), FAB / FAB-T,
Square (black-box), and AutoAttack (their ensemble)."""
from ._base import (
    ATTACKS,
    NORMS,
    Attack,
    AttackResult,
    CallOptions,
    build_attack,
    eval_mode,
    list_attacks,
    register_attack,
)
from ._geometry import ascent_direction, project, random_start  # shared with adversarial training
from .apgd import APGD, APGDCE, APGDDLR, APGDTargeted  # importing registers the attacks
from .fab import FAB, FABTargeted
from .fgsm import FGSM
from .pgd import CW, PGD
from .square import Square
from .autoattack import AutoAttack  # noqa: E402 - after its parts

__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "APGDTargeted",
    "ATTACKS",
    "Attack",
    "AutoAttack",
    "AttackResult",
    "CallOptions",
    "CW",
    "FAB",
    "FABTargeted",
    "FGSM",
    "NORMS",
    "PGD",
    "Square",
    "ascent_direction",
    "build_attack",
    "eval_mode",
    "list_attacks",
    "project",
    "random_start",
    "register_attack",
]
