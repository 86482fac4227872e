"""The tag explorer: one static HTML file (no server, no network) to browse the normalized tag vocabulary.

For each canonical tag it shows the number of samples carrying it per dataset, the raw tags merged into it
and at which normalization step (with the names in between), and a few example queries. The data is embedded
in the page as one compact JSON block (tags as arrays, example texts de-duplicated and cut to
``max_chars``), so 10K tags and 300K queries give a page of a few MB that opens and filters instantly.

Inputs (all under ``results/``): ``tables/tag_mapping.tsv`` (raw tag -> name after each step -> canonical),
``normalize/normalized.jsonl`` (each record's canonical tags per query) and ``data/<dataset>.jsonl`` (the query
texts, for the examples).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..io import atomic_write, iter_jsonl, read_tsv
from ..records import NORMALIZED

log = logging.getLogger(__name__)

STEPS = ("frequency", "lexical", "semantic", "association")


def _user_texts(rec: dict) -> list[str]:
    return [t.get("content", "") for t in rec.get("turns", []) if isinstance(t, dict) and t.get("role") == "user"]


def build_data(
    mapping_tsv: str | Path,
    normalized: str | Path,
    records: list[str | Path],
    *,
    examples: int = 3,
    max_chars: int = 240,
    title: str = "InsTag tag explorer",
) -> dict:
    """The explorer's data (see the module docstring); deterministic for the same inputs."""
    mapping = read_tsv(mapping_tsv)
    if mapping and "canonical" not in mapping[0]:
        raise InputError(mapping_tsv, "the tag mapping table needs raw_tag, count, canonical, status, step")

    # per canonical tag: samples per dataset, and the first `examples` (record id, query index) carrying it
    datasets: list[str] = []
    ds_index: dict[str, int] = {}
    freq: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    wanted: dict[str, list[tuple[str, int]]] = defaultdict(list)
    need: set[tuple[str, int]] = set()
    for rec in NORMALIZED.rows(normalized):
        d = rec["dataset"]
        if d not in ds_index:
            ds_index[d] = len(datasets)
            datasets.append(d)
        di = ds_index[d]
        for tag in rec["tags"]:
            freq[tag][di] += 1
        for qi, qtags in enumerate(rec.get("queries") or []):
            for tag in qtags or ():
                if len(wanted[tag]) < examples:
                    wanted[tag].append((rec["id"], qi))
                    need.add((rec["id"], qi))

    texts: dict[tuple[str, int], str] = {}
    for path in records:
        for _, rec in iter_jsonl(path):
            rid = rec.get("id") if isinstance(rec, dict) else None
            if rid is None:
                continue
            for qi, text in enumerate(_user_texts(rec)):
                if (rid, qi) in need:
                    t = " ".join(text.split())
                    texts[(rid, qi)] = t if len(t) <= max_chars else t[: max_chars - 1] + "…"

    # merges: raw tags whose canonical tag is this one, with the names they took along the way
    merges: dict[str, list] = defaultdict(list)
    dropped = 0
    for r in mapping:
        canon = r.get("canonical", "")
        if not canon:
            dropped += 1
            continue
        chain, prev = [], r["raw_tag"]
        for k, step in enumerate(STEPS):
            name = r.get(f"after_{step}", "")
            if name and name != prev:
                chain.append([k, name])
                prev = name
        if chain:
            merges[canon].append([r["raw_tag"], int(r.get("count") or 0), chain])

    names = sorted(freq, key=lambda t: (-sum(freq[t].values()), t))
    query_texts: list[str] = []
    text_index: dict[str, int] = {}
    tags = []
    for t in names:
        counts = [freq[t].get(i, 0) for i in range(len(datasets))]
        ex = []
        for key in wanted.get(t, []):
            text = texts.get(key)
            if text is None:
                continue
            if text not in text_index:
                text_index[text] = len(query_texts)
                query_texts.append(text)
            ex.append(text_index[text])
        m = sorted(merges.get(t, []), key=lambda x: (-x[1], x[0]))
        tags.append([t, counts, m, ex])
    return {
        "title": title,
        "datasets": datasets,
        "steps": list(STEPS),
        "tags": tags,
        "queries": query_texts,
        "raw_tags": len(mapping),
        "dropped": dropped,
    }


def render(data: dict) -> str:
    """The explorer page with ``data`` embedded (``</`` escaped so no string can close the script)."""
    template = resources.files("instag.report").joinpath("explorer.html").read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
    return template.replace("__TITLE__", _html_escape(data.get("title", ""))).replace("__DATA__", payload)


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write(
    mapping_tsv,
    normalized,
    records,
    out,
    *,
    examples: int = 3,
    max_chars: int = 240,
    title: str = "InsTag tag explorer",
) -> dict:
    data = build_data(mapping_tsv, normalized, records, examples=examples, max_chars=max_chars, title=title)
    html = render(data)
    with atomic_write(out) as fh:
        fh.write(html)
    log.info(
        "explorer: %d tags, %d datasets, %d example texts, %d bytes",
        len(data["tags"]),
        len(data["datasets"]),
        len(data["queries"]),
        len(html.encode()),
    )
    return {
        "tags": len(data["tags"]),
        "datasets": len(data["datasets"]),
        "examples": len(data["queries"]),
        "bytes": len(html.encode()),
        "out": str(out),
    }
