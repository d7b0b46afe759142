from django.contrib import admin
from django.urls import include, path

from tokens import views as token_views
from tokens.constants import API_PREFIX
from tokens.throttle import ThrottledLoginView

from . import views

# The API first: it is what most requests ask for, and the resolver tries patterns in order.
urlpatterns = [
    path(API_PREFIX.lstrip("/"), include("tokens.api.urls")),
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("profile/", token_views.profile, name="profile"),
    path("profile/integrations/authorizations/", include("tokens.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("docs/migration/", views.migration_guide, name="migration-guide"),
    path("", token_views.home, name="home"),
]
