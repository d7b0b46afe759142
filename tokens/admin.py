"""Django admin for administrators: the policy, every token and legacy key, usage and the Activity Stream.

Every change goes through the same model and manager methods as the pages and the API
(``Token.objects.issue``, ``token.rename``, ``token.revoke``, ``token.shorten``, ``key.revoke``,
``ExpirationPolicy.clean``), so the admin can do nothing the rules forbid elsewhere. No admin page
shows a token value (except once, in the response that creates one), a legacy key or a digest.
"""

import secrets
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, F, Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from .auth import client_ip
from .charts import daily_chart
from .constants import PRESET_CHOICES, TOKEN_PREFIX
from .durability import durable_atomic
from .models import ClientAddress, DailyUsage, ExpirationPolicy, LegacyApiKey, Token, TokenEvent, UsageRecord
from .models.tokens import clean_name, clean_purpose
from .models.usage import daily_series
from .throttle import ThrottledAdminAuthenticationForm

# The admin's sign-in shares the site's throttle: the same counts lock both forms.
admin.site.login_form = ThrottledAdminAuthenticationForm

DURATION_HELP = _('Days and time, for example "30 00:00:00" for 30 days or "0 00:05:00" for 5 minutes.')
EXCEEDING_SHOWN = 10
MIGRATION_WINDOW_DAYS = 30


def _looks_like_token(term):
    return term.strip().startswith(TOKEN_PREFIX)


# --- expiration policy --------------------------------------------------------------------------------------


class ExpirationPolicyForm(forms.ModelForm):
    presets = forms.MultipleChoiceField(
        label=_("Expiry presets offered"),
        choices=[(key, label) for key, label, _delta in PRESET_CHOICES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=_(
            "Offered on the create form. Each must lie between the minimum and the maximum lifetime."
        ),
    )

    class Meta:
        model = ExpirationPolicy
        fields = "__all__"
        help_texts = {
            "default_lifetime": _(
                "Preselected on the create form and used by the API when no expiry is given. "
            )
            + DURATION_HELP,
            "minimum_lifetime": _("The shortest lifetime a token may be given. ") + DURATION_HELP,
            "maximum_lifetime": _(
                "The longest lifetime a token may be given. Lowering it never changes existing tokens: "
                "they are listed below and in the token list, where they can be shortened. "
            )
            + DURATION_HELP,
            "no_expiry_allowed_for": _("Who may create a token that never expires."),
            "legacy_keys_accepted": _(
                "Off: every legacy API key is refused at once with a message to use a bearer token."
            ),
        }


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
        (_("Notices and retention"), {"fields": ("expiry_notice_days", "usage_retention_days")}),
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

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # A policy change is a security write: synced to disk before the admin is told it is saved.
        with durable_atomic():
            return super().changeform_view(request, object_id, form_url, extra_context)

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
        super().save_model(request, obj, form, change)
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


# --- tokens -------------------------------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("active", _("active")), ("expired", _("expired")), ("revoked", _("revoked")))

    def queryset(self, request, queryset):
        if self.value() in {"active", "expired", "revoked"}:
            return queryset.with_status(self.value())
        return queryset


class ExpiryWindowFilter(admin.SimpleListFilter):
    title = _("expiry")
    parameter_name = "expires"

    def lookups(self, request, model_admin):
        return (
            ("past", _("already expired")),
            ("7d", _("in the next 7 days")),
            ("30d", _("in the next 30 days")),
            ("never", _("never expires")),
        )

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "past":
            return queryset.filter(expires_at__lte=now)
        if self.value() in {"7d", "30d"}:
            days = 7 if self.value() == "7d" else 30
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(days=days))
        if self.value() == "never":
            return queryset.filter(expires_at__isnull=True)
        return queryset


class NeverUsedFilter(admin.SimpleListFilter):
    title = _("use")
    parameter_name = "used"

    def lookups(self, request, model_admin):
        return (("never", _("never used")), ("yes", _("used at least once")))

    def queryset(self, request, queryset):
        if self.value() == "never":
            return queryset.filter(last_used_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(last_used_at__isnull=False)
        return queryset


class ExceedsPolicyFilter(admin.SimpleListFilter):
    title = _("policy maximum")
    parameter_name = "exceeds"

    def lookups(self, request, model_admin):
        return (("yes", _("active and living longer than the maximum")),)

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exceeding(ExpirationPolicy.load().maximum_lifetime)
        return queryset


class TokenAddForm(forms.ModelForm):
    """Owner, name, purpose and expiry; the token itself is made by ``Token.objects.issue``."""

    # One-time value: a resubmitted add form finds the first token instead of making a second.
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    class Meta:
        model = Token
        fields = ("user", "name", "purpose", "expires_at", "nonce")
        help_texts = {
            "expires_at": _(
                "Must follow the expiration policy. Empty: never expires, where the policy allows it."
            ),
        }


class TokenChangeForm(forms.ModelForm):
    """Only the name and the purpose can change; the name follows the same rules as on the site."""

    class Meta:
        model = Token
        fields = ("name", "purpose")

    def clean(self):
        cleaned = super().clean()
        try:
            if "name" in self.changed_data:
                cleaned["name"] = clean_name(cleaned.get("name"))
                taken = (
                    Token.objects.for_user(self.instance.user_id)
                    .active()
                    .filter(name=cleaned["name"])
                    .exclude(pk=self.instance.pk)
                )
                if taken.exists():
                    raise ValidationError(
                        {"name": _("The owner already has an active token with this name.")}
                    )
            if "purpose" in self.changed_data:
                cleaned["purpose"] = clean_purpose(cleaned.get("purpose"))
        except ValidationError as error:
            self.add_error(None, error)
        return cleaned


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "status_label",
        "created_at",
        "expires_at",
        "last_used_at",
        "request_count",
        "pepper_id",
    )
    list_display_links = ("name",)
    list_filter = (
        StatusFilter,
        ExpiryWindowFilter,
        NeverUsedFilter,
        ExceedsPolicyFilter,
        ("user", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("user",)
    search_fields = ("name", "user__username", "user__email")
    search_help_text = _(
        'Owner, email or token name. To find whose token leaked, use "Find a token by its value" below: '
        "a value typed here would travel in the address."
    )
    ordering = ("-created_at", "-id")
    raw_id_fields = ("user",)
    actions = ("revoke_selected", "shorten_to_policy_maximum")
    add_form = TokenAddForm
    form = TokenChangeForm
    add_fieldsets = ((None, {"fields": ("user", "name", "purpose", "expires_at", "nonce")}),)
    fieldsets = (
        (None, {"fields": ("name", "purpose", "user", "status_label", "last_characters")}),
        (
            _("Lifetime"),
            {"fields": ("created_at", "expires_at", "revoked_at", "revoked_by", "expiry_notified_at")},
        ),
        (
            _("Use"),
            {
                "fields": (
                    "last_used_at",
                    "last_used_ip",
                    "last_used_user_agent",
                    "request_count",
                    "usage_link",
                )
            },
        ),
        (_("Storage"), {"fields": ("pepper_id",)}),
    )
    # The digest and the public id are never listed, shown or searchable.
    readonly_fields = (
        "user",
        "status_label",
        "last_characters",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "expiry_notified_at",
        "last_used_at",
        "last_used_ip",
        "last_used_user_agent",
        "request_count",
        "usage_link",
        "pepper_id",
    )

    def has_delete_permission(self, request, obj=None):
        # Tokens are revoked, never deleted: their history stays readable.
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "revoked_by")

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    @admin.display(description=_("owner"), ordering="user__username")
    def owner(self, obj):
        return obj.user.get_username()

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return {"active": _("active"), "expired": _("expired"), "revoked": _("revoked")}[obj.status]

    @admin.display(description=_("usage records"))
    def usage_link(self, obj):
        url = reverse("admin:tokens_usagerecord_changelist") + f"?token__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, _("Requests made with this token"))

    # Search: a pasted value finds exactly its token and is never used as a text pattern.

    def get_search_results(self, request, queryset, search_term):
        if _looks_like_token(search_term):
            token = Token.objects.find_by_value(search_term)
            return (queryset.filter(pk=token.pk) if token else queryset.none()), False
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(self, request, extra_context=None):
        """Keep a pasted value out of the page: answer with a value-free address of the result."""
        term = request.GET.get(SEARCH_VAR, "")
        if request.method == "GET" and _looks_like_token(term):
            found, _duplicates = self.get_search_results(request, self.get_queryset(request), term)
            return self._show_found(request, found.first())
        return super().changelist_view(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Renames are security-relevant history: synced to disk like every other token change.
        with durable_atomic():
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path("find/", self.admin_site.admin_view(self.find_by_value_view), name="tokens_token_find"),
            *super().get_urls(),
        ]

    @method_decorator(sensitive_post_parameters("value"))
    def find_by_value_view(self, request):
        """Find whose token a pasted value is (incident response), by POST so the value is in no URL."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return self._show_found(request, Token.objects.find_by_value(request.POST.get("value", "")))

    def _show_found(self, request, token):
        changelist = reverse("admin:tokens_token_changelist")
        if token is None:
            self.message_user(
                request,
                _(
                    "No token matches that value: it is malformed, was not issued here, "
                    "or its token was deleted."
                ),
                messages.ERROR,
            )
            return HttpResponseRedirect(changelist)
        self.message_user(
            request,
            _(
                "That value is token \u201c%(name)s\u201d of %(owner)s (%(status)s). "
                "Revoke it below if it leaked."
            )
            % {"name": token.name, "owner": token.user.get_username(), "status": self.status_label(token)},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(f"{changelist}?id__exact={token.pk}")

    # Actions.

    @admin.action(description=_("Revoke selected tokens"), permissions=("change",))
    def revoke_selected(self, request, queryset):
        ip = client_ip(request)
        revoked = sum(token.revoke(actor=request.user, ip=ip) for token in queryset)
        self.message_user(
            request,
            ngettext("Revoked %(n)d token.", "Revoked %(n)d tokens.", revoked) % {"n": revoked}
            + (" " + _("The others were already revoked.") if revoked < len(queryset) else ""),
            messages.SUCCESS,
        )

    @admin.action(description=_("Shorten selected tokens to the policy maximum"), permissions=("change",))
    def shorten_to_policy_maximum(self, request, queryset):
        policy = ExpirationPolicy.load()
        now = timezone.now()
        target = now + policy.maximum_lifetime
        exceeding = queryset.exceeding(policy.maximum_lifetime, now)
        shortened = sum(token.shorten(target, actor=request.user) for token in exceeding)
        self.message_user(
            request,
            ngettext(
                "Shortened %(n)d token to expire at %(at)s; its owner sees it in the Activity Stream.",
                "Shortened %(n)d tokens to expire at %(at)s; their owners see it in the Activity Stream.",
                shortened,
            )
            % {"n": shortened, "at": target.strftime("%Y-%m-%d %H:%M UTC")}
            + (
                " " + _("The others already expire within the maximum or are not active.")
                if shortened < len(queryset)
                else ""
            ),
            messages.SUCCESS,
        )

    # Add: through Token.objects.issue, then the value once in the response.

    @method_decorator(never_cache)
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        Form = self.get_form(request, None, change=False)
        if request.method == "POST":
            form = Form(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    token, plaintext = Token.objects.issue(
                        user=data["user"],
                        name=data["name"],
                        purpose=data["purpose"],
                        expires_at=data["expires_at"],
                        actor=request.user,
                        ip=client_ip(request),
                        nonce=data["nonce"],
                    )
                except Token.AlreadyIssued as again:
                    return self._already_issued(request, again.token)
                except ValidationError as error:
                    form.add_error(None, error)
                else:
                    self.log_addition(request, token, [{"added": {}}])
                    return self._reveal(request, token, plaintext)
        else:
            policy = ExpirationPolicy.load()
            form = Form(
                initial={
                    "expires_at": timezone.now() + policy.default_lifetime,
                    "nonce": secrets.token_urlsafe(32),
                    **{key: value for key, value in request.GET.items() if key == "user"},
                }
            )
        admin_form = helpers.AdminForm(form, list(self.get_fieldsets(request)), {}, (), model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Add token"),
            "subtitle": None,
            "adminform": admin_form,
            "object_id": None,
            "original": None,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, form_url=form_url)

    def _reveal(self, request, token, plaintext):
        # The value lives only in this response: not in the session, a message, a log or a cache.
        response = TemplateResponse(
            request,
            "admin/tokens/token/reveal.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Token created"),
                "opts": self.opts,
                "token": token,
                "value": plaintext,
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def _already_issued(self, request, token):
        self.message_user(
            request,
            _(
                "This form was already submitted and created token \u201c%(name)s\u201d. "
                "Its value was shown once and cannot be shown again; if it was lost, revoke the token "
                "and create another."
            )
            % {"name": token.name},
            messages.WARNING,
        )
        return HttpResponseRedirect(reverse("admin:tokens_token_change", args=[token.pk]))

    def save_model(self, request, obj, form, change):
        # Never obj.save(): the database trigger keeps the counters, and a full save would overwrite them.
        # Renames go through Token.rename, which records the event the owner sees.
        current = Token.objects.get(pk=obj.pk)
        try:
            if "name" in form.changed_data:
                current.rename(form.cleaned_data["name"], actor=request.user, ip=client_ip(request))
            if "purpose" in form.changed_data:
                Token.objects.filter(pk=obj.pk).update(purpose=form.cleaned_data["purpose"])
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)


# --- legacy API keys ----------------------------------------------------------------------------------------


class LegacyStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("active", _("active")), ("revoked", _("revoked")))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class RecentUseFilter(admin.SimpleListFilter):
    title = _("use")
    parameter_name = "used"

    def lookups(self, request, model_admin):
        return (
            ("recent", _("used in the last %(n)d days") % {"n": MIGRATION_WINDOW_DAYS}),
            ("stale", _("not used in the last %(n)d days") % {"n": MIGRATION_WINDOW_DAYS}),
            ("never", _("never used")),
        )

    def queryset(self, request, queryset):
        since = timezone.now() - timedelta(days=MIGRATION_WINDOW_DAYS)
        if self.value() == "recent":
            return queryset.filter(last_used_at__gte=since)
        if self.value() == "stale":
            return queryset.filter(last_used_at__lt=since)
        if self.value() == "never":
            return queryset.filter(last_used_at__isnull=True)
        return queryset


@admin.register(LegacyApiKey)
class LegacyApiKeyAdmin(admin.ModelAdmin):
    """Imported keys, read-only (import with the import_legacy_keys command); revoke is the one action."""

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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Nothing about a key is editable; the detail page is read-only.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm("tokens.change_legacyapikey")

    @admin.display(description=_("owner"), ordering="user__username")
    def owner(self, obj):
        return obj.user.get_username()

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return _("revoked") if obj.revoked_at else _("active")

    @admin.display(description=_("usage records"))
    def usage_link(self, obj):
        url = reverse("admin:tokens_usagerecord_changelist") + f"?legacy_key__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, _("Requests made with this key"))

    @admin.action(description=_("Revoke selected legacy keys"), permissions=("revoke",))
    def revoke_selected(self, request, queryset):
        revoked = sum(key.revoke(actor=request.user) for key in queryset)
        self.message_user(
            request,
            ngettext("Revoked %(n)d legacy key.", "Revoked %(n)d legacy keys.", revoked) % {"n": revoked},
            messages.SUCCESS,
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
        in_use = (
            keys.active()
            .filter(last_used_at__gte=since)
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
        clients = (
            ClientAddress.objects.filter(legacy_key__isnull=False, last_seen__gte=since)
            .select_related("legacy_key__user")
            .order_by("-last_seen")[:100]
        )
        legacy = daily_series(DailyUsage.objects.filter(legacy_key__isnull=False), days=MIGRATION_WINDOW_DAYS)
        bearer = daily_series(DailyUsage.objects.filter(token__isnull=False), days=MIGRATION_WINDOW_DAYS)
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
                .filter(last_used_at__gte=since)
                .values("user")
                .distinct()
                .count(),
            },
            "in_use": in_use,
            "clients": clients,
            "chart": chart,
            "legacy_total": sum(accepted for _d, accepted, _r in legacy),
            "bearer_total": sum(accepted for _d, accepted, _r in bearer),
            "policy": policy,
            "refusal": policy.legacy_refusal(now),
        }
        return TemplateResponse(request, "admin/tokens/legacyapikey/migration.html", context)


# --- usage records and the Activity Stream (read-only) -----------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: viewable and filterable, never added, edited or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class HttpStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status_class"

    # Fixed ranges: a DISTINCT over millions of usage records would make the filter itself slow.
    RANGES = {
        "2xx": (200, 299),
        "3xx": (300, 399),
        "401": (401, 401),
        "403": (403, 403),
        "404": (404, 404),
        "4xx": (400, 499),
        "5xx": (500, 599),
    }

    def lookups(self, request, model_admin):
        return (
            ("2xx", _("2xx success")),
            ("3xx", _("3xx redirect")),
            ("401", _("401 unauthorized")),
            ("403", _("403 forbidden")),
            ("404", _("404 not found")),
            ("4xx", _("any 4xx client error")),
            ("5xx", _("5xx server error")),
        )

    def queryset(self, request, queryset):
        if self.value() in self.RANGES:
            low, high = self.RANGES[self.value()]
            return queryset.filter(status__gte=low, status__lte=high)
        return queryset


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
    # No legacy_key filter: its choices would load every key's owner. The legacy key admin links here with
    # ?legacy_key__id__exact=<id> instead.
    list_filter = (HttpStatusFilter, "accepted", "token", "user")
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
