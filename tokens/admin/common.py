"""Pieces several admin pages share: read-only records, the credential columns and bulk-action messages."""

from django.contrib import admin, messages
from django.db.models.constants import LOOKUP_SEP
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..usage.read import usage_totals

# Fields that identify a credential's value: never listed, shown, searched, or filtered on. A filter
# such as ?digest__startswith=ab answers yes or no about the stored digest, one character at a time.
SECRET_FIELDS = frozenset({"digest", "public_id"})


class SecretLookupsRefusedMixin:
    """Refuse list filters in the address that reach a secret field, on this model or through a relation.

    Django allows any lookup on a model's own fields by default; a refused one answers 400.
    """

    def lookup_allowed(self, lookup, value, request=None):
        if SECRET_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)


class ReadOnlyAdmin(SecretLookupsRefusedMixin, admin.ModelAdmin):
    """Records written by the system: viewable and filterable, never added, edited or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CredentialColumnsMixin:
    """The owner column and the link to a credential's usage records, for tokens and legacy keys."""

    usage_lookup = None  # the UsageRecord field that points at this model
    usage_link_text = None

    # The counters and last use shown are the summaries plus the records not summarised yet: one
    # query per page of the list, one per object shown.
    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        changelist.result_list = usage_totals(list(changelist.result_list))
        return changelist

    def get_object(self, request, object_id, from_field=None):
        credential = super().get_object(request, object_id, from_field)
        if credential is not None:
            usage_totals([credential])
        return credential

    @admin.display(description=_("owner"), ordering="user__username")
    def owner(self, obj):
        return obj.user.get_username()

    @admin.display(description=_("usage records"))
    def usage_link(self, obj):
        url = reverse("admin:tokens_usagerecord_changelist") + f"?{self.usage_lookup}__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, self.usage_link_text)


def report_action(model_admin, request, message, *, done, selected, rest=None):
    """Say what a bulk action did; when it left some selected rows alone and *rest* says why, add that."""
    if rest and done < selected:
        message = f"{message} {rest}"
    model_admin.message_user(request, message, messages.SUCCESS)


def revoke_each(model_admin, request, queryset, *, message, rest=None, **how):
    """Revoke each selected credential through its model's ``revoke`` and say how many were revoked.

    *message* is an ``ngettext_lazy`` keyed on ``"n"``; *how* goes to ``revoke`` (for example the ip).
    """
    revoked = sum(credential.revoke(actor=request.user, **how) for credential in queryset)
    report_action(
        model_admin, request, message % {"n": revoked}, done=revoked, selected=len(queryset), rest=rest
    )
