"""``instag cache stats|failures|compact``: inspect and maintain an LLM call cache (:mod:`instag.llm.cache`)."""

from __future__ import annotations


def _check(cache_dir: str) -> str:
    from pathlib import Path

    from ..errors import InputError

    if not Path(cache_dir).is_dir():
        raise InputError(cache_dir, "no such cache directory")
    return cache_dir


def _stats(args):
    from .cache import cache_stats

    return cache_stats(_check(args.cache_dir))


def _failures(args):
    from .cache import failed_entries

    rows = failed_entries(_check(args.cache_dir))
    if args.limit is not None:
        rows = rows[-args.limit :]
    return {
        "cache_dir": args.cache_dir,
        "failed_keys": len(rows),
        "failures": [
            {
                "key": r["key"],
                "error": r.get("error"),
                "text": r.get("text"),
                "attempts": r.get("attempts"),
                "backend": r.get("backend"),
                "model": r.get("model"),
                "namespace": r.get("namespace"),
                "t": r.get("t"),
                "meta": (r.get("request") or {}).get("meta"),
                **({"messages": (r.get("request") or {}).get("messages")} if args.messages else {}),
            }
            for r in rows
        ],
    }


def _compact(args):
    from .cache import compact

    return compact(_check(args.cache_dir), min_age_s=args.min_age)


def add_cli(sub) -> None:
    p = sub.add_parser(
        "cache",
        help="inspect and maintain an LLM call cache",
        description="Inspect and maintain a cache of LLM calls. Failed calls are kept for inspection "
        "and asked again by the next run of the stage; 'failures' lists them.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    s = acts.add_parser("stats", help="count records, keys, failures, corrupt lines and tokens")
    s.add_argument("--cache-dir", required=True, help="the cache directory")
    s.set_defaults(func=_stats)

    f = acts.add_parser(
        "failures",
        help="list keys whose calls failed (error and raw text)",
        description="List every key with no successful call: its latest error and raw text. "
        "Rerunning the stage asks them again.",
    )
    f.add_argument("--cache-dir", required=True, help="the cache directory")
    f.add_argument("--limit", type=int, default=None, help="only the N most recent")
    f.add_argument("--messages", action="store_true", help="include the request messages")
    f.set_defaults(func=_failures)

    c = acts.add_parser(
        "compact",
        help="merge segments into one (run while nothing writes to the cache)",
        description="Merge the cache's segment files into one, keeping one success per key "
        "(or the latest failure). Only segments not modified for --min-age seconds are merged.",
    )
    c.add_argument("--cache-dir", required=True, help="the cache directory")
    c.add_argument(
        "--min-age", type=float, default=60.0, help="merge only segments unmodified for this many seconds (default 60)"
    )
    c.set_defaults(func=_compact)
