from django.urls import path

from portal.urls import urlpatterns as portal_urlpatterns

from . import views

# After the portal's own routes, so resolving /api/... costs what it costs in the portal.
urlpatterns = [
    *portal_urlpatterns,
    path("bench/knox/me", views.KnoxMe.as_view()),
    path("bench/drf/me", views.DrfTokenMe.as_view()),
    path("bench/bearer-unrecorded/me", views.bearer_unrecorded),
]
