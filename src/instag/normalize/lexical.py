"""Step 2, rule aggregation: merge tags that are equal after lowercasing, de-punctuation and stemming.

paper.md §2.2 and ambiguity A4 (our reading): lowercase; every character that is not a letter or a digit
(Unicode-aware, so non-Latin tags keep their letters) becomes a space; runs of spaces collapse; each token
is stemmed with NLTK's PorterStemmer (needs no downloaded data). Tags with the same key merge; the merged
tag is named by its most frequent raw variant (ties: the alphabetically first). A tag whose key is empty
(only punctuation) or holds no letter at all (only digits and punctuation: ``"100"``, ``"1.1.1.1."``, which a
small tagger degenerates into and which name no intention) is dropped, counted, and the mapping table says so.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict

from .pool import TagPool

log = logging.getLogger(__name__)

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


@functools.lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


@functools.lru_cache(maxsize=200_000)
def _stem(token: str) -> str:
    return _stemmer().stem(token)


def rule_key(tag: str) -> str:
    """The key tags merge on: ``"Python-Debugging!"`` -> ``"python debug"``."""
    tokens = _NON_ALNUM.sub(" ", tag.lower()).split()
    return " ".join(_stem(t) for t in tokens)


def aggregate(pool: TagPool) -> dict:
    """Group the pool's tags by :func:`rule_key`; map each to its group's most frequent member."""
    counts = pool.counts().tolist()
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    mapping: dict[str, str | None] = {}
    empty = no_letter = 0
    for name, c in zip(pool.names, counts, strict=False):
        key = rule_key(name)
        if not key:
            mapping[name] = None
            empty += 1
            continue
        if not any(ch.isalpha() for ch in key):
            mapping[name] = None
            no_letter += 1
            continue
        groups[key].append((c, name))
    for members in groups.values():
        display = min(members, key=lambda cn: (-cn[0], cn[1]))[1]
        for _, name in members:
            mapping[name] = display
    out = len(groups)
    log.info(
        "lexical: %d tags -> %d (%d dropped with an empty key, %d with no letter)", pool.n_tags, out, empty, no_letter
    )
    return {
        "step": "lexical",
        "params": {
            "stemmer": "nltk.PorterStemmer",
            "case": "lower",
            "non_alphanumeric": "space",
            "needs_a_letter": True,
        },
        "tags_in": pool.n_tags,
        "tags_out": out,
        "dropped_empty_key": empty,
        "dropped_no_letter": no_letter,
        "mapping": mapping,
    }
