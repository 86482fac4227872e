"""The tagging prompt: template, tag schema, the query's data block and the cache namespace."""

from __future__ import annotations

import re

from ..llm.base import ChatRequest, GenerationParams
from ..llm.prompts import content_hash, load_prompt
from ..llm.prompts import load_schema as _load_schema

PLACEHOLDER = "{instruction}"


def load_template(name: str = "tagging") -> str:
    """The prompt template: a packaged one by name, or a file; it must hold ``{instruction}`` exactly once."""
    return load_prompt(name, key="tagging.prompt", placeholders=[PLACEHOLDER])


def load_schema() -> dict:
    """The tag JSON schema (``instag/prompts/tag_schema.json``), without its ``$comment``."""
    return _load_schema("tag_schema")


def template_hash(template: str, schema: dict | None) -> str:
    """What the cache namespace is built from: the template text and the schema."""
    return content_hash({"template": template, "schema": schema})


_MARKER = re.compile(r"\[\s*(begin|end)\s*\]", re.IGNORECASE)


def fence_query(query: str) -> str:
    """The query with any ``[begin]``/``[end]`` marker of its own turned into ``(begin)``/``(end)``, so a query
    cannot close the data block early and pose as instructions; everything else is kept."""
    return _MARKER.sub(lambda m: f"({m.group(1)})", query)


def render_prompt(template: str, query: str) -> str:
    return template.replace(PLACEHOLDER, fence_query(query))


def build_request(
    template: str, query: str, system: str | None, params: GenerationParams, meta: dict | None = None
) -> ChatRequest:
    """The chat request that tags one query (system message, then the filled template as the user turn)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": render_prompt(template, query)})
    return ChatRequest(messages=messages, params=params, meta=meta or {})
