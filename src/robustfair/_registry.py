"""One registry for everything built by name: data sets, models, attacks, objectives, mitigations.

A :class:`Registry` maps a name to a constructor (a function or a class). It gives every kind
the same behaviour: a warning when a name is registered twice, a sorted listing, a one-line
error with a did-you-mean and the choices for an unknown name, and a one-line error naming
the valid options for an option the constructor does not take, found from its signature
*before* it is called.

>>> from robustfair.errors import ConfigError
>>> shapes = Registry("shape", ConfigError)
>>> @shapes.register("square")
... def square(side: float = 1.0) -> float:
...     return side * side
>>> shapes.names(), "square" in shapes, shapes.build("square", side=3.0)
(['square'], True, 9.0)
>>> shapes.get("sqare")
Traceback (most recent call last):
...
robustfair.errors.ConfigError: unknown shape 'sqare' (did you mean 'square'?); choose from: square
>>> shapes.build("square", sides=3)
Traceback (most recent call last):
...
robustfair.errors.ConfigError: shape 'square' has no option(s) sides; its options are: side
"""
from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any, Callable, Generic, Iterable, TypeVar

from .errors import RobustfairError

T = TypeVar("T", bound=Callable[..., Any])

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` if none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Constructors of one ``kind`` by name; errors are raised as ``error`` (one line).

    ``supplied``: parameters the package's own wrapper always fills in (a model's
    ``num_classes``), left out of the options shown to users. Names starting with ``_``
    (tests, examples) can be built but are not listed.
    """

    def __init__(self, kind: str, error: type[RobustfairError] = RobustfairError, *,
                 supplied: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.error = error
        self.supplied = supplied
        self._constructors: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``constructor`` buildable as ``name`` (a warning if that replaces
        another constructor of the same name)."""

        def deco(constructor: T) -> T:
            previous = self._constructors.get(name)
            if previous is not None and previous is not constructor:
                warnings.warn(f"{self.kind} {name!r} was registered already; the new "
                              f"{getattr(constructor, '__qualname__', constructor)!s} replaces "
                              f"{getattr(previous, '__qualname__', previous)!s}", UserWarning,
                              stacklevel=2)
            self._constructors[name] = constructor
            return constructor

        return deco

    def unregister(self, name: str) -> T | None:
        """Forget ``name``; its constructor, or None if it was not registered."""
        return self._constructors.pop(name, None)

    def names(self) -> list[str]:
        """The registered names, sorted (those starting with ``_`` left out)."""
        return sorted(n for n in self._constructors if not n.startswith("_"))

    def __contains__(self, name: object) -> bool:
        return name in self._constructors

    def get(self, name: str) -> T:
        """The constructor registered as ``name``; an unknown name is a one-line error."""
        if name not in self._constructors:
            raise self.error(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                             f"choose from: {', '.join(self.names()) or '(none)'}")
        return self._constructors[name]

    def options(self, name: str) -> dict[str, Any]:
        """``name``'s options and their defaults (:data:`inspect.Parameter.empty` where an
        option has none), without ``self``, ``supplied`` ones and ``*args`` / ``**kwargs``.

        >>> from robustfair.training.objectives import OBJECTIVES
        >>> OBJECTIVES.options("trades")
        {'steps': 10, 'norm': 'linf', 'beta': 6.0, 'trades_start': 0.001}
        """
        return {p.name: p.default for p in self._parameters(name) or []
                if p.kind in _KEYWORD and p.name not in self.supplied}

    def check(self, name: str, /, *args: Any, **settings: Any) -> None:
        """Check ``settings`` against ``name``'s constructor, without calling it: an option it
        does not take, or a required one that is missing, is a one-line error naming the
        options. ``args`` are the wrapper's own positional arguments (a data set's directory).
        """
        params = self._parameters(name)
        if params is None:
            return
        params = params[len(args):]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        known = [p.name for p in params if p.kind in _KEYWORD]
        unknown = [k for k in settings if k not in known]
        if unknown and not takes_any:
            shown = [k for k in known if k not in self.supplied]
            raise self.error(f"{self.kind} {name!r} has no option(s) {', '.join(unknown)}; "
                             f"its options are: {', '.join(shown) or 'none'}")
        missing = [p.name for p in params if p.kind in _KEYWORD
                   and p.default is inspect.Parameter.empty and p.name not in settings]
        if missing:
            raise self.error(f"{self.kind} {name!r} needs option(s) {', '.join(missing)}")

    def build(self, name: str, /, *args: Any, **settings: Any) -> Any:
        """``get(name)(*args, **settings)``, after :meth:`check`: a bad option is found from
        the constructor's signature, not from a TypeError afterwards."""
        self.check(name, *args, **settings)
        return self.get(name)(*args, **settings)

    # ------------------------------------------------------------------------------ private
    def _parameters(self, name: str) -> list[inspect.Parameter] | None:
        """The constructor's parameters (without ``self``), or None where none can be read."""
        try:
            return list(inspect.signature(self.get(name)).parameters.values())
        except (TypeError, ValueError):  # some builtins and C callables have no signature
            return None
