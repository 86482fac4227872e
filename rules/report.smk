# Stage `report`: the paper against this run, figures, provenance and the tag explorer  <->  src/instag/report/
#
# Reads only results/ (the other stages' tables and statistics files). Every figure is its own job reading one
# table with the style of `report.style` as a parameter, so changing the style reruns only the figure jobs.


include: "report_inputs.smk"


rule report_claims:
    input:
        tables=get_report_tables,
    output:
        tsv=report(
            "results/tables/claims.tsv",
            caption="../report/claims.rst",
            category="report",
            subcategory="tables",
            labels={"table": "claims (paper vs this run)"},
        ),
        md="results/report/claims.md",
    log:
        "results/logs/report/claims.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("report_claims")
    resources:
        **resources_for("report_claims"),
    params:
        config=get_report_config,
        label=get_report_config_label,
    shell:
        "instag -v report claims --results results --config {params.config:q} --config-label {params.label:q}"
        " --out-tsv {output.tsv:q} --out-md {output.md:q} > /dev/null 2> {log:q}"


rule report_sweeps:
    input:
        tables=get_report_sweeps_sources,
    output:
        table=report(
            "results/tables/sweeps.tsv",
            caption="../report/sweeps.rst",
            category="report",
            subcategory="tables",
            labels={"table": "sweeps (sampled sets with MT-Bench)"},
        ),
    log:
        "results/logs/report/sweeps.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("report_sweeps")
    resources:
        **resources_for("report_sweeps"),
    params:
        config=get_report_config,
    shell:
        "instag -v report sweeps --results results --config {params.config:q} --out {output.table:q}"
        " > /dev/null 2> {log:q}"


rule report_figure:
    input:
        table=get_report_figure_table,
    output:
        png=report(
            "results/figures/report_{figure}.png",
            caption="../report/figure.rst",
            category="report",
            subcategory="figures",
            labels={"figure": "{figure}"},
        ),
        pdf="results/figures/report_{figure}.pdf",
    log:
        "results/logs/report/figure/{figure}.log",
    wildcard_constraints:
        figure=report_figure_regex(),
    conda:
        "../envs/core.yaml"
    threads: threads_for("report_figure")
    resources:
        **resources_for("report_figure"),
    params:
        style=get_report_style,
        score_name=config["analysis"]["score_name"],
        stem=subpath(output.png, strip_suffix=".png"),
    shell:
        "instag -v report figure --name {wildcards.figure} --table {input.table:q} --out {params.stem:q}"
        " --style {params.style:q} --score-name {params.score_name:q} > /dev/null 2> {log:q}"


rule report_provenance:
    input:
        tables=get_report_tables,
        sources=get_report_sources,
    output:
        json=report(
            "results/provenance.json",
            caption="../report/provenance.rst",
            category="report",
            subcategory="provenance",
            labels={"file": "provenance.json"},
        ),
    log:
        "results/logs/report/provenance.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("report_provenance")
    resources:
        **resources_for("report_provenance"),
    params:
        config=get_report_config,
        repo=workflow.basedir,
        datasets=get_report_datasets,
    shell:
        "instag -v report provenance --results results --config {params.config:q} --repo {params.repo:q}"
        " --datasets {params.datasets:q} --out {output.json:q} > /dev/null 2> {log:q}"


rule report_explorer:
    input:
        mapping="results/tables/tag_mapping.tsv",
        normalized="results/normalize/normalized.jsonl",
        records=get_records_files,
    output:
        html=report(
            "results/report/explorer.html",
            caption="../report/explorer.rst",
            category="report",
            subcategory="tag explorer",
            labels={"file": "explorer.html"},
        ),
    log:
        "results/logs/report/explorer.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("report_explorer")
    resources:
        **resources_for("report_explorer"),
    params:
        examples=REPORT_EXPLORER["examples"],
        max_chars=REPORT_EXPLORER["max_chars"],
    shell:
        "instag -v report explorer --mapping {input.mapping:q} --normalized {input.normalized:q}"
        " --records {input.records:q} --examples {params.examples} --max-chars {params.max_chars}"
        " --out {output.html:q} > /dev/null 2> {log:q}"


rule report_screenshot:
    input:
        html=rules.report_explorer.output.html,
    output:
        png=report(
            "results/report/explorer.png",
            caption="../report/explorer_png.rst",
            category="report",
            subcategory="tag explorer",
            labels={"file": "explorer.png"},
        ),
    log:
        "results/logs/report/screenshot.log",
    conda:
        # the instag CLI; Chromium itself comes from the system (Debian's chromium), found at run time
        "../envs/core.yaml"
    threads: threads_for("report_screenshot")
    resources:
        **resources_for("report_screenshot"),
    shell:
        "instag -v report screenshot --html {input.html:q} --png {output.png:q} --fragment tag="
        " > /dev/null 2> {log:q}"


rule stage_report:
    """Target: the claims table, the report figures, provenance.json and the tag explorer."""
    input:
        report_final_output(),
