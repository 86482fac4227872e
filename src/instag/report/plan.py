"""Planning for rules/report.smk (no heavy imports): which figures exist for a run, where their tables are,
and whether screenshots are taken. Unit-tested without Snakemake."""

from __future__ import annotations

from collections.abc import Iterable

from .style import DEFAULT_STYLE

#: figure -> (the table it is drawn from, the final output that shows its stage runs). A stage's final
#: outputs decide: e.g. the radar is drawn only when the mtbench stage lists its per-category table.
FIGURE_TABLES = {
    "diversity_complexity": ("results/tables/analysis_datasets.tsv", "results/tables/analysis_datasets.tsv"),
    "coverage_heatmap": ("results/tables/dataset_coverage.tsv", "results/tables/analysis_datasets.tsv"),
    "normalization_funnel": ("results/tables/normalization_steps.tsv", "results/tables/normalization_steps.tsv"),
    "sampling_plane": ("results/tables/samples.tsv", "results/tables/samples.tsv"),
    "sweeps": ("results/tables/sweeps.tsv", "results/tables/samples.tsv"),
    "mtbench_radar": ("results/tables/mt_bench_categories.tsv", "results/tables/mt_bench_categories.tsv"),
}
#: The tables the sweeps join reads (the MT-Bench one only where the mtbench stage runs).
SWEEPS_SOURCES = ("results/tables/samples.tsv", "results/tables/mt_bench.tsv")
#: ``report`` defaults (the schema repeats them; a test keeps both equal).
REPORT_DEFAULTS = {"style": DEFAULT_STYLE, "explorer": {"examples": 3, "max_chars": 240}, "screenshots": "auto"}
SCREENSHOT_CHOICES = ("auto", "true", "false")  # YAML true/false arrive as booleans


def plan_figures(stage_outputs: Iterable[str]) -> dict[str, str]:
    """figure name -> its table, for the figures whose stage is among ``stage_outputs`` (in a fixed order)."""
    have = set(stage_outputs)
    return {name: table for name, (table, trigger) in FIGURE_TABLES.items() if trigger in have}


def source_tables(stage_outputs: Iterable[str]) -> list[str]:
    """The flat tables among the other stages' final outputs, sorted (the claims and provenance inputs)."""
    return sorted({p for p in stage_outputs if p.startswith("results/tables/") and p.endswith(".tsv")})


def sweeps_sources(stage_outputs: Iterable[str]) -> list[str]:
    have = set(stage_outputs)
    return [p for p in SWEEPS_SOURCES if p in have]


def screenshots_enabled(setting, chromium: str | None) -> bool:
    """``report.screenshots``: true/false, or auto = when a Chromium is installed."""
    value = str(setting).lower()
    if value not in SCREENSHOT_CHOICES:
        raise ValueError(f"report.screenshots must be one of {', '.join(SCREENSHOT_CHOICES)}, not {setting!r}")
    return value == "true" or (value == "auto" and chromium is not None)


def report_outputs(stage_outputs: Iterable[str], screenshots: bool) -> list[str]:
    """Everything the report stage builds for a run whose other stages build ``stage_outputs``."""
    outs = list(stage_outputs)
    files = ["results/tables/claims.tsv", "results/report/claims.md", "results/provenance.json"]
    figures = plan_figures(outs)
    if "sweeps" in figures:
        files.append("results/tables/sweeps.tsv")
    files += [f"results/figures/report_{name}.{ext}" for name in figures for ext in ("png", "pdf")]
    if "results/tables/tag_mapping.tsv" in outs:
        files.append("results/report/explorer.html")
        if screenshots:
            files.append("results/report/explorer.png")
    return files
