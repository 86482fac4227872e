# instag-workflow: the InsTag study (Lu et al., ICLR 2024, arXiv 2308.07074) as one Snakemake DAG.
#
# Path convention: every output lives under results/, one folder per stage named by the stage word (the same
# word names the rule file, the package module, the `instag <stage>` command and the log folder):
#   results/data/{dataset}.jsonl                   ingested records (+ .rejected.jsonl, .stats.json)
#   results/tagging/{dataset}/shard-{shard}.jsonl  tag lines (+ .summary.json)
#   results/normalize/                             collected pool, one file per step, normalized.jsonl
#   results/quality/judgments.jsonl                the LLM judge's judgments
#   results/sampling/{ablation}/{variant}.jsonl    samples (+ .stats.json); results/sampling/pool.jsonl
#   results/finetune/{ablation}/{variant}/seed{seed}/  one fine-tuning run: model/, run.json, loss.tsv
#   results/mtbench/                               questions (data.json), answers/, judgments/
#   results/instagger/                             split/, train/ (the model), predict/, scores.json
#   results/report/, results/provenance.json       claims.md, the tag explorer; provenance of the run
#   results/tables/*.tsv, results/figures/*        paper tables and figures (all that `analysis` writes)
#   results/logs/<stage>/<action>/...log           one log per job; results/benchmarks/<stage>/<action>/...
# Run one stage or ablation by naming its target rule (e.g. `snakemake stage_data`) or an output file.

import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.27")

# The `instag` console script sits beside the Python that runs Snakemake (a virtual environment's bin/).
# Put that folder first on PATH in every job so rules find it without an activated environment. Where
# Snakemake runs from an environment without instag (e.g. with --sdm conda), the job's env provides it.
if (Path(sys.executable).parent / "instag").exists():
    shell.prefix(
        f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"; '
    )


# The default config applies only when none is given: Snakemake would otherwise deep-merge a
# --configfile (e.g. configs/paper.yaml) onto the demo's datasets, limits and resources. It is the
# repository's config.yaml also when a run has its own directory (`--directory runs/<name>`).
if not workflow.config_settings.configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/tagging.smk"
include: "rules/normalize.smk"
include: "rules/quality.smk"
include: "rules/analysis.smk"
include: "rules/sampling.smk"
include: "rules/finetune.smk"
include: "rules/mtbench.smk"
include: "rules/instagger.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
