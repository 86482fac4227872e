"""The tagging stage in the real workflow run on configs/test.yaml (the embedded model, two shards per dataset).

Reuses ``full_run`` from tests/workflow/conftest.py: every query is either parsed tags or a failure with its raw
text, the shards cover every record in order, the tables add up, and rerunning the shards makes no model call.
"""

import json

import yaml

from instag.data import queries
from instag.io import read_tsv
from tests.conftest import REPO
from tests.workflow.conftest import snakemake

CONFIG = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
DATASETS = list(CONFIG["datasets"])
SHARD_SIZE = CONFIG["tagging"]["shard_size"]


def _lines(workdir, dataset):
    shards = sorted(
        (workdir / "results" / "tagging" / dataset).glob("shard-*.jsonl"), key=lambda p: int(p.stem.split("-")[1])
    )
    return shards, [json.loads(x) for p in shards for x in p.read_text().splitlines()]


def test_every_query_is_tagged_or_a_recorded_failure(full_run):
    workdir, _, _ = full_run
    for dataset in DATASETS:
        records = [json.loads(x) for x in (workdir / "results" / "data" / f"{dataset}.jsonl").read_text().splitlines()]
        shards, lines = _lines(workdir, dataset)
        assert len(shards) == -(-len(records) // SHARD_SIZE)
        expected = [(r["id"], q) for r in records for q in range(len(queries(r)))]
        assert [(ln["id"], ln["turn"]) for ln in lines] == expected  # record order, then query index
        for ln in lines:
            assert ln["dataset"] == dataset and ln["backend"] == "embedded"
            if ln["status"] == "ok":
                assert ln["tags"] and all(t["tag"].strip() for t in ln["tags"]) and ln["raw"] is None
            else:
                assert ln["status"] == "failed" and ln["error"] and ln["tags"] is None


def test_tables_add_up(full_run):
    workdir, _, _ = full_run
    rows = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "tagging.tsv")}
    assert sorted(rows) == sorted([*DATASETS, "all"])
    total_lines = 0
    for dataset in DATASETS:
        _, lines = _lines(workdir, dataset)
        row = rows[dataset]
        assert int(row["queries"]) == len(lines) == int(row["ok"]) + int(row["failed"])
        assert int(row["failed"]) == sum(ln["status"] == "failed" for ln in lines)
        total_lines += len(lines)
    assert int(rows["all"]["queries"]) == total_lines
    assert rows["all"]["engine"] in ("openvino", "transformers")
    cost = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "cost_estimate.tsv")}
    # the embedded model has no price: its cost is left blank, never 0 (one rule for unpriced models)
    assert int(cost["all"]["requests"]) == total_lines and cost["all"]["usd"] == ""
    logs = list((workdir / "results" / "logs" / "tagging" / "tag_shard").rglob("*.log"))
    assert len(logs) == int(rows["all"]["shards"])


def test_rerunning_the_shards_makes_no_model_call(full_run):
    workdir, cfg, _ = full_run
    before = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "tagging.tsv")}
    proc = snakemake(workdir, cfg, "stage_tagging", "--forcerun", "tagging_tag_shard")
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = {r["dataset"]: r for r in read_tsv(workdir / "results" / "tables" / "tagging.tsv")}
    assert int(after["all"]["calls"]) == 0
    assert int(after["all"]["cache_hits"]) == int(before["all"]["requests"])
    assert int(after["all"]["ok"]) == int(before["all"]["ok"])
