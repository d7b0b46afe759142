"""Who is who at the organisation's provider: each person's (issuer, subject) and last provider sign-in.

An administrator links an existing local account here (add: the account, the issuer, the person's
``sub`` at the provider), which is how an account whose owner cannot sign in with a password gets
connected. Linking never moves an identity: the model's unique constraints refuse a second account
for one identity and a second identity at one issuer for one account.
"""

from django.conf import settings
from django.contrib import admin

from ..models import ProviderIdentity


@admin.register(ProviderIdentity)
class ProviderIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "subject", "issuer", "last_sign_in_at", "created_at")
    list_select_related = ("user",)
    list_filter = ("issuer",)
    search_fields = ("user__username", "user__email", "subject")
    ordering = ("user__username",)
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "last_sign_in_at")
    fields = ("user", "issuer", "subject", "created_at", "last_sign_in_at")

    def get_changeform_initial_data(self, request):
        return {"issuer": settings.OIDC_ISSUER, **super().get_changeform_initial_data(request)}

    def get_readonly_fields(self, request, obj=None):
        # A link is made or removed, never edited into someone else's.
        if obj is not None:
            return ("user", "issuer", "subject", *self.readonly_fields)
        return self.readonly_fields
