"""Forward authentication: the portal as the token authority for any HTTP API behind a reverse proxy.

nginx ``auth_request``, Traefik ``ForwardAuth``, Caddy ``forward_auth`` and Envoy's HTTP external
authorization call ``/forward-auth`` before each request to the API they guard, with the client's own
headers and the original method and URI. The answer comes from exactly the checks of the portal's own API
(``uses.authenticate_use``, which ApiAuthenticationMiddleware runs too): bearer tokens and legacy keys, the
security level, read-only access, address allow-lists and the API failure limit. Every call is recorded as
a use of the credential with the **original** method and path, so the token's page, charts and the
migration overview show the traffic to the guarded API. See docs/gateways.md for each proxy's settings.

The cost is the API's: one indexed lookup and one INSERT, and two queries more only for a route that asks
for a permission.
"""

import time
from urllib.parse import quote, unquote_to_bytes, urlsplit

from django.http import HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from . import metrics
from .auth import Refused
from .errors import api_error, refused, unauthorized
from .http import from_trusted_proxy
from .uses import Use, authenticate_use, record_use

# Each proxy's name for the original method and URI (nginx: whatever its config sets; these are the usual).
ORIGINAL_METHOD_HEADERS = ("HTTP_X_ORIGINAL_METHOD", "HTTP_X_FORWARDED_METHOD")
ORIGINAL_URI_HEADERS = ("HTTP_X_ORIGINAL_URI", "HTTP_X_FORWARDED_URI")
# A username goes into a header as it is when it is plain ASCII of these characters (Django's default
# username alphabet); anything else is percent-encoded UTF-8, which every proxy and upstream can carry.
USERNAME_SAFE = "@.+-_"


class DisagreeingHeaders(Exception):
    """Two spellings of the original method (or URI) arrived from a trusted proxy and say different things."""


def _stated(request, names):
    """Return the one value the headers *names* state, None when none is sent.

    A proxy may set one spelling and pass the client's own other spelling on (nginx passes a client's
    X-Forwarded-Method; Caddy and Traefik pass a client's X-Original-Method), so believing either one
    would let a client choose its own method. When they disagree, nothing is believed.
    """
    values = {value for name in names if (value := request.META.get(name, "").strip())}
    if len(values) > 1:
        raise DisagreeingHeaders
    return values.pop() if values else None


def original_path(uri):
    """Return the path of *uri* (``/orders/42?x=1`` or an absolute URL), decoded as Django decodes its own.

    WSGI hands a header over as latin-1 text, so its bytes are exactly those the proxy sent; the path is
    percent-decoded and read as UTF-8, anything undecodable shown as U+FFFD, like a request's own path.
    """
    raw = uri.encode("latin-1", "replace")
    try:
        path = urlsplit(raw).path
    except ValueError:  # "http://[" and other URIs urlsplit cannot read: keep what precedes the query
        path = raw.split(b"?", 1)[0]
    return unquote_to_bytes(path).decode("utf-8", "replace") or "/"


def original_use(request, *, started, suffix=""):
    """Return the Use that the guarded request makes: as a trusted proxy states it, else this call's own.

    Anyone may send X-Original-Method or X-Forwarded-Uri: like X-Forwarded-For (``client_ip``), they are
    believed only from TRUSTED_PROXIES. A client that calls /forward-auth itself is checked and recorded
    for what it does: this very request. Envoy states no URI header: it calls /forward-auth followed by
    the original path (*suffix*), with the original method. Raise DisagreeingHeaders when both spellings
    of the method or of the URI arrive and differ.
    """
    if not from_trusted_proxy(request):
        return Use.of(request, entry="forward_auth", started=started)
    method = _stated(request, ORIGINAL_METHOD_HEADERS)
    uri = _stated(request, ORIGINAL_URI_HEADERS)
    path = original_path(uri) if uri is not None else suffix
    return Use.of(request, entry="forward_auth", method=method, path=path, started=started)


def _no_store(response):
    # An answer about one credential at one moment: a revoke must be seen by the very next request.
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # a proxy's call carrying a token, never a browser's cookie-borne form
def forward_auth(request, suffix=""):
    """Answer a reverse proxy: 200 with who the caller is, 401 with the RFC 6750 challenge, or 403.

    400, and nothing recorded, when a trusted proxy states the original method or URI twice, differently.

    ``?permission=app_label.codename`` (repeatable) makes a route need permissions of the token's owner,
    as narrowed by the token.
    """
    try:
        use = original_use(request, started=time.perf_counter(), suffix=suffix)
    except DisagreeingHeaders:
        # Neither spelling can be trusted, so there is no request to check or record.
        return _no_store(
            api_error(
                400,
                _(
                    "The original method or URI is stated twice, differently "
                    "(X-Original-Method / X-Forwarded-Method, X-Original-URI / X-Forwarded-Uri)."
                ),
            )
        )
    credential, refusal = authenticate_use(request, use)
    if refusal is not None:
        return _no_store(refusal)
    if credential is None:
        metrics.count_check(use.entry, "none", "missing")
        return _no_store(unauthorized(_("Authentication credentials were not provided.")))
    for permission in request.GET.getlist("permission"):
        if not credential.user.has_perm(permission):
            refusal = Refused(
                _("This route needs a permission the token does not have."),
                error="insufficient_scope",
                credential=credential,
            )
            return _no_store(record_use(use, credential, refused(refusal), accepted=False))
    response = HttpResponse(status=200)
    response["X-Auth-User-Id"] = str(credential.user.pk)
    response["X-Auth-Username"] = quote(credential.user.get_username(), safe=USERNAME_SAFE)
    response["X-Auth-Token-Id"] = "" if credential.token_id is None else str(credential.token_id)
    response["X-Auth-Method"] = credential.method.value
    response["X-Auth-Access"] = credential.access
    return _no_store(record_use(use, credential, response, accepted=True))
