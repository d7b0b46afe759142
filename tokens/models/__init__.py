from .alerts import AlertDelivery
from .attempts import AttemptCounter, RefusedClient
from .events import TokenEvent
from .legacy import LegacyApiKey
from .policy import BrownoutWindow, ExpirationPolicy, RehearsedSessionRequest
from .provisioning import ProvisionedGroup, ProvisionedUser
from .tokens import Token, TokenStatus
from .usage import ClientAddress, DailyUsage, UsageRecord, UsageSummaryState

__all__ = [
    "AlertDelivery",
    "AttemptCounter",
    "BrownoutWindow",
    "ClientAddress",
    "DailyUsage",
    "ExpirationPolicy",
    "LegacyApiKey",
    "ProvisionedGroup",
    "ProvisionedUser",
    "RefusedClient",
    "RehearsedSessionRequest",
    "Token",
    "TokenEvent",
    "TokenStatus",
    "UsageRecord",
    "UsageSummaryState",
]
