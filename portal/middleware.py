"""The request id: what lets an operator follow one request from the proxy through the portal's log lines.

``RequestIdMiddleware`` comes first in MIDDLEWARE. It keeps the ``X-Request-ID`` a trusted proxy sends when
it is well formed and short, otherwise makes one; returns it on every response (``/forward-auth`` answers
included, so the proxy can log it with its own request); and leaves the request's facts in the WSGI environ,
where gunicorn's access log reads them after the response (``portal/gunicorn_log.py``).
"""

import re
import uuid

from tokens.http import client_ip, from_trusted_proxy

from .logs import (
    ENVIRON_CLIENT,
    ENVIRON_REQUEST_ID,
    ENVIRON_TOKEN_ID,
    ENVIRON_USER_ID,
    logging_for,
    token_id,
    user_id,
)

REQUEST_ID_HEADER = "X-Request-ID"
# Short and of a plain alphabet: the id is written into every log line and echoed to the client, so a
# value that could break a log line, a header or a search is replaced rather than kept.
WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def request_id_for(request):
    """Return the id a trusted proxy gave *request* when it is well formed, else a new one."""
    offered = request.META.get("HTTP_X_REQUEST_ID")
    if offered and WELL_FORMED_ID.fullmatch(offered) and from_trusted_proxy(request):
        return offered
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Give every request an id, every response its ``X-Request-ID``, every log line the request's facts."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.META[ENVIRON_REQUEST_ID] = request_id_for(request)
        request.META[ENVIRON_CLIENT] = client_ip(request)
        with logging_for(request):
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request.META[ENVIRON_REQUEST_ID]
        request.META[ENVIRON_USER_ID] = user_id(request)
        request.META[ENVIRON_TOKEN_ID] = token_id(request)
        return response
