"""The chat template an answering model was trained with, from its fine-tuning run's record.

FastChat's ``gen_model_answer`` picks a conversation template from a substring of the model's path and
silently falls back to another (``one_shot``) when none matches: a known cause of MT-Bench numbers that do
not reproduce. Here the template is read from the fine-tuning run's ``run.json`` (``template`` and its exact
rendering parameters), checked against FastChat's template of that name when FastChat is installed, and
rendered the way FastChat's ``Conversation.get_prompt`` does (``SeparatorStyle.ADD_COLON_TWO`` for Vicuna
v1.1). :func:`instag.mtbench.answer.answer_model` then checks it against what the answering backend applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError

#: FastChat's ``vicuna_v1.1`` (fastchat/conversation.py), the template of FastChat's Vicuna training recipe
VICUNA_V11 = {
    "name": "vicuna_v1.1",
    "system": "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "roles": ["USER", "ASSISTANT"],
    "sep_style": "ADD_COLON_TWO",
    "sep": " ",
    "sep2": "</s>",
}


@dataclass(frozen=True)
class ChatTemplate:
    """A FastChat conversation template with ``ADD_COLON_TWO`` separators (Vicuna v1.1 and its variants)."""

    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str
    sep_style: str = "ADD_COLON_TWO"
    #: strings that end an answer (generation stops there; FastChat cuts the decoded text there too)
    stop: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if self.sep_style != "ADD_COLON_TWO":
            raise ConfigError("template.sep_style", f"only ADD_COLON_TWO templates are rendered, not {self.sep_style}")

    def render(self, turns: list[tuple[str, str | None]]) -> str:
        """FastChat's ``get_prompt`` for [(user, assistant or None), ...]; the last assistant is None (to answer)."""
        seps = [self.sep, self.sep2]
        ret = self.system + seps[0]
        i = 0
        for user, assistant in turns:
            for role, message in ((self.roles[0], user), (self.roles[1], assistant)):
                if message:
                    ret += role + ": " + message + seps[i % 2]
                else:
                    ret += role + ":"
                i += 1
        return ret

    def messages(self, turns: list[tuple[str, str | None]]) -> list[dict[str, str]]:
        """The same conversation as chat messages (system first), for backends that apply a template."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in turns:
            out.append({"role": "user", "content": user})
            if assistant:
                out.append({"role": "assistant", "content": assistant})
        return out

    def record(self) -> dict:
        d = asdict(self)
        d["roles"] = list(self.roles)
        d["stop"] = list(self.stop)
        return d


def from_record(run: dict, source: str = "run.json") -> ChatTemplate:
    """The template a fine-tuning run recorded: ``run["rendering"]`` as :mod:`instag.train` writes it
    (``{"template": NAME, "system", "roles", "sep_style", "sep", "sep2", "fastchat_sep2", "stop"}``), or the
    same keys at the top level or under ``"chat_template"``."""
    rec = None
    for key in ("rendering", "chat_template", "template"):  # instag.train records "rendering"
        if isinstance(run.get(key), dict):
            rec = run[key]
            break
    if rec is None:
        rec = run
    name = rec.get("name") or rec.get("template") or run.get("template")
    if not isinstance(name, str):
        raise ConfigError("template", f"{source} records no chat template name")
    missing = [k for k in ("system", "roles", "sep", "sep2") if k not in rec]
    if missing:
        raise ConfigError("template", f"{source}: the template record lacks {', '.join(missing)}")
    stop = rec.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    return ChatTemplate(
        name=name,
        system=rec["system"],
        roles=tuple(rec["roles"]),
        sep=rec["sep"],
        sep2=rec["sep2"],
        sep_style=rec.get("sep_style", "ADD_COLON_TWO"),
        stop=tuple(stop),
    )


def fastchat_reference(name: str) -> dict | None:
    """FastChat's own template of that name (system, roles, sep, sep2, sep_style), or None without FastChat."""
    try:
        from fastchat.conversation import get_conv_template
    except ImportError:
        return VICUNA_V11 if name == VICUNA_V11["name"] else None
    try:
        conv = get_conv_template(name)
    except KeyError:
        return None
    return {
        "name": conv.name,
        "system": conv.system_message,
        "roles": list(conv.roles),
        "sep_style": conv.sep_style.name,
        "sep": conv.sep,
        "sep2": conv.sep2,
    }


def check_against_fastchat(tpl: ChatTemplate, source: str = "run.json") -> dict:
    """Compare the recorded template with FastChat's of the same name; differences are reported, not fatal
    (a run may change the system prompt or the end-of-turn string on purpose: the record is what it trained on)."""
    ref = fastchat_reference(tpl.name)
    if ref is None:
        return {"fastchat": None, "differences": [f"FastChat has no template {tpl.name!r}"]}
    mine = tpl.record()
    diffs = [k for k in ("system", "roles", "sep", "sep2", "sep_style") if mine[k] != ref[k]]
    return {"fastchat": ref["name"], "differences": diffs, "fastchat_values": {k: ref[k] for k in diffs}}
