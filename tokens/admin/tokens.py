"""Every token: the list, add with the value shown once, rename, revoke, shorten, and find by value."""

import secrets

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from ..http import client_ip, no_store
from ..constants import TOKEN_PREFIX
from ..models import ExpirationPolicy, Token
from .common import CredentialColumnsMixin, report_action, revoke_each
from .filters import ExceedsPolicyFilter, ExpiryWindowFilter, NeverUsedFilter, StatusFilter
from .forms import TokenAddForm, TokenChangeForm


def _looks_like_token(term):
    return term.strip().startswith(TOKEN_PREFIX)


@admin.register(Token)
class TokenAdmin(CredentialColumnsMixin, admin.ModelAdmin):
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
    usage_lookup = "token"
    usage_link_text = _("Requests made with this token")
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

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return obj.status.label

    # Search: a pasted value finds exactly its token and is never used as a text pattern.

    def get_search_results(self, request, queryset, search_term):
        if _looks_like_token(search_term):
            token = Token.objects.find_by_value(search_term)
            return (queryset.filter(pk=token.pk) if token else queryset.none()), False
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(self, request, extra_context=None):
        """Keep a pasted value out of the page: answer with a value-free address of the result."""
        term = request.GET.get(SEARCH_VAR, "")
        # Only someone allowed to see tokens may learn whose a value is.
        if request.method == "GET" and _looks_like_token(term) and self.has_view_or_change_permission(request):
            found, _duplicates = self.get_search_results(request, self.get_queryset(request), term)
            return self._show_found(request, found.first())
        return super().changelist_view(request, extra_context)

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
        policy = ExpirationPolicy.load()
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

    # Add: through Token.objects.issue, then the value once in the response.

    @staticmethod
    def _may_create_for(request, form):
        """Allow only superusers to create a token for somebody else; add the form error otherwise.

        The value acts as its owner, so creating one for another user is acting as them. A superuser
        can do anything already (and creates tokens for service accounts); other staff create their own.
        """
        if form.cleaned_data["user"] == request.user or request.user.is_superuser:
            return True
        form.add_error("user", _("Only superusers can create a token for another user."))
        return False

    @method_decorator(never_cache)
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        Form = self.get_form(request, None, change=False)
        if request.method == "POST":
            form = Form(request.POST)
            if form.is_valid() and self._may_create_for(request, form):
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
                    "expires_at": policy.default_expiry(),
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
        # Never obj.save(): the summariser keeps the counters, and a full save would overwrite them.
        # Renames go through Token.rename, which records the event the owner sees.
        current = Token.objects.get(pk=obj.pk)
        try:
            if "name" in form.changed_data:
                current.rename(form.cleaned_data["name"], actor=request.user, ip=client_ip(request))
            if "purpose" in form.changed_data:
                Token.objects.filter(pk=obj.pk).update(purpose=form.cleaned_data["purpose"])
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
