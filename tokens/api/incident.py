"""Incident response endpoints: report leaked credentials, GitHub secret scanning, the event feed.

The two reporting endpoints take no authentication (whoever finds a leaked value should be able to
kill it) and so answer nothing that tells a real value from a made-up one.
"""

import re

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from .. import github, leaks, throttle
from ..errors import api_error, forbidden
from ..http import client_ip
from ..models import TokenEvent
from .base import BadRequest, api_view, json_body, parse_json, too_large

MAX_REPORTED_VALUES = 1000
# 1,000 values of a few hundred characters each, with room for the source and URL.
MAX_REPORT_BYTES = 512 * 1024
# GitHub's batches are small; the limit only bounds the work an authentic request can ask for.
MAX_GITHUB_BYTES = 1024 * 1024
MAX_VALUE_LENGTH = 1000

EVENTS_DEFAULT_LIMIT = 100
EVENTS_MAX_LIMIT = 1000
MAX_EVENT_ID = 2**63 - 1
# ASCII digits only: "²".isdigit() is True, and int() refuses it.
_DIGITS = re.compile(r"[0-9]{1,19}")


def _optional_text(body, key, limit):
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(_("The request has invalid fields."), {key: [_("Must be a string.")]})
    return leaks.printable(value, limit)


@csrf_exempt
@api_view(["POST"])
def credentials_revoke(request):
    """Revoke leaked tokens and legacy keys reported by anyone; always the same 202 for any values."""
    ip = client_ip(request)
    # Counted before any lookup, per client address (LEAK_REPORTS_PER_ADDRESS in 10 minutes).
    wait = throttle.count_leak_report(request)
    if wait is not None:
        response = api_error(429, _("Too many reports from this address. Try again later."))
        response["Retry-After"] = str(wait)
        return response
    body = json_body(request, limit=MAX_REPORT_BYTES)
    if not isinstance(body, dict):
        raise BadRequest(_("The body must be a JSON object."))
    fields = {key: [_("Unknown field.")] for key in body if key not in {"credentials", "source", "url"}}
    values = body.get("credentials")
    if (
        not isinstance(values, list)
        or not 1 <= len(values) <= MAX_REPORTED_VALUES
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_VALUE_LENGTH for v in values)
    ):
        fields["credentials"] = [
            _("A list of 1 to %(n)d values (strings of up to %(len)d characters).")
            % {"n": MAX_REPORTED_VALUES, "len": MAX_VALUE_LENGTH}
        ]
    if fields:
        raise BadRequest(_("The request has invalid fields."), fields)
    source = _optional_text(body, "source", leaks.SOURCE_MAX_LENGTH)
    url = _optional_text(body, "url", leaks.URL_MAX_LENGTH)
    leaks.revoke_reported([v.strip() for v in values], source=source, url=url, ip=ip)
    # The same answer for real, revoked and made-up values: it only repeats how many were sent.
    return JsonResponse({"received": len(values)}, status=202)


def _github_items(raw):
    """Parse GitHub's list of {"token", "type", "url", "source"}, or raise BadRequest."""
    items = parse_json(raw)
    if not isinstance(items, list) or len(items) > MAX_REPORTED_VALUES:
        raise BadRequest(
            _("The body must be a JSON list of at most %(n)d matches.") % {"n": MAX_REPORTED_VALUES}
        )
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("token"), str)
            or not all(isinstance(item.get(k, ""), str) for k in ("type", "url", "source"))
        ):
            raise BadRequest(
                _('Each match must be an object with a string "token", "type", "url" and "source".')
            )
    return items


@csrf_exempt
@api_view(["POST"])
def github_secret_scanning(request):
    """Answer GitHub's secret scanning partner request: revoke true positives, label every match."""
    if too_large(request, MAX_GITHUB_BYTES):
        raise BadRequest(_("The body is too large."), status=413)
    # The signature covers the raw bytes: checked before the body is even parsed.
    if not github.verify_request(request):
        return api_error(
            401, _("The request is not signed by a configured GitHub key."), error="invalid_signature"
        )
    items = _github_items(request.body)
    ip = client_ip(request)
    answer = []
    for item in items:
        value = item["token"].strip()
        found = leaks.revoke_reported(
            [value],
            source=leaks.printable(
                f"GitHub secret scanning ({item.get('source', '')})", leaks.SOURCE_MAX_LENGTH
            ),
            url=leaks.printable(item.get("url", ""), leaks.URL_MAX_LENGTH),
            ip=ip,
        ).get(value)
        answer.append(
            {
                "token_hash": github.token_hash(item["token"]),
                "token_type": item.get("type", ""),
                # A value in its rotation overlap still works; one that made live tokens was exploitable.
                "label": "true_positive" if found and found.revoked_anything else "false_positive",
            }
        )
    return JsonResponse(answer, safe=False)


def event_json(event):
    """Return the export shape of *event* (the same for the API and ``export_events``)."""

    def who(user):
        return {"id": user.pk, "username": user.get_username()} if user is not None else None

    return {
        "id": event.pk,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "user": who(event.user),
        "actor": who(event.actor),
        "token_id": event.token_id,
        "legacy_key_id": event.legacy_key_id,
        "ip": event.ip,
        "detail": event.detail,
    }


def _bounded_int(request, name, *, default, low, high):
    raw = request.GET.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        message = _("Enter a whole number from %(low)d to %(high)d.") % {"low": low, "high": high}
        raise BadRequest(_("%(name)s is out of range.") % {"name": name}, {name: [message]})
    return int(raw)


@api_view(["GET"])
def events_feed(request):
    """Return every user's events after the cursor, oldest first, for a SIEM to tail without gaps."""
    if not request.user.has_perm("tokens.view_tokenevent"):
        return forbidden(request, _("Reading the event feed needs the view activity event permission."))
    after = _bounded_int(request, "after", default=0, low=0, high=MAX_EVENT_ID)
    limit = _bounded_int(request, "limit", default=EVENTS_DEFAULT_LIMIT, low=1, high=EVENTS_MAX_LIMIT)
    events = TokenEvent.objects.feed(after=after, limit=limit)
    next_url = None
    if len(events) == limit:
        query = request.GET.copy()
        query["after"] = events[-1].pk
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return JsonResponse({"results": [event_json(e) for e in events], "next": next_url})
