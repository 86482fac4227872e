"""MT-Bench scores from judgment files: FastChat's averages, the paper's ± over repeats, bootstrap intervals.

A score is the mean of the valid judgments, per model and turn, as FastChat's ``show_result --mode single``
computes it (rows with score -1 dropped, then ``groupby(model, turn).mean()``; overall = the mean over both
turns' rows). Failed judgments (no score) are counted, never averaged. Beside that:

- ``std``: the sample standard deviation (ddof=1) of the score computed separately for each judging repeat
  (the paper's "mean ± std of three GPT-4 judgments"); blank with one repeat;
- ``ci_low``/``ci_high``: a seeded percentile bootstrap over questions (questions resampled with replacement,
  every judgment of a drawn question kept), ``n_boot`` draws, ``1 - alpha`` coverage;
- per category, the same per model, category and turn;
- a run trained under several seeds gets one row per seed and a row ``seed = mean`` with the mean of the
  seeds' scores and their spread (std over seeds, in ``std``).

Reads the judgment files :mod:`.judge` writes (a header line, then FastChat's judgment records plus ours) and
plain FastChat judgment files (no header; score -1 = failure).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..records import JUDGMENT

MAIN_COLUMNS = [
    "model",
    "ablation",
    "variant",
    "seed",
    "size",
    "coverage",
    "tags_per_query",
    "turn1",
    "turn2",
    "overall",
    "std",
    "ci_low",
    "ci_high",
    "questions",
    "repeats",
    "judged",
    "failed",
    "judge",
    "judge_reported",
    "judge_note",
    "reference_set",
]
CATEGORY_COLUMNS = [
    "model",
    "ablation",
    "variant",
    "seed",
    "category",
    "turn1",
    "turn2",
    "overall",
    "std",
    "ci_low",
    "ci_high",
    "judged",
    "failed",
    "judge",
    "judge_note",
]


def read_judgments(path: str | Path) -> tuple[dict | None, list[dict]]:
    """(header or None, records) of one of our judgments files or FastChat's; FastChat's -1 becomes a
    failure (score None)."""
    header, rows = JUDGMENT.read_headed(path)
    out = []
    for rec in rows:
        score = None if rec["score"] == -1 else rec["score"]  # FastChat's marker for "no score found"
        out.append({**rec, "score": score, "repeat": rec.get("repeat", 0), "category": rec.get("category")})
    return header, out


def fastchat_averages(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{model: {"1": mean, "2": mean, "overall": mean}} exactly as show_result's single mode."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["score"] is None:
            continue
        acc[r["model"]][str(r["turn"])].append(float(r["score"]))
        acc[r["model"]]["overall"].append(float(r["score"]))
    return {m: {k: sum(v) / len(v) for k, v in d.items()} for m, d in acc.items()}


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def bootstrap_ci(rows: list[dict], *, n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean score, resampling questions (with all their judgments)."""
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for r in rows:
        counts[r["question_id"]] += 0
        if r["score"] is not None:
            sums[r["question_id"]] += float(r["score"])
            counts[r["question_id"]] += 1
    qids = sorted(counts)
    if not qids or n_boot <= 0 or sum(counts.values()) == 0:
        return math.nan, math.nan
    s = np.array([sums[q] for q in qids])
    c = np.array([counts[q] for q in qids], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(qids), size=(n_boot, len(qids)))
    num, den = s[idx].sum(axis=1), c[idx].sum(axis=1)
    means = num[den > 0] / den[den > 0]
    if means.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def repeat_std(rows: list[dict]) -> float:
    """Sample std (ddof=1) of the per-repeat mean scores; NaN with fewer than two repeats."""
    per: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r["score"] is not None:
            per[r["repeat"]].append(float(r["score"]))
    means = [_mean(v) for _, v in sorted(per.items()) if v]
    return float(np.std(means, ddof=1)) if len(means) >= 2 else math.nan


def _stats(rows: list[dict], n_boot: int, seed: int) -> dict:
    valid = [r for r in rows if r["score"] is not None]
    t1 = [float(r["score"]) for r in valid if r["turn"] == 1]
    t2 = [float(r["score"]) for r in valid if r["turn"] == 2]
    lo, hi = bootstrap_ci(rows, n_boot=n_boot, seed=seed)
    return {
        "turn1": _mean(t1),
        "turn2": _mean(t2),
        "overall": _mean([float(r["score"]) for r in valid]),
        "std": repeat_std(rows),
        "ci_low": lo,
        "ci_high": hi,
        "judged": len(valid),
        "failed": len(rows) - len(valid),
    }


def _r(x, nd=4):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def load_stats(files: list[str | Path]) -> dict[tuple[str, str], dict]:
    """Sampling stats (results/sampling/<ablation>/<variant>.stats.json) by (ablation, variant)."""
    out = {}
    for f in files:
        p = Path(f)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(p, f"cannot read sampling stats: {exc}") from None
        out[(p.parent.name, p.name.removesuffix(".stats.json"))] = d
    return out


def summarize(
    judgment_files: list[str | Path],
    *,
    sample_stats: dict[tuple[str, str], dict] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """(main rows, per-category rows) over every judgment file (one model each, or FastChat files)."""
    sample_stats = sample_stats or {}
    by_model: dict[str, list[dict]] = defaultdict(list)
    meta: dict[str, dict] = {}
    for f in judgment_files:
        header, rows = read_judgments(f)
        for r in rows:
            by_model[r["model"]].append(r)
            if r["model"] not in meta:
                meta[r["model"]] = header or {}
    main, cats = [], []
    for model in sorted(by_model):
        rows = by_model[model]
        h = meta[model]
        mi = h.get("model_info") or {}
        jd = h.get("judge") or {}
        judge = jd.get("model") or (rows[0]["judge"][0] if isinstance(rows[0].get("judge"), list) else "")
        note = jd.get("label", "")
        st = sample_stats.get((mi.get("ablation") or "", mi.get("variant") or ""), {})
        ident = {
            "model": model,
            "ablation": mi.get("ablation") or "",
            "variant": mi.get("variant") or "",
            "seed": "" if mi.get("seed") is None else mi.get("seed"),
        }
        s = _stats(rows, n_boot, seed)
        main.append(
            {
                **ident,
                "size": st.get("size", ""),
                "coverage": _r(st.get("coverage")),
                "tags_per_query": _r(st.get("avg_tags_per_query")),
                **{k: _r(v) if isinstance(v, float) else v for k, v in s.items()},
                "questions": len({r["question_id"] for r in rows}),
                "repeats": len({r["repeat"] for r in rows}),
                "judge": judge,
                "judge_reported": jd.get("reported_model") or "",
                "judge_note": note,
                "reference_set": ((h.get("data") or {}).get("reference_set")) or "",
            }
        )
        by_cat: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_cat[r.get("category") or "?"].append(r)
        for cat in sorted(by_cat):
            c = _stats(by_cat[cat], n_boot, seed)
            cats.append(
                {
                    **ident,
                    "category": cat,
                    **{k: _r(v) if isinstance(v, float) else v for k, v in c.items()},
                    "judge": judge,
                    "judge_note": note,
                }
            )
    main.extend(seed_means(main))
    return main, cats


def seed_means(rows: list[dict]) -> list[dict]:
    """A ``seed = mean`` row per (ablation, variant) trained under several seeds: mean and spread over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["ablation"] and r["seed"] != "":
            groups[(r["ablation"], r["variant"], r["judge"])].append(r)
    out = []
    for (ab, var, judge), rs in sorted(groups.items()):
        if len(rs) < 2:
            continue
        vals = {k: [float(r[k]) for r in rs if r[k] != ""] for k in ("turn1", "turn2", "overall")}
        out.append(
            {
                **{
                    k: rs[0][k]
                    for k in (
                        "size",
                        "coverage",
                        "tags_per_query",
                        "judge_reported",
                        "judge_note",
                        "reference_set",
                        "questions",
                        "repeats",
                    )
                },
                "model": f"{ab}/{var}/mean",
                "ablation": ab,
                "variant": var,
                "seed": "mean",
                "turn1": _r(_mean(vals["turn1"])),
                "turn2": _r(_mean(vals["turn2"])),
                "overall": _r(_mean(vals["overall"])),
                "std": _r(float(np.std(vals["overall"], ddof=1)) if len(vals["overall"]) >= 2 else math.nan),
                "ci_low": "",
                "ci_high": "",
                "judged": sum(int(r["judged"]) for r in rs),
                "failed": sum(int(r["failed"]) for r in rs),
                "judge": judge,
            }
        )
    return out


def write_tables(
    judgment_files: list[str | Path],
    table: str | Path,
    category_table: str | Path,
    *,
    stats_files: list[str | Path] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    from ..io import write_tsv

    main, cats = summarize(judgment_files, sample_stats=load_stats(list(stats_files)), n_boot=n_boot, seed=seed)
    write_tsv(table, main, MAIN_COLUMNS)
    write_tsv(category_table, cats, CATEGORY_COLUMNS)
    return {"models": len([r for r in main if r["seed"] != "mean"]), "rows": len(main), "category_rows": len(cats)}
