"""A deterministic test backend (alpaca_eval's ``decoders/test.py``): no model, answers from a script.

Text for a request comes from the first of:

1. ``fn(request) -> str | ChatResponse``: any callable (a ChatResponse is returned as is, e.g. a failure);
2. ``responses[last user message]``: a dict; a value may be a list, whose ``repeat``-th item answers (cycling);
3. ``default``: a fixed text, by default a valid tagging answer (:data:`DEFAULT_TAGS` as a JSON list).

Failures: with ``fail_every=N`` every N-th call (1-based count over the backend's life) fails with
``error="scripted: simulated failure"`` and ``text=fail_text`` (the raw text kept for inspection);
``crash_after=N`` raises :class:`ScriptedCrash` once N calls have been answered (a killed run, for resume tests).

What it saw: ``calls`` (every request answered, in order), ``call_counts`` (per last user message) and
``n_calls``. Token counts are word counts. ``generate`` reports each response through ``progress(1)`` and
``on_response(index, response)`` as it goes, like the ``openai`` backend.

Example::

    backend = ScriptedBackend(responses={"What is 2+2?": "4"}, default="[]")
    [r.text for r in backend.generate([ChatRequest([{"role": "user", "content": "What is 2+2?"}])])]  # ['4']
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .base import Backend, ChatRequest, ChatResponse, ProgressFn

DEFAULT_TAGS = [{"tag": "information retrieval", "explanation": "The user asks for information."}]


class ScriptedCrash(RuntimeError):
    """Raised by a :class:`ScriptedBackend` with ``crash_after`` set, to simulate a run killed mid-way."""


def last_user_message(request: ChatRequest) -> str:
    """The last user message of a chat (a pre-rendered ``prompt`` is taken whole)."""
    if request.prompt is not None:
        return request.prompt
    for msg in reversed(request.messages):
        if msg.get("role") == "user":
            return str(msg.get("content", ""))
    return ""


class ScriptedBackend(Backend):
    """Deterministic scripted answers; see the module docstring."""

    name = "scripted"
    default_model = "scripted"
    streams = True
    raw_prompts = True

    @classmethod
    def spec_for_run(cls, spec: dict, run_dir: Path) -> dict:
        """Any run will do: a scripted backend loads no weights."""
        return spec

    def __init__(
        self,
        model: str = "scripted",
        responses: Mapping[str, str | list[str]] | None = None,
        fn: Callable[[ChatRequest], str | ChatResponse] | None = None,
        fail_every: int = 0,
        *,
        default: str | None = None,
        fail_text: str = "not json {",
        crash_after: int | None = None,
        revision: str = "1",
        delay: float = 0.0,
        finish_reason: str = "stop",
    ):
        self.model = model
        self.revision = revision
        self.responses = dict(responses or {})
        self.fn = fn
        self.fail_every = int(fail_every)
        self.default = json.dumps(DEFAULT_TAGS) if default is None else default
        self.fail_text = fail_text
        self.crash_after = crash_after
        self.delay = float(delay)
        self.finish_reason = finish_reason
        self.calls: list[ChatRequest] = []
        self.call_counts: Counter[str] = Counter()
        self.n_calls = 0

    def answer(self, request: ChatRequest) -> ChatResponse:
        """One response (counts the call)."""
        if self.crash_after is not None and self.n_calls >= self.crash_after:
            raise ScriptedCrash(f"scripted crash after {self.n_calls} calls")
        self.n_calls += 1
        self.calls.append(request)
        prompt = last_user_message(request)
        self.call_counts[prompt] += 1
        t0 = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        if request.prompt is not None:
            prompt_tokens = len(request.prompt.split())
        else:
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.messages)
        if self.fail_every and self.n_calls % self.fail_every == 0:
            return ChatResponse(
                text=self.fail_text,
                prompt_tokens=prompt_tokens,
                seconds=time.perf_counter() - t0,
                error="scripted: simulated failure",
            )
        if self.fn is not None:
            out = self.fn(request)
            if isinstance(out, ChatResponse):
                return out
            text = str(out)
        elif prompt in self.responses:
            value = self.responses[prompt]
            text = value[request.repeat % len(value)] if isinstance(value, list) else value
        else:
            text = self.default
        return ChatResponse(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(text.split()),
            seconds=time.perf_counter() - t0,
            finish_reason=self.finish_reason,
        )

    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: Callable[[int, ChatResponse], None] | None = None,
    ) -> list[ChatResponse]:
        out = []
        for i, req in enumerate(requests):
            resp = self.answer(req)
            out.append(resp)
            if on_response is not None:
                on_response(i, resp)
            if progress is not None:
                progress(1)
        return out

    def close(self) -> None:
        pass
