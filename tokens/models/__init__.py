from .attempts import AttemptCounter, RefusedClient
from .legacy import LegacyApiKey
from .policy import ExpirationPolicy
from .tokens import Token
from .usage import ClientAddress, DailyUsage, TokenEvent, UsageRecord

__all__ = [
    "AttemptCounter",
    "ClientAddress",
    "DailyUsage",
    "ExpirationPolicy",
    "LegacyApiKey",
    "RefusedClient",
    "Token",
    "TokenEvent",
    "UsageRecord",
]
