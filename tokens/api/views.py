"""The JSON API's views (under /api/).

Authentication happens in ApiAuthenticationMiddleware before these run.
"""

import re
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import EmptyPage, Paginator
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET

from ..constants import API_PREFIX, Access, Method
from ..errors import api_error, forbidden
from ..http import client_ip, no_store, own_token_or_404
from ..identity import recent
from ..models import SitePolicy, Token, TokenStatus, UsageRecord, is_service_account
from ..usage.read import token_usage, usage_totals
from .base import BadRequest, api_view, json_body
from .fields import iso, token_json
from .openapi import document

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


def user_json(user):
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_staff": user.is_staff,
    }


def _int_param(request, name, default, maximum=None):
    raw = request.GET.get(name)
    if raw is None:
        return default
    # ASCII digits only, and few of them: "²".isdigit() is True, yet int("²") raises.
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1 or (maximum and int(raw) > maximum):
        limit = _(" up to %(max)d") % {"max": maximum} if maximum else ""
        raise BadRequest(
            _("%(name)s must be a whole number from 1%(limit)s.") % {"name": name, "limit": limit},
            {name: [_("Enter a whole number from 1%(limit)s.") % {"limit": limit}]},
        )
    return int(raw)


def paginate(request, queryset, serialize, *, prepare=None):
    """Return the paginated list body: {"count", "next", "previous", "results"}.

    *prepare* receives the page's objects as a list before they are serialised (``usage_totals``).
    """
    page_size = _int_param(request, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    number = _int_param(request, "page", 1)
    paginator = Paginator(queryset, page_size)
    try:
        page = paginator.page(number)
    except EmptyPage:
        if number == 1:
            page = paginator.page(1)  # Paginator allows an empty first page
        else:
            raise BadRequest(_("That page does not exist."), status=404) from None

    def link(n):
        query = request.GET.copy()
        query["page"] = n
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return {
        "count": paginator.count,
        "next": link(page.next_page_number()) if page.has_next() else None,
        "previous": link(page.previous_page_number()) if page.has_previous() else None,
        "results": [serialize(item) for item in (prepare or list)(list(page.object_list))],
    }


def parse_expiry(raw):
    """Parse an ISO 8601 date-time with a time zone; None stays None (no expiry)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationError({"expires_at": _("Use an ISO 8601 date and time, or null.")})
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError({"expires_at": _("Use an ISO 8601 date and time, or null.")}) from None
    if moment.tzinfo is None:
        raise ValidationError({"expires_at": _("Include a time zone, e.g. 2030-01-31T12:00:00Z.")})
    return moment


@api_view(["GET"])
def users_me(request):
    """Return the caller and how it authenticated."""
    auth = request.auth
    body = user_json(request.user)
    body["auth"] = {
        "method": auth.method if auth else Method.SESSION,
        "token_id": auth.token_id if auth else None,
        "legacy_key_id": auth.legacy_key_id if auth else None,
        # A session and a legacy key act with the user's full access; a token with its own.
        "access": auth.access if auth else Access.READ_WRITE,
    }
    return JsonResponse(body)


@api_view(["GET"])
def users_list(request):
    """List users; needs the caller's auth.view_user permission (tokens inherit their owner's)."""
    if not request.user.has_perm("auth.view_user"):
        return forbidden(request, _("Listing users needs the view user permission."))
    users = get_user_model().objects.order_by("pk")
    return JsonResponse(paginate(request, users, user_json))


@api_view(["GET"])
def users_detail(request, pk):
    if not request.user.has_perm("auth.view_user"):
        return forbidden(request, _("Viewing users needs the view user permission."))
    return JsonResponse(user_json(get_object_or_404(get_user_model(), pk=pk)))


@api_view(["GET", "POST"])
def tokens_collection(request):
    """List the caller's tokens, or create one (POST)."""
    if request.method == "POST":
        refusal = _refuse_service_account_token(request)
        if refusal is not None:
            return refusal
    return _owner_tokens(request, request.user, location="api-token")


def _owner_tokens(request, owner, *, location, account=None):
    """List *owner*'s tokens, or issue one for them with the caller as the actor (POST)."""
    if request.method == "GET":
        tokens = Token.objects.for_user(owner).select_related("replaced_by")
        status = request.GET.get("status")
        if status is not None:
            if status not in TokenStatus.values:
                statuses = ", ".join(TokenStatus.values)
                raise BadRequest(
                    _("status must be one of: %(statuses)s.") % {"statuses": statuses},
                    {"status": [_("Use one of: %(statuses)s.") % {"statuses": statuses}]},
                )
            tokens = tokens.with_status(status)
        return JsonResponse(paginate(request, tokens, token_json, prepare=usage_totals))

    policy = SitePolicy.load()
    refusal = _refuse_minting(request, policy, _("Tokens can only be created from a signed-in session."))
    if refusal is not None:
        return refusal
    body = json_body(request, {"name", "purpose", "expires_at", *RESTRICTIONS}, required=("name",))
    if "access" in body and body["access"] is None:
        raise ValidationError({"access": _("Use “read” or “read_write”.")})
    expires_at = parse_expiry(body["expires_at"]) if "expires_at" in body else policy.default_expiry()
    token, plaintext = Token.objects.issue(
        user=owner,
        name=body["name"],
        purpose=body.get("purpose") or "",
        expires_at=expires_at,
        actor=request.user,
        ip=client_ip(request),
        policy=policy,
        # Omitted: the policy's default access, all of the owner's permissions, any address.
        access=body.get("access", policy.default_access),
        permissions=body.get("permissions"),
        allowed_ips=body.get("allowed_ips"),
        caller=request.auth,
    )
    response = no_store(JsonResponse({**token_json(token), "token": plaintext}, status=201))
    response["Location"] = reverse(location, args=[*_account_args(account), token.pk])
    return response


def _refuse_minting(request, policy, message):
    """Refuse, with *message*, a caller who may not mint a token value (create or rotate); None if they may.

    A signed-in session may, once it is recent enough. A credential may only if it is a bearer token
    and the policy lets tokens manage tokens: otherwise a leaked token could mint more, and a legacy
    key never may.
    """
    if request.auth is not None and not (
        request.auth.method == Method.BEARER and policy.bearer_can_create_tokens
    ):
        return forbidden(request, message)
    # Minting is a sensitive step: a session signed in long ago confirms first (in the browser).
    if recent.session_past_window(request):
        return forbidden(request, recent.CONFIRM_FIRST)
    return None


def _account_args(account):
    return [] if account is None else [account.pk]


RESTRICTIONS = ("access", "permissions", "allowed_ips")


@api_view(["GET", "PATCH", "DELETE"])
def tokens_detail(request, pk):
    """Show, change (PATCH) or revoke (DELETE) one of the caller's tokens.

    PATCH takes any of name, access, permissions, allowed_ips and alerts.
    """
    token = own_token_or_404(request, pk)
    if request.method != "GET":
        refusal = _refuse_service_account_token(request)
        if refusal is not None:
            return refusal
    return _one_token(request, token)


def _refuse_service_account_token(request):
    """Refuse a service account's own token managing the account's tokens; None for anyone else.

    Its managers do that from a signed-in session, as themselves; the token may only replace itself
    (``tokens_self_rotate``), which its managers are told of.
    """
    if request.auth is not None and is_service_account(request.user):
        return forbidden(
            request,
            _(
                "A service account's tokens are managed by its managers from a signed-in session; "
                "a token may only rotate itself at /api/tokens/self/rotate."
            ),
        )
    return None


def _one_token(request, token):
    """Show, change (PATCH) or revoke (DELETE) *token*, the caller acting."""
    if request.method == "PATCH":
        body = json_body(request, {"name", "alerts", *RESTRICTIONS})
        if not body:
            raise BadRequest(
                _("Send at least one of: name, access, permissions, allowed_ips, alerts."),
                {"non_field_errors": [_("Nothing to change.")]},
            )
        if "alerts" in body and not isinstance(body["alerts"], bool):
            raise BadRequest(_("The request has invalid fields."), {"alerts": [_("Must be true or false.")]})
        widening = {key: body.get(key, getattr(token, key)) for key in RESTRICTIONS}
        if recent.session_past_window(request) and recent.widens(token, **widening):
            return forbidden(request, recent.CONFIRM_FIRST)
        ip = client_ip(request)
        # One transaction: a bad field anywhere in the body leaves the name unchanged too.
        with transaction.atomic():
            if "name" in body:
                token.rename(body["name"], actor=request.user, ip=ip)
            changes = {key: body[key] for key in RESTRICTIONS if key in body}
            if changes:
                token.set_restrictions(**changes, actor=request.user, ip=ip, caller=request.auth)
            if "alerts" in body:
                token.set_alerts(body["alerts"], actor=request.user, ip=ip, caller=request.auth)
    elif request.method == "DELETE":
        token.revoke(actor=request.user, ip=client_ip(request))
        return HttpResponse(status=204)
    usage_totals([token])
    return JsonResponse(token_json(token))


def _parse_overlap(body, policy):
    """Return the body's ``overlap`` (whole seconds, default 0) as a timedelta, or raise ValidationError."""
    raw = body.get("overlap", 0)
    # JSON numbers only, whole and in range: true is an int to Python, 1e400 a float, "3600" a string.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValidationError({"overlap": _("Use a whole number of seconds.")})
    longest = int(policy.max_rotation_overlap.total_seconds())
    if not 0 <= raw <= longest:
        raise ValidationError(
            {
                "overlap": _("Use a whole number of seconds from 0 to %(max)d (the policy's longest).")
                % {"max": longest}
            }
        )
    return timedelta(seconds=raw)


def _rotate(request, token, policy, *, location="api-token", account=None):
    """Rotate *token* as the body asks and answer 201 with the new token and its value, once."""
    # No body at all is {}: a client rotating itself can POST without one (no overlap, same lifetime).
    body = json_body(request, {"overlap", "expires_at"}) if request.body else {}
    overlap = _parse_overlap(body, policy)
    extra = {"expires_at": parse_expiry(body["expires_at"])} if "expires_at" in body else {}
    try:
        new, plaintext = token.rotate(
            overlap=overlap,
            actor=request.user,
            ip=client_ip(request),
            policy=policy,
            caller=request.auth,
            **extra,
        )
    except Token.NotRotatable as refusal:
        return api_error(
            409,
            _("Only an active token can be rotated; this one is %(status)s.") % {"status": refusal.status},
        )
    response = no_store(JsonResponse({**token_json(new), "token": plaintext}, status=201))
    response["Location"] = reverse(location, args=[*_account_args(account), new.pk])
    return response


@api_view(["POST"])
@sensitive_variables("plaintext")
def tokens_rotate(request, pk):
    """Rotate one of your tokens: a new value with the same settings; the old one works for the overlap."""
    token = own_token_or_404(request, pk)
    refusal = _refuse_service_account_token(request)
    if refusal is not None:
        return refusal
    policy = SitePolicy.load()
    # A token rotates itself at /api/tokens/self/rotate, under its own rule.
    refusal = _refuse_minting(request, policy, _("Tokens can only be rotated from a signed-in session."))
    if refusal is not None:
        return refusal
    return _rotate(request, token, policy)


@api_view(["POST"])
@sensitive_variables("plaintext")
def tokens_self_rotate(request):
    """Rotate the bearer token making the call: recorded with the caller's address and mailed to the owner."""
    if request.auth is None or request.auth.method != Method.BEARER:
        return forbidden(
            request, _("Only a bearer token can rotate itself: call this with the token to replace.")
        )
    policy = SitePolicy.load()
    if not policy.self_rotation_allowed:
        return forbidden(
            request, _("Tokens may not rotate themselves here: the owner rotates them on the site.")
        )
    token = own_token_or_404(request, request.auth.id)
    response = _rotate(request, token, policy)
    if response.status_code == 201:
        # The value is out already: a mail that cannot be sent is logged, the rotation stands.
        token.mail_owner_about_self_rotation(ip=client_ip(request))
    return response


def usage_record_json(record):
    return {
        "at": iso(record.at),
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "accepted": record.accepted,
        "ip": record.ip,
        "user_agent": record.user_agent,
        "duration_ms": round(record.duration_ms, 3),
    }


@api_view(["GET"])
def tokens_usage(request, pk):
    """Return a token's usage: totals, requests per day for 30 days, client IPs, recent requests."""
    token = own_token_or_404(request, pk)
    records = UsageRecord.objects.filter(token=token)
    body = paginate(request, records, usage_record_json)
    daily, (_count, addresses) = token_usage(token, addresses=100)
    body["request_count"] = token.request_count
    body["last_used_at"] = iso(token.last_used_at)
    body["daily"] = [
        {"date": day.isoformat(), "accepted": accepted, "refused": refused}
        for day, accepted, refused in daily
    ]
    body["client_ips"] = [
        {"ip": c.ip, "requests": c.requests, "first_seen": iso(c.first_seen), "last_seen": iso(c.last_seen)}
        for c in addresses
    ]
    return JsonResponse(body)


def csrf_failure(request, reason=""):
    """Answer a failed CSRF check: JSON under /api/, Django's page everywhere else."""
    if request.path_info.startswith(API_PREFIX):
        return api_error(
            403,
            _(
                "CSRF check failed: a signed-in session must send the X-CSRFToken header; "
                "API clients should use a bearer token instead."
            ),
            error="csrf_failed",
        )
    return django_csrf_failure(request, reason)


@require_GET
def openapi(request):
    return JsonResponse(document(request))
