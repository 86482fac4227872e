"""The sampling rules on a hand-made results/normalize/normalized.jsonl: one variant builds alone, a forced rerun of
one ablation reruns only its jobs and what depends on them, an unreachable target fails its job with the reach."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from instag.synthetic import pool_arrays
from tests.workflow.conftest import snakemake, write_config

POOL_DATASETS = ["alpaca", "math", "wizardlm"]  # dataset names of configs/test.yaml

SAMPLING = {
    "pool": POOL_DATASETS,
    "seed": 0,
    "size": 60,
    "tolerance": {"coverage": 0.03, "avg_tags": 0.1},
    "ablations": {
        "complexity": {"size": 100, "coverage": 1.0, "levels": {"min": 4.0, "max": 6.0, "steps": 3}},
        "diversity": {"size": 100, "avg_tags": 3.0, "levels": {"min": 0.5, "max": 0.9, "steps": 3}},
        "size": {"sizes": [30, 60]},
        "random": {"sizes": [30, 60]},
    },
}


def setup(workdir: Path, **sampling) -> Path:
    """A config with the sampling section above and 600 synthetic tagged records (15 untagged)."""
    pa = pool_arrays(600, 120, 0, dispersion=1.5, mean_tags=3.5)
    tags = workdir / "results" / "normalize" / "normalized.jsonl"
    tags.parent.mkdir(parents=True)
    with open(tags, "w") as fh:
        for i, t in enumerate(pa.to_lists()):
            rec = {"id": f"r{i}", "dataset": POOL_DATASETS[i % 3], "tags": sorted(t)}
            if i % 40 == 5:
                rec = {"id": f"r{i}", "dataset": POOL_DATASETS[i % 3], "tags": [], "status": "untagged"}
            fh.write(json.dumps(rec) + "\n")
    return write_config(workdir, sampling={**SAMPLING, **sampling})


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake (dry) run, without the total."""
    table = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_one_variant_builds_nothing_else(workdir):
    cfg = setup(workdir)
    proc = snakemake(workdir, cfg, "-n", "results/sampling/diversity/cov0.7.jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout) == {"sampling_pool": 1, "sampling_diversity": 1}
    proc = snakemake(workdir, cfg, "-n", "ablation_random")
    assert job_counts(proc.stdout) == {"sampling_pool": 1, "sampling_random": 2, "ablation_random": 1}


def test_unconfigured_variant_has_no_rule(workdir):
    cfg = setup(workdir)
    proc = snakemake(workdir, cfg, "-n", "results/sampling/diversity/cov0.55.jsonl")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MissingRuleException" in out or "No rule to produce" in out


def test_unknown_pool_dataset_is_named(workdir):
    cfg = setup(workdir, pool=["alpaca", "nope"])
    proc = snakemake(workdir, cfg, "-n", "stage_sampling")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'sampling.pool': 'nope' is not a configured dataset" in out


@pytest.mark.slow
def test_forcerun_one_ablation_reruns_only_its_jobs(workdir):
    cfg = setup(workdir)
    proc = snakemake(workdir, cfg, "stage_sampling")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = workdir / "results" / "sampling"
    before = {p: p.read_bytes() for p in samples.rglob("*.json*")}
    assert len(before) == 2 + 2 * 10  # the pool + 10 variants (jsonl + stats)
    rows = {(r["ablation"], r["variant"]): r for r in _tsv(workdir / "results" / "tables" / "samples.tsv")}
    assert float(rows[("diversity", "cov0.7")]["coverage"]) == pytest.approx(0.7, abs=0.03)
    assert float(rows[("complexity", "tags5")]["avg_tags_per_query"]) == pytest.approx(5.0, abs=0.1)

    proc = snakemake(workdir, cfg, "-n", "stage_sampling", "--forcerun", "sampling_diversity")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout) == {
        "sampling_diversity": 3,
        "sampling_summarize": 1,
        "sampling_plot": 1,
        "stage_sampling": 1,
    }
    proc = snakemake(workdir, cfg, "stage_sampling", "--forcerun", "sampling_diversity")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.read_bytes() for p in samples.rglob("*.json*")} == before  # same config and seed: same bytes
    proc = snakemake(workdir, cfg, "-n", "stage_sampling")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_unreachable_target_fails_its_job_with_the_reach(workdir):
    cfg = setup(workdir)
    data = yaml.safe_load(cfg.read_text())
    data["sampling"]["ablations"]["complexity"]["levels"] = {"min": 9.0, "max": 9.0, "steps": 1}
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(workdir, cfg, "ablation_complexity")
    assert proc.returncode != 0
    log = (workdir / "results" / "logs" / "sampling" / "select" / "complexity" / "tags9.log").read_text()
    assert "cannot build size 100, coverage 1" in log and "the pool reaches [" in log
    assert not (workdir / "results" / "sampling" / "complexity" / "tags9.jsonl").exists()


def _tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
