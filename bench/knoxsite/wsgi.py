"""The benchmark's WSGI application: the portal's, plus a second handler behind a JSON API's middleware only.

Django builds one middleware chain per handler from ``settings.MIDDLEWARE``. The design-limit view's
minimal variant needs another chain in the same process (same settings, connections and URLs), so a
second handler is built with the shorter list, and requests under ``/bench/limit-minimal/`` go to it.
"""

import os

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.test.utils import override_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.knoxsite.settings")

MINIMAL_PREFIX = "/bench/limit-minimal/"
# What a JSON API served by Django needs: the security headers, and database errors answered as a 503.
JSON_API_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "tokens.middleware.DatabaseUnavailableMiddleware",
]


class JsonApiHandler(WSGIHandler):
    """A WSGI handler whose middleware chain is JSON_API_MIDDLEWARE instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async=False):
        # The chain is built once, here; the setting is back to the portal's before any request.
        with override_settings(MIDDLEWARE=JSON_API_MIDDLEWARE):
            super().load_middleware(is_async)


portal = get_wsgi_application()
minimal = JsonApiHandler()


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith(MINIMAL_PREFIX):
        return minimal(environ, start_response)
    return portal(environ, start_response)
