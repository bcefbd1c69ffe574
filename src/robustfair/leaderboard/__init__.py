"""A class-wise leaderboard: many models audited on the same points with the same attacks,
one resumable job per model, then one table, one page and the answers across models.

``spec`` (the YAML, errors at their line) -> ``points`` (the same stratified points for every
model) -> ``run`` (one job per model, local or Ray; resumable) -> ``table`` (one row per model
and per class) + ``analysis`` (is the same class the worst; do the class rankings agree) ->
``figures`` + ``report`` (leaderboard.csv/.parquet, classwise.csv, leaderboard.html);
``presets`` holds the shipped specs.
"""
from .presets import list_presets, load_preset
from .run import LeaderboardResult, run_leaderboard
from .spec import LeaderboardSpec, load_spec, parse_spec

__all__ = ["LeaderboardResult", "LeaderboardSpec", "list_presets", "load_preset", "load_spec",
           "parse_spec", "run_leaderboard"]
