"""Prompt templates and JSON schemas: packaged ones (``instag/prompts``) by name, or files by path.

One loader for every stage: :func:`load_prompt` checks the placeholders a template must hold,
:func:`load_schema` drops ``$``-keys (comments) from a packaged schema, :func:`fill` substitutes fields in one
pass (text inside a value is never filled again), and :func:`content_hash` makes the part of a cache
namespace that changes whenever a template or schema does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

PACKAGE = "instag.prompts"


def packaged_prompts() -> list[str]:
    """Names of the packaged templates (``.txt`` files, without the suffix)."""
    return sorted(p.name[:-4] for p in resources.files(PACKAGE).iterdir() if p.name.endswith(".txt"))


def load_prompt(name: str, *, key: str = "prompt", placeholders: Iterable[str] = ()) -> str:
    """A template: packaged by name (``tagging``) or a ``.txt`` file by path; each of ``placeholders``
    (e.g. ``"{instruction}"``) must occur exactly once. Trailing newlines are dropped. Errors name ``key``."""
    if name.endswith(".txt") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(key, f"template file not found: {path}")
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files(PACKAGE).joinpath(f"{name}.txt")
        if not res.is_file():
            raise ConfigError(key, f"no packaged template {name!r} (have: {', '.join(packaged_prompts())})")
        text = res.read_text(encoding="utf-8")
    for ph in placeholders:
        if text.count(ph) != 1:
            raise ConfigError(key, f"the template {name!r} must contain {ph} exactly once")
    return text.rstrip("\n")


def load_schema(name: str) -> dict:
    """A packaged JSON schema (``<name>.json``), without its ``$comment``-style keys."""
    text = resources.files(PACKAGE).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("$")}


def fill(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{name}`` fields in one pass, so text inside a filled value is never filled again."""
    if not values:
        return template
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


def content_hash(obj: Any) -> str:
    """16 hex digits of the sha256 of ``obj`` as sorted-key JSON (templates, schemas, versions)."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
