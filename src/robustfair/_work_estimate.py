"""How much work an audit can take, said before it starts.

An attack's budget (steps, restarts, target classes, Square's queries) times the number of
batches bounds the model passes of an audit: every point that falls early makes it shorter, so
this is the worst case. Timed by one forward and backward pass on a batch, it gives the user a
time to expect (or a reason to stop) at the start of a long audit instead of a bar that never
seems to move.

>>> iterations({"attack": "pgd", "steps": 20, "restarts": 2})
40
>>> iterations({"attack": "autoattack", "parts": [{"steps": 100, "restarts": 1},
...             {"steps": 100, "restarts": 1, "top_k": 9}, {"n_queries": 5000, "restarts": 1}]})
6000
"""
from __future__ import annotations

import math
import time

import torch

# an audit whose worst case is longer than this says so at its start
SAY_ABOVE_SECONDS = 60.0


def iterations(settings: dict, num_classes: int | None = None) -> int:
    """Model passes per point for an attack's ``settings()`` (its worst case)."""
    if settings.get("parts"):
        return sum(iterations(p, num_classes) for p in settings["parts"])
    restarts = int(settings.get("restarts") or 1)
    if settings.get("n_queries"):
        return int(settings["n_queries"]) * restarts
    steps = int(settings.get("steps") or 1)
    targets = int(settings.get("top_k") or 1)
    if num_classes is not None:
        targets = min(targets, max(1, num_classes - 1))
    return steps * restarts * targets


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600),
                       ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def first_pass_seconds(model: torch.nn.Module, x: torch.Tensor) -> float | None:
    """Seconds of one forward and backward pass on ``x`` (float images), or None if the model
    fails (the audit's own checks then say how)."""
    x = x.detach().clone().requires_grad_(True)
    try:
        start = time.perf_counter()
        with torch.enable_grad():
            out = model(x)
            if isinstance(out, torch.Tensor) and out.requires_grad and out.is_floating_point():
                out.float().sum().backward()
        return time.perf_counter() - start
    except Exception:  # noqa: BLE001 - any failure is the audit's to report
        return None


def estimate(settings: list[dict], *, n: int, batch_size: int, num_classes: int | None,
             targets: int = 1, seconds_per_pass: float | None = None) -> tuple[int, str]:
    """(worst-case model passes, one line saying so and, when timed, how long they take)."""
    per_point = sum(iterations(s, num_classes) for s in settings) * targets
    batches = math.ceil(n / batch_size)
    passes = batches * per_point
    line = (f"at most {passes:,} model passes ({n:,} points in {batches:,} batch(es) x "
            f"{per_point:,} passes per point)")
    if seconds_per_pass is not None:
        line += (f"; a first pass took {seconds_per_pass * 1000:.1f} ms: up to "
                 f"{_duration(passes * seconds_per_pass)} (points that fall early finish sooner)")
    return passes, line
