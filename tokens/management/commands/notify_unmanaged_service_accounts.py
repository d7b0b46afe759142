from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tokens.models import ServiceAccount
from tokens.notifications import absolute_url, mail_each


class Command(BaseCommand):
    help = (
        "Mail the administrators of a service account's team (its staff members, and every superuser) "
        "once when the account has no active manager left: nobody can rotate or revoke its tokens from "
        "the site until an administrator grants the role again. Run it from cron every few minutes; an "
        "account is told about once per loss, again only after a manager came back and left."
    )

    def handle(self, *args, **options):
        now = timezone.now()
        failed = []
        told = 0
        for account in ServiceAccount.objects.claim_unmanaged(now):
            people = [person for person in account.team_administrators() if person.email]
            context = {
                "account": account,
                "team": account.team.name,
                "admin_url": absolute_url("admin:tokens_serviceaccount_change", account.pk),
                "team_url": absolute_url("admin:auth_group_change", account.team_id),
            }
            try:
                mail_each(people, "service_account_unmanaged", context)
            except Exception as error:
                ServiceAccount.objects.release_unmanaged_claim(account, now)
                failed.append(f"{account} ({type(error).__name__})")
                continue
            told += 1
            self.stdout.write(f"{account}: no active manager; told {len(people)} administrator(s).")
        self.stdout.write(f"Told about {told} service account(s) without a manager.")
        if failed:
            raise CommandError(
                "Could not send about: " + ", ".join(failed) + ". Check EMAIL_URL; they will be tried "
                "again on the next run."
            )
