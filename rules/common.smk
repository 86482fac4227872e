# Validation of the config, wildcard constraints, resources and the input functions that several stages share.
# Definitions only, no rules. A stage's own input functions sit beside its rule file (rules/<stage>_inputs.smk,
# which the rule file includes); planning (which variants, shards, runs and models exist) lives in the package.
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import instag.config as config_checks
from instag.errors import ConfigError

validate(config, "../schemas/config.schema.yaml")


def checked(fn, *args, **kwargs):
    """fn(*args, **kwargs), its ConfigError (which names the key) raised as a WorkflowError: a message, no traceback."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


DATASETS = checked(config_checks.enabled_datasets, config)
checked(config_checks.check_inputs_exist, config, DATASETS, workflow.basedir)


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    shard=r"\d+",


def stages_to_run():
    """The stage words of the rules this run will execute (a rule's name starts with its stage's word)."""
    try:
        return {job.rule.name.split("_")[0] for job in workflow.dag.needrun_jobs()}
    except AttributeError:
        return None  # a Snakemake without this API: check every configured backend


# Name a missing API key before any job runs (from `onstart`, so a dry run, which calls nothing, passes), only for
# the stages this run executes.
onstart:
    checked(config_checks.check_api_keys, config, stages_to_run())


def threads_for(rule):
    """Threads for a rule: `threads.<rule>` in the config, else `threads.default`."""
    return config["threads"].get(rule, config["threads"]["default"])


def resources_for(rule):
    """Resources for a rule: `resources.default` updated with `resources.<rule>`."""
    res = dict(config["resources"]["default"])
    res.update(config["resources"].get(rule, {}))
    return res


def dataset_path(name):
    """The source file of a configured dataset (a relative data_root is relative to the repository)."""
    return config_checks.dataset_path(config, name, workflow.basedir)


def get_records_files(wildcards=None):
    return [f"results/data/{dataset}.jsonl" for dataset in DATASETS]


def get_figure_dir(wildcards, output):
    """The folder of a rule's first output (figures are written there by name)."""
    return os.path.dirname(output[0])


def report_files(files, caption, category):
    """report() on the PNG files of a list of figures (the PDF beside each stays a plain output)."""
    # imported under another name: `report(` opening a line is the report: keyword
    from snakemake.io import report as report_item

    return [
        (
            report_item(
                f,
                caption=f"../report/{caption}.rst",
                category=category,
                subcategory="figures",
            )
            if str(f).endswith(".png")
            else f
        )
        for f in files
    ]


def stage_final_outputs():
    """Each stage's final outputs before the report's, by stage word in DAG order (the report reads these)."""
    return {
        "data": data_final_output(),
        "tagging": tagging_final_output(),
        "normalize": normalize_final_output(),
        "quality": quality_final_output(),
        "analysis": analysis_final_output(),
        "sampling": sampling_final_output(),
        "finetune": finetune_final_output(),
        "mtbench": mtbench_final_output(),
        "instagger": instagger_final_output(),
    }


def get_final_output():
    """Everything the default target builds: each stage's tables and figures, then the report."""
    return [
        *(path for outputs in stage_final_outputs().values() for path in outputs),
        *report_final_output(),
    ]
