"""Keyless CI in the API: the RFC 8693 token exchange, and trust policies managed with a browser session.

A person manages their own policies at /api/trust-policies and those of the service accounts they
manage at /api/service-accounts/<id>/trust-policies, through the same functions (the account owns the
policy, the person is the actor); anyone else gets 404 there, as for an id that does not exist.

``POST /api/token-exchange`` takes no other authentication (the middleware looks at no credential for
it): the job's own token is the proof. Its answers and errors are RFC 6749's and RFC 8693's, not the
rest of the API's ({"error", "error_description"}), because CI tools and OAuth libraries read them.
"""

import logging
from time import monotonic

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from .. import exchange as federation
from ..errors import forbidden
from ..http import client_ip, managed_account_or_404, no_store
from ..issuers import issuer_label
from ..models import SitePolicy, TrustPolicy
from ..models.federation import DEFAULT_MAX_LIVE_TOKENS, DEFAULT_TOKEN_LIFETIME
from ..throttle import api_client_locked, count_api_failure
from .base import MAX_BODY_BYTES, BadRequest, api_view, json_body
from .fields import iso
from .views import paginate

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
POLICY_FIELDS = (
    "name",
    "issuer",
    "audience",
    "conditions",
    "access",
    "permissions",
    "allowed_ips",
    "token_lifetime",
    "max_live_tokens",
)


def oauth_error(status, error, description):
    """Return an RFC 6749 (section 5.2) error: {"error", "error_description"}, never stored."""
    response = no_store(JsonResponse({"error": error, "error_description": description}, status=status))
    return response


@csrf_exempt
@require_POST
@sensitive_post_parameters("subject_token")
@sensitive_variables("plaintext")
def token_exchange(request):
    """Trade a CI job's OpenID Connect token for a short-lived bearer token (RFC 8693)."""
    started = monotonic()
    ip = client_ip(request)
    # Counted like every endpoint anyone can call: an address that keeps failing is stopped here,
    # before a signature is checked or an issuer asked.
    wait = api_client_locked(ip)
    if wait:
        response = oauth_error(429, "too_many_requests", _("Too many refused exchanges from this address."))
        response["Retry-After"] = str(wait)
        return response
    if request.content_type != FORM:
        return oauth_error(400, "invalid_request", _("Send the form as application/x-www-form-urlencoded."))
    if len(request.body) > MAX_BODY_BYTES:
        return oauth_error(413, "invalid_request", _("The body is too large."))
    form = request.POST
    if form.get("grant_type") != federation.GRANT_TYPE:
        return oauth_error(
            400, "unsupported_grant_type", _("grant_type must be %(type)s.") % {"type": federation.GRANT_TYPE}
        )
    subject_token = form.get("subject_token", "")
    if not subject_token:
        return oauth_error(400, "invalid_request", _("subject_token is required."))
    if form.get("subject_token_type") not in federation.SUBJECT_TOKEN_TYPES:
        return oauth_error(
            400,
            "unsupported_token_type",
            _("subject_token_type must be %(type)s.") % {"type": federation.JWT_TOKEN_TYPE},
        )
    if form.get("actor_token") or form.get("actor_token_type"):
        return oauth_error(400, "invalid_request", _("Delegation (actor_token) is not supported."))
    requested = form.get("requested_token_type")
    if requested and requested != federation.ACCESS_TOKEN_TYPE:
        return oauth_error(
            400,
            "invalid_request",
            _("requested_token_type can only be %(type)s.") % {"type": federation.ACCESS_TOKEN_TYPE},
        )
    # The token is for this portal's API: another resource or audience cannot be served.
    for target in form.getlist("resource") + form.getlist("audience"):
        if target.rstrip("/") != settings.SITE_URL:
            return oauth_error(
                400,
                "invalid_target",
                _("Tokens minted here are for %(site)s only.") % {"site": settings.SITE_URL},
            )
    if len(subject_token) > federation.MAX_SUBJECT_TOKEN_BYTES:
        count_api_failure(ip)
        return _refused()
    try:
        token, plaintext = federation.exchange(subject_token, ip=ip, started=started)
    except federation.IssuerUnavailable as error:
        log.warning("token exchange: issuer unavailable (%s)", error)
        response = oauth_error(
            503, "temporarily_unavailable", _("The job's issuer could not be reached. Try again shortly.")
        )
        response["Retry-After"] = "5"
        return response
    except federation.Refused:
        count_api_failure(ip)
        return _refused()
    expires_in = max(0, int((token.expires_at - timezone.now()).total_seconds()))
    return no_store(
        JsonResponse(
            {
                "access_token": plaintext,
                "issued_token_type": federation.ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": expires_in,
            }
        )
    )


def _refused():
    # One answer for every refusal: which check failed is for the policy's owner and the admins.
    return oauth_error(
        400, "invalid_grant", _("The subject token was refused. The policy's owner can see why.")
    )


def trust_policy_json(policy):
    return {
        "id": policy.pk,
        "name": policy.name,
        "issuer": policy.issuer,
        "issuer_name": issuer_label(policy.issuer),
        "audience": policy.audience,
        "conditions": policy.conditions,
        "access": policy.access,
        "permissions": policy.permissions,
        "allowed_ips": policy.allowed_ips,
        "token_lifetime": policy.token_lifetime,
        "max_live_tokens": policy.max_live_tokens,
        "created_at": iso(policy.created_at),
        # Annotated by with_last_exchange(); a policy just created has none.
        "last_exchange_at": iso(getattr(policy, "last_exchange_at", None)),
    }


def _session_only(request):
    # A leaked token must not be able to make a policy that mints more tokens: a signed-in person only.
    if request.auth is not None:
        return forbidden(request, _("Trust policies can only be managed from a signed-in session."))
    return None


@api_view(["GET", "POST"])
def trust_policies(request):
    """List the caller's trust policies, or create one (POST)."""
    if refusal := _session_only(request):
        return refusal
    return _owner_policies(request, request.user, route="api-trust-policy")


@api_view(["GET", "PATCH", "DELETE"])
def trust_policy_detail(request, pk):
    """Show, change (PATCH any field) or delete (revoking its live tokens) one of the caller's policies."""
    if refusal := _session_only(request):
        return refusal
    return _one_policy(request, request.user, pk)


@api_view(["GET", "POST"])
def service_account_trust_policies(request, account):
    """List a managed service account's trust policies, or create one (POST): its manager is the actor."""
    if refusal := _session_only(request):
        return refusal
    account = managed_account_or_404(request, account)
    return _owner_policies(request, account.user, route="api-service-account-trust-policy", account=account)


@api_view(["GET", "PATCH", "DELETE"])
def service_account_trust_policy(request, account, pk):
    """Show, change or delete a trust policy of a managed service account."""
    if refusal := _session_only(request):
        return refusal
    account = managed_account_or_404(request, account)
    return _one_policy(request, account.user, pk)


def _owner_policies(request, owner, *, route, account=None):
    """List *owner*'s policies, or create one (POST) with the signed-in person as the actor."""
    if request.method == "GET":
        return JsonResponse(
            paginate(
                request,
                TrustPolicy.objects.for_user(owner).with_last_exchange().order_by("pk"),
                trust_policy_json,
            )
        )
    body = json_body(request, set(POLICY_FIELDS), required=("name", "issuer", "conditions"))
    fields = {
        "audience": settings.SITE_URL,
        "access": SitePolicy.load().default_access,
        "permissions": None,
        "allowed_ips": [],
        "token_lifetime": int(DEFAULT_TOKEN_LIFETIME.total_seconds()),
        "max_live_tokens": DEFAULT_MAX_LIVE_TOKENS,
        **body,
    }
    policy = TrustPolicy.objects.create_policy(
        owner=owner, actor=request.user, ip=client_ip(request), **fields
    )
    response = JsonResponse(trust_policy_json(policy), status=201)
    args = [policy.pk] if account is None else [account.pk, policy.pk]
    response["Location"] = reverse(route, args=args)
    return response


def _one_policy(request, owner, pk):
    """Show, change (PATCH) or delete *owner*'s policy *pk*; the signed-in person is the actor."""
    policy = get_object_or_404(TrustPolicy.objects.for_user(owner).with_last_exchange(), pk=pk)
    if request.method == "PATCH":
        body = json_body(request, set(POLICY_FIELDS))
        if not body:
            raise BadRequest(
                _("Send at least one field to change."), {"non_field_errors": [_("Nothing to change.")]}
            )
        policy.update(actor=request.user, ip=client_ip(request), **body)
    elif request.method == "DELETE":
        policy.remove(actor=request.user, ip=client_ip(request))
        return HttpResponse(status=204)
    return JsonResponse(trust_policy_json(policy))
