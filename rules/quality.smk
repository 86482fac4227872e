# Stage `quality`: LLM-judged tag precision and consistency  <->  src/instag/quality.py
#
# The judge's calls are cached in `quality.cache_dir` (outside results/), like tagging's.


include: "quality_inputs.smk"


rule quality_judge:
    input:
        normalized="results/normalize/normalized.jsonl",
        records=get_records_files,
    output:
        judgments="results/quality/judgments.jsonl",
        table=report(
            "results/tables/tag_quality.tsv",
            caption="../report/tag_quality.rst",
            category="quality",
        ),
        cost="results/tables/quality_cost_estimate.tsv",
    log:
        "results/logs/quality/judge.log",
    benchmark:
        "results/benchmarks/quality/judge.tsv"
    conda:
        "../envs/llm.yaml"
    threads: threads_for("quality_judge")
    resources:
        **resources_for("quality_judge"),
    params:
        q=QUALITY,
        judge=get_quality_judge,
        prices=get_quality_prices,
    shell:
        "instag -v quality judge --normalized {input.normalized:q} --records {input.records:q}"
        " --judge {params.judge:q} --cache-dir {params.q[cache_dir]:q} --n-precision {params.q[n_precision]}"
        " --n-consistency {params.q[n_consistency]} --set-size {params.q[set_size]}"
        " --min-instances {params.q[min_instances]} --seed {params.q[seed]}"
        " --max-query-chars {params.q[max_query_chars]} --max-tokens {params.q[max_tokens]}"
        " --prices {params.prices:q} --spend-cap-usd {params.q[spend_cap_usd]}"
        " --out {output.judgments:q} --table {output.table:q} --cost-estimate {output.cost:q}"
        " > /dev/null 2> {log:q}"


rule stage_quality:
    """Target: the LLM-judged tag quality table (precision and consistency)."""
    input:
        rules.quality_judge.output.table,
