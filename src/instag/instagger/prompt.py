"""The InsTagger prompt (paper.md §9.2) and the chat template it is trained and served with.

The user turn is the paper's sentence with the query after ``Query:`` (``instag/prompts/instagger.txt``, so
``tagging.prompt: instagger`` asks any tagging backend in the same words). The assistant turn is the teacher's answer,
a JSON list of ``{"tag", "explanation"}`` objects on one line with the separators ``", "`` and ``": "``, the
form a grammar-constrained decoder produces (xgrammar's JSON-schema grammar without free whitespace uses
exactly these separators), so training and constrained inference agree token for token. The conversation is rendered with FastChat's ``vicuna_v1.1`` template (its
own system message), as TagLM is and as downstream tools call the released ``OFA-Sys/InsTagger``.
"""

from __future__ import annotations

import functools
import json

from ..llm.prompts import load_prompt

PLACEHOLDER = "{instruction}"
TEMPLATE_NAME = "vicuna_v1.1"


PROMPT_NAME = "instagger"  # the packaged template's name (tagging.prompt)


@functools.cache
def template() -> str:
    """The InsTagger user turn with ``{instruction}`` where the query goes."""
    return load_prompt(PROMPT_NAME, placeholders=[PLACEHOLDER])


def user_turn(query: str) -> str:
    """The InsTagger user turn for one query."""
    return template().replace(PLACEHOLDER, query)


def answer_text(tags: list[dict]) -> str:
    """The assistant turn: the teacher's ``[{"tag", "explanation"}]`` as one-line JSON (key order tag,
    explanation; separators ``", "`` and ``": "``, as the grammar-constrained decoder writes them)."""
    items = [{"tag": t["tag"], "explanation": t.get("explanation", "")} for t in tags]
    return json.dumps(items, ensure_ascii=False, separators=(", ", ": "))


def extract_query(text: str) -> str:
    """The query inside a tagging request's user turn, whichever tagging prompt built it.

    - the InsTagger prompt: everything after its ``Query:`` prefix;
    - the InsTag ChatGPT prompt (``instag/prompts/tagging*.txt``): the text between ``[begin]`` and ``[end]``
      (the tagging stage turns any marker inside a query into ``(begin)``/``(end)``, so the block is exact);
    - anything else: the whole turn.
    """
    head, _, tail = template().partition(PLACEHOLDER)
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : len(text) - len(tail)] if tail else text[len(head) :]
    start, end = text.find("[begin]"), text.rfind("[end]")
    if start >= 0 and end > start:
        inner = text[start + len("[begin]") : end]
        if inner.startswith("\n"):
            inner = inner[1:]
        if inner.endswith("\n"):
            inner = inner[:-1]
        return inner
    return text


def template_params(info: dict | None = None):
    """The conversation template's parameters (:class:`instag.train.template.TemplateParams`) from what a training
    run recorded (``run.json``; every field present) or, for a model without a record (the released checkpoint),
    FastChat's ``vicuna_v1.1`` as is, with any of ``template``/``system``/``sep2`` given overriding it."""
    from ..train.template import DEFAULT_TEMPLATE, TemplateParams
    from ..train.template import template_params as fastchat_params

    info = dict(info or {})
    try:
        return TemplateParams.from_dict(info)
    except (TypeError, KeyError):
        pass
    return fastchat_params(
        info.get("template") or info.get("name") or DEFAULT_TEMPLATE,
        end_of_turn=info.get("sep2"),
        system=info.get("system"),
    )


def render(query_turn: str, params) -> str:
    """The generation prompt: ``query_turn`` as the user turn, the assistant turn open (Vicuna v1.1:
    ``"<system> USER: <query_turn> ASSISTANT:"``), rendered by the same code the trainer renders with."""
    from ..train.template import generation_prompt

    return generation_prompt([{"role": "user", "content": query_turn}], params)
