"""Runs side by side: two configs in one checkout, each in its own `--directory runs/<name>`, touch only
their own results; a relative data_root still means the repository's ../shared/data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake as the README says, from a checkout (here: ``checkout``), with its own run directory."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return subprocess.run([*cmd, "--cores", "2", *args], capture_output=True, text=True, timeout=600, cwd=REPO)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_configs_do_not_touch_each_others_results(tmp_path, shared_data):
    base = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
    assert not Path(base["data_root"]).is_absolute()  # relative: resolved against the repository
    a, b = dict(base), dict(base)
    a["datasets"] = {k: v for k, v in base["datasets"].items() if k in ("alpaca", "math")}
    b["datasets"] = {k: {**v, "limit": 4} for k, v in base["datasets"].items() if k in ("alpaca", "wizardlm")}
    cfg_a, cfg_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    cfg_a.write_text(yaml.safe_dump(a))
    cfg_b.write_text(yaml.safe_dump(b))
    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"

    proc = run(run_a, "stage_data", "--configfile", str(cfg_a))
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = files(run_a / "results")
    assert {"data/alpaca.jsonl", "data/math.jsonl", "tables/datasets.tsv"} <= set(before)

    proc = run(run_b, "stage_data", "--configfile", str(cfg_b))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert files(run_a / "results") == before  # run b wrote nothing into run a
    got_b = files(run_b / "results")
    assert "data/wizardlm.jsonl" in got_b and "data/math.jsonl" not in got_b
    assert got_b["data/alpaca.jsonl"].count(b"\n") == 4 != before["data/alpaca.jsonl"].count(b"\n")
    # each run keeps its own Snakemake state: run a is complete, and stays so after run b
    proc = run(run_a, "stage_data", "-n", "--configfile", str(cfg_a))
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]
