"""The portal's admin site: Django's own, with the sign-in throttle of the site's sign-in form."""

from django.contrib import admin

from tokens.throttle import ThrottledAdminAuthenticationForm


class PortalAdminSite(admin.AdminSite):
    # The same counts lock both sign-in forms: guessing a password through the admin gains nothing.
    login_form = ThrottledAdminAuthenticationForm
