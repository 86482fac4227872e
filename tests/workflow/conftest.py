"""Run the real workflow in a temporary directory on configs/test.yaml (data_root made absolute)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED_DATA


def write_config(workdir: Path, base: str | Path = REPO / "configs" / "test.yaml", **overrides) -> Path:
    """Copy a config into ``workdir`` with an absolute data_root, applying top-level overrides."""
    cfg = yaml.safe_load(Path(base).read_text())
    cfg["data_root"] = str(SHARED_DATA)
    cfg.update(overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, configfile: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m snakemake`` on the repo's Snakefile, run in ``workdir``; output captured as text."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


@pytest.fixture
def workdir(tmp_path: Path, shared_data) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, shared_data):
    """One complete default-target run of the workflow on configs/test.yaml (2 cores), shared by the session's
    tests. They may rerun or dry-run it, but must not add or change files under its ``results/``:
    test_determinism.py compares them, byte for byte, with a second run."""
    workdir = tmp_path_factory.mktemp("e2e")
    cfg = write_config(workdir)
    proc = snakemake(workdir, cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return workdir, cfg, proc
