"""One look for every report figure: a seaborn theme from the config's ``report.style``, byte-stable saving and
label placement that keeps labels apart (a small deterministic repel, :func:`repel`)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ..io import atomic_write

#: ``report.style`` defaults (the schema repeats them; a test keeps both equal).
DEFAULT_STYLE = {
    "theme": "whitegrid",
    "context": "paper",
    "palette": "colorblind",
    "font_scale": 1.1,
    "dpi": 150,
    "width": 6.4,
    "height": 4.8,
    "cmap": "viridis",
}

#: Fixed metadata so the same table gives the same bytes (no dates, no library versions).
METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
}


def style_of(style: dict | None) -> dict:
    s = dict(DEFAULT_STYLE)
    s.update(style or {})
    return s


@contextmanager
def figure_style(style: dict | None):
    """Matplotlib (Agg) with the seaborn theme applied for the duration; yields (plt, sns, style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    s = style_of(style)
    with matplotlib.rc_context():
        sns.set_theme(style=s["theme"], context=s["context"], palette=s["palette"], font_scale=s["font_scale"])
        matplotlib.rcParams["svg.hashsalt"] = "instag"
        matplotlib.rcParams["pdf.compression"] = 6
        try:
            yield plt, sns, s
        finally:
            plt.close("all")
            sns.reset_orig()


def save(fig, stem: str | Path, style: dict | None = None) -> list[str]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically with fixed metadata; return the paths."""
    s = style_of(style)
    stem = Path(stem)
    out = []
    for ext in ("png", "pdf"):
        path = stem.parent / f"{stem.name}.{ext}"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=ext, dpi=s["dpi"], bbox_inches="tight", metadata=METADATA[ext])
        out.append(str(path))
    return out


def _overlaps(a, b, pad: float = 1.0) -> bool:
    return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0 or b.y1 + pad < a.y0)


def label_boxes(ax, texts):
    """Display-space boxes of the labels' text alone (an annotation's own extent includes its arrow)."""
    import matplotlib.text as mtext

    renderer = ax.figure.canvas.get_renderer()
    return [mtext.Text.get_window_extent(t, renderer) for t in texts]


def any_overlap(ax, texts) -> bool:
    """Whether any two of ``texts`` overlap on the canvas (used by the tests and after repelling)."""
    boxes = label_boxes(ax, texts)
    return any(_overlaps(boxes[i], boxes[j], 0.0) for i in range(len(boxes)) for j in range(i + 1, len(boxes)))


def repel(ax, texts, max_steps: int = 60) -> None:
    """Place labels one by one (highest first), each at the smallest vertical shift (0, +d, -d, +2d, ...) where
    its box overlaps no label placed before it; d is a third of a label's height. Deterministic, one draw."""
    if len(texts) < 2:
        return
    fig = ax.figure
    fig.canvas.draw()
    boxes = label_boxes(ax, texts)
    px_per_pt = fig.dpi / 72.0
    order = sorted(range(len(texts)), key=lambda i: (-boxes[i].y0, boxes[i].x0))
    placed = []
    for i in order:
        box = boxes[i]
        step = max(box.height / 3.0, 1.0)
        for k in range(2 * max_steps + 1):
            shift = step * ((k + 1) // 2) * (1 if k % 2 else -1) if k else 0.0
            moved = box.translated(0, shift)
            if not any(_overlaps(moved, other) for other in placed):
                break
        placed.append(moved)
        if shift:
            x, y = texts[i].get_position()
            texts[i].set_position((x, y + shift / px_per_pt))


def annotate_points(ax, xs, ys, labels, *, fontsize: float = 8, color=None) -> list:
    """Label points so that no two labels overlap; returns the text artists (``color``: one, or one per label).

    Labels start 4 points up and right of their point (left of it for the rightmost points; offset-points
    annotations, so shifts are in points) and are then moved apart by :func:`repel`; a thin line joins a moved
    label to its point.
    """
    colors = list(color) if isinstance(color, (list, tuple)) else [color] * len(labels)
    return _annotate(ax, xs, ys, labels, fontsize, colors)


def _annotate(ax, xs, ys, labels, fontsize, colors) -> list:
    ax.margins(x=0.1, y=0.08)
    lo, hi = (min(xs), max(xs)) if len(xs) else (0.0, 0.0)
    texts = []
    for x, y, label, color in zip(xs, ys, labels, colors, strict=True):
        right = hi > lo and x > lo + 0.7 * (hi - lo)  # labels of the rightmost points go to their left
        texts.append(
            ax.annotate(
                label,
                (x, y),
                xytext=(-4 if right else 4, 4),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=fontsize,
                color=color,
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5", "shrinkA": 0, "shrinkB": 2},
            )
        )
    repel(ax, texts)
    return texts
