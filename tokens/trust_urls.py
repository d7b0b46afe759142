"""The routes of the keyless CI trust policies' pages (namespace ``trust``), under Profile › Integrations."""

from django.urls import path

from . import trust_views as views

app_name = "trust"

urlpatterns = [
    path("", views.policy_list, name="list"),
    path("new/", views.policy_create, name="new"),
    # A service account's policies are made here, then shown and changed on the same pages as one's own.
    path("service-accounts/<int:account>/new/", views.policy_create, name="new-for-account"),
    path("<int:pk>/", views.policy_detail, name="detail"),
    path("<int:pk>/delete/", views.policy_delete, name="delete"),
]
