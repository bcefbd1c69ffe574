"""The one Jinja2 environment for robustfair's HTML pages (the audit card, the study report):
templates from the package folder ``robustfair/templates``, every value HTML-escaped unless a
template says otherwise, and an undefined name an error rather than an empty string.

>>> "<b>" in render_string("{{ x }}", x="<b>")
False
"""
from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

__all__ = ["data_uri", "environment", "render", "render_string"]


@lru_cache(maxsize=1)
def environment():
    """The shared :class:`jinja2.Environment` (built once; jinja2 is imported on first use)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("robustfair", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    """Render the template file ``robustfair/templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


def render_string(source: str, **context: Any) -> str:
    """Render a template given as text, with the same settings (escaping, strict names)."""
    return environment().from_string(source).render(**context)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for a page that carries its figures inside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
