"""Per-point random numbers: what an attack draws for a point depends only on the seed, the
point's index in the whole test set and what is being drawn, never on the other points.

So an audit split into shards, or into batches and pools of any size, with points refilled
into a working batch in any order, draws exactly the same random starts, target orders and
Square windows for every point, and its per-point results do not depend on how the work was
cut (``robustfair.sharding``).

How: a counter-based generator. Every number is ``mix(key + counter)``, where ``mix`` is the
splitmix64 finaliser (Steele, Lea & Flood 2014), a bijection of 64-bit integers whose output
passes BigCrush, computed in wrapping int64 tensor arithmetic on the points' device. A point's
key is mixed from the seed and its index; a draw's key adds what the attack names (the part
of the attack, the restart, the iteration, a tag per quantity); the counter numbers the
values of one draw. Nothing is stored between draws, so there is no state to keep in step.
Per-point ``torch.Generator`` objects would do the same at one Python call per point, too
slow for Square's thousands of small per-iteration draws.

A key part may also be a 1-D tensor of places (e.g. the next 100 iterations): the draws of
all those places are then made at once, with the same values as drawing at each place alone,
and :class:`DrawBlock` hands them out one place at a time. Square draws its windows and signs
this way: one set of tensor operations per block of iterations instead of one per iteration
(about 40 small operations each; on small models they cost as much as the model's pass).

>>> rng = PointRandom(seed=0, index=torch.tensor([5, 9]))
>>> a = rng.at(None, "start", 0).uniform((3,), "u")
>>> b = PointRandom(seed=0, index=torch.tensor([9])).at(None, "start", 0).uniform((3,), "u")
>>> torch.equal(a[1], b[0])  # point 9 draws the same numbers alone or beside point 5
True
>>> a.shape, bool(((a >= 0) & (a < 1)).all())
(torch.Size([2, 3]), True)
"""
from __future__ import annotations

import math
import secrets
import zlib
from typing import Callable

import torch

__all__ = ["PointRandom", "Draws", "DrawBlock", "splitmix64"]

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # the golden-ratio increment of splitmix64
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it (torch tensors are signed)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (multiplications wrap modulo 2**64)."""
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def splitmix64(value: int) -> int:
    """The same finaliser on a Python int: the reference the tensor version is tested against.

    >>> hex(splitmix64(_GAMMA))  # splitmix64's first output for state 0
    '0xe220a8397b1dcdaf'
    """
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _part(part: int | str | torch.Tensor) -> int | torch.Tensor:
    """One part of a draw's key as an int64: integers (and tensors of them) as they are, names
    by their CRC-32."""
    if isinstance(part, torch.Tensor):
        return part.to(torch.int64)
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    return _signed(int(part))


def _extend(keys: torch.Tensor, part: int | str | torch.Tensor) -> torch.Tensor:
    """``keys`` one key part further; a 1-D tensor part adds a last dimension (one key per place)."""
    part = _part(part)
    if isinstance(part, torch.Tensor):
        return _mix(keys.unsqueeze(-1) ^ part)
    return _mix(keys ^ part)


class Draws:
    """The random numbers of one draw place (a key) for a set of points: row ``i`` of every
    result belongs to point ``i``; ``tag`` names the quantity, so two quantities drawn at the
    same place are independent. With one key per point and place (``keys`` of shape N×K, from a
    tensor key part), every result gains that dimension: N×K×``shape``."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys  # int64, one per point (N) or per point and place (N×K)

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, rows: torch.Tensor) -> "Draws":
        """The same draws for the points ``rows`` only."""
        return Draws(self.keys[rows])

    def bits(self, shape: tuple[int, ...], tag: int | str) -> torch.Tensor:
        """``len(self)``×``shape`` independent uniform 64-bit patterns (as int64)."""
        count = math.prod(shape)
        key = _mix(self.keys ^ _part(tag))
        counter = torch.arange(1, count + 1, device=key.device, dtype=torch.int64) * _signed(_GAMMA)
        return _mix(key.unsqueeze(-1) + counter).view(*key.shape, *shape)

    def uniform(self, shape: tuple[int, ...], tag: int | str,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform in [0, 1), with the precision of ``dtype`` (24 or 53 bits)."""
        bits = 53 if dtype == torch.float64 else 24
        u = _shr(self.bits(shape, tag), 64 - bits).to(torch.float64) * 2.0 ** -bits
        return u.to(dtype)

    def normal(self, shape: tuple[int, ...], tag: int | str,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal (Box-Muller on two 53-bit uniforms)."""
        b = _shr(self.bits((*shape, 2), tag), 11).to(torch.float64)
        u1 = (b[..., 0] + 1.0) * 2.0 ** -53  # in (0, 1]: the log is finite
        u2 = b[..., 1] * 2.0 ** -53
        return ((-2.0 * u1.log()).sqrt() * torch.cos(2.0 * math.pi * u2)).to(dtype)

    def integers(self, shape: tuple[int, ...], high: int, tag: int | str) -> torch.Tensor:
        """Uniform integers in ``[0, high)`` (int64; the modulo bias is below ``high / 2**63``)."""
        return _shr(self.bits(shape, tag), 1) % int(high)

    def signs(self, shape: tuple[int, ...], tag: int | str, like: torch.Tensor) -> torch.Tensor:
        """Independent +1 / -1 in ``like``'s dtype."""
        top = _shr(self.bits(shape, tag), 63)  # the top bit: 0 or 1
        return (2 * top - 1).to(like.dtype)


class PointRandom:
    """The random streams of a batch of points: ``seed`` and each point's ``index`` (int64,
    its position in the whole test set) decide everything the attack draws for it.

    ``seed=None`` draws a fresh seed (an attack asked for fresh entropy).
    """

    def __init__(self, seed: int | None, index: torch.Tensor) -> None:
        if seed is None:
            seed = secrets.randbits(63)
        self.seed = int(seed)
        self.index = index.to(torch.int64)
        seed_key = _signed(splitmix64(_signed(self.seed) + _GAMMA))
        self.keys = _mix(self.index ^ seed_key)

    def at(self, rows: torch.Tensor | None, *key: int | str | torch.Tensor) -> Draws:
        """The draws at place ``key`` (e.g. ``("apgd-ce", "start", restart)``) for the points
        at positions ``rows`` of this batch (``None``: all of them). A 1-D tensor as the last
        part gives the draws at each of its values at once (a :class:`DrawBlock`'s)."""
        keys = self.keys if rows is None else self.keys[rows]
        for part in key:
            keys = _extend(keys, part)
        return Draws(keys)


class DrawBlock:
    """The draws of a set of points at K consecutive places, made a quantity at a time for the
    whole block and handed out one place at a time: ``block.place = j`` selects place ``j``,
    and :meth:`integers`, :meth:`signs`, ... (the methods of :class:`Draws`) return what
    ``Draws`` returns at that place alone, the same numbers.

    ``block[rows]`` is the block for the points ``rows`` only (so it can be per-point state of
    an attack, which drops the points that leave). A quantity must be asked for with the same
    arguments (``high`` included) at every place of a block.

    >>> rng = PointRandom(seed=0, index=torch.tensor([3, 4]))
    >>> block = DrawBlock(rng.at(None, "square", torch.arange(10, 20)))
    >>> block.place = 5
    >>> torch.equal(block.integers((), 6, "top"), rng.at(None, "square", 15).integers((), 6, "top"))
    True
    """

    def __init__(self, draws: Draws) -> None:
        self.draws, self.place = draws, 0
        self.made: dict[tuple, torch.Tensor] = {}  # (method, arguments) -> N×K×shape

    def __getitem__(self, rows: torch.Tensor) -> "DrawBlock":
        block = DrawBlock(self.draws.take(rows))
        block.place, block.made = self.place, {k: v[rows] for k, v in self.made.items()}
        return block

    def _at_place(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self.made:
            self.made[key] = make()
        return self.made[key][:, self.place]

    def derived(self, key: tuple, make: Callable[[Draws], torch.Tensor]) -> torch.Tensor:
        """``make(draws)`` at this place, where ``make`` computes something per point and place
        from the block's draws (N×K×...), once per block: e.g. Square's window masks."""
        return self._at_place(("derived", *key), lambda: make(self.draws))

    def uniform(self, shape: tuple[int, ...], tag: int | str,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._at_place(("uniform", shape, tag, dtype),
                              lambda: self.draws.uniform(shape, tag, dtype))

    def normal(self, shape: tuple[int, ...], tag: int | str,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._at_place(("normal", shape, tag, dtype),
                              lambda: self.draws.normal(shape, tag, dtype))

    def integers(self, shape: tuple[int, ...], high: int, tag: int | str) -> torch.Tensor:
        return self._at_place(("integers", shape, high, tag),
                              lambda: self.draws.integers(shape, high, tag))

    def signs(self, shape: tuple[int, ...], tag: int | str, like: torch.Tensor) -> torch.Tensor:
        return self._at_place(("signs", shape, tag, like.dtype, like.device),
                              lambda: self.draws.signs(shape, tag, like))
