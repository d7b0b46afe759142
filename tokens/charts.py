"""Server-rendered SVG bar charts: no chart library, no JavaScript, no inline styles (strict CSP)."""

import math

from django.utils import dateformat
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

# Drawing units of the SVG viewBox; CSS scales the whole picture to the width of its container.
WIDTH = 900
HEIGHT = 280
MARGIN_LEFT = 56
MARGIN_RIGHT = 12
MARGIN_TOP = 16
MARGIN_BOTTOM = 44
Y_TICKS = 4
# Fallback colours, drawn as SVG presentation attributes: the chart stays readable on a page without
# static/css/charts.css, while charts.css, when loaded, wins over them through the same class names.
SERIES_FILLS = {
    "series-accepted": "#1f5fbf",
    "series-refused": "#d9822b",
    "series-bearer": "#1a7f37",
    "series-legacy": "#b42318",
}
DEFAULT_FILL = "#1f5fbf"


def _nice_ceiling(value):
    """Return the top of the y axis: Y_TICKS whole, round steps (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k)."""
    raw_step = max(value / Y_TICKS, 1)
    power = 10 ** math.floor(math.log10(raw_step))
    # Halves only from 10 up, so every tick label stays a whole number.
    factors = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if power >= 10 else (1, 2, 3, 4, 5, 6, 8, 10)
    step = next(factor * power for factor in factors if factor * power >= raw_step)
    return int(step * Y_TICKS)


def daily_chart(days, series, *, title, chart_id=None):
    """Return the context for templates/tokens/includes/daily_chart.html: stacked bars, one per day.

    *days* is a list of dates, oldest first (for example the dates of ``DailyUsage.objects.series()``).
    *series* is a list of ``(label, css_class, values)``; each *values* list has one number per day.
    The series are stacked bottom to top in the given order. *css_class* colours a series: the classes
    ``series-accepted``, ``series-refused``, ``series-bearer`` and ``series-legacy`` have colours both
    in static/css/charts.css and as SVG attributes (SERIES_FILLS), so the chart also reads well on a
    page that does not load charts.css; any other class is drawn in blue unless a stylesheet
    colours it. *title* names the chart (its SVG <title> and caption). *chart_id* makes
    the element ids unique when a page shows several charts (default: derived from the title).

    Render it with ``{% include "tokens/includes/daily_chart.html" with chart=chart %}``. The picture
    has role="img", a <title> and a <desc> summary, a tooltip per bar, and a table with the same
    numbers behind a "Show the numbers" disclosure, so screen readers and keyboards get the data too.

    Example (two series per day)::

        tail = UsageRecord.objects.unsummarised(token=token)  # not summarised yet: counted too
        rows = DailyUsage.objects.filter(token=token).series(tail=tail)
        chart = daily_chart(
            [day for day, _a, _r in rows],
            [(_("accepted"), "series-accepted", [a for _d, a, _r in rows]),
             (_("refused"), "series-refused", [r for _d, _a, r in rows])],
            title=_("Requests per day, last 30 days"),
        )
    """
    days = list(days)
    series = [(label, css_class, list(values)) for label, css_class, values in series]
    for label, _css, values in series:
        if len(values) != len(days):
            raise ValueError(f"series {label!r} has {len(values)} values for {len(days)} days")
    totals = [sum(values[i] for _l, _c, values in series) for i in range(len(days))]
    ceiling = _nice_ceiling(max(totals, default=0))
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    bottom = MARGIN_TOP + plot_height
    slot = plot_width / max(len(days), 1)
    bar_width = max(slot * 0.7, 1)

    def height_of(value):
        return value / ceiling * plot_height

    bars = []
    for i, day in enumerate(days):
        x = MARGIN_LEFT + i * slot + (slot - bar_width) / 2
        top = bottom
        for label, css_class, values in series:
            value = values[i]
            if not value:
                continue
            h = height_of(value)
            top -= h
            bars.append(
                {
                    "x": round(x, 2),
                    "y": round(top, 2),
                    "width": round(bar_width, 2),
                    "height": round(h, 2),
                    "css_class": css_class,
                    "fill": SERIES_FILLS.get(css_class, DEFAULT_FILL),
                    "tooltip": f"{dateformat.format(day, 'M j')}: {value} {label}",
                }
            )
    y_ticks = [
        {"y": round(bottom - height_of(ceiling * k / Y_TICKS), 2), "label": f"{int(ceiling * k / Y_TICKS):,}"}
        for k in range(Y_TICKS + 1)
    ]
    # A label every week (and on the last day) keeps 30 labels from overlapping on a phone.
    x_labels = [
        {"x": round(MARGIN_LEFT + i * slot + slot / 2, 2), "label": dateformat.format(day, "M j")}
        for i, day in enumerate(days)
        if (len(days) - 1 - i) % 7 == 0
    ]
    total = sum(totals)
    if total:
        busiest = max(range(len(days)), key=lambda i: totals[i])
        summary = ngettext(
            "%(total)s request from %(first)s to %(last)s; the busiest day was %(day)s with %(most)s.",
            "%(total)s requests from %(first)s to %(last)s; the busiest day was %(day)s with %(most)s.",
            total,
        ) % {
            "total": f"{total:,}",
            "first": dateformat.format(days[0], "M j"),
            "last": dateformat.format(days[-1], "M j"),
            "day": dateformat.format(days[busiest], "M j"),
            "most": f"{totals[busiest]:,}",
        }
    elif days:
        summary = str(_("No requests from %(first)s to %(last)s.")) % {
            "first": dateformat.format(days[0], "M j"),
            "last": dateformat.format(days[-1], "M j"),
        }
    else:
        summary = str(_("No data."))
    chart_id = chart_id or f"chart-{slugify(str(title))[:40]}"
    return {
        "id": chart_id,
        "title": title,
        "summary": summary,
        "width": WIDTH,
        "height": HEIGHT,
        "plot_left": MARGIN_LEFT,
        "plot_right": WIDTH - MARGIN_RIGHT,
        "plot_top": MARGIN_TOP,
        "plot_bottom": bottom,
        "plot_middle_y": round(MARGIN_TOP + plot_height / 2, 2),
        "plot_middle_x": round(MARGIN_LEFT + plot_width / 2, 2),
        "x_label_y": bottom + 20,
        "bars": bars,
        "y_ticks": y_ticks,
        "x_labels": x_labels,
        "empty": total == 0,
        "legend": [
            {"label": label, "css_class": css_class, "fill": SERIES_FILLS.get(css_class, DEFAULT_FILL)}
            for label, css_class, _v in series
        ],
        "columns": [label for label, _c, _v in series],
        "rows": [
            {"day": day, "values": [values[i] for _l, _c, values in series], "total": totals[i]}
            for i, day in enumerate(days)
        ],
    }
