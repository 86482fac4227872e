# Input functions of rules/analysis.smk (definitions only: Snakemake's linter wants rules and functions apart).
import json

from instag.config import check_analysis_scores

ANALYSIS = config["analysis"]
ANALYSIS_FIGURES = (
    "diversity_complexity",
    "tag_long_tail",
    "top_tags",
    "coverage_heatmap",
)
checked(check_analysis_scores, config)


def get_analysis_names(wildcards=None):
    return json.dumps(
        {d: config["datasets"][d].get("paper_name", d) for d in DATASETS},
        sort_keys=True,
    )


def get_analysis_scores(wildcards=None):
    return json.dumps(
        {d: v for d, v in ANALYSIS["scores"].items() if d in DATASETS}, sort_keys=True
    )


def analysis_figure_files():
    return [
        f"results/figures/analysis_{name}.{ext}"
        for name in ANALYSIS_FIGURES
        for ext in ("png", "pdf")
    ]


def analysis_final_output():
    return [
        "results/tables/analysis_datasets.tsv",
        "results/tables/analysis_correlation.tsv",
        *analysis_figure_files(),
    ]
