"""What the system records: usage records, refused unknown credentials and the Activity Stream (read-only)."""

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..models import RefusedClient, TokenEvent, UsageRecord
from .common import ReadOnlyAdmin
from .filters import HttpStatusFilter


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "at",
        "user",
        "credential",
        "method",
        "path",
        "status",
        "accepted",
        "ip",
        "user_agent",
        "duration_ms",
    )
    # No token, user or legacy key filter in the sidebar: its choices would load every row of that table.
    # Search by owner or token name instead; the token and legacy key admins link here with
    # ?token__id__exact=<id> or ?legacy_key__id__exact=<id>, and ?user__id__exact=<id> works the same way.
    list_filter = (HttpStatusFilter, "accepted")
    list_select_related = ("user", "token", "legacy_key__user")
    date_hierarchy = "at"
    ordering = ("-at", "-id")
    # Counting millions of rows twice per page is the slow part of a big changelist.
    show_full_result_count = False
    fields = (
        "at",
        "user",
        "token",
        "legacy_key",
        "accepted",
        "method",
        "path",
        "status",
        "ip",
        "user_agent",
        "duration_ms",
    )

    @admin.display(description=_("credential"))
    def credential(self, obj):
        if obj.token_id:
            return format_html("{} <small>({})</small>", obj.token.name, _("token"))
        return format_html(
            "{} <small>({})</small>", _("legacy key #%(id)s") % {"id": obj.legacy_key_id}, _("legacy")
        )


@admin.register(TokenEvent)
class TokenEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "kind", "user", "token", "legacy_key_label", "actor", "ip", "detail")
    list_filter = ("kind", ("at", admin.DateFieldListFilter))
    list_select_related = ("user", "token", "actor")
    date_hierarchy = "at"
    search_fields = ("user__username", "user__email", "token__name")
    ordering = ("-at", "-id")
    fields = ("at", "kind", "user", "token", "legacy_key", "actor", "ip", "detail")

    @admin.display(description=_("legacy key"))
    def legacy_key_label(self, obj):
        return _("#%(id)s") % {"id": obj.legacy_key_id} if obj.legacy_key_id else "-"


@admin.register(RefusedClient)
class RefusedClientAdmin(ReadOnlyAdmin):
    """Who sends unknown credentials: one row per client address and hour, however many attempts.

    A refused known credential (revoked, expired) is a usage record of that credential instead.
    """

    list_display = ("hour", "ip", "attempts", "first_seen", "last_seen", "last_user_agent")
    search_fields = ("ip",)
    date_hierarchy = "hour"
    ordering = ("-hour", "-attempts")
    fields = list_display
