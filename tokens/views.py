"""HTML pages: the profile and Profile > Integrations > Authorizations.

Every page is scoped to the signed-in person: their own tokens, and those of the service accounts
they manage, through the same views (the token's owner is the person or the account; the actor of
every change is always the person).
"""

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .charts import daily_chart
from .constants import MIGRATION_GUIDE_PATH
from .forms import TokenCreateForm, TokenRenameForm, TokenRestrictionsForm, TokenRotateForm
from .http import client_ip, managed_account_or_404, managed_token_or_404, no_store, service_account_of
from .identity import recent
from .models import (
    BrownoutWindow,
    LegacyApiKey,
    ServiceAccount,
    SitePolicy,
    Token,
    TokenEvent,
    TokenStatus,
    UsageRecord,
)
from .models.policy import SecurityLevel
from .models.restrictions import owner_permissions, permission_names
from .usage.read import token_usage, usage_totals

TOKENS_PER_PAGE = 20
EVENTS_PER_PAGE = 25
REQUESTS_PER_PAGE = 25
ADDRESSES_SHOWN = 10


def home(request):
    return redirect("profile" if request.user.is_authenticated else "login")


@login_required
@require_GET
def profile(request):
    """Show the Activity Stream, newest first, and the way to Integrations."""
    Token.objects.for_user(request.user).record_expiries()
    events = TokenEvent.objects.for_user(request.user).select_related("token", "actor")
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "profile/index.html", {"page": page})


@login_required
@require_GET
def service_account_activity(request, account):
    """Show a service account's Activity Stream to its managers: what was done to its tokens, and by whom."""
    service_account = managed_account_or_404(request, account)
    owner = service_account.user
    Token.objects.for_user(owner).record_expiries()
    events = TokenEvent.objects.for_user(owner).select_related("token", "actor")
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request, "tokens/service_account_activity.html", {"page": page, "service_account": service_account}
    )


@login_required
@require_GET
def token_list(request):
    """List the user's tokens, newest first, optionally filtered by status."""
    status = request.GET.get("status", "")
    if status not in TokenStatus.values:
        status = ""
    tokens = Token.objects.for_user(request.user)
    now = timezone.now()
    # One aggregate query for the filter tab counts, whatever the number of tokens.
    counts = tokens.aggregate(
        all=Count("pk"),
        **{key: Count("pk", filter=Token.objects.status_condition(key, now)) for key in TokenStatus.values},
    )
    shown = tokens.with_status(status, now) if status else tokens
    page = Paginator(shown, TOKENS_PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = usage_totals(list(page.object_list))
    filters = [("", _("All"), counts["all"])] + [
        (key, label, counts[key]) for key, label in TokenStatus.choices
    ]
    return render(
        request,
        "tokens/token_list.html",
        {
            "page": page,
            "status": status,
            "filters": filters,
            "has_any": counts["all"] > 0,
            "service_accounts": _service_account_sections(request.user, now),
            **_legacy_notice(request.user),
        },
    )


def _service_account_sections(user, now):
    """Return each service account *user* manages with its tokens still in use (active or rotating)."""
    accounts = list(ServiceAccount.objects.managed_by(user).select_related("user", "team"))
    live = Token.objects.status_condition(TokenStatus.ACTIVE, now) | Token.objects.status_condition(
        TokenStatus.ROTATING, now
    )
    tokens = usage_totals(list(Token.objects.filter(live, user__in=[a.user_id for a in accounts])))
    for account in accounts:
        account.live_tokens = [token for token in tokens if token.user_id == account.user_id]
    return accounts


def _legacy_notice(user):
    """Return the context for the deprecation notice: the user's legacy keys still in use (never a value)."""
    # last_used_at is set on a key's first use each day (middleware), so "used" needs no tail query.
    keys = usage_totals(
        LegacyApiKey.objects.filter(user=user, revoked_at__isnull=True, last_used_at__isnull=False)
        .only("pk", "last_used_at", "last_used_ip", "last_used_user_agent", "request_count")
        .order_by("-last_used_at")
    )
    keys.sort(key=lambda key: key.last_used_at, reverse=True)
    if not keys:
        return {"legacy_keys": []}
    policy = SitePolicy.load()
    now = timezone.now()
    return {
        "legacy_keys": keys,
        "legacy_sunset_at": policy.legacy_sunset_at,
        "legacy_accepted": policy.level_in_force(now) == SecurityLevel.COMPATIBILITY,
        # Scheduled brownouts still to come (or under way), so owners can watch their clients in them.
        "brownouts": list(BrownoutWindow.objects.upcoming(now)[:10]),
        "now": now,
        "migration_guide_url": MIGRATION_GUIDE_PATH,
    }


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
@sensitive_post_parameters()
@sensitive_variables("plaintext")
@recent.recent_sign_in_required
def token_create(request, account=None):
    """Show the create form; on a valid POST, issue the token and answer with the one reveal.

    The token is the signed-in person's, or with *account* that of a service account they manage.
    The reveal is this response itself: the value is rendered into it and kept nowhere else (not the
    session, a cache, a message or a log). A resubmission of the same form (reload, back, second tab)
    carries the same nonce, so ``issue`` creates nothing and the user lands on the token's detail page.
    """
    service_account = None if account is None else managed_account_or_404(request, account)
    owner = request.user if service_account is None else service_account.user
    policy = SitePolicy.load()
    page = {"service_account": service_account}
    if request.method == "GET":
        form = TokenCreateForm(user=owner, policy=policy)
        return render(request, "tokens/token_form.html", {"form": form, **page})

    form = TokenCreateForm(request.POST, user=owner, policy=policy)
    if form.is_valid():
        try:
            token, plaintext = Token.objects.issue(
                user=owner,
                name=form.cleaned_data["name"],
                purpose=form.cleaned_data["purpose"],
                expires_at=form.expires_at(),
                actor=request.user,
                ip=client_ip(request),
                policy=policy,
                now=form.now,
                nonce=form.cleaned_data["nonce"],
                **form.restrictions(),
            )
        except Token.AlreadyIssued as repeat:
            messages.info(
                request,
                _(
                    "This form was already submitted and created the token “%(name)s”. Its value was shown "
                    "once and cannot be shown again; if you did not copy it, revoke this token and create "
                    "a new one."
                )
                % {"name": repeat.token.name},
            )
            return _see_other(_detail_url(repeat.token))
        except ValidationError as error:
            form.add_model_errors(error)
        else:
            response = render(
                request, "tokens/token_reveal.html", {"token": token, "plaintext": plaintext, **page}
            )
            # never_cache already forbids storing; say it once more in the strongest form for this response.
            return no_store(response)
    return render(request, "tokens/token_form.html", {"form": form, **page}, status=400)


def _detail_url(token):
    return reverse("tokens:detail", args=[token.pk])


def _see_other(url):
    """Redirect with 303 so the browser follows with a GET, never re-posting the form."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@login_required
@require_GET
def token_detail(request, pk):
    token = managed_token_or_404(request, pk)
    return render(
        request,
        "tokens/token_detail.html",
        _detail_context(request, token, TokenRenameForm(initial={"name": token.name})),
    )


def _abilities(token):
    """Return what the token may do, in words: its permissions by name, and those the owner lost since."""
    if token.permissions is None:
        return {"permission_names": None, "lapsed": []}
    names = permission_names(token.permissions)
    held = owner_permissions(token.user)
    return {
        "permission_names": [names[p] for p in token.permissions if p in held],
        "lapsed": [names[p] for p in token.permissions if p not in held],
    }


def _detail_context(request, token, rename_form, restrictions_form=None):
    """Return the detail page context with a constant number of queries, however much the token was used."""
    rows, (address_count, addresses) = token_usage(token, addresses=ADDRESSES_SHOWN)
    chart = daily_chart(
        [day for day, _accepted, _refused in rows],
        [
            (_("accepted"), "series-accepted", [accepted for _day, accepted, _refused in rows]),
            (_("refused"), "series-refused", [refused for _day, _accepted, refused in rows]),
        ],
        title=_("Requests per day, last 30 days"),
        chart_id="usage-chart",
    )
    # Keyset pagination over the raw records: newest first, "older" continues below the last row shown.
    # An offset paginator would COUNT and skip over millions of rows; the (token, at) index serves this
    # directly, and the page size + 1 row tells whether there is an older page.
    records = UsageRecord.objects.filter(token=token).order_by("-at", "-id")
    before = _int_or_none(request.GET.get("before"))
    if before is not None:
        cursor = UsageRecord.objects.filter(token=token, pk=before).values_list("at", flat=True).first()
        if cursor is None:
            raise Http404
        # at <= cursor bounds the index range, so deep pages seek instead of walking the newer rows.
        records = records.filter(at__lte=cursor).exclude(at=cursor, pk__gte=before)
    recent = list(records[: REQUESTS_PER_PAGE + 1])
    older = recent[REQUESTS_PER_PAGE - 1].pk if len(recent) > REQUESTS_PER_PAGE else None
    return {
        "token": token,
        "service_account": service_account_of(token),
        "rename_form": rename_form,
        "restrictions_form": restrictions_form or TokenRestrictionsForm(token=token),
        **_abilities(token),
        "chart": chart,
        "days_total": sum(accepted + refused for _day, accepted, refused in rows),
        "address_count": address_count,
        "addresses": addresses,
        "recent": recent[:REQUESTS_PER_PAGE],
        "older": older,
        "paged": before is not None,
        "events": token.events.select_related("actor")[:10],
    }


def _int_or_none(value):
    # ASCII digits, few enough for a 64-bit id: "²" or a hundred digits is simply no cursor.
    return int(value) if value is not None and re.fullmatch(r"[0-9]{1,18}", value) else None


@login_required
@require_POST
@csrf_protect
def token_rename(request, pk):
    token = managed_token_or_404(request, pk)
    form = TokenRenameForm(request.POST)
    if form.is_valid():
        old = token.name
        try:
            token.rename(form.cleaned_data["name"], actor=request.user, ip=client_ip(request))
        except ValidationError as error:
            form.add_model_errors(error)
        else:
            if token.name != old:
                messages.success(
                    request, _("Renamed “%(old)s” to “%(new)s”.") % {"old": old, "new": token.name}
                )
            return _see_other(_detail_url(token))
    return render(request, "tokens/token_detail.html", _detail_context(request, token, form), status=400)


@login_required
@require_POST
@csrf_protect
def token_restrict(request, pk):
    """Change what the token may do: access, permissions, allowed addresses (one event per change)."""
    token = managed_token_or_404(request, pk)
    form = TokenRestrictionsForm(request.POST, token=token)
    if form.is_valid():
        # Narrowing is always welcome; widening gives an old secret more reach: sign in recently first.
        if recent.widens(token, **form.restrictions()) and not recent.signed_in_recently(request):
            return recent.ask_to_confirm(request)
        try:
            changed = token.set_restrictions(**form.restrictions(), actor=request.user, ip=client_ip(request))
        except ValidationError as error:
            for errors in form.add_restriction_errors(error).values():
                form.add_error(None, errors)
        else:
            if changed:
                messages.success(
                    request,
                    _("Saved. “%(name)s” is limited as shown from its next request on.")
                    % {"name": token.name},
                )
            return _see_other(_detail_url(token))
    context = _detail_context(request, token, TokenRenameForm(initial={"name": token.name}), form)
    return render(request, "tokens/token_detail.html", context, status=400)


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
@sensitive_post_parameters()
@sensitive_variables("plaintext")
@recent.recent_sign_in_required
def token_rotate(request, pk):
    """Ask for the overlap and the expiry (GET), then rotate and answer with the new value's one reveal.

    Every show-once rule of the create form holds: the reveal is this response, sent ``no-store``; the
    value is kept nowhere; a resubmission carries the same nonce and lands on the new token's page.
    """
    token = managed_token_or_404(request, pk)
    policy = SitePolicy.load()
    if request.method == "GET" and not token.is_active:
        return _not_rotatable(request, token, token.status)
    form = TokenRotateForm(request.POST or None, token=token, policy=policy)
    if request.method == "POST" and form.is_valid():
        try:
            new, plaintext = token.rotate(
                **form.rotation(), actor=request.user, ip=client_ip(request), policy=policy
            )
        except Token.AlreadyIssued as repeat:
            messages.info(
                request,
                _(
                    "This form was already submitted and rotated “%(name)s”. The new value was shown once "
                    "and cannot be shown again; if you did not copy it, revoke the new token and rotate "
                    "again from the old one while it still works, or create a new token."
                )
                % {"name": repeat.token.name},
            )
            return _see_other(_detail_url(repeat.token))
        except Token.NotRotatable as refusal:
            return _not_rotatable(request, token, refusal.status)
        except ValidationError as error:
            form.add_model_errors(error)
        else:
            page = {"service_account": service_account_of(token)}
            response = render(
                request,
                "tokens/token_reveal.html",
                {"token": new, "plaintext": plaintext, "replaced": token, **page},
            )
            return no_store(response)
    status = 400 if request.method == "POST" else 200
    context = {"token": token, "form": form, "service_account": service_account_of(token)}
    return render(request, "tokens/token_rotate.html", context, status=status)


def _not_rotatable(request, token, status):
    messages.error(
        request,
        _("Only an active token can be rotated; “%(name)s” is %(status)s.")
        % {"name": token.name, "status": TokenStatus(status).label.lower()},
    )
    return _see_other(_detail_url(token))


@login_required
@require_http_methods(["GET", "POST"])
@csrf_protect
def token_revoke(request, pk):
    """Ask for confirmation (GET), then revoke (POST): works without JavaScript."""
    token = managed_token_or_404(request, pk)
    if request.method == "GET":
        usage_totals([token])
        context = {"token": token, "service_account": service_account_of(token)}
        return render(request, "tokens/token_revoke.html", context)
    if token.revoke(actor=request.user, ip=client_ip(request)):
        messages.success(
            request, _("Revoked “%(name)s”. Requests with it are refused from now on.") % {"name": token.name}
        )
    else:
        messages.info(request, _("“%(name)s” was already revoked.") % {"name": token.name})
    return _see_other(_detail_url(token))


@login_required
@require_POST
@csrf_protect
def token_alerts(request, pk):
    """Switch the token's new-address alerts on or off (the detail page's form)."""
    token = managed_token_or_404(request, pk)
    enabled = request.POST.get("alerts") == "on"
    if token.set_alerts(enabled, actor=request.user, ip=client_ip(request)):
        if enabled:
            messages.success(
                request,
                _("You will be mailed when “%(name)s” is used from a new address.") % {"name": token.name},
            )
        else:
            messages.success(request, _("Alerts for “%(name)s” are muted.") % {"name": token.name})
    return _see_other(_detail_url(token))
