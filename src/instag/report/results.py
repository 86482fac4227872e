"""Read-only access to a run's ``results/``: the flat tables and the few statistics files the report uses.

Every reader tolerates a stage that has not run: a missing table is ``None`` (the claims table then says
"not run"), and the column names of the later stages' tables are looked up among a few accepted spellings, so
the report does not break when a stage names a column slightly differently.
"""

from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path

from ..io import read_tsv

#: MT-Bench categories in FastChat's order.
MTBENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


def num(value) -> float | None:
    """A table cell as a float (None for blanks and non-numbers)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    text = str(value).strip().rstrip("%")
    if not text:
        return None
    try:
        x = float(text)
    except ValueError:
        return None
    return None if math.isnan(x) else x


def pick(row: dict, *names: str):
    """The first of ``names`` that ``row`` has with a non-blank value (None when none)."""
    for name in names:
        if name in row and str(row[name]).strip() != "":
            return row[name]
    return None


class Results:
    """The tables of one results folder (``results/``), read lazily; ``table(name)`` is None when absent."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.tables_dir = self.root / "tables"
        self._cache: dict[str, list[dict] | None] = {}

    def table(self, name: str) -> list[dict] | None:
        if name not in self._cache:
            path = self.tables_dir / f"{name}.tsv"
            self._cache[name] = read_tsv(path) if path.is_file() else None
        return self._cache[name]

    def json(self, relpath: str) -> dict | None:
        path = self.root / relpath
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)

    def kv(self, name: str, key: str = "measure", value: str = "this_run") -> dict[str, str] | None:
        """A two-column (measure, value) table as a dict."""
        rows = self.table(name)
        return None if rows is None else {r[key]: r.get(value, "") for r in rows if key in r}

    # ------------------------------------------------------------------ per stage

    @cached_property
    def normalization_steps(self) -> dict[str, dict] | None:
        rows = self.table("normalization_steps")
        return None if rows is None else {r["step"]: r for r in rows}

    def normalize_step(self, step: str) -> dict | None:
        """The statistics of one normalization step (results/normalize/<step>.json), without its mapping."""
        res = self.json(f"normalize/{step}.json")
        return None if res is None else {k: v for k, v in res.items() if k != "mapping"}

    @cached_property
    def instagger(self) -> dict | None:
        """instagger.tsv as one dict, whether long (measure|metric, value) or one wide row."""
        rows = self.table("instagger")
        if rows is None:
            return None
        if rows and any(k in rows[0] for k in ("measure", "metric")) and "value" in rows[0]:
            return {pick(r, "measure", "metric"): r["value"] for r in rows}
        if rows and "system" in rows[0] and "f1" in rows[0]:
            return instagger_summary(rows)
        return dict(rows[0]) if rows else {}

    @cached_property
    def mt_bench(self) -> list[dict] | None:
        return self.table("mt_bench")

    def mtbench_score(self, row: dict) -> float | None:
        return num(pick(row, "overall", "score", "mean", "mt_bench", "mt_bench_score", "score_mean"))

    def mtbench_std(self, row: dict) -> float | None:
        return num(pick(row, "std", "score_std", "stdev"))

    def mtbench_rows(self, ablation: str | None = None, variant: str | None = None) -> list[dict]:
        rows = self.mt_bench or []
        return [
            r
            for r in rows
            if (ablation is None or r.get("ablation") == ablation) and (variant is None or r.get("variant") == variant)
        ]

    @cached_property
    def mtbench_categories(self) -> list[dict] | None:
        """Per-category scores as long rows (model, category, score), from a long or a wide table."""
        rows = self.table("mt_bench_categories") or self.table("mt_bench_category")
        if rows is None:
            return None
        out = []
        for r in rows:
            model = model_label(r)
            if "category" in r:
                out.append(
                    {"model": model, "category": r["category"], "score": num(pick(r, "overall", "score", "mean"))}
                )
            else:
                for c in MTBENCH_CATEGORIES:
                    if c in r:
                        out.append({"model": model, "category": c, "score": num(r[c])})
        return out


def model_label(row: dict) -> str:
    """A short name for one fine-tuned model row: ablation/variant (seed), else its model column."""
    if row.get("ablation") and row.get("variant"):
        seed = row.get("seed", "")
        return f"{row['ablation']}/{row['variant']}" + (f" s{seed}" if seed not in ("", "0", None) else "")
    return str(pick(row, "model", "name", "run") or "?")


def instagger_summary(rows: list[dict], system: str = "distilled") -> dict:
    """The distilled tagger's numbers from instagger.tsv's long rows (system, gold, measure, average, f1, ...):
    micro-averaged F1 against the raw gold tags where present (else the first gold), its model and queries."""
    mine = [r for r in rows if r.get("system") == system] or rows
    golds = list(dict.fromkeys(r.get("gold", "") for r in mine))
    gold = "raw" if "raw" in golds else golds[0]
    out: dict = {"gold": gold}
    for r in mine:
        if r.get("gold", "") != gold or r.get("average", "micro") not in ("micro", ""):
            continue
        out[f"{r.get('measure')}_f1"] = r.get("f1")
        out.setdefault("base_model", r.get("model", ""))
        out.setdefault("eval_samples", r.get("queries", ""))
        if r.get("measure") == "fuzzy":
            m = re.search(r"cosine\s*>\s*([0-9.]+)", r.get("match", ""))
            if m:
                out["fuzzy_threshold"] = m.group(1)
    m = re.search(r"(\d+(?:\.\d+)?)\s*([MB])\b", str(out.get("base_model", "")), re.I)
    if m:
        out["base_params"] = float(m.group(1)) / (1000.0 if m.group(2).upper() == "M" else 1.0)
    return out
