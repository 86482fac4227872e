"""The whole workflow on configs/test.yaml in a temporary directory: every stage's outputs, then a no-op rerun.

Every stage joins this test as it lands: add its checks here, reading the files of ``full_run``.
"""

import json

import yaml

from instag.io import read_tsv
from tests.conftest import REPO
from tests.workflow.conftest import snakemake

DATASETS = list(yaml.safe_load((REPO / "configs" / "test.yaml").read_text())["datasets"])


def test_data_stage_outputs(full_run):
    workdir, _, _ = full_run
    rows = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "datasets.tsv")}
    assert sorted(rows) == sorted(DATASETS)
    for name, row in rows.items():
        records = (workdir / "results" / "data" / f"{name}.jsonl").read_text().splitlines()
        assert len(records) == int(row["selected"]) > 0
        assert int(row["rows_read"]) == int(row["kept"]) + int(row["rejected"])
        rejected = (workdir / "results" / "data" / f"{name}.rejected.jsonl").read_text().splitlines()
        assert len(rejected) == int(row["rejected"])
        for line in records:
            rec = json.loads(line)
            assert rec["dataset"] == name and rec["id"].startswith(name + "-")
            assert any(t["role"] == "user" for t in rec["turns"])
    # the truncated ShareGPT file: its cut-off tail is a counted rejection, not lost
    assert int(rows["sharegpt"]["rejected_truncated_json"]) == 1


def test_every_rule_logged(full_run):
    workdir, _, _ = full_run
    logs = list((workdir / "results" / "logs").rglob("*.log"))
    assert len(logs) >= len(DATASETS) + 1


def test_second_run_does_nothing(full_run):
    workdir, cfg, _ = full_run
    proc = snakemake(workdir, cfg, "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_normalized_tags_cover_every_ingested_record(full_run):
    workdir, _, _ = full_run
    results = workdir / "results"
    ids = {json.loads(x)["id"] for d in DATASETS for x in (results / "data" / f"{d}.jsonl").read_text().splitlines()}
    normalized = [json.loads(x) for x in (results / "normalize" / "normalized.jsonl").read_text().splitlines()]
    assert {r["id"] for r in normalized} == ids
    assert any(r["tags"] for r in normalized)
    steps = read_tsv(results / "tables" / "normalization_steps.tsv")
    assert len(steps) >= 4
    mapping = read_tsv(results / "tables" / "tag_mapping.tsv")
    assert mapping, "every raw tag is traceable through the mapping"


def test_analysis_and_sampling_outputs(full_run):
    workdir, _, _ = full_run
    results = workdir / "results"
    analysis = {r["dataset"] for r in read_tsv(results / "tables" / "analysis_datasets.tsv")}
    assert analysis <= set(DATASETS) and analysis
    samples = read_tsv(results / "tables" / "samples.tsv")
    assert {r["ablation"] for r in samples} >= {"size", "random"}
    for name in ("sampling_coverage_complexity.png", "sampling_coverage_complexity.pdf"):
        assert (results / "figures" / name).stat().st_size > 1000
    pool = read_tsv(results / "tables" / "pool.tsv")
    assert pool
