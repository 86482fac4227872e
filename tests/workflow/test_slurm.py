"""The workflow on a real (throwaway, one-node) Slurm cluster through `--executor slurm` and profiles/slurm.

First, without a cluster: every rule takes its threads and resources from the config, every config key there
names a rule, and the profile is valid for the installed Snakemake and plugin (a dry run through it).

``../shared/slurm/start-local-slurm.sh`` starts slurmctld, slurmd and slurmdbd (real accounting, so the
plugin's ``sacct`` status path is the one tested); the fixture always stops it again. The tests need root on
Debian and skip with that reason elsewhere. Timings on 2 cores: cluster start 3 s (installed) to 30 s (fresh
machine); each Slurm job adds ~4 s and each wave of jobs ~12 s of status polling, so the stages that run here
are listed in one place, ``CLUSTER_TARGETS``, and kept to the CPU stages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED, SLURM_CONF_BEFORE
from tests.workflow.conftest import write_config

START = SHARED / "slurm" / "start-local-slurm.sh"
STOP = SHARED / "slurm" / "stop-local-slurm.sh"
PROFILE = REPO / "profiles" / "slurm"

#: Targets run on the cluster and locally, then compared, on configs/test.yaml with CLUSTER_CONFIG on top.
#: Each wave of dependent jobs costs ~12-15 s on the cluster, so this is the part of the DAG that exercises
#: the profile (grouped ingestion, checkpoint, grouped tag shards, aggregation), not every stage: the whole
#: default target takes ~3.5 min locally and ~5 min more on the cluster here.
CLUSTER_TARGETS = ["stage_data", "stage_tagging"]


def cluster_config() -> dict:
    """Top-level overrides of configs/test.yaml: tag with the deterministic scripted backend (no model on the
    2-core test node; the embedded model's tagging is covered by the local end-to-end test)."""
    tagging = dict(yaml.safe_load((REPO / "configs" / "test.yaml").read_text()).get("tagging") or {})
    tagging["backend"] = {"backend": "scripted"}
    return {"tagging": tagging}


#: Files under results/ that may differ between two correct runs (timings); everything else must be equal.
VOLATILE = ("results/logs/", "results/benchmarks/")
#: Timing fields of otherwise deterministic files: dropped (JSON keys, TSV columns) before comparing.
TIMED_FILES = re.compile(r"results/tagging/.*\.summary\.json$|results/tables/tagging\.tsv$")
TIMING_FIELDS = {"seconds", "call_seconds", "queries_per_s"}

#: Test-only overrides of the profile for a 2-CPU node: poll sacct after 1 s, not 20 (saves ~20 s per wave),
#: account `root` (the plugin's account guess fails harmlessly but noisily), keep the Slurm logs of successful
#: jobs (to check what ran where), short latency wait (local disk), no retry (a failure is meant to fail).
CLUSTER_FLAGS = [
    "--profile", str(PROFILE),
    "--cores", "2",
    "--jobs", "4",
    "--slurm-init-seconds-before-status-checks", "1",
    "--default-resources", "slurm_account=root",
    "--slurm-keep-successful-logs",
    "--latency-wait", "5",
    "--retries", "0",
]  # fmt: skip

#: The environment of every command that talks to the cluster: the suite's SLURM_CONF=/dev/null (tests/conftest.py,
#: which spares local snakemake runs the Slurm plugin's scontrol wait) taken back out.
SLURM_ENV = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
if SLURM_CONF_BEFORE is not None:
    SLURM_ENV["SLURM_CONF"] = SLURM_CONF_BEFORE

SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


# --- without a cluster --------------------------------------------------------------------------------------

RULE = re.compile(r"^(?:(?:rule|checkpoint) (\w+):|use rule \w+ as (\w+) with:)\n((?:[ \t]+.*\n|\n)*)", re.M)


def rule_blocks() -> dict[str, str]:
    """Each rule's text in rules/*.smk (checkpoints and ``use rule ... as X with:`` blocks included), by name."""
    blocks = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        for match in RULE.finditer(path.read_text()):
            blocks[match.group(1) or match.group(2)] = match.group(3)
    return blocks


def test_every_rule_takes_threads_and_resources_from_config():
    blocks = rule_blocks()
    assert "data_ingest" in blocks
    bad = []
    for name, body in blocks.items():
        threads = re.search(r'^\s+threads: threads_for\("(\w+)"\)', body, re.M)
        resources = re.search(r'^\s+resources:\s+\*\*resources_for\("(\w+)"\),?\s*$', body, re.M)
        runs_something = re.search(r"^\s+(shell|run|script|notebook|wrapper):", body, re.M)
        if runs_something and not (threads and resources and threads.group(1) == resources.group(1)):
            bad.append(name)  # a rule that runs a command takes both from the same config key
        elif (re.search(r"^\s+threads:", body, re.M) and not threads) or (
            re.search(r"^\s+resources:", body, re.M) and not resources
        ):
            bad.append(name)  # a `use rule ... with:` that overrides them does so from the config too
    assert not bad, f"rules without `threads: threads_for(KEY)` and `resources: **resources_for(KEY)`: {bad}"


def test_config_resource_keys_name_rules():
    """A misspelt rule name under `resources:`/`threads:` would silently change nothing: it must fail here."""
    used = {"default"}
    for path in (REPO / "rules").glob("*.smk"):
        used |= set(re.findall(r'(?:threads_for|resources_for)\("(\w+)"\)', path.read_text()))
    for cfg_path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        for section in ("threads", "resources"):
            unknown = set(cfg.get(section) or {}) - used
            assert not unknown, f"{cfg_path.name}: {section} keys that no rule reads: {sorted(unknown)}"


def test_profile_dry_run(tmp_path, shared_data):
    """The profile parses (every key is an option of this Snakemake and plugin); jobs carry the config's resources."""
    cfg = write_config(tmp_path, resources={"default": {"mem_mb": 1234, "runtime": 7}}, threads={"default": 2})
    # no cluster: the suite's environment (env=None), so the Slurm plugin's scontrol call fails at once
    proc = run_snakemake(tmp_path, cfg, "--profile", str(PROFILE), "-n", "stage_data", timeout=120, env=None)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    jobs = re.findall(r"^ *(?:rule|checkpoint) (data_\w+):\n((?: {4,}.*\n)+)", out, re.M)  # grouped: indented
    assert {name for name, _ in jobs} == {"data_ingest", "data_summarize"}
    assert all("mem_mb=1234" in body and "runtime=7" in body and "threads: 2" in body for _, body in jobs)


# --- on a local Slurm cluster --------------------------------------------------------------------------------


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: start-local-slurm.sh installs Debian packages and runs the Slurm daemons as root"
    if not Path("/etc/debian_version").is_file():
        return "needs Debian: start-local-slurm.sh installs Slurm from Debian packages"
    if not START.is_file() or not STOP.is_file():
        return f"the local-cluster scripts are missing ({START.parent}; ../shared beside the repository)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local Slurm cluster for the session; stopped at the end, also when a test failed."""
    reason = _skip_reason()
    if reason:
        pytest.skip(f"slurm tests skipped: {reason}")
    try:
        started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=300, env=SLURM_ENV)
        if started.returncode != 0:
            pytest.fail(
                f"start-local-slurm.sh failed ({started.returncode}):\n{started.stdout[-3000:]}{started.stderr[-3000:]}"
            )
        yield
    finally:
        stopped = subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=180, env=SLURM_ENV)
        if stopped.returncode != 0:
            print(f"stop-local-slurm.sh failed ({stopped.returncode}): {stopped.stderr[-2000:]}", file=sys.stderr)


def run_snakemake(
    workdir: Path, configfile: Path, *args: str, timeout: int, env: dict | None = SLURM_ENV
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), *args]  # fmt: skip
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"snakemake ran past {timeout} s: {' '.join(cmd)}\n{(exc.stderr or b'')[-4000:]!r}")


def sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """Accounting records (allocations only) of the given job ids, keyed by id."""
    fields = ["JobID", "JobName", "State", "ExitCode", "WorkDir", "AllocCPUS", "ReqMem"]
    proc = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-o", ",".join(fields), "-j", ",".join(job_ids)],
        capture_output=True, text=True, timeout=60, check=True, env=SLURM_ENV,
    )  # fmt: skip
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in proc.stdout.splitlines() if line.strip()]
    return {row["JobID"]: row for row in rows}


def jobs_printed(output: str, kinds: str = "rule|checkpoint") -> Counter:
    """Jobs per rule that a Snakemake run printed (`rule X:` blocks, indented inside a group job's listing)."""
    return Counter(re.findall(rf"^ *(?:{kinds}) (\w+):$", output, flags=re.M))


def without_timings(name: str, data: bytes):
    if name.endswith(".json"):
        return {k: v for k, v in json.loads(data).items() if k not in TIMING_FIELDS}
    rows = [line.split("\t") for line in data.decode().splitlines()]
    keep = [i for i, col in enumerate(rows[0]) if col not in TIMING_FIELDS]
    return [[row[i] for i in keep] for row in rows]


def result_files(workdir: Path) -> dict[str, object]:
    """Every file under results/ except logs and benchmarks: bytes, or without timing fields (TIMED_FILES)."""
    root = workdir / "results"
    files = {str(p.relative_to(workdir)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {
        name: without_timings(name, data) if TIMED_FILES.match(name) else data
        for name, data in files.items()
        if not name.startswith(VOLATILE)
    }


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, tmp_path_factory, shared_data):
    """CLUSTER_TARGETS on configs/test.yaml through the Slurm executor, and the same run locally."""
    workdir = tmp_path_factory.mktemp("slurm")
    cfg = write_config(workdir, **cluster_config())
    proc = run_snakemake(workdir, cfg, *CLUSTER_FLAGS, *CLUSTER_TARGETS, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    local = tmp_path_factory.mktemp("local")
    local_cfg = write_config(local, **cluster_config())
    local_proc = run_snakemake(local, local_cfg, "--cores", "2", *CLUSTER_TARGETS, timeout=600)
    assert local_proc.returncode == 0, local_proc.stderr[-6000:]
    return workdir, output, local, local_proc.stdout + local_proc.stderr


@pytest.mark.slurm
def test_every_job_ran_as_a_completed_slurm_job(cluster_run):
    workdir, output, _, local_output = cluster_run
    submitted = dict(SUBMITTED.findall(output))
    assert submitted, "no job was submitted to Slurm:\n" + output[-4000:]
    records = sacct(list(submitted))
    assert sorted(records) == sorted(submitted), f"sacct lacks jobs: {set(submitted) - set(records)}"
    for row in records.values():
        assert row["State"] == "COMPLETED" and row["ExitCode"] == "0:0", row
        assert row["WorkDir"] == str(workdir) and row["JobName"].startswith("instag_"), row
    # Every job that runs a command ran inside one of those Slurm jobs (a group job holds several): the job
    # step's own Snakemake prints `localrule <rule>:` (`localcheckpoint`) for each job it executes. The same
    # jobs ran in the local run; only the target rules (no command) ran in the submitting process.
    executed = Counter()
    for log in submitted.values():
        executed.update(jobs_printed(Path(log).read_text(), "localrule|localcheckpoint"))
    targets = set(jobs_printed(output, "localrule"))
    assert targets == set(CLUSTER_TARGETS), targets
    submitted_jobs = jobs_printed(output)
    ran_locally = jobs_printed(local_output, "rule|checkpoint|localrule|localcheckpoint")
    expected = Counter({rule: n for rule, n in ran_locally.items() if rule not in targets})
    assert expected and executed == expected == submitted_jobs, (executed, expected, submitted_jobs)
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    size = dict(item.split("=") for item in profile["group-components"])
    dirs = [Path(log).parent.name for log in submitted.values()]
    group_jobs = Counter(name.split("_")[1] for name in dirs if name.startswith("group_"))
    for group, rule in [("ingest", "data_ingest"), ("tagging", "tagging_tag_shard")]:
        assert group_jobs[group] == -(-expected[rule] // int(size[group])), (group, group_jobs, expected)


@pytest.mark.slurm
def test_outputs_equal_a_local_run(cluster_run):
    workdir, _, local, _ = cluster_run
    on_cluster, here = result_files(workdir), result_files(local)
    assert on_cluster, "the cluster run wrote nothing under results/"
    assert sorted(on_cluster) == sorted(here)
    differing = [name for name in on_cluster if on_cluster[name] != here[name]]
    assert not differing, f"files differ between the Slurm and the local run: {differing}"
    assert any(name.startswith("results/tables/") for name in on_cluster)


@pytest.mark.slurm
def test_a_failing_job_fails_the_run_and_names_its_log(slurm_cluster, tmp_path, shared_data):
    bad = tmp_path / "only-bad-rows.json"
    bad.write_text('[{"no_instruction": 1}, {"instruction": ""}, {"output": "no query"}]\n')
    cfg = write_config(tmp_path, datasets={"broken": {"path": str(bad), "format": "alpaca"}})
    proc = run_snakemake(tmp_path, cfg, *CLUSTER_FLAGS, "stage_data", timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    ((job_id, slurm_log),) = SUBMITTED.findall(output)
    # the error report names both logs: the Slurm job's (.snakemake/slurm_logs/...) and the rule's
    assert f"log: {slurm_log} (check log file(s) for error details)" in output, output[-6000:]
    assert "results/logs/data/ingest/broken.log" in output.split("Error in rule data_ingest")[-1], output[-6000:]
    # the rejected rows outlive the failed job (its outputs are deleted), and the error names where they are
    kept = tmp_path / "results/logs/data/ingest/broken.rejected.jsonl"
    assert len(kept.read_text().splitlines()) == 3 and str(kept.relative_to(tmp_path)) in output
    job_log = Path(slurm_log).read_text()  # kept: the plugin deletes only the logs of successful jobs
    assert "Error in rule data_ingest" in job_log and "wildcards: dataset=broken" in job_log, job_log[-3000:]
    assert "3 of 3 rows rejected" in (tmp_path / "results/logs/data/ingest/broken.log").read_text()
    assert sacct([job_id])[job_id]["State"] == "FAILED"
