"""Two runs of the workflow with the same config and seeds give byte-identical tables, records and samples.

The two runs differ in everything that must not matter: the working directory, the number of cores (so the
order in which jobs run differs), and the time. The first is the session's ``full_run`` (tests/workflow/conftest.py:
the default target on configs/test.yaml, 2 cores); the second builds the same target from the same config file
content, on 1 core, in a new folder. The default target includes ``stage_sampling``'s outputs. Every file under
``results/`` is compared, except those in :data:`EXCLUDED`, each with the reason it cannot be identical. A
stage's outputs join the comparison as soon as the default target builds them.

The tagging model is an LLM, not a CPU stage: the second run is served from the first run's tagging calls (the
tagger's records of its ``cache/llm``, copied into the new folder before the run, so the config stays the same),
so the tags are the same and every CPU stage after them (normalization with its embeddings, analysis, the judge
with its own calls, sampling, fine-tuning, MT-Bench, the report) is recomputed from scratch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instag.io import read_tsv
from tests.conftest import REPO
from tests.workflow.conftest import write_config

pytestmark = pytest.mark.slow

#: Outputs that differ between runs by design, and why. Patterns are relative to the working directory.
#: Everything else under results/ is compared byte for byte (no file there carries a timing).
EXCLUDED = {
    "results/logs/**": "logs carry timestamps, process ids, durations and tqdm rates",
    "results/benchmarks/**": "Snakemake benchmark TSVs are wall-clock times and memory peaks of each job",
    "results/tagging/*/shard-*.summary.json": "calls vs cache hits: run 2 is served from run 1's tagging cache",
    "results/tables/tagging.tsv": "the shard summaries gathered: calls vs cache hits",
    "results/provenance.json": "records the cache hit rates (run 2 is served from run 1's cache) and the git state",
}


def content(path: Path, rel: str) -> bytes:
    """The bytes compared: the whole file."""
    return path.read_bytes()


def run(workdir: Path, configfile: Path, cores: int) -> subprocess.CompletedProcess:
    """The default target, as ``full_run`` builds it, with ``cores`` cores."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(configfile), "--cores", str(cores)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=workdir)


def copy_tagger_calls(src: Path, dest: Path, backend: str) -> int:
    """Copy the records of ``backend``'s calls (the tagger's) from the LLM cache ``src`` into a new cache ``dest``,
    line for line; the other stages' calls (judge, MT-Bench) stay out, so the second run makes them again."""
    dest.mkdir(parents=True)
    lines = []
    for seg in sorted(src.glob("*.jsonl")):
        for line in seg.read_bytes().splitlines():
            if json.loads(line).get("backend") == backend:
                lines.append(line + b"\n")
    (dest / "seg-copied-from-full-run.jsonl").write_bytes(b"".join(lines))
    return len(lines)


def digests(workdir: Path) -> dict[str, str]:
    out = {}
    for path in sorted((workdir / "results").rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(workdir).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in EXCLUDED):
            continue
        out[rel] = hashlib.sha256(content(path, rel)).hexdigest()
    return out


@pytest.fixture(scope="module")
def two_runs(full_run, tmp_path_factory):
    first, first_cfg, _ = full_run  # 2 cores
    second = tmp_path_factory.mktemp("determinism")
    cfg = write_config(second)
    assert cfg.read_bytes() == first_cfg.read_bytes(), "the second run must have the first run's config"
    tagger = yaml.safe_load(cfg.read_text())["tagging"]["backend"]["backend"]
    assert copy_tagger_calls(first / "cache" / "llm", second / "cache" / "llm", tagger) > 0
    proc = run(second, cfg, cores=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    tagged = {r["dataset"]: r for r in read_tsv(second / "results" / "tables" / "tagging.tsv")}["all"]
    assert int(tagged["calls"]) == 0 and int(tagged["cache_hits"]) > 0, tagged  # served from the first run's calls
    return [first, second]


def test_same_config_and_seed_give_identical_outputs(two_runs):
    a, b = (digests(w) for w in two_runs)
    assert sorted(a) == sorted(b), f"different output files: {sorted(set(a) ^ set(b))}"
    differ = [rel for rel in a if a[rel] != b[rel]]
    assert not differ, f"outputs that differ between two runs with the same config and seed: {differ}"
    # the comparison covers the data stage's records, quarantine, statistics and table at least
    assert "results/tables/datasets.tsv" in a
    assert any(rel.endswith(".rejected.jsonl") for rel in a)
    assert sum(rel.startswith("results/data/") and rel.endswith(".jsonl") for rel in a) >= 2
    assert "results/tables/samples.tsv" in a and "results/normalize/normalized.jsonl" in a
    assert all(f"results/normalize/{step}.json" in a for step in ("frequency", "lexical", "semantic", "association"))
    assert any(rel.startswith("results/tagging/") for rel in a)
    assert any(rel.startswith("results/figures/") for rel in a)


def test_outputs_do_not_embed_the_working_directory(two_runs):
    """A result that names its own run folder cannot be byte-identical across folders; none may."""
    for workdir in two_runs:
        for rel in digests(workdir):
            assert str(workdir).encode() not in (workdir / rel).read_bytes(), rel


def test_exclusions_are_only_timing_files(two_runs):
    """What the exclusion list hides really is logs and timings: nothing else is under those folders."""
    workdir = two_runs[0]
    for path in (workdir / "results").rglob("*"):
        rel = path.relative_to(workdir).as_posix()
        if path.is_file() and fnmatch.fnmatch(rel, "results/logs/**"):
            # besides logs: the place a failed ingestion copies its rejected rows to (rules/data.smk), which
            # Snakemake creates empty like any log file and which stays empty when every dataset succeeds
            failed_copy = rel.startswith("results/logs/data/ingest/") and rel.endswith(".rejected.jsonl")
            assert path.suffix == ".log" or (failed_copy and path.stat().st_size == 0), rel
        if path.is_file() and fnmatch.fnmatch(rel, "results/benchmarks/**"):
            assert path.suffix == ".tsv", rel
