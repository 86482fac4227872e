# Stage `mtbench`: MT-Bench answers per model, single-answer judging, tables, figures  <->  src/instag/mtbench/
#
# One answer job and one judge job per model (a fine-tuning run <ablation>/<variant>/seed<n>, `base`, or
# api/<name>), so a new model adds two jobs and reruns nothing else; every model call is cached by content.
# On a cluster (configs/paper.yaml) the answer jobs get the GPU resources of `resources.mtbench_answer` and
# run vLLM in their own environment (envs/vllm.yaml); the judge jobs call GPT-4 through the openai backend.


include: "mtbench_inputs.smk"


rule mtbench_data:
    output:
        manifest="results/mtbench/data.json",
    log:
        "results/logs/mtbench/data.log",
    conda:
        "../envs/llm.yaml"
    threads: threads_for("mtbench_data")
    resources:
        **resources_for("mtbench_data"),
    params:
        settings=get_mtbench_settings_json(),
    shell:
        "instag -v mtbench data --settings {params.settings:q} --out {output.manifest:q} > /dev/null 2> {log:q}"


rule mtbench_answer:
    input:
        unpack(get_mtbench_answer_input),
    output:
        answers="results/mtbench/answers/{model}.jsonl",
    log:
        "results/logs/mtbench/answer/{model}.log",
    benchmark:
        "results/benchmarks/mtbench/answer/{model}.tsv"
    wildcard_constraints:
        model=mtbench_model_regex(),
    conda:
        get_mtbench_answer_env()
    threads: threads_for("mtbench_answer")
    resources:
        **resources_for("mtbench_answer"),
    params:
        settings=get_mtbench_settings_json(),
        run_dir=get_mtbench_run_dir_args,
    shell:
        "instag -v mtbench answer --settings {params.settings:q} --model {wildcards.model:q} {params.run_dir:q}"
        " --threads {threads} --out {output.answers:q} > /dev/null 2> {log:q}"


rule mtbench_judge:
    input:
        answers=rules.mtbench_answer.output.answers,
        manifest=rules.mtbench_data.output.manifest,
    output:
        judgments="results/mtbench/judgments/{model}.jsonl",
        estimate="results/mtbench/judgments/{model}.cost.json",
    log:
        "results/logs/mtbench/judge/{model}.log",
    benchmark:
        "results/benchmarks/mtbench/judge/{model}.tsv"
    wildcard_constraints:
        model=mtbench_model_regex(),
    conda:
        "../envs/llm.yaml"
    threads: threads_for("mtbench_judge")
    resources:
        **resources_for("mtbench_judge"),
    params:
        settings=get_mtbench_settings_json(),
        judge=get_mtbench_judge_json(),
    shell:
        "instag -v mtbench judge --settings {params.settings:q} --judge {params.judge:q} --threads {threads}"
        " --answers {input.answers:q} --out {output.judgments:q} --cost-estimate {output.estimate:q}"
        " > /dev/null 2> {log:q}"


rule mtbench_score:
    input:
        judgments=mtbench_files("judgments"),
        stats=get_mtbench_sample_stats(),
    output:
        table=report(
            "results/tables/mt_bench.tsv",
            caption="../report/mtbench.rst",
            category="mtbench",
            subcategory="tables",
        ),
        categories=report(
            "results/tables/mt_bench_categories.tsv",
            caption="../report/mtbench.rst",
            category="mtbench",
            subcategory="tables",
        ),
    log:
        "results/logs/mtbench/score.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("mtbench_score")
    resources:
        **resources_for("mtbench_score"),
    params:
        settings=get_mtbench_settings_json(),
    shell:
        "instag -v mtbench score --settings {params.settings:q} --judgments {input.judgments:q}"
        " --stats {input.stats:q} --table {output.table:q} --category-table {output.categories:q}"
        " > /dev/null 2> {log:q}"


rule mtbench_plot:
    input:
        table=rules.mtbench_score.output.table,
        categories=rules.mtbench_score.output.categories,
    output:
        figures=report_files(mtbench_figure_files(), "mtbench", "mtbench"),
    log:
        "results/logs/mtbench/plot.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("mtbench_plot")
    resources:
        **resources_for("mtbench_plot"),
    params:
        out_dir=get_figure_dir,
    shell:
        "instag -v mtbench plot --table {input.table:q} --category-table {input.categories:q}"
        " --out-dir {params.out_dir:q} > /dev/null 2> {log:q}"


rule stage_mtbench:
    input:
        mtbench_final_output(),
