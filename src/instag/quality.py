"""Tag quality evaluation with an LLM judge (paper.md §3): tag precision and tag consistency.

What the paper says (paper.md §3.1-§3.3): precision asks whether every tag assigned to a query correctly
relates to the query's intentions, judged per query, all-or-nothing; consistency takes a tag t and a set I of
randomly chosen instructions carrying t and asks whether t's meaning shifts across I. GPT-4 judged 2,000
cases of each (96.1% precision, 86.6% consistency); three humans judged 40 cases.

Where the paper is silent, our choices (each also a config key or stated here):

- the judging prompts and output format were not found: ours are package data
  (``prompts/quality_precision.txt``, ``prompts/quality_consistency.txt``) with a JSON verdict
  ``{"explanation", "verdict": "yes" | "no"}`` (``prompts/quality_schema.json``), requested through
  ``GenerationParams.json_schema`` (grammar-constrained for local backends) and parsed leniently;
- the unit of a precision case is one query (a user turn) with its normalized tags, sampled uniformly among
  tagged queries with at least one tag;
- a consistency case draws a tag uniformly among the tags carried by at least ``min_instances`` queries (so
  the long tail is represented, not only the head), then ``set_size`` of its queries at random (the size of I
  is not found; default 5), fewer when the tag has fewer;
- long instructions are cut to ``max_query_chars`` characters in the prompts;
- a judgment that cannot be parsed (or a failed call) is a counted failure, kept in the judgments file and
  left out of the rate's denominator; rates come with a Wilson 95% interval;
- the human-annotation part (3 annotators, Fleiss/Cohen kappa) is not reproduced.

All calls go through the content-addressed LLM cache, so a rerun costs nothing and the raw judgments stay
inspectable (``instag cache failures``). The judge is any backend spec (paper: GPT-4 via ``openai``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .errors import ConfigError, InputError
from .io import iter_jsonl, write_jsonl, write_tsv

log = logging.getLogger(__name__)

KINDS = ("precision", "consistency")
#: GPT-4's rates in the paper (paper.md §3.3); the human majority judged 100% for both.
PAPER_RATES = {"precision": 0.961, "consistency": 0.866}


def prompt_text(name: str) -> str:
    return resources.files("instag.prompts").joinpath(name).read_text(encoding="utf-8")


def judge_schema() -> dict:
    return json.loads(prompt_text("quality_schema.json"))


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def _fill(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` fields in one pass, so text inside a filled value is never filled again."""
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


def render_precision(template: str, instruction: str, tags: Sequence[str], max_chars: int) -> str:
    return _fill(
        template, {"instruction": _cut(instruction, max_chars), "tags": json.dumps(list(tags), ensure_ascii=False)}
    )


def render_consistency(template: str, tag: str, instructions: Sequence[str], max_chars: int) -> str:
    listed = "\n".join(f"[{i}] {_cut(t, max_chars)}" for i, t in enumerate(instructions, start=1))
    return _fill(template, {"tag": tag, "instructions": listed})


def parse_verdict(text: str | None) -> tuple[str | None, str, str | None]:
    """``(verdict, explanation, error)`` from a judge's output; the first JSON object in it is read."""
    if not text:
        return None, "", "empty output"
    obj = None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")
        while start >= 0 and obj is None:
            try:
                obj, _ = json.JSONDecoder().raw_decode(text, start)
            except json.JSONDecodeError:
                start = text.find("{", start + 1)
    if not isinstance(obj, dict):
        return None, "", "no JSON object in the output"
    verdict = str(obj.get("verdict", "")).strip().lower()
    explanation = str(obj.get("explanation", ""))
    if verdict not in ("yes", "no"):
        return None, explanation, f"verdict is {obj.get('verdict')!r}, not yes/no"
    return verdict, explanation, None


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
        for q, tags in enumerate(queries):
            if tags:
                tagged.append((rec["id"], q, list(tags)))
    precision = [
        {"kind": "precision", "case": i, "queries": [{"id": rid, "q": q}], "tags": tags}
        for i, (rid, q, tags) in enumerate(rng.sample(tagged, min(n_precision, len(tagged))))
    ]
    by_tag: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for rid, q, tags in tagged:
        for t in tags:
            by_tag[t].append((rid, q))
    eligible = sorted(t for t, inst in by_tag.items() if len(inst) >= min_instances)
    consistency = []
    for i, tag in enumerate(rng.sample(eligible, min(n_consistency, len(eligible)))):
        inst = rng.sample(by_tag[tag], min(set_size, len(by_tag[tag])))
        consistency.append(
            {"kind": "consistency", "case": i, "tag": tag, "queries": [{"id": rid, "q": q} for rid, q in inst]}
        )
    return {
        "precision": precision,
        "consistency": consistency,
        "eligible": {"precision": len(tagged), "consistency": len(eligible)},
    }


def _query_texts(records_files: Sequence[str | Path], wanted: set[str]) -> dict[str, list[str]]:
    from .data import queries

    out: dict[str, list[str]] = {}
    for path in records_files:
        for line, rec in iter_jsonl(path):
            if not isinstance(rec, dict) or "id" not in rec or "turns" not in rec:
                raise InputError(path, "a data record needs 'id' and 'turns'", line)
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
    cache_dir: str | Path = "cache/llm",
    n_precision: int = 2000,
    n_consistency: int = 2000,
    set_size: int = 5,
    min_instances: int = 2,
    seed: int = 0,
    max_query_chars: int = 2000,
    max_tokens: int = 256,
    backend=None,
    spend_cap_usd: float | None = None,
    prices: dict | None = None,
    cost_estimate: str | Path | None = None,
) -> dict:
    """Sample cases, judge them (cached), write every judgment and the rates table; return a summary.

    ``backend`` (tests) replaces the one built from ``judge``; the cache still wraps it. Before any call the
    estimated requests, tokens and cost (``prices``: USD per 1M tokens by model) are logged and written to
    ``cost_estimate``; with ``spend_cap_usd`` the judging stops (raising ``SpendCapExceeded``) before the cap
    would be exceeded, with every answer so far in the cache. Cache hits cost nothing.
    """
    from .llm import CachedBackend, ChatRequest, GenerationParams, get_backend

    recs = []
    for line, rec in iter_jsonl(normalized):
        if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("tags"), list):
            raise InputError(normalized, "a normalized record needs 'id' and a 'tags' list", line)
        recs.append(rec)
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
    templates = {k: prompt_text(f"quality_{k}.txt") for k in KINDS}
    schema = judge_schema()
    namespace = (
        "quality:" + hashlib.sha256(json.dumps([templates, schema], sort_keys=True).encode("utf-8")).hexdigest()[:16]
    )
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens, json_schema=schema)
    requests = []
    for c in all_cases:
        try:
            instr = [texts[ref["id"]][ref["q"]] for ref in c["queries"]]
        except (KeyError, IndexError):
            ref = c["queries"][0]
            raise InputError(normalized, f"record {ref['id']} query {ref['q']} is in no records file") from None
        if c["kind"] == "precision":
            prompt = render_precision(templates["precision"], instr[0], c["tags"], max_query_chars)
        else:
            prompt = render_consistency(templates["consistency"], c["tag"], instr, max_query_chars)
        requests.append(ChatRequest([{"role": "user", "content": prompt}], params, meta={"case": c["case"]}))

    inner = backend if backend is not None else get_backend(judge)
    from .cost import SpendGuard, estimate_requests

    try:
        est = estimate_requests(requests, inner.model, prices, inner.name)
    except ConfigError:
        if spend_cap_usd is not None:
            raise  # a cap needs a price for the judge's model
        # No price and no cap: the tokens are still estimated, the cost is left unknown (a self-hosted
        # OpenAI-compatible server, e.g. vLLM, has no price list).
        est = estimate_requests(requests, inner.model, {inner.model: {"prompt": 0, "completion": 0}}, inner.name)
        est.update(usd_per_1m_prompt="", usd_per_1m_completion="", usd="")
        log.warning("no price for judge model %s in quality.prices: cost estimate left blank", inner.model)
    log.info("judge cost estimate (%s %s, completion = max_tokens, an upper bound): %s", inner.name, inner.model, est)
    if cost_estimate is not None:
        write_tsv(
            cost_estimate,
            [{"stage": "quality", "backend": inner.name, "model": inner.model, **est, "spend_cap_usd": spend_cap_usd}],
        )
    guard = None if spend_cap_usd is None else SpendGuard(spend_cap_usd, prices, inner.model, backend=inner.name)
    cached = CachedBackend(inner, cache_dir, namespace=namespace, guard=guard)
    try:
        responses = cached.generate(requests) if requests else []
        ident = {"backend": cached.name, "model": cached.model}
    finally:
        cached.close()
        if backend is None:
            inner.close()

    lines = []
    for c, resp in zip(all_cases, responses, strict=True):
        verdict, explanation, error = parse_verdict(resp.text) if resp.ok else (None, "", resp.error or "failed")
        lines.append(
            {
                **c,
                "verdict": verdict,
                "positive": None if verdict is None else verdict == "yes",
                "explanation": explanation,
                "status": "ok" if verdict is not None else "failed",
                "error": error,
                "raw": resp.text,
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
    summary["cache"] = cached.stats.as_dict()
    log.info("tag quality: %s", summary)
    return summary


# --------------------------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    p = sub.add_parser(
        "quality",
        help="judge tag precision and consistency with an LLM",
        description="Tag quality evaluation (paper §3.3): an LLM judge rates precision and consistency.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    j = acts.add_parser("judge", help="sample cases, judge them, write judgments and the rates table")
    j.add_argument("--normalized", required=True, help="normalized records (results/tags/normalized.jsonl)")
    j.add_argument("--records", nargs="+", required=True, help="ingested records files (query texts)")
    j.add_argument("--judge", required=True, help='judge backend spec as JSON, e.g. \'{"backend": "embedded"}\'')
    j.add_argument("--cache-dir", default="cache/llm", help="LLM cache folder (default cache/llm)")
    j.add_argument("--n-precision", type=int, default=2000, help="precision cases (paper 2,000)")
    j.add_argument("--n-consistency", type=int, default=2000, help="consistency cases (paper 2,000)")
    j.add_argument("--set-size", type=int, default=5, help="instructions per consistency case (not in the paper)")
    j.add_argument("--min-instances", type=int, default=2, help="queries a tag needs to be a consistency case")
    j.add_argument("--seed", type=int, default=0, help="sampling seed")
    j.add_argument("--max-query-chars", type=int, default=2000, help="cut instructions to this length")
    j.add_argument("--max-tokens", type=int, default=256, help="judge output budget")
    j.add_argument("--out", required=True, help="judgments JSONL to write")
    j.add_argument("--table", required=True, help="rates TSV to write")
    j.add_argument("--spend-cap-usd", type=float, default=None, help="stop before the judge spends more than this")
    j.add_argument("--prices", default="{}", help="JSON: USD per 1M prompt/completion tokens by model name")
    j.add_argument("--cost-estimate", default=None, help="TSV to write the cost estimate to, before any call")
    j.set_defaults(
        func=lambda a: evaluate(
            a.normalized,
            a.records,
            a.out,
            a.table,
            judge=json.loads(a.judge),
            cache_dir=a.cache_dir,
            n_precision=a.n_precision,
            n_consistency=a.n_consistency,
            set_size=a.set_size,
            min_instances=a.min_instances,
            seed=a.seed,
            max_query_chars=a.max_query_chars,
            max_tokens=a.max_tokens,
            spend_cap_usd=a.spend_cap_usd,
            prices=json.loads(a.prices),
            cost_estimate=a.cost_estimate,
        )
    )
