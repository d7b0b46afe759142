"""Service accounts in the admin, listed apart from people; the manager role on each team (group).

Creating, moving to another team and (de)activating go through the model's methods, which record
each change in the account's Activity Stream. The user list shows people only.
"""

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef
from django.utils.translation import gettext_lazy as _

from ..http import client_ip
from ..models import ManagerRole, ServiceAccount

User = get_user_model()


class ServiceAccountAddForm(forms.ModelForm):
    username = forms.CharField(
        label=_("username"),
        max_length=150,
        help_text=_("The name its tokens act as, e.g. payments-nightly-sync."),
        validators=[User.username_validator],
    )

    class Meta:
        model = ServiceAccount
        fields = ("team", "description")

    def clean_username(self):
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(_("A user with this name exists already."))
        return username


class ServiceAccountChangeForm(forms.ModelForm):
    is_active = forms.BooleanField(
        label=_("active"),
        required=False,
        help_text=_("Unticked: every token of the account is refused from its next request on."),
    )

    class Meta:
        model = ServiceAccount
        fields = ("team", "description")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["is_active"].initial = self.instance.user.is_active
        self.fields["team"].help_text = _(
            "Moving the account to another team hands its tokens to that team's managers at once (recorded)."
        )


class ManagedFilter(admin.SimpleListFilter):
    title = _("managers")
    parameter_name = "managed"

    def lookups(self, request, model_admin):
        return (("no", _("no active manager")), ("yes", _("has an active manager")))

    def queryset(self, request, queryset):
        unmanaged = ServiceAccount.objects.without_active_manager().values("pk")
        if self.value() == "no":
            return queryset.filter(pk__in=unmanaged)
        if self.value() == "yes":
            return queryset.exclude(pk__in=unmanaged)
        return queryset


@admin.register(ServiceAccount)
class ServiceAccountAdmin(admin.ModelAdmin):
    list_display = ("__str__", "team", "description_short", "active", "has_manager", "created_at")
    list_filter = (ManagedFilter, "team")
    list_select_related = ("user", "team")
    search_fields = ("user__username", "description", "team__name")
    ordering = ("user__username",)
    readonly_fields = ("user", "created_by", "created_at", "managers_list", "unmanaged_notified_at")
    add_fieldsets = ((None, {"fields": ("username", "team", "description")}),)
    fieldsets = (
        (None, {"fields": ("user", "team", "description", "is_active")}),
        (_("Managers"), {"fields": ("managers_list", "unmanaged_notified_at")}),
        (_("History"), {"fields": ("created_by", "created_at")}),
    )

    def get_queryset(self, request):
        # The flag in one query for the whole page, not one per account.
        unmanaged = ServiceAccount.objects.without_active_manager().filter(pk=OuterRef("pk"))
        return super().get_queryset(request).annotate(unmanaged=Exists(unmanaged))

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = ServiceAccountAddForm if obj is None else ServiceAccountChangeForm
        return super().get_form(request, obj, **kwargs)

    def has_delete_permission(self, request, obj=None):
        # Deactivate instead: the account's tokens and their history stay readable.
        return False

    def save_model(self, request, obj, form, change):
        ip = client_ip(request)
        if not change:
            created = ServiceAccount.objects.create_account(
                username=form.cleaned_data["username"],
                team=form.cleaned_data["team"],
                description=form.cleaned_data["description"],
                created_by=request.user,
                ip=ip,
            )
            obj.pk, obj.user, obj.user_id = created.pk, created.user, created.user_id
            return
        team = form.cleaned_data["team"]
        ServiceAccount.objects.filter(pk=obj.pk).update(description=form.cleaned_data["description"])
        current = ServiceAccount.objects.select_related("team", "user").get(pk=obj.pk)
        current.move_to(team, actor=request.user, ip=ip)
        current.set_active(form.cleaned_data["is_active"], actor=request.user, ip=ip)

    @admin.display(description=_("description"))
    def description_short(self, obj):
        return obj.description[:80]

    @admin.display(description=_("active"), boolean=True, ordering="user__is_active")
    def active(self, obj):
        return obj.user.is_active

    @admin.display(description=_("has an active manager"), boolean=True)
    def has_manager(self, obj):
        # Flagged (a red cross) when nobody can manage the account's tokens any more.
        return not obj.unmanaged

    @admin.display(description=_("managers now"))
    def managers_list(self, obj):
        names = [person.get_username() for person in obj.managers()]
        return ", ".join(names) or _("None: grant the manager role to a member of the team (Groups).")


class ManagerRoleInline(admin.StackedInline):
    """Stacked, not tabular: each field keeps its own label (a table's cells have none, for a reader)."""

    model = ManagerRole
    # One empty row ready: granting the role is what an administrator comes to this page for.
    extra = 1
    raw_id_fields = ("user",)
    # Set when the role is granted, shown for the record.
    readonly_fields = ("granted_at",)
    verbose_name = _("manager of this team's service accounts")
    verbose_name_plural = _("managers of this team's service accounts (while members of the team)")


admin.site.unregister(Group)


@admin.register(Group)
class TeamAdmin(GroupAdmin):
    inlines = (ManagerRoleInline,)
    # Django's two-box permission picker marks its search icons with ARIA a span may not carry (axe-core:
    # serious); the plain multiple choice is labelled and works without JavaScript.
    filter_horizontal = ()


class PeopleOnlyMixin:
    """For the user admin (``provisioning.PortalUserAdmin``): its list shows people only.

    Service accounts have their own list; a user picker (a popup) still finds them.
    """

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        listing = request.resolver_match is not None and request.resolver_match.url_name.endswith(
            "_changelist"
        )
        if listing and IS_POPUP_VAR not in request.GET:
            return queryset.filter(service_account__isnull=True)
        return queryset
