"""The normalize, analysis and quality rules on hand-made tagging shards (the real MiniLM model, a scripted
judge): every output is built, every raw tag is traceable, a rerun is a no-op, and changing one step's setting
reruns only that step and what depends on it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from instag.data import queries
from instag.io import read_tsv
from tests.workflow.conftest import snakemake, write_config

pytestmark = pytest.mark.slow

VOCAB = [
    "Math",
    "math problem solving",
    "Math problem-solving",
    "code generation",
    "Code Generation",
    "python",
    "Python programming",
    "creative writing",
    "Creative Writing",
    "question answering",
    "information retrieval",
    "Information Retrieval.",
    "explanation",
    "explanations",
    "translation",
    "history",
]


def write_shards(workdir: Path) -> tuple[int, set[str]]:
    """One shard per dataset (results/tagging/<dataset>/shard-0.jsonl): deterministic tags, every 9th query
    failed; returns the number of records and the raw tags written."""
    n_records, raw = 0, set()
    k = 0
    for path in sorted((workdir / "results" / "data").glob("*.jsonl")):
        if path.name.endswith(".rejected.jsonl"):
            continue
        out = workdir / "results" / "tagging" / path.stem / "shard-0.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as fh:
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                n_records += 1
                for q, _ in enumerate(queries(rec)):
                    k += 1
                    if k % 9 == 0:
                        row = {"tags": None, "status": "failed", "error": "unparseable", "raw": "oops"}
                    else:
                        tags = [VOCAB[(k * j) % len(VOCAB)] for j in (1, 3, 7)] + ["information retrieval"]
                        raw.update(t.strip() for t in tags)
                        row = {
                            "tags": [{"tag": t, "explanation": "x"} for t in tags],
                            "status": "ok",
                            "error": None,
                            "raw": "",
                        }
                    fh.write(
                        json.dumps(
                            {"id": rec["id"], "dataset": path.stem, "turn": q, **row, "backend": "hand", "model": "hand"}
                        )
                        + "\n"
                    )
    return n_records, raw


def jobs(stdout: str) -> set[str]:
    table = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)}


def test_normalize_analysis_quality_rules(workdir):
    cfg = write_config(workdir)
    proc = snakemake(workdir, cfg, "stage_data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_records, raw = write_shards(workdir)
    targets = ("stage_normalize", "stage_analysis", "stage_quality")
    proc = snakemake(workdir, cfg, *targets)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    res = workdir / "results"
    steps = read_tsv(res / "tables" / "normalization_steps.tsv")
    assert [s["step"] for s in steps] == ["raw", "frequency", "lexical", "semantic", "association"]
    assert int(steps[0]["tags"]) == len(raw) and int(steps[2]["tags"]) < int(steps[1]["tags"])  # variants merged
    mapping = {r["raw_tag"]: r for r in read_tsv(res / "tables" / "tag_mapping.tsv")}
    assert set(mapping) == raw
    assert all(r["canonical"] or r["status"] == "dropped" for r in mapping.values())
    assert mapping["Information Retrieval."]["canonical"] == mapping["information retrieval"]["canonical"]
    records = [json.loads(x) for x in (res / "normalize" / "normalized.jsonl").read_text().splitlines()]
    assert len(records) == n_records
    canonical = {r["canonical"] for r in mapping.values()} - {""}
    assert {t for r in records for t in r["tags"]} <= canonical
    for name in (
        "analysis_datasets",
        "tag_frequency",
        "top_tags",
        "dataset_coverage",
        "analysis_correlation",
        "tag_quality",
    ):
        assert read_tsv(res / "tables" / f"{name}.tsv"), name
    quality = {r["metric"]: r for r in read_tsv(res / "tables" / "tag_quality.tsv")}
    assert quality["precision"]["rate"] == "1" and quality["precision"]["judge"] == "scripted:scripted"
    for stem in ("diversity_complexity", "tag_long_tail", "top_tags", "coverage_heatmap"):
        assert (res / "figures" / f"analysis_{stem}.png").stat().st_size > 1000

    proc = snakemake(workdir, cfg, *targets, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr

    # a new eps reruns semantic and what follows it, not collect, frequency or lexical
    data = yaml.safe_load(cfg.read_text())
    data.setdefault("normalize", {})["semantic"] = {"eps": 0.2}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))  # key order kept: data_ingest params are JSON
    proc = snakemake(workdir, cfg, *targets, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = jobs(proc.stdout)
    assert {"normalize_semantic", "normalize_association", "normalize_finalize", "analysis_tables"} <= planned
    assert not planned & {"normalize_collect", "normalize_frequency", "normalize_lexical", "data_ingest"}
