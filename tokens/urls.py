"""The routes of the token pages under Profile › Integrations › Authorizations (namespace ``tokens``)."""

from django.urls import path

from . import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("new/", views.token_create, name="new"),
    path("<int:pk>/", views.token_detail, name="detail"),
    path("<int:pk>/rename/", views.token_rename, name="rename"),
    path("<int:pk>/revoke/", views.token_revoke, name="revoke"),
    path("<int:pk>/rotate/", views.token_rotate, name="rotate"),
    path("<int:pk>/restrictions/", views.token_restrict, name="restrict"),
    path("<int:pk>/alerts/", views.token_alerts, name="alerts"),
    # A service account's tokens are made here and then managed on the same pages as one's own.
    path("service-accounts/<int:account>/new/", views.token_create, name="new-for-account"),
    path("service-accounts/<int:account>/activity/", views.service_account_activity, name="account-activity"),
]
