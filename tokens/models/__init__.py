"""The app's models, re-exported so that callers write ``from tokens.models import Token``.

One module a subject (tokens, legacy keys, the policy, usage, events…); the list below is the whole
public set. Inside the package, ``events.py`` imports no other model module, so every module can import
it at the top.
"""

from .alerts import AlertDelivery
from .attempts import AttemptCounter, RefusedClient
from .events import TokenEvent
from .federation import TokenExchange, TrustPolicy, UsedJobToken
from .identity import ProviderIdentity
from .legacy import LegacyApiKey
from .policy import BrownoutWindow, RehearsedSessionRequest, SitePolicy
from .provisioning import ProvisionedGroup, ProvisionedUser
from .service_accounts import ManagerRole, ServiceAccount, is_service_account
from .tokens import Token, TokenStatus
from .usage import ClientAddress, DailyUsage, UsageRecord, UsageSummaryState

__all__ = [
    "AlertDelivery",
    "AttemptCounter",
    "BrownoutWindow",
    "ClientAddress",
    "DailyUsage",
    "LegacyApiKey",
    "ManagerRole",
    "ProviderIdentity",
    "ProvisionedGroup",
    "ProvisionedUser",
    "RefusedClient",
    "RehearsedSessionRequest",
    "ServiceAccount",
    "SitePolicy",
    "Token",
    "TokenEvent",
    "TokenExchange",
    "TokenStatus",
    "TrustPolicy",
    "UsageRecord",
    "UsageSummaryState",
    "UsedJobToken",
    "is_service_account",
]
