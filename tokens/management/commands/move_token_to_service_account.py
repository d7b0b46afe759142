"""``manage.py move_token_to_service_account``: give a person's token to a service account."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tokens.models import ServiceAccount, Token


class Command(BaseCommand):
    help = (
        "Give a person's token to a service account, for an integration built on a person's token before "
        "service accounts existed: the same value keeps working, with the same expiry, limits, usage and "
        "history; from now on the account's managers manage it and it acts with the account's "
        "permissions. The old owner and each manager get an event. Refused for a token that is not "
        "active, or that names permissions the account does not hold."
    )

    def add_arguments(self, parser):
        parser.add_argument("token_id", type=int, help="The token's id (admin, or the owner's token page).")
        parser.add_argument("service_account", help="The service account's username.")

    def handle(self, *args, token_id, service_account, **options):
        token = Token.objects.select_related("user").filter(pk=token_id).first()
        if token is None:
            raise CommandError(f"No token with id {token_id}.")
        account = (
            ServiceAccount.objects.select_related("user", "team")
            .filter(user__username=service_account)
            .first()
        )
        if account is None:
            raise CommandError(
                f"No service account named {service_account!r}. Create it in the admin first "
                "(Service accounts > Add)."
            )
        previous = token.user.get_username()
        try:
            told = token.move_to_service_account(account)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(
            f"Moved token #{token.pk} {token.name!r} from {previous} to the service account {account}; "
            f"events for: {', '.join(person.get_username() for person in told)}."
        )
        if token.permissions is None:
            self.stdout.write("It has no narrowed permissions: it now acts with all of the account's.")
