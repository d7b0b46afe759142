from .alerts import AlertDelivery
from .events import TokenEvent
from .legacy import LegacyApiKey
from .policy import ExpirationPolicy
from .tokens import Token, TokenStatus
from .usage import ClientAddress, DailyUsage, UsageRecord

__all__ = [
    "AlertDelivery",
    "ClientAddress",
    "DailyUsage",
    "ExpirationPolicy",
    "LegacyApiKey",
    "Token",
    "TokenEvent",
    "TokenStatus",
    "UsageRecord",
]
