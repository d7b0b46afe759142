"""Who SCIM manages: the people and groups the identity provider provisions, and the user admin's column.

SCIM is the only writer of these records (tokens/identity/scim.py); administrators see them here.
Deactivating a person is done in the provider (or on the person's own user page, which is Django's).
"""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.formats import date_format
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _

from ..models import ProvisionedGroup, ProvisionedUser
from .common import ReadOnlyAdmin
from .service_accounts import PeopleOnlyMixin

User = get_user_model()

PROVISIONING_FIELDS = (
    "external_id",
    "provider",
    "provisioned_at",
    "updated_at",
    "deactivated_at",
    "deleted_at",
)


@admin.register(ProvisionedUser)
class ProvisionedUserAdmin(ReadOnlyAdmin):
    list_display = (
        "user",
        "external_id",
        "is_active",
        "provider",
        "updated_at",
        "deactivated_at",
        "deleted_at",
    )
    list_filter = (
        ("deactivated_at", admin.EmptyFieldListFilter),
        ("deleted_at", admin.EmptyFieldListFilter),
    )
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "external_id")
    ordering = ("user__username",)
    fields = ("user", *PROVISIONING_FIELDS)

    @admin.display(description=_("active"), boolean=True, ordering="user__is_active")
    def is_active(self, record):
        return record.user.is_active


@admin.register(ProvisionedGroup)
class ProvisionedGroupAdmin(ReadOnlyAdmin):
    list_display = ("group", "external_id", "updated_at")
    list_select_related = ("group",)
    search_fields = ("group__name", "external_id")
    ordering = ("group__name",)


class ManagedBySCIMFilter(admin.SimpleListFilter):
    title = _("managed by SCIM")
    parameter_name = "scim"

    def lookups(self, request, model_admin):
        return (("yes", _("Yes")), ("no", _("No")))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(provisioning__isnull=self.value() == "no")
        return queryset


admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(PeopleOnlyMixin, UserAdmin):
    """Django's user admin, for people (service accounts have their own list): is SCIM managing each?"""

    # A read-only field, not an inline: the change form keeps exactly Django's fields, so a form posted
    # without SCIM's data (nothing here is editable) saves as before.
    fieldsets = (*UserAdmin.fieldsets, (_("SCIM provisioning"), {"fields": ("scim_provisioning",)}))
    readonly_fields = (*UserAdmin.readonly_fields, "scim_provisioning")
    list_display = (*UserAdmin.list_display, "managed_by_scim")
    list_filter = (*UserAdmin.list_filter, ManagedBySCIMFilter)
    list_select_related = ("provisioning",)

    @admin.display(description=_("managed by SCIM"), boolean=True)
    def managed_by_scim(self, user):
        return hasattr(user, "provisioning")

    @admin.display(description=_("managed by SCIM"))
    def scim_provisioning(self, user):
        record = getattr(user, "provisioning", None)
        if record is None:
            return _("No: a local account.")
        lines = [(_("external id"), record.external_id or "—"), (_("provider"), record.provider)]
        for label, moment in (
            (_("provisioned"), record.provisioned_at),
            (_("last change by SCIM"), record.updated_at),
            (_("deactivated by SCIM"), record.deactivated_at),
            (_("deleted by SCIM"), record.deleted_at),
        ):
            if moment is not None:
                lines.append((label, date_format(localtime(moment), "DATETIME_FORMAT")))
        return format_html_join(mark_safe("<br>"), "{}: {}", lines)
