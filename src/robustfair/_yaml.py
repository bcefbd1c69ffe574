"""YAML for configs and study specs: plain data only, and bounded in size.

``yaml.safe_load`` never runs code, but it still (a) builds whatever a tag names among YAML's
own types (``!!binary``, ``!!timestamp``, ``!!set``), and raises a ConstructorError traceback
for a tag it does not know (``!custom``, ``!!python/name:...``), and (b) expands aliases by
reference, so 500 bytes of nested ``*a`` aliases become a graph whose every walk (JSON,
hashing, copying) takes gigabytes: the "billion laughs". Here the document is composed into
nodes first, each node's tag is checked against the plain JSON-like types, and the size of
the document *with aliases expanded* is counted (cheaply, once per distinct node) before
anything is built. Unquoted dates stay strings (``2024-01-01`` is not a timestamp here).

>>> load_yaml("a: [1, 2.5, x]\\nb: 2024-01-01")
{'a': [1, 2.5, 'x'], 'b': '2024-01-01'}
>>> load_yaml("a: !!python/name:os.system x", source="c.yaml")
Traceback (most recent call last):
...
robustfair.errors.ConfigError: c.yaml:1: tag !!python/name:os.system is not allowed (plain values, lists and mappings only)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# with aliases expanded: far beyond any real config or spec, far below a memory problem
MAX_NODES = 100_000

_STD = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(_STD + t for t in ("str", "int", "float", "bool", "null", "seq", "map",
                                                 "merge"))


class PlainLoader(yaml.SafeLoader):
    """SafeLoader without the implicit timestamp type (dates stay strings)."""


PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _STD + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def compose_yaml(text: str, source: str = "<yaml>", *, max_nodes: int = MAX_NODES,
                 merge: bool = True) -> yaml.Node | None:
    """The document's node tree, checked: plain tags only, at most ``max_nodes`` when expanded.

    ``merge=False`` also refuses merge keys (``<<: *base``), for readers that walk the nodes
    themselves instead of constructing them.

    Every problem is one line, ``SOURCE:LINE: what``, as a :class:`ConfigError`.
    """
    try:
        root = yaml.compose(text, Loader=PlainLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}:{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    if root is not None:
        check_nodes(root, source, max_nodes=max_nodes,
                    allowed=ALLOWED_TAGS if merge else ALLOWED_TAGS - {_STD + "merge"})
    return root


def check_nodes(root: yaml.Node, source: str, *, max_nodes: int = MAX_NODES,
                allowed: frozenset[str] = ALLOWED_TAGS) -> None:
    """Refuse foreign tags, alias cycles and documents that expand past ``max_nodes`` nodes."""
    expanded: dict[int, int] = {}  # id(node) -> its size with aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]  # iterative: no recursion limit
    while stack:
        node, children_done = stack.pop()
        if children_done:
            on_path.discard(id(node))
            expanded[id(node)] = 1 + sum(expanded[id(c)] for c in _children(node))
            if expanded[id(node)] > max_nodes:
                raise ConfigError(f"{source}:{node.start_mark.line + 1}: the document expands "
                                  f"to more than {max_nodes} values (an alias bomb?)")
            continue
        if id(node) in expanded:
            continue
        if id(node) in on_path:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: an alias refers to a "
                              f"value that contains it")
        if node.tag not in allowed:
            tag = node.tag.replace(_STD, "!!")
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: tag {tag} is not allowed "
                              f"(plain values, lists and mappings only)")
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str, source: str = "<yaml>", *, max_nodes: int = MAX_NODES) -> Any:
    """Parse ``text`` into plain Python data (dicts, lists, str, int, float, bool, None)."""
    root = compose_yaml(text, source, max_nodes=max_nodes)
    if root is None:
        return None
    loader = PlainLoader("")
    try:
        return loader.construct_document(root)
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # e.g. an unhashable key
        raise ConfigError(f"{source}: cannot read the YAML ({' '.join(str(exc).split())})") from None
    finally:
        loader.dispose()


def read_spec_text(path: str | Path, what: str) -> str:
    """The text of a spec file (``what``: e.g. "study spec"), or a one-line ConfigError."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {str(p)!r}: {exc}") from None
