"""The site policy: one row, edited in place, checked by the model's ``clean()``."""

from datetime import datetime

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..http import client_ip
from ..models import BrownoutWindow, SitePolicy, Token
from .forms import BrownoutWindowForm, SitePolicyForm
from .legacy import transition_numbers

EXCEEDING_SHOWN = 10


class BrownoutWindowInline(admin.StackedInline):
    """Scheduled brownouts, edited with the policy: every change is audited with the policy's save.

    Stacked, so that each field has its own label: a tabular inline names its inputs only by column
    headers, one of them empty, which screen readers do not announce as the inputs' names.
    """

    model = BrownoutWindow
    form = BrownoutWindowForm
    extra = 1
    fields = ("starts_at", "ends_at", "note")
    verbose_name = _("brownout window (legacy keys refused inside it)")
    verbose_name_plural = _("Transition: brownout windows (legacy keys refused inside them, as under High)")


def _shown(value):
    return value.replace(microsecond=0) if isinstance(value, datetime) else value


@admin.register(SitePolicy)
class SitePolicyAdmin(admin.ModelAdmin):
    """The one policy row: no list, no add, no delete. Validation is the model's ``clean()``."""

    form = SitePolicyForm
    inlines = (BrownoutWindowInline,)
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
        (_("Least privilege"), {"fields": ("default_access", "require_allowed_ips_without_expiry")}),
        (_("Rotation"), {"fields": ("max_rotation_overlap", "self_rotation_allowed")}),
        (
            _("Service accounts"),
            {"fields": ("service_account_maximum_lifetime", "service_account_no_expiry")},
        ),
        (
            _("Notices and retention"),
            {"fields": ("expiry_notice_days", "new_address_alerts", "usage_retention_days")},
        ),
        (
            _("Transition"),
            {
                "fields": (
                    "transition_numbers",
                    "security_level",
                    "rehearsal_level",
                    "legacy_deprecated_at",
                    "legacy_sunset_at",
                ),
                "description": _(
                    "Rehearse a level, tell the owners from the migration overview, schedule brownouts "
                    '(below), then switch. See docs/admin.md, "The cutover".'
                ),
            },
        ),
        (_("History"), {"fields": ("updated_at",)}),
    )
    readonly_fields = ("exceeding_tokens", "transition_numbers", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        """Go straight to the one row: a list of one policy would only be a detour."""
        policy = SitePolicy.load()
        return redirect(reverse("admin:tokens_sitepolicy_change", args=[policy.pk]))

    @admin.display(description=_("where the migration stands"))
    def transition_numbers(self, obj):
        """The numbers the next step depends on: keys still in use, requests the next level would refuse."""
        if obj is None or obj.pk is None:
            return "-"
        numbers = transition_numbers(obj)
        return format_html(
            '<dl class="transition-numbers">'
            "<dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>"
            '<p><a href="{}">{}</a></p>',
            _("Level in force"),
            numbers["level_label"],
            _("Legacy keys used in the last %(n)d days") % {"n": numbers["window_days"]},
            numbers["keys_in_use"],
            numbers["next_label"],
            numbers["next_refused"],
            reverse("admin:tokens_legacyapikey_migration"),
            _("Open the migration overview"),
        )

    def save_model(self, request, obj, form, change):
        # What the audit compares against: the row as stored before this save, and its windows.
        stored = SitePolicy.objects.get(pk=obj.pk)
        obj._transition_before = stored.transition_state()
        # Compared as the form shows them: form.changed_data also names a date and time typed back
        # unchanged, and the form has no microseconds to give back.
        changed = [
            field.name
            for field in obj._meta.concrete_fields
            if field.name != "updated_at"
            and _shown(getattr(stored, field.attname)) != _shown(getattr(obj, field.attname))
        ]
        self._save_policy(request, obj, changed)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Inside the admin's save transaction: the change and its events are written together.
        form.instance.record_transition_changes(before=form.instance._transition_before, actor=request.user)

    @admin.display(description=_("active tokens living longer than the maximum"))
    def exceeding_tokens(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        # The maximum in force, not *obj*'s: a refused form leaves the refused value on the instance.
        maximum = SitePolicy.objects.values_list("maximum_lifetime", flat=True).get(pk=obj.pk)
        tokens = Token.objects.exceeding(maximum).select_related("user").order_by("expires_at")
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

    def _save_policy(self, request, obj, changed):
        # The policy row only, then a plain read: no token or owner row (docs/security.md, "Lock order").
        obj.save()
        # The Activity Stream and the event feed say who changed which settings, like any token change.
        obj.record_change(actor=request.user, fields=changed, ip=client_ip(request))
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
