# Stage `data`: read each configured dataset into uniform records  <->  src/instag/data.py


include: "data_inputs.smk"


checkpoint data_ingest:
    input:
        source=get_dataset_source,
    output:
        records="results/data/{dataset}.jsonl",
        rejected="results/data/{dataset}.rejected.jsonl",
        stats="results/data/{dataset}.stats.json",
    log:
        log="results/logs/data/ingest/{dataset}.log",
        # the rejected rows, copied here only when the dataset fails (a failed job's outputs are deleted)
        rejected="results/logs/data/ingest/{dataset}.rejected.jsonl",
    conda:
        "../envs/core.yaml"
    threads: threads_for("data_ingest")
    resources:
        **resources_for("data_ingest"),
    params:
        fmt=get_dataset_option("format"),
        fields=get_dataset_option("fields", {}),
        limit=get_dataset_option("limit"),
        seed=get_dataset_option("seed", 0),
        max_query_chars=config["ingest"]["max_query_chars"],
        max_reject_fraction=config["ingest"]["max_reject_fraction"],
    shell:
        "instag -v data ingest --dataset {wildcards.dataset:q} --path {input.source:q}"
        " --format {params.fmt:q} --fields {params.fields:q} --limit {params.limit} --seed {params.seed}"
        " --max-query-chars {params.max_query_chars}"
        " --max-reject-fraction {params.max_reject_fraction}"
        " --out {output.records:q} --rejected {output.rejected:q} --stats {output.stats:q}"
        " --rejected-on-failure {log.rejected:q} > /dev/null 2> {log.log:q}"


rule data_summarize:
    input:
        stats=expand("results/data/{dataset}.stats.json", dataset=DATASETS),
    output:
        table=report(
            "results/tables/datasets.tsv",
            caption="../report/datasets.rst",
            category="data",
        ),
    log:
        "results/logs/data/summarize.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("data_summarize")
    resources:
        **resources_for("data_summarize"),
    shell:
        "instag -v data summarize {input.stats:q} --out {output.table:q} > /dev/null 2> {log:q}"


rule stage_data:
    """Target: ingest every configured dataset and write results/tables/datasets.tsv."""
    input:
        rules.data_summarize.output.table,
