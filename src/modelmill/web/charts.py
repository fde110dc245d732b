"""Charts drawn on the server as inline SVG: line charts for ROC and precision-recall curves and a
heatmap for the confusion matrix. No JavaScript; every label is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Distinguishable on white and for common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
# Curves that coincide (a perfect classifier's) stay apart by their dash pattern too.
DASHES = ("", "7 4", "2 3", "10 3 2 3")
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
LABEL_CHARS = 20


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _attribute(key: str) -> str:
    return key.rstrip("_").replace("_", "-")  # class_ → class, text_anchor → text-anchor


def _tag(name: str, text: str | None = None, /, **attributes: object) -> str:
    """One SVG element; attribute names use _ for -; values and text are escaped (text that is
    Markup, such as a <title> child, is kept as it is)."""
    rendered = "".join(
        f' {_attribute(key)}="{escape(_number(v) if isinstance(v, float) else v)}"'
        for key, v in attributes.items()
        if v is not None
    )
    if text is None:
        return f"<{name}{rendered}/>"
    return f"<{name}{rendered}>{escape(text)}</{name}>"


def _svg(width: int, height: int, title: str, parts: list[str], class_: str = "chart") -> Markup:
    head = (
        f'<svg class="{class_}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )
    return Markup(head + "".join(parts) + "</svg>")


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    width: int = 340,
    height: int = 290,
) -> Markup:
    """Curves on the unit square (both axes 0 to 1), with a legend below the plot."""
    left, right, top, bottom = 48, 12, 28, 44  # bottom: tick labels and the axis label
    legend_row = 18
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + max(0.0, min(1.0, v)) * plot_w

    def y(v: float) -> float:
        return top + (1 - max(0.0, min(1.0, v))) * plot_h

    parts = [
        _tag("text", title, x=width / 2, y=16, text_anchor="middle", class_="chart-title"),
        _tag("rect", x=left, y=top, width=plot_w, height=plot_h, class_="plot-area"),
    ]
    for tick in TICKS:
        parts += [
            _tag("line", x1=x(tick), y1=top, x2=x(tick), y2=top + plot_h, class_="grid"),
            _tag("line", x1=left, y1=y(tick), x2=left + plot_w, y2=y(tick), class_="grid"),
            _tag(
                "text",
                f"{tick:g}",
                x=x(tick),
                y=top + plot_h + 14,
                text_anchor="middle",
                class_="tick",
            ),
            _tag("text", f"{tick:g}", x=left - 6, y=y(tick) + 4, text_anchor="end", class_="tick"),
        ]
    parts += [
        _tag(
            "text",
            x_label,
            x=left + plot_w / 2,
            y=top + plot_h + 32,
            text_anchor="middle",
            class_="axis-label",
        ),
        _tag(
            "text",
            y_label,
            transform=f"translate(12 {top + plot_h / 2:.0f}) rotate(-90)",
            text_anchor="middle",
            class_="axis-label",
        ),
    ]
    if diagonal:
        parts.append(_tag("line", x1=x(0), y1=y(0), x2=x(1), y2=y(1), class_="diagonal"))
    for index, line in enumerate(series):
        style = {
            "stroke": PALETTE[index % len(PALETTE)],
            "stroke_width": "2.2",
            "stroke_dasharray": DASHES[index % len(DASHES)] or None,
        }
        points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(line.xs, line.ys, strict=False))
        if points:
            parts.append(_tag("polyline", points=points, fill="none", **style))
        legend_y = height + legend_row * index + 12
        parts += [
            _tag("line", x1=left, y1=legend_y - 4, x2=left + 24, y2=legend_y - 4, **style),
            _tag("text", line.label, x=left + 30, y=legend_y, class_="legend"),
        ]
    return _svg(width, height + legend_row * len(series) + 6, title, parts)


def _shade(share: float) -> str:
    """White to a strong blue as `share` goes from 0 to 1."""
    share = max(0.0, min(1.0, share))
    low, high = (255, 255, 255), (8, 81, 156)
    r, g, b = (round(a + (b - a) * share) for a, b in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def heatmap(
    labels: Sequence[str],
    counts: Sequence[Sequence[float]],
    *,
    title: str,
    row_title: str,
    column_title: str,
    cell: int | None = None,
) -> Markup:
    """A square matrix of counts: rows are `row_title` (actual), columns `column_title`
    (predicted). Each row is shaded by its share of the row's total, so rows of different sizes
    read alike; the count is written in every cell."""
    n = len(labels)
    cell = cell or (64 if n <= 4 else 48 if n <= 10 else 34)
    label_w = min(max((len(_short(label)) for label in labels), default=4) * 7 + 16, 160)
    left, top = label_w + 24, 28 + int(label_w * 0.6)  # room for the slanted column labels
    width, height = left + n * cell + 8, top + n * cell + 8
    parts = [
        _tag(
            "text",
            column_title,
            x=left + n * cell / 2,
            y=14,
            text_anchor="middle",
            class_="axis-label",
        ),
        _tag(
            "text",
            row_title,
            transform=f"translate(12 {top + n * cell / 2:.0f}) rotate(-90)",
            text_anchor="middle",
            class_="axis-label",
        ),
    ]
    for column, label in enumerate(labels):
        cx = left + column * cell + cell / 2
        parts.append(
            _tag(
                "text",
                _short(label),
                x=cx,
                y=top - 8,
                text_anchor="start",
                transform=f"rotate(-35 {cx:.0f} {top - 8})",
                class_="tick",
            )
        )
    for row, label in enumerate(labels):
        ry = top + row * cell
        parts.append(
            _tag(
                "text",
                _short(label),
                x=left - 6,
                y=ry + cell / 2 + 4,
                text_anchor="end",
                class_="tick",
            )
        )
        total = sum(counts[row]) or 1.0
        for column in range(n):
            value = counts[row][column]
            share = value / total
            tip = Markup("<title>{}</title>").format(
                f"{labels[row]} predicted as {labels[column]}: {value:g}"
            )
            parts.append(
                _tag(
                    "rect",
                    tip,
                    x=left + column * cell,
                    y=ry,
                    width=cell,
                    height=cell,
                    fill=_shade(share),
                    class_="cell",
                )
            )
            parts.append(
                _tag(
                    "text",
                    f"{value:g}",
                    x=left + column * cell + cell / 2,
                    y=ry + cell / 2 + 4,
                    text_anchor="middle",
                    fill="#ffffff" if share > 0.55 else "#1b1f24",
                    class_="count",
                )
            )
    return _svg(width, height, title, parts, class_="chart heatmap")
