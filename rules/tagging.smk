# Stage `tagging`: open-set tags for every query with an LLM, sharded per dataset  <->  src/instag/tagging.py
#
# The number of shards of a dataset is known once it is ingested (rule data_ingest is a checkpoint), so the
# shard list comes from `tagging_shard_files(dataset)` in tagging_inputs.smk (instag.tagging.n_shards of its
# records). Every call is cached in `tagging.cache_dir` (outside results/): rerunning a shard makes no completed
# call twice.


include: "tagging_inputs.smk"


rule tagging_estimate_cost:
    input:
        records=get_records_files,
    output:
        table=report(
            "results/tables/cost_estimate.tsv",
            caption="../report/cost_estimate.rst",
            category="tagging",
        ),
    log:
        "results/logs/tagging/estimate_cost.log",
    conda:
        "../envs/llm.yaml"
    threads: threads_for("tagging_estimate_cost")
    resources:
        **resources_for("tagging_estimate_cost"),
    params:
        settings=get_tagging_settings_json,
    shell:
        # the estimate is printed on stdout, so Snakemake shows it before any tagging job starts
        "instag -v tagging estimate-cost {input.records:q} --settings-json {params.settings:q}"
        " --out {output.table:q} 2> {log:q}"


rule tagging_tag_shard:
    input:
        records="results/data/{dataset}.jsonl",
        estimate=rules.tagging_estimate_cost.output.table,
    output:
        tags="results/tagging/{dataset}/shard-{shard}.jsonl",
        summary="results/tagging/{dataset}/shard-{shard}.summary.json",
    log:
        "results/logs/tagging/tag_shard/{dataset}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/tagging/tag_shard/{dataset}/shard-{shard}.tsv"
    conda:
        "../envs/llm.yaml"
    threads: threads_for("tagging_tag_shard")
    resources:
        **resources_for("tagging_tag_shard"),
    params:
        settings=get_tagging_settings_json,
        shard_size=TAGGING["shard_size"],
    shell:
        "instag -v tagging tag-shard --records {input.records:q} --dataset {wildcards.dataset:q}"
        " --shard {wildcards.shard} --shard-size {params.shard_size} --settings-json {params.settings:q}"
        " --threads {threads} --out {output.tags:q} --summary {output.summary:q} > /dev/null 2> {log:q}"


rule tagging_summarize:
    input:
        # every dataset's records up front, so all ingestion jobs run at once before the shards are counted
        records=get_records_files,
        summaries=get_tagging_summaries,
    output:
        table=report(
            "results/tables/tagging.tsv",
            caption="../report/tagging.rst",
            category="tagging",
        ),
    log:
        "results/logs/tagging/summarize.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("tagging_summarize")
    resources:
        **resources_for("tagging_summarize"),
    shell:
        "instag -v tagging summarize {input.summaries:q} --out {output.table:q} > /dev/null 2> {log:q}"


rule stage_tagging:
    """Target: tag every query of every dataset and write results/tables/tagging.tsv."""
    input:
        rules.tagging_summarize.output.table,
