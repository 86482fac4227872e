"""Tag quality evaluation with an LLM judge (paper.md §3): tag precision and tag consistency.

What the paper says (paper.md §3.1-§3.3): precision asks whether every tag assigned to a query correctly
relates to the query's intentions, judged per query, all-or-nothing; consistency takes a tag t and a set I of
randomly chosen instructions carrying t and asks whether t's meaning shifts across I. GPT-4 judged 2,000
cases of each (96.1% precision, 86.6% consistency); three humans judged 40 cases.

Where the paper is silent, our choices (each also a config key or stated here):

- the judging prompts and output format were not found: ours are package data
  (``prompts/quality_precision.txt``, ``prompts/quality_consistency.txt``) with a JSON verdict
  ``{"explanation", "verdict": "yes" | "no"}`` (``prompts/quality_schema.json``), requested through
  ``GenerationParams.json_schema`` (grammar-constrained for local backends) and parsed leniently (the first
  JSON object in the answer);
- the unit of a precision case is one query (a user turn) with its normalized tags, sampled uniformly among
  tagged queries with at least one tag;
- a consistency case draws a tag uniformly among the tags carried by at least ``min_instances`` queries (so
  the long tail is represented, not only the head), then ``set_size`` of its queries at random (the size of I
  is not found; default 5), fewer when the tag has fewer;
- long instructions are cut to ``max_query_chars`` characters in the prompts;
- a judgment that cannot be parsed (or a failed call) after the re-asks is a counted failure, kept in the
  judgments file with its raw text and left out of the rate's denominator; rates come with a Wilson 95% interval;
- the human-annotation part (3 annotators, Fleiss/Cohen kappa) is not reproduced.

All calls go through the LLM-job layer (:mod:`instag.llm.job`, stage ``quality``): the content-addressed
cache (a rerun costs nothing; raw judgments stay inspectable with ``instag cache failures``), the cost estimate
and the spend cap counted over every judge job, and bounded re-asks of unparseable verdicts (``max_retries``
new samples at ``retry_temperature``). The judge is any backend spec (paper: GPT-4 via ``openai``).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, InputError
from .io import write_jsonl, write_tsv
from .llm.base import ChatRequest, GenerationParams
from .llm.job import JobSettings, LLMJob
from .llm.parsing import first_json
from .llm.prompts import content_hash, fill, load_prompt, load_schema
from .records import NORMALIZED, RECORD, queries

log = logging.getLogger(__name__)

KINDS = ("precision", "consistency")
#: GPT-4's rates in the paper (paper.md §3.3); the human majority judged 100% for both.
PAPER_RATES = {"precision": 0.961, "consistency": 0.866}
#: the fields each judging template fills, once each
FIELDS = {"precision": ("instruction", "tags"), "consistency": ("tag", "instructions")}


def template(kind: str) -> str:
    """The packaged judging template of ``kind`` (``prompts/quality_<kind>.txt``)."""
    text = load_prompt(f"quality_{kind}", key="quality")
    missing = [f for f in FIELDS[kind] if f"{{{f}}}" not in text]
    if missing:
        raise ConfigError("quality", f"the {kind} template lacks {', '.join('{' + f + '}' for f in missing)}")
    return text


def judge_schema() -> dict:
    return load_schema("quality_schema")


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def render_precision(template: str, instruction: str, tags: Sequence[str], max_chars: int) -> str:
    return fill(
        template, {"instruction": _cut(instruction, max_chars), "tags": json.dumps(list(tags), ensure_ascii=False)}
    )


def render_consistency(template: str, tag: str, instructions: Sequence[str], max_chars: int) -> str:
    listed = "\n".join(f"[{i}] {_cut(t, max_chars)}" for i, t in enumerate(instructions, start=1))
    return fill(template, {"tag": tag, "instructions": listed})


def parse_verdict(text: str | None) -> tuple[str | None, str, str | None]:
    """``(verdict, explanation, error)`` from a judge's output; the first JSON object in it is read."""
    if not text:
        return None, "", "empty output"
    obj, _ = first_json(text, lambda v: v if isinstance(v, dict) else None, openers="{")
    if obj is None:
        return None, "", "no JSON object in the output"
    verdict = str(obj.get("verdict", "")).strip().lower()
    explanation = str(obj.get("explanation", ""))
    if verdict not in ("yes", "no"):
        return None, explanation, f"verdict is {obj.get('verdict')!r}, not yes/no"
    return verdict, explanation, None


def _job_parser(text: str) -> tuple[tuple[str, str] | None, str | None]:
    verdict, explanation, error = parse_verdict(text)
    return ((verdict, explanation), None) if error is None else (None, error)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sample_cases(
    normalized: Sequence[dict],
    *,
    n_precision: int,
    n_consistency: int,
    set_size: int = 5,
    min_instances: int = 2,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Draw the precision and consistency cases (query references only; texts are looked up later)."""
    rng = random.Random(seed)
    tagged: list[tuple[str, int, list[str]]] = []
    for rec in normalized:
        queries = rec.get("queries")
        if queries is None:  # records without per-query tags: a single-query record's tags are its query's
            queries = [rec["tags"]]
        for turn, tags in enumerate(queries):
            if tags:
                tagged.append((rec["id"], turn, list(tags)))
    precision = [
        {"kind": "precision", "case": i, "queries": [{"id": rid, "turn": turn}], "tags": tags}
        for i, (rid, turn, tags) in enumerate(rng.sample(tagged, min(n_precision, len(tagged))))
    ]
    by_tag: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for rid, turn, tags in tagged:
        for t in tags:
            by_tag[t].append((rid, turn))
    eligible = sorted(t for t, inst in by_tag.items() if len(inst) >= min_instances)
    consistency = []
    for i, tag in enumerate(rng.sample(eligible, min(n_consistency, len(eligible)))):
        inst = rng.sample(by_tag[tag], min(set_size, len(by_tag[tag])))
        consistency.append(
            {"kind": "consistency", "case": i, "tag": tag, "queries": [{"id": rid, "turn": t} for rid, t in inst]}
        )
    return {
        "precision": precision,
        "consistency": consistency,
        "eligible": {"precision": len(tagged), "consistency": len(eligible)},
    }


def _query_texts(records_files: Sequence[str | Path], wanted: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in records_files:
        for rec in RECORD.rows(path):
            if rec["id"] in wanted:
                out[rec["id"]] = queries(rec)
    return out


def evaluate(
    normalized: str | Path,
    records_files: Sequence[str | Path],
    out_judgments: str | Path,
    out_table: str | Path,
    *,
    judge: dict,
    cache_dir: str | Path | None = "cache/llm",
    n_precision: int = 2000,
    n_consistency: int = 2000,
    set_size: int = 5,
    min_instances: int = 2,
    seed: int = 0,
    max_query_chars: int = 2000,
    max_tokens: int = 256,
    max_retries: int = 2,
    retry_temperature: float = 0.7,
    backend=None,
    spend_cap_usd: float | None = None,
    prices: dict | None = None,
    cost_estimate: str | Path | None = None,
    threads: int | None = None,
) -> dict:
    """Sample cases, judge them (cached), write every judgment and the rates table; return a summary.

    ``backend`` (tests) replaces the one built from ``judge``; the cache still wraps it. Before any call the
    estimated requests, tokens and cost (``prices``: USD per 1M tokens by model; blank without a price) are
    logged and written to ``cost_estimate``; with ``spend_cap_usd`` the judging stops (raising
    ``SpendCapExceeded``) before the stage's spend, counted over every judge job in the cache, would pass the
    cap, with every answer so far in the cache. Cache hits cost nothing.

    Args:
        normalized: normalized records (results/normalize/normalized.jsonl)
        records_files: ingested records files (the query texts)
        out_judgments: judgments JSONL to write
        out_table: rates TSV to write
        judge: judge backend spec as JSON, e.g. '{"backend": "embedded"}'
        cache_dir: LLM call cache folder (none: no cache)
        n_precision: precision cases (paper 2,000)
        n_consistency: consistency cases (paper 2,000)
        set_size: instructions per consistency case (not in the paper)
        min_instances: queries a tag needs to be drawn as a consistency case
        seed: seed of the case sampling
        max_query_chars: instructions are cut to this many characters in the prompts
        max_tokens: judge output budget in tokens
        max_retries: re-asks of an unparseable verdict (new samples)
        retry_temperature: temperature of the re-asks
        spend_cap_usd: most the judge stage may spend, over all its jobs (none: no cap)
        prices: JSON, USD per 1M prompt/completion tokens by model name
        cost_estimate: TSV to write the cost estimate to, before any call
        threads: CPU threads of a local judge model
    """
    recs = list(NORMALIZED.rows(normalized))
    cases = sample_cases(
        recs,
        n_precision=n_precision,
        n_consistency=n_consistency,
        set_size=set_size,
        min_instances=min_instances,
        seed=seed,
    )
    all_cases = cases["precision"] + cases["consistency"]
    texts = _query_texts(records_files, {ref["id"] for c in all_cases for ref in c["queries"]})
    templates = {k: template(k) for k in KINDS}
    schema = judge_schema()
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens, json_schema=schema)
    requests = []
    for c in all_cases:
        try:
            instr = [texts[ref["id"]][ref["turn"]] for ref in c["queries"]]
        except (KeyError, IndexError):
            ref = c["queries"][0]
            raise InputError(normalized, f"record {ref['id']} turn {ref['turn']} is in no records file") from None
        if c["kind"] == "precision":
            prompt = render_precision(templates["precision"], instr[0], c["tags"], max_query_chars)
        else:
            prompt = render_consistency(templates["consistency"], c["tag"], instr, max_query_chars)
        requests.append(ChatRequest([{"role": "user", "content": prompt}], params, meta={"case": c["case"]}))

    settings = JobSettings(
        backend=judge,
        cache_dir=None if cache_dir is None else str(cache_dir),
        prices=dict(prices or {}),
        spend_cap_usd=spend_cap_usd,
        max_retries=max_retries,
        retry_temperature=retry_temperature,
        section="quality",
        backend_key="judge",
    )
    with LLMJob(
        settings, stage="quality", namespace=content_hash([templates, schema]), threads=threads, backend=backend
    ) as job:
        est = job.estimate(requests)
        log.info("judge cost estimate (completion = max_tokens, an upper bound): %s", est)
        if est["usd"] is None:
            log.warning("no price for judge model %s in quality.prices: cost estimate left blank", est["model"])
        if cost_estimate is not None:
            write_tsv(cost_estimate, [{"stage": "quality", **est}])
        results = job.run(requests, parse=_job_parser) if requests else []
        info = job.backend_info
        stats = job.stats
    ident = {"backend": info["backend"], "model": info["model"]}

    lines = []
    for c, r in zip(all_cases, results, strict=True):
        verdict, explanation = r.value if r.ok else (None, "")
        lines.append(
            {
                **c,
                "verdict": verdict,
                "positive": None if verdict is None else verdict == "yes",
                "explanation": explanation,
                "status": "ok" if r.ok else "failed",
                "error": r.error,
                "raw": r.raw,
                "attempts": r.attempts,
                **ident,
            }
        )
    write_jsonl(out_judgments, lines)

    judge_name = f"{ident['backend']}:{ident['model']}"
    rows = []
    for kind in KINDS:
        mine = [x for x in lines if x["kind"] == kind]
        judged = [x for x in mine if x["status"] == "ok"]
        pos = sum(1 for x in judged if x["positive"])
        lo, hi = wilson(pos, len(judged))
        wanted = n_precision if kind == "precision" else n_consistency
        note = "" if mine else ("no case requested" if wanted <= 0 else f"no eligible case for {kind}")
        rows.append(
            {
                "metric": kind,
                "judge": judge_name,
                "cases": len(mine),
                "judged": len(judged),
                "failed": len(mine) - len(judged),
                "positive": pos,
                "rate": pos / len(judged) if judged else float("nan"),
                "ci95_low": lo,
                "ci95_high": hi,
                "set_size": set_size if kind == "consistency" else 1,
                "paper_gpt4": PAPER_RATES[kind],
                "paper_human": 1.0,
                "note": note,
            }
        )
    write_tsv(out_table, rows)
    summary = {r["metric"]: {k: r[k] for k in ("cases", "judged", "failed", "rate")} for r in rows}
    summary["cache"] = stats
    log.info("tag quality: %s", summary)
    return summary


# --------------------------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    from .cli_args import add_command, stage_parser

    acts = stage_parser(
        sub,
        "quality",
        "judge tag precision and consistency with an LLM",
        "Tag quality evaluation (paper §3.3): an LLM judge rates precision and consistency.",
    )
    add_command(
        acts,
        "judge",
        evaluate,
        help="sample cases, judge them, write judgments and the rates table",
        flags={"records_files": "--records", "out_judgments": "--out", "out_table": "--table"},
        hide=("backend",),
    )
