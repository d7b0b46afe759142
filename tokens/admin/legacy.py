"""Legacy API keys: the read-only list, revoking, and the page that tracks the migration to bearer tokens."""

from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Max, Q
from django.db.models.functions import TruncDate
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy
from django.views.decorators.http import require_POST

from ..charts import daily_chart
from ..http import client_ip
from ..models import (
    BrownoutWindow,
    ClientAddress,
    DailyUsage,
    LegacyApiKey,
    RehearsedSessionRequest,
    SitePolicy,
    UsageRecord,
)
from ..models.policy import RehearsalLevel, SecurityLevel
from ..usage.read import client_addresses, read_exactly, usage_totals
from .common import CredentialColumnsMixin, ReadOnlyAdmin, revoke_each
from .filters import MIGRATION_WINDOW_DAYS, LegacyStatusFilter, RecentUseFilter


def transition_numbers(policy, now=None):
    """Return the numbers the next step of the cutover depends on (the policy page and the overview)."""
    now = now or timezone.now()
    since = now - timedelta(days=MIGRATION_WINDOW_DAYS)
    level = policy.level_in_force(now)
    following = policy.next_level(now)
    if following == SecurityLevel.HIGH:
        # High refuses exactly the legacy-key requests that are accepted today.
        refused = UsageRecord.objects.filter(at__gte=since, legacy_key__isnull=False, accepted=True).count()
        next_refused = str(refused)
    elif following == SecurityLevel.BEARER_ONLY and policy.rehearsal_level == RehearsalLevel.BEARER_ONLY:
        started = max(since, policy.rehearsal_started_at or since)
        next_refused = str(RehearsedSessionRequest.objects.filter(at__gte=started).count())
    elif following == SecurityLevel.BEARER_ONLY:
        # Session requests are only recorded while Bearer only is rehearsed.
        next_refused = str(_("not counted yet: rehearse Bearer only to count browser sessions on the API"))
    else:
        next_refused = "-"
    return {
        "window_days": MIGRATION_WINDOW_DAYS,
        "level": level,
        "level_label": SecurityLevel(level).label,
        "next_level": following,
        "next_label": (
            _("Requests in the last %(n)d days that %(level)s would refuse")
            % {"n": MIGRATION_WINDOW_DAYS, "level": SecurityLevel(following).label.split(":")[0]}
            if following
            else _("Next level")
        ),
        "next_refused": next_refused if following else _("none: the strictest level is in force"),
        "keys_in_use": LegacyApiKey.objects.active().used_since(since).count(),
    }


def rehearsal_report(policy, now=None):
    """Return what the rehearsed level would refuse if the switch happened now, from the recorded uses.

    Counted from the records themselves (by "at", the usage_at index), since the rehearsal started and
    within the overview's window: per day, per key and owner, per client address and user agent.
    """
    now = now or timezone.now()
    since = now - timedelta(days=MIGRATION_WINDOW_DAYS)
    if policy.rehearsal_level == RehearsalLevel.NONE:
        return None
    started = max(since, policy.rehearsal_started_at or since)
    legacy = UsageRecord.objects.filter(at__gte=started, would_refuse=True)
    sessions = RehearsedSessionRequest.objects.filter(at__gte=started)
    if policy.rehearsal_level != RehearsalLevel.BEARER_ONLY:
        sessions = sessions.none()
    per_day = {}
    for rows in (legacy, sessions):
        for row in rows.annotate(day=TruncDate("at")).values("day").annotate(n=Count("pk")):
            per_day[row["day"]] = per_day.get(row["day"], 0) + row["n"]
    first = now.date() - timedelta(days=MIGRATION_WINDOW_DAYS - 1)
    days = [first + timedelta(days=i) for i in range(MIGRATION_WINDOW_DAYS)]
    chart = daily_chart(
        days,
        [
            (
                _("requests the rehearsed level would refuse"),
                "series-refused",
                [per_day.get(d, 0) for d in days],
            )
        ],
        title=_("Requests the rehearsed level would refuse, per day"),
        chart_id="rehearsal-chart",
    )
    per_key = list(
        legacy.values("legacy_key_id", "legacy_key__user__username", "legacy_key__user__email")
        .annotate(requests=Count("pk"), last=Max("at"))
        .order_by("-requests", "legacy_key_id")[:100]
    )
    per_session_user = list(
        sessions.values("user_id", "user__username", "user__email")
        .annotate(requests=Count("pk"), last=Max("at"))
        .order_by("-requests", "user_id")[:100]
    )
    clients = {}
    for rows, kind in ((legacy, _("legacy key")), (sessions, _("browser session"))):
        for row in rows.values("ip", "user_agent").annotate(requests=Count("pk"), last=Max("at")):
            entry = clients.setdefault(
                (row["ip"], row["user_agent"]),
                {
                    "ip": row["ip"],
                    "user_agent": row["user_agent"],
                    "requests": 0,
                    "last": row["last"],
                    "kinds": [],
                },
            )
            entry["requests"] += row["requests"]
            entry["last"] = max(entry["last"], row["last"])
            entry["kinds"].append(kind)
    requests = sum(per_day.values())
    return {
        "level": policy.get_rehearsal_level_display(),
        "started": started,
        "chart": chart,
        "per_key": per_key,
        "per_session_user": per_session_user,
        "clients": sorted(clients.values(), key=lambda c: (-c["requests"], str(c["ip"])))[:100],
        "requests": requests,
        "clients_total": len(clients),
        "nothing_would_break": requests == 0,
    }


@admin.register(LegacyApiKey)
class LegacyApiKeyAdmin(CredentialColumnsMixin, ReadOnlyAdmin):
    """Imported keys, read-only (import with the import_legacy_keys command); revoke is the one action.

    Nothing about a key is editable, so the detail page is read-only; revoking needs the change permission.
    """

    list_display = (
        "__str__",
        "owner",
        "status_label",
        "imported_at",
        "last_used_at",
        "last_used_ip",
        "last_used_user_agent",
        "request_count",
    )
    list_filter = (LegacyStatusFilter, RecentUseFilter)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    # Most recently used first, never-used last on every database (PostgreSQL sorts NULL first by default).
    ordering = (F("last_used_at").desc(nulls_last=True), "-id")
    actions = ("revoke_selected",)
    fields = (
        "user",
        "status_label",
        "imported_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
        "last_used_ip",
        "last_used_user_agent",
        "request_count",
        "usage_link",
    )
    readonly_fields = fields
    usage_lookup = "legacy_key"
    usage_link_text = _("Requests made with this key")

    def has_revoke_permission(self, request):
        return request.user.has_perm("tokens.change_legacyapikey")

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return _("revoked") if obj.revoked_at else _("active")

    @admin.action(description=_("Revoke selected legacy keys"), permissions=("revoke",))
    def revoke_selected(self, request, queryset):
        revoke_each(
            self,
            request,
            queryset,
            message=ngettext_lazy("Revoked %(n)d legacy key.", "Revoked %(n)d legacy keys.", "n"),
            ip=client_ip(request),
        )

    def get_urls(self):
        return [
            path(
                "migration/",
                self.admin_site.admin_view(self.migration_view),
                name="tokens_legacyapikey_migration",
            ),
            path(
                "migration/notify/",
                self.admin_site.admin_view(self.notify_owners_view),
                name="tokens_legacyapikey_notify",
            ),
            *super().get_urls(),
        ]

    def migration_view(self, request):
        """Show who still uses legacy keys, from where, and legacy versus bearer requests per day."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        # Key rows, chart, clients and totals add up: all as of one watermark.
        context = read_exactly(lambda: self._migration_context(request))
        return TemplateResponse(request, "admin/tokens/legacyapikey/migration.html", context)

    def _migration_context(self, request):
        now = timezone.now()
        since = now - timedelta(days=MIGRATION_WINDOW_DAYS)
        keys = LegacyApiKey.objects.all()
        legacy_tail = UsageRecord.objects.unsummarised(legacy_key__isnull=False)
        in_use = (
            keys.active()
            .used_since(since)
            .select_related("user")
            .annotate(
                active_tokens=Count(
                    "user__api_tokens",
                    filter=Q(user__api_tokens__revoked_at__isnull=True)
                    & (
                        Q(user__api_tokens__expires_at__isnull=True) | Q(user__api_tokens__expires_at__gt=now)
                    ),
                ),
            )
            .order_by("-last_used_at")
        )
        _count, clients = client_addresses(
            ClientAddress.objects.filter(legacy_key__isnull=False, last_seen__gte=since).select_related(
                "legacy_key__user"
            ),
            legacy_tail,
            limit=100,
            related=("legacy_key__user",),
        )
        legacy = DailyUsage.objects.filter(legacy_key__isnull=False).series(
            days=MIGRATION_WINDOW_DAYS, tail=legacy_tail
        )
        bearer = DailyUsage.objects.filter(token__isnull=False).series(
            days=MIGRATION_WINDOW_DAYS, tail=UsageRecord.objects.unsummarised(token__isnull=False)
        )
        chart = daily_chart(
            [day for day, _a, _r in legacy],
            [
                (_("bearer token requests"), "series-bearer", [accepted for _d, accepted, _r in bearer]),
                (_("legacy key requests"), "series-legacy", [accepted for _d, accepted, _r in legacy]),
            ],
            title=_("Accepted API requests per day, last %(n)d days") % {"n": MIGRATION_WINDOW_DAYS},
            chart_id="migration-chart",
        )
        policy = SitePolicy.load()
        return {
            **self.admin_site.each_context(request),
            "title": _("Migration off legacy API keys"),
            "opts": self.opts,
            "window_days": MIGRATION_WINDOW_DAYS,
            "counts": {
                "total": keys.count(),
                "active": keys.active().count(),
                "in_use": in_use.count(),
                "never_used": keys.active().filter(last_used_at__isnull=True).count(),
                "revoked": keys.filter(revoked_at__isnull=False).count(),
                "users_in_use": keys.active().used_since(since).values("user").distinct().count(),
            },
            "in_use": sorted(usage_totals(in_use), key=lambda key: key.last_used_at, reverse=True),
            "clients": clients,
            "chart": chart,
            "legacy_total": sum(accepted for _d, accepted, _r in legacy),
            "bearer_total": sum(accepted for _d, accepted, _r in bearer),
            "policy": policy,
            "refusal": policy.legacy_refusal(now),
            "transition": transition_numbers(policy, now),
            "rehearsal": rehearsal_report(policy, now),
            "brownouts": BrownoutWindow.objects.upcoming(now),
            "can_notify": self.has_revoke_permission(request),
        }

    @method_decorator(require_POST)
    def notify_owners_view(self, request):
        """Mail the owners of keys used in the last 30 days (POST, CSRF by the admin); at most once a day."""
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        report = LegacyApiKey.objects.notify_owners(actor=request.user, usage_totals=usage_totals)
        if report.owners:
            self.message_user(
                request,
                _("Mailed %(owners)s about %(keys)s.")
                % {
                    "owners": ngettext("%(n)d owner", "%(n)d owners", report.owners) % {"n": report.owners},
                    "keys": ngettext("%(n)d legacy key", "%(n)d legacy keys", report.keys)
                    % {"n": report.keys},
                },
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request, _("Nobody new to mail: every owner in use was already mailed today."), messages.INFO
            )
        if report.without_email:
            self.message_user(
                request,
                _("Owners without an e-mail address, not mailed: %(names)s.")
                % {"names": ", ".join(report.without_email)},
                messages.WARNING,
            )
        if report.failed:
            self.message_user(
                request,
                _("Could not mail: %(names)s. Check EMAIL_URL and send again.")
                % {"names": ", ".join(report.failed)},
                messages.ERROR,
            )
        return redirect(reverse("admin:tokens_legacyapikey_migration"))
