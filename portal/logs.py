"""Log lines: what lets an operator follow one request from the proxy to the portal.

* ``portal.middleware.RequestIdMiddleware`` gives each request its id and runs it inside ``logging_for``.
* ``RequestContextFilter`` writes the request's id, method, path, user id, token id and client address on
  every log record made while the request runs, in either format.
* ``json_formatter()``: with ``LOG_FORMAT=json``, one JSON object a line (python-json-logger), so every
  value a client controls is escaped by the JSON encoder, never by hand.
"""

import contextlib
import contextvars
import logging

from django.utils.functional import empty
from pythonjsonlogger.json import JsonFormatter

from .redaction import redact

# Keys the request-id middleware leaves in the WSGI environ (which is ``request.META``) for gunicorn's
# access log, which runs after the response, outside the request's context.
ENVIRON_REQUEST_ID = "portal.request_id"
ENVIRON_USER_ID = "portal.user_id"
ENVIRON_TOKEN_ID = "portal.token_id"
ENVIRON_CLIENT = "portal.client_address"

# The fields of a line besides time, level, logger and message, in the order they are written.
REQUEST_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "user_id", "token_id", "client")

_current_request = contextvars.ContextVar("current_request", default=None)


@contextlib.contextmanager
def logging_for(request):
    """Write *request*'s fields on every record logged inside the block."""
    token = _current_request.set(request)
    try:
        yield
    finally:
        _current_request.reset(token)


def user_id(request):
    """Return the id of the user *request* acts for, if already known (a log line makes no query)."""
    credential = getattr(request, "auth", None)
    if credential is not None:
        return credential.user.pk
    user = getattr(request, "user", None)
    # A session's user is loaded lazily: reading it here could add a query to a request that needed none.
    if user is None or getattr(user, "_wrapped", None) is empty:
        return None
    return user.pk


def token_id(request):
    """Return the id of the bearer token *request* authenticated with, else None."""
    credential = getattr(request, "auth", None)
    return credential.token_id if credential is not None else None


class RequestContextFilter(logging.Filter):
    """Add the current request's fields to each record (None outside a request); never drop a record."""

    def filter(self, record):
        request = _current_request.get()
        if request is None:
            for name in REQUEST_FIELDS:
                if not hasattr(record, name):
                    setattr(record, name, None)
            return True
        record.request_id = request.META.get(ENVIRON_REQUEST_ID)
        record.method = request.method
        record.path = request.path  # never the query string, where a client may put anything
        record.user_id = user_id(request)
        record.token_id = token_id(request)
        record.client = request.META.get(ENVIRON_CLIENT)
        for name in ("status", "duration_ms"):
            if not hasattr(record, name):
                setattr(record, name, None)
        return True


class RedactingJsonFormatter(JsonFormatter):
    """One JSON object a line, redacted like the text format (portal/redaction.py) once encoded."""

    def format(self, record):
        return redact(super().format(record))


def json_formatter():
    """Return the formatter of ``LOG_FORMAT=json``: one object a line, with the fields of the docs."""
    return RedactingJsonFormatter(
        ["levelname", "name", *REQUEST_FIELDS, "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )
