"""List filters of the token, legacy key and usage record lists."""

from datetime import timedelta

from django.contrib import admin
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..models import SitePolicy, TokenStatus

# How far back "in use" looks, in the legacy key list and on the migration page.
MIGRATION_WINDOW_DAYS = 30


class ChoiceFilter(admin.SimpleListFilter):
    """A list filter written as a table: each choice is a value, its label and the ``Q`` it keeps."""

    def options(self):
        """Return ``(value, label, condition)`` triples; a method, so a condition can depend on the time."""
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(value, label) for value, label, _condition in self.options()]

    def queryset(self, request, queryset):
        for value, _label, condition in self.options():
            if self.value() == value:
                return queryset.filter(condition)
        return queryset


# --- tokens -------------------------------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return TokenStatus.choices

    def queryset(self, request, queryset):
        if self.value() in TokenStatus.values:
            return queryset.with_status(self.value())
        return queryset


class OwnerKindFilter(ChoiceFilter):
    title = _("owner")
    parameter_name = "owner"

    def options(self):
        return (
            ("people", _("people"), Q(user__service_account__isnull=True)),
            ("service_accounts", _("service accounts"), Q(user__service_account__isnull=False)),
        )


class ExpiryWindowFilter(ChoiceFilter):
    title = _("expiry")
    parameter_name = "expires"

    def options(self):
        now = timezone.now()
        in_7d, in_30d = now + timedelta(days=7), now + timedelta(days=30)
        return (
            ("past", _("already expired"), Q(expires_at__lte=now)),
            ("7d", _("in the next 7 days"), Q(expires_at__gt=now, expires_at__lte=in_7d)),
            ("30d", _("in the next 30 days"), Q(expires_at__gt=now, expires_at__lte=in_30d)),
            ("never", _("never expires"), Q(expires_at__isnull=True)),
        )


class NeverUsedFilter(ChoiceFilter):
    title = _("use")
    parameter_name = "used"

    def options(self):
        return (
            ("never", _("never used"), Q(last_used_at__isnull=True)),
            ("yes", _("used at least once"), Q(last_used_at__isnull=False)),
        )


class ExceedsPolicyFilter(admin.SimpleListFilter):
    title = _("policy maximum")
    parameter_name = "exceeds"

    def lookups(self, request, model_admin):
        return (("yes", _("active and living longer than the maximum")),)

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exceeding(SitePolicy.load().maximum_lifetime)
        return queryset


# --- legacy API keys ----------------------------------------------------------------------------------------


class LegacyStatusFilter(ChoiceFilter):
    title = _("status")
    parameter_name = "status"

    def options(self):
        return (
            ("active", _("active"), Q(revoked_at__isnull=True)),
            ("revoked", _("revoked"), Q(revoked_at__isnull=False)),
        )


class RecentUseFilter(ChoiceFilter):
    title = _("use")
    parameter_name = "used"

    def options(self):
        since = timezone.now() - timedelta(days=MIGRATION_WINDOW_DAYS)
        window = {"n": MIGRATION_WINDOW_DAYS}
        return (
            ("recent", _("used in the last %(n)d days") % window, Q(last_used_at__gte=since)),
            ("stale", _("not used in the last %(n)d days") % window, Q(last_used_at__lt=since)),
            ("never", _("never used"), Q(last_used_at__isnull=True)),
        )


# --- usage records ------------------------------------------------------------------------------------------


class HttpStatusFilter(ChoiceFilter):
    title = _("status")
    parameter_name = "status_class"

    def options(self):
        # Fixed ranges: a DISTINCT over millions of usage records would make the filter itself slow.
        return (
            ("2xx", _("2xx success"), Q(status__gte=200, status__lte=299)),
            ("3xx", _("3xx redirect"), Q(status__gte=300, status__lte=399)),
            ("401", _("401 unauthorized"), Q(status=401)),
            ("403", _("403 forbidden"), Q(status=403)),
            ("404", _("404 not found"), Q(status=404)),
            ("4xx", _("any 4xx client error"), Q(status__gte=400, status__lte=499)),
            ("5xx", _("5xx server error"), Q(status__gte=500, status__lte=599)),
        )
