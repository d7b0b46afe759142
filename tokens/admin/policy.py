"""The expiration policy: one row, edited in place, checked by the model's ``clean()``."""

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..http import client_ip
from ..models import ExpirationPolicy, Token
from .forms import ExpirationPolicyForm

EXCEEDING_SHOWN = 10


@admin.register(ExpirationPolicy)
class ExpirationPolicyAdmin(admin.ModelAdmin):
    """The one policy row: no list, no add, no delete. Validation is the model's ``clean()``."""

    form = ExpirationPolicyForm
    fieldsets = (
        (
            _("Token lifetimes"),
            {
                "fields": (
                    "default_lifetime",
                    "minimum_lifetime",
                    "maximum_lifetime",
                    "no_expiry_allowed_for",
                    "presets",
                )
            },
        ),
        (_("Tokens exceeding the maximum"), {"fields": ("exceeding_tokens",)}),
        (_("Limits"), {"fields": ("max_active_tokens", "bearer_can_create_tokens")}),
        (
            _("Notices and retention"),
            {"fields": ("expiry_notice_days", "new_address_alerts", "usage_retention_days")},
        ),
        (
            _("Legacy API keys"),
            {"fields": ("legacy_keys_accepted", "legacy_deprecated_at", "legacy_sunset_at")},
        ),
        (_("History"), {"fields": ("updated_at",)}),
    )
    readonly_fields = ("exceeding_tokens", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        """Go straight to the one row: a list of one policy would only be a detour."""
        policy = ExpirationPolicy.load()
        return redirect(reverse("admin:tokens_expirationpolicy_change", args=[policy.pk]))

    @admin.display(description=_("active tokens living longer than the maximum"))
    def exceeding_tokens(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        tokens = Token.objects.exceeding(obj.maximum_lifetime).select_related("user").order_by("expires_at")
        total = tokens.count()
        if not total:
            return _("None: every active token expires within the maximum lifetime.")
        url = reverse("admin:tokens_token_changelist") + "?exceeds=yes"
        rows = format_html_join(
            "",
            "{} ({}): {}<br>",
            (
                (
                    t.name,
                    t.user.get_username(),
                    t.expires_at.strftime("%Y-%m-%d %H:%M UTC") if t.expires_at else _("never expires"),
                )
                for t in tokens[:EXCEEDING_SHOWN]
            ),
        )
        summary = ngettext(
            "%(n)d active token lives longer than the maximum.",
            "%(n)d active tokens live longer than the maximum.",
            total,
        ) % {"n": total}
        return format_html(
            '<p>{}</p><p class="exceeding-tokens">{}</p><p><a href="{}">{}</a></p>',
            summary,
            rows,
            url,
            _("Open them in the token list to shorten them to the maximum"),
        )

    def save_model(self, request, obj, form, change):
        # The policy row only, then a plain read: no token or owner row (docs/security.md, "Lock order").
        super().save_model(request, obj, form, change)
        # The Activity Stream and the event feed say who changed which settings, like any token change.
        obj.record_change(actor=request.user, fields=form.changed_data, ip=client_ip(request))
        # Lowering the maximum leaves existing tokens alone; say so, so nothing changes silently.
        exceeding = Token.objects.exceeding(obj.maximum_lifetime).count()
        if exceeding:
            self.message_user(
                request,
                ngettext(
                    "%(n)d active token lives longer than the maximum lifetime. It was not changed; "
                    "shorten it from the token list if needed.",
                    "%(n)d active tokens live longer than the maximum lifetime. They were not changed; "
                    "shorten them from the token list if needed.",
                    exceeding,
                )
                % {"n": exceeding},
                messages.WARNING,
            )
