"""Benchmark settings: the portal's own settings, plus knox and DRF for the comparison views.

Every benchmarked path runs on one gunicorn server with these settings, so the portal's API and
the knox and DRF views share the same processes, middleware and database connection settings.
Only the bench virtualenv has djangorestframework and django-rest-knox installed.
"""

from datetime import timedelta

from portal import settings as _portal

vars().update({name: getattr(_portal, name) for name in dir(_portal) if name.isupper()})

INSTALLED_APPS = [*_portal.INSTALLED_APPS, "rest_framework", "rest_framework.authtoken", "knox"]
ROOT_URLCONF = "bench.knoxsite.urls"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
# Knox defaults to a 10-hour lifetime; the bench token must outlive the run. No refresh on use:
# knox then writes nothing per request (and records no usage at all).
REST_KNOX = {"TOKEN_TTL": timedelta(days=1), "AUTO_REFRESH": False}
