"""The routes of the JSON API under /api/, mounted by portal/urls.py; each has an entry in openapi.py."""

from django.urls import path

from . import federation, incident, introspect, service_accounts
from . import views as api

urlpatterns = [
    path("users/me", api.users_me, name="api-users-me"),
    path("users", api.users_list, name="api-users"),
    path("users/<int:pk>", api.users_detail, name="api-user"),
    path("tokens", api.tokens_collection, name="api-tokens"),
    path("tokens/<int:pk>", api.tokens_detail, name="api-token"),
    path("tokens/self/rotate", api.tokens_self_rotate, name="api-token-self-rotate"),
    path("tokens/<int:pk>/rotate", api.tokens_rotate, name="api-token-rotate"),
    path("tokens/<int:pk>/usage", api.tokens_usage, name="api-token-usage"),
    path("service-accounts", service_accounts.service_accounts_list, name="api-service-accounts"),
    path(
        "service-accounts/<int:account>/tokens",
        service_accounts.service_account_tokens,
        name="api-service-account-tokens",
    ),
    path(
        "service-accounts/<int:account>/tokens/<int:pk>",
        service_accounts.service_account_token,
        name="api-service-account-token",
    ),
    path(
        "service-accounts/<int:account>/tokens/<int:pk>/rotate",
        service_accounts.service_account_token_rotate,
        name="api-service-account-token-rotate",
    ),
    path("credentials/revoke", incident.credentials_revoke, name="api-credentials-revoke"),
    path("secret-scanning/github", incident.github_secret_scanning, name="api-secret-scanning-github"),
    path("events", incident.events_feed, name="api-events"),
    path("introspect", introspect.introspect, name="api-introspect"),
    path("token-exchange", federation.token_exchange, name="api-token-exchange"),
    path("trust-policies", federation.trust_policies, name="api-trust-policies"),
    path("trust-policies/<int:pk>", federation.trust_policy_detail, name="api-trust-policy"),
    path(
        "service-accounts/<int:account>/trust-policies",
        federation.service_account_trust_policies,
        name="api-service-account-trust-policies",
    ),
    path(
        "service-accounts/<int:account>/trust-policies/<int:pk>",
        federation.service_account_trust_policy,
        name="api-service-account-trust-policy",
    ),
    path("openapi.json", api.openapi, name="api-openapi"),
]
