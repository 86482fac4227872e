"""Reading JSON out of a model's text: the first value of the wanted shape, wherever it starts.

Models wrap JSON in prose or code fences, cut it off at ``max_tokens``, or answer with a wrapper object.
:func:`iter_json` walks every ``[`` / ``{`` in the text left to right and decodes the JSON value starting
there (nested values included); :func:`first_json` returns the first one a caller's ``pick`` accepts, or the
first decoding error when none does. Stages build their parsers on these (``instag.tagging.parse``,
``instag.quality``), so there is one way of finding JSON in text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

_DECODER = json.JSONDecoder()


def iter_json(text: str, openers: str = "[{") -> Iterator[tuple[int, int, Any, str | None]]:
    """``(start, end, value, error)`` for each position of an opener in ``text``: the JSON value decoded there
    (``error`` None) or why it could not be decoded (``value`` None, ``end == start``).

    >>> [(s, v) for s, _, v, e in iter_json('x [1, {"a": 2}] {') if e is None]
    [(2, [1, {'a': 2}]), (6, {'a': 2})]
    """
    pos = 0
    while True:
        starts = [i for i in (text.find(c, pos) for c in openers) if i >= 0]
        if not starts:
            return
        start = min(starts)
        pos = start + 1
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            yield start, start, None, exc.msg
            continue
        yield start, end, value, None


def first_json(
    text: str | None, pick: Callable[[Any], Any] = lambda v: v, openers: str = "[{"
) -> tuple[Any, str | None]:
    """``(value, None)``: ``pick(v)`` of the first JSON value ``v`` in ``text`` for which it is not None;
    ``(None, error)`` when there is none (the first decoding error, or "no JSON value")."""
    if text is None or not text.strip():
        return None, "empty answer"
    first_error = None
    for start, _end, value, error in iter_json(text, openers):
        if error is not None:
            first_error = first_error or f"invalid JSON at character {start}: {error}"
            continue
        picked = pick(value)
        if picked is not None:
            return picked, None
    what = {"[": "list", "{": "object"}.get(openers, "value")
    return None, first_error or f"no JSON {what} in the answer"
