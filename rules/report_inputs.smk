# Input functions of rules/report.smk (definitions only: Snakemake's linter wants rules and functions apart).
#
# Which figures the report draws follows from the other stages' final outputs (instag.report.plan), so a stage
# left out of the run leaves its figures out.
import json
import re
from pathlib import Path

from instag.report.browser import find_chromium
from instag.report.claims import config_digest
from instag.report.plan import (
    REPORT_DEFAULTS,
    plan_figures,
    report_outputs,
    screenshots_enabled,
    source_tables,
    sweeps_sources,
)

REPORT = config.get("report", {})
REPORT_STYLE = {**REPORT_DEFAULTS["style"], **REPORT.get("style", {})}
REPORT_EXPLORER = {**REPORT_DEFAULTS["explorer"], **REPORT.get("explorer", {})}
try:
    REPORT_SCREENSHOTS = screenshots_enabled(
        REPORT.get("screenshots", REPORT_DEFAULTS["screenshots"]), find_chromium()
    )
except ValueError as exc:
    raise WorkflowError(f"config key 'report.screenshots': {exc}") from None


def report_stage_outputs():
    """The final outputs of every stage before the report (what it may read)."""
    return [str(p) for outs in stage_final_outputs().values() for p in outs]


def report_figures():
    return plan_figures(report_stage_outputs())


def get_report_tables(wildcards=None):
    return source_tables(report_stage_outputs())


def get_report_sweeps_sources(wildcards=None):
    return sweeps_sources(report_stage_outputs())


def get_report_figure_table(wildcards):
    return report_figures()[wildcards.figure]


def get_report_style(wildcards=None):
    return json.dumps(REPORT_STYLE, sort_keys=True)


def get_report_config(wildcards=None):
    """The config without its report section (what produced the numbers), as JSON."""
    return json.dumps(
        {k: v for k, v in config.items() if k != "report"}, sort_keys=True, default=str
    )


def get_report_config_label(wildcards=None):
    # file names only: the same config run in another folder gives the same tables
    files = [Path(f).name for f in workflow.config_settings.configfiles]
    files = files or ["config.yaml"]
    return f"{', '.join(files)} (sha256:{config_digest(config)[:12]})"


def get_report_datasets(wildcards=None):
    """NAME=PATH of every enabled dataset (quoted one by one with :q in the rule)."""
    return [f"{name}={dataset_path(name)}" for name in DATASETS]


def get_report_sources(wildcards=None):
    """The configured source data files (hashed into provenance.json)."""
    return [str(dataset_path(name)) for name in DATASETS]


def report_figure_regex():
    return "|".join(map(re.escape, report_figures())) or "(?!x)x"


def report_final_output():
    return report_outputs(report_stage_outputs(), REPORT_SCREENSHOTS)
