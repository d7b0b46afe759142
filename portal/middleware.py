"""The request id: what lets an operator follow one request from the proxy through the portal's log lines.

``RequestIdMiddleware`` comes first in MIDDLEWARE. It keeps the ``X-Request-ID`` a trusted proxy sends when
it is well formed and short, otherwise makes one; returns it on every response (``/forward-auth`` answers
included, so the proxy can log it with its own request); and leaves the request's facts in the WSGI environ,
where gunicorn's access log reads them after the response (``portal/gunicorn_log.py``).

``SessionMiddleware`` and ``MessageMiddleware`` are Django's, with their stores built on first use, so that
a request authenticated by a token or a key pays for neither.
"""

import re
import uuid

from django.conf import settings
from django.contrib.messages import middleware as messages_middleware
from django.contrib.messages.storage import default_storage
from django.contrib.sessions import middleware as sessions_middleware
from django.utils.functional import SimpleLazyObject, empty

from tokens.constants import LEGACY_KEY_HEADER
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


# A request to the API authenticated by a bearer token or a legacy key uses neither a session nor
# messages: its user comes from the credential, and a JSON answer shows no messages. Django's two
# middlewares still build their stores for every request: the message storage (two storages, a
# signer) and the session store, even when the request brings no session cookie. The two below build
# them on first use instead (the session's only for a cookieless request that carries a credential),
# which is the same thing for every request that uses them (a page, a session call to the API, a
# sign-in) and nothing for one that does not. They change nothing a client sees: Django's own
# SessionMiddleware answers a cookieless session never touched with no cookie and no ``Vary: Cookie``,
# and a message storage never touched with nothing (``update()`` writes only used or added messages).
# A store touched once, even only read (an Authorization header of another scheme falls back to the
# session, which is then read), is built then and handled by Django's code as before.


def _carries_a_credential(request):
    return "HTTP_AUTHORIZATION" in request.META or LEGACY_KEY_HEADER in request.META


class SessionMiddleware(sessions_middleware.SessionMiddleware):
    """Django's SessionMiddleware, building the store of a cookieless API client's session only when used.

    Only a request that carries a credential header and no session cookie gets the lazy store: it
    almost never uses it. Any other request gets its store at once, as in Django: a request with a
    session cookie may need it in ``process_response`` (to delete a cookie whose session is gone),
    and one without credentials nearly always reads it (who is signed in), where the lazy wrapper
    would only add its own cost. Either store is loaded from the database only when read, as in Django.
    """

    def process_request(self, request):
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if session_key is None and _carries_a_credential(request):
            request.session = SimpleLazyObject(self.SessionStore)
        else:
            request.session = self.SessionStore(session_key)

    def process_response(self, request, response):
        # Untouched and cookieless: Django's code would find it neither accessed, nor modified, nor in
        # a cookie to delete, and return the response as it is.
        if not _built_on_first_use(request, "session"):
            return response
        return super().process_response(request, response)


class MessageMiddleware(messages_middleware.MessageMiddleware):
    """Django's MessageMiddleware, building the message storage when a message is first added or read."""

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        # Untouched: no message was added or read, so the storage would have nothing to store.
        if not _built_on_first_use(request, "_messages"):
            return response
        return super().process_response(request, response)


def _built_on_first_use(request, attribute):
    """Tell whether the store in *request.attribute* exists; put the store itself there if it is lazy.

    A lazy store that was never touched does not exist. One that was is unwrapped: Django's code then
    reads a dozen of its attributes, each cheaper on the store itself than through the wrapper.
    """
    store = getattr(request, attribute, None)
    if type(store) is not SimpleLazyObject:
        return store is not None
    if store._wrapped is empty:
        return False
    setattr(request, attribute, store._wrapped)
    return True
