"""Shared test set-up: offline Hugging Face hub, paths to the repo and to ../shared/data."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Snakemake imports every installed executor plugin when it starts, and importing the Slurm plugin runs
# `scontrol show config` (10 s timeout). Where Slurm's client is installed but no controller answers (this
# machine once tests/workflow/test_slurm.py has installed it, or a CI image with Slurm), every snakemake call of
# the suite waited ~9 s for it. With SLURM_CONF=/dev/null scontrol fails at once (a missing file makes it retry
# for 60 s). tests/workflow/test_slurm.py gives its cluster commands the configuration they had (SLURM_ENV).
SLURM_CONF_BEFORE = os.environ.get("SLURM_CONF")
if SLURM_CONF_BEFORE is None:
    os.environ["SLURM_CONF"] = "/dev/null"

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real data folder {SHARED_DATA} is missing (clone with ../shared beside the repo)")
    return SHARED_DATA
