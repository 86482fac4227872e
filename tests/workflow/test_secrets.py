"""API stages in the workflow: the key is never written, and the cost estimate comes before any call.

The workflow runs its API stages (tagging, then normalization and the tag-quality judge) against the loopback
OpenAI-compatible server (20% faults, so error paths that might echo a request are exercised too) with a
recognizable fake key in an environment variable named by the backend spec's ``api_key_env``. The server
records the ``Authorization`` headers it receives, which proves the key was read and sent; then every file under
the working directory (``results/``, logs, benchmarks, ``.snakemake/`` metadata and logs, the LLM cache) and
Snakemake's own output are searched for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("openai", reason="the openai backend needs the 'llm' extra")

from instag.io import read_tsv  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.support import openai_server  # noqa: E402
from tests.workflow.conftest import write_config  # noqa: E402

pytestmark = pytest.mark.slow

KEY_ENV = "INSTAG_TEST_FAKE_API_KEY"
VOCAB = ["python coding", "math word problem", "travel planning", "creative writing", "history question",
         "data analysis", "translation", "health advice"]  # fmt: skip


class RecordingState(openai_server._State):
    """The test server, also keeping the Authorization headers it was sent."""

    def reset(self) -> None:
        super().reset()
        self.auth: set[str] = set()

    async def chat(self, request):
        self.auth.add(request.headers.get("Authorization", ""))
        return await super().chat(request)


def reply(body: dict) -> str:
    """A judge verdict for judge prompts; for tagging prompts, two tags chosen by a hash of the query."""
    prompt = openai_server.last_user_message(body)
    if '"verdict"' in prompt:
        return json.dumps({"explanation": "the tags fit", "verdict": "yes"})
    h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    tags = {VOCAB[h % len(VOCAB)], VOCAB[(h // 8) % len(VOCAB)]}
    return json.dumps([{"tag": t, "explanation": "the query asks for " + t} for t in sorted(tags)])


def api_config(workdir: Path, base_url: str, datasets: list[str] | None = None, **tagging_extra) -> Path:
    """configs/test.yaml with the tagger and the judge on the loopback server, the key named by KEY_ENV
    (``datasets``: keep only these)."""
    spec = {"backend": "openai", "model": "test-model", "base_url": base_url, "api_key_env": KEY_ENV,
            "concurrency": 4, "timeout": 1.0, "max_retries": 4, "backoff_base": 0.01, "backoff_max": 0.05,
            "max_retry_after": 0.05}  # fmt: skip
    base = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
    tagging = {**base.get("tagging", {}), "backend": spec, "prompt": "tagging", "max_retries": 1,
               "prices": {"test-model": {"prompt": 0.5, "completion": 1.5}}, **tagging_extra}  # fmt: skip
    quality = {**base.get("quality", {}), "judge": spec, "n_precision": 20, "n_consistency": 5, "set_size": 2}
    extra = {} if datasets is None else {"datasets": {k: base["datasets"][k] for k in datasets}}
    return write_config(workdir, tagging=tagging, quality=quality, **extra)


def snakemake(workdir: Path, cfg: Path, env: dict, *targets: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(cfg), "--cores", "2", "--printshellcmds", "--show-failed-logs", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=workdir, env=env)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, shared_data):
    workdir = tmp_path_factory.mktemp("secrets")
    key = f"sk-instag-FAKE-{secrets.token_hex(16)}"
    env = {**os.environ, KEY_ENV: key, "OPENAI_API_KEY": key, "HF_HUB_OFFLINE": "1"}
    original = openai_server._State
    openai_server._State = RecordingState
    try:
        server = openai_server.OpenAIServer(fault_rate=0.2, seed=1, retry_after=0.01, hang_seconds=2, reply=reply)
        server.start()
    finally:
        openai_server._State = original
    try:
        proc = snakemake(workdir, api_config(workdir, server.base_url), env, "stage_tagging", "stage_quality")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        seen = server._in_loop(lambda: (set(server._state.auth), server._state.requests))
        faults = server.faults_injected
    finally:
        server.stop()
    return {"workdir": workdir, "key": key, "proc": proc, "auth": seen[0], "requests": seen[1], "faults": faults}


def test_the_key_is_read_from_the_environment_and_sent(api_run):
    assert api_run["requests"] > 0 and sum(api_run["faults"].values()) > 0
    assert api_run["auth"] == {f"Bearer {api_run['key']}"}, "the server did not receive the key from the environment"
    # both API stages made calls: the tagger and the judge
    workdir = api_run["workdir"]
    assert int({r["dataset"]: r for r in read_tsv(workdir / "results/tables/tagging.tsv")}["all"]["calls"]) > 0
    assert sum(int(r["cases"]) for r in read_tsv(workdir / "results/tables/tag_quality.tsv")) > 0


def test_the_key_is_written_nowhere(api_run):
    workdir, key, proc = api_run["workdir"], api_run["key"], api_run["proc"]
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.is_relative_to(workdir / "results" / "logs") for p in files)
    assert any(p.is_relative_to(workdir / ".snakemake") for p in files)
    assert any(p.relative_to(workdir).parts[0] == "cache" for p in files), "no LLM cache under the workdir"
    for needle in (key.encode(), key.rsplit("-", 1)[1].encode()):  # the key, and its secret part alone
        leaked = [str(p.relative_to(workdir)) for p in files if needle in p.read_bytes()]
        assert not leaked, f"the API key was written to {leaked}"
    assert key not in proc.stdout and key not in proc.stderr, "the API key was printed by snakemake"


def test_cost_estimate_is_written_before_any_api_call(api_run):
    workdir, err = api_run["workdir"], api_run["proc"].stderr
    rows = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "cost_estimate.tsv")}
    tagging = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "tagging.tsv")}
    assert int(rows["all"]["requests"]) == int(tagging["all"]["queries"]) > 0
    assert float(rows["all"]["usd"]) > 0 and rows["all"]["model"] == "test-model"
    # the estimate job finished before the first tagging job started (tag_shard takes the estimate as input)
    start = err.index("rule tagging_estimate_cost")
    first_shard = err.index("rule tagging_tag_shard")
    assert start < first_shard and "Finished job" in err[start:first_shard]
