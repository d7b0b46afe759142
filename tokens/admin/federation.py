"""Keyless CI in the admin: every trust policy (deleting one revokes its live tokens) and every exchange."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..models import TokenExchange, TrustPolicy
from .common import ReadOnlyAdmin


@admin.register(TrustPolicy)
class TrustPolicyAdmin(admin.ModelAdmin):
    """Owners make and change their policies on their pages; administrators see them and may delete them."""

    list_display = ("name", "user", "issuer", "audience", "conditions", "token_lifetime", "last_exchange")
    list_select_related = ("user",)
    list_filter = ("issuer",)
    search_fields = ("name", "user__username", "conditions")
    ordering = ("-created_at", "-id")
    fields = (
        "name",
        "user",
        "issuer",
        "audience",
        "conditions",
        "access",
        "permissions",
        "allowed_ips",
        "token_lifetime",
        "max_live_tokens",
        "created_at",
        "last_exchange",
        "exchanges_link",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).with_last_exchange()

    @admin.display(description=_("last exchange"), ordering="last_exchange_at")
    def last_exchange(self, obj):
        return obj.last_exchange_at

    @admin.display(description=_("exchanges"))
    def exchanges_link(self, obj):
        url = reverse("admin:tokens_tokenexchange_changelist") + f"?policy__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, _("Exchanges of this policy"))

    def delete_model(self, request, obj):
        obj.remove(actor=request.user)

    def delete_queryset(self, request, queryset):
        for policy in queryset:
            policy.remove(actor=request.user)


@admin.register(TokenExchange)
class TokenExchangeAdmin(ReadOnlyAdmin):
    """Every exchange, accepted or refused, with the reason the caller was not told."""

    list_display = (
        "at",
        "accepted",
        "reason",
        "issuer",
        "subject",
        "repository",
        "job",
        "policy_label",
        "user",
    )
    list_filter = ("accepted", "issuer")
    list_select_related = ("user", "policy", "token")
    search_fields = ("subject", "repository", "policy_name", "user__username")
    date_hierarchy = "at"
    ordering = ("-at", "-id")
    fields = (
        "at",
        "accepted",
        "reason",
        "ip",
        "issuer",
        "subject",
        "repository",
        "job",
        "job_url",
        "policy",
        "policy_name",
        "user",
        "token",
    )

    @admin.display(description=_("trust policy"))
    def policy_label(self, obj):
        return obj.policy.name if obj.policy else obj.policy_name or "–"
