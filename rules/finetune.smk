# Stage `finetune`: TagLM fine-tuning on the sampled sets (FastChat's Vicuna v1.1 template)  <->  src/instag/finetune.py
#
# One job per (sampled set, seed) that `finetune.sets`/`seeds`/`seeds_per_set` select (instag.finetune.plan_runs).
# A job with `gpu: N` in its resources is one Slurm task holding N GPUs; `instag finetune train --nproc N` starts
# torchrun with N processes inside it (FSDP as configured). Checkpoints under the run folder are not outputs, so a
# killed job started again resumes from its last one. Changing a training setting changes every run's params and
# retrains them; adding a set or a seed trains only the new runs.


include: "finetune_inputs.smk"


rule finetune_train:
    input:
        sample="results/sampling/{ablation}/{variant}.jsonl",
        records=get_records_files(),
    output:
        **finetune_train_outputs(),
    log:
        "results/logs/finetune/train/{ablation}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/train/{ablation}/{variant}/seed{seed}.tsv"
    wildcard_constraints:
        ablation=finetune_ablation_regex(),
        variant=r"[^/]+",
        seed=r"\d+",
    conda:
        "../envs/train.yaml"
    threads: threads_for("finetune_train")
    resources:
        **resources_for("finetune_train"),
    params:
        settings=get_finetune_settings_json(),
        nproc=finetune_nproc(),
        out_dir=get_finetune_run_dir,
    shell:
        "instag -v finetune train --sample {input.sample:q} --records {input.records:q}"
        " --settings {params.settings:q} --seed {wildcards.seed} --out-dir {params.out_dir:q}"
        " --threads {threads} --nproc {params.nproc} --timing {output.timing:q}"
        " --ablation {wildcards.ablation} --variant {wildcards.variant} > /dev/null 2> {log:q}"


rule finetune_summarize:
    input:
        runs=finetune_files(rules.finetune_train.output.run),
        timings=finetune_files(rules.finetune_train.output.timing),
    output:
        table=report(
            "results/tables/finetune.tsv",
            caption="../report/finetune.rst",
            category="finetune",
            subcategory="tables",
        ),
        speed="results/benchmarks/finetune/speed.tsv",
        png=report(
            "results/figures/finetune_loss.png",
            caption="../report/finetune.rst",
            category="finetune",
            subcategory="figures",
        ),
        pdf="results/figures/finetune_loss.pdf",
    log:
        "results/logs/finetune/summarize.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("finetune_summarize")
    resources:
        **resources_for("finetune_summarize"),
    shell:
        "instag -v finetune summarize {input.runs:q} --timings {input.timings:q} --table {output.table:q}"
        " --speed {output.speed:q} --png {output.png:q} --pdf {output.pdf:q} > /dev/null 2> {log:q}"


rule stage_finetune:
    """Target: every configured fine-tuning run, finetune.tsv and the loss curves."""
    input:
        finetune_final_output(),
