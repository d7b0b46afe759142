"""The one JSON error vocabulary: the body of every 4xx and 5xx, and the RFC 6750 challenge.

Below every entry that answers in it (the API, the credential check in ``uses.py``, forward
authentication, SCIM, the metrics), so each of them imports it and none imports another for it.
"""

from django.http import JsonResponse
from django.utils.translation import gettext as _

from .constants import API_REALM

ERROR_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "insufficient_scope",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "server_error",
    503: "service_unavailable",
}


def api_error(status, detail, *, error=None, **extra):
    """Return the JSON error body every /api/ error uses: {"error", "detail"} (+ "fields" on 400)."""
    body = {"error": error or ERROR_CODES.get(status, "error"), "detail": str(detail), **extra}
    return JsonResponse(body, status=status)


def challenge(error=None, description=None, *, scope=None):
    """Return the ``WWW-Authenticate`` value for the API's realm (RFC 6750, section 3)."""
    parts = [f'Bearer realm="{API_REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if scope:
        parts.append(f'scope="{scope}"')
    if description:
        # RFC 6750 limits the description to printable ASCII without quotes or backslashes.
        safe = "".join(c for c in str(description) if 0x20 <= ord(c) < 0x7F and c not in '"\\')
        parts.append(f'error_description="{safe}"')
    return ", ".join(parts)


def unauthorized(detail, *, error=None):
    """Refuse with 401: no credentials (*error* None) or refused ones (*error* "invalid_token")."""
    response = api_error(401, detail, error=error or "unauthorized")
    response["WWW-Authenticate"] = challenge(error, detail if error else None)
    return response


def too_many_requests(wait):
    """Return the 429 for a client that failed authentication too often, with ``Retry-After``."""
    response = api_error(
        429,
        _("Too many failed authentication attempts from this address. Try again in %(n)d seconds.")
        % {"n": wait},
    )
    response["Retry-After"] = str(wait)
    return response


def refused(refusal):
    """Return the 403 for a valid token asked to do more than it may (access, permission or address)."""
    response = api_error(403, refusal.description, error=refusal.error)
    if refusal.error == "insufficient_scope":
        response["WWW-Authenticate"] = challenge(refusal.error, scope=refusal.scope)
    return response


def service_unavailable():
    response = api_error(503, _("The service cannot reach its database. Try again shortly."))
    response["Retry-After"] = "5"
    return response


def forbidden(request, detail):
    """Refuse with 403: authenticated, but the owner lacks the permission."""
    response = api_error(403, detail)
    if request.auth is not None:
        response["WWW-Authenticate"] = challenge("insufficient_scope", detail)
        # Recorded as a refused use, like the middleware's own access and address refusals.
        response.refused_use = True
    return response
