"""Stage `tagging`: open-set tags for every query with an LLM (paper.md §1; ambiguities A1, A2).

Each user turn of a record is tagged on its own with a prompt template (``instag/prompts``; the query goes in
its ``[begin]``/``[end]`` block) and answered as a JSON list of ``{"tag", "explanation"}`` objects. Without a
configured prompt, API models get the paper's (``tagging``) and a small model (``Backend.small_model``: the
embedded 135M one, which copies example tags) the same prompt without its examples (``tagging_no_examples``).
Local backends decode under a grammar from ``instag/prompts/tag_schema.json``, whose length bounds make every
output end inside ``max_tokens``.

Every call goes through the LLM-job layer (:mod:`instag.llm.job`: cache, cost estimate, spend cap for the
stage, parsing, re-asks, failure records), in namespace ``tagging:<hash of template and schema>``. Per
query: parse the first JSON list in the answer (:func:`parse_tags`); when nothing valid comes back, ask again
up to ``max_retries`` times (new samples); what still fails is a ``failed`` line with the raw text and the
error. Empty, whitespace-only and invisible-only queries are ``rejected`` lines, never sent.

Output, ``results/tagging/<dataset>/shard-<k>.jsonl``: tag lines (:mod:`.items`), and a summary of counts
beside it. Shard ``k`` holds records ``k*shard_size .. (k+1)*shard_size - 1`` of ``results/data/<dataset>.jsonl``.

Modules: :mod:`.settings`, :mod:`.prompt`, :mod:`.parse`, :mod:`.items` (inputs, shards, tag lines),
:mod:`.tagger`, :mod:`.run` (shard, file, retry, tables, estimate), :mod:`.cli`.
"""

from __future__ import annotations

from .cli import add_cli
from .items import (
    LINE_KEYS,
    QUERY_FIELDS,
    Item,
    blank_reason,
    count_records,
    n_shards,
    record_items,
    shard_records,
)
from .parse import Parsed, parse_tags
from .prompt import PLACEHOLDER, fence_query, load_schema, load_template, render_prompt, template_hash
from .run import estimate, retry_failed, run_items, summarize, tag_file, tag_shard
from .settings import DEFAULT_SYSTEM, PAPER_PROMPT, ZERO_SHOT_PROMPT, TaggingSettings
from .tagger import Counts, Tagger

__all__ = [
    "DEFAULT_SYSTEM",
    "LINE_KEYS",
    "PAPER_PROMPT",
    "PLACEHOLDER",
    "QUERY_FIELDS",
    "ZERO_SHOT_PROMPT",
    "Counts",
    "Item",
    "Parsed",
    "Tagger",
    "TaggingSettings",
    "add_cli",
    "blank_reason",
    "count_records",
    "estimate",
    "fence_query",
    "load_schema",
    "load_template",
    "n_shards",
    "parse_tags",
    "record_items",
    "render_prompt",
    "retry_failed",
    "run_items",
    "shard_records",
    "summarize",
    "tag_file",
    "tag_shard",
    "template_hash",
]
