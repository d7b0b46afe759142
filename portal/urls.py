"""The project's URL map: the API and forward-auth first, then SCIM, the admin, sign-in and the pages.

The app's own routes are in tokens/urls.py, tokens/trust_urls.py and tokens/api/urls.py, mounted here.
"""

from django.contrib import admin
from django.urls import include, path, re_path

from tokens import gateway, throttle
from tokens import views as token_views
from tokens.constants import API_PREFIX, FORWARD_AUTH_PATH
from tokens.identity.signin import StaffAwarePasswordResetForm

from . import views

# The API first: it is what most requests ask for, and the resolver tries patterns in order.
urlpatterns = [
    path(API_PREFIX.lstrip("/"), include("tokens.api.urls")),
    # Reverse proxies ask here before every request to an API they guard (tokens/gateway.py); Envoy
    # appends the original path.
    path(FORWARD_AUTH_PATH.lstrip("/"), gateway.forward_auth, name="forward-auth"),
    re_path(rf"^{FORWARD_AUTH_PATH.lstrip('/')}(?P<suffix>/.*)$", gateway.forward_auth),
    # SCIM 2.0 provisioning by the organisation's identity provider (tokens/identity/scim_views.py).
    path("scim/v2/", include("tokens.identity.scim_views")),
    path("admin/", admin.site.urls),
    # Sign-in (password and organisation provider), sign-out, recent-sign-in confirmation.
    path("accounts/", include("tokens.identity.urls")),
    # Django's reset views, each answering 404 unless mail really leaves the server (tokens/throttle.py).
    path(
        "accounts/password_reset/",
        throttle.ThrottledPasswordResetView.as_view(form_class=StaffAwarePasswordResetForm),
        name="password_reset",
    ),
    path(
        "accounts/password_reset/done/", throttle.PasswordResetDoneView.as_view(), name="password_reset_done"
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        throttle.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/", throttle.PasswordResetCompleteView.as_view(), name="password_reset_complete"
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("profile/", token_views.profile, name="profile"),
    path("profile/integrations/authorizations/", include("tokens.urls")),
    path("profile/integrations/keyless-ci/", include("tokens.trust_urls")),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("docs/migration/", views.migration_guide, name="migration-guide"),
    path("", token_views.home, name="home"),
]
