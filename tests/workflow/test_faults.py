"""Process-level faults: SIGKILL mid-run, then resume; several processes writing one cache at once.

These tests start real processes (the cache is shared through the file system, as Snakemake jobs share it)
and talk to the loopback OpenAI-compatible server over real HTTP. The server's per-prompt counters tell
whether a call that had completed before the kill was made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("openai", reason="the openai backend needs the 'llm' extra")

from instag.llm.base import ChatRequest, GenerationParams  # noqa: E402
from instag.llm.cache import CachedBackend, cache_stats, iter_records  # noqa: E402
from instag.llm.scripted import ScriptedBackend  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.support.openai_server import OpenAIServer  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out


# --------------------------------------------------------------------------------------------- kill


CLIENT = """
import json, sys
from instag.io import atomic_write
from instag.llm.base import ChatRequest, GenerationParams
from instag.llm.cache import CachedBackend
from instag.llm.openai_backend import OpenAIBackend

base_url, cache_dir, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
reqs = [ChatRequest([{"role": "user", "content": f"kill{i} count the letters"}], GenerationParams(max_tokens=32))
        for i in range(n)]
backend = OpenAIBackend("test-model", base_url=base_url, concurrency=4, timeout=10, max_retries=1, backoff_base=0.01)
with CachedBackend(backend, cache_dir) as cached:
    res = cached.generate(reqs)
    stats = cached.stats.as_dict()
with atomic_write(out) as fh:
    json.dump([r.text for r in res], fh)
print(json.dumps(stats))
"""

N_KILL = 160


def prompts_in_cache(cache_dir: Path, base_url: str) -> set[str]:
    """Prompts whose successful answer is in the cache (keys recomputed as the client computes them)."""
    from instag.llm.openai_backend import OpenAIBackend

    cached = CachedBackend(OpenAIBackend("test-model", base_url=base_url), cache_dir)
    ok = {rec["key"] for _s, _o, rec in iter_records(cache_dir) if rec and rec["ok"]}
    params = GenerationParams(max_tokens=32)
    out = set()
    for i in range(N_KILL):
        text = f"kill{i} count the letters"
        if cached.key(ChatRequest([{"role": "user", "content": text}], params)) in ok:
            out.add(text)
    return out


def test_sigkill_mid_run_resumes_without_repeating_completed_calls(tmp_path):
    # the reference: one uninterrupted run
    with OpenAIServer(delay=0.02) as server:
        finish(spawn(CLIENT, server.base_url, str(tmp_path / "ref-cache"), str(tmp_path / "ref.json"), str(N_KILL)))
    with OpenAIServer(delay=0.02) as server:
        cache_dir, out = tmp_path / "cache", tmp_path / "out.json"
        proc = spawn(CLIENT, server.base_url, str(cache_dir), str(out), str(N_KILL))
        deadline = time.monotonic() + 60
        while server.stats(bodies=False)["ok"] < N_KILL // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists(), "a killed run left an output that looks complete"
        done = prompts_in_cache(cache_dir, server.base_url)
        sent_before = server.stats(bodies=False)
        assert 0 < len(done) < N_KILL, "the kill did not land mid-run"

        stats = json.loads(finish(spawn(CLIENT, server.base_url, str(cache_dir), str(out), str(N_KILL))))
        counts = server.counts
    assert out.read_bytes() == (tmp_path / "ref.json").read_bytes(), "resumed output differs from an uninterrupted run"
    repeated = sorted(p for p in done if counts[p] != 1)
    assert not repeated, f"completed calls made again after the restart: {repeated[:5]}"
    assert stats["hits"] == len(done) and stats["calls"] == N_KILL - len(done)
    # at most the calls in flight at the kill (concurrency 4) were sent twice
    in_flight = sent_before["requests"] - len(done)
    assert 0 <= in_flight <= 4
    assert sum(counts.values()) == N_KILL + in_flight
    assert cache_stats(cache_dir)["corrupt_lines"] == 0
    print(f"kill: {len(done)} of {N_KILL} calls done before SIGKILL, {in_flight} in flight, 0 repeated")


# ------------------------------------------------------------------------------- concurrent writers


WRITER = """
import hashlib, json, sys
from instag.llm.base import ChatRequest, GenerationParams
from instag.llm.cache import CachedBackend
from instag.llm.scripted import ScriptedBackend

def answer(req):
    prompt = req.messages[-1]["content"]
    seed = hashlib.sha256(prompt.encode()).hexdigest()
    return json.dumps([{"tag": prompt, "explanation": seed * (1 + int(seed[:2], 16) % 64)}])

cache_dir, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backend = ScriptedBackend(fn=answer, delay=0.002)  # slow enough that the writers overlap in time
params = GenerationParams(max_tokens=64)
bad = 0
with CachedBackend(backend, cache_dir) as cached:
    for lo in range(start, stop, 40):  # batches, so each process picks up the others' writes as it goes
        reqs = [ChatRequest([{"role": "user", "content": f"w{i}"}], params) for i in range(lo, min(lo + 40, stop))]
        for req, resp in zip(reqs, cached.generate(reqs)):
            bad += (not resp.ok) or resp.text != answer(req)
    print(json.dumps({"bad": bad, "calls": backend.n_calls, **cached.stats.as_dict()}))
"""

READER = """
import json, sys, time
from instag.llm.cache import iter_records
cache_dir, seconds = sys.argv[1], float(sys.argv[2])
looks = corrupt = records = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    looks += 1
    for _seg, offset, rec in iter_records(cache_dir):
        if rec is None:
            corrupt += offset >= 0  # a negative offset is a line still being written: skipped, not corrupt
        else:
            records += 1
print(json.dumps({"looks": looks, "corrupt": corrupt, "records": records}))
"""


def expected_answer(prompt: str) -> str:
    seed = hashlib.sha256(prompt.encode()).hexdigest()
    return json.dumps([{"tag": prompt, "explanation": seed * (1 + int(seed[:2], 16) % 64)}])


def test_concurrent_cache_writers_lose_and_corrupt_nothing(tmp_path):
    n_proc, n_keys, span = 4, 1200, 600  # each key is written by two processes
    step = (n_keys - span) // (n_proc - 1)
    reader = spawn(READER, str(tmp_path), "3")
    writers = [spawn(WRITER, str(tmp_path), str(k * step), str(k * step + span)) for k in range(n_proc)]
    results = [json.loads(finish(w)) for w in writers]
    seen = json.loads(finish(reader))
    assert sum(r["bad"] for r in results) == 0, results
    assert seen["corrupt"] == 0 and seen["looks"] > 1, seen
    stats = cache_stats(tmp_path)
    assert stats["corrupt_lines"] == 0 and stats["truncated_tails"] == 0
    assert stats["ok_keys"] == n_keys and stats["failed_keys"] == 0
    assert stats["segments"] == n_proc, "one segment per writer"
    assert stats["records"] == sum(r["calls"] for r in results)  # every call made is recorded, once
    # every key is served from the cache with the right text by a fresh reader
    calls = []
    with CachedBackend(ScriptedBackend(fn=lambda r: calls.append(r) or "wrong"), tmp_path) as cached:
        reqs = [
            ChatRequest([{"role": "user", "content": f"w{i}"}], GenerationParams(max_tokens=64)) for i in range(n_keys)
        ]
        got = cached.generate(reqs)
    assert not calls, "a key written by a concurrent writer is missing"
    assert [r.text for r in got] == [expected_answer(f"w{i}") for i in range(n_keys)]
    dup = stats["records"] - n_keys
    print(
        f"concurrent writers: {n_proc} processes, {n_keys} keys, {stats['records']} records ({dup} written twice "
        f"by racing writers), 0 corrupt, {seen['looks']} concurrent reads"
    )


# ------------------------------------------------------------------------------------ kill a judging job


def _verdict(body: dict) -> str:
    return json.dumps({"explanation": "the tags fit", "verdict": "yes"})


def _judge_inputs(tmp_path: Path, n: int = 120) -> tuple[Path, Path]:
    data, norm = [], []
    for i in range(n):
        tags = [f"skill {i % 17}", f"topic {(i * 5) % 13}"]
        turns = [{"role": "user", "content": f"kill-judge query {i}"}, {"role": "assistant", "content": "ok"}]
        data.append({"id": f"r{i}", "dataset": "d", "source_line": i + 1, "source_id": None, "turns": turns})
        norm.append({"id": f"r{i}", "dataset": "d", "tags": tags, "queries": [tags], "status": "ok"})
    dpath, npath = tmp_path / "d.jsonl", tmp_path / "normalized.jsonl"
    dpath.write_text("".join(json.dumps(r) + "\n" for r in data))
    npath.write_text("".join(json.dumps(r) + "\n" for r in norm))
    return dpath, npath


def judge_cmd(server: OpenAIServer, dpath: Path, npath: Path, cache: Path, out: Path) -> list[str]:
    spec = {"backend": "openai", "model": "test-model", "base_url": server.base_url, "concurrency": 4}
    return [
        str(Path(sys.executable).parent / "instag"),
        "quality",
        "judge",
        "--normalized",
        str(npath),
        "--records",
        str(dpath),
        "--judge",
        json.dumps(spec),
        "--cache-dir",
        str(cache),
        "--n-precision",
        "100",
        "--n-consistency",
        "20",
        "--out",
        str(out),
        "--table",
        str(out.with_suffix(".tsv")),
    ]


def test_sigkill_judging_job_resumes_to_identical_output(tmp_path):
    pytest.importorskip("instag.quality", reason="the quality stage is not there yet")
    dpath, npath = _judge_inputs(tmp_path)
    with OpenAIServer(delay=0.02, reply=_verdict) as server:
        ref = tmp_path / "ref.jsonl"
        subprocess.run(
            judge_cmd(server, dpath, npath, tmp_path / "ref-cache", ref),
            env=ENV,
            check=True,
            capture_output=True,
            timeout=120,
        )
    with OpenAIServer(delay=0.02, reply=_verdict) as server:
        out, cache = tmp_path / "out.jsonl", tmp_path / "cache"
        proc = subprocess.Popen(
            judge_cmd(server, dpath, npath, cache, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while server.stats(bodies=False)["ok"] < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait(30)
        assert not out.exists()
        done_before = cache_stats(cache)["ok_keys"]
        requests_before = server.requests
        assert 0 < done_before < 120
        subprocess.run(
            judge_cmd(server, dpath, npath, cache, out), env=ENV, check=True, capture_output=True, timeout=120
        )
        counts = server.counts
    in_flight = requests_before - done_before
    assert sum(counts.values()) == 120 + in_flight and in_flight <= 4, "a completed judgment was asked again"
    assert out.with_suffix(".tsv").read_bytes() == ref.with_suffix(".tsv").read_bytes()
    assert out.read_bytes() == ref.read_bytes(), "resumed judgments differ from an uninterrupted run"


# ------------------------------------------------------------------------------------ kill a tagging job


def _tag_records(tmp_path: Path, n: int = 160) -> Path:
    path = tmp_path / "records.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            turns = [
                {"role": "user", "content": f"killtag {i}: plan a trip to city {i}"},
                {"role": "assistant", "content": "ok"},
            ]
            fh.write(
                json.dumps({"id": f"d-{i}", "dataset": "d", "source_line": i + 1, "source_id": None, "turns": turns})
                + "\n"
            )
    return path


def tag_cmd(server: OpenAIServer, records: Path, cache: Path, out: Path) -> list[str]:
    backend = {"backend": "openai", "model": "test-model", "base_url": server.base_url, "concurrency": 4}
    return [
        str(Path(sys.executable).parent / "instag"),
        "tagging",
        "tag-shard",
        "--records",
        str(records),
        "--out",
        str(out),
        "--summary",
        str(out.with_suffix(".json")),
        "--shard",
        "0",
        "--shard-size",
        "1000",
        "--backend-json",
        json.dumps(backend),
        "--cache-dir",
        str(cache),
        "--chunk-size",
        "32",
    ]


def test_sigkill_tagging_job_resumes_to_identical_output(tmp_path):
    pytest.importorskip("instag.tagging", reason="the tagging stage is not there yet")
    records = _tag_records(tmp_path)
    with OpenAIServer(delay=0.02) as server:
        ref = tmp_path / "ref.jsonl"
        subprocess.run(
            tag_cmd(server, records, tmp_path / "ref-cache", ref), env=ENV, check=True, capture_output=True, timeout=120
        )
    with OpenAIServer(delay=0.02) as server:
        out, cache = tmp_path / "out.jsonl", tmp_path / "cache"
        proc = subprocess.Popen(
            tag_cmd(server, records, cache, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while server.stats(bodies=False)["ok"] < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait(30)
        assert not out.exists(), "a killed job left an output that looks complete"
        done = cache_stats(cache)["ok_keys"]
        before = server.requests
        assert 0 < done < 160
        subprocess.run(tag_cmd(server, records, cache, out), env=ENV, check=True, capture_output=True, timeout=120)
        counts = server.counts
    in_flight = before - done
    assert 0 <= in_flight <= 4
    assert sum(counts.values()) == 160 + in_flight, "a completed call was made again after the restart"
    assert out.read_bytes() == ref.read_bytes(), "resumed tags differ from an uninterrupted run"
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["cache_hits"] == done and summary["calls"] == 160 - done
    print(f"tagging kill: {done} of 160 done before SIGKILL, {in_flight} in flight, 0 completed calls repeated")


# ------------------------------------------------------------------------ kill the whole snakemake process


def _snakemake_cmd(workdir: Path, cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(cfg), "--cores", "2", *args]  # fmt: skip


def _tag_outputs(workdir: Path) -> dict[str, bytes]:
    raw = workdir / "results" / "tagging"
    files = sorted(p for p in raw.rglob("shard-*.jsonl"))
    return {str(p.relative_to(workdir)): p.read_bytes() for p in files}


@pytest.mark.slow
def test_sigkill_snakemake_resumes_to_identical_tags(tmp_path_factory, shared_data):
    """SIGKILL snakemake and its jobs (the whole process group) mid-way through tagging, unlock, run again."""
    from tests.workflow.test_secrets import api_config, reply

    datasets = ["sharegpt", "alpaca"]  # multi-turn and single-turn records; 4 shard jobs of 4 records
    env = {**ENV, "INSTAG_TEST_FAKE_API_KEY": "sk-not-secret"}
    ref = tmp_path_factory.mktemp("sm-ref")
    with OpenAIServer(delay=0.05, reply=reply) as server:
        proc = subprocess.run(
            _snakemake_cmd(ref, api_config(ref, server.base_url, datasets), "stage_tagging"),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        total = server.requests
    work = tmp_path_factory.mktemp("sm-kill")
    with OpenAIServer(delay=0.05, reply=reply) as server:
        cfg = api_config(work, server.base_url, datasets)
        proc = subprocess.Popen(
            _snakemake_cmd(work, cfg, "stage_tagging"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while server.stats(bodies=False)["ok"] < total // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        cache = work / "cache" / "llm"
        done = cache_stats(cache)["ok_keys"]
        before = server.requests
        assert 0 < done < total, "the kill did not land mid-run"
        # a killed snakemake leaves its lock: --unlock, then the same command (rerun-incomplete redoes killed jobs)
        subprocess.run(_snakemake_cmd(work, cfg, "--unlock"), env=env, capture_output=True, timeout=120, check=True)
        proc = subprocess.run(
            _snakemake_cmd(work, cfg, "stage_tagging", "--rerun-incomplete"),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        counts = server.counts
    in_flight = before - done
    assert 0 <= in_flight <= 2 * 4, in_flight  # at most 2 jobs x concurrency 4 answers were lost in flight
    assert sum(counts.values()) == total + in_flight, "a completed call was made again after the restart"
    assert _tag_outputs(work) == _tag_outputs(ref), "resumed tags differ from an uninterrupted run"
    est = "results/tables/cost_estimate.tsv"
    assert (work / est).read_bytes() == (ref / est).read_bytes()
    print(f"snakemake kill: {done} of {total} calls done before SIGKILL, {in_flight} in flight, 0 repeated")
