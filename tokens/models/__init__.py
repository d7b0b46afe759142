from .events import TokenEvent
from .legacy import LegacyApiKey
from .policy import ExpirationPolicy
from .tokens import Token
from .usage import ClientAddress, DailyUsage, UsageRecord

__all__ = ["ClientAddress", "DailyUsage", "ExpirationPolicy", "LegacyApiKey", "Token", "TokenEvent", "UsageRecord"]
