"""Exact-match and fuzzy tag F1 between predicted and gold tag sets (paper.md §9.1, A13).

Both measures compare *sets* of tag strings per query, after :func:`norm_tag` (lowercased, stripped; repeats
within a set count once):

- **exact**: a predicted tag is a true positive when the same normalized string is among the gold tags.
- **fuzzy**: a predicted tag matches when its cosine similarity to *some* gold tag passes the threshold
  (``> threshold``, the paper's "PhraseBERT cosine similarity > 0.8"); precision = matched predictions /
  predictions. Recall is symmetric: a gold tag is recalled when its similarity to some prediction passes the
  threshold; recall = recalled gold tags / gold tags. An identical string always matches (similarity 1).

Averaging (both reported, A13):

- **micro** over tags: P = sum of matched predictions / sum of predictions, R = sum of recalled gold / sum of
  gold, F1 = 2PR / (P + R).
- **macro** over queries: per query P_i, R_i and F1_i (0 where undefined: no prediction gives P_i = 0, and
  F1_i = 0 when P_i + R_i = 0), then the mean over queries.

Confidence intervals: a seeded percentile bootstrap over queries (resample queries with replacement, recompute
each measure); the same seed gives the same intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: text -> L2-normalized vectors (rows in order); e.g. ``SentenceTransformerEmbedder.encode``
EncodeFn = Callable[[list[str]], np.ndarray]


def norm_tag(tag: str) -> str:
    """The form tags are compared in: lowercased, stripped (inner whitespace collapsed)."""
    return " ".join(str(tag).lower().split())


def tag_set(tags: Sequence[str] | None) -> list[str]:
    """Normalized tags, repeats removed, first-seen order kept; empty strings dropped."""
    return list(dict.fromkeys(t for t in (norm_tag(x) for x in (tags or [])) if t))


@dataclass
class Counts:
    """Per-query counts: matched predictions, predictions, recalled gold tags, gold tags (float arrays)."""

    tp_pred: np.ndarray
    n_pred: np.ndarray
    tp_gold: np.ndarray
    n_gold: np.ndarray

    def __len__(self) -> int:
        return len(self.n_pred)


def exact_counts(preds: Sequence[Sequence[str] | None], golds: Sequence[Sequence[str] | None]) -> Counts:
    """Exact-match counts per query (see the module docstring)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold sets")
    rows = []
    for p, g in zip(preds, golds, strict=True):
        ps, gs = tag_set(p), tag_set(g)
        common = len(set(ps) & set(gs))
        rows.append((common, len(ps), common, len(gs)))
    return _counts(rows)


def fuzzy_counts(
    preds: Sequence[Sequence[str] | None],
    golds: Sequence[Sequence[str] | None],
    encode: EncodeFn,
    threshold: float = 0.8,
) -> Counts:
    """Fuzzy-match counts per query: every distinct tag is embedded once (``encode`` returns L2-normalized rows);
    a prediction matches when its best cosine similarity to a gold tag is ``> threshold``, a gold tag is
    recalled when its best similarity to a prediction is ``> threshold``."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold sets")
    sets = [(tag_set(p), tag_set(g)) for p, g in zip(preds, golds, strict=True)]
    vocab = list(dict.fromkeys(t for ps, gs in sets for t in (*ps, *gs)))
    index = {t: i for i, t in enumerate(vocab)}
    vecs = np.asarray(encode(vocab), dtype=np.float64) if vocab else np.zeros((0, 1))
    if len(vecs) != len(vocab):
        raise ValueError(f"the embedder returned {len(vecs)} vectors for {len(vocab)} tags")
    rows = []
    for ps, gs in sets:
        if not ps or not gs:
            rows.append((0, len(ps), 0, len(gs)))
            continue
        sim = vecs[[index[t] for t in ps]] @ vecs[[index[t] for t in gs]].T
        # the same string is the same tag whatever the float rounding of its self-similarity
        same = np.array([[a == b for b in gs] for a in ps])
        hit = (sim > threshold) | same
        rows.append((int(hit.any(axis=1).sum()), len(ps), int(hit.any(axis=0).sum()), len(gs)))
    return _counts(rows)


def _counts(rows: list[tuple[int, int, int, int]]) -> Counts:
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return Counts(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return _safe_div(2 * p * r, p + r)


def micro(c: Counts, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Micro P/R/F1; with ``idx`` (resamples x queries) one value per resample."""
    if idx is None:
        idx = np.arange(len(c))[None, :]
    p = _safe_div(c.tp_pred[idx].sum(axis=1), c.n_pred[idx].sum(axis=1))
    r = _safe_div(c.tp_gold[idx].sum(axis=1), c.n_gold[idx].sum(axis=1))
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


def macro(c: Counts, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Macro (mean over queries) P/R/F1; with ``idx`` one value per resample."""
    if idx is None:
        idx = np.arange(len(c))[None, :]
    p_q = _safe_div(c.tp_pred, c.n_pred)
    r_q = _safe_div(c.tp_gold, c.n_gold)
    f_q = _f1(p_q, r_q)
    if idx.shape[1] == 0:
        z = np.zeros(idx.shape[0])
        return {"precision": z, "recall": z, "f1": z}
    return {"precision": p_q[idx].mean(axis=1), "recall": r_q[idx].mean(axis=1), "f1": f_q[idx].mean(axis=1)}


def score(c: Counts, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """Micro and macro P/R/F1 with percentile bootstrap intervals over queries.

    Returns ``{"micro": {"precision", "recall", "f1", "f1_low", "f1_high", "precision_low", ...}, "macro": ...}``
    (values are fractions in [0, 1]; intervals None when there are no queries or ``n_boot`` is 0).
    """
    n = len(c)
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, n, size=(n_boot, n)) if n and n_boot else None
    out = {}
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    for name, fn in (("micro", micro), ("macro", macro)):
        point = {k: float(v[0]) for k, v in fn(c).items()} if n else {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        row = dict(point)
        resampled = fn(c, boot) if boot is not None else None
        for k in ("precision", "recall", "f1"):
            if resampled is None:
                row[f"{k}_low"] = row[f"{k}_high"] = None
            else:
                row[f"{k}_low"] = float(np.quantile(resampled[k], lo_q))
                row[f"{k}_high"] = float(np.quantile(resampled[k], hi_q))
        out[name] = row
    return out
