# Stage `analysis` (diversity, complexity, Figure 2)  <->  src/instag/analysis.py
#
# Figures are drawn from the tables alone, so `snakemake --forcerun analysis_figures` needs nothing upstream.


include: "analysis_inputs.smk"


rule analysis_tables:
    input:
        normalized="results/normalize/normalized.jsonl",
    output:
        datasets=report(
            "results/tables/analysis_datasets.tsv",
            caption="../report/analysis.rst",
            category="analysis",
            subcategory="tables",
        ),
        frequency="results/tables/tag_frequency.tsv",
        top="results/tables/top_tags.tsv",
        coverage="results/tables/dataset_coverage.tsv",
        correlation=report(
            "results/tables/analysis_correlation.tsv",
            caption="../report/analysis.rst",
            category="analysis",
            subcategory="tables",
        ),
    log:
        "results/logs/analysis/tables.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("analysis_tables")
    resources:
        **resources_for("analysis_tables"),
    params:
        datasets=DATASETS,
        names=get_analysis_names,
        scores=get_analysis_scores,
        score_name=ANALYSIS["score_name"],
        top_k=ANALYSIS["top_k"],
    shell:
        "instag -v analysis tables --normalized {input.normalized:q} --datasets {params.datasets:q}"
        " --names {params.names:q} --scores {params.scores:q} --score-name {params.score_name:q}"
        " --top-k {params.top_k} --out-datasets {output.datasets:q} --out-frequency {output.frequency:q}"
        " --out-top {output.top:q} --out-coverage {output.coverage:q} --out-correlation {output.correlation:q}"
        " > /dev/null 2> {log:q}"


rule analysis_figures:
    input:
        datasets=rules.analysis_tables.output.datasets,
        frequency=rules.analysis_tables.output.frequency,
        top=rules.analysis_tables.output.top,
        coverage=rules.analysis_tables.output.coverage,
    output:
        figures=report_files(analysis_figure_files(), "analysis", "analysis"),
    log:
        "results/logs/analysis/figures.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("analysis_figures")
    resources:
        **resources_for("analysis_figures"),
    params:
        outdir=get_figure_dir,
        score_name=ANALYSIS["score_name"],
    shell:
        "instag -v analysis figures --datasets-tsv {input.datasets:q} --frequency-tsv {input.frequency:q}"
        " --top-tsv {input.top:q} --coverage-tsv {input.coverage:q} --outdir {params.outdir:q}"
        " --score-name {params.score_name:q} > /dev/null 2> {log:q}"


rule stage_analysis:
    """Target: the analysis tables and figures (diversity, complexity, tag frequencies, Figure 2)."""
    input:
        rules.analysis_tables.output,
        rules.analysis_figures.output,
