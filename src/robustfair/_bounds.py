"""The bounds robustfair checks a request against *before* allocating or starting long work.

A small file can ask for huge memory (an array header declaring 10^12 rows, a label of 2·10^9
that would name 2·10^9 classes, a folder of large images decoded whole), and a small number can
ask for endless work (``--steps 10**10``). Each is checked here against what the machine has or
what an audit can use, and refused with a one-line error that states the bound.

>>> check_bounded(5000, "--queries", MAX_QUERIES)
>>> check_bounded(10**12, "--queries", MAX_QUERIES)
Traceback (most recent call last):
...
robustfair.errors.ConfigError: --queries 1000000000000 is beyond the bound of 10000000 (the largest budget robustfair runs)
>>> human_bytes(3 * 2**30)
'3.0 GiB'
"""
from __future__ import annotations

import os

from .errors import ConfigError, DataError

# Seeds: torch's generators take 0 .. 2**64 - 1 and numpy's default_rng any non-negative
# integer; robustfair adds small offsets (per attack, per epoch) to a seed, so 2**63 - 1 leaves
# room. (A negative seed is refused: numpy's generators refuse it.)
MAX_SEED = 2**63 - 1
# Attack budgets: APGD runs 100 steps, Square 5000 queries (AutoAttack's standard version);
# 1000x / 2000x that is far beyond any published evaluation and already days per batch.
MAX_STEPS = 100_000
MAX_QUERIES = 10_000_000
MAX_RESTARTS = 10_000
# Classes: ImageNet-21k has 21,841; a label beyond this is a corrupt or hostile file.
MAX_CLASSES = 100_000
# The environment variable that caps the memory robustfair plans for (bytes; for tests and
# shared machines), below what the machine has available.
MEMORY_ENV = "ROBUSTFAIR_MAX_MEMORY"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _available() -> int | None:
    """Memory available to a new allocation: /proc/meminfo's MemAvailable (else the free
    physical pages), within the address-space limit (RLIMIT_AS) if one is set."""
    found = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
    except OSError:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/status") as fh:
                used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
            found = limit - used if found is None else min(found, limit - used)
    except (ImportError, OSError, StopIteration, ValueError):
        pass
    return found


def memory_bound() -> int:
    """The most bytes one input may take in memory: what is available, or ``MEMORY_ENV``."""
    bound = _available()
    text = os.environ.get(MEMORY_ENV)
    if text:
        try:
            cap = int(float(text))
        except ValueError:
            raise ConfigError(f"{MEMORY_ENV} must be a number of bytes, got {text!r}") from None
        bound = cap if bound is None else min(bound, cap)
    return bound if bound is not None else 2**63


def check_fits(nbytes: int, what: str, hint: str = "") -> None:
    """Refuse ``what`` (e.g. ``"x in t.npz (10^12 x 3 x 32 x 32 uint8)"``) if it needs more
    memory than :func:`memory_bound`, before anything is allocated."""
    bound = memory_bound()
    if nbytes > bound:
        raise DataError(f"{what} needs {human_bytes(nbytes)} of memory, more than the "
                        f"{human_bytes(bound)} available{'; ' + hint if hint else ''}")


def check_bounded(value: int | None, flag: str, bound: int, why: str = "the largest budget robustfair runs") -> None:
    """Refuse an integer option above ``bound`` with a line that states the bound."""
    if value is not None and value > bound:
        raise ConfigError(f"{flag} {value} is beyond the bound of {bound} ({why})")


def check_seed_option(seed: object, flag: str = "--seed") -> None:
    """A seed option must lie in 0 .. MAX_SEED."""
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{flag} must lie in 0..{MAX_SEED} (2**63 - 1), got {seed}")
