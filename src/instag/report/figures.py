"""The report's figures, each drawn by one small function from one table (PNG and PDF, byte-stable).

| figure                     | table                               | paper                                  |
|----------------------------|-------------------------------------|----------------------------------------|
| diversity_complexity       | tables/analysis_datasets.tsv        | Figure 2a (score as colour)            |
| coverage_heatmap           | tables/dataset_coverage.tsv         | Figure 2b                              |
| normalization_funnel       | tables/normalization_steps.tsv      | §3.2 counts after each step            |
| sampling_plane             | tables/samples.tsv                  | §4.3 the sweeps' design (coverage, tags)|
| sweeps                     | tables/sweeps.tsv (report's join)   | Figure 4a and 4b                        |
| mtbench_radar              | tables/mt_bench_categories.tsv      | Figure 3 (per-category MT-Bench)        |

Every function takes the table path, an output stem and the style dict (``report.style``) and returns the paths
it wrote; a table with no usable row still gives a figure that says so, so the rule's outputs always exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..io import read_tsv
from .results import MTBENCH_CATEGORIES, num
from .style import annotate_points, figure_style, save

ABLATION_MARKERS = {"complexity": "o", "diversity": "s", "size": "^", "random": "X"}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def diversity_complexity(table, stem, style=None, score_name: str = "AlpacaEval") -> list[str]:
    """Figure 2a: datasets by complexity (x) and diversity (y), coloured by the downstream score where known."""
    rows = read_tsv(table)
    with figure_style(style) as (plt, sns, s):
        fig, ax = plt.subplots(figsize=(s["width"], s["height"]))
        xs = [num(r.get("complexity")) or 0.0 for r in rows]
        ys = [100 * (num(r.get("coverage")) or 0.0) for r in rows]
        scores = [num(r.get("score")) for r in rows]
        has = [i for i, v in enumerate(scores) if v is not None]
        no = [i for i, v in enumerate(scores) if v is None]
        if has:
            sc = ax.scatter(
                [xs[i] for i in has],
                [ys[i] for i in has],
                c=[scores[i] for i in has],
                cmap=s["cmap"],
                s=70,
                edgecolors="k",
                zorder=3,
            )
            fig.colorbar(sc, ax=ax, label=score_name)
        if no:
            ax.scatter(
                [xs[i] for i in no],
                [ys[i] for i in no],
                color="0.8",
                s=70,
                edgecolors="k",
                zorder=2,
                label=f"no {score_name}",
            )
            ax.legend(loc="best", fontsize="small")
        if rows:
            annotate_points(ax, xs, ys, [r.get("name") or r["dataset"] for r in rows])
        else:
            _empty(ax, "no dataset analysed")
        ax.set_xlabel("complexity: average tags per sample")
        ax.set_ylabel("diversity: coverage of all tags (%)")
        ax.set_title("Datasets by diversity and complexity (cf. paper Figure 2a)")
        return save(fig, stem, s)


def coverage_heatmap(table, stem, style=None) -> list[str]:
    """Figure 2b: the share of each column dataset's tags that each row dataset also carries."""
    rows = read_tsv(table)
    order = [r["dataset"] for r in rows]
    with figure_style(style) as (plt, sns, s):
        n = max(len(order), 3)
        fig, ax = plt.subplots(figsize=(1.6 + 0.6 * n, 1.2 + 0.5 * n))
        if rows:
            import numpy as np

            mat = np.array(
                [[100 * (num(r.get(c)) if num(r.get(c)) is not None else math.nan) for c in order] for r in rows]
            )
            sns.heatmap(
                mat,
                ax=ax,
                cmap="Blues",
                vmin=0,
                vmax=100,
                annot=len(order) <= 16,
                fmt=".0f",
                annot_kws={"fontsize": 7},
                xticklabels=order,
                yticklabels=order,
                cbar_kws={"label": "% of the column dataset's tags"},
                square=True,
            )
            ax.set_xlabel("dataset whose tags are covered")
            ax.set_ylabel("covering dataset")
            plt.setp(ax.get_xticklabels(), rotation=60, ha="right")
        else:
            _empty(ax, "no dataset analysed")
        ax.set_title("Tag coverage between datasets (cf. Figure 2b)")
        return save(fig, stem, s)


def normalization_funnel(table, stem, style=None) -> list[str]:
    """Tags left after each normalization step, this run beside the paper's counts (log scale)."""
    rows = read_tsv(table)
    with figure_style(style) as (plt, sns, s):
        fig, ax = plt.subplots(figsize=(s["width"], s["height"] * 0.8))
        steps = [r["step"] for r in rows]
        ours = [num(r.get("tags")) for r in rows]
        paper = [num(r.get("paper_tags")) for r in rows]
        pal = sns.color_palette(s["palette"])
        if rows:
            x = list(range(len(steps)))
            ax.plot(x, [v or math.nan for v in ours], marker="o", color=pal[0], label="this run")
            if any(p is not None for p in paper):
                ax.plot(
                    x,
                    [p if p is not None else math.nan for p in paper],
                    marker="s",
                    ls="--",
                    color=pal[1],
                    label="paper",
                )
            for xi, v in zip(x, ours, strict=True):
                if v is not None:
                    ax.annotate(
                        f"{v:,.0f}", (xi, v), xytext=(0, -12), textcoords="offset points", ha="center", fontsize=8
                    )
            ax.set_xticks(x, steps)
            ax.set_yscale("log")
            ax.legend(fontsize="small")
        else:
            _empty(ax, "no normalization run")
        ax.set_xlabel("after step")
        ax.set_ylabel("distinct tags (log scale)")
        ax.set_title("Tag normalization funnel (cf. paper §3.2)")
        return save(fig, stem, s)


def sampling_plane(table, stem, style=None) -> list[str]:
    """Every sampled set in the coverage x tags-per-query plane, one marker per ablation, labels kept apart."""
    rows = read_tsv(table)
    with figure_style(style) as (plt, sns, s):
        fig, ax = plt.subplots(figsize=(s["width"], s["height"]))
        pal = sns.color_palette(s["palette"])
        xs_all, ys_all, labels = [], [], []
        for k, (ablation, marker) in enumerate(ABLATION_MARKERS.items()):
            sub = [r for r in rows if r.get("ablation") == ablation]
            if not sub:
                continue
            xs = [100 * (num(r.get("coverage")) or 0.0) for r in sub]
            ys = [num(r.get("avg_tags_per_query")) or 0.0 for r in sub]
            ax.scatter(xs, ys, marker=marker, color=pal[k % len(pal)], s=50, label=f"{ablation} ({len(sub)})", zorder=3)
            xs_all += xs
            ys_all += ys
            labels += [r["variant"] for r in sub]
        if rows:
            annotate_points(ax, xs_all, ys_all, labels, fontsize=7)
            ax.legend(fontsize="small")
        else:
            _empty(ax, "no sampled set")
        ax.set_xlabel("tag coverage of the pool's tag set (%)")
        ax.set_ylabel("average tags per query")
        ax.set_title("Sampled sets: diversity vs complexity")
        return save(fig, stem, s)


def sweeps(table, stem, style=None) -> list[str]:
    """Figure 4: MT-Bench against tags per query (complexity sweep) and against coverage (diversity sweep).

    Where no MT-Bench score exists yet the panels show the sweep's achieved values and say so.
    """
    rows = read_tsv(table)
    with figure_style(style) as (plt, sns, s):
        fig, axes = plt.subplots(1, 2, figsize=(s["width"] * 1.6, s["height"] * 0.8), squeeze=False)
        pal = sns.color_palette(s["palette"])
        for k, (ablation, field, xlabel) in enumerate(
            (
                ("complexity", "avg_tags_per_query", "average tags per query"),
                ("diversity", "coverage", "tag coverage (%)"),
            )
        ):
            ax = axes[0][k]
            sub = [r for r in rows if r.get("ablation") == ablation]
            scale = 100 if field == "coverage" else 1
            pts = [
                (scale * (num(r.get(field)) or 0.0), num(r.get("mt_bench")), num(r.get("mt_bench_std"))) for r in sub
            ]
            scored = [(x, y, e) for x, y, e in pts if y is not None]
            if scored:
                scored.sort()
                ax.errorbar(
                    [p[0] for p in scored],
                    [p[1] for p in scored],
                    yerr=[p[2] or 0.0 for p in scored],
                    marker=ABLATION_MARKERS[ablation],
                    color=pal[k],
                    capsize=3,
                )
                base = [num(r.get("mt_bench")) for r in rows if r.get("ablation") == "random" and r.get("main") == "1"]
                if base and base[0] is not None:
                    ax.axhline(base[0], ls="--", color="0.4", lw=1, label="random baseline")
                    ax.legend(fontsize="small")
                ax.set_ylabel("MT-Bench score")
            elif sub:
                ax.plot(
                    [p[0] for p in pts], [0.0] * len(pts), ls="none", marker=ABLATION_MARKERS[ablation], color=pal[k]
                )
                ax.set_yticks([])
                ax.text(
                    0.5,
                    0.6,
                    "MT-Bench not run:\nsubsets shown at their achieved values",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=8,
                    color="0.4",
                )
            else:
                _empty(ax, f"no {ablation} sweep")
            ax.set_xlabel(xlabel)
            ax.set_title(f"{ablation} sweep ({len(sub)} subsets)")
        fig.suptitle("Decoupled sweeps (cf. paper Figure 4)")
        fig.tight_layout()
        return save(fig, stem, s)


def mtbench_radar(table, stem, style=None) -> list[str]:
    """Figure 3: per-category MT-Bench scores, one closed polygon per model, on a radar chart."""
    import numpy as np

    rows = read_tsv(table)
    long = []
    for r in rows:
        model = r.get("model") or f"{r.get('ablation', '')}/{r.get('variant', '')}"
        if "category" in r:
            long.append((model, r["category"], num(r.get("overall", r.get("score")))))
        else:
            long += [(model, c, num(r.get(c))) for c in MTBENCH_CATEGORIES if c in r]
    cats = [c for c in MTBENCH_CATEGORIES if any(x[1] == c for x in long)]
    cats += sorted({x[1] for x in long} - set(cats))
    models = list(dict.fromkeys(x[0] for x in long))
    with figure_style(style) as (plt, sns, s):
        fig = plt.figure(figsize=(s["width"], s["width"]))
        ax = fig.add_subplot(projection="polar")
        if cats and models:
            pal = sns.color_palette(s["palette"], max(len(models), 1))
            angles = np.linspace(0, 2 * np.pi, len(cats), endpoint=False).tolist()
            for m, colour in zip(models, pal, strict=False):
                score = {c: v for mm, c, v in long if mm == m}
                vals = [score.get(c) if score.get(c) is not None else 0.0 for c in cats]
                ax.plot(angles + angles[:1], vals + vals[:1], color=colour, lw=1.5, label=m)
                ax.fill(angles + angles[:1], vals + vals[:1], color=colour, alpha=0.08)
            ax.set_xticks(angles, cats)
            ax.set_ylim(0, 10)
            ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize="small")
        else:
            _empty(ax, "no MT-Bench category scores")
        ax.set_title("MT-Bench per category (cf. paper Figure 3)")
        return save(fig, stem, s)


#: figure name -> (drawing function, the table it reads, relative to results/).
FIGURES: dict[str, tuple[Callable, str]] = {
    "diversity_complexity": (diversity_complexity, "tables/analysis_datasets.tsv"),
    "coverage_heatmap": (coverage_heatmap, "tables/dataset_coverage.tsv"),
    "normalization_funnel": (normalization_funnel, "tables/normalization_steps.tsv"),
    "sampling_plane": (sampling_plane, "tables/samples.tsv"),
    "sweeps": (sweeps, "tables/sweeps.tsv"),
    "mtbench_radar": (mtbench_radar, "tables/mt_bench_categories.tsv"),
}


def draw(name: str, table, stem, style=None, **kwargs) -> list[str]:
    fn, _ = FIGURES[name]
    return fn(table, stem, style, **kwargs)
