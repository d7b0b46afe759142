from .events import TokenEvent
from .legacy import LegacyApiKey
from .policy import ExpirationPolicy
from .tokens import Token, TokenStatus
from .usage import ClientAddress, DailyUsage, UsageRecord, UsageSummaryState

__all__ = [
    "ClientAddress", "DailyUsage", "ExpirationPolicy", "LegacyApiKey", "Token", "TokenEvent", "TokenStatus",
    "UsageRecord", "UsageSummaryState",
]
