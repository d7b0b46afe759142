"""``manage.py revoke_token``: revoke a token by id or by its value, for incident response."""

import sys

from django.core.management.base import BaseCommand, CommandError

from tokens.models import Token


class Command(BaseCommand):
    help = (
        "Revoke a bearer token by its id, or by its value (incident response: a leaked token). "
        "Pass --value - to read the value from standard input, which keeps it out of shell history."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--id", type=int)
        which.add_argument("--value", help="The token value, or - to read it from standard input.")

    def handle(self, *args, id, value, **options):
        if id is not None:
            token = Token.objects.select_related("user").filter(pk=id).first()
            if token is None:
                raise CommandError(f"No token with id {id}.")
        else:
            if value == "-":
                value = sys.stdin.readline()
            token = Token.objects.find_by_value(value)
            if token is None:
                raise CommandError("No token matches that value (it is malformed, forged or unknown).")
        # Nobody signed in did this: the Activity Stream says it came from the command line.
        if token.revoke(actor=None, detail="manage.py revoke_token"):
            self.stdout.write(f"Revoked token #{token.pk} {token.name!r} of {token.user.get_username()}.")
        else:
            self.stdout.write(f"Token #{token.pk} {token.name!r} was already revoked; nothing changed.")
