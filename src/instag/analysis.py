"""Preliminary analysis (paper.md §4): per-dataset diversity and complexity, tag frequencies, Figure 2.

Definitions (paper.md §4.1), over the normalized records (``results/normalize/normalized.jsonl``):

- diversity of dataset D: its tag-set size |T_D| = |union of T(q) over D| and its coverage of the whole tag
  set, |T_D| / |T_all|, where T_all is the union over every dataset analysed;
- complexity of D: the average number of tags per sample. A sample is a record (a session for multi-turn
  data, whose tag set is the union of its queries' tags, paper.md A2), as the paper's per-session metric for
  multi-turn data; for single-turn data this is the average per query. The per-query average is reported too.

Records whose tagging failed entirely (``status: untagged``) are counted but left out of the averages; a
record that kept no tag after normalization counts as a sample with 0 tags.

Where the config gives a downstream score per dataset (the paper's Figure 2 colours datasets by the public
AlpacaEval leaderboard score of a model fine-tuned on them; the paper reports no coefficient), Pearson and
Spearman correlations of each measure with the score are computed over the datasets that have one.

Tables are written first (``tables``); figures are drawn from the tables alone (``figures``), so a figure
rerun needs nothing upstream.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError
from .io import iter_jsonl, read_tsv, write_tsv

log = logging.getLogger(__name__)

MEASURES = ("tags", "coverage", "complexity", "tags_per_query")
MIN_DATASETS_FOR_CORRELATION = 3


def _read(path: str | Path):
    for line, rec in iter_jsonl(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("tags"), list) or "dataset" not in rec:
            raise InputError(path, "a normalized record needs 'dataset' and a 'tags' list", line)
        yield rec


def dataset_measures(records: Sequence[dict], order: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """Per-dataset rows (see the module docstring) and the record-level tag counts they were built from."""
    per: dict[str, dict] = defaultdict(
        lambda: {"records": 0, "untagged": 0, "tag_sum": 0, "queries": 0, "query_tag_sum": 0, "tags": Counter()}
    )
    overall: Counter = Counter()
    query_counts: Counter = Counter()
    for rec in records:
        d = per[rec["dataset"]]
        d["records"] += 1
        if rec.get("status") == "untagged":
            d["untagged"] += 1
            continue
        tags = rec["tags"]
        d["tag_sum"] += len(tags)
        d["tags"].update(tags)
        overall.update(tags)
        for q in rec.get("queries") or [tags]:
            if q is None:
                continue
            d["queries"] += 1
            d["query_tag_sum"] += len(q)
            query_counts.update(q)
    total = len(overall)
    names = list(order or []) + sorted(set(per) - set(order or []))
    rows = []
    for name in names:
        if name not in per:
            continue
        d = per[name]
        tagged = d["records"] - d["untagged"]
        rows.append(
            {
                "dataset": name,
                "records": d["records"],
                "records_tagged": tagged,
                "records_untagged": d["untagged"],
                "queries_tagged": d["queries"],
                "tags": len(d["tags"]),
                "coverage": len(d["tags"]) / total if total else 0.0,
                "complexity": d["tag_sum"] / tagged if tagged else float("nan"),
                "tags_per_query": d["query_tag_sum"] / d["queries"] if d["queries"] else float("nan"),
            }
        )
    return rows, {"overall": overall, "queries": query_counts, "per_dataset": {k: v["tags"] for k, v in per.items()}}


def correlations(rows: Sequence[dict], score_name: str) -> list[dict]:
    """Pearson and Spearman correlation of each measure with the ``score`` column (NaN rows skipped)."""
    from scipy import stats

    out = []
    for m in MEASURES:
        pairs = [
            (float(r[m]), float(r["score"]))
            for r in rows
            if r.get("score") not in (None, "") and not math.isnan(float(r[m]))
        ]
        row = {"measure": m, "score": score_name, "datasets": len(pairs)}
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) < MIN_DATASETS_FOR_CORRELATION:
            row["note"] = f"needs scores for >= {MIN_DATASETS_FOR_CORRELATION} datasets"
        elif len(set(xs)) < 2 or len(set(ys)) < 2:
            row["note"] = "a constant column has no correlation"
        else:
            pr = stats.pearsonr(xs, ys)
            sr = stats.spearmanr(xs, ys)
            row.update(
                pearson_r=float(pr.statistic),
                pearson_p=float(pr.pvalue),
                spearman_rho=float(sr.statistic),
                spearman_p=float(sr.pvalue),
                note="",
            )
        out.append(row)
    return out


def tables(
    normalized: str | Path,
    out_datasets: str | Path,
    out_frequency: str | Path,
    out_top: str | Path,
    out_coverage: str | Path,
    out_correlation: str | Path,
    *,
    names: dict[str, str] | None = None,
    scores: dict[str, float] | None = None,
    score_name: str = "AlpacaEval",
    top_k: int = 10,
    datasets: Sequence[str] | None = None,
) -> dict:
    """Write the analysis tables from the normalized records; return a summary."""
    names, scores = names or {}, scores or {}
    unknown = sorted(set(scores) - set(datasets or scores))
    if datasets is not None and unknown:
        log.warning("scores given for datasets not analysed (ignored): %s", ", ".join(unknown))
    records = list(_read(normalized))
    if datasets is not None:
        records = [r for r in records if r["dataset"] in set(datasets)]
    if not records:
        raise InputError(normalized, "no records to analyse")
    rows, counts = dataset_measures(records, datasets)
    for r in rows:
        r["name"] = names.get(r["dataset"], r["dataset"])
        r["score"] = scores.get(r["dataset"], "")
    columns = [
        "dataset",
        "name",
        "records",
        "records_tagged",
        "records_untagged",
        "queries_tagged",
        "tags",
        "coverage",
        "complexity",
        "tags_per_query",
        "score",
    ]
    write_tsv(out_datasets, rows, columns)

    per = counts["per_dataset"]
    n_tagged = sum(r["records_tagged"] for r in rows)
    freq_rows = [
        {
            "rank": i,
            "tag": tag,
            "records": c,
            "queries": counts["queries"][tag],
            "share_of_records": c / n_tagged if n_tagged else 0.0,
            "datasets": sum(1 for d in per.values() if tag in d),
        }
        for i, (tag, c) in enumerate(sorted(counts["overall"].items(), key=lambda tc: (-tc[1], tc[0])), start=1)
    ]
    write_tsv(out_frequency, freq_rows, ["rank", "tag", "records", "queries", "share_of_records", "datasets"])

    top_rows = []
    for r in rows:
        ranked = sorted(per[r["dataset"]].items(), key=lambda tc: (-tc[1], tc[0]))[:top_k]
        for i, (tag, c) in enumerate(ranked, start=1):
            share = c / r["records_tagged"] if r["records_tagged"] else 0.0
            top_rows.append({"dataset": r["dataset"], "rank": i, "tag": tag, "records": c, "share": share})
    write_tsv(out_top, top_rows, ["dataset", "rank", "tag", "records", "share"])

    # coverage[i][j]: the share of dataset j's tags that dataset i also has (Figure 2b's heat-map)
    order = [r["dataset"] for r in rows]
    cov_rows = []
    for i in order:
        ti = set(per[i])
        row = {"dataset": i}
        for j in order:
            tj = set(per[j])
            row[j] = len(ti & tj) / len(tj) if tj else float("nan")
        cov_rows.append(row)
    write_tsv(out_coverage, cov_rows, ["dataset", *order])

    corr = correlations(rows, score_name)
    write_tsv(
        out_correlation,
        corr,
        ["measure", "score", "datasets", "pearson_r", "pearson_p", "spearman_rho", "spearman_p", "note"],
    )
    return {
        "datasets": len(rows),
        "records": len(records),
        "tags": len(counts["overall"]),
        "with_score": sum(1 for r in rows if r["score"] != ""),
        "correlation": {c["measure"]: c.get("spearman_rho") for c in corr},
    }


# --------------------------------------------------------------------------------------------- figures


def _save(fig, stem: str | Path) -> list[str]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(path.stem + ".tmp." + ext)
        fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        tmp.replace(path)
        out.append(str(path))
    return out


def _num(x: str) -> float:
    return float(x) if x not in ("", None) else float("nan")


def figures(
    datasets_tsv: str | Path,
    frequency_tsv: str | Path,
    top_tsv: str | Path,
    coverage_tsv: str | Path,
    outdir: str | Path,
    *,
    score_name: str = "AlpacaEval",
    top_datasets: int = 12,
) -> dict:
    """Draw the analysis figures (PNG and PDF) from the tables alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    outdir = Path(outdir)
    ds = read_tsv(datasets_tsv)
    written: list[str] = []

    # Figure 2a: diversity (coverage) against complexity (average tags), coloured by the downstream score
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    x = np.array([_num(r["complexity"]) for r in ds])
    y = np.array([100 * _num(r["coverage"]) for r in ds])
    s = np.array([_num(r.get("score", "")) for r in ds])
    has = ~np.isnan(s)
    if has.any():
        sc = ax.scatter(x[has], y[has], c=s[has], cmap="viridis", s=60, edgecolors="k", zorder=3)
        fig.colorbar(sc, ax=ax, label=score_name)
    if (~has).any():
        ax.scatter(
            x[~has],
            y[~has],
            c="lightgrey",
            s=60,
            edgecolors="k",
            zorder=2,
            label=f"no {score_name} score" if has.any() else None,
        )
    for xi, yi, r in zip(x, y, ds, strict=True):
        ax.annotate(r.get("name") or r["dataset"], (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("complexity: average tags per sample")
    ax.set_ylabel("diversity: coverage of all tags (%)")
    ax.set_title("Datasets by diversity and complexity")
    ax.grid(alpha=0.3)
    if has.any() and (~has).any():
        ax.legend(loc="best", fontsize=8)
    written += _save(fig, outdir / "analysis_diversity_complexity")
    plt.close(fig)

    # tag frequency long tail: rank against number of records (log-log)
    freq = read_tsv(frequency_tsv)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    counts = np.array([_num(r["records"]) for r in freq])
    if counts.size:
        ax.loglog(np.arange(1, counts.size + 1), counts, marker=".", linestyle="none", markersize=3)
    ax.set_xlabel("tag rank")
    ax.set_ylabel("records carrying the tag")
    ax.set_title(f"Tag frequency ({counts.size} normalized tags)")
    ax.grid(alpha=0.3, which="both")
    written += _save(fig, outdir / "analysis_tag_long_tail")
    plt.close(fig)

    # top tags per dataset: one small bar chart each
    top = read_tsv(top_tsv)
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in top:
        by_ds[r["dataset"]].append(r)
    names = {r["dataset"]: r.get("name") or r["dataset"] for r in ds}
    shown = [r["dataset"] for r in ds if r["dataset"] in by_ds][:top_datasets]
    cols = min(3, max(1, len(shown)))
    rows_n = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 2.8 * rows_n), squeeze=False)
    for ax, name in zip(axes.ravel(), shown, strict=False):
        items = by_ds[name][::-1]
        ax.barh([r["tag"][:40] for r in items], [100 * _num(r["share"]) for r in items], color="tab:blue")
        ax.set_title(names.get(name, name), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("% of samples", fontsize=7)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    written += _save(fig, outdir / "analysis_top_tags")
    plt.close(fig)

    # Figure 2b: tag coverage between datasets
    cov = read_tsv(coverage_tsv)
    order = [r["dataset"] for r in cov]
    mat = np.array([[_num(r[j]) for j in order] for r in cov]) if cov else np.zeros((0, 0))
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * max(len(order), 4), 0.8 + 0.5 * max(len(order), 4)))
    im = ax.imshow(100 * mat, cmap="Blues", vmin=0, vmax=100)
    labels = [names.get(d, d) for d in order]
    ax.set_xticks(range(len(order)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    for i in range(len(order)):
        for j in range(len(order)):
            if not math.isnan(mat[i, j]):
                ax.text(
                    j,
                    i,
                    f"{100 * mat[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if mat[i, j] > 0.6 else "black",
                )
    ax.set_xlabel("dataset whose tags are covered")
    ax.set_ylabel("covering dataset")
    fig.colorbar(im, ax=ax, label="% of column dataset's tags")
    ax.set_title("Tag coverage between datasets")
    written += _save(fig, outdir / "analysis_coverage_heatmap")
    plt.close(fig)
    return {"figures": written}


# --------------------------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    p = sub.add_parser(
        "analysis",
        help="per-dataset diversity and complexity, tag frequencies, Figure 2",
        description="Preliminary analysis (paper §3.4): tables from the normalized tags, figures from the tables.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = acts.add_parser("tables", help="write the analysis tables from results/normalize/normalized.jsonl")
    t.add_argument("--normalized", required=True, help="normalized records JSONL")
    t.add_argument("--datasets", nargs="*", default=None, help="datasets to analyse, in order (default: all)")
    t.add_argument("--names", default="{}", help="JSON map dataset -> display name")
    t.add_argument("--scores", default="{}", help="JSON map dataset -> downstream score")
    t.add_argument("--score-name", default="AlpacaEval", help="name of the downstream score")
    t.add_argument("--top-k", type=int, default=10, help="top tags per dataset")
    t.add_argument("--out-datasets", required=True, help="per-dataset measures TSV")
    t.add_argument("--out-frequency", required=True, help="tag frequency TSV")
    t.add_argument("--out-top", required=True, help="top tags per dataset TSV")
    t.add_argument("--out-coverage", required=True, help="dataset x dataset tag coverage TSV")
    t.add_argument("--out-correlation", required=True, help="measure x score correlation TSV")
    t.set_defaults(
        func=lambda a: tables(
            a.normalized,
            a.out_datasets,
            a.out_frequency,
            a.out_top,
            a.out_coverage,
            a.out_correlation,
            names=json.loads(a.names),
            scores=json.loads(a.scores),
            score_name=a.score_name,
            top_k=a.top_k,
            datasets=a.datasets or None,
        )
    )
    f = acts.add_parser("figures", help="draw the analysis figures from the tables")
    f.add_argument("--datasets-tsv", required=True)
    f.add_argument("--frequency-tsv", required=True)
    f.add_argument("--top-tsv", required=True)
    f.add_argument("--coverage-tsv", required=True)
    f.add_argument("--outdir", required=True, help="folder for the PNG and PDF files")
    f.add_argument("--score-name", default="AlpacaEval")
    f.set_defaults(
        func=lambda a: figures(
            a.datasets_tsv, a.frequency_tsv, a.top_tsv, a.coverage_tsv, a.outdir, score_name=a.score_name
        )
    )
