"""A distilled InsTagger as a tagging backend: ``{backend: instagger, model: <training run or model folder>}``.

The model is a causal LM fine-tuned by ``instag instagger train`` (or the released ``OFA-Sys/InsTagger``
checkpoint, a local folder) on the InsTagger prompt (paper.md §9.2) in FastChat's ``vicuna_v1.1`` template.
This backend serves it behind the same interface as every other backend, so it can stand in
``tagging.backend`` of any config:

- ``model`` is a training run folder (with ``run.json`` and ``model/``, what ``instag instagger train`` writes)
  or a model folder itself (then the template is FastChat's ``vicuna_v1.1`` as is, the released checkpoint's).
- Every request is rendered the way the model was trained: the query is taken out of the request's user turn
  (:func:`instag.instagger.prompt.extract_query` understands the InsTag tagging prompts and the InsTagger
  prompt), put into the InsTagger prompt and rendered with the run's template (system message, roles,
  separators from ``run.json``); the request's own system message is not used.
- Decoding is :class:`~.transformers_local.TransformersBackend`'s: batched, and grammar-constrained by xgrammar
  when the request carries a JSON schema (the tagging stage sends its tag schema).
- ``revision`` (part of every cache key) fingerprints the weights and the template, so a retrained model
  never answers from an older model's cache entries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import ConfigError
from .base import ChatResponse
from .local import folder_fingerprint, split_at_stop
from .transformers_local import TransformersBackend


def resolve_run(model: str | Path) -> tuple[Path, dict]:
    """(weights folder, template info) of a training run folder or a bare model folder."""
    path = Path(str(model)).expanduser()
    if not path.is_dir():
        raise ConfigError("model", f"InsTagger model folder not found: {path}")
    run_file = path / "run.json"
    if run_file.is_file():
        run = json.loads(run_file.read_text(encoding="utf-8"))
        weights = path / "model" if (path / "model").is_dir() else path
        return weights, template_info(run)
    return path, {}


def template_info(run: dict) -> dict:
    """The conversation template recorded in a training run's ``run.json``: its ``rendering`` object (the
    trainer's ``TemplateParams``), a ``template`` object, or flat keys beside a template name."""
    if isinstance(run.get("rendering"), dict):
        return dict(run["rendering"])
    tpl = run.get("template")
    if isinstance(tpl, dict):
        return dict(tpl)
    info = {"template": tpl} if tpl else {}
    for key in ("system", "roles", "sep_style", "sep", "sep2", "fastchat_sep2", "stop", "fastchat_version"):
        if key in run:
            info[key] = run[key]
    return info


class InsTaggerBackend(TransformersBackend):
    """A fine-tuned InsTagger through ``transformers``; see the module docstring."""

    name = "instagger"

    @classmethod
    def spec_for_run(cls, spec: dict, run_dir: Path) -> None:
        """None: an InsTagger is loaded from its own training run (``model``), not from a fine-tuning run."""
        return None

    def __init__(
        self,
        model: str,
        dtype: str = "bfloat16",
        batch_size: int = 16,
        device: str = "cpu",
        max_batch_tokens: int | None = 8192,
        threads: int | None = None,
        revision: str | None = None,
        max_context: int | None = None,
    ):
        from ..instagger.prompt import template_params

        weights, info = resolve_run(model)
        self.template = template_params(info)
        tpl_hash = hashlib.sha256(json.dumps(self.template.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        rev = revision or f"dir:{folder_fingerprint(weights)}+{dtype}+tpl:{tpl_hash}"
        super().__init__(
            str(weights),
            dtype=dtype,
            batch_size=batch_size,
            device=device,
            max_batch_tokens=max_batch_tokens,
            threads=threads,
            revision=rev,
            max_context=max_context,
        )
        self.model = str(model)
        self.stops = tuple(s for s in {self.template.stop, self.template.sep2} if s)
        self._bos: str | None = None

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt the model was trained on, for the query inside the request's (last) user turn."""
        from ..instagger.prompt import extract_query, render, user_turn

        users = [m["content"] for m in messages if m.get("role") == "user"]
        if not users:
            raise ValueError("an InsTagger request needs a user turn holding the query")
        return self.bos_text() + render(user_turn(extract_query(users[-1])), self.template)

    def bos_text(self) -> str:
        """The beginning-of-sequence token the trainer's tokenizer call added (``add_special_tokens=True``), as
        text: prompts are tokenized without special tokens here, so it is written into the prompt (LLaMA: ``<s>``;
        SmolLM2 adds none)."""
        if self._bos is None:
            tok = self.tokenizer()
            with_special = tok("a", add_special_tokens=True)["input_ids"]
            bare = tok("a", add_special_tokens=False)["input_ids"]
            added = len(with_special) > len(bare) and with_special[0] == tok.bos_token_id
            self._bos = tok.bos_token if added and tok.bos_token else ""
        return self._bos

    def _load(self):
        mdl = super()._load()
        mdl.config.use_cache = True  # a run saved after gradient checkpointing may have it off
        return mdl

    def _generate_batch(self, prompts, params, repeat) -> list[ChatResponse]:
        out = super()._generate_batch(prompts, params, repeat)
        if self.stops:  # a template end marker that is not a special token of this tokenizer comes out as text
            for r in out:
                if r.text is not None:
                    r.text, hit = split_at_stop(r.text, self.stops)
                    r.finish_reason = "stop" if hit else r.finish_reason
        return out
