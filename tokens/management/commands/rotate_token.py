import re
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tokens.constants import OVERLAP_CHOICES
from tokens.management.lifetimes import add_lifetime_arguments, given_expiry, refused
from tokens.models import Token, TokenStatus
from tokens.models.policy import LONGEST_LIFETIME

OVERLAPS = {key: delta for key, _label, delta in OVERLAP_CHOICES}


def parse_overlap(text):
    """Return the overlap *text* names ("none", "1h", "1d", "7d" or whole seconds) as a timedelta."""
    if text in OVERLAPS:
        return OVERLAPS[text]
    # ASCII digits only, and few of them: "²".isdigit() is True, yet int("²") raises.
    if re.fullmatch(r"[0-9]{1,10}", text):
        return timedelta(seconds=int(text))
    raise CommandError(f"--overlap takes {', '.join(OVERLAPS)} or a whole number of seconds.")


class Command(BaseCommand):
    help = (
        "Rotate a bearer token by its id: issue a new token with the same name, purpose, access, permissions "
        "and allowed addresses, print its value once, and let the old value work for --overlap longer. "
        "The new expiry is the old token's lifetime from now (within the policy) unless --days, --hours "
        "or --never is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", help="The id of the token to rotate.")
        parser.add_argument(
            "--overlap",
            default="none",
            help="How long the old value keeps working: none (default), 1h, 1d, 7d, or seconds.",
        )
        add_lifetime_arguments(parser)

    def handle(self, *args, id, overlap, days, hours, never, **options):
        if not re.fullmatch(r"[0-9]{1,18}", id):
            raise CommandError(f"The token id is a whole number, not {id!r}.")
        token = Token.objects.select_related("user").filter(pk=int(id)).first()
        if token is None:
            raise CommandError(f"No token with id {id}.")
        given = given_expiry(days=days, hours=hours, never=never)
        overlap = parse_overlap(overlap)
        if overlap > LONGEST_LIFETIME:
            raise CommandError("The overlap is longer than the policy can allow.")
        try:
            # Nobody signed in did this: the Activity Stream shows no actor for it.
            new, plaintext = token.rotate(overlap=overlap, actor=None, **given)
        except Token.NotRotatable as refusal:
            status = TokenStatus(refusal.status).label.lower()
            raise CommandError(f"Only an active token can be rotated; #{token.pk} is {status}.") from None
        except ValidationError as error:
            raise refused(error) from None
        expiry = new.expires_at.isoformat() if new.expires_at else "never"
        self.stderr.write(
            f"Rotated token #{token.pk} {token.name!r} of {token.user.get_username()}: the new token is "
            f"#{new.pk}, expires {expiry}; the old value works until {token.rotation_ends_at.isoformat()}."
        )
        self.stderr.write("The value follows; it is not stored and will not be shown again.")
        # The value alone on stdout, so it can be piped straight into a secret store.
        self.stdout.write(plaintext)
