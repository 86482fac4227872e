"""The one interface every LLM backend implements (the contract between backends, cache, job layer and stages).

A stage builds :class:`ChatRequest` objects and runs them through an :class:`instag.llm.job.LLMJob`, which
wraps a :class:`Backend` in the content-addressed cache (``instag.llm.cache``) and gets one
:class:`ChatResponse` per request, in order. A backend never raises for one failed request: the response
carries ``error`` and the raw text instead. Backends are chosen by name from a config spec
(``{"backend": "embedded", "model": ..., ...}``) through :func:`instag.llm.get_backend`, which imports the
implementation lazily.

:class:`Backend` declares every capability a stage or the cache may use, with a default, so nothing probes
for attributes or names a backend: ``paid`` (bills per token: the cost rule), ``takes_threads``, ``streams``
(``generate`` reports each response through ``on_response``), ``raw_prompts`` (accepts
:attr:`ChatRequest.prompt`), ``small_model`` (prefers zero-shot prompts), ``spec_for_run`` (loads a fine-tuning
run's model), ``engine``, ``reported_model``, ``load``, ``lookup``, ``count_tokens``, ``truncate_text``,
``render``, ``call_stats`` and ``info``.

Changes to this file must stay backward compatible: add optional fields, never rename or remove.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: characters per token assumed where a backend has no tokenizer of its own (API models)
CHARS_PER_TOKEN = 4


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
    #: A prompt already rendered by the caller (e.g. FastChat's Vicuna template), sent as is with no chat
    #: template applied; part of the cache key when set. Only backends with ``raw_prompts`` take it.
    prompt: str | None = None


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
OnResponse = Callable[[int, ChatResponse], None]  # called with (index in the batch, response) as each completes


class Backend:
    """A chat model. ``name``, ``model`` and ``revision`` identify it in the cache key.

    Subclasses set ``name`` (class), ``model`` and ``revision`` (instance) and implement :meth:`generate`;
    everything else has a default here, overridden where a backend can do better.
    """

    name: ClassVar[str] = "?"  # "openai", "transformers", "embedded", "vllm", "scripted"
    model: str  # model id, path or file name
    revision: str  # what pins the weights: a file hash, a hub revision, or the endpoint's model id

    #: model used when a spec names none (for cost tables before the backend is built)
    default_model: ClassVar[str | None] = None
    #: bills per token: with a spend cap, such a model needs a price (else a ConfigError naming ``prices``)
    paid: ClassVar[bool] = False
    #: takes a ``threads`` option (CPU threads of an in-process model), set from the job's threads
    takes_threads: ClassVar[bool] = False
    #: ``generate`` accepts ``on_response`` and calls it as each response completes
    streams: ClassVar[bool] = False
    #: accepts :attr:`ChatRequest.prompt` (a pre-rendered prompt, no chat template applied)
    raw_prompts: ClassVar[bool] = False
    #: a model too small to follow a few-shot prompt without copying its examples (stages pick zero-shot ones)
    small_model: ClassVar[bool] = False
    #: requests a backend call can usefully take at once (the cache sends misses in chunks of this size)
    concurrency: int = 0
    batch_size: int = 0

    @classmethod
    def spec_for_run(cls, spec: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
        """``spec`` (this backend's) set to load the model a fine-tuning run wrote to ``run_dir`` (``model/``:
        the HF folder, ``model.gguf``: the GGUF repack), or None when this backend cannot load one (default)."""
        return None

    # ------------------------------------------------------------------ identity
    @property
    def engine(self) -> str:
        """What computes the answers (e.g. ``openvino`` or ``transformers`` for ``embedded``)."""
        return self.name

    @property
    def reported_model(self) -> str | None:
        """The model id the endpoint reported in its answers (API backends), else None."""
        return None

    def info(self) -> dict[str, Any]:
        """Identity for summaries and records: backend, model, revision, engine, reported model."""
        return {
            "backend": self.name,
            "model": self.model,
            "revision": self.revision,
            "engine": self.engine,
            "reported_model": self.reported_model,
        }

    # ------------------------------------------------------------------ text
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` (default: one per ``CHARS_PER_TOKEN`` characters, for models without a tokenizer)."""
        return -(-len(text) // CHARS_PER_TOKEN)

    def truncate_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to its first ``max_tokens`` tokens; (text, whether it was cut)."""
        cut = max_tokens * CHARS_PER_TOKEN
        return (text[:cut], True) if len(text) > cut else (text, False)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text the model sees for a chat (local backends: the tokenizer's chat template with the
        generation prompt). Default: a plain transcript, for backends whose template is applied remotely."""
        lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    # ------------------------------------------------------------------ calls
    def load(self) -> None:
        """Load the model now (default: nothing to load; local backends otherwise load on first use)."""

    def lookup(self, requests: Sequence[ChatRequest]) -> list[ChatResponse | None]:
        """Stored successful answers of ``requests`` without any model call (None each: no store)."""
        return [None] * len(requests)

    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: OnResponse | None = None,
    ) -> list[ChatResponse]:
        """Answer every request, in order; never raise for a single request's failure."""
        raise NotImplementedError

    def call_stats(self) -> dict[str, Any]:
        """Counts of what this object did (hits, calls, tokens, ...); empty for a bare backend."""
        return {}

    def close(self) -> None:
        """Free resources (threads, sessions, model memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
