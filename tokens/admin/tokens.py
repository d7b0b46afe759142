"""Every token: the list, add with the value shown once, rename, revoke, shorten, and find by value."""

import secrets

from django.contrib import admin, messages
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from ..constants import TOKEN_PREFIX
from ..forms import TokenRotateForm
from ..http import client_ip, no_store
from ..models import SitePolicy, Token, TokenStatus
from .common import CredentialColumnsMixin, SecretLookupsRefusedMixin, report_action, revoke_each
from .filters import ExceedsPolicyFilter, ExpiryWindowFilter, NeverUsedFilter, OwnerKindFilter, StatusFilter
from .forms import TokenAddForm, TokenChangeForm


def _looks_like_token(term):
    return term.strip().startswith(TOKEN_PREFIX)


@admin.register(Token)
class TokenAdmin(SecretLookupsRefusedMixin, CredentialColumnsMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "status_label",
        "created_at",
        "expires_at",
        "last_used_at",
        "request_count",
        "access",
        "pepper_id",
    )
    list_display_links = ("name",)
    list_filter = (
        StatusFilter,
        OwnerKindFilter,
        ExpiryWindowFilter,
        NeverUsedFilter,
        ExceedsPolicyFilter,
        "access",
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
    actions = ("revoke_selected", "shorten_to_policy_maximum", "rotate_one")
    add_form = TokenAddForm
    usage_lookup = "token"
    usage_link_text = _("Requests made with this token")
    form = TokenChangeForm
    add_fieldsets = (
        (None, {"fields": ("user", "name", "purpose", "expires_at", "nonce")}),
        (_("What it can do"), {"fields": ("access", "permissions_text", "allowed_ips_text")}),
    )
    fieldsets = (
        (None, {"fields": ("name", "purpose", "user", "status_label", "last_characters", "alerts")}),
        (_("What it can do"), {"fields": ("access", "permissions_text", "allowed_ips_text")}),
        (
            _("Lifetime"),
            {"fields": ("created_at", "expires_at", "revoked_at", "revoked_by", "expiry_notified_at")},
        ),
        (_("Rotation"), {"fields": ("replaces_link", "replaced_by_link", "rotated_at", "rotation_ends_at")}),
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
        (_("Keyless CI"), {"fields": ("trust_policy_link",)}),
    )
    # The digest and the public id are never listed, shown or searchable.
    readonly_fields = (
        "user",
        "alerts",
        "status_label",
        "last_characters",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "expiry_notified_at",
        "replaces_link",
        "replaced_by_link",
        "rotated_at",
        "rotation_ends_at",
        "last_used_at",
        "last_used_ip",
        "last_used_user_agent",
        "request_count",
        "usage_link",
        "pepper_id",
        "trust_policy_link",
    )

    def has_delete_permission(self, request, obj=None):
        # Tokens are revoked, never deleted: their history stays readable.
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("user", "revoked_by", "replaces", "replaced_by", "exchange__policy")
        )

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        form = super().get_form(request, obj, **kwargs)  # a class made for this request
        if obj is None:
            form.requesting_user = request.user
        else:
            # The same rule as adding: only a superuser may change what somebody else's token can do.
            form.may_change_limits = request.user.is_superuser or obj.user_id == request.user.pk
        return form

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return obj.status.label

    @staticmethod
    def _token_link(token):
        if token is None:
            return "–"
        url = reverse("admin:tokens_token_change", args=[token.pk])
        return format_html('<a href="{}">{} (#{}, …{})</a>', url, token.name, token.pk, token.last_characters)

    @admin.display(description=_("minted by trust policy"))
    def trust_policy_link(self, obj):
        exchange = getattr(obj, "exchange", None)
        if exchange is None:
            return "–"
        if exchange.policy is None:
            return format_html("{} <small>({})</small>", exchange.policy_name, _("deleted"))
        url = reverse("admin:tokens_trustpolicy_change", args=[exchange.policy_id])
        return format_html('<a href="{}">{}</a> <small>{}</small>', url, exchange.policy.name, exchange.job)

    @admin.display(description=_("replaces"))
    def replaces_link(self, obj):
        return self._token_link(obj.replaces)

    @admin.display(description=_("replaced by"))
    def replaced_by_link(self, obj):
        return self._token_link(obj.replaced_by_token)

    # Search: a pasted value is never looked up from the address, and never used as a text pattern.

    def get_search_results(self, request, queryset, search_term):
        if _looks_like_token(search_term):
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(self, request, extra_context=None):
        """Send a value typed into the search box (a GET, so in the address) to the POST-only finder.

        A value in the address lands in access logs, proxies and browser history: it is not looked up
        (an attacker's log reader would learn whose it is), and the page answers with a value-free address.
        """
        term = request.GET.get(SEARCH_VAR, "")
        if (
            request.method == "GET"
            and _looks_like_token(term)
            and self.has_view_or_change_permission(request)
        ):
            self.message_user(
                request,
                _(
                    "Token values are not searched from the address, where logs and browser history "
                    "keep them. Paste it into \u201cFind a token by its value\u201d below instead, and "
                    "revoke the token if it leaked."
                ),
                messages.WARNING,
            )
            return HttpResponseRedirect(reverse("admin:tokens_token_changelist"))
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("find/", self.admin_site.admin_view(self.find_by_value_view), name="tokens_token_find"),
            path(
                "<int:pk>/rotate/", self.admin_site.admin_view(self.rotate_view), name="tokens_token_rotate"
            ),
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
        revoke_each(
            self,
            request,
            queryset,
            message=ngettext_lazy("Revoked %(n)d token.", "Revoked %(n)d tokens.", "n"),
            rest=_("The others were already revoked."),
            ip=client_ip(request),
        )

    @admin.action(description=_("Shorten selected tokens to the policy maximum"), permissions=("change",))
    def shorten_to_policy_maximum(self, request, queryset):
        policy = SitePolicy.load()
        now = timezone.now()
        target = now + policy.maximum_lifetime
        exceeding = queryset.exceeding(policy.maximum_lifetime, now)
        shortened = sum(token.shorten(target, actor=request.user) for token in exceeding)
        message = ngettext(
            "Shortened %(n)d token to expire at %(at)s; its owner sees it in the Activity Stream.",
            "Shortened %(n)d tokens to expire at %(at)s; their owners see it in the Activity Stream.",
            shortened,
        ) % {"n": shortened, "at": target.strftime("%Y-%m-%d %H:%M UTC")}
        report_action(
            self,
            request,
            message,
            done=shortened,
            selected=len(queryset),
            rest=_("The others already expire within the maximum or are not active."),
        )

    @admin.action(description=_("Rotate the selected token (one)…"), permissions=("change",))
    def rotate_one(self, request, queryset):
        """Open the rotate page of the one selected token: rotating shows a value, so one at a time."""
        if len(queryset) != 1:
            self.message_user(request, _("Select exactly one token to rotate."), messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:tokens_token_rotate", args=[queryset[0].pk]))

    @method_decorator(never_cache)
    @method_decorator(sensitive_post_parameters())
    def rotate_view(self, request, pk):
        """Rotate one token through ``Token.rotate`` (overlap, expiry), then the new value once."""
        token = Token.objects.select_related("user").filter(pk=pk).first()
        if token is None:
            raise Http404
        if not self.has_change_permission(request, token):
            raise PermissionDenied
        change_url = reverse("admin:tokens_token_change", args=[token.pk])
        # The same rule as adding: the value acts as its owner, so only a superuser rotates another's token.
        if not (request.user.is_superuser or token.user_id == request.user.pk):
            self.message_user(request, _("Only superusers can rotate another user's token."), messages.ERROR)
            return HttpResponseRedirect(change_url)
        policy = SitePolicy.load()
        if request.method == "GET" and not token.is_active:
            return self._not_rotatable(request, token, token.status)
        form = TokenRotateForm(request.POST or None, token=token, policy=policy)
        if request.method == "POST" and form.is_valid():
            try:
                new, plaintext = token.rotate(
                    **form.rotation(), actor=request.user, ip=client_ip(request), policy=policy
                )
            except Token.AlreadyIssued as again:
                return self._already_issued(request, again.token)
            except Token.NotRotatable as refusal:
                return self._not_rotatable(request, token, refusal.status)
            except ValidationError as error:
                form.add_model_errors(error)
            else:
                self.log_change(request, token, [{"changed": {"fields": ["rotation_ends_at"]}}])
                return self._reveal(request, new, plaintext, title=_("Token rotated"), replaced=token)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Rotate token"),
            "opts": self.opts,
            "token": token,
            "form": form,
        }
        return TemplateResponse(request, "admin/tokens/token/rotate.html", context)

    def _not_rotatable(self, request, token, status):
        self.message_user(
            request,
            _("Only an active token can be rotated; \u201c%(name)s\u201d is %(status)s.")
            % {"name": token.name, "status": TokenStatus(status).label.lower()},
            messages.ERROR,
        )
        return HttpResponseRedirect(reverse("admin:tokens_token_change", args=[token.pk]))

    # Add: Django's own view shows the form and its errors (TokenAddForm applies every rule of
    # Token.objects.issue); a valid submission is issued here instead of saved, and its value shown once.

    def get_changeform_initial_data(self, request):
        # ?user=<id> preselects the owner for superusers only: for anyone else the owner widget would
        # print the name of any user id put in the address.
        owner = request.GET.get("user") if request.user.is_superuser else request.user.pk
        return {
            "expires_at": SitePolicy.load().default_expiry(),
            "nonce": secrets.token_urlsafe(32),
            **({"user": owner} if owner else {}),
        }

    @method_decorator(never_cache)
    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and self.has_add_permission(request):
            form = self.get_form(request, None, change=False)(request.POST)
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
                        access=data["access"],
                        permissions=data["permissions"],
                        allowed_ips=data["allowed_ips"],
                    )
                except Token.AlreadyIssued as again:
                    return self._already_issued(request, again.token)
                except ValidationError:
                    pass  # changed since the form was checked (a name just taken): Django's view says why
                else:
                    self.log_addition(request, token, [{"added": {}}])
                    return self._reveal(request, token, plaintext)
        return super().add_view(request, form_url, extra_context)

    def _reveal(self, request, token, plaintext, *, title=None, replaced=None):
        # The value lives only in this response: not in the session, a message, a log or a cache.
        response = TemplateResponse(
            request,
            "admin/tokens/token/reveal.html",
            {
                **self.admin_site.each_context(request),
                "title": title or _("Token created"),
                "opts": self.opts,
                "token": token,
                "value": plaintext,
                "replaced": replaced,
            },
        )
        return no_store(response)

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
        if not change:
            # add_view issues every valid add form; nothing may save a token without its digest.
            raise PermissionDenied
        # Each change through the model method that checks it and records the event the owner sees.
        current = Token.objects.get(pk=obj.pk)
        try:
            if "name" in form.changed_data:
                current.rename(form.cleaned_data["name"], actor=request.user, ip=client_ip(request))
            if "purpose" in form.changed_data:
                # Through the model, so the owner and the event feed see the change like a rename.
                current.change_purpose(
                    form.cleaned_data["purpose"], actor=request.user, ip=client_ip(request)
                )
            changes = form.restriction_changes()
            if changes:
                # Through set_restrictions: checked against the owner and the policy, one event per change.
                current.set_restrictions(**changes, actor=request.user, ip=client_ip(request))
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
