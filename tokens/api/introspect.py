"""RFC 7662 token introspection: a resource server asks whether a token is active, and whose it is.

The resource server authenticates with a bearer token of its own, whose owner holds
``tokens.introspect_token`` (ApiAuthenticationMiddleware has checked that token and records its use). The
token asked about goes through exactly the API's bearer check (``authenticate_bearer``): its signature,
the lookup, revocation, expiry and its owner. Each answer about a token issued here is recorded as a use
of that token, so its page shows the traffic of the API that introspects it.
"""

from datetime import UTC

from django.http import JsonResponse
from django.utils.translation import gettext as _

from .. import metrics
from ..auth import AuthError, authenticate_bearer
from ..constants import Access, Method
from ..errors import forbidden
from ..models import Token
from ..uses import Use, record_use
from .base import MAX_BODY_BYTES, BadRequest, api_view

FORM = "application/x-www-form-urlencoded"
SCOPES = {Access.READ: "read", Access.READ_WRITE: "read write"}


def _inactive():
    # RFC 7662, section 2.2: for a token that is not active, "active" and nothing more, so the answer
    # tells nothing about why (unknown, revoked, expired) nor whose it was.
    return JsonResponse({"active": False})


def _unix(moment):
    return int(moment.astimezone(UTC).timestamp())


def _token_value(request):
    """Return the ``token`` form field, or raise BadRequest."""
    if len(request.body) > MAX_BODY_BYTES:
        raise BadRequest(_("The body is too large."), status=413)
    if request.body and request.content_type != FORM:
        raise BadRequest(
            _("Send the body as a form with Content-Type: %(type)s.") % {"type": FORM}, status=415
        )
    values = request.POST.getlist("token")
    if len(values) != 1 or not values[0]:
        raise BadRequest(
            _("Send exactly one token to introspect."), {"token": [_("This field is required.")]}
        )
    return values[0]


@api_view(["POST"])
def introspect(request):
    """Answer whether the form's ``token`` is active (RFC 7662); ``token_type_hint`` is allowed, not used."""
    # A resource server's own bearer token, never a session or a legacy key: the permission is asked of
    # the token (narrowed permissions included), and legacy keys are on their way out.
    caller = request.auth
    if caller is None or caller.token_id is None or not request.user.has_perm("tokens.introspect_token"):
        return forbidden(request, _("Introspection needs a bearer token whose owner may introspect tokens."))
    value = _token_value(request)
    use = Use.of(request, entry="introspection")
    try:
        credential = authenticate_bearer(value)
    except AuthError as refusal:
        if refusal.credential is not None:
            # Revoked, expired or its owner deactivated: a refused use of that token, like the API's.
            return record_use(use, refusal.credential, _inactive(), accepted=False, reason=refusal.reason)
        metrics.count_check(use.entry, Method.BEARER, refusal.reason)
        return _inactive()
    if credential.allowed_ips:
        # The client's address is the resource server's to see, not ours: a token bound to addresses could
        # not be held to them here, so it is not active for introspection. Forward auth checks them.
        return record_use(use, credential, _inactive(), accepted=False, reason="address")
    # Not on the hot path: one more indexed read for the two times the lookup does not bring.
    times = Token.objects.filter(pk=credential.id).values_list("created_at", "expires_at")
    created_at, expires_at = times.get()
    body = {
        "active": True,
        "scope": SCOPES[credential.access],
        "username": credential.user.get_username(),
        "sub": str(credential.user.pk),
        "token_type": "Bearer",
        "iat": _unix(created_at),
        "jti": str(credential.id),
    }
    if expires_at is not None:
        body["exp"] = _unix(expires_at)
    return record_use(use, credential, JsonResponse(body), accepted=True)
