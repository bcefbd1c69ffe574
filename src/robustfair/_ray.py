"""Ray, shared by the study's executor, the sharded audit and the leaderboard: imported only
when asked for, a cluster address checked before Ray retries it for ages, and a session that
shuts down a Ray it started."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .errors import RobustfairError

__all__ = ["check_reachable", "ray_session"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RobustfairError("the ray executor needs Ray: pip install 'robustfair[ray]'") from None
    return ray


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds when a Ray cluster address does not answer.

    ``ray.init(address=...)`` retries an unreachable address for a very long time (a study
    that seems to hang); one TCP connection tells at once. ``auto``/``local`` and addresses
    without a port are left to Ray.
    """
    import socket

    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise RobustfairError(f"cannot reach Ray at {address} ({reason}); is the cluster "
                              f"running (ray start --head) and the address right?") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int = 2) -> Iterator[Any]:
    """Ray for the block: the running instance, the cluster at ``address`` or a local one with
    ``num_cpus`` CPUs (shut down after the block if started here); yields the ``ray`` module.
    A Ray that cannot start is one line."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        check_reachable(address)  # Ray itself would retry an unreachable address for ages
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types; the user needs one line
        where = f"at {address}" if address else "locally"
        raise RobustfairError(f"cannot start Ray {where}: {' '.join(str(exc).split())}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
