"""TagLM fine-tuning (paper.md §6, A9): one run per sampled set and seed, on the shared trainer (:mod:`instag.train`).

A sampled set (``results/sampling/<ablation>/<variant>.jsonl``: ``{"id", "dataset", "tags"}`` per line) names
records; their conversations come from the ingested records (``results/data/<dataset>.jsonl``). Each run writes
``results/finetune/<ablation>/<variant>/seed<seed>/`` (model, run.json, loss.tsv, loss.png, rejected.jsonl,
optionally model.gguf). ``summarize`` gathers the runs into ``results/tables/finetune.tsv`` (reproducible: no
timings) and ``results/benchmarks/finetune/speed.tsv`` (seconds and tokens/s, from each run's per-step timing
file), and draws ``results/figures/finetune_loss.{png,pdf}``.

Which sets and seeds run is planned by :func:`plan_runs` (called by ``rules/finetune_inputs.smk``): a set is
``<ablation>/<variant>``, where the variant may be a name, a glob, ``first``/``last`` (the ends of a sweep, in
its configured order) or ``main`` (``n<sampling.size>``: Algorithm 1's selection, or the random baseline of the
same size).

Multi-process training: ``--nproc N`` (N > 1) re-launches the same command under ``torchrun --standalone`` with N
processes (one node; on GPUs one process per GPU, FSDP as configured; on CPU gloo DDP), which is how a Slurm job
with ``gpu: N`` runs it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ConfigError, InputError, InstagError
from .io import file_sha256, iter_jsonl, read_json, read_tsv, write_tsv

log = logging.getLogger(__name__)

SPECIAL = ("first", "last", "main")


# ------------------------------------------------------------------------------------------------ planning


def _match(spec: str, variants: Mapping[str, Sequence[str]], main_size: int) -> list[tuple[str, str]]:
    if "/" not in spec:
        raise ConfigError("finetune.sets", f"{spec!r} is not '<ablation>/<variant>'")
    abl_pat, var_pat = spec.split("/", 1)
    out = []
    for ablation in fnmatch.filter(list(variants), abl_pat):
        names = list(variants[ablation])
        if var_pat == "first":
            chosen = names[:1]
        elif var_pat == "last":
            chosen = names[-1:]
        elif var_pat == "main":
            chosen = [n for n in names if n == f"n{main_size}"]
        else:
            chosen = fnmatch.filter(names, var_pat)
        out.extend((ablation, v) for v in chosen)
    return out


def plan_runs(
    variants: Mapping[str, Sequence[str]],
    sets: Sequence[str] = (),
    seeds: Sequence[int] = (42,),
    seeds_per_set: Mapping[str, Sequence[int]] | None = None,
    main_size: int = 6000,
) -> list[tuple[str, str, int]]:
    """(ablation, variant, seed) of every run, in ablation/variant/seed order, without duplicates.

    ``variants``: ablation -> its variant names in sweep order. ``sets``: set specs (empty: every variant).
    ``seeds_per_set``: set spec -> seeds for the sets it matches (replacing ``seeds``), e.g. more seeds for
    the headline comparison. A spec that matches nothing is an error naming it.
    """
    chosen: list[tuple[str, str]] = []
    if not sets:
        chosen = [(a, v) for a, names in variants.items() for v in names]
    for spec in sets:
        found = _match(spec, variants, main_size)
        if not found:
            have = "; ".join(f"{a}: {', '.join(v) or '-'}" for a, v in variants.items())
            raise ConfigError("finetune.sets", f"{spec!r} matches no sampled set (sets: {have})")
        chosen.extend(x for x in found if x not in chosen)
    extra: dict[tuple[str, str], list[int]] = {}
    for spec, spec_seeds in (seeds_per_set or {}).items():
        found = _match(spec, variants, main_size)
        if not found:
            raise ConfigError(f"finetune.seeds_per_set.{spec}", "matches no sampled set")
        for x in found:
            extra[x] = list(spec_seeds)
            if x not in chosen:
                chosen.append(x)
    order = {a: i for i, a in enumerate(variants)}
    chosen.sort(key=lambda x: (order[x[0]], list(variants[x[0]]).index(x[1])))
    runs = []
    for a, v in chosen:
        for s in sorted(dict.fromkeys(extra.get((a, v), list(seeds)))):
            runs.append((a, v, int(s)))
    if not runs:
        raise ConfigError("finetune.sets", "no run planned (no sampled set, or an empty seed list)")
    return runs


# ------------------------------------------------------------------------------------------------ data


def load_conversations(sample: str | Path, records: Sequence[str | Path]) -> list[dict]:
    """The conversations of a sampled set, in the sample file's order, from the ingested records."""
    wanted: dict[str, int] = {}
    for line, row in iter_jsonl(sample):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise InputError(sample, "a sample line needs a string 'id'", line)
        if row["id"] in wanted:
            raise InputError(sample, f"duplicate id {row['id']!r}", line)
        wanted[row["id"]] = line
    found: dict[str, dict] = {}
    for path in records:
        for line, rec in iter_jsonl(path):
            if isinstance(rec, dict) and rec.get("id") in wanted:
                if not isinstance(rec.get("turns"), list):
                    raise InputError(path, "a record needs a 'turns' list", line)
                found[rec["id"]] = {"id": rec["id"], "dataset": rec.get("dataset"), "turns": rec["turns"]}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InputError(
            sample,
            f"{len(missing)} sampled ids are in none of the record files "
            f"({', '.join(map(str, records))}), e.g. {missing[0]!r}",
            wanted[missing[0]],
        )
    return [found[i] for i in wanted]


# ------------------------------------------------------------------------------------------------ actions


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``instag <argv>`` under ``torchrun --standalone`` with ``nproc`` processes on this node."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "instag",
        *argv,
    ]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.call(cmd, env={**os.environ, "INSTAG_LAUNCHED": "1"})


def train(
    sample: str | Path,
    records: Sequence[str | Path],
    out_dir: str | Path,
    settings: dict | None = None,
    seed: int = 42,
    threads: int = 1,
    nproc: int = 1,
    timing: str | Path | None = None,
    ablation: str | None = None,
    variant: str | None = None,
    show_progress: bool = True,
) -> dict:
    """Fine-tune the base model on one sampled set. Writes OUT_DIR/model/ (HF format), run.json, loss.tsv,
    loss.png, rejected.jsonl and (if configured) model.gguf. A killed run started again resumes from
    OUT_DIR/checkpoints/.

    Returns the run's summary (steps, losses, probe, speed, mask audit).

    Args:
        sample: sampled set JSONL (results/sampling/<ablation>/<variant>.jsonl).
        records: ingested record files (results/data/*.jsonl).
        out_dir: run folder (results/finetune/<ablation>/<variant>/seed<seed>).
        settings: training settings as JSON (config key finetune.training; none: the defaults).
        seed: training seed (data order, initialisation of LoRA).
        threads: torch threads in all (shared by local processes).
        nproc: processes (GPUs) on this node; more than 1 runs this command again under torchrun.
        timing: per-step seconds and tokens/s TSV to write (kept out of results: timings vary).
        ablation: name recorded in run.json (none: the sample's folder).
        variant: name recorded in run.json (none: the sample's stem).
        show_progress: draw a progress bar on stderr; the log has every step either way.
    """
    if nproc > 1 and not os.environ.get("INSTAG_LAUNCHED"):
        argv = ["-v"] if log.isEnabledFor(logging.DEBUG) else []
        argv += ["finetune", "train", "--sample", str(sample), "--records", *map(str, records)]
        argv += ["--out-dir", str(out_dir), "--settings", json.dumps(settings or {}, sort_keys=True)]
        argv += ["--seed", str(seed), "--threads", str(threads)]
        for flag, value in (("--timing", timing), ("--ablation", ablation), ("--variant", variant)):
            if value is not None:
                argv += [flag, str(value)]
        if not show_progress:
            argv.append("--no-progress")
        rc = launch(argv, nproc)
        if rc:
            raise InstagError(f"the {nproc}-process training exited with status {rc}")
        run = read_json(Path(out_dir) / "run.json")
        return {"processes": nproc, "steps": run["steps"], "final_loss": run["final_loss"]}
    from .train import TrainSettings, train_conversations

    conversations = load_conversations(sample, records)
    sample = Path(sample)
    record = {
        "sample": {
            "ablation": ablation or sample.parent.name,
            "variant": variant or sample.stem,
            "file": sample.name,
            "sha256": file_sha256(sample),
            "records": len(conversations),
        }
    }
    summary = train_conversations(
        conversations,
        TrainSettings.from_dict(settings or {}),
        out_dir,
        threads=threads,
        seed=seed,
        timing_path=timing,
        record=record,
        show_progress=show_progress,
    )
    return {
        k: summary[k] for k in ("steps", "first_loss", "final_loss", "probe", "seconds", "tokens_per_s", "mask_audit")
    }


TABLE_COLUMNS = [
    "ablation",
    "variant",
    "seed",
    "base_model",
    "records",
    "samples",
    "lost",
    "truncated",
    "tokens",
    "trainable_tokens",
    "padding_share",
    "global_batch",
    "learning_rate",
    "epochs",
    "steps",
    "first_loss",
    "final_loss",
    "loss_drop",
    "probe_samples",
    "probe_loss_before",
    "probe_loss_after",
    "model_sha256",
]
SPEED_COLUMNS = ["ablation", "variant", "seed", "steps", "tokens", "seconds", "tokens_per_s"]


def loss_drop(losses: Sequence[float]) -> float | None:
    """Mean loss of the first third of the steps minus that of the last third (each step sees other samples,
    so single steps are noisy); positive when the loss fell. None with fewer than 2 steps."""
    if len(losses) < 2:
        return None
    k = max(1, len(losses) // 3)
    return round(sum(losses[:k]) / k - sum(losses[-k:]) / k, 6)


def summarize(
    runs: Sequence[str | Path],
    table: str | Path,
    png: str | Path,
    pdf: str | Path,
    speed: str | Path | None = None,
    timings: Sequence[str | Path] = (),
) -> list[dict]:
    """finetune.tsv (one row per run), the speed table (from the per-step timing files) and the loss figure.

    Args:
        runs: run.json files.
        table: the table to write (results/tables/finetune.tsv).
        png: loss-curve figure, PNG.
        pdf: loss-curve figure, PDF.
        speed: speed TSV to write (seconds, tokens/s): a timing, not a result (none: not written).
        timings: per-step timing TSVs, in the order of the runs.
    """
    rows, curves = [], []
    for path in runs:
        run = read_json(path)
        folder = Path(path).parent
        losses = read_tsv(folder / "loss.tsv")
        s, a = run["sample"], run["mask_audit"]
        first = float(losses[0]["loss"]) if losses else None
        final = float(losses[-1]["loss"]) if losses else None
        rows.append(
            {
                "ablation": s["ablation"],
                "variant": s["variant"],
                "seed": run["seed"],
                "records": s["records"],
                "samples": a["kept"],
                "lost": a["lost"],
                "truncated": a["truncated_kept"],
                "tokens": run["batch"]["tokens"],
                "trainable_tokens": a["trainable_tokens"],
                "padding_share": run["batch"]["padding_share"],
                "global_batch": run["batch"]["global_batch"],
                "learning_rate": run["settings"]["learning_rate"],
                "steps": run["steps"],
                "epochs": run["settings"]["epochs"],
                "first_loss": first,
                "final_loss": final,
                "loss_drop": loss_drop([float(r["loss"]) for r in losses]),
                "probe_samples": (run.get("probe") or {}).get("samples"),
                "probe_loss_before": (run.get("probe") or {}).get("loss_before"),
                "probe_loss_after": (run.get("probe") or {}).get("loss_after"),
                "base_model": run.get("base_model"),
                "model_sha256": run.get("model_sha256"),
            }
        )
        for r in losses:
            curves.append(
                {
                    "run": f"{s['ablation']}/{s['variant']} seed{run['seed']}",
                    "step": int(r["step"]),
                    "loss": float(r["loss"]),
                }
            )
    write_tsv(table, rows, TABLE_COLUMNS)
    if speed is not None:
        speed_rows = []
        for path, row in zip(timings, rows, strict=True):
            t = read_tsv(path) if Path(path).exists() else []
            secs = sum(float(r["seconds"]) for r in t)
            toks = sum(int(r["tokens"]) for r in t)
            speed_rows.append(
                {
                    "ablation": row["ablation"],
                    "variant": row["variant"],
                    "seed": row["seed"],
                    "steps": len(t),
                    "tokens": toks,
                    "seconds": round(secs, 2),
                    "tokens_per_s": round(toks / secs, 1) if secs else None,
                }
            )
        write_tsv(speed, speed_rows, SPEED_COLUMNS)
    _plot(curves, png, pdf)
    return rows


def _plot(curves: list[dict], png: str | Path, pdf: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 4))
    if curves:
        sns.lineplot(data=pd.DataFrame(curves), x="step", y="loss", hue="run", ax=ax, linewidth=1.2)
        ax.legend(fontsize=7, title=None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("TagLM fine-tuning: loss per run")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    for path in (png, pdf):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(
            path, dpi=120, metadata={"CreationDate": None} if str(path).endswith(".pdf") else {"Software": None}
        )
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ CLI


def add_cli(sub) -> None:
    from .cli_args import add_command, stage_parser

    acts = stage_parser(
        sub,
        "finetune",
        "fine-tune TagLM on sampled sets (FastChat Vicuna v1.1 template)",
        "TagLM fine-tuning (paper §4.2): one run per sampled set and seed, loss on assistant turns.",
    )
    add_command(acts, "train", train, help="fine-tune on one sampled set", switches={"show_progress": "--no-progress"})
    add_command(
        acts,
        "summarize",
        summarize,
        help="finetune.tsv, the speed table and the loss-curve figure",
        positional=("runs",),
        result=lambda rows: {"runs": len(rows)},
    )
