"""Stage actions: build one variant, gather the statistics into samples.tsv, draw the figure."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import InstagError
from ..io import atomic_write, read_json, read_tsv, write_json, write_tsv
from ..records import SAMPLE
from .algorithms import complexity_first, constrained, uniform_random
from .pool import ABLATIONS, load_pool

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- stage actions


def select(
    pool_path: str | Path,
    ablation: str,
    variant: str,
    size: int,
    out: str | Path,
    stats: str | Path,
    coverage: float | None = None,
    complexity: float | None = None,
    seed: int = 0,
    tol_coverage: float = 0.01,
    tol_complexity: float = 0.05,
) -> dict:
    """Build one variant of one ablation; write its records and statistics; return the statistics.

    complexity, diversity: :func:`constrained` with both targets (fails, naming what is reachable, when off by
    more than the tolerance); size: :func:`complexity_first` (Algorithm 1); random: :func:`uniform_random`.

    Args:
        pool_path: pool.jsonl from 'instag sampling pool'
        ablation: which ablation the variant belongs to
        variant: variant name (recorded in the statistics)
        size: number of queries
        out: sample JSONL to write
        stats: statistics JSON to write
        coverage: target coverage of the pool's tags (complexity, diversity)
        complexity: target mean tags per query (complexity, diversity)
        seed: seed of tie-breaking and random draws
        tol_coverage: allowed |coverage - target|
        tol_complexity: allowed |tags per query - target|
    """
    if ablation not in ABLATIONS:
        raise InstagError(f"unknown ablation '{ablation}' (known: {', '.join(ABLATIONS)})")
    pool = load_pool(pool_path)
    targets: dict = {"size": size}
    info: dict = {}
    if ablation in ("complexity", "diversity"):
        if coverage is None or complexity is None:
            raise InstagError(f"ablation '{ablation}' needs both a coverage and a complexity target")
        targets.update(coverage=coverage, avg_tags_per_query=complexity)
        selection, info = constrained(pool, size, coverage, complexity, seed, tol_coverage, tol_complexity)
        method = "constrained"
    elif ablation == "size":
        selection, info = complexity_first(pool, size, seed)
        method = "complexity_first"
    else:
        selection = uniform_random(pool, size, seed)
        method = "uniform_random"
    m = pool.measure(selection)
    result = {
        "ablation": ablation,
        "variant": variant,
        "method": method,
        "seed": seed,
        "target": targets,
        "tolerance": {"coverage": tol_coverage, "avg_tags_per_query": tol_complexity}
        if ablation in ("complexity", "diversity")
        else None,
        **{k: m[k] for k in ("size", "tags_covered", "coverage", "avg_tags_per_query", "composition")},
        "pool": {"queries": pool.size, "tags": pool.n_tags},
        "facts": info,
    }
    SAMPLE.write(
        out,
        (
            {
                "id": pool.ids[i],
                "dataset": pool.dataset_names[pool.dataset_codes[i]],
                "tags": [pool.tag_names[t] for t in pool.tags_of(i)],
            }
            for i in selection
        ),
    )
    write_json(stats, result)
    log.info(
        "%s/%s: %d queries, coverage %.4f, %.3f tags per query",
        ablation,
        variant,
        m["size"],
        m["coverage"],
        m["avg_tags_per_query"],
    )
    return result


def _target_text(s: dict) -> str:
    t = s["target"]
    if s["ablation"] == "complexity":
        return f"tags={t['avg_tags_per_query']:g} cov={t['coverage']:g}"
    if s["ablation"] == "diversity":
        return f"cov={t['coverage']:g} tags={t['avg_tags_per_query']:g}"
    return f"n={t['size']}"


def summarize(stats_files: Sequence[str | Path], out: str | Path) -> list[dict]:
    """Gather per-variant statistics into samples.tsv: one row per variant, ablations in a fixed order.

    Args:
        stats_files: statistics JSON files from 'instag sampling select'
        out: samples.tsv to write
    """
    stats = [read_json(p) for p in stats_files]
    stats.sort(
        key=lambda s: (
            ABLATIONS.index(s["ablation"]),
            s["target"].get("avg_tags_per_query", 0),
            s["target"].get("coverage", 0),
            s["target"]["size"],
            s["variant"],
        )
    )
    datasets: list[str] = []
    for s in stats:
        datasets.extend(d for d in s["composition"] if d not in datasets)
    rows = []
    for s in stats:
        t, tol = s["target"], s["tolerance"] or {}
        row = {
            "ablation": s["ablation"],
            "variant": s["variant"],
            "method": s["method"],
            "target": _target_text(s),
            "target_size": t["size"],
            "target_coverage": t.get("coverage", ""),
            "target_avg_tags": t.get("avg_tags_per_query", ""),
            "tol_coverage": tol.get("coverage", ""),
            "tol_avg_tags": tol.get("avg_tags_per_query", ""),
            "size": s["size"],
            "tags_covered": s["tags_covered"],
            "pool_tags": s["pool"]["tags"],
            "coverage": round(s["coverage"], 6),
            "avg_tags_per_query": round(s["avg_tags_per_query"], 6),
            "seed": s["seed"],
        }
        for d in datasets:
            row[f"n_{d}"] = s["composition"].get(d, 0)
        rows.append(row)
    base = ["ablation", "variant", "method", "target", "target_size", "target_coverage", "target_avg_tags"]
    base += ["tol_coverage", "tol_avg_tags", "size", "tags_covered", "pool_tags", "coverage", "avg_tags_per_query"]
    write_tsv(out, rows, base + ["seed"] + [f"n_{d}" for d in datasets])
    return rows


#: Marker and colour per ablation in the figure.
_STYLE = {
    "complexity": ("o", "tab:blue"),
    "diversity": ("s", "tab:orange"),
    "size": ("^", "tab:green"),
    "random": ("x", "tab:gray"),
}


def plot(table: str | Path, png: str | Path, pdf: str | Path) -> dict:
    """Every variant of samples.tsv in the coverage x complexity plane (PNG and PDF, byte-stable).

    Args:
        table: samples.tsv
        png: PNG to write
        pdf: PDF to write
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_tsv(table)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    labelled: list[tuple] = []
    for ablation in ABLATIONS:
        sub = [r for r in rows if r["ablation"] == ablation]
        if not sub:
            continue
        x = [100 * float(r["coverage"]) for r in sub]
        y = [float(r["avg_tags_per_query"]) for r in sub]
        marker, colour = _STYLE[ablation]
        ax.scatter(x, y, marker=marker, color=colour, label=f"{ablation} ({len(sub)})", zorder=3)
        labelled += [(xi, yi, r["variant"], colour) for r, xi, yi in zip(sub, x, y, strict=True)]
    targets = [r for r in rows if r["target_coverage"] and r["target_avg_tags"]]
    if targets:
        ax.scatter(
            [100 * float(r["target_coverage"]) for r in targets],
            [float(r["target_avg_tags"]) for r in targets],
            marker="+",
            s=60,
            color="black",
            linewidths=0.8,
            label="sweep targets",
            zorder=4,
        )
    if labelled:  # variant labels kept apart (variants of two ablations can sit on one spot)
        from ..report.style import annotate_points

        xs, ys, names, colours = zip(*labelled, strict=True)
        annotate_points(ax, list(xs), list(ys), list(names), fontsize=6, color=list(colours))
    ax.set_xlabel("tag coverage of the pool's tag set (%)")
    ax.set_ylabel("average tags per query")
    ax.set_title("Sampled sets: diversity (coverage) vs complexity (tags per query)")
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    for path, meta in ((png, {"Software": None}), (pdf, {"CreationDate": None, "Producer": None})):
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=Path(path).suffix.lstrip("."), dpi=150, metadata=meta)
    plt.close(fig)
    return {"variants": len(rows), "png": str(png), "pdf": str(pdf)}
