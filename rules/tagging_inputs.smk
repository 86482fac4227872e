# Input functions of rules/tagging.smk (definitions only: Snakemake's linter wants rules and functions apart).
#
# A dataset's shard count follows from its record count, known after its ingestion: rule data_ingest is a
# checkpoint, and these input functions read its statistics (instag.tagging.n_shards).
import json

from instag.tagging import n_shards

TAGGING = config["tagging"]


def get_tagging_settings_json(wildcards=None):
    """The tagging section (backend, prompt, decoding, retries, cache, prices) as one JSON string."""
    return json.dumps(
        {k: v for k, v in TAGGING.items() if k != "shard_size"}, sort_keys=True
    )


def tagging_shard_files(dataset, ext="jsonl"):
    """The tag files (or, with ext="summary.json", the summaries) of every shard of one dataset."""
    stats = checkpoints.data_ingest.get(dataset=dataset).output.stats
    with open(stats, encoding="utf-8") as fh:
        n = n_shards(json.load(fh)["selected"], TAGGING["shard_size"])
    return [f"results/tagging/{dataset}/shard-{k}.{ext}" for k in range(n)]


def get_tag_shards(wildcards=None):
    """Every tagging shard of every dataset, in config order."""
    return [path for dataset in DATASETS for path in tagging_shard_files(dataset)]


def get_tagging_summaries(wildcards=None):
    return [
        path
        for dataset in DATASETS
        for path in tagging_shard_files(dataset, "summary.json")
    ]


def tagging_final_output():
    return ["results/tables/cost_estimate.tsv", "results/tables/tagging.tsv"]
