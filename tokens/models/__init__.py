from .attempts import AttemptCounter, RefusedClient
from .events import TokenEvent
from .legacy import LegacyApiKey
from .policy import ExpirationPolicy
from .tokens import Token, TokenStatus
from .usage import ClientAddress, DailyUsage, UsageRecord

__all__ = [
    "AttemptCounter",
    "ClientAddress",
    "DailyUsage",
    "ExpirationPolicy",
    "LegacyApiKey",
    "RefusedClient",
    "Token",
    "TokenEvent",
    "TokenStatus",
    "UsageRecord",
]
