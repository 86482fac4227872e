# Input functions of rules/sampling.smk (definitions only: Snakemake's linter wants rules and functions apart).
#
# Variants come from `sampling.ablations` through instag.sampling.plan_variants; each is one wildcard value
# (the stepped number) of its ablation's rule.
import re
import sys

from instag.config import sampling_pool
from instag.sampling.plan import plan_variants

SAMPLING = config["sampling"]
SAMPLING_VARIANTS = checked(plan_variants, SAMPLING)
SAMPLING_POOL, _warnings = checked(sampling_pool, config)
for _warning in _warnings:
    print(f"Warning: {_warning}", file=sys.stderr)


def sampling_values(ablation):
    """Wildcard constraint of an ablation's rule: exactly its configured values."""
    values = [v.value for v in SAMPLING_VARIANTS[ablation]]
    return "|".join(map(re.escape, values)) if values else "(?!x)x"


def sampling_files(ablation, ext="jsonl"):
    return [
        f"results/sampling/{ablation}/{v.name}.{ext}"
        for v in SAMPLING_VARIANTS[ablation]
    ]


def get_ablation_samples(ablation):
    """Every sample file and statistics file of one ablation (the input of its target rule)."""
    return sampling_files(ablation) + sampling_files(ablation, "stats.json")


def get_sampling_stats(wildcards=None):
    return [
        path
        for ablation in SAMPLING_VARIANTS
        for path in sampling_files(ablation, "stats.json")
    ]


def sampling_final_output():
    return [
        "results/tables/pool.tsv",
        "results/tables/samples.tsv",
        "results/figures/sampling_coverage_complexity.png",
        "results/figures/sampling_coverage_complexity.pdf",
    ]
