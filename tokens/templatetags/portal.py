"""Template helpers for the token pages: relative times and HTTP status classes."""

from datetime import timedelta

from django import template
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def relative(moment):
    """Return "in 3 days" or "3 days ago" (one unit, for a short hint beside the exact time)."""
    if not moment:
        return ""
    now = timezone.now()
    if abs((moment - now).total_seconds()) < 60:
        return _("just now") if moment <= now else _("in less than a minute")
    if moment > now:
        # A minute of slack: a 7-day token looked at a second after creation reads "in 1 week", not "6 days".
        return _("in %(time)s") % {"time": timeuntil(moment, now - timedelta(minutes=1), depth=1)}
    return _("%(time)s ago") % {"time": timesince(moment, now, depth=1)}


@register.filter
def status_family(code):
    """Return "2xx", "3xx", "4xx" or "5xx" for an HTTP status code (a CSS class suffix)."""
    try:
        return f"{int(code) // 100}xx"
    except (TypeError, ValueError):
        return "unknown"
