"""The tagging stage's settings (config section ``tagging``) and the prompt each backend gets."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import ConfigError
from ..llm.job import JobSettings

DEFAULT_SYSTEM = "You are a helpful assistant."  # A1: the paper's prompt goes in the user turn
PAPER_PROMPT = "tagging"  # the paper's prompt, with its two example tags (API models)
ZERO_SHOT_PROMPT = "tagging_no_examples"  # without them: a small model copies the examples (the embedded one)
WORKFLOW_KEYS = ("shard_size",)  # in the config section, but used by the workflow only


@dataclass
class TaggingSettings:
    """Everything that changes a tagging result (config section ``tagging``, minus sharding)."""

    backend: dict = field(default_factory=lambda: {"backend": "embedded"})
    #: template name in instag/prompts (without .txt) or a path to a .txt file; None: the paper's prompt for
    #: most backends, the zero-shot one for small models (``Backend.small_model``, e.g. ``embedded``)
    prompt: str | None = None
    system: str | None = DEFAULT_SYSTEM
    use_schema: bool = True  # send the tag JSON schema (grammar for local backends, structured output for APIs)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    max_retries: int = 2
    retry_temperature: float = 0.7
    max_query_tokens: int | None = 2048
    chunk_size: int = 64  # queries per backend call: results are written (and cached) chunk by chunk
    cache_dir: str | None = "cache/llm"
    spend_cap_usd: float | None = None
    prices: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> TaggingSettings:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        for drop in WORKFLOW_KEYS:
            d.pop(drop, None)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"tagging.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})")
        s = cls(**d)
        s.job_settings().check()
        if s.max_tokens < 1:
            raise ConfigError("tagging.max_tokens", "must be >= 1")
        if s.max_query_tokens is not None and s.max_query_tokens < 1:
            raise ConfigError("tagging.max_query_tokens", "must be >= 1 or null")
        if s.chunk_size < 1:
            raise ConfigError("tagging.chunk_size", "must be >= 1")
        return s

    @classmethod
    def coerce(cls, settings: TaggingSettings | dict | None) -> TaggingSettings:
        return settings if isinstance(settings, TaggingSettings) else cls.from_dict(settings)

    def job_settings(self) -> JobSettings:
        """What the LLM-job layer needs of these settings."""
        return JobSettings(
            backend=self.backend,
            cache_dir=self.cache_dir,
            prices=self.prices,
            spend_cap_usd=self.spend_cap_usd,
            max_retries=self.max_retries,
            retry_temperature=self.retry_temperature,
            section="tagging",
        )

    def prompt_for(self, small_model: bool) -> str:
        """The template to use: the configured one, else the one suited to the backend's model."""
        if self.prompt:
            return self.prompt
        return ZERO_SHOT_PROMPT if small_model else PAPER_PROMPT
