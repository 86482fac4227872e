"""Assistant-only labels, computed from character offsets, and the loss-mask audit.

FastChat's ``preprocess`` finds the assistant tokens by LLaMA token arithmetic; on other tokenizers it
mis-counts and masks whole samples without error (``../shared/NOTES.md``). Here a fast tokenizer tokenizes the
exact rendered string with ``return_offsets_mapping=True``; a token is trained on when it *starts* inside an
assistant span (:func:`instag.train.template.render`). That needs nothing from the tokenizer but offsets, so it
holds for any fast tokenizer; ``tests/unit/test_train_mask.py`` decodes the trained tokens of multi-turn samples
on two tokenizer families and gets back exactly the assistant turns and their end-of-turn tokens.

A token that starts before a span and ends inside it (a merge across the boundary) is counted as
``straddling``: it is left out of the loss, and the audit reports how many there were.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

IGNORE_INDEX = -100

#: Reasons a sample is set aside (rejected.jsonl) or flagged.
TRUNCATED = "truncated"  # longer than max_length: cut (kept) or dropped, per `over_length`
NO_TRAINABLE = "no_trainable_tokens"  # nothing left to learn (e.g. the first answer starts past max_length)
NO_ASSISTANT = "no_assistant_turn"  # a query without any answer
BAD_ROLES = "bad_roles"  # roles that the template cannot render


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    full_length: int  # tokens before truncation
    straddling: int = 0

    @property
    def trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def encode(tokenizer, text: str, spans: Sequence[tuple[int, int]], max_length: int | None = None) -> Encoded:
    """Token ids and labels (``-100`` outside the assistant spans) of one rendered conversation.

    Special tokens the tokenizer adds (BOS) have empty offsets and are never trained on. The sequence is cut to
    ``max_length`` tokens (``full_length`` keeps the uncut count).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("the label mask needs a fast tokenizer (offset mappings)")
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    starts = [s for s, _ in spans]
    labels = [IGNORE_INDEX] * len(ids)
    straddling = 0
    for i, (a, b) in enumerate(offsets):
        if b <= a:
            continue
        k = bisect.bisect_right(starts, a) - 1
        if k >= 0 and a < spans[k][1]:
            labels[i] = ids[i]
        elif k + 1 < len(spans) and a < spans[k + 1][0] < b:
            straddling += 1
    full = len(ids)
    if max_length is not None and full > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels, full, straddling)


@dataclass
class Audit:
    """What the loss mask did to a sample set; ``lost`` samples are not trained on at all."""

    samples: int = 0
    kept: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    truncated_kept: int = 0
    straddling_tokens: int = 0
    tokens: int = 0  # tokens of the kept samples (after truncation)
    trainable_tokens: int = 0
    rejected: list[dict] = field(default_factory=list)

    def reject(self, record_id: str, reason: str, detail: str, kept: bool = False, **extra) -> None:
        if not kept:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.rejected.append({"id": record_id, "reason": reason, "detail": detail, "kept": kept, **extra})

    @property
    def lost(self) -> int:
        return self.samples - self.kept

    @property
    def lost_share(self) -> float:
        return self.lost / self.samples if self.samples else 1.0

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "kept": self.kept,
            "lost": self.lost,
            "lost_share": round(self.lost_share, 6),
            "lost_by_reason": dict(sorted(self.reasons.items())),
            "truncated_kept": self.truncated_kept,
            "straddling_tokens": self.straddling_tokens,
            "tokens": self.tokens,
            "trainable_tokens": self.trainable_tokens,
        }
