"""The mtbench stage through Snakemake on configs/test.yaml (scripted answering and judging, fine-tuning off):
data manifest, one answer and one judge job per model, both tables and every figure; a forced rerun of the
model-calling rules makes no model call and rewrites the same bytes."""

from __future__ import annotations

import pytest

from tests.workflow.conftest import snakemake, write_config

pytestmark = pytest.mark.slow

FIGURES = [
    f"results/figures/mt_bench_{n}.{e}" for n in ("complexity", "diversity", "size", "radar") for e in ("png", "pdf")
]


def test_mtbench_stage_and_rerun_without_calls(workdir):
    cfg = write_config(workdir, finetune={"enabled": False})
    proc = snakemake(workdir, cfg, "stage_mtbench")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    table = (workdir / "results/tables/mt_bench.tsv").read_text().splitlines()
    head = table[0].split("\t")
    for col in (
        "model",
        "ablation",
        "variant",
        "coverage",
        "tags_per_query",
        "turn1",
        "turn2",
        "overall",
        "std",
        "ci_low",
        "ci_high",
        "judged",
        "failed",
        "judge",
        "judge_note",
        "reference_set",
    ):
        assert col in head
    row = dict(zip(head, table[1].split("\t"), strict=True))
    assert row["model"] == "base" and row["overall"] == "5" and row["judged"] == "16" and row["failed"] == "0"
    assert row["judge_note"] == "demo judge: not comparable to GPT-4" and row["reference_set"] == "gpt-4"
    assert (workdir / "results/tables/mt_bench_categories.tsv").read_text().count("\n") == 9  # header + 8 categories
    for f in FIGURES:
        assert (workdir / f).stat().st_size > 0, f
    before = {
        p: (workdir / p).read_bytes()
        for p in ("results/mtbench/answers/base.jsonl", "results/mtbench/judgments/base.jsonl")
    }
    again = snakemake(workdir, cfg, "stage_mtbench", "--forcerun", "mtbench_answer", "mtbench_judge")
    assert again.returncode == 0, again.stderr[-4000:]
    for action in ("answer", "judge"):
        log = (workdir / f"results/logs/mtbench/{action}/base.log").read_text()
        assert "model calls: 0 (cache hits: " in log, log[-2000:]
    for p, data in before.items():
        assert (workdir / p).read_bytes() == data, p
