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

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import gc_paused, iter_jsonl_batches, read_tsv, write_tsv
from .records import NORMALIZED

log = logging.getLogger(__name__)

MEASURES = ("tags", "coverage", "complexity", "tags_per_query")
MIN_DATASETS_FOR_CORRELATION = 3


def _read(path: str | Path):
    for batch in iter_jsonl_batches(path):
        for line, rec in batch:
            yield NORMALIZED.checked(path, line, rec)


class TagCounts:
    """Tag counts over the analysed records, as arrays over one vocabulary ``names`` (first-seen order).

    ``per_dataset[d, t]``: records of dataset ``order[d]`` carrying tag ``t`` (tagged records only);
    ``queries[t]``: tagged queries carrying ``t``. Built in one pass over the records, then numpy only.
    """

    def __init__(self, names: list[str], datasets: list[str], per_dataset, queries):
        self.names, self.datasets, self.per_dataset, self.queries = names, datasets, per_dataset, queries
        self.overall = per_dataset.sum(axis=0)

    def ranked(self, counts) -> list[int]:
        """Tag ids with a count > 0, by count descending, then tag name (Python string order)."""
        alpha = np.empty(len(self.names), dtype=np.int64)
        alpha[sorted(range(len(self.names)), key=self.names.__getitem__)] = np.arange(len(self.names))
        ids = np.flatnonzero(counts > 0)
        return ids[np.lexsort((alpha[ids], -counts[ids]))].tolist()


def _accumulate(records, keep: set[str] | None = None):
    """One pass over the records: flat tag lists and per-record/per-query lengths (the only Python loop)."""
    ds_index: dict[str, int] = {}
    rec_ds: list[int] = []
    untagged: list[bool] = []
    tag_flat: list[str] = []
    tag_len: list[int] = []
    q_flat: list[str] = []
    q_len: list[int] = []
    q_rec: list[int] = []
    for rec in records:
        name = rec["dataset"]
        if keep is not None and name not in keep:
            continue
        r = len(rec_ds)
        rec_ds.append(ds_index.setdefault(name, len(ds_index)))
        if rec.get("status") == "untagged":
            untagged.append(True)
            tag_len.append(0)
            continue
        untagged.append(False)
        tags = rec["tags"]
        tag_flat.extend(tags)
        tag_len.append(len(tags))
        for q in rec.get("queries") or [tags]:
            if q is None:
                continue
            q_flat.extend(q)
            q_len.append(len(q))
            q_rec.append(r)
    return ds_index, rec_ds, untagged, tag_flat, tag_len, q_flat, q_len, q_rec


def _measures(acc, order: Sequence[str] | None) -> tuple[list[dict], TagCounts]:
    ds_index, rec_ds, untagged, tag_flat, tag_len, q_flat, q_len, q_rec = acc
    import pandas as pd

    flat = np.empty(len(tag_flat) + len(q_flat), dtype=object)
    flat[: len(tag_flat)] = tag_flat
    flat[len(tag_flat) :] = q_flat
    codes, vocab = pd.factorize(flat)  # one vocabulary, first-seen order
    t_codes, q_codes = codes[: len(tag_flat)].astype(np.int64), codes[len(tag_flat) :].astype(np.int64)
    n_ds, n_tags = len(ds_index), len(vocab)
    rec_ds_a = np.asarray(rec_ds, dtype=np.int64)
    untagged_a = np.asarray(untagged, dtype=bool)
    tag_len_a = np.asarray(tag_len, dtype=np.int64)
    q_ds = rec_ds_a[np.asarray(q_rec, dtype=np.int64)]
    q_len_a = np.asarray(q_len, dtype=np.int64)

    records = np.bincount(rec_ds_a, minlength=n_ds)
    n_untagged = np.bincount(rec_ds_a[untagged_a], minlength=n_ds)
    tag_sum = np.bincount(np.repeat(rec_ds_a, tag_len_a), minlength=n_ds)
    queries = np.bincount(q_ds, minlength=n_ds)
    query_tag_sum = np.bincount(np.repeat(q_ds, q_len_a), minlength=n_ds)
    entry_ds = np.repeat(rec_ds_a, tag_len_a)
    per = np.bincount(entry_ds * n_tags + t_codes, minlength=n_ds * n_tags).reshape(n_ds, n_tags)
    q_counts = np.bincount(q_codes, minlength=n_tags)
    distinct = (per > 0).sum(axis=1)
    total = int((per.sum(axis=0) > 0).sum())

    names = list(order or []) + sorted(set(ds_index) - set(order or []))
    rows = []
    for name in names:
        if name not in ds_index:
            continue
        d = ds_index[name]
        n_rec, n_unt = int(records[d]), int(n_untagged[d])
        tagged, n_q, n_d = n_rec - n_unt, int(queries[d]), int(distinct[d])
        rows.append(
            {
                "dataset": name,
                "records": n_rec,
                "records_tagged": tagged,
                "records_untagged": n_unt,
                "queries_tagged": n_q,
                "tags": n_d,
                "coverage": n_d / total if total else 0.0,
                "complexity": int(tag_sum[d]) / tagged if tagged else float("nan"),
                "tags_per_query": int(query_tag_sum[d]) / n_q if n_q else float("nan"),
            }
        )
    by_order = [ds_index[r["dataset"]] for r in rows]
    counts = TagCounts(vocab.tolist(), [r["dataset"] for r in rows], per[by_order], q_counts)
    return rows, counts


def dataset_measures(records: Sequence[dict], order: Sequence[str] | None = None) -> tuple[list[dict], TagCounts]:
    """Per-dataset rows (see the module docstring) and the tag counts (:class:`TagCounts`) they were built from."""
    return _measures(_accumulate(records), order)


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
    """Write the analysis tables from the normalized records (results/normalize/normalized.jsonl).

    Args:
        normalized: normalized records JSONL
        out_datasets: per-dataset measures TSV to write
        out_frequency: tag frequency TSV to write
        out_top: top tags per dataset TSV to write
        out_coverage: dataset x dataset tag coverage TSV to write
        out_correlation: measure x score correlation TSV to write
        names: JSON map dataset -> display name
        scores: JSON map dataset -> downstream score
        score_name: name of the downstream score
        top_k: top tags per dataset
        datasets: datasets to analyse, in order (default: all)
    """
    names, scores = names or {}, scores or {}
    unknown = sorted(set(scores) - set(datasets or scores))
    if datasets is not None and unknown:
        log.warning("scores given for datasets not analysed (ignored): %s", ", ".join(unknown))
    with gc_paused():
        rows, counts = _measures(
            _accumulate(_read(normalized), set(datasets) if datasets is not None else None), datasets
        )
    if not rows:
        raise InputError(normalized, "no records to analyse")
    n_records = sum(r["records"] for r in rows)
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

    per = counts.per_dataset  # datasets (rows' order) x tags
    n_tagged = sum(r["records_tagged"] for r in rows)
    in_datasets = (per > 0).sum(axis=0).tolist()
    overall = counts.overall.tolist()
    q_counts = counts.queries.tolist()
    freq_rows = [
        {
            "rank": i,
            "tag": counts.names[t],
            "records": overall[t],
            "queries": q_counts[t],
            "share_of_records": overall[t] / n_tagged if n_tagged else 0.0,
            "datasets": in_datasets[t],
        }
        for i, t in enumerate(counts.ranked(counts.overall), start=1)
    ]
    write_tsv(out_frequency, freq_rows, ["rank", "tag", "records", "queries", "share_of_records", "datasets"])

    top_rows = []
    for d, r in enumerate(rows):
        row_counts = per[d]
        for i, t in enumerate(counts.ranked(row_counts)[:top_k], start=1):
            c = int(row_counts[t])
            share = c / r["records_tagged"] if r["records_tagged"] else 0.0
            top_rows.append({"dataset": r["dataset"], "rank": i, "tag": counts.names[t], "records": c, "share": share})
    write_tsv(out_top, top_rows, ["dataset", "rank", "tag", "records", "share"])

    # coverage[i][j]: the share of dataset j's tags that dataset i also has (Figure 2b's heat-map)
    order = [r["dataset"] for r in rows]
    present = (per > 0).astype(np.int64)
    shared = (present @ present.T).tolist()
    sizes = present.sum(axis=1).tolist()
    cov_rows = []
    for i, name in enumerate(order):
        row = {"dataset": name}
        for j, other in enumerate(order):
            row[other] = shared[i][j] / sizes[j] if sizes[j] else float("nan")
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
        "records": n_records,
        "tags": int((counts.overall > 0).sum()),
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
    """Draw the analysis figures (PNG and PDF) from the tables alone.

    Args:
        datasets_tsv: per-dataset measures TSV (from 'instag analysis tables')
        frequency_tsv: tag frequency TSV
        top_tsv: top tags per dataset TSV
        coverage_tsv: dataset x dataset tag coverage TSV
        outdir: folder for the PNG and PDF files
        score_name: name of the downstream score
        top_datasets: datasets shown in the coverage heat-map
    """
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
    from .report.style import annotate_points  # labels kept apart (two datasets can sit on one spot)

    annotate_points(ax, list(x), list(y), [r.get("name") or r["dataset"] for r in ds])
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
