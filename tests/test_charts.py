"""tokens/charts.py: the server-rendered SVG bar chart (the token page, the admin's migration overview)."""

from datetime import date, timedelta

import pytest
from django.template.loader import render_to_string

from tokens.charts import daily_chart

pytestmark = pytest.mark.django_db


def test_the_chart_stacks_series_per_day_on_a_round_scale():
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(3)]
    chart = daily_chart(
        days,
        [("bearer", "series-bearer", [10, 0, 30]), ("legacy", "series-legacy", [5, 0, 0])],
        title="Legacy vs bearer",
    )
    assert [tick["label"] for tick in chart["y_ticks"]] == ["0", "8", "16", "24", "32"]
    bearer_first, legacy_first, bearer_third = chart["bars"]
    assert bearer_first["height"] == pytest.approx(bearer_third["height"] / 3, abs=0.05)
    assert legacy_first["y"] + legacy_first["height"] == pytest.approx(
        bearer_first["y"], abs=0.05
    )  # stacked on top
    assert legacy_first["fill"] == "#b42318" and legacy_first["css_class"] == "series-legacy"
    assert chart["rows"][0] == {"day": days[0], "values": [10, 5], "total": 15}
    assert "45 requests" in chart["summary"] and "Mar 3 with 30" in chart["summary"]
    with pytest.raises(ValueError):
        daily_chart(days, [("short", "x", [1])], title="Broken")


def test_the_chart_renders_accessibly_and_says_when_there_is_nothing(rf):
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(30)]
    html = render_to_string(
        "tokens/includes/daily_chart.html",
        {"chart": daily_chart(days, [("accepted", "series-accepted", [0] * 30)], title="Quiet")},
    )
    assert 'role="img"' in html and '<title id="chart-quiet-title">Quiet</title>' in html
    assert "No requests in this period" in html and "No requests from Mar 1 to Mar 30." in html
    assert html.count("<tr>") == 31  # header + one row per day in the data table
    assert " style=" not in html
