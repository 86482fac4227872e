"""The tagger: tag line for each query, through the LLM-job layer (cache, cost cap, parse, re-asks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from ..llm import backend_class
from ..llm.base import Backend, GenerationParams
from ..llm.job import LLMJob
from .items import Item, blank_reason, tag_line
from .parse import job_parser
from .prompt import build_request, load_schema, load_template, template_hash
from .settings import TaggingSettings


@dataclass
class Counts:
    records: int = 0
    queries: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0  # empty, whitespace-only or invisible-only queries: never sent
    retried: int = 0  # queries that needed more than one attempt
    truncated: int = 0  # queries cut to max_query_tokens
    dropped_objects: int = 0  # invalid objects inside otherwise usable answers

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Tagger:
    """Builds one request per query and runs them as an :class:`~instag.llm.job.LLMJob` of stage ``tagging``."""

    def __init__(self, settings: TaggingSettings, *, backend: Backend | None = None, threads: int | None = None):
        self.settings = s = settings
        cls = type(backend) if backend is not None else backend_class(s.backend["backend"])
        self.prompt = s.prompt_for(cls.small_model)
        self.template = load_template(self.prompt)
        self.schema = load_schema() if s.use_schema else None
        self.job = LLMJob(
            s.job_settings(),
            stage="tagging",
            namespace=template_hash(self.template, self.schema),
            threads=threads,
            backend=backend,
        )
        self.namespace = self.job.namespace
        self.params = self.params_of(s, self.schema)

    @staticmethod
    def params_of(s: TaggingSettings, schema: dict | None) -> GenerationParams:
        """Decoding parameters of a first attempt (retries: see :meth:`instag.llm.job.LLMJob.attempt_request`)."""
        return GenerationParams(
            temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed, json_schema=schema
        )

    def request(self, text: str, attempt: int = 0):
        """The request that tags ``text`` (attempt ``k`` > 0: the re-ask the job layer makes)."""
        return self.job.attempt_request(build_request(self.template, text, self.settings.system, self.params), attempt)

    def truncate(self, text: str) -> tuple[str, bool]:
        limit = self.settings.max_query_tokens
        return (text, False) if limit is None else self.job.truncate_text(text, limit)

    def tag(
        self,
        items: list[Item],
        counts: Counts,
        progress: Callable[[int], None] | None = None,
        attempts: Iterable[int] | None = None,
    ) -> list[dict]:
        """Tag ``items`` (one chunk); return their tag lines in order."""
        info = self.job.backend_info
        ident = {"backend": info["backend"], "model": info["model"]}
        lines: list[dict | None] = [None] * len(items)
        todo, requests = [], []
        for k, it in enumerate(items):
            reason = blank_reason(it.text)
            if reason is not None:
                lines[k] = tag_line(it, "rejected", ident, error=reason)
                if progress is not None:
                    progress(1)
                continue
            text, cut = self.truncate(it.text)
            counts.truncated += cut
            todo.append(k)
            requests.append(self.request(text))
        results = self.job.run(requests, parse=job_parser, progress=progress, attempts=attempts) if requests else []
        for k, r in zip(todo, results, strict=True):
            counts.retried += r.retried
            if r.ok:
                counts.dropped_objects += r.value.dropped
                lines[k] = tag_line(items[k], "ok", ident, tags=r.value.tags)
            else:
                lines[k] = tag_line(items[k], "failed", ident, error=r.error, raw=r.raw)
        for line in lines:
            counts.queries += 1
            counts.ok += line["status"] == "ok"
            counts.failed += line["status"] == "failed"
            counts.rejected += line["status"] == "rejected"
        return lines  # type: ignore[return-value]

    @property
    def stats(self) -> dict:
        return self.job.stats

    def close(self) -> None:
        self.job.close()
