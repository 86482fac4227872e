"""LLM access: backends behind one interface (:mod:`instag.llm.base`) and one job layer (:mod:`instag.llm.job`).

Stages call models only through :class:`instag.llm.job.LLMJob` (cost estimate, spend cap, cache, parsing,
re-asks, failure records). ``get_backend({"backend": "openai", "model": "gpt-3.5-turbo", "concurrency": 32})``
imports the implementation named in :data:`BACKENDS` only then (alpaca_eval's ``get_fn_completions``) and
constructs it with the other keys as keyword arguments. Shared pieces: :mod:`~instag.llm.cost` (prices and the
cap), :mod:`~instag.llm.cache`, :mod:`~instag.llm.prompts` (templates and schemas), :mod:`~instag.llm.parsing`
(JSON in text), :mod:`~instag.llm.local` (what in-process backends share).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import ConfigError
from .base import Backend, ChatRequest, ChatResponse, GenerationParams
from .cache import CachedBackend

#: backend name -> "module:Class" (relative to this package) and the extra that installs what it needs
BACKENDS: dict[str, tuple[str, str]] = {
    "openai": ("openai_backend:OpenAIBackend", "llm"),
    "embedded": ("embedded:EmbeddedBackend", "llm"),
    "transformers": ("transformers_local:TransformersBackend", "llm"),
    "vllm": ("vllm_backend:VLLMBackend", "vllm (pip install vllm, on a CUDA machine)"),
    "scripted": ("scripted:ScriptedBackend", "none"),
    "instagger": ("instagger_backend:InsTaggerBackend", "llm"),  # a distilled InsTagger (instag instagger)
}


def backend_class(name: str) -> type:
    """The class registered under ``name``, imported now; a ConfigError (key ``backend``) when that fails."""
    if name not in BACKENDS:
        raise ConfigError("backend", f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    target, extra = BACKENDS[name]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing.startswith(f"{__name__}.{module_name}"):
            raise ConfigError("backend", f"backend {name!r} is not available in this installation") from None
        how = f"pip install 'instag-workflow[{extra}]'" if " " not in extra else extra
        raise ConfigError("backend", f"backend {name!r} needs the package {missing!r}: {how}") from None
    return getattr(module, cls_name)


def get_backend(spec: dict[str, Any]) -> Backend:
    """Construct the backend a config spec names: ``{"backend": NAME, "model": ..., **options}``."""
    if not isinstance(spec, dict) or "backend" not in spec:
        raise ConfigError("backend", "a backend spec is a mapping with a 'backend' key (e.g. {'backend': 'embedded'})")
    options = {k: v for k, v in spec.items() if k != "backend"}
    cls = backend_class(spec["backend"])
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        accepted = [p for p in sig.parameters if p != "self"]
        for key in options:
            if key not in accepted:
                raise ConfigError(key, f"not an option of backend {spec['backend']!r} (options: {', '.join(accepted)})")
    return cls(**options)


__all__ = [
    "BACKENDS",
    "Backend",
    "CachedBackend",
    "ChatRequest",
    "ChatResponse",
    "GenerationParams",
    "backend_class",
    "get_backend",
]

from .job import JobResult, JobSettings, LLMJob  # noqa: E402  (after get_backend, which job uses)

__all__ += ["JobResult", "JobSettings", "LLMJob"]
