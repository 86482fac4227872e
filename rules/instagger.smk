# Stage `instagger`: distil the tagger into a local model, score it by exact and fuzzy F1  <->  src/instag/instagger/
#
# split (teacher's tags -> train/test by a seeded hash of the record id), train (the shared trainer, TagLM's
# template), predict (each system tags the test queries through the tagging stage's cached tagger: the distilled
# model, the teacher again at temperature > 0, optionally the released checkpoint), score (results/tables/instagger.tsv).
# Training resumes from its checkpoints in results/instagger/train/; with `gpu: N` in its resources (or
# instagger.nproc = N), `instag instagger train --nproc N` starts torchrun with N processes inside its one job.


include: "instagger_inputs.smk"


rule instagger_split:
    input:
        tags=get_tag_shards,
        records=get_records_files,
        mapping=rules.normalize_finalize.output.mapping,
    output:
        train="results/instagger/split/train.jsonl",
        test="results/instagger/split/test.jsonl",
        stats="results/instagger/split/stats.json",
    log:
        "results/logs/instagger/split.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("instagger_split")
    resources:
        **resources_for("instagger_split"),
    params:
        i=INSTAGGER,
    shell:
        "instag -v instagger split --tags {input.tags:q} --records {input.records:q} --mapping {input.mapping:q}"
        " --train-out {output.train:q} --test-out {output.test:q} --stats {output.stats:q}"
        " --test-size {params.i[test_size]} --train-size {params.i[train_size]} --seed {params.i[seed]}"
        " --max-query-chars {params.i[max_query_chars]} > /dev/null 2> {log:q}"


rule instagger_train:
    input:
        train=rules.instagger_split.output.train,
    output:
        run=f"{INSTAGGER_RUN}/run.json",
    log:
        main="results/logs/instagger/train.log",
        steps="results/logs/instagger/train_steps.tsv",
    benchmark:
        "results/benchmarks/instagger/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: threads_for("instagger_train")
    resources:
        **resources_for("instagger_train"),
    params:
        settings=get_instagger_training_json,
        run_dir=get_instagger_run_dir,
        seed=INSTAGGER["seed"],
        nproc=instagger_nproc(),
    shell:
        "instag -v instagger train --train {input.train:q} --out-dir {params.run_dir:q}"
        " --settings {params.settings:q} --threads {threads} --nproc {params.nproc} --seed {params.seed}"
        " --timing {log.steps:q}"
        " > /dev/null 2> {log.main:q}"


rule instagger_predict:
    input:
        test=rules.instagger_split.output.test,
        model=get_instagger_predict_model,
    output:
        tags="results/instagger/predict/{system}.jsonl",
        summary="results/instagger/predict/{system}.summary.json",
    log:
        "results/logs/instagger/predict/{system}.log",
    benchmark:
        "results/benchmarks/instagger/predict/{system}.tsv"
    wildcard_constraints:
        system="|".join(INSTAGGER_SYSTEMS),
    conda:
        "../envs/llm.yaml"
    threads: threads_for("instagger_predict")
    resources:
        **resources_for("instagger_predict"),
    params:
        settings=get_instagger_predict_settings,
    shell:
        "instag -v instagger predict --test {input.test:q} --out {output.tags:q} --summary {output.summary:q}"
        " --settings {params.settings:q} --threads {threads} > /dev/null 2> {log:q}"


rule instagger_score:
    input:
        test=rules.instagger_split.output.test,
        mapping=rules.normalize_finalize.output.mapping,
        run=rules.instagger_train.output.run,
        predictions=get_instagger_predictions,
    output:
        scores="results/instagger/scores.json",
        per_query="results/instagger/per_query.jsonl",
        table=report(
            "results/tables/instagger.tsv",
            caption="../report/instagger.rst",
            category="instagger",
        ),
    log:
        "results/logs/instagger/score.log",
    conda:
        "../envs/core.yaml"
    threads: threads_for("instagger_score")
    resources:
        **resources_for("instagger_score"),
    params:
        pairs=get_instagger_prediction_pairs,
        s=INSTAGGER["score"],
        seed=INSTAGGER["seed"],
    shell:
        "instag -v instagger score --test {input.test:q} --predictions {params.pairs:q} --mapping {input.mapping:q}"
        " --run {input.run:q} --out {output.scores:q} --per-query {output.per_query:q} --table {output.table:q}"
        " --embedding-model {params.s[embedding_model]:q} --threshold {params.s[threshold]}"
        " --bootstrap {params.s[bootstrap]} --level {params.s[level]} --seed {params.seed}"
        " --cache-dir {params.s[cache_dir]:q} --device {params.s[device]:q} --threads {threads}"
        " > /dev/null 2> {log:q}"


rule stage_instagger:
    """Target: train the InsTagger, tag the test split with it and the teacher, write results/tables/instagger.tsv."""
    input:
        rules.instagger_score.output.table,
