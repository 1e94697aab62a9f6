"""A griffe extension for the API reference: the package's Sphinx-style docstrings as Markdown.

The docstrings are written for readers of the code and for ``help()``: cross-references as
Sphinx roles (``:class:`~fastapi_tenancy.Tenancy```) and examples after ``Usage::``. mkdocstrings
renders Markdown, so each role becomes an optional autorefs link (a link where the reference
documents the target, code text where it does not; a bare name is looked up in the object's own
module) and a closing ``::`` a plain colon before the indented example. Loaded by mkdocs.yml.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)([\w.]+)`")
_LITERAL_BLOCK = re.compile(r"::$", re.MULTILINE)


def markdown(docstring: str, module: str) -> str:
    """``docstring`` with its Sphinx roles as autorefs links and ``::`` as ``:``."""

    def link(match: re.Match[str]) -> str:
        short, path = match.groups()
        shown = path.rsplit(".", 1)[-1] if short else path
        target = path if "." in path else f"{module}.{path}"
        return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'

    return _LITERAL_BLOCK.sub(":", _ROLE.sub(link, docstring))


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring griffe loads, before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value, obj.module.path)
