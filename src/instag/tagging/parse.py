"""Reading tags out of an answer: the first JSON list of ``{"tag", "explanation"}`` objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..llm.parsing import iter_json


@dataclass
class Parsed:
    tags: list[dict] | None  # None: nothing usable
    error: str | None = None
    dropped: int = 0  # objects in the list that were not valid tags


def _clean(s: str) -> str:
    return " ".join(s.split())


def _first_list(text: str) -> tuple[Any, str | None]:
    """The first JSON value in ``text`` that is a list of objects (or a tag object / ``{"tags": [...]}``
    wrapper); else the first list at all; else the first decoding error."""
    first_error = first_list = None
    skip_to = 0
    for start, end, value, error in iter_json(text):
        if start < skip_to:
            continue
        if error is not None:
            first_error = first_error or f"invalid JSON at character {start}: {error}"
            continue
        if isinstance(value, dict):
            if "tag" in value:  # one tag object instead of a list of them
                value = [value]
            else:
                lists = [v for v in value.values() if isinstance(v, list)]
                if len(lists) != 1:  # not a wrapper such as {"tags": [...]} (JSON-object modes of APIs)
                    continue
                value = lists[0]
        if isinstance(value, list):
            if any(isinstance(v, dict) for v in value):
                return value, None
            if first_list is None:  # e.g. "[1]" in prose: used only when no list of objects follows
                first_list = value
            skip_to = end
    if first_list is not None:
        return first_list, None
    return None, first_error or "no JSON list in the answer"


def parse_tags(text: str | None) -> Parsed:
    """Parse a tagging answer: the first JSON list, its valid ``{"tag": str, "explanation": str}`` objects.

    Tags and explanations are stripped (inner whitespace collapsed); an object with a non-string or empty tag
    or a non-string explanation is dropped; a repeated tag (same text) keeps its first explanation. No valid
    object left is an error (the query is retried, then recorded as failed).

    >>> parse_tags('Sure! [{"tag": " Math ", "explanation": "arithmetic"}, {"tag": "Math", "explanation": "x"}]').tags
    [{'tag': 'Math', 'explanation': 'arithmetic'}]
    >>> parse_tags('[{"tag": "Math", "explanation": "cut').error
    'invalid JSON at character 0: Unterminated string starting at'
    """
    if text is None or not text.strip():
        return Parsed(None, "empty answer")
    value, error = _first_list(text)
    if value is None:
        return Parsed(None, error)
    tags, seen, dropped = [], set(), 0
    for item in value:
        if not isinstance(item, dict):
            dropped += 1
            continue
        tag, expl = item.get("tag"), item.get("explanation", "")
        if not isinstance(tag, str) or not isinstance(expl, str) or not _clean(tag):
            dropped += 1
            continue
        tag = _clean(tag)
        if tag in seen:
            continue
        seen.add(tag)
        tags.append({"tag": tag, "explanation": _clean(expl)})
    if not tags:
        why = "empty tag list" if not value else f"no valid tag object among {len(value)} list items"
        return Parsed(None, why, dropped)
    return Parsed(tags, None, dropped)


def job_parser(text: str) -> tuple[Parsed | None, str | None]:
    """:func:`parse_tags` in the shape the LLM-job layer takes: (value, error)."""
    parsed = parse_tags(text)
    return (parsed, None) if parsed.tags is not None else (None, parsed.error)
