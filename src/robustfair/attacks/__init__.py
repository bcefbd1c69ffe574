"""Attacks: FGSM, PGD (L-inf / L2, CE / CW-margin), APGD (CE / DLR, targeted), and AutoAttack."""
from ._base import Attack, AttackResult, CallOptions, build_attack, eval_mode, list_attacks, register_attack
from .apgd import APGD, APGDCE, APGDDLR, APGDTargeted  # importing registers the attacks
from .autoattack import AutoAttack
from .fgsm import FGSM
from .pgd import CW, PGD

__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "APGDTargeted",
    "Attack",
    "AutoAttack",
    "AttackResult",
    "CallOptions",
    "CW",
    "FGSM",
    "PGD",
    "build_attack",
    "eval_mode",
    "list_attacks",
    "register_attack",
]
