"""The one interface every LLM backend implements (the contract between backends, cache and stages).

A stage builds :class:`ChatRequest` objects, hands a batch to a :class:`Backend` (usually wrapped in the
content-addressed cache, ``instag.llm.cache``) and gets one :class:`ChatResponse` per request, in order.
A backend never raises for one failed request: the response carries ``error`` and the raw text instead.
Backends are chosen by name from a config spec (``{"backend": "embedded", "model": ..., ...}``) through
:func:`instag.llm.get_backend`, which imports the implementation lazily.

Changes to this file must stay backward compatible: add optional fields, never rename or remove.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters. Every field is part of the cache key."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: JSON schema the output must follow: grammar-constrained decoding for local backends, the
    #: endpoint's structured-output / JSON mode for API backends. None: free text.
    json_schema: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class ChatRequest:
    """One chat completion to make."""

    messages: list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": str}]
    params: GenerationParams = field(default_factory=GenerationParams)
    #: Index of a repeated sampled call (temperature > 0): part of the cache key, so repeats differ.
    repeat: int = 0
    #: Caller's bookkeeping (record id, turn index, ...): never part of the cache key, never sent.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatResponse:
    """The outcome of one request: text, or an error after the backend's own retries."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str | None = None  # "stop", "length", ...
    error: str | None = None  # set when the call failed; ``text`` may then hold what came back
    attempts: int = 1
    cached: bool = False  # served from the cache, no model call made

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


ProgressFn = Callable[[int], None]  # called with the number of requests just completed


@runtime_checkable
class Backend(Protocol):
    """A chat model. ``name``, ``model`` and ``revision`` identify it in the cache key."""

    name: str  # "openai", "transformers", "embedded", "vllm", "scripted"
    model: str  # model id, path or file name
    revision: str  # what pins the weights: a file hash, a hub revision, or the endpoint's model id

    def generate(self, requests: Sequence[ChatRequest], progress: ProgressFn | None = None) -> list[ChatResponse]:
        """Answer every request, in order; never raise for a single request's failure."""
        ...

    def close(self) -> None:
        """Free resources (threads, sessions, model memory)."""
        ...
