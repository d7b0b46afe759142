"""What the commands that make a token value share: the lifetime flags and how a refusal is printed."""

from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone

from tokens.models.policy import LONGEST_LIFETIME, describe_lifetime


def add_lifetime_arguments(parser):
    """Add the mutually exclusive --days, --hours and --never flags to *parser*."""
    lifetime = parser.add_mutually_exclusive_group()
    lifetime.add_argument("--days", type=int)
    lifetime.add_argument("--hours", type=int)
    lifetime.add_argument("--never", action="store_true", help="No expiry (only where the policy allows it).")


def given_expiry(*, days, hours, never):
    """Return ``{"expires_at": …}`` for the lifetime flags given, or ``{}`` when none was given.

    Raises CommandError for a lifetime that is not positive or is longer than any policy allows.
    """
    if never:
        return {"expires_at": None}
    if days is None and hours is None:
        return {}
    if (days or hours or 0) <= 0:
        raise CommandError("The lifetime must be positive.")
    # Checked before any date arithmetic: --days 9999999 would overflow the year 9999.
    if (days or 0) > LONGEST_LIFETIME.days or (hours or 0) > LONGEST_LIFETIME.days * 24:
        raise CommandError(f"The lifetime can be at most {describe_lifetime(LONGEST_LIFETIME)}.")
    return {"expires_at": timezone.now() + timedelta(days=days or 0, hours=hours or 0)}


def refused(error):
    """Return a CommandError that lists each field of the ValidationError *error* with its messages."""
    return CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items()))
