"""Legacy API keys: the read-only list, revoking, and the page that tracks the migration to bearer tokens."""

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Q
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from ..charts import daily_chart
from ..models import ClientAddress, DailyUsage, ExpirationPolicy, LegacyApiKey, UsageRecord
from ..models.usage import client_addresses, usage_totals
from .common import CredentialColumnsMixin, ReadOnlyAdmin, revoke_each
from .filters import MIGRATION_WINDOW_DAYS, LegacyStatusFilter, RecentUseFilter


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
        )

    def get_urls(self):
        return [
            path(
                "migration/",
                self.admin_site.admin_view(self.migration_view),
                name="tokens_legacyapikey_migration",
            ),
            *super().get_urls(),
        ]

    def migration_view(self, request):
        """Show who still uses legacy keys, from where, and legacy versus bearer requests per day."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        since = now - timedelta(days=MIGRATION_WINDOW_DAYS)
        keys = LegacyApiKey.objects.all()
        legacy_records = UsageRecord.objects.filter(legacy_key__isnull=False)
        # Used in the window: by the summaries, or by a record not summarised yet (a subquery, an index
        # range above the watermark). last_used_at itself is set at a key's first use each day.
        used = Q(last_used_at__gte=since) | Q(
            pk__in=legacy_records.unsummarised().filter(accepted=True, at__gte=since).values("legacy_key_id")
        )
        in_use = (
            keys.active()
            .filter(used)
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
            legacy_records,
            limit=100,
            related=("legacy_key__user",),
        )
        legacy = DailyUsage.objects.filter(legacy_key__isnull=False).series(
            days=MIGRATION_WINDOW_DAYS, records=legacy_records
        )
        bearer = DailyUsage.objects.filter(token__isnull=False).series(
            days=MIGRATION_WINDOW_DAYS, records=UsageRecord.objects.filter(token__isnull=False)
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
        policy = ExpirationPolicy.load()
        context = {
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
                "users_in_use": keys.active()
                .filter(used)
                .values("user")
                .distinct()
                .count(),
            },
            "in_use": sorted(usage_totals(in_use), key=lambda key: key.last_used_at, reverse=True),
            "clients": clients,
            "chart": chart,
            "legacy_total": sum(accepted for _d, accepted, _r in legacy),
            "bearer_total": sum(accepted for _d, accepted, _r in bearer),
            "policy": policy,
            "refusal": policy.legacy_refusal(now),
        }
        return TemplateResponse(request, "admin/tokens/legacyapikey/migration.html", context)
