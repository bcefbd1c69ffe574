"""Attacks: FGSM, PGD (L-inf / L2, CE / CW-margin), APGD (CE / DLR, targeted)."""
from ._base import Attack, AttackResult, build_attack, eval_mode, list_attacks, register_attack

__all__ = ["Attack", "AttackResult", "build_attack", "eval_mode", "list_attacks", "register_attack"]
