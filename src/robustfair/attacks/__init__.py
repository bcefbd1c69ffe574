"""Attacks: FGSM, PGD (L-inf / L2, CE / CW-margin), APGD (CE / DLR, targeted), Square (black-box)."""
from ._base import Attack, AttackResult, build_attack, eval_mode, list_attacks, register_attack
from .apgd import APGD, APGDCE, APGDDLR, APGDTargeted  # importing registers the attacks
from .fgsm import FGSM
from .pgd import CW, PGD
from .square import Square

__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "APGDTargeted",
    "Attack",
    "AttackResult",
    "CW",
    "FGSM",
    "PGD",
    "Square",
    "build_attack",
    "eval_mode",
    "list_attacks",
    "register_attack",
]
