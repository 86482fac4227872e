# Input functions of rules/quality.smk (definitions only: Snakemake's linter wants rules and functions apart).
import json

QUALITY = config["quality"]


def get_quality_judge(wildcards=None):
    """The judge backend spec as one JSON string (quoted with :q in the rule)."""
    return json.dumps(QUALITY["judge"], sort_keys=True)


def get_quality_prices(wildcards=None):
    return json.dumps(QUALITY["prices"], sort_keys=True)


def quality_final_output():
    return ["results/tables/tag_quality.tsv"] if QUALITY["enabled"] else []
