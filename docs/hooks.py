"""MkDocs hook: the code's docstrings use Sphinx roles (:func:`x`, :class:`~a.b.C`); show them as code."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>~?([^<]*)</code>")


def on_page_content(html: str, **kwargs) -> str:
    """``:func:<code>~rem.x.f</code>`` → ``<code>f</code>`` (the tilde shows the last name, as Sphinx does)."""
    return _ROLE.sub(
        lambda m: f"<code>{m.group(1).rsplit('.', 1)[-1] if m.group(0).count('~') else m.group(1)}</code>", html
    )
