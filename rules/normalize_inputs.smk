# Input functions of rules/normalize.smk (definitions only: Snakemake's linter wants rules and functions apart).
NORMALIZE = config["normalize"]
NORMALIZE_STEPS = ("frequency", "lexical", "semantic", "association")


def normalize_step_file(step):
    return f"results/normalize/{step}.json"


def get_normalize_after(step):
    """The step files a normalization step replays: every step before it, in order."""
    return [
        normalize_step_file(s) for s in NORMALIZE_STEPS[: NORMALIZE_STEPS.index(step)]
    ]


def normalize_final_output():
    return [
        "results/tables/normalization_steps.tsv",
        "results/tables/tag_mapping.tsv",
    ]
