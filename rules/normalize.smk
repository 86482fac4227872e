# Stage `normalize`: raw tags -> canonical tags in four cached steps  <->  src/instag/normalize/
#
# collect (tagging shards -> one pool file), then frequency, lexical, semantic and association, each its own
# file results/normalize/<step>.json that replays the earlier steps, so changing one step's settings
# reruns only it and the steps after it; finalize writes the normalized records and the tables.


include: "normalize_inputs.smk"


rule normalize_collect:
    input:
        shards=get_tag_shards,
        records=get_records_files,
    output:
        pool="results/normalize/raw.jsonl",
        stats="results/normalize/collect.json",
    log:
        "results/logs/normalize/collect.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("normalize_collect")
    resources:
        **resources_for("normalize_collect"),
    shell:
        "instag -v normalize collect --shards {input.shards:q} --records {input.records:q}"
        " --out {output.pool:q} --stats {output.stats:q} > /dev/null 2> {log:q}"


rule normalize_frequency:
    input:
        pool=rules.normalize_collect.output.pool,
    output:
        step=normalize_step_file("frequency"),
    log:
        "results/logs/normalize/frequency.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("normalize_frequency")
    resources:
        **resources_for("normalize_frequency"),
    params:
        f=NORMALIZE["frequency"],
    shell:
        "instag -v normalize frequency --pool {input.pool:q} --alpha {params.f[alpha]} --scale {params.f[scale]}"
        " --reference-queries {params.f[reference_queries]} --alpha-min {params.f[alpha_min]}"
        " --out {output.step:q} > /dev/null 2> {log:q}"


rule normalize_lexical:
    input:
        pool=rules.normalize_collect.output.pool,
        after=get_normalize_after("lexical"),
    output:
        step=normalize_step_file("lexical"),
    log:
        "results/logs/normalize/lexical.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("normalize_lexical")
    resources:
        **resources_for("normalize_lexical"),
    shell:
        "instag -v normalize lexical --pool {input.pool:q} --after {input.after:q} --out {output.step:q}"
        " > /dev/null 2> {log:q}"


rule normalize_semantic:
    input:
        pool=rules.normalize_collect.output.pool,
        after=get_normalize_after("semantic"),
    output:
        step=normalize_step_file("semantic"),
    log:
        "results/logs/normalize/semantic.log",
    benchmark:
        "results/benchmarks/normalize/semantic.tsv"
    conda:
        "../envs/core.yaml"
    threads: threads_for("normalize_semantic")
    resources:
        **resources_for("normalize_semantic"),
    params:
        s=NORMALIZE["semantic"],
    shell:
        "instag -v normalize semantic --pool {input.pool:q} --after {input.after:q} --model {params.s[model]:q}"
        " --device {params.s[device]:q} --cache-dir {params.s[cache_dir]:q} --eps {params.s[eps]}"
        " --min-samples {params.s[min_samples]} --batch-size {params.s[batch_size]} --threads {threads}"
        " --out {output.step:q} > /dev/null 2> {log:q}"


rule normalize_association:
    input:
        pool=rules.normalize_collect.output.pool,
        after=get_normalize_after("association"),
    output:
        step=normalize_step_file("association"),
    log:
        "results/logs/normalize/association.log",
    benchmark:
        "results/benchmarks/normalize/association.tsv"
    conda:
        "../envs/core.yaml"
    threads: threads_for("normalize_association")
    resources:
        **resources_for("normalize_association"),
    params:
        a=NORMALIZE["association"],
        reference_queries=NORMALIZE["frequency"]["reference_queries"],
    shell:
        "instag -v normalize association --pool {input.pool:q} --after {input.after:q}"
        " --min-support {params.a[min_support]} --min-confidence {params.a[min_confidence]}"
        " --engine {params.a[engine]} --scale {params.a[scale]} --min-support-floor {params.a[min_support_floor]}"
        " --max-rounds {params.a[max_rounds]} --reference-queries {params.reference_queries}"
        " --out {output.step:q} > /dev/null 2> {log:q}"


rule normalize_finalize:
    input:
        pool=rules.normalize_collect.output.pool,
        steps=[normalize_step_file(s) for s in NORMALIZE_STEPS],
    output:
        normalized="results/normalize/normalized.jsonl",
        mapping=report(
            "results/tables/tag_mapping.tsv",
            caption="../report/tag_mapping.rst",
            category="normalize",
        ),
        table=report(
            "results/tables/normalization_steps.tsv",
            caption="../report/normalization_steps.rst",
            category="normalize",
        ),
        summary="results/normalize/summary.json",
    log:
        "results/logs/normalize/finalize.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("normalize_finalize")
    resources:
        **resources_for("normalize_finalize"),
    shell:
        "instag -v normalize finalize --pool {input.pool:q} --steps {input.steps:q}"
        " --normalized {output.normalized:q} --mapping {output.mapping:q} --table {output.table:q}"
        " --summary {output.summary:q} > /dev/null 2> {log:q}"


rule stage_normalize:
    """Target: normalize the tags; results/normalize/normalized.jsonl and the step counts and mapping tables."""
    input:
        rules.normalize_finalize.output,
