from django.urls import path

from portal.urls import urlpatterns as portal_urlpatterns

from . import limit, views

# After the portal's own routes, so resolving /api/... costs what it costs in the portal.
urlpatterns = [
    *portal_urlpatterns,
    path("bench/knox/me", views.KnoxMe.as_view()),
    path("bench/drf/me", views.DrfTokenMe.as_view()),
    path("bench/bearer-unrecorded/me", views.bearer_unrecorded),
    # The design limit, under the portal's middleware and under a JSON API's only (bench/knoxsite/wsgi.py).
    path("bench/limit/me", limit.limit_me),
    path("bench/limit-minimal/me", limit.limit_me),
]
