"""What the usage store's tests share: a request recorded as the middleware records it; what pages show."""

from django.utils import timezone

from tokens.models import ClientAddress, Token, UsageRecord
from tokens.usage.read import client_addresses, usage_totals
from tokens.usage.record import record


def record_use(credential, *, accepted=True, ip="192.0.2.1", at=None, agent="test"):
    """One request of *credential* (a token or a legacy key), as the middleware records it."""
    record(
        **{f"{credential.event_field}_id": credential.pk},
        user_id=credential.user_id,
        at=at or timezone.now(),
        accepted=accepted,
        method="GET",
        path="/api/users/me",
        status=200 if accepted else 401,
        ip=ip,
        user_agent=agent,
        duration_ms=1.0,
    )


def shown_on_pages(token):
    """What the pages show for *token*: count, last use, 30 days, addresses (summary + unsummarised tail)."""
    token = Token.objects.get(pk=token.pk)
    usage_totals([token])
    tail = UsageRecord.objects.unsummarised(token=token)
    count, addresses = client_addresses(ClientAddress.objects.filter(token=token), tail, limit=10)
    return (
        token.request_count,
        token.last_used_ip,
        token.last_used_user_agent,
        token.daily_usage.series(tail=tail),
        count,
        sorted((a.ip, a.requests, a.last_user_agent) for a in addresses),
    )
