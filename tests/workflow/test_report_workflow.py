"""The report stage in the real workflow (configs/test.yaml): its outputs, Snakemake's report.html, and that a
figure-style change reruns only the figure jobs (no tagging, training or judging)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from instag.report import browser
from instag.report.claims import load_claims
from tests.workflow.conftest import snakemake

pytestmark = pytest.mark.slow


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    counts, inside = {}, False
    for line in stdout.splitlines():
        if re.match(r"^job\s+count\s*$", line):
            inside = True
            continue
        if inside:
            m = re.match(r"^(\w+)\s+(\d+)\s*$", line)
            if m:
                if m.group(1) == "total":
                    break
                counts[m.group(1)] = int(m.group(2))
    return counts


def test_report_outputs(full_run):
    workdir, _, _ = full_run
    res = workdir / "results"
    with open(res / "tables" / "claims.tsv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["id"] for r in rows] == [c.id for c in load_claims()]
    verdicts = {r["id"]: r["verdict"] for r in rows}
    # the demo's normalization and pool were produced but are no paper-scale run
    assert verdicts["normalize.tags_frequency"] == "not comparable"
    assert verdicts["sampling.pool_queries"] == "not comparable"
    assert "claims" in (res / "report" / "claims.md").read_text()
    prov = json.loads((res / "provenance.json").read_text())
    assert prov["datasets"] and all(v and len(v["sha256"]) == 64 for v in prov["datasets"].values())
    assert prov["models"]["embedded_gguf"]["sha256"]
    for name in ("diversity_complexity", "coverage_heatmap", "normalization_funnel", "sampling_plane", "sweeps"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"report_{name}.{ext}").stat().st_size > 1000
    html = (res / "report" / "explorer.html").read_text()
    assert '<script type="application/json" id="explorer-data">' in html


def test_style_change_reruns_only_the_figures(full_run):
    workdir, cfg, _ = full_run
    original = cfg.read_text()
    data = yaml.safe_load(original)
    data.setdefault("report", {}).setdefault("style", {})["theme"] = "darkgrid"
    try:
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        proc = snakemake(workdir, cfg, "--dry-run")
    finally:
        cfg.write_text(original)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_counts(proc.stdout)
    assert jobs.pop("all", 1) == 1
    assert set(jobs) == {"report_figure"}, jobs
    assert jobs["report_figure"] >= 5
    assert "Params have changed" in proc.stdout


def test_snakemake_report_html(full_run):
    workdir, cfg, _ = full_run
    proc = snakemake(workdir, cfg, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (workdir / "report.html").read_text(encoding="utf-8", errors="replace")
    for name in ("report_diversity_complexity.png", "claims.tsv", "provenance.json", "explorer.html"):
        assert name in html, name
    if browser.find_chromium() is None:
        pytest.skip("report.html written; no chromium for its screenshot (apt-get install -y chromium)")
    shot = browser.screenshot(workdir / "report.html", workdir / "report_html.png")  # outside the shared results/
    assert Path(shot["png"]).stat().st_size > 10_000
    dest = workdir / "results" / "report"
    if (dest / "explorer.png").exists():
        shutil.copy(dest / "explorer.png", workdir / "explorer_screenshot.png")
