# Stage `sampling`: the pool, Algorithm 1 and the decoupled ablations  <->  src/instag/sampling.py
#
# One rule per ablation (variants are wildcard values from `sampling.ablations`), so that
# `snakemake --forcerun sampling_diversity` reruns only the diversity variants and what depends on them,
# and `snakemake ablation_diversity` (or one results/sampling/diversity/<variant>.jsonl) builds nothing else.


rule sampling_pool:
    input:
        tags="results/normalize/normalized.jsonl",
    output:
        pool="results/sampling/pool.jsonl",
        stats="results/sampling/pool.stats.json",
        table="results/tables/pool.tsv",
    log:
        "results/logs/sampling/pool.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_pool")
    resources:
        **resources_for("sampling_pool"),
    params:
        datasets=get_sampling_pool_option,
    shell:
        "instag -v sampling pool --tags {input.tags:q} {params.datasets}"
        " --out {output.pool:q} --stats {output.stats:q} --table {output.table:q} > /dev/null 2> {log:q}"


rule sampling_complexity:
    input:
        pool=rules.sampling_pool.output.pool,
    output:
        sample="results/sampling/complexity/{variant}.jsonl",
        stats="results/sampling/complexity/{variant}.stats.json",
    log:
        "results/logs/sampling/select/complexity/{variant}.log",
    benchmark:
        "results/benchmarks/sampling/select/complexity/{variant}.tsv"
    wildcard_constraints:
        variant=sampling_variant_regex("complexity"),
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_select")
    resources:
        **resources_for("sampling_select"),
    params:
        ablation="complexity",
        targets=get_sampling_targets("complexity"),
        tolerance=get_sampling_tolerance(),
        seed=SAMPLING["seed"],
    shell:
        "instag -v sampling select --pool {input.pool:q} --ablation {params.ablation} --variant {wildcards.variant}"
        " {params.targets} {params.tolerance} --seed {params.seed}"
        " --out {output.sample:q} --stats {output.stats:q} > /dev/null 2> {log:q}"


use rule sampling_complexity as sampling_diversity with:
    output:
        sample="results/sampling/diversity/{variant}.jsonl",
        stats="results/sampling/diversity/{variant}.stats.json",
    log:
        "results/logs/sampling/select/diversity/{variant}.log",
    benchmark:
        "results/benchmarks/sampling/select/diversity/{variant}.tsv"
    wildcard_constraints:
        variant=sampling_variant_regex("diversity"),
    params:
        ablation="diversity",
        targets=get_sampling_targets("diversity"),
        tolerance=get_sampling_tolerance(),
        seed=SAMPLING["seed"],


use rule sampling_complexity as sampling_size with:
    output:
        sample="results/sampling/size/{variant}.jsonl",
        stats="results/sampling/size/{variant}.stats.json",
    log:
        "results/logs/sampling/select/size/{variant}.log",
    benchmark:
        "results/benchmarks/sampling/select/size/{variant}.tsv"
    wildcard_constraints:
        variant=sampling_variant_regex("size"),
    params:
        ablation="size",
        targets=get_sampling_targets("size"),
        tolerance="",
        seed=SAMPLING["seed"],


use rule sampling_complexity as sampling_random with:
    output:
        sample="results/sampling/random/{variant}.jsonl",
        stats="results/sampling/random/{variant}.stats.json",
    log:
        "results/logs/sampling/select/random/{variant}.log",
    benchmark:
        "results/benchmarks/sampling/select/random/{variant}.tsv"
    wildcard_constraints:
        variant=sampling_variant_regex("random"),
    params:
        ablation="random",
        targets=get_sampling_targets("random"),
        tolerance="",
        seed=SAMPLING["seed"],


rule sampling_summarize:
    input:
        stats=get_sampling_stats(),
    output:
        table="results/tables/samples.tsv",
    log:
        "results/logs/sampling/summarize.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_summarize")
    resources:
        **resources_for("sampling_summarize"),
    shell:
        "instag -v sampling summarize {input.stats:q} --out {output.table:q} > /dev/null 2> {log:q}"


rule sampling_plot:
    input:
        table=rules.sampling_summarize.output.table,
    output:
        png="results/figures/sampling_coverage_complexity.png",
        pdf="results/figures/sampling_coverage_complexity.pdf",
    log:
        "results/logs/sampling/plot.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_plot")
    resources:
        **resources_for("sampling_plot"),
    shell:
        "instag -v sampling plot --table {input.table:q} --png {output.png:q} --pdf {output.pdf:q}"
        " > /dev/null 2> {log:q}"


rule ablation_complexity:
    """Target: the complexity sweep (equal size and coverage, tags per query stepped)."""
    input:
        get_ablation_samples("complexity"),


rule ablation_diversity:
    """Target: the diversity sweep (equal size and tags per query, coverage stepped)."""
    input:
        get_ablation_samples("diversity"),


rule ablation_size:
    """Target: Algorithm 1 at every configured size."""
    input:
        get_ablation_samples("size"),


rule ablation_random:
    """Target: the uniform random baselines."""
    input:
        get_ablation_samples("random"),


rule stage_sampling:
    """Target: the pool table, every ablation, samples.tsv and the coverage x complexity figure."""
    input:
        sampling_final_output(),
