"""Checks on free text shared by the stages that read queries (ingestion, tagging)."""

from __future__ import annotations

import unicodedata

#: Unicode categories that show nothing on their own: format (zero-width space/joiners, BOM, soft hyphen,
#: bidi marks), control (NUL and other C0/C1), separators, unassigned.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp", "Cn"})


def blank_reason(text: str) -> str | None:
    """Why ``text`` is no query at all, or None when it has something visible.

    >>> blank_reason(""), blank_reason(" \\n"), blank_reason("\\u200b\\u200d"), blank_reason("\\x00"), blank_reason("hi")
    ('empty query', 'whitespace-only query', 'invisible-only query', 'invisible-only query', None)
    """
    if text == "":
        return "empty query"
    if not text.strip():
        return "whitespace-only query"
    if all(ch.isspace() or unicodedata.category(ch) in INVISIBLE_CATEGORIES for ch in text):
        return "invisible-only query"
    return None
