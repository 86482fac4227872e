"""The MT-Bench stage's use of the LLM-job layer (:mod:`instag.llm.job`): one place that builds a job from
the stage's settings and runs it with a progress bar."""

from __future__ import annotations

import logging
import sys

from ..llm.job import JobSettings, LLMJob

log = logging.getLogger(__name__)


class StageJob:
    """An :class:`~instag.llm.job.LLMJob` with a tqdm bar per run (on stderr, i.e. the rule's log)."""

    def __init__(self, job: LLMJob):
        self.job = job

    @property
    def backend(self):
        """The model backend itself (render, raw_prompts, name): built on first use."""
        return self.job.raw_backend

    @property
    def backend_info(self) -> dict:
        return self.job.backend_info

    def estimate(self, requests) -> dict:
        return self.job.estimate(requests)

    def run(self, requests, parse=None, desc: str = "requests"):
        from tqdm import tqdm

        with tqdm(total=len(requests), desc=desc, unit="req", file=sys.stderr, mininterval=2.0) as bar:
            return self.job.run(requests, parse=parse, progress=bar.update)

    def stats(self) -> dict:
        return self.job.stats

    def close(self) -> None:
        self.job.close()


def make_job(
    spec: dict,
    *,
    stage: str,
    namespace: str,
    cache_dir: str | None,
    prices: dict | None = None,
    spend_cap_usd: float | None = None,
    max_retries: int = 2,
    retry_temperature: float = 0.7,
    threads: int | None = None,
    backend=None,
    section: str = "mtbench",
) -> StageJob:
    settings = JobSettings(
        backend=dict(spec),
        cache_dir=cache_dir,
        prices=dict(prices or {}),
        spend_cap_usd=spend_cap_usd,
        max_retries=max_retries,
        retry_temperature=retry_temperature,
        section=section,
    )
    return StageJob(LLMJob(settings, stage=stage, namespace=namespace, threads=threads, backend=backend))
