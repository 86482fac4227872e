# Stage `sampling`: the pool, Algorithm 1 and the decoupled ablations  <->  src/instag/sampling.py
#
# One rule per ablation; its wildcard is the number the ablation steps (variants planned from `sampling.ablations`
# by instag.sampling.plan_variants), so that
# `snakemake --forcerun sampling_diversity` reruns only the diversity variants and what depends on them,
# and `snakemake ablation_diversity` (or one results/sampling/diversity/cov<coverage>.jsonl) builds nothing else.


include: "sampling_inputs.smk"


rule sampling_pool:
    input:
        tags="results/normalize/normalized.jsonl",
    output:
        pool="results/sampling/pool.jsonl",
        stats="results/sampling/pool.stats.json",
        table=report(
            "results/tables/pool.tsv",
            caption="../report/sampling.rst",
            category="sampling",
            subcategory="tables",
        ),
    log:
        "results/logs/sampling/pool.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_pool")
    resources:
        **resources_for("sampling_pool"),
    params:
        datasets=SAMPLING_POOL,
    shell:
        "instag -v sampling pool --tags {input.tags:q} --datasets {params.datasets:q}"
        " --out {output.pool:q} --stats {output.stats:q} --table {output.table:q} > /dev/null 2> {log:q}"


rule sampling_complexity:
    input:
        pool=rules.sampling_pool.output.pool,
    output:
        sample="results/sampling/complexity/tags{complexity}.jsonl",
        stats="results/sampling/complexity/tags{complexity}.stats.json",
    log:
        "results/logs/sampling/select/complexity/tags{complexity}.log",
    benchmark:
        "results/benchmarks/sampling/select/complexity/tags{complexity}.tsv"
    wildcard_constraints:
        complexity=sampling_values("complexity"),
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_select")
    resources:
        **resources_for("sampling_select"),
    params:
        a=SAMPLING["ablations"]["complexity"],
        tol=SAMPLING["tolerance"],
        seed=SAMPLING["seed"],
    shell:
        "instag -v sampling select --pool {input.pool:q} --ablation complexity --variant tags{wildcards.complexity}"
        " --size {params.a[size]} --coverage {params.a[coverage]} --complexity {wildcards.complexity}"
        " --tol-coverage {params.tol[coverage]} --tol-complexity {params.tol[avg_tags]} --seed {params.seed}"
        " --out {output.sample:q} --stats {output.stats:q} > /dev/null 2> {log:q}"


rule sampling_diversity:
    input:
        pool=rules.sampling_pool.output.pool,
    output:
        sample="results/sampling/diversity/cov{coverage}.jsonl",
        stats="results/sampling/diversity/cov{coverage}.stats.json",
    log:
        "results/logs/sampling/select/diversity/cov{coverage}.log",
    benchmark:
        "results/benchmarks/sampling/select/diversity/cov{coverage}.tsv"
    wildcard_constraints:
        coverage=sampling_values("diversity"),
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_select")
    resources:
        **resources_for("sampling_select"),
    params:
        a=SAMPLING["ablations"]["diversity"],
        tol=SAMPLING["tolerance"],
        seed=SAMPLING["seed"],
    shell:
        "instag -v sampling select --pool {input.pool:q} --ablation diversity --variant cov{wildcards.coverage}"
        " --size {params.a[size]} --coverage {wildcards.coverage} --complexity {params.a[avg_tags]}"
        " --tol-coverage {params.tol[coverage]} --tol-complexity {params.tol[avg_tags]} --seed {params.seed}"
        " --out {output.sample:q} --stats {output.stats:q} > /dev/null 2> {log:q}"


rule sampling_size:
    input:
        pool=rules.sampling_pool.output.pool,
    output:
        sample="results/sampling/size/n{size}.jsonl",
        stats="results/sampling/size/n{size}.stats.json",
    log:
        "results/logs/sampling/select/size/n{size}.log",
    benchmark:
        "results/benchmarks/sampling/select/size/n{size}.tsv"
    wildcard_constraints:
        size=sampling_values("size"),
    conda:
        "../envs/core.yaml"
    threads: threads_for("sampling_select")
    resources:
        **resources_for("sampling_select"),
    params:
        ablation="size",
        seed=SAMPLING["seed"],
    shell:
        "instag -v sampling select --pool {input.pool:q} --ablation {params.ablation} --variant n{wildcards.size}"
        " --size {wildcards.size} --seed {params.seed} --out {output.sample:q} --stats {output.stats:q}"
        " > /dev/null 2> {log:q}"


use rule sampling_size as sampling_random with:
    output:
        sample="results/sampling/random/n{size}.jsonl",
        stats="results/sampling/random/n{size}.stats.json",
    log:
        "results/logs/sampling/select/random/n{size}.log",
    benchmark:
        "results/benchmarks/sampling/select/random/n{size}.tsv"
    wildcard_constraints:
        size=sampling_values("random"),
    params:
        ablation="random",
        seed=SAMPLING["seed"],


rule sampling_summarize:
    input:
        stats=get_sampling_stats(),
    output:
        table=report(
            "results/tables/samples.tsv",
            caption="../report/sampling.rst",
            category="sampling",
            subcategory="tables",
        ),
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
        png=report(
            "results/figures/sampling_coverage_complexity.png",
            caption="../report/sampling.rst",
            category="sampling",
            subcategory="figures",
        ),
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
