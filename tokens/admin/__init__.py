"""Django admin for administrators: the policy, every token and legacy key, usage and the Activity Stream.

Every change goes through the same model and manager methods as the pages and the API
(``Token.objects.issue``, ``token.rename``, ``token.revoke``, ``token.shorten``, ``key.revoke``,
``SitePolicy.clean``), so the admin can do nothing the rules forbid elsewhere. No admin page
shows a token value (except once, in the response that creates one), a legacy key or a digest.

One module a page: ``policy``, ``tokens``, ``legacy``, ``service_accounts``, ``identity`` (provider
identities), ``federation`` (keyless CI), ``provisioning`` (SCIM, and the user list) and ``activity``
(usage records and the Activity Stream); their forms, list filters and shared pieces live in ``forms``,
``filters`` and ``common``. Importing the page modules registers their admins.
"""

from .activity import RefusedClientAdmin, TokenEventAdmin, UsageRecordAdmin
from .federation import TokenExchangeAdmin, TrustPolicyAdmin
from .identity import ProviderIdentityAdmin
from .legacy import LegacyApiKeyAdmin
from .policy import SitePolicyAdmin
from .provisioning import PortalUserAdmin, ProvisionedGroupAdmin, ProvisionedUserAdmin
from .service_accounts import ServiceAccountAdmin, TeamAdmin
from .tokens import TokenAdmin

__all__ = [
    "LegacyApiKeyAdmin",
    "PortalUserAdmin",
    "ProviderIdentityAdmin",
    "ProvisionedGroupAdmin",
    "ProvisionedUserAdmin",
    "RefusedClientAdmin",
    "ServiceAccountAdmin",
    "SitePolicyAdmin",
    "TeamAdmin",
    "TokenAdmin",
    "TokenEventAdmin",
    "TokenExchangeAdmin",
    "TrustPolicyAdmin",
    "UsageRecordAdmin",
]
