"""``instag tagging ...`` (and ``instag tag``): argument parsing and printing only; the work is in
:mod:`instag.tagging.run`."""

from __future__ import annotations

import json

from ..errors import ConfigError
from .items import QUERY_FIELDS
from .run import estimate, retry_failed, summarize, tag_file, tag_shard
from .settings import PAPER_PROMPT, ZERO_SHOT_PROMPT, TaggingSettings

FLAG_KEYS = ("prompt", "max_retries", "max_tokens", "temperature", "cache_dir", "max_query_tokens", "chunk_size")


def _settings_from_args(args, recorded_ok: bool = False) -> TaggingSettings | None:
    """Settings from --settings-json, --backend-json and single flags; with ``recorded_ok`` and none of them
    given, None (the caller then uses the settings recorded with the files)."""
    given = args.settings_json or args.backend_json or getattr(args, "no_cache", False)
    if recorded_ok and not given and all(getattr(args, k, None) is None for k in FLAG_KEYS):
        return None
    d = json.loads(args.settings_json) if args.settings_json else {}
    if not isinstance(d, dict):
        raise ConfigError("tagging", "--settings-json must be a JSON object")
    if args.backend_json:
        d["backend"] = json.loads(args.backend_json)
    for key in FLAG_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            d[key] = value
    if getattr(args, "no_cache", False):
        d["cache_dir"] = None
    return TaggingSettings.from_dict(d)


def _common(p) -> None:
    p.add_argument(
        "--settings-json",
        default=None,
        help="the config's tagging section as JSON (backend, prompt, decoding, retries, cache_dir, ...)",
    )
    p.add_argument(
        "--backend-json",
        default=None,
        help='backend spec, e.g. \'{"backend": "openai", "model": "gpt-3.5-turbo"}\' (default: embedded)',
    )
    p.add_argument(
        "--prompt",
        default=None,
        help=f"template name in instag/prompts or a .txt file (default: {ZERO_SHOT_PROMPT} for the small "
        f"embedded model, {PAPER_PROMPT}, the paper's, for other backends)",
    )
    d = TaggingSettings  # the defaults live there (and in the config schema)
    p.add_argument(
        "--max-retries", type=int, default=None, help=f"re-asks of unparseable answers (default {d.max_retries})"
    )
    p.add_argument("--max-tokens", type=int, default=None, help=f"generated tokens per answer (default {d.max_tokens})")
    p.add_argument(
        "--temperature", type=float, default=None, help=f"first attempt's temperature (default {d.temperature})"
    )
    p.add_argument(
        "--max-query-tokens", type=int, default=None, help=f"cut longer queries (default {d.max_query_tokens})"
    )
    p.add_argument("--chunk-size", type=int, default=None, help=f"queries per backend call (default {d.chunk_size})")
    p.add_argument("--cache-dir", default=None, help=f"LLM call cache (default {d.cache_dir})")
    p.add_argument("--no-cache", action="store_true", help="call the model for every query")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of a local backend")


def add_cli(sub) -> None:
    p = sub.add_parser(
        "tagging",
        help="tag every query with an LLM (open-set tags)",
        description="Tag queries with the InsTag prompt; every call is cached.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    _add_tag_parser(sub, "tag", "tag queries of a JSONL file with an LLM (= instag tagging tag)")

    a = acts.add_parser(
        "tag-shard",
        help="tag one shard of an ingested dataset",
        description="Tag records shard*shard_size.. of a records file; write lines and a summary.",
    )
    a.add_argument("--records", required=True, help="results/data/<dataset>.jsonl")
    a.add_argument("--out", required=True, help="tag lines JSONL to write")
    a.add_argument("--summary", default=None, help="summary JSON to write")
    a.add_argument("--shard", type=int, required=True, help="shard index (0-based)")
    a.add_argument("--shard-size", type=int, required=True, help="records per shard")
    a.add_argument("--dataset", default=None, help="dataset name (default: from the records)")
    _common(a)
    a.set_defaults(
        func=lambda args: tag_shard(
            args.records,
            args.out,
            args.summary,
            args.shard,
            args.shard_size,
            _settings_from_args(args),
            dataset=args.dataset,
            threads=args.threads,
        )
    )

    _add_tag_parser(acts, "tag", "tag a JSONL file on its own (no workflow)")

    r = acts.add_parser(
        "retry-failed",
        help="ask again for the failed queries of finished tag files",
        description="Rewrite tag files in place, re-asking every failed line (new samples). Without settings "
        "options, the settings recorded in each file's .summary.json (written by tag-shard) are used.",
    )
    r.add_argument("tags", nargs="+", help="tag line files (e.g. results/tagging/*/shard-*.jsonl)")
    r.add_argument("--records", nargs="+", required=True, help="the records files the queries come from")
    r.add_argument(
        "--extra-attempts", type=int, default=2, help="new samples beyond max_retries (default: %(default)s)"
    )
    _common(r)
    r.set_defaults(
        func=lambda args: retry_failed(
            args.tags,
            args.records,
            _settings_from_args(args, recorded_ok=True),
            extra_attempts=args.extra_attempts,
            threads=args.threads,
        )
    )

    s = acts.add_parser(
        "summarize",
        help="gather shard summaries into tagging.tsv",
        description="One row per dataset (shards summed) and an 'all' row.",
    )
    s.add_argument("summaries", nargs="+", help="summary JSON files from tag-shard")
    s.add_argument("--out", required=True, help="TSV to write")
    s.set_defaults(func=lambda args: summarize(args.summaries, args.out))

    e = acts.add_parser(
        "estimate-cost",
        help="requests, tokens and cost before tagging",
        description="Write the cost estimate TSV and print it (USD blank for a model without a price).",
    )
    e.add_argument("records", nargs="+", help="records files to be tagged")
    e.add_argument("--out", required=True, help="TSV to write")
    e.add_argument("--settings-json", default=None, help="the config's tagging section as JSON")
    e.add_argument("--backend-json", default=None, help="backend spec JSON")
    e.set_defaults(func=_estimate_cli)


def _add_tag_parser(parent, name: str, help_text: str) -> None:
    t = parent.add_parser(
        name,
        help=help_text,
        description="Tag every query of a JSONL file: ingested records ({id, turns}) or rows with "
        f"one of the fields {', '.join(QUERY_FIELDS)}. Writes one line per query; empty, whitespace-only "
        "and invisible-only queries become 'rejected' lines with the reason. Rerunning answers from the cache "
        "and asks again only for what failed.",
    )
    t.add_argument("input", help="input JSONL")
    t.add_argument("--out", required=True, help="tag lines JSONL to write")
    t.add_argument("--summary", default=None, help="summary JSON to write")
    t.add_argument("--dataset", default=None, help="dataset name for rows without one (default: file name)")
    _common(t)
    t.set_defaults(
        func=lambda args: tag_file(
            args.input,
            args.out,
            _settings_from_args(args),
            summary=args.summary,
            dataset=args.dataset,
            threads=args.threads,
        )
    )


def _estimate_cli(args) -> None:
    d = json.loads(args.settings_json) if args.settings_json else {}
    if args.backend_json:
        d["backend"] = json.loads(args.backend_json)
    rows = estimate(args.records, args.out, d)
    cols = ["dataset", "requests", "max_requests", "prompt_tokens", "completion_tokens", "usd"]
    cell = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[k]) for row in cell)) for k, c in enumerate(cols)]
    total = rows[-1]
    print(f"tagging cost estimate ({total['backend']} {total['model']}; completion = max_tokens, an upper bound):")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cell:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if total.get("usd") is None:
        print("usd blank: no price for this model in tagging.prices")
    if total.get("spend_cap_usd") is not None:
        print(f"spend cap for the tagging stage: ${total['spend_cap_usd']}")
    return None
