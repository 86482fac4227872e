"""Conversations rendered with FastChat's templates, and where the assistant's text sits in the result.

The paper trained TagLM with FastChat and its Vicuna v1.1 template (paper.md §6). The string a model is trained
on is FastChat's own ``Conversation.get_prompt()`` output; nothing here re-implements the format. The one change
is the end-of-turn separator (``sep2``): FastChat's ``</s>`` is LLaMA's end-of-sequence token, but for another
tokenizer family it is plain text (three or more ordinary tokens in SmolLM2's vocabulary), so a model trained on
it would never emit its own end-of-sequence token and generation would not stop. :func:`template_params` puts
the tokenizer's own end-of-turn token in its place (``</s>`` for LLaMA, so the string there is FastChat's exactly)
and records what was used; the same parameters render the generation prompt at answer time
(:func:`generation_prompt`), so training and inference agree.

The assistant spans are found by rendering prefixes (FastChat renders an unanswered turn as ``"ASSISTANT:"``):
the span of assistant turn *i* runs from the end of the prefix that ends in that unanswered turn to the end of
the prefix that includes the answer and its separator. For Vicuna v1.1 that is ``" " + answer + sep2``: the
space that follows ``ASSISTANT:`` belongs to the answer, because a prompt ends in ``ASSISTANT:`` and the model
writes the space itself. Every prefix is checked to be a prefix of the full string, so a template without that
property fails loudly instead of producing a wrong mask.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..errors import InstagError

DEFAULT_TEMPLATE = "vicuna_v1.1"

#: Roles of the conversation records (``{"id", "system"?, "turns": [{"role", "content"}]}``).
USER, ASSISTANT, SYSTEM = "user", "assistant", "system"


class TemplateError(InstagError):
    """A conversation that the template cannot render (e.g. roles that do not alternate)."""


@dataclass(frozen=True)
class TemplateParams:
    """Everything that fixes the rendered string; recorded in each run's run.json (and read back by MT-Bench)."""

    template: str
    system: str
    roles: tuple[str, str]
    sep_style: str
    sep: str
    sep2: str
    fastchat_sep2: str
    stop: str
    fastchat_version: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["roles"] = list(self.roles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TemplateParams:
        d = dict(d)
        d["roles"] = tuple(d["roles"])
        return cls(**d)


def _fastchat():
    try:
        import fastchat
        from fastchat import conversation
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InstagError(
            "the finetune stage needs FastChat for its conversation templates: pip install 'instag-workflow[train]'"
        ) from exc
    return fastchat, conversation


def template_params(name: str = DEFAULT_TEMPLATE, end_of_turn: str | None = None, system: str | None = None):
    """The rendering parameters of FastChat template ``name`` with ``end_of_turn`` (the tokenizer's end-of-turn
    token text, e.g. ``tokenizer.eos_token``) as ``sep2`` and stop string, and ``system`` (None: the template's
    own system message)."""
    fastchat, conversation = _fastchat()
    try:
        conv = conversation.get_conv_template(name)
    except KeyError:
        raise InstagError(f"FastChat has no conversation template named {name!r}") from None
    fastchat_sep2 = conv.sep2 or ""
    sep2 = end_of_turn if end_of_turn is not None else fastchat_sep2
    return TemplateParams(
        template=name,
        system=conv.system_message if system is None else system,
        roles=tuple(conv.roles),
        sep_style=conv.sep_style.name,
        sep=conv.sep,
        sep2=sep2,
        fastchat_sep2=fastchat_sep2,
        stop=sep2 if sep2 else (conv.stop_str or ""),
        fastchat_version=getattr(fastchat, "__version__", "unknown"),
    )


def _conversation(params: TemplateParams):
    _, conversation = _fastchat()
    conv = copy.deepcopy(conversation.get_conv_template(params.template))
    conv.set_system_message(params.system)
    conv.sep, conv.sep2 = params.sep, params.sep2
    conv.roles = tuple(params.roles)
    return conv


def normalize_turns(conversation: dict) -> tuple[str | None, list[tuple[str, str]]]:
    """(system, [(role, content), ...]) of a conversation record, in the shape FastChat trains on.

    A ``system`` turn at the start becomes the system message (unless the record has its own ``system``); leading
    assistant turns are dropped (FastChat's ``preprocess`` does the same), as is a trailing user turn (nothing
    follows it to learn). Roles must then alternate user/assistant, else :class:`TemplateError`.
    """
    system = conversation.get("system")
    turns = list(conversation.get("turns") or [])
    while turns and turns[0].get("role") == SYSTEM:
        if system is None:
            system = turns[0].get("content")
        turns = turns[1:]
    while turns and turns[0].get("role") != USER:
        turns = turns[1:]
    if turns and turns[-1].get("role") == USER:
        turns = turns[:-1]
    out = []
    for i, turn in enumerate(turns):
        want = USER if i % 2 == 0 else ASSISTANT
        role = turn.get("role")
        if role != want:
            raise TemplateError(f"turn {i} has role {role!r} where {want!r} was expected (roles must alternate)")
        content = turn.get("content")
        if not isinstance(content, str):
            raise TemplateError(f"turn {i} has no text content")
        out.append((role, content))
    return system, out


def render(
    conversation: dict, params: TemplateParams, *, use_record_system: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """FastChat's string for ``conversation`` and the character spans ``[start, end)`` of its assistant turns
    (each: the space after the role's colon, the answer, the end-of-turn separator).

    The system message is ``params.system`` unless ``use_record_system`` and the record carries its own.
    """
    record_system, turns = normalize_turns(conversation)
    conv = _conversation(params)
    if use_record_system and record_system:
        conv.set_system_message(record_system)
    roles = {USER: conv.roles[0], ASSISTANT: conv.roles[1]}
    spans: list[tuple[int, int]] = []
    rendered_prefixes = []
    for role, content in turns:
        if role == ASSISTANT:
            conv.append_message(roles[ASSISTANT], None)
            start = len(conv.get_prompt())
            rendered_prefixes.append(conv.get_prompt())
            conv.messages[-1][1] = content
            end_text = conv.get_prompt()
            rendered_prefixes.append(end_text)
            spans.append((start, len(end_text)))
        else:
            conv.append_message(roles[USER], content)
    text = conv.get_prompt()
    for prefix in rendered_prefixes:
        if not text.startswith(prefix):
            raise TemplateError(
                f"template {params.template!r} does not render conversations prefix by prefix; "
                "the assistant spans cannot be located"
            )
    return text, spans


def generation_prompt(messages: Sequence[dict], params: TemplateParams) -> str:
    """The prompt for the next assistant turn: the conversation so far (``[{"role", "content"}]``, ending with a
    user turn; a leading ``system`` message replaces the system text) followed by the unanswered assistant role
    (Vicuna v1.1: ``"... USER: <question> ASSISTANT:"``). Generation stops at ``params.stop``."""
    conv = _conversation(params)
    roles = {USER: conv.roles[0], ASSISTANT: conv.roles[1]}
    for i, m in enumerate(messages):
        if m["role"] == SYSTEM:
            if i != 0:
                raise TemplateError("a system message may only come first")
            conv.set_system_message(m["content"])
            continue
        conv.append_message(roles[m["role"]], m["content"])
    conv.append_message(roles[ASSISTANT], None)
    return conv.get_prompt()
