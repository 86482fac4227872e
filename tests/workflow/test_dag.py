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
