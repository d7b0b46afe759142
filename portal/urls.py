from django.contrib import admin
from django.urls import include, path

from tokens import views as token_views
from tokens.throttle import ThrottledLoginView

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("profile/", token_views.profile, name="profile"),
    path("profile/integrations/authorizations/", include("tokens.urls")),
    path("api/", include("tokens.api_urls")),
    path("healthz", views.healthz, name="healthz"),
    path("docs/migration/", views.migration_guide, name="migration-guide"),
    path("", token_views.home, name="home"),
]
