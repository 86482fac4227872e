"""The DAG builds, lints clean, and a bad config is named before any job runs."""

import yaml

from tests.conftest import REPO
from tests.workflow.conftest import snakemake, write_config


def test_dry_run_lists_ingestion_jobs(workdir):
    cfg = write_config(workdir)
    proc = snakemake(workdir, cfg, "-n")
    assert proc.returncode == 0, proc.stderr
    n = len(yaml.safe_load((REPO / "configs" / "test.yaml").read_text())["datasets"])
    assert f"data_ingest{' ' * 10}{n}" in proc.stdout or f"data_ingest {n}" in " ".join(proc.stdout.split())


def test_lint_is_clean(workdir):
    cfg = write_config(workdir)
    proc = snakemake(workdir, cfg, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_unknown_key_is_named(workdir):
    cfg = write_config(workdir, ingest={"max_query_charz": 10})
    proc = snakemake(workdir, cfg, "-n")
    assert proc.returncode != 0
    assert "max_query_charz" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_wrong_type_is_named(workdir):
    cfg = write_config(workdir, ingest={"max_query_chars": "many"})
    proc = snakemake(workdir, cfg, "-n")
    assert proc.returncode != 0
    assert "max_query_chars" in proc.stdout + proc.stderr and "many" in proc.stdout + proc.stderr


def test_missing_data_file_is_named(workdir):
    cfg = write_config(workdir)
    data = yaml.safe_load(cfg.read_text())
    data["datasets"]["alpaca"]["path"] = "no-such-file.json"
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(workdir, cfg, "-n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "datasets.alpaca.path" in out and "no-such-file.json" in out
    assert not (workdir / "results").exists()


def test_paper_config_dry_run(workdir):
    proc = snakemake(
        workdir, REPO / "configs" / "paper.yaml", "-n", "--config", f"data_root={REPO.parent / 'shared' / 'data'}"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "data_ingest" in proc.stdout


def test_missing_api_key_is_named_before_any_job(workdir):
    """An openai backend without its key stops a real run of its stage before any job (ingestion included);
    a dry run, which calls nothing, still plans it, and a run of other stages does not need the key."""
    judge = {"backend": "openai", "model": "gpt-4", "api_key_env": "INSTAG_TEST_UNSET_KEY"}
    quality = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())["quality"]
    cfg = write_config(workdir, quality={**quality, "judge": judge})
    assert snakemake(workdir, cfg, "-n", "stage_quality").returncode == 0
    proc = snakemake(workdir, cfg, "stage_quality")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'quality.judge'" in out and "INSTAG_TEST_UNSET_KEY" in out, out[-3000:]
    assert not (workdir / "results").exists()
    proc = snakemake(workdir, cfg, "stage_data")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_failed_dataset_keeps_its_rejected_rows_where_the_error_says(workdir):
    bad = workdir / "only-bad-rows.json"
    bad.write_text('[{"no_instruction": 1}, {"instruction": ""}, {"output": "no query"}]\n')
    cfg = write_config(workdir, datasets={"broken": {"path": str(bad), "format": "alpaca"}})
    proc = snakemake(workdir, cfg, "stage_data")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    log = (workdir / "results/logs/data/ingest/broken.log").read_text()
    kept = workdir / "results/logs/data/ingest/broken.rejected.jsonl"
    assert "3 of 3 rows rejected" in log and f"see {kept.relative_to(workdir)}" in log, log[-2000:]
    assert len(kept.read_text().splitlines()) == 3
    assert not (workdir / "results/data/broken.rejected.jsonl").exists()  # the failed job's output is gone
    assert "broken.rejected.jsonl" in out
